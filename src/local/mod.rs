//! The local side of a mapping: what a `src` holds right now.
//!
//! A src is either one file (followed if it is a symlink, as scp does) or a
//! directory tree, walked without following symlinks: a symlink inside a tree is
//! an entry of its own, recreated as a symlink on the remote, so nothing outside
//! src is ever read through it (`"follow_symlinks": true` on a mapping follows them
//! instead). A file is read through [`read::Reading`], which does not follow a
//! symlink either and checks that the file is still the one the scan saw (same
//! device and inode): a file another local user swapped for a link to a secret
//! after the scan is scanned again, never read through (issue 13). Scanning several srcs runs in parallel (rayon),
//! and each distinct src (with its exclude patterns) is scanned once even when
//! many hosts map it. Excluded paths ([`Excludes`]) are not entered at all: an
//! excluded directory is neither listed nor walked, so an unreadable one is no error.
//! An entry that is renamed or deleted between being listed and being read (an
//! editor's temporary, renamed over the real file) has nothing to send: a debug
//! line, not an error, whether the scan or the send notices it (issue 14, bug 1).

pub(crate) mod pushed;
pub(crate) mod read;
pub(crate) mod scope;

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;

use crate::config::exclude::Excludes;

/// Scanned sources by src path and exclude patterns (see [`scan_all`]).
pub(crate) type Sources =
    std::collections::HashMap<ScanKey, std::sync::Arc<Result<Source, ScanError>>>;

/// What kind of thing an entry is, with what the remote copy must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A regular file.
    File(FileMeta),
    /// A directory with its permission bits.
    Dir { mode: u32 },
    /// A symlink with its target, as stored (never followed).
    Symlink { target: OsString },
}

/// The attributes of a regular file that a transfer preserves and a skip compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileMeta {
    /// Size in bytes.
    pub(crate) size: u64,
    /// Modification time, whole seconds (with `mtime_nsec`, the time a transfer keeps).
    pub(crate) mtime: i64,
    /// Modification time, nanosecond part (to notice a rewrite within the same second).
    pub(crate) mtime_nsec: i64,
    /// Access time, whole seconds.
    pub(crate) atime: i64,
    /// Permission bits (`0o7777` part of st_mode).
    pub(crate) mode: u32,
    /// Device of the file, to recognise it when it is opened for sending.
    pub(crate) dev: u64,
    /// Inode of the file, likewise.
    pub(crate) ino: u64,
}

impl FileMeta {
    /// Reads the attributes from file metadata.
    pub(crate) fn of(m: &std::fs::Metadata) -> FileMeta {
        FileMeta {
            size: m.len(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            atime: m.atime(),
            mode: m.mode() & 0o7777,
            dev: m.dev(),
            ino: m.ino(),
        }
    }

    /// Whether `now` says the file is unchanged since `self` was taken: same size
    /// and mtime to the nanosecond (a file that changed while it was read).
    pub(crate) fn unchanged(&self, now: &FileMeta) -> bool {
        self.size == now.size && self.mtime == now.mtime && self.mtime_nsec == now.mtime_nsec
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One thing below a src.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Path relative to src; empty for a file src itself.
    pub(crate) rel: PathBuf,
    /// What it is.
    pub(crate) kind: Kind,
}

/// A scanned src.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Source {
    /// True when src is a directory (mirrored into dest), false for a single file.
    pub(crate) is_dir: bool,
    /// For a directory: every entry below it, parents before children, sorted by name.
    /// For a file: one entry with an empty `rel`.
    pub(crate) entries: Vec<Entry>,
    /// Entries that could not be read (permission denied, vanished), with the reason.
    pub(crate) errors: Vec<(PathBuf, String)>,
}

/// Why a src could not be scanned at all.
pub(crate) type ScanError = String;

/// Scans one src, leaving out what `exclude` names (directory src only); with
/// `follow`, symlinks below a directory src are followed.
pub(crate) fn scan(src: &Path, exclude: &Excludes, follow: bool) -> Result<Source, ScanError> {
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
    walk(src, src, 1, exclude, follow, &mut entries, &mut errors);
    Ok(Source {
        is_dir: true,
        entries,
        errors,
    })
}

/// Why [`scan_below`] found nothing to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Below {
    /// The path does not exist (any more): it was deleted or renamed away.
    Missing,
    /// The path exists but cannot be read (permission denied, I/O error). This is
    /// never taken as a deletion: a read error must not remove remote data.
    Unreadable(String),
}

/// Scans `src/rel` alone (not following a symlink there unless `follow`) and, for a
/// directory, everything below it that `exclude` does not name. Entries are
/// relative to `src`.
pub(crate) fn scan_below(
    src: &Path,
    rel: &Path,
    exclude: &Excludes,
    follow: bool,
) -> Result<Vec<Entry>, Below> {
    let start = src.join(rel);
    match std::fs::symlink_metadata(&start) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Below::Missing),
        Err(e) => return Err(Below::Unreadable(e.to_string())),
    }
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    walk(src, &start, 0, exclude, follow, &mut entries, &mut errors);
    match errors.into_iter().next() {
        // Whatever could not be read may not be taken for gone (no deletion below it).
        Some((path, msg)) => Err(Below::Unreadable(format!("{}: {msg}", path.display()))),
        // Renamed away while it was walked (an editor's temporary): gone after all.
        None if entries.is_empty() && vanished(&start) => Err(Below::Missing),
        None => Ok(entries),
    }
}

