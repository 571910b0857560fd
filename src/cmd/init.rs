//! `hostsync init [DIR]`: writes the example configuration ([`crate::config::example`])
//! into DIR, so a new user starts from files that work instead of writing three
//! of them from the README, then says what to edit next (issue 20).
//!
//! It never overwrites anything: when any of the example's entries (config.ini,
//! connection_info.json, mappings, logs) already exists in DIR, it names each one
//! and exits 2 having changed nothing. Every file is created with `O_EXCL`, so a
//! file that appears meanwhile is not overwritten either, and a write that fails
//! half-way removes what this run had created. connection_info.json is created
//! with mode 0600 because it may come to hold a password.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::config::example::{ENTRIES, FILES};
use crate::exit::ExitCode;

/// Writes the example into `dir` and prints the next steps; exit 2 on any refusal
/// or write error, with nothing left behind.
pub(crate) fn run(dir: &Path) -> ExitCode {
    match write_example(dir) {
        Ok(()) => {
            print!("{}", next_steps(dir));
            ExitCode::Success
        }
        Err(e) => {
            eprintln!("hostsync: {e:#}");
            ExitCode::Usage
        }
    }
}

/// Refuses if an entry exists, else creates every file of the example under `dir`.
fn write_example(dir: &Path) -> Result<()> {
    let existing: Vec<String> = ENTRIES
        .iter()
        .map(|e| dir.join(e))
        .filter(|p| p.symlink_metadata().is_ok())
        .map(|p| {
            format!(
                "{}: already exists; hostsync init changed nothing (move it away, or run hostsync init DIR with another folder)",
                p.display()
            )
        })
        .collect();
    if !existing.is_empty() {
        bail!(existing.join("\n"));
    }
    let mut created = Created::default();
    let result = create_all(dir, &mut created);
    if result.is_err() {
        created.undo();
    }
    result
}

/// What this run created, for undoing a half-done init (newest last).
#[derive(Default)]
struct Created(Vec<PathBuf>);

impl Created {
    /// Removes every path recorded, newest first; errors are ignored (best effort).
    fn undo(self) {
        for p in self.0.iter().rev() {
            let _ = if p.is_dir() {
                fs::remove_dir(p)
            } else {
                fs::remove_file(p)
            };
        }
    }
}

/// Creates `dir` if needed, then each example file with its missing parents.
fn create_all(dir: &Path, created: &mut Created) -> Result<()> {
    make_dir(dir, created)?;
    for f in FILES {
        let path = dir.join(f.path);
        if let Some(parent) = path.parent() {
            make_dir(parent, created)?;
        }
        let mode = if f.path == "connection_info.json" {
            0o600
        } else {
            0o644
        };
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .with_context(|| format!("{}: cannot create the file", path.display()))?;
        created.0.push(path.clone());
        file.write_all(f.text.as_bytes())
            .with_context(|| format!("{}: cannot write the file", path.display()))?;
    }
    Ok(())
}

/// `mkdir -p dir`, recording each folder it made.
fn make_dir(dir: &Path, created: &mut Created) -> Result<()> {
    let mut missing = Vec::new();
    let mut p = dir;
    while p.symlink_metadata().is_err() {
        missing.push(p.to_path_buf());
        match p.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => p = parent,
            _ => break,
        }
    }
    if p.symlink_metadata().is_ok() && !p.is_dir() {
        bail!(
            "{}: is not a folder; give hostsync init a folder",
            p.display()
        );
    }
    for d in missing.into_iter().rev() {
        fs::create_dir(&d).with_context(|| format!("{}: cannot create the folder", d.display()))?;
        created.0.push(d);
    }
    Ok(())
}

