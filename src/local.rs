//! The local side of a mapping: what a `src` holds right now.
//!
//! A src is either one file (followed if it is a symlink, as scp does) or a
//! directory tree, walked without following symlinks: a symlink inside a tree is
//! an entry of its own, recreated as a symlink on the remote, so nothing outside
//! src is ever read through it. Scanning several srcs runs in parallel (rayon),
//! and each distinct src (with its exclude patterns) is scanned once even when
//! many hosts map it. Excluded paths ([`Excludes`]) are not entered at all: an
//! excluded directory is neither listed nor walked, so an unreadable one is no error.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;

use crate::exclude::Excludes;

/// What kind of thing an entry is, with what the remote copy must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File(FileMeta),
    /// A directory with its permission bits.
    Dir { mode: u32 },
    /// A symlink with its target, as stored (never followed).
    Symlink { target: OsString },
}

/// The attributes of a regular file that a transfer preserves and a skip compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMeta {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, whole seconds (SCP carries seconds only).
    pub mtime: i64,
    /// Modification time, nanosecond part (to notice a rewrite within the same second).
    pub mtime_nsec: i64,
    /// Access time, whole seconds.
    pub atime: i64,
    /// Permission bits (`0o7777` part of st_mode).
    pub mode: u32,
}

impl FileMeta {
    /// Reads the attributes from file metadata.
    pub fn of(m: &std::fs::Metadata) -> FileMeta {
        FileMeta {
            size: m.len(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            atime: m.atime(),
            mode: m.mode() & 0o7777,
        }
    }
}

/// One thing below a src.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to src; empty for a file src itself.
    pub rel: PathBuf,
    /// What it is.
    pub kind: Kind,
}

/// A scanned src.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// True when src is a directory (mirrored into dest), false for a single file.
    pub is_dir: bool,
    /// For a directory: every entry below it, parents before children, sorted by name.
    /// For a file: one entry with an empty `rel`.
    pub entries: Vec<Entry>,
    /// Entries that could not be read (permission denied, vanished), with the reason.
    pub errors: Vec<(PathBuf, String)>,
}

/// Why a src could not be scanned at all.
pub type ScanError = String;

/// Scans one src, leaving out what `exclude` names (directory src only).
pub fn scan(src: &Path, exclude: &Excludes) -> Result<Source, ScanError> {
    let meta = std::fs::metadata(src).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "src does not exist".to_string(),
        _ => format!("cannot read src: {e}"),
    })?;
    if meta.is_file() {
        return Ok(Source {
            is_dir: false,
            entries: vec![Entry {
                rel: PathBuf::new(),
                kind: Kind::File(FileMeta::of(&meta)),
            }],
            errors: Vec::new(),
        });
    }
    if !meta.is_dir() {
        return Err("src is neither a regular file nor a directory".into());
    }
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    walk(src, src, 1, exclude, &mut entries, &mut errors);
    Ok(Source {
        is_dir: true,
        entries,
        errors,
    })
}

/// Why [`scan_below`] found nothing to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Below {
    /// The path does not exist (any more): it was deleted or renamed away.
    Missing,
    /// The path exists but cannot be read (permission denied, I/O error). This is
    /// never taken as a deletion: a read error must not remove remote data.
    Unreadable(String),
}

/// Scans `src/rel` alone (not following a symlink there) and, for a directory,
/// everything below it that `exclude` does not name. Entries are relative to `src`.
pub fn scan_below(src: &Path, rel: &Path, exclude: &Excludes) -> Result<Vec<Entry>, Below> {
    let start = src.join(rel);
    match std::fs::symlink_metadata(&start) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Below::Missing),
        Err(e) => return Err(Below::Unreadable(e.to_string())),
    }
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    walk(src, &start, 0, exclude, &mut entries, &mut errors);
    match errors.into_iter().next() {
        // Whatever could not be read may not be taken for gone (no deletion below it).
        Some((path, msg)) => Err(Below::Unreadable(format!("{}: {msg}", path.display()))),
        None => Ok(entries),
    }
}

/// Walks `start` (below `src`) without following symlinks, sorted by name, skipping
/// excluded entries and everything below an excluded directory.
fn walk(
    src: &Path,
    start: &Path,
    min_depth: usize,
    exclude: &Excludes,
    entries: &mut Vec<Entry>,
    errors: &mut Vec<(PathBuf, String)>,
) {
    let walk = walkdir::WalkDir::new(start)
        .min_depth(min_depth)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            let rel = e.path().strip_prefix(src).unwrap_or(e.path());
            !exclude.is_excluded(rel, e.file_type().is_dir())
        });
    for item in walk {
        match item {
            Ok(e) => {
                let rel = e.path().strip_prefix(src).unwrap_or(e.path()).to_path_buf();
                match entry_kind(&e) {
                    Ok(Some(kind)) => entries.push(Entry { rel, kind }),
                    Ok(None) => {} // sockets, fifos, devices: not content to copy
                    Err(msg) => errors.push((e.path().to_path_buf(), msg)),
                }
            }
            Err(err) => {
                let path = err.path().map(Path::to_path_buf).unwrap_or_default();
                let msg = err
                    .io_error()
                    .map(|io| io.to_string())
                    .unwrap_or_else(|| err.to_string());
                errors.push((path, msg));
            }
        }
    }
}

