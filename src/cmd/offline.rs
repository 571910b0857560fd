//! `hostsync check --offline`: are the configuration files right? Contacts nothing.
//!
//! The files are loaded by the same [`crate::config::load_with`] as `sync`, so a
//! problem in them is exit 2 with the same message, before this module runs.
//! Then it prints one row per host (enabled ones first, then the disabled ones)
//! and exits 0, without connecting to any host and without writing anything, not
//! even the logs (issue 20).
//!
//! It checks the files, not the machine it runs on: what would only fail at run
//! time on this machine is a warning line on stderr, never an error. That is a
//! `passkey_env`/`passphrase_env` variable that is not set in this shell (loaded
//! under [`UnsetVars::Warn`](crate::config::UnsetVars)), a src or `identity_file`
//! that does not exist here, a log folder that cannot be created, and a log folder
//! inside a src (which `watch` refuses). A disabled host's files are validated, but
//! it gets no such warnings: no command uses it.
//!
//! With `-v` it also prints what each enabled host resolved to (issue 18: HostName,
//! User, Port, ... and where each value was written), the table `check -v` prints,
//! without contacting anything.

use std::ffi::CString;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

use crate::cmd::check::src_is_dir;
use crate::config::{Config, Target};
use crate::exit::ExitCode;

/// Prints the hosts table on stdout (with `verbose`, also what each enabled host
/// resolved to, as `check -v` shows it), the warnings and a closing line on
/// stderr; always exit 0 (a configuration error never gets here).
pub(crate) fn run(config: &Config, verbose: bool) -> ExitCode {
    print!("{}", table(config));
    if verbose {
        let resolved: Vec<(&str, Vec<crate::config::reach::Setting>)> = config
            .targets
            .iter()
            .map(|t| {
                let r = super::check::resolution(&t.host, &config.ssh);
                (t.host.address.as_str(), r)
            })
            .collect();
        let rows: Vec<(&str, &[crate::config::reach::Setting])> =
            resolved.iter().map(|(a, r)| (*a, r.as_slice())).collect();
        print!("\n{}", super::check::settings_table(&rows));
    }
    let warnings = warnings(config);
    for w in &warnings {
        eprintln!("hostsync: warning: {w}");
    }
    eprintln!("hostsync: {}", summary(config, warnings.len()));
    ExitCode::Success
}

/// The closing line: what was validated, and that nothing was contacted.
fn summary(config: &Config, warnings: usize) -> String {
    let all = || config.targets.iter().chain(&config.disabled);
    let files = all().filter(|t| t.mapping_file.is_some()).count();
    format!(
        "check --offline: the configuration is valid: {} host(s), {} disabled, {files} mapping file(s); {warnings} warning(s); no host was contacted",
        all().count(),
        config.disabled.len()
    )
}

/// One row per host: `HOST PORT USER MAPPINGS STATUS`.
fn table(config: &Config) -> String {
    let status = |t: &Target| {
        if t.host.disabled {
            "disabled: no command contacts it".to_string()
        } else if t.mapping_file.is_none() && t.bastion_for > 0 {
            format!("bastion for {} host(s)", t.bastion_for)
        } else if t.mapping_file.is_none() {
            "no mapping file: sync skips this host".to_string()
        } else {
            "ok".to_string()
        }
    };
    let rows: Vec<[String; 5]> = config
        .targets
        .iter()
        .chain(&config.disabled)
        .map(|t| {
            [
                t.host.address.clone(),
                t.host.port.to_string(),
                t.host.user.clone(),
                t.mappings.len().to_string(),
                status(t),
            ]
        })
        .collect();
    let header = ["HOST", "PORT", "USER", "MAPPINGS", "STATUS"].map(String::from);
    let mut width = [0usize; 4];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in width.iter().zip(row) {
            let _ = write!(out, "{cell:w$}  ");
        }
        let _ = writeln!(out, "{}", row[4]);
    }
    out
}

/// Everything that is right in the files but would fail on this machine.
fn warnings(config: &Config) -> Vec<String> {
    let mut out = config.warnings.clone();
    for t in &config.targets {
        out.extend(target_warnings(t));
    }
    out.extend(log_dir_warning(&config.log_dir));
    if let Err(e) = config.check_log_dir_outside_sources() {
        out.push(format!("watch would refuse to start: {e:#}"));
    }
    out
}

