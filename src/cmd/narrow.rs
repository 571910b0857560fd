//! `hostsync sync PATH...`: push only what lies under some local paths (issue 14).
//!
//! For "push just this file now". Each PATH is taken from the current directory,
//! as rsync takes its sources, and compared with each mapping's src lexically
//! (`.` and `..` folded, symlinks not resolved, so a file that is gone can still be
//! named to propagate its removal). A PATH at or above a src takes the whole
//! mapping ([`Scope::All`], exactly what `sync` does); a PATH below a directory
//! src takes that path and what is below it ([`Scope::Paths`], as `watch` pushes a
//! change). A PATH that no mapping of the selected hosts covers is a usage error.

use std::path::{Component, Path, PathBuf};

use anyhow::{Result, bail};

use crate::config::{Mapping, Target};
use crate::reconcile::Scope;

/// The paths as absolute, lexically normal paths (relative ones from `cwd`).
pub(crate) fn resolve(paths: &[PathBuf], cwd: &Path) -> Vec<PathBuf> {
    paths.iter().map(|p| normal(&cwd.join(p))).collect()
}

/// `p` without `.` components, with each `..` taking away the component before it.
fn normal(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// What of `m` the (resolved) `paths` ask for, if anything.
fn scope(m: &Mapping, paths: &[PathBuf]) -> Option<Scope> {
    let src = normal(&m.src);
    let mut below = std::collections::BTreeSet::new();
    for p in paths {
        if src.starts_with(p) {
            return Some(Scope::All);
        }
        // Below a file src there is nothing; `is_file` follows a symlinked src as scp does.
        if let Ok(rel) = p.strip_prefix(&src)
            && !m.src.is_file()
        {
            below.insert(m.src.join(rel));
        }
    }
    (!below.is_empty()).then_some(Scope::Paths(below))
}

/// The work for `target`: per mapping index, what of it the paths ask for.
pub(crate) fn work(target: &Target, paths: &[PathBuf]) -> Vec<(usize, Scope)> {
    target
        .mappings
        .iter()
        .enumerate()
        .filter_map(|(i, m)| scope(m, paths).map(|s| (i, s)))
        .collect()
}

/// Refuses (exit 2) a path that no mapping of `targets` covers; `given` are the
/// paths as written, `resolved` as [`resolve`] made them.
pub(crate) fn check_covered(
    targets: &[&Target],
    given: &[PathBuf],
    resolved: &[PathBuf],
) -> Result<()> {
    for (g, p) in given.iter().zip(resolved) {
        let one = std::slice::from_ref(p);
        let covered = targets
            .iter()
            .any(|t| t.mappings.iter().any(|m| scope(m, one).is_some()));
        if !covered {
            bail!(
                "sync {}: {} is not inside any mapping's src of the selected hosts; name a file or directory inside a src from the mapping files",
                g.display(),
                p.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(dir: &Path, src: &str) -> Mapping {
        let text = format!(r#"[{{"src": "{src}", "dest": "/srv/x"}}]"#);
        crate::config::mapping::parse(Path::new("m.json"), dir, &text)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn paths_fold_dots_and_start_at_the_cwd() {
        let got = resolve(
            &["a/./b/../c".into(), "/abs/x/..".into(), ".".into()],
            Path::new("/cwd/sub"),
        );
        let want: Vec<PathBuf> = vec!["/cwd/sub/a/c".into(), "/abs".into(), "/cwd/sub".into()];
        assert_eq!(got, want);
    }

    #[test]
    fn a_path_at_or_above_src_is_the_whole_mapping_below_it_a_part() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("site/img")).unwrap();
        std::fs::write(d.path().join("app.conf"), "x").unwrap();
        let site = mapping(d.path(), "site/");
        let file = mapping(d.path(), "./app.conf");
        let at = |p: &Path| resolve(&[p.to_path_buf()], d.path());
        assert_eq!(scope(&site, &at(Path::new("site"))), Some(Scope::All));
        assert_eq!(scope(&site, &at(Path::new("."))), Some(Scope::All));
        assert_eq!(
            scope(&site, &at(Path::new("site/img/../gone.html"))),
            Some(Scope::Paths(
                [d.path().join("site/").join("gone.html")].into()
            ))
        );
        assert_eq!(scope(&site, &at(Path::new("sitex"))), None);
        assert_eq!(scope(&file, &at(Path::new("app.conf"))), Some(Scope::All));
        assert_eq!(scope(&file, &at(Path::new("app.conf/x"))), None);
        // All wins over parts; parts add up.
        let both = [
            at(Path::new("site/a"))[0].clone(),
            at(Path::new("site"))[0].clone(),
        ];
        assert_eq!(scope(&site, &both), Some(Scope::All));
        let parts = [
            at(Path::new("site/a"))[0].clone(),
            at(Path::new("site/b"))[0].clone(),
        ];
        assert!(matches!(scope(&site, &parts), Some(Scope::Paths(p)) if p.len() == 2));
    }
}