/// Whether nothing is at `path` any more (not even a dangling symlink): an entry
/// that was listed and then renamed or deleted before it could be read. Such an
/// entry has nothing to send and is no error (issue 14, bug 1); any other failure
/// to read an entry still is one.
fn vanished(path: &Path) -> bool {
    matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
}

/// Walks `start` (below `src`) without following symlinks, sorted by name, skipping
/// excluded entries and everything below an excluded directory.
fn walk(
    src: &Path,
    start: &Path,
    min_depth: usize,
    exclude: &Excludes,
    follow: bool,
    entries: &mut Vec<Entry>,
    errors: &mut Vec<(PathBuf, String)>,
) {
    let walk = walkdir::WalkDir::new(start)
        .min_depth(min_depth)
        .follow_links(follow)
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
                    Err(_) if vanished(e.path()) => gone_while_scanned(e.path()),
                    Err(msg) => errors.push((e.path().to_path_buf(), msg)),
                }
            }
            Err(err) if err.path().is_some_and(vanished) => {
                gone_while_scanned(err.path().unwrap_or(start));
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

/// The debug line for an entry that [`vanished`] between its listing and its stat.
fn gone_while_scanned(path: &Path) {
    log::debug!(
        "{}: gone while it was scanned; nothing to send",
        path.display()
    );
}

/// SHA-256 of a file's content as lowercase hex (what `sha256sum` prints).
pub(crate) fn sha256_hex(path: &Path) -> std::io::Result<String> {
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
    Ok(hex(&hasher.finalize()))
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

/// What a scan is keyed by: the src, the exclude patterns applied to it, and
/// whether symlinks below it are followed.
pub(crate) type ScanKey = (PathBuf, Vec<String>, bool);

/// Scans every distinct (src, excludes, follow) once, in parallel.
pub(crate) fn scan_all<'a>(
    srcs: impl IntoIterator<Item = (&'a Path, &'a Excludes, bool)>,
) -> HashMap<ScanKey, Arc<Result<Source, ScanError>>> {
    let mut unique: Vec<(&Path, &Excludes, bool)> = srcs.into_iter().collect();
    unique.sort_by(|a, b| (a.0, a.1.patterns(), a.2).cmp(&(b.0, b.1.patterns(), b.2)));
    unique.dedup();
    unique
        .par_iter()
        .map(|(p, e, f)| {
            (
                (p.to_path_buf(), e.patterns().to_vec(), *f),
                Arc::new(scan(p, e, *f)),
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
        let s = scan(&root, &Excludes::default(), false).unwrap();
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
        let s = scan(&f, &Excludes::default(), false).unwrap();
        assert!(!s.is_dir);
        assert_eq!(s.entries[0].rel, PathBuf::new());
        assert_eq!(
            scan(&d.path().join("nope"), &Excludes::default(), false).unwrap_err(),
            "src does not exist"
        );
    }

    #[test]
    fn scan_below_and_hash() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/b/f"), "12345").unwrap();
        let e = scan_below(d.path(), Path::new("a"), &Excludes::default(), false).unwrap();
        let rels: Vec<_> = e.iter().map(|e| e.rel.to_str().unwrap()).collect();
        assert_eq!(rels, ["a", "a/b", "a/b/f"]);
        assert_eq!(
            scan_below(d.path(), Path::new("nope"), &Excludes::default(), false).map(|_| ()),
            Err(Below::Missing)
        );
        // An error other than "not found" (here ENAMETOOLONG; root ignores permissions)
        // is unreadable, never gone: it must not lead to a remote deletion.
        let long = "x".repeat(300);
        assert!(matches!(
            scan_below(d.path(), Path::new(&long), &Excludes::default(), false),
            Err(Below::Unreadable(_))
        ));
        assert_eq!(
            sha256_hex(&d.path().join("a/b/f")).unwrap(),
            "5994471abb01112afcc18159f6cc74b4f511b99806da59b3caf5a9c173cacfc5"
        );
    }

    /// Issue 14, bug 1: only an entry that is not there any more has vanished; a
    /// dangling symlink is still there (and, followed, still an error).
    #[test]
    fn only_what_is_gone_has_vanished() {
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("nowhere", d.path().join("dangling")).unwrap();
        assert!(vanished(&d.path().join("nope")));
        assert!(!vanished(&d.path().join("dangling")));
        let followed = scan(d.path(), &Excludes::default(), true).unwrap();
        assert_eq!(followed.errors.len(), 1, "{followed:?}");
        assert!(matches!(
            scan_below(d.path(), Path::new("dangling"), &Excludes::default(), true),
            Err(Below::Unreadable(_))
        ));
    }

    #[test]
    fn scan_all_dedups() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, "abc").unwrap();
        let none = Excludes::default();
        let some = Excludes::new(&["*.x".into()]).unwrap();
        let all = scan_all([(f.as_path(), &none, false), (f.as_path(), &none, false)]);
        assert_eq!(all.len(), 1);
        let all = scan_all([(f.as_path(), &none, false), (f.as_path(), &some, false)]);
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
        let s = scan(&root, &ex, false).unwrap();
        std::fs::set_permissions(root.join("cache"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let rels: Vec<_> = s.entries.iter().map(|e| e.rel.to_str().unwrap()).collect();
        assert_eq!(rels, ["a.txt", "sub"]);
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        let below = scan_below(&root, Path::new("sub"), &ex, false).unwrap();
        assert_eq!(below.len(), 1);
        assert!(
            scan_below(&root, Path::new("cache"), &ex, false)
                .unwrap()
                .is_empty()
        );
    }
}