/// A missing `identity_file`, and each src that is missing or unusable here.
fn target_warnings(t: &Target) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(key) = &t.host.identity_file
        && !key.exists()
    {
        out.push(format!(
            "{}: identity_file {} does not exist on this machine; create the key or fix the path, or logging in with it fails",
            t.host.address,
            key.display()
        ));
    }
    let file = t
        .mapping_file
        .as_deref()
        .map_or_else(String::new, |f| f.display().to_string());
    for (i, m) in t.mappings.iter().enumerate() {
        if let Err(why) = src_is_dir(&m.src) {
            out.push(format!(
                "{file}: mapping #{}: {}: {why} on this machine; sync would fail this mapping",
                i + 1,
                m.src.display()
            ));
        }
    }
    out
}

/// Whether `sync` could create the log folder and its files: the folder, or its
/// nearest existing parent, must be a folder this user can write to.
fn log_dir_warning(dir: &Path) -> Option<String> {
    let mut p = dir;
    while p.symlink_metadata().is_err() {
        p = p.parent()?;
    }
    let problem = if !p.is_dir() {
        format!("{} is not a folder", p.display())
    } else if !writable(p) {
        format!("{} is not writable for this user", p.display())
    } else {
        return None;
    };
    Some(format!(
        "log_path {}: {problem}; every command but check --offline would exit 2 (cannot create the log folder); change log_path or fix it",
        dir.display()
    ))
}

/// access(2) with W_OK: the kernel's answer for this process's user.
fn writable(p: &Path) -> bool {
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_dir_is_judged_by_its_nearest_existing_parent() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(log_dir_warning(&d.path().join("logs/deeper")), None);
        std::fs::write(d.path().join("file"), "").unwrap();
        let w = log_dir_warning(&d.path().join("file/logs")).expect("a warning");
        assert!(w.contains("file is not a folder"), "{w}");
        assert!(w.starts_with("log_path "), "{w}");
    }

    #[test]
    fn rows_and_summary_count_disabled_hosts() {
        let d = tempfile::tempdir().unwrap();
        let write = |p: &str, t: &str| {
            let p = d.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, t).unwrap();
        };
        write("config.ini", "[DEFAULT]\n");
        write(
            "connection_info.json",
            r#"[{"ip_address": "127.0.0.5", "user": "u", "disabled": true},
                {"ip_address": "127.0.0.6", "user": "u"},
                {"ip_address": "127.0.0.7", "user": "u", "identity_file": "nokey"}]"#,
        );
        write("mappings/127.0.0.5.json", r#"[{"src": "a", "dest": "/a"}]"#);
        write("mappings/127.0.0.7.json", r#"[{"src": "b", "dest": "/b"}]"#);
        let c = crate::config::load(&d.path().join("config.ini")).unwrap();
        let t = table(&c);
        let status: Vec<&str> = t.lines().map(|l| &l[l.find("  ").unwrap()..]).collect();
        assert_eq!(t.lines().count(), 4, "{t}");
        assert!(t.lines().nth(1).unwrap().starts_with("127.0.0.6 "), "{t}");
        assert!(
            status[1].ends_with("no mapping file: sync skips this host"),
            "{t}"
        );
        assert!(status[2].ends_with("  ok"), "{t}");
        assert!(
            status[3].ends_with("disabled: no command contacts it"),
            "{t}"
        );
        let w = warnings(&c);
        // The disabled host's missing src `a` is not mentioned; 127.0.0.7's key and src are.
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].contains("identity_file") && w[0].contains("nokey"),
            "{w:?}"
        );
        assert!(w[1].contains("mapping #1") && w[1].contains("src does not exist"));
        assert!(summary(&c, 2).contains("3 host(s), 1 disabled, 2 mapping file(s); 2 warning(s)"));
    }

    /// Issue 18: an entry others jump through, without a mapping file, is a bastion.
    #[test]
    fn a_bastion_without_mappings_is_no_skipped_host() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("config.ini"), "[DEFAULT]\n").unwrap();
        std::fs::write(
            d.path().join("connection_info.json"),
            r#"[{"ip_address": "127.0.0.5", "user": "u"},
                {"ip_address": "127.0.0.6", "user": "u", "proxy_jump": "127.0.0.5"},
                {"ip_address": "127.0.0.7", "user": "u", "proxy_jump": "127.0.0.5"}]"#,
        )
        .unwrap();
        std::fs::create_dir(d.path().join("mappings")).unwrap();
        let c = crate::config::load(&d.path().join("config.ini")).unwrap();
        let t = table(&c);
        let row = t.lines().nth(1).unwrap();
        assert!(
            row.starts_with("127.0.0.5 ") && row.ends_with("  bastion for 2 host(s)"),
            "{t}"
        );
        assert!(
            t.lines()
                .nth(2)
                .unwrap()
                .ends_with("no mapping file: sync skips this host")
        );
    }
}
