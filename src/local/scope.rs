//! The local view of part of a mapping: the paths `watch` saw change (or `sync
//! PATH...` names), scanned now, with the directories on the way to them and
//! the paths that are gone.

use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Below, Entry, Kind, ScanError, Source};
use crate::config::Mapping;

/// What part of a mapping looks like here now.
#[derive(Debug)]
pub(crate) enum Scoped {
    /// A path is the mapping's src itself: all of it, scanned.
    Whole(Arc<Result<Source, ScanError>>),
    /// Only some paths.
    Paths {
        /// The entries at and below those paths, and the directories on the way.
        source: Arc<Result<Source, ScanError>>,
        /// The paths (relative to src, `/`-separated bytes) that were looked at.
        rels: Vec<Vec<u8>>,
        /// Those of them that are gone here.
        gone: Vec<Vec<u8>>,
        /// Whether src is a directory.
        is_dir: bool,
    },
}

/// Scans `paths` (local paths below, or equal to, `m.src`) as they are now. An
/// excluded path is left out (issue 5); a file mapping's only path is src.
pub(crate) fn scan_paths(m: &Mapping, paths: &BTreeSet<PathBuf>) -> Scoped {
    let mut found = Found::default();
    let src_is_dir = std::fs::metadata(&m.src).map(|md| md.is_dir());
    match src_is_dir {
        Ok(false) => {
            let dest = m.file_dest();
            let name = dest
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .as_bytes()
                .to_vec();
            match super::scan(&m.src, &m.exclude, m.follow_symlinks) {
                Ok(s) => found.entries = s.entries,
                Err(_) => found.gone.push(name.clone()),
            }
            found.rels.push(name);
        }
        Ok(true) => {
            for p in paths {
                let Ok(rel) = p.strip_prefix(&m.src) else {
                    continue;
                };
                if rel.as_os_str().is_empty() {
                    // The root itself changed: look at all of it.
                    let whole = super::scan(&m.src, &m.exclude, m.follow_symlinks);
                    return Scoped::Whole(Arc::new(whole));
                }
                found.path(m, p, rel);
            }
        }
        Err(ref e) => (found.errors).push((m.src.clone(), format!("cannot read src: {e}"))),
    }
    found.into_scoped(src_is_dir.as_ref().copied().unwrap_or(true))
}

/// What [`scan_paths`] gathers.
#[derive(Default)]
struct Found {
    entries: Vec<Entry>,
    errors: Vec<(PathBuf, String)>,
    gone: Vec<Vec<u8>>,
    rels: Vec<Vec<u8>>,
}

impl Found {
    /// Scans one path `p` (`rel` below src). One that is gone is judged later by
    /// the removal rules, which know what the remote has there.
    fn path(&mut self, m: &Mapping, p: &Path, rel: &Path) {
        let is_dir = std::fs::symlink_metadata(p).map(|md| md.is_dir());
        if match is_dir {
            Ok(d) => m.exclude.is_excluded(rel, d),
            Err(_) => m.exclude.surely_excluded(rel),
        } {
            log::trace!("{}: excluded, not pushed", p.display());
            return;
        }
        let rel_bytes = rel.as_os_str().as_bytes().to_vec();
        add_ancestors(m, rel, &mut self.entries);
        match super::scan_below(&m.src, rel, &m.exclude, m.follow_symlinks) {
            Ok(found) => self.entries.extend(found),
            Err(Below::Missing) => self.gone.push(rel_bytes.clone()),
            Err(Below::Unreadable(msg)) => self.errors.push((p.to_path_buf(), msg)),
        }
        self.rels.push(rel_bytes);
    }

    /// The scope: a source that failed as a whole when nothing could be read.
    fn into_scoped(mut self, is_dir: bool) -> Scoped {
        self.entries.sort_by(|a, b| a.rel.cmp(&b.rel));
        self.entries.dedup_by(|a, b| a.rel == b.rel);
        let nothing = self.entries.is_empty() && self.gone.is_empty();
        let source = match self.errors.first() {
            Some((p, reason)) if nothing => Err(format!("{}: {reason}", p.display())),
            _ => Ok(Source {
                is_dir,
                entries: self.entries,
                errors: self.errors,
            }),
        };
        Scoped::Paths {
            source: Arc::new(source),
            rels: self.rels,
            gone: self.gone,
            is_dir,
        }
    }
}

/// Adds a `Dir` entry for each directory between the mapping's src and `rel`.
fn add_ancestors(m: &Mapping, rel: &Path, entries: &mut Vec<Entry>) {
    let mut anc = rel.parent();
    while let Some(a) = anc.filter(|a| !a.as_os_str().is_empty()) {
        if let Ok(md) = std::fs::symlink_metadata(m.src.join(a))
            && md.is_dir()
        {
            use std::os::unix::fs::MetadataExt;
            entries.push(Entry {
                rel: a.to_path_buf(),
                kind: Kind::Dir {
                    mode: md.mode() & 0o7777,
                },
            });
        }
        anc = a.parent();
    }
}
