//! Issue 16's test matrix: every case of the issue's "Tests" list, written once
//! and run against every [`Target`] of `util::tier` (the BusyBox-only login
//! behind OpenSSH and behind Dropbear, the SFTP-only account, and the plain
//! OpenSSH host with `transfer = gnu`, `sftp` and `posix` forced), one `#[test]`
//! per target and case (`tier::TARGET::CASE`), so a failure names both.
//!
//! The cases: sync of nested trees and single files (bytes, mode, mtime, a
//! symlink, names with spaces, quotes, `$(...)` and backquotes, and a newline
//! where the tier carries one: the posix tier refuses such a name in one error
//! line instead); a second sync sends nothing; an exact `--dry-run`; delete,
//! excludes and backups; `check` names the tier; watch create, modify, rename
//! and delete; a connection cut mid-upload; two daemons mapped at each other;
//! two saves of equal length within one second both arrive under watch.
//! What only some hosts have (a destination others can write, post_sync over
//! SFTP, latency) stays in `tests/posix.rs` and `tests/sftp.rs`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::util::dir::{set_mtime, temporaries};
use crate::util::hostsync::start_daemon;
use crate::util::tier::{
    ARRIVE, Target, World, assert_same_tree, hostile_site, read, sends_to, settled, snapshot, state,
};
use crate::util::{Fault, wait_until};

/// Nested trees and single files arrive byte-exact with mode and mtime, over the
/// way the target is served; hostile names run nothing on the remote; no
/// temporary is left.
fn trees_and_files(t: Target) {
    let w = World::new(t, "tc-tree");
    let pwned = format!("pwned-{}", std::process::id());
    let (r, _) = hostile_site(&w, &pwned);
    let run = w.run(&["-v", "sync"]);
    run.expect(0);
    let why = || w.dump(&run);
    assert_same_tree(&w.env.cfg().join("site"), &r.join("www"), &why);
    // The tier asked for is the one that served (README, "Logs": `over WAY`).
    let ways = crate::util::hostsync::ways(&w.env.info_log());
    assert!(
        !ways.is_empty() && ways.iter().all(|way| way == t.way()),
        "{ways:?}\n{}",
        why()
    );
    assert_eq!(
        state(&r.join("etc/app.conf")),
        state(&w.env.cfg().join("conf/app.conf")),
        "{}",
        why()
    );
    for place in [w.home(), r.clone(), r.join("www"), w.env.cfg()] {
        assert!(!place.join(&pwned).exists(), "a name ran\n{}", why());
    }
    assert!(temporaries(&r).is_empty(), "{}", why());
}
/// A second sync finds everything up to date and sends nothing.
fn second_sync(t: Target) {
    let w = World::new(t, "tc-again");
    let (_, count) = hostile_site(&w, "pwned-again");
    let first = w.run(&["sync"]);
    first.expect(0);
    assert_eq!(first.row(&w.addr).0, count, "{}", w.dump(&first));
    let again = w.run(&["sync"]);
    again.expect(0);
    assert_eq!(
        again.row(&w.addr),
        (0, count, 0, 0, 0),
        "the second sync sent something\n{}",
        w.dump(&again)
    );
}

