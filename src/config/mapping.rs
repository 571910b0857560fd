//! `mappings/<address>.json`: what goes where on one host.
//!
//! Each entry maps a local `src` (file or directory, relative to config.ini's
//! directory, `~` expanded) to an absolute remote `dest`. Whether src is a file or
//! a directory is decided when the transfer runs, not here, so a src that is
//! missing today is an error for that mapping only, not for the whole run.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use serde::Deserialize;

use super::ini::resolve;
use super::source::{self, Problems};

/// One validated mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    /// Local source, absolute.
    pub src: PathBuf,
    /// Remote destination: absolute, normalised (no trailing `/`, no `.` or `..`), never `/`.
    pub dest: String,
    /// `"delete": true`: what disappears locally is removed below dest (never outside it).
    pub delete: bool,
}

/// The JSON shape of one entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapping {
    src: String,
    dest: String,
    #[serde(default)]
    delete: bool,
}

/// Reads one mapping file. `base` is config.ini's directory.
pub fn load(path: &Path, base: &Path) -> Result<Vec<Mapping>> {
    let text = source::read_text(path, "mapping file")?;
    parse(path, base, &text)
}

/// Parses a mapping file's text; `path` is used in messages only.
pub fn parse(path: &Path, base: &Path, text: &str) -> Result<Vec<Mapping>> {
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
        match normalize_dest(&r.dest) {
            Ok(dest) => out.push(Mapping {
                src: resolve(base, &r.src),
                dest,
                delete: r.delete,
            }),
            Err(msg) => problems.push(format!("{at}: dest {:?}: {msg}", r.dest)),
        }
    }
    problems.into_result()?;
    Ok(out)
}

/// Checks a remote destination and returns it without trailing slashes or `.` parts.
pub fn normalize_dest(dest: &str) -> Result<String, String> {
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
        let m = p(r#"[{"src": "a", "dest": "/b", "delete": true}]"#).unwrap();
        assert!(m[0].delete);
        assert!(p(r#"[{"src": "a", "dest": "/b", "delete": "yes"}]"#).is_err());
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
