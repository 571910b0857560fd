//! [`compare`] as tables: each case gives a mapping's options, the local
//! entries, what the remote listing found and how the batch is scoped, and
//! says what the plan must send (with why), remove, skip and refuse. No file
//! system and no host: the rules alone.

use super::*;
use crate::local::{Entry, FileMeta};
use crate::remote::RemoteEntry;

/// The root every case's destination is.
const DEST: &str = "/srv/www";

/// A local file of `size` bytes, mtime `mtime` (whole seconds) and `mode`.
fn file(size: u64, mtime: i64, mode: u32) -> Kind {
    Kind::File(FileMeta {
        size,
        mtime,
        mtime_nsec: 0,
        atime: 0,
        mode,
        dev: 1,
        ino: size + 1,
    })
}

fn dir() -> Kind {
    Kind::Dir { mode: 0o755 }
}

fn link(target: &str) -> Kind {
    Kind::Symlink {
        target: target.into(),
    }
}

/// A remote entry: `f`ile, `d`irectory or `l`ink.
fn there(kind: u8, size: u64, mtime: i64, mode: u32, target: &str) -> RemoteEntry {
    RemoteEntry {
        kind,
        size,
        mtime,
        mtime_nsec: 0,
        mode,
        target: target.as_bytes().to_vec(),
    }
}

fn rf(size: u64, mtime: i64, mode: u32) -> RemoteEntry {
    there(b'f', size, mtime, mode, "")
}

fn rd() -> RemoteEntry {
    there(b'd', 0, 0, 0o755, "")
}

fn rl(target: &str) -> RemoteEntry {
    there(b'l', 0, 0, 0o777, target)
}