/// `--dry-run` prints exactly `[M]`, `[+]` and `[-]` for what changed and changes
/// nothing; after the sync it prints nothing.
fn dry_run(t: Target) {
    let w = World::new(t, "tc-dry");
    let r = w.remote("r");
    for rel in ["same.txt", "change.txt", "gone.txt", "sub/x.txt"] {
        w.src(&format!("site/{rel}"), rel, 0o644);
    }
    let www = r.join("www");
    w.env.map(
        &w.addr,
        json!([{"src": "site/", "dest": www, "delete": true}]),
    );
    w.run(&["sync"]).expect(0);
    w.src("site/change.txt", "new content, longer", 0o644);
    w.src("site/new.txt", "new", 0o644);
    w.src("site/newdir/inner.txt", "inner", 0o644);
    std::fs::remove_file(w.env.cfg().join("site/gone.txt")).unwrap();
    let before = snapshot(&r);
    let dry = w.run(&["sync", "--dry-run"]);
    dry.expect(0);
    let (a, p) = (&w.addr, |rel: &str| www.join(rel).display().to_string());
    let want = [
        format!("[M] {a} {} updated", p("change.txt")),
        format!("[-] {a} {} deleted", p("gone.txt")),
        format!("[+] {a} {} added", p("new.txt")),
        format!("[+] {a} {}/ added", p("newdir")),
        format!("[+] {a} {} added", p("newdir/inner.txt")),
    ];
    let got: Vec<&str> = dry.stdout.lines().collect();
    assert_eq!(got, want, "{}", w.dump(&dry));
    assert_eq!(
        snapshot(&r),
        before,
        "the dry run changed the remote\n{}",
        w.dump(&dry)
    );
    w.run(&["sync"]).expect(0);
    let none = w.run(&["sync", "--dry-run"]);
    none.expect(0);
    assert_eq!(none.stdout, "", "{}", w.dump(&none));
}

/// `"delete": true` removes what is gone locally (excluded paths and backups
/// stay), excluded paths are never sent, `backups` keeps exactly N versions.
fn delete_excludes_backups(t: Target) {
    let w = World::new(t, "tc-parity");
    let r = w.remote("r");
    let www = r.join("www");
    for (rel, body) in [
        ("a.txt", "v1"),
        ("b.txt", "b"),
        ("skip.log", "log"),
        ("cache/c.bin", "c"),
        ("sub/s.txt", "s"),
    ] {
        w.src(&format!("site/{rel}"), body, 0o644);
    }
    w.env.map(
        &w.addr,
        json!([{"src": "site/", "dest": www, "delete": true, "backups": 2,
                "exclude": ["*.log", "cache/"]}]),
    );
    let first = w.run(&["sync"]);
    first.expect(0);
    assert!(
        read(&www.join("a.txt")) == "v1" && read(&www.join("sub/s.txt")) == "s",
        "{}",
        w.dump(&first)
    );
    assert!(
        !www.join("skip.log").exists() && !www.join("cache").exists(),
        "{}",
        w.dump(&first)
    );
    std::fs::write(www.join("extra.txt"), "remote only").unwrap();
    std::fs::write(www.join("remote.log"), "excluded: stays").unwrap();
    w.own(&www);
    w.src("site/a.txt", "v2-longer", 0o644);
    std::fs::remove_file(w.env.cfg().join("site/b.txt")).unwrap();
    std::fs::remove_dir_all(w.env.cfg().join("site/sub")).unwrap();
    let second = w.run(&["sync"]);
    second.expect(0);
    let why = || w.dump(&second);
    assert_eq!(read(&www.join("a.txt")), "v2-longer", "{}", why());
    assert_eq!(read(&www.join("a.txt.1")), "v1", "{}", why());
    assert!(
        !www.join("b.txt").exists() && !www.join("sub").exists(),
        "{}",
        why()
    );
    assert!(!www.join("extra.txt").exists(), "{}", why());
    assert_eq!(
        read(&www.join("remote.log")),
        "excluded: stays",
        "{}",
        why()
    );
    let mut last = second;
    for v in ["v3-longer!", "v4-longer!!"] {
        w.src("site/a.txt", v, 0o644);
        last = w.run(&["sync"]);
        last.expect(0);
    }
    let got = ["a.txt", "a.txt.1", "a.txt.2", "a.txt.3"].map(|n| read(&www.join(n)));
    assert_eq!(
        got,
        ["v4-longer!!", "v3-longer!", "v2-longer", ""],
        "{}",
        w.dump(&last)
    );
}

