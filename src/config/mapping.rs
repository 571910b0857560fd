//! `mappings/<address>.json`: what goes where on one host.
//!
//! Each entry maps a local `src` (file or directory, relative to config.ini's
//! directory, `~` expanded) to an absolute remote `dest`. Whether src is a file or
//! a directory is decided when the transfer runs, not here, so a src that is
//! missing today is an error for that mapping only, not for the whole run.
//!
//! Optional per-mapping fields (issue 5): `exclude` (gitignore-like patterns,
//! see [`crate::config::exclude`]), `delete`, `backups` (0-99) and `post_sync` (remote
//! commands); issue 13 adds `follow_symlinks` (follow links below a directory
//! src instead of recreating them) and `keep_special_bits` (keep setuid and
//! setgid on files, which are dropped otherwise). `exclude` and `delete` only make sense for a directory src: when
//! src is a file already at load time they are refused with a message that says
//! so; a src that only later turns out to be a file ignores them.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use serde::Deserialize;

use super::ini::resolve;
use super::source::{self, Problems};
use crate::config::exclude::Excludes;

/// The most numbered backups a mapping may keep (`dest.1` .. `dest.99`).
pub(crate) const MAX_BACKUPS: u32 = 99;

/// One validated mapping.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Mapping {
    /// Local source, absolute.
    pub(crate) src: PathBuf,
    /// Remote destination: absolute, normalised (no trailing `/`, no `.` or `..`), never `/`.
    pub(crate) dest: String,
    /// `dest` was written ending in `/`: a file src lands inside that directory, as
    /// `dest/<file name of src>`, as with scp and rsync (issue 14, bug 3). Nothing
    /// changes for a directory src, which is always mirrored into dest.
    pub(crate) into_dir: bool,
    /// `"delete": true`: what disappears locally is removed below dest (never outside
    /// it); directory src only.
    pub(crate) delete: bool,
    /// `"exclude"`: paths below a directory src that are never sent, deleted or watched.
    pub(crate) exclude: Excludes,
    /// `"backups": N`: a replaced remote file is kept as `dest.1` .. `dest.N` (0 = none).
    pub(crate) backups: u32,
    /// `"post_sync"`: remote shell commands run, in order, after a batch under this
    /// mapping landed on the host; the first failure stops the rest.
    pub(crate) post_sync: Vec<String>,
    /// `"follow_symlinks": true`: a symlink below a directory src is followed (its
    /// target's content is sent), instead of being recreated as a symlink.
    pub(crate) follow_symlinks: bool,
    /// `"keep_special_bits": true`: setuid and setgid on regular files are kept;
    /// by default they are dropped, so a local user's setuid file never becomes a
    /// root-owned setuid file on the remote.
    pub(crate) keep_special_bits: bool,
}

impl Mapping {
    /// The mode a remote copy of a regular file with local mode `mode` gets.
    pub(crate) fn file_mode(&self, mode: u32) -> u32 {
        if self.keep_special_bits {
            mode & 0o7777
        } else {
            mode & 0o1777
        }
    }
}

impl Mapping {
    /// The remote file a file src is written to: dest, or `dest/<file name of src>`
    /// when dest ends in `/` ([`Mapping::into_dir`]).
    pub(crate) fn file_dest(&self) -> String {
        match self.src.file_name().filter(|_| self.into_dir) {
            Some(name) => format!("{}/{}", self.dest, name.to_string_lossy()),
            None => self.dest.clone(),
        }
    }
}

/// The JSON shape of one entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapping {
    src: String,
    dest: String,
    #[serde(default)]
    delete: bool,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    backups: i64,
    #[serde(default)]
    post_sync: Vec<String>,
    #[serde(default)]
    follow_symlinks: bool,
    #[serde(default)]
    keep_special_bits: bool,
}

/// Reads one mapping file. `base` is config.ini's directory.
pub(crate) fn load(path: &Path, base: &Path) -> Result<Vec<Mapping>> {
    let text = source::read_text(path, "mapping file")?;
    parse(path, base, &text)
}

