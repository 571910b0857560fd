//! `"exclude"`: the paths of a directory mapping that hostsync leaves alone.
//!
//! Patterns are gitignore lines, matched by the `ignore` crate's gitignore
//! matcher (built on globset), relative to the mapping's src directory:
//! - `*.swp` (no `/`) matches that name at any depth;
//! - `errors/**`, `/build` (a `/` at the start or in the middle) are anchored at src;
//! - `cache/` (a trailing `/`) matches directories only;
//! - `!keep.log` re-includes what an earlier pattern excluded, except below an
//!   excluded directory (as in git, a directory that is excluded is never entered);
//! - the last matching pattern wins.
//!
//! An excluded path is never sent, never deleted on the remote (`"delete": true`
//! skips it) and changes to it are never pushed by `watch` (issue 5). A directory
//! that is excluded takes everything below it along.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use ignore::gitignore::{Gitignore, GitignoreBuilder};

/// A mapping's compiled exclude patterns. Cheap to clone; compares by pattern text.
#[derive(Clone, Default)]
pub(crate) struct Excludes {
    /// The patterns as written in the mapping file.
    patterns: Vec<String>,
    /// The compiled matcher; `None` when there are no patterns.
    matcher: Option<Arc<Gitignore>>,
}

impl Excludes {
    /// Compiles `patterns`. An `Err` names the first bad pattern (1-based) and says
    /// how to fix it; it does not name the file, which the caller adds.
    pub(crate) fn new(patterns: &[String]) -> Result<Excludes, String> {
        if patterns.is_empty() {
            return Ok(Excludes::default());
        }
        let mut builder = GitignoreBuilder::new("/");
        // A `[` without `]` is an error, not a literal: a typo should not silently match nothing.
        builder.allow_unclosed_class(false);
        for (i, p) in patterns.iter().enumerate() {
            let at = format!("exclude #{} {p:?}", i + 1);
            if p.trim().is_empty() {
                return Err(format!("{at}: the pattern is empty; remove it"));
            }
            if p.contains('\0') || p.contains('\n') {
                return Err(format!(
                    "{at}: contains a NUL or newline character; write one pattern per string"
                ));
            }
            if p.starts_with('#') {
                return Err(format!(
                    "{at}: starts with `#`, which gitignore reads as a comment; write `\\#` to match a literal #"
                ));
            }
            if let Err(e) = builder.add_line(None, p) {
                let why = match e {
                    ignore::Error::Glob { err, .. } => err,
                    other => other.to_string(),
                };
                return Err(format!(
                    "{at}: not a valid glob ({why}); fix it (gitignore syntax: *.swp, cache/, errors/**) or escape the character with \\"
                ));
            }
        }
        let matcher = builder
            .build()
            .map_err(|e| format!("exclude: cannot compile the patterns: {e}"))?;
        Ok(Excludes {
            patterns: patterns.to_vec(),
            matcher: Some(Arc::new(matcher)),
        })
    }

    /// True when there are no patterns.
    pub(crate) fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The patterns as written.
    pub(crate) fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether `rel` (relative to src; `is_dir` says whether it is a directory, not
    /// following symlinks) is excluded, by itself or through an excluded parent.
    /// The empty path (src itself) is never excluded.
    pub(crate) fn is_excluded(&self, rel: &Path, is_dir: bool) -> bool {
        let Some(m) = &self.matcher else {
            return false;
        };
        if rel.as_os_str().is_empty() {
            return false;
        }
        // Parents first, top-down: below an excluded directory nothing is re-included.
        let mut parents: Vec<&Path> = rel
            .ancestors()
            .skip(1)
            .filter(|a| !a.as_os_str().is_empty())
            .collect();
        parents.reverse();
        if parents.iter().any(|p| m.matched(p, true).is_ignore()) {
            return true;
        }
        m.matched(rel, is_dir).is_ignore()
    }

    /// [`Excludes::is_excluded`] for a `/`-separated byte path (a remote listing entry).
    pub(crate) fn is_excluded_bytes(&self, rel: &[u8], is_dir: bool) -> bool {
        self.is_excluded(Path::new(std::ffi::OsStr::from_bytes(rel)), is_dir)
    }

    /// Whether `rel` is excluded whether it is a file or a directory. For the
    /// planner, which sees paths that may no longer exist; a path excluded only as
    /// a directory (`cache/`) is left to the worker, which looks at it.
    pub(crate) fn surely_excluded(&self, rel: &Path) -> bool {
        self.is_excluded(rel, false) && self.is_excluded(rel, true)
    }
}

impl PartialEq for Excludes {
    fn eq(&self, other: &Self) -> bool {
        self.patterns == other.patterns
    }
}

impl Eq for Excludes {}

impl std::fmt::Debug for Excludes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Excludes").field(&self.patterns).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(p: &[&str]) -> Excludes {
        Excludes::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn gitignore_semantics() {
        let e = ex(&[
            "*.swp",
            "cache/",
            "errors/**",
            "/build",
            "*.log",
            "!keep.log",
        ]);
        let f = |p: &str| e.is_excluded(Path::new(p), false);
        let d = |p: &str| e.is_excluded(Path::new(p), true);
        // A name pattern matches at any depth.
        assert!(f("a.swp") && f("x/y/.a.swp"));
        assert!(!f("a.swpx"));
        // Directory-only: the directory and everything below it, never a file of that name.
        assert!(d("cache") && d("sub/cache") && f("cache/x") && f("sub/cache/deep/x"));
        assert!(!f("cache"));
        // `errors/**`: everything inside errors (anchored), not the directory itself.
        assert!(f("errors/a") && d("errors/b") && f("errors/b/c"));
        assert!(!d("errors") && !f("sub/errors/a"));
        // Leading slash anchors at src.
        assert!(d("build") && f("build/x") && !d("sub/build"));
        // Negation re-includes, unless a parent directory is excluded.
        assert!(f("a.log") && !f("keep.log") && f("cache/keep.log"));
        // src itself is never excluded.
        assert!(!d(""));
        assert!(e.is_excluded_bytes(b"x/a.swp", false));
        assert!(e.surely_excluded(Path::new("cache/x")));
        assert!(!e.surely_excluded(Path::new("cache")), "maybe a file");
        assert!(!Excludes::default().is_excluded(Path::new("a.swp"), false));
    }

    #[test]
    fn bad_patterns_are_named_with_a_fix() {
        for (pat, needle) in [
            ("a[", "not a valid glob"),
            ("[z-a]", "not a valid glob"),
            ("{a,b", "not a valid glob"),
            ("", "empty"),
            ("  ", "empty"),
            ("#x", "comment"),
            ("a\nb", "newline"),
        ] {
            let e = Excludes::new(&["ok".into(), pat.into()]).unwrap_err();
            assert!(e.starts_with("exclude #2 "), "{pat:?}: {e}");
            assert!(e.contains(needle), "{pat:?}: {e}");
        }
        assert!(ex(&["\\#literal", "a\\[b"]).is_excluded(Path::new("a[b"), false));
    }

    #[test]
    fn equality_is_by_pattern_text() {
        assert_eq!(ex(&["*.a"]), ex(&["*.a"]));
        assert_ne!(ex(&["*.a"]), ex(&["*.b"]));
        assert_eq!(Excludes::default(), ex(&[]));
    }
}