/// `check` has a TIER column right after AUTH (JSON `tier`) naming the tier that
/// serves the host.
fn check_tier(t: Target) {
    let w = World::new(t, "tc-check");
    let r = w.remote("r");
    w.src("f.txt", "f", 0o644);
    w.env
        .map(&w.addr, json!([{"src": "f.txt", "dest": r.join("f.txt")}]));
    let allowed: &[&str] = &[t.tier()];
    let json = w.run(&["check", "--json"]);
    json.expect(0);
    let row = w.check_object(&json);
    let tier = row["tier"].as_str().unwrap_or("<missing>");
    assert!(allowed.contains(&tier), "tier {tier}\n{}", w.dump(&json));
    let table = w.run(&["check"]);
    table.expect(0);
    let header: Vec<&str> = table
        .stdout
        .lines()
        .find(|l| l.starts_with("HOST "))
        .unwrap_or_else(|| panic!("no header\n{}", w.dump(&table)))
        .split_whitespace()
        .collect();
    let auth = header.iter().position(|c| *c == "AUTH").unwrap();
    assert_eq!(header.get(auth + 1), Some(&"TIER"), "{}", w.dump(&table));
    let line = table
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(w.addr.as_str()))
        .unwrap_or_else(|| panic!("no row\n{}", w.dump(&table)));
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cells.get(auth + 1), Some(&tier), "{}", w.dump(&table));
}

/// `watch`: create, modify, rename and delete (with `"delete": true`) in a nested
/// tree arrive, and error.log stays empty.
fn watch_ops(t: Target) {
    let w = World::new(t, "tc-watch");
    let r = w.remote("r");
    let www = r.join("www");
    w.src("site/a/old.txt", "old", 0o644);
    w.src("site/keep.txt", "keep", 0o644);
    w.env.map(
        &w.addr,
        json!([{"src": "site/", "dest": www, "delete": true}]),
    );
    let daemon = w.env.watch();
    let why = || w.dump_daemon(&daemon);
    wait_until(ARRIVE, "the initial reconcile", || {
        read(&www.join("a/old.txt")) == "old"
    });
    let site = w.env.cfg().join("site");
    std::fs::create_dir_all(site.join("a/b/c")).unwrap();
    std::fs::write(site.join("a/b/c/new.txt"), "new").unwrap();
    std::fs::write(site.join("keep.txt"), "changed").unwrap();
    std::fs::rename(site.join("a/old.txt"), site.join("a/renamed.txt")).unwrap();
    wait_until(ARRIVE, "create, modify and rename", || {
        read(&www.join("a/b/c/new.txt")) == "new"
            && read(&www.join("keep.txt")) == "changed"
            && read(&www.join("a/renamed.txt")) == "old"
            && !www.join("a/old.txt").exists()
    });
    std::fs::remove_file(site.join("keep.txt")).unwrap();
    std::fs::remove_dir_all(site.join("a/b")).unwrap();
    wait_until(ARRIVE, "the deletes", || {
        !www.join("keep.txt").exists() && !www.join("a/b").exists()
    });
    assert!(daemon.error_log().is_empty(), "{}", why());
}