/// SHA-256 of a file's content as lowercase hex (what `sha256sum` prints).
pub fn sha256_hex(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The kind of one walked entry; `None` for special files that are not copied.
fn entry_kind(e: &walkdir::DirEntry) -> Result<Option<Kind>, String> {
    let meta = e.metadata().map_err(|err| err.to_string())?;
    let ft = meta.file_type();
    Ok(if ft.is_file() {
        Some(Kind::File(FileMeta::of(&meta)))
    } else if ft.is_dir() {
        Some(Kind::Dir {
            mode: meta.mode() & 0o7777,
        })
    } else if ft.is_symlink() {
        let target = std::fs::read_link(e.path()).map_err(|err| err.to_string())?;
        Some(Kind::Symlink {
            target: target.into_os_string(),
        })
    } else {
        None
    })
}

/// What a scan is keyed by: the src and the exclude patterns applied to it.
pub type ScanKey = (PathBuf, Vec<String>);

/// Scans every distinct (src, excludes) once, in parallel.
pub fn scan_all<'a>(
    srcs: impl IntoIterator<Item = (&'a Path, &'a Excludes)>,
) -> HashMap<ScanKey, Arc<Result<Source, ScanError>>> {
    let mut unique: Vec<(&Path, &Excludes)> = srcs.into_iter().collect();
    unique.sort_by(|a, b| (a.0, a.1.patterns()).cmp(&(b.0, b.1.patterns())));
    unique.dedup();
    unique
        .par_iter()
        .map(|(p, e)| {
            (
                (p.to_path_buf(), e.patterns().to_vec()),
                Arc::new(scan(p, e)),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_tree_sorted_with_symlinks_and_empty_dirs() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("src");
        std::fs::create_dir_all(root.join("b/empty")).unwrap();
        std::fs::write(root.join("a.txt"), "hello").unwrap();
        std::fs::write(root.join("b/c.txt"), "x").unwrap();
        std::os::unix::fs::symlink("../outside", root.join("link")).unwrap();
        let s = scan(&root, &Excludes::default()).unwrap();
        assert!(s.is_dir);
        let rels: Vec<_> = s.entries.iter().map(|e| e.rel.to_str().unwrap()).collect();
        assert_eq!(rels, ["a.txt", "b", "b/c.txt", "b/empty", "link"]);
        assert!(matches!(&s.entries[0].kind, Kind::File(m) if m.size == 5));
        assert!(matches!(&s.entries[4].kind, Kind::Symlink { target } if target == "../outside"));
    }

    #[test]
    fn single_file_and_missing() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, "abc").unwrap();
        let s = scan(&f, &Excludes::default()).unwrap();
        assert!(!s.is_dir);
        assert_eq!(s.entries[0].rel, PathBuf::new());
        assert_eq!(
            scan(&d.path().join("nope"), &Excludes::default()).unwrap_err(),
            "src does not exist"
        );
    }

    #[test]
    fn scan_below_and_hash() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/b/f"), "12345").unwrap();
        let e = scan_below(d.path(), Path::new("a"), &Excludes::default()).unwrap();
        let rels: Vec<_> = e.iter().map(|e| e.rel.to_str().unwrap()).collect();
        assert_eq!(rels, ["a", "a/b", "a/b/f"]);
        assert_eq!(
            scan_below(d.path(), Path::new("nope"), &Excludes::default()).map(|_| ()),
            Err(Below::Missing)
        );
        // An error other than "not found" (here ENAMETOOLONG; root ignores permissions)
        // is unreadable, never gone: it must not lead to a remote deletion.
        let long = "x".repeat(300);
        assert!(matches!(
            scan_below(d.path(), Path::new(&long), &Excludes::default()),
            Err(Below::Unreadable(_))
        ));
        assert_eq!(
            sha256_hex(&d.path().join("a/b/f")).unwrap(),
            "5994471abb01112afcc18159f6cc74b4f511b99806da59b3caf5a9c173cacfc5"
        );
    }

    #[test]
    fn scan_all_dedups() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, "abc").unwrap();
        let none = Excludes::default();
        let some = Excludes::new(&["*.x".into()]).unwrap();
        let all = scan_all([(f.as_path(), &none), (f.as_path(), &none)]);
        assert_eq!(all.len(), 1);
        let all = scan_all([(f.as_path(), &none), (f.as_path(), &some)]);
        assert_eq!(all.len(), 2, "different excludes are different scans");
    }

    /// Excluded entries are left out, and an excluded directory is not entered
    /// (an unreadable one is therefore no error).
    #[test]
    fn excluded_entries_are_not_scanned() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("src");
        std::fs::create_dir_all(root.join("cache/deep")).unwrap();
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("a.txt"), "a").unwrap();
        std::fs::write(root.join("a.swp"), "x").unwrap();
        std::fs::write(root.join("sub/b.swp"), "x").unwrap();
        std::fs::write(root.join("cache/deep/f"), "x").unwrap();
        std::fs::set_permissions(root.join("cache"), std::fs::Permissions::from_mode(0o000))
            .unwrap();
        let ex = Excludes::new(&["*.swp".into(), "cache/".into()]).unwrap();
        let s = scan(&root, &ex).unwrap();
        std::fs::set_permissions(root.join("cache"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let rels: Vec<_> = s.entries.iter().map(|e| e.rel.to_str().unwrap()).collect();
        assert_eq!(rels, ["a.txt", "sub"]);
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        let below = scan_below(&root, Path::new("sub"), &ex).unwrap();
        assert_eq!(below.len(), 1);
        assert!(
            scan_below(&root, Path::new("cache"), &ex)
                .unwrap()
                .is_empty()
        );
    }
}