/// What was written and what to do next; the commands name DIR's config.ini
/// unless DIR is the current folder.
fn next_steps(dir: &Path) -> String {
    let here = dir == Path::new(".") || dir.as_os_str().is_empty();
    let hostsync = if here {
        "hostsync".to_string()
    } else {
        format!("hostsync -c {}", dir.join("config.ini").display())
    };
    let mappings: Vec<&str> = FILES
        .iter()
        .filter_map(|f| f.path.strip_prefix("mappings/"))
        .collect();
    let hosts: Vec<&str> = mappings
        .iter()
        .filter_map(|m| m.strip_suffix(".json"))
        .collect();
    let commands = [
        ("check --offline", "validates the files; contacts nothing"),
        (
            "check",
            "logs in to each host; tests that each dest is writable",
        ),
        (
            "sync --dry-run",
            "shows what sync would change; changes nothing",
        ),
        ("sync", "pushes every mapping to every host"),
    ];
    let width = commands
        .iter()
        .map(|(c, _)| hostsync.len() + 1 + c.len())
        .max()
        .unwrap_or(0);
    let mut steps = String::new();
    for (i, (cmd, what)) in commands.iter().enumerate() {
        let line = format!("{hostsync} {cmd}");
        let _ = writeln!(steps, "  {}. {line:width$}   {what}", i + 3);
    }
    format!(
        "hostsync: wrote the example configuration into {dir}:
  config.ini            every setting at its default, with a comment each
  connection_info.json  example hosts {hosts}, all \"disabled\": true
  mappings/             what goes where on each host: {mappings}
  logs/                 info.log and error.log go here
Next:
  1. connection_info.json: replace the example hosts with yours (ip_address, user,
     and passkey_env or identity_file); remove \"disabled\": true from each host to use.
  2. mappings/: one <ip_address>.json per host; in each mapping, src is a file or
     folder on this machine and dest an absolute path on the host.
{steps}",
        dir = dir.display(),
        hosts = hosts.join(", "),
        mappings = mappings.join(", "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_every_file_then_refuses_a_second_time() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("fleet/web");
        write_example(&dir).unwrap();
        for f in FILES {
            assert_eq!(fs::read_to_string(dir.join(f.path)).unwrap(), f.text);
        }
        let mode = |p: &str| {
            use std::os::unix::fs::PermissionsExt as _;
            fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o077
        };
        assert_eq!(mode("connection_info.json"), 0, "no group/other access");
        let e = format!("{:#}", write_example(&dir).unwrap_err());
        assert_eq!(e.lines().count(), ENTRIES.len(), "{e}");
        assert!(e.contains("config.ini: already exists"), "{e}");
    }

    #[test]
    fn one_existing_entry_is_named_and_nothing_is_written() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("logs")).unwrap();
        let e = format!("{:#}", write_example(d.path()).unwrap_err());
        assert_eq!(
            e,
            format!(
                "{}: already exists; hostsync init changed nothing (move it away, or run hostsync init DIR with another folder)",
                d.path().join("logs").display()
            )
        );
        let left: Vec<_> = fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }

    /// A file where DIR or one of its parents should be is refused by name.
    #[test]
    fn a_file_in_the_way_is_refused() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("plain"), "x").unwrap();
        let e = format!(
            "{:#}",
            write_example(&d.path().join("plain/sub")).unwrap_err()
        );
        assert!(e.contains("plain: is not a folder"), "{e}");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    /// Undo removes what a half-done run made, newest first, and nothing else.
    #[test]
    fn undo_removes_what_was_created() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("mine"), "keep").unwrap();
        let mut created = Created::default();
        make_dir(&d.path().join("a/b"), &mut created).unwrap();
        fs::write(d.path().join("a/b/f"), "x").unwrap();
        created.0.push(d.path().join("a/b/f"));
        assert_eq!(created.0.len(), 3);
        created.undo();
        let left: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["mine"]);
    }

    #[test]
    fn next_steps_name_the_config_outside_the_current_folder() {
        let s = next_steps(Path::new("."));
        assert!(
            s.contains("  3. hostsync check --offline   validates"),
            "{s}"
        );
        // The comments line up in one column.
        let col = |step: &str, word: &str| {
            let line = s.lines().find(|l| l.starts_with(step)).expect(step);
            line.find(word).expect(word)
        };
        assert_eq!(col("  3.", "validates"), col("  6.", "pushes"), "{s}");
        let s = next_steps(Path::new("/etc/hostsync/web"));
        assert!(
            s.contains("hostsync -c /etc/hostsync/web/config.ini check --offline"),
            "{s}"
        );
        assert!(s.contains("192.0.2.10.json, 192.0.2.11.json"), "{s}");
    }
}