/// Parses a mapping file's text; `path` is used in messages only.
pub(crate) fn parse(path: &Path, base: &Path, text: &str) -> Result<Vec<Mapping>> {
    let file = path.display();
    if text.trim().is_empty() {
        bail!(
            "{file}: the file is empty; write a JSON array like [{{\"src\": \"site/\", \"dest\": \"/srv/www\"}}]"
        );
    }
    let raw: Vec<RawMapping> =
        super::parse_json(path, text, "an array of {\"src\", \"dest\"} objects")?;
    let mut problems = Problems::default();
    let mut out = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let at = format!("{file}: mapping #{}", i + 1);
        if r.src.is_empty() {
            problems.push(format!(
                "{at}: src is empty; write a local file or directory path"
            ));
            continue;
        }
        let dest = match normalize_dest(&r.dest) {
            Ok(dest) => dest,
            Err(msg) => {
                problems.push(format!("{at}: dest {:?}: {msg}", r.dest));
                continue;
            }
        };
        let src = resolve(base, &r.src);
        match options(&r, &src) {
            Ok((exclude, backups)) => out.push(Mapping {
                src,
                dest,
                into_dir: r.dest.ends_with('/'),
                delete: r.delete,
                exclude,
                backups,
                post_sync: r.post_sync,
                follow_symlinks: r.follow_symlinks,
                keep_special_bits: r.keep_special_bits,
            }),
            Err(msg) => problems.push(format!("{at}: {msg}")),
        }
    }
    problems.into_result()?;
    Ok(out)
}

/// Validates the optional fields of one entry; returns the compiled excludes and the
/// backup count. The message names the field and the fix.
fn options(r: &RawMapping, src: &Path) -> Result<(Excludes, u32), String> {
    let backups = u32::try_from(r.backups)
        .ok()
        .filter(|n| *n <= MAX_BACKUPS)
        .ok_or_else(|| {
            format!(
                "backups {}: must be a whole number from 0 to {MAX_BACKUPS} (how many previous versions to keep as dest.1, dest.2, ...)",
                r.backups
            )
        })?;
    let exclude = Excludes::new(&r.exclude)?;
    for (i, cmd) in r.post_sync.iter().enumerate() {
        if cmd.trim().is_empty() {
            return Err(format!(
                "post_sync #{}: the command is empty; remove it or write a shell command",
                i + 1
            ));
        }
        if cmd.contains('\0') {
            return Err(format!(
                "post_sync #{}: contains a NUL character, which a remote command cannot carry; remove it",
                i + 1
            ));
        }
    }
    // Only a src that is a file today can be judged here; see the module docs.
    if std::fs::metadata(src).is_ok_and(|m| m.is_file()) {
        if r.delete {
            return Err(format!(
                "delete: src {} is a file, and delete applies to a directory src only (it removes remote files that are gone from the tree); remove \"delete\" from this mapping",
                src.display()
            ));
        }
        if !exclude.is_empty() {
            return Err(format!(
                "exclude: src {} is a file, and exclude patterns are relative to a directory src; remove \"exclude\" from this mapping",
                src.display()
            ));
        }
    }
    Ok((exclude, backups))
}