/// A connection cut in the middle of a large upload keeps the old remote content;
/// the next run completes and leaves no temporary.
fn cut_mid_upload(t: Target) {
    let (w, proxy) = World::behind_proxy(t, "tc-cut", Fault::CutAfter(4 * 1024 * 1024));
    let big: Vec<u8> = (0..32 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    w.env.src("big.bin", &big);
    let r = w.remote("r");
    std::fs::write(r.join("big.bin"), b"old content").unwrap();
    w.own(&r);
    w.env.map(
        &w.addr,
        json!([{"src": "big.bin", "dest": r.join("big.bin")}]),
    );
    let cut = w.run(&["sync"]);
    cut.expect(1);
    assert_eq!(
        std::fs::read(r.join("big.bin")).unwrap(),
        b"old content",
        "{}",
        w.dump(&cut)
    );
    assert!(
        w.env.error_log().contains(&w.addr),
        "error.log does not name the host\n{}",
        w.dump(&cut)
    );
    proxy.set_fault(Fault::None);
    let again = w.run(&["sync"]);
    again.expect(0);
    assert!(
        std::fs::read(r.join("big.bin")).unwrap() == big,
        "content differs after the second run\n{}",
        w.dump(&again)
    );
    assert!(temporaries(&r).is_empty(), "{}", w.dump(&again));
}

/// Two daemons whose mappings point at each other's file (both through this
/// host) settle after one transfer per change instead of ping-ponging.
fn two_way(t: Target) {
    let w = World::new(t, "tc-pingpong");
    let (a, b) = (w.remote("a"), w.remote("b"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for d in [&a, &b] {
        std::fs::write(d.join("f"), "same").unwrap();
        set_mtime(&d.join("f"), now - 100, 0);
    }
    w.own(&a);
    w.own(&b);
    w.env
        .map(&w.addr, json!([{"src": a.join("f"), "dest": b.join("f")}]));
    let da = w.env.watch();
    let cfg_b = w.env.dir.join("cfg-b");
    std::fs::create_dir_all(cfg_b.join("mappings")).unwrap();
    for f in ["config.ini", "connection_info.json", "known_hosts"] {
        std::fs::copy(w.env.cfg().join(f), cfg_b.join(f)).unwrap();
    }
    std::fs::write(
        cfg_b.join(format!("mappings/{}.json", w.addr)),
        json!([{"src": b.join("f"), "dest": a.join("f")}]).to_string(),
    )
    .unwrap();
    let db = start_daemon(&cfg_b, w.env.dir.path());
    let why = || format!("{}\n{}", w.dump_daemon(&da), db.dump());
    let total = || sends_to(&da.info_log(), &b.join("f")) + sends_to(&db.info_log(), &a.join("f"));
    let before = settled("the start-up settles", &total);
    std::fs::write(a.join("f"), "from a").unwrap();
    wait_until(ARRIVE, "a's change reaches b", || {
        read(&b.join("f")) == "from a"
    });
    let after_a = settled("a's change settles", &total);
    assert_eq!(after_a - before, 1, "one transfer expected\n{}", why());
    std::fs::write(b.join("f"), "from b!").unwrap();
    wait_until(ARRIVE, "b's change reaches a", || {
        read(&a.join("f")) == "from b!"
    });
    let after_b = settled("b's change settles", &total);
    assert_eq!(after_b - after_a, 1, "one transfer expected\n{}", why());
    assert!(
        da.error_log().is_empty() && db.error_log().is_empty(),
        "{}",
        why()
    );
}

/// Two saves of equal length within one second both arrive under `watch` (the
/// issue's two-way guarantee, on every tier), and a third by `sync`: each has
/// the first's size and mtime second, other nanoseconds, which a tier that keeps
/// whole seconds (SFTP's setstat) must still tell apart.
fn same_second_saves(t: Target) {
    let w = World::new(t, "tc-second");
    let r = w.remote("r");
    let dest = r.join("www/f.txt");
    let second = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 10;
    let f = w.src("site/f.txt", "AAAA", 0o644);
    set_mtime(&f, second, 100_000_000);
    w.env
        .map(&w.addr, json!([{"src": "site/", "dest": r.join("www")}]));
    let mut daemon = w.env.watch();
    wait_until(ARRIVE, "the first save", || read(&dest) == "AAAA");
    // Saved as editors do (write aside, rename over), so the watched file never
    // shows the new content with another mtime.
    let aside = w.env.dir.join("save.tmp");
    std::fs::write(&aside, "BBBB").unwrap();
    set_mtime(&aside, second, 600_000_000);
    std::fs::rename(&aside, &f).unwrap();
    wait_until(ARRIVE, "the second save, same size and second", || {
        read(&dest) == "BBBB"
    });
    // The content shows before the daemon logs the push and records it (README,
    // "Logs": `pushed/`); stopping it in between would make the next sync send
    // again, rightly. So wait for the line, then stop it gracefully.
    wait_until(ARRIVE, "the daemon logs the second send", || {
        sends_to(&daemon.info_log(), &dest) >= 2
    });
    let (code, _) = daemon.terminate();
    let why = || w.dump_daemon(&daemon);
    assert_eq!(code, Some(0), "{}", why());
    assert!(daemon.error_log().is_empty(), "{}", why());
    let again = w.run(&["sync"]);
    again.expect(0);
    assert_eq!(
        again.row(&w.addr),
        (0, 1, 0, 0, 0),
        "the second save was not recorded as sent\n{}",
        w.dump(&again)
    );
    // And a third by `sync`, which compares the listing, not inotify events.
    std::fs::write(&aside, "CCCC").unwrap();
    set_mtime(&aside, second, 900_000_000);
    std::fs::rename(&aside, &f).unwrap();
    let third = w.run(&["sync"]);
    third.expect(0);
    assert_eq!(third.row(&w.addr).0, 1, "{}", w.dump(&third));
    assert_eq!(read(&dest), "CCCC", "{}", w.dump(&third));
}

/// A name with a newline: where the tier carries it (gnu, sftp) it arrives
/// byte-exact beside its sibling and the run succeeds; the posix tier cannot (the
/// SCP sink's records are lines): that file fails with one error line, its
/// siblings arrive, nothing else is left.
fn newline_name(t: Target) {
    let w = World::new(t, "tc-newline");
    let r = w.remote("r");
    w.src("tree/good.txt", "good", 0o644);
    w.src("tree/bad\nname.txt", "bad", 0o644);
    w.env
        .map(&w.addr, json!([{"src": "tree/", "dest": r.join("t")}]));
    let run = w.run(&["sync"]);
    let why = || w.dump(&run);
    run.expect(if t.newlines() { 0 } else { 1 });
    assert_eq!(read(&r.join("t/good.txt")), "good", "{}", why());
    let mut names: Vec<_> = std::fs::read_dir(r.join("t"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    let errors = w.env.error_log();
    if t.newlines() {
        assert_eq!(names, ["bad\nname.txt", "good.txt"], "{}", why());
        assert_eq!(read(&r.join("t/bad\nname.txt")), "bad", "{}", why());
        assert_eq!(errors, "", "{}", why());
        return;
    }
    assert_eq!(names, ["good.txt"], "{}", why());
    let lines: Vec<&str> = errors.lines().filter(|l| l.contains("newline")).collect();
    assert_eq!(lines.len(), 1, "{}", why());
    assert!(
        lines[0].contains("the name contains a newline, which the SCP protocol cannot carry"),
        "{}",
        why()
    );
}

/// Every case for one target, as a module of `#[test]`s named after the cases.
macro_rules! matrix {
    ($( $module:ident: $target:ident; )*) => {
        $(
            mod $module {
                use super::*;

                #[test]
                fn trees_and_files_arrive_exact() {
                    trees_and_files(Target::$target)
                }

                #[test]
                fn newline_name_arrives_or_is_one_error_line() {
                    newline_name(Target::$target)
                }

                #[test]
                fn second_sync_sends_nothing() {
                    second_sync(Target::$target)
                }

                #[test]
                fn dry_run_is_exact() {
                    dry_run(Target::$target)
                }

                #[test]
                fn delete_excludes_and_backups() {
                    delete_excludes_backups(Target::$target)
                }

                #[test]
                fn check_names_the_tier() {
                    check_tier(Target::$target)
                }

                #[test]
                fn watch_create_modify_rename_delete() {
                    watch_ops(Target::$target)
                }

                #[test]
                fn cut_mid_upload_keeps_old_content() {
                    cut_mid_upload(Target::$target)
                }

                #[test]
                fn two_way_does_not_ping_pong() {
                    two_way(Target::$target)
                }

                #[test]
                fn same_second_saves_both_arrive() {
                    same_second_saves(Target::$target)
                }
            }
        )*
    };
}

matrix! {
    busybox: BusyBox;
    dropbear: Dropbear;
    sftp_only: SftpOnly;
    gnu: Gnu;
    sftp: Sftp;
    posix: Posix;
}