/// One case.
#[derive(Default)]
struct Case {
    name: &'static str,
    /// Extra mapping fields, JSON (`"delete": true, "exclude": [...]`).
    options: &'static str,
    local: Vec<(&'static str, Kind)>,
    /// Local paths that could not be read (the scan's errors).
    unreadable: Vec<&'static str>,
    remote: Vec<(&'static str, RemoteEntry)>,
    /// Remote SHA-256 by path (a path listing, `sync --checksum`).
    hashes: Vec<(&'static str, &'static str)>,
    /// `Some(paths)`: a path push of those paths (relative to src), as `watch`
    /// does; the ones not in `local` are gone here. `None`: the whole mapping.
    paths: Option<Vec<&'static str>>,
    /// What is sent: (path, kind letter `d`/`f`/`l`, why).
    sends: Vec<(&'static str, char, &'static str)>,
    /// What is removed.
    removes: Vec<&'static str>,
    skipped: u64,
    /// (path below dest, or an absolute local path, a word of the reason, its
    /// kind) of each failure.
    fails: Vec<(&'static str, &'static str, Failure)>,
    /// A word of each warning.
    warns: Vec<&'static str>,
}

/// Local file content hashes: every local file hashes to `local-<size>`.
fn hash_of(case: &Case) -> impl Fn(&Path) -> Option<String> + '_ {
    move |p: &Path| {
        let rel = p.strip_prefix("/src/site").ok()?.to_str()?;
        case.local.iter().find_map(|(r, k)| match k {
            Kind::File(m) if *r == rel => Some(format!("local-{}", m.size)),
            _ => None,
        })
    }
}

/// Runs one case through [`compare`] on a host not served by the agent (stale
/// temporaries are never removable here).
fn plan_of(case: &Case) -> Plan {
    let json = format!(
        r#"[{{"src": "/src/site/", "dest": "{DEST}"{}}}]"#,
        case.options
    );
    let mapping = crate::config::mapping::parse(Path::new("m.json"), Path::new("/"), &json)
        .unwrap_or_else(|e| panic!("{}: {e}", case.name))
        .remove(0);
    let entries = (case.local.iter())
        .map(|(rel, kind)| Entry {
            rel: rel.into(),
            kind: kind.clone(),
        })
        .collect();
    let errors = (case.unreadable.iter())
        .map(|p| {
            (
                Path::new("/src/site").join(p),
                "Permission denied".to_string(),
            )
        })
        .collect();
    let source = Source {
        is_dir: true,
        entries,
        errors,
    };
    let local_paths: Vec<&str> = case.local.iter().map(|(r, _)| *r).collect();
    let unit = Unit {
        mapping: &mapping,
        source: Arc::new(Ok(source)),
        root: list_root(
            &mapping,
            true,
            (case.paths.as_ref()).map(|p| p.iter().map(|s| s.as_bytes().to_vec()).collect()),
            false,
        ),
        gone: (case.paths.iter().flatten())
            .filter(|p| !local_paths.contains(p))
            .map(|p| p.as_bytes().to_vec())
            .collect(),
    };
    let state = RootState {
        entries: (case.remote.iter())
            .map(|(rel, e)| (rel.as_bytes().to_vec(), e.clone()))
            .collect(),
        hashes: (case.hashes.iter())
            .map(|(rel, h)| (rel.as_bytes().to_vec(), h.to_string()))
            .collect(),
        ..RootState::default()
    };
    let pushed = Pushed::open(Path::new("/nonexistent/hostsync-test"), "h");
    let source = unit.source.as_ref().as_ref().unwrap();
    let usable = [(0, &unit, source)];
    let listed = Listed {
        roots: std::slice::from_ref(&unit.root),
        states: std::slice::from_ref(&state),
        pushed: &pushed,
        stderr: "",
        newlines: false,
    };
    compare(&usable, &listed, Some(&|_, _| false), &hash_of(case))
}

/// Checks one case; returns what differs, if anything.
fn check(case: &Case) -> Option<String> {
    let plan = plan_of(case);
    let w = plan.work.get(DEST.as_bytes());
    let letter = |k: &ItemKind| match k {
        ItemKind::Dir => 'd',
        ItemKind::File => 'f',
        ItemKind::Symlink { .. } => 'l',
        ItemKind::Removed => 'r',
    };
    let mut sends: Vec<(String, char, String)> = (w.iter().flat_map(|w| &w.items))
        .map(|i| (show(&i.rel), letter(&i.what), i.why.clone()))
        .collect();
    sends.sort();
    let mut want: Vec<(String, char, String)> = (case.sends.iter())
        .map(|(p, k, why)| (p.to_string(), *k, why.to_string()))
        .collect();
    want.sort();
    let removes: Vec<String> = (w.iter().flat_map(|w| &w.removes))
        .map(|r| show(&r.rel))
        .collect();
    let fails_ok = plan.failures.len() == case.fails.len()
        && (case.fails.iter()).all(|(p, word, kind)| {
            let at = match p.starts_with('/') {
                true => p.to_string(),
                false => format!("{DEST}/{p}"),
            };
            (plan.failures.iter())
                .any(|(k, what, why)| k == kind && what.ends_with(&at) && why.contains(word))
        });
    let warns_ok = plan.warnings.len() == case.warns.len()
        && (case.warns.iter()).all(|word| plan.warnings.iter().any(|w| w.contains(word)));
    let ok = sends == want
        && removes == case.removes
        && plan.skipped == case.skipped
        && fails_ok
        && warns_ok;
    (!ok).then(|| {
        format!(
            "{}: sends {sends:?} (want {want:?}), removes {removes:?} (want {:?}), skipped {} (want {}), failures {:?} (want {:?}), warnings {:?} (want {:?})",
            case.name,
            case.removes,
            plan.skipped,
            case.skipped,
            plan.failures,
            case.fails,
            plan.warnings,
            case.warns
        )
    })
}

/// Skipping: by size, mtime and mode on a whole push; by content where the
/// listing hashed (a path push), whatever the mtime.
fn skip_cases() -> Vec<Case> {
    vec![
        Case {
            name: "same size, mtime and mode: skipped",
            local: vec![("a", file(4, 100, 0o644))],
            remote: vec![("a", rf(4, 100, 0o644))],
            skipped: 1,
            ..Case::default()
        },
        Case {
            name: "size, mtime, mode each differ: sent, saying which",
            local: vec![
                ("s", file(5, 100, 0o644)),
                ("t", file(4, 101, 0o644)),
                ("m", file(4, 100, 0o600)),
                ("n", file(4, 100, 0o644)),
            ],
            remote: vec![
                ("s", rf(4, 100, 0o644)),
                ("t", rf(4, 100, 0o644)),
                ("m", rf(4, 100, 0o644)),
            ],
            sends: vec![
                ("s", 'f', "size"),
                ("t", 'f', "mtime"),
                ("m", 'f', "mode"),
                ("n", 'f', "new"),
            ],
            ..Case::default()
        },
        Case {
            name: "watch: the same content is skipped whatever the mtime",
            local: vec![("a", file(4, 200, 0o644))],
            remote: vec![("a", rf(4, 100, 0o644))],
            hashes: vec![("a", "local-4")],
            paths: Some(vec!["a"]),
            skipped: 1,
            ..Case::default()
        },
        Case {
            name: "watch: other content of the same size and mtime is sent",
            local: vec![("a", file(4, 100, 0o644))],
            remote: vec![("a", rf(4, 100, 0o644))],
            hashes: vec![("a", "other")],
            paths: Some(vec!["a"]),
            sends: vec![("a", 'f', "content")],
            ..Case::default()
        },
        Case {
            name: "a directory with the same mode is left alone, another mode is set",
            local: vec![("d", dir()), ("e", Kind::Dir { mode: 0o700 })],
            remote: vec![("d", rd()), ("e", rd())],
            sends: vec![("e", 'd', "mode")],
            ..Case::default()
        },
    ]
}

/// Removals: only with delete, never excluded paths or backups, only the top of
/// a removed tree, never after a local read error.
fn delete_cases() -> Vec<Case> {
    vec![
        Case {
            name: "delete off: a remote extra stays",
            remote: vec![("old", rf(1, 1, 0o644))],
            ..Case::default()
        },
        Case {
            name: "delete on: the top of a gone tree is removed",
            options: r#", "delete": true"#,
            local: vec![("keep", file(1, 1, 0o644))],
            remote: vec![
                ("keep", rf(1, 1, 0o644)),
                ("old", rd()),
                ("old/x", rf(1, 1, 0o644)),
            ],
            removes: vec!["old"],
            skipped: 1,
            ..Case::default()
        },
        Case {
            name: "delete on: excluded paths stay",
            options: r#", "delete": true, "exclude": ["*.log", "cache/"]"#,
            remote: vec![
                ("a.log", rf(1, 1, 0o644)),
                ("cache", rd()),
                ("cache/x", rf(1, 1, 0o644)),
                ("b.txt", rf(1, 1, 0o644)),
            ],
            removes: vec!["b.txt"],
            ..Case::default()
        },
        Case {
            name: "delete on with backups: the numbered backups kept are never removed",
            options: r#", "delete": true, "backups": 2"#,
            local: vec![("a", file(1, 1, 0o644))],
            remote: vec![
                ("a", rf(1, 1, 0o644)),
                ("a.1", rf(1, 1, 0o644)),
                ("a.2", rf(1, 1, 0o644)),
                ("a.3", rf(1, 1, 0o644)),
            ],
            removes: vec!["a.3"],
            skipped: 1,
            ..Case::default()
        },
        Case {
            name: "delete on: a local read error removes nothing",
            options: r#", "delete": true"#,
            local: vec![("a", file(1, 1, 0o644))],
            unreadable: vec!["private"],
            remote: vec![("a", rf(1, 1, 0o644)), ("private", rd())],
            skipped: 1,
            fails: vec![("/src/site/private", "Permission denied", Failure::Local)],
            warns: vec!["nothing is deleted"],
            ..Case::default()
        },
        Case {
            name: "delete on, watch: a path gone here is removed there",
            options: r#", "delete": true"#,
            remote: vec![("gone", rf(1, 1, 0o644)), ("other", rf(1, 1, 0o644))],
            paths: Some(vec!["gone"]),
            removes: vec!["gone"],
            ..Case::default()
        },
        Case {
            name: "an empty src directory: with delete, everything there goes",
            options: r#", "delete": true"#,
            remote: vec![
                ("a", rf(1, 1, 0o644)),
                ("d", rd()),
                ("d/b", rf(1, 1, 0o644)),
            ],
            removes: vec!["a", "d"],
            ..Case::default()
        },
        Case {
            name: "an empty src directory: without delete, nothing changes",
            remote: vec![("a", rf(1, 1, 0o644))],
            ..Case::default()
        },
    ]
}

/// Type changes and a remote directory that is a symlink.
fn type_cases() -> Vec<Case> {
    vec![
        Case {
            name: "file where a symlink is, symlink where a file is: sent, type",
            local: vec![("f", file(1, 1, 0o644)), ("l", link("target"))],
            remote: vec![("f", rl("elsewhere")), ("l", rf(1, 1, 0o644))],
            sends: vec![("f", 'f', "type"), ("l", 'l', "type")],
            ..Case::default()
        },
        Case {
            name: "a symlink with another target is replaced, the same one skipped",
            local: vec![("a", link("new")), ("b", link("same"))],
            remote: vec![("a", rl("old")), ("b", rl("same"))],
            sends: vec![("a", 'l', "target")],
            skipped: 1,
            ..Case::default()
        },
        Case {
            name: "file or symlink where a directory is: refused, never replaced",
            local: vec![("f", file(1, 1, 0o644)), ("l", link("t"))],
            remote: vec![("f", rd()), ("l", rd())],
            fails: vec![
                ("f", "is a directory", Failure::Refused),
                ("l", "is a directory", Failure::Refused),
            ],
            ..Case::default()
        },
        Case {
            name: "a directory where a file is: refused, and nothing below it is written",
            local: vec![("d", dir()), ("d/x", file(1, 1, 0o644))],
            remote: vec![("d", rf(1, 1, 0o644))],
            fails: vec![
                ("d", "not a directory", Failure::Refused),
                ("d/x", "not a directory", Failure::Refused),
            ],
            ..Case::default()
        },
        Case {
            name: "a remote symlinked parent blocks writes below it",
            local: vec![("d", dir()), ("d/x", file(1, 1, 0o644)), ("d/e", dir())],
            remote: vec![("d", rl("/etc"))],
            fails: vec![
                ("d", "not a directory", Failure::Refused),
                ("d/x", "not a directory", Failure::Refused),
            ],
            ..Case::default()
        },
        Case {
            name: "a remote symlinked parent blocks deletes below it",
            options: r#", "delete": true"#,
            local: vec![("d", dir())],
            // The listing never goes below a symlink: d/x is not listed.
            remote: vec![("d", rl("/etc"))],
            paths: Some(vec!["d/x"]),
            fails: vec![("d", "not a directory", Failure::Refused)],
            ..Case::default()
        },
    ]
}

/// Local names hostsync cannot carry.
fn name_cases() -> Vec<Case> {
    vec![Case {
        name: "a newline or the temporaries' prefix in a name is refused",
        local: vec![
            ("a\nb", file(1, 1, 0o644)),
            (".hostsync-tmp.x", file(1, 1, 0o644)),
            ("ok", file(1, 1, 0o644)),
        ],
        sends: vec![("ok", 'f', "new")],
        fails: vec![
            ("a\nb", "newline", Failure::Local),
            (
                ".hostsync-tmp.x",
                "keeps for its temporaries",
                Failure::Local,
            ),
        ],
        ..Case::default()
    }]
}

#[test]
fn the_rules_as_tables() {
    let cases: Vec<Case> = [skip_cases(), delete_cases(), type_cases(), name_cases()]
        .into_iter()
        .flatten()
        .collect();
    assert!(cases.len() >= 20, "{} cases", cases.len());
    let wrong: Vec<String> = cases.iter().filter_map(check).collect();
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

/// Stale temporaries: the rule decides which are removed; a host the agent
/// serves (no rule) has every one offered.
#[test]
fn stale_temporaries_follow_the_rule() {
    let case = Case {
        remote: vec![
            (".hostsync-tmp.dead", rf(1, 1, 0o600)),
            (".hostsync-tmp.live", rf(1, 1, 0o600)),
        ],
        ..Case::default()
    };
    let plan = plan_of(&case);
    assert!(plan.stale.is_empty(), "the test rule removes nothing");
    assert!(
        plan.work[DEST.as_bytes()].removes.is_empty(),
        "never a removal"
    );
}

#[test]
fn dest_paths() {
    assert_eq!(
        split_dest("/etc/app/app.conf"),
        (&b"/etc/app"[..], &b"app.conf"[..])
    );
    assert_eq!(split_dest("/top"), (&b"/"[..], &b"top"[..]));
    assert_eq!(join(b"/", b"x"), b"/x");
    assert_eq!(join(b"/a", b""), b"/a");
    assert_eq!(basename(b"a/b/c"), b"c");
    assert!(is_backup_name(b"etc/app.conf.1", 6) && is_backup_name(b"x.6", 6));
    for (name, n) in [
        (&b"x.7"[..], 6),
        (b"x.0", 6),
        (b"x.01", 6),
        (b"x.1", 0),
        (b".1", 6),
    ] {
        assert!(!is_backup_name(name, n), "{}", show(name));
    }
    assert!(!is_backup_name(b"x.1a", 6) && !is_backup_name(b"noext", 6));
}

/// Issue 19: which planned files may go as a delta, by the threshold, what is
/// there and why it is sent.
#[test]
fn delta_candidates() {
    let item = |what: ItemKind, size: u64, exists: bool, why: &str| Item {
        rel: b"f".to_vec(),
        what,
        local: PathBuf::from("/l/f"),
        unit: 0,
        size,
        exists,
        meta: None,
        follow: false,
        mode_mask: 0o7777,
        why: why.into(),
    };
    let mib = 1 << 20;
    let cases = [
        // (kind, size, exists, why, threshold, may go as a delta)
        (ItemKind::File, mib, true, "size, mtime", mib, true),
        (ItemKind::File, mib, true, "content", mib, true),
        (ItemKind::File, mib - 1, true, "size", mib, false),
        (ItemKind::File, mib, true, "size", 0, false),
        (ItemKind::File, mib, false, "new", mib, false),
        (ItemKind::File, mib, true, "type", mib, false),
        (ItemKind::Dir, mib, true, "mode", mib, false),
    ];
    for (what, size, exists, why, min, want) in cases {
        let i = item(what, size, exists, why);
        assert_eq!(i.may_go_as_delta(min), want, "{why} {size} {exists} {min}");
    }
}