/// Checks a remote destination and returns it without trailing slashes or `.` parts.
pub(crate) fn normalize_dest(dest: &str) -> Result<String, String> {
    if !dest.starts_with('/') {
        return Err("must be an absolute path on the remote host (start with /)".into());
    }
    if dest.contains('\0') || dest.contains('\n') {
        return Err("contains a NUL or newline character; remove it".into());
    }
    let mut parts = Vec::new();
    for part in dest.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("contains `..`; write the path without it".into()),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err("is the root directory `/`, which hostsync refuses to write into; name a directory below it".into());
    }
    Ok(format!("/{}", parts.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Vec<Mapping>> {
        parse(Path::new("m.json"), Path::new("/cfg"), text)
    }

    #[test]
    fn seed_format() {
        let m = p(r#"[
  {"src": "/etc/app/app.conf", "dest": "/etc/app/app.conf"},
  {"src": "site/", "dest": "/srv/www/site/"}
]"#)
        .unwrap();
        assert_eq!(m[0].src, PathBuf::from("/etc/app/app.conf"));
        assert_eq!(m[1].src, PathBuf::from("/cfg/site/"));
        assert_eq!(m[1].dest, "/srv/www/site");
        assert!(!m[1].delete);
        assert!(!m[0].into_dir && m[1].into_dir);
        assert_eq!(m[0].file_dest(), "/etc/app/app.conf");
        let m = p(r#"[{"src": "conf/a.txt", "dest": "/srv/conf/"}]"#).unwrap();
        assert_eq!((m[0].dest.as_str(), m[0].into_dir), ("/srv/conf", true));
        assert_eq!(m[0].file_dest(), "/srv/conf/a.txt");
        let m = p(r#"[{"src": "a", "dest": "/b", "delete": true}]"#).unwrap();
        assert!(m[0].delete);
        assert!(p(r#"[{"src": "a", "dest": "/b", "delete": "yes"}]"#).is_err());
    }

    /// Issue 5: the optional per-mapping fields, and their errors naming file,
    /// mapping, field and fix.
    #[test]
    fn options_parse_and_validate() {
        let m = p(
            r#"[{"src": "site/", "dest": "/srv/www", "exclude": ["*.swp", "cache/"],
            "delete": true, "backups": 6, "post_sync": ["systemctl reload haproxy", "true"]}]"#,
        )
        .unwrap();
        assert_eq!(m[0].exclude.patterns(), ["*.swp", "cache/"]);
        assert!(m[0].exclude.is_excluded(Path::new("a/x.swp"), false));
        assert_eq!(m[0].backups, 6);
        assert_eq!(m[0].post_sync, ["systemctl reload haproxy", "true"]);
        let plain = p(r#"[{"src": "a", "dest": "/b"}]"#).unwrap();
        assert!(plain[0].exclude.is_empty() && plain[0].backups == 0);
        assert!(plain[0].post_sync.is_empty() && !plain[0].delete);
        for (text, needle) in [
            (
                r#""backups": 100"#,
                "backups 100: must be a whole number from 0 to 99",
            ),
            (
                r#""backups": -1"#,
                "backups -1: must be a whole number from 0 to 99",
            ),
            (r#""backups": "6""#, "entry #1 field `backups`"),
            (
                r#""exclude": ["ok", "a["]"#,
                "exclude #2 \"a[\": not a valid glob",
            ),
            (r#""exclude": "*.swp""#, "field `exclude`"),
            (
                r#""post_sync": ["ok", " "]"#,
                "post_sync #2: the command is empty",
            ),
            (r#""post_sync": "cmd""#, "field `post_sync`"),
            // Issue 14, bug 9: the example fits the field.
            (
                r#""post_sync": "cmd""#,
                r#"post_sync must be an array of strings, like ["systemctl reload nginx"]"#,
            ),
            (
                r#""exclude": "*.swp""#,
                r#"exclude must be an array of strings, like ["*.swp"]"#,
            ),
        ] {
            let e = p(&format!(r#"[{{"src": "a", "dest": "/b", {text}}}]"#))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{text}: {e}");
            assert!(e.starts_with("m.json:"), "{text}: {e}");
            let from_ours = !needle.starts_with("entry")
                && !needle.starts_with("field")
                && !needle.contains("must be an array");
            assert!(!from_ours || e.starts_with("m.json: mapping #1: "), "{e}");
        }
    }

    /// `delete` and `exclude` on a src that is a file are refused at load.
    #[test]
    fn delete_and_exclude_need_a_directory_src() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), "x").unwrap();
        let q = |text: &str| parse(Path::new("m.json"), d.path(), text);
        let e = q(r#"[{"src": "f", "dest": "/b", "delete": true}]"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mapping #1: delete: src") && e.contains("directory src only"),
            "{e}"
        );
        let e = q(r#"[{"src": "f", "dest": "/b", "exclude": ["x"]}]"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("mapping #1: exclude: src"), "{e}");
        // A missing src is judged when the transfer runs, as before.
        assert!(q(r#"[{"src": "nope", "dest": "/b", "delete": true}]"#).is_ok());
        assert!(q(r#"[{"src": "f", "dest": "/b", "backups": 3, "post_sync": ["x"]}]"#).is_ok());
    }

    #[test]
    fn bad_dest() {
        for (dest, needle) in [
            ("relative/x", "absolute"),
            ("/", "root directory"),
            ("//./", "root directory"),
            ("/a/../etc", ".."),
        ] {
            let text = format!(r#"[{{"src": "a", "dest": "{dest}"}}]"#);
            let e = p(&text).unwrap_err().to_string();
            assert!(e.contains(needle), "{dest}: {e}");
            assert!(e.starts_with("m.json: mapping #1"), "{e}");
        }
        assert!(
            p(r#"[{"src": "a", "dest": "/x", "extra": 1}]"#)
                .unwrap_err()
                .to_string()
                .contains("unknown field")
        );
        assert!(
            p(r#"[{"src": "", "dest": "/x"}]"#)
                .unwrap_err()
                .to_string()
                .contains("src is empty")
        );
    }
}
