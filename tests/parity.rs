//! Issue 5 ("Everything the older sync tools do") against real sshd: excludes in
//! sync, watch and delete; numbered backups; post_sync commands; `--dry-run`
//! (matching the real run, changing nothing); `--exit-code`; `--json`; progress
//! bars on a terminal; shell completions; option errors. Every wait polls with a
//! deadline; nothing sleeps a fixed time.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::util::hostsync::{Auth, Env, Run, run_in};
use crate::util::wait_until;

/// How long a change may take to arrive in watch tests.
const ARRIVE: Duration = Duration::from_secs(15);

/// Reads a file, "" when missing.
fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Sets a file's mtime to `secs` after a fixed base, so size-equal versions differ.
fn set_mtime(p: &Path, secs: u64) {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs);
    std::fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

/// A fingerprint of everything below `root`: path, kind, mode, size, mtime, and
/// the content or link target, one line per entry, sorted.
fn tree_state(root: &Path) -> String {
    let mut out = String::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.unwrap();
        let md = e.path().symlink_metadata().unwrap();
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        let what = if md.file_type().is_symlink() {
            format!("-> {}", std::fs::read_link(e.path()).unwrap().display())
        } else if md.is_file() {
            format!("{:?}", std::fs::read(e.path()).unwrap())
        } else {
            "dir".to_string()
        };
        out.push_str(&format!(
            "{rel} {:o} {} {} {what}\n",
            md.mode(),
            if md.is_dir() { 0 } else { md.len() },
            md.mtime()
        ));
    }
    out
}

/// Parses dry-run lines `[+] HOST PATH added`: (tag, host, path, word).
fn dry_lines(run: &Run) -> Vec<(String, String, String, String)> {
    run.stdout
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 4, "bad dry-run line {l:?}\n{}", run.dump());
            (f[0].into(), f[1].into(), f[2].into(), f[3].into())
        })
        .collect()
}

/// Remote paths of the `sent` and `removed` lines in an info.log excerpt.
fn sent_and_removed(info: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut sent = BTreeSet::new();
    let mut removed = BTreeSet::new();
    for l in info.lines() {
        if let Some((_, rest)) = l.split_once(": sent ") {
            let remote = rest.split(" -> ").nth(1).unwrap();
            sent.insert(remote.rsplit_once(" (").unwrap().0.to_string());
        } else if let Some((_, rest)) = l.split_once(": removed ") {
            removed.insert(rest.split_once(" (").unwrap().0.to_string());
        }
    }
    (sent, removed)
}

/// Excluded paths are never sent, never deleted on the remote (with delete on)
/// and never pushed by watch, whatever happens to them locally.
#[test]
fn excludes_are_never_sent_deleted_or_watched() {
    let mut env = Env::new("parity-exclude");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    for (rel, text) in [
        ("site/index.html", "index"),
        ("site/a.swp", "swap"),
        ("site/sub/b.swp", "swap"),
        ("site/sub/page.html", "page"),
        ("site/cache/c.txt", "cache"),
        ("site/errors/e.log", "err"),
    ] {
        env.src(rel, text);
    }
    let r = env.remote("r");
    let dest = r.join("www");
    // Remote-only entries: one extraneous, the others excluded (must survive).
    for (rel, text) in [
        ("extra.txt", "extra"),
        ("x.swp", "remote swap"),
        ("cache/remote-only.txt", "remote cache"),
        ("errors/old.log", "old"),
    ] {
        let p = dest.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    env.dir.chown_to_test_user("remote");
    env.map(
        &h.addr,
        json!([{"src": "site/", "dest": dest, "delete": true,
                "exclude": ["*.swp", "cache/", "errors/**"]}]),
    );

    let run = env.run(&["sync"]);
    run.expect(0);
    assert_eq!(run.row(&h.addr).0, 2, "index and page only\n{}", run.dump());
    assert_eq!(read(&dest.join("index.html")), "index");
    assert_eq!(read(&dest.join("sub/page.html")), "page");
    assert!(!dest.join("a.swp").exists() && !dest.join("sub/b.swp").exists());
    assert!(!dest.join("cache/c.txt").exists() && !dest.join("errors/e.log").exists());
    assert!(!dest.join("extra.txt").exists(), "{}", env.dir.listing());
    assert_eq!(read(&dest.join("x.swp")), "remote swap");
    assert_eq!(read(&dest.join("cache/remote-only.txt")), "remote cache");
    assert_eq!(read(&dest.join("errors/old.log")), "old");
    assert!(
        dest.join("errors").is_dir(),
        "errors/** excludes the contents only"
    );
    let info = env.info_log();
    assert!(!info.contains(".swp") && !info.contains("c.txt"), "{info}");

    // Watch: excluded files written, changed and deleted (a whole excluded directory
    // included) are not pushed nor removed; a marker written afterwards arrives.
    let daemon = env.watch();
    let site = env.cfg().join("site");
    std::fs::write(site.join("new.swp"), "new swap").unwrap();
    std::fs::write(site.join("a.swp"), "changed swap").unwrap();
    std::fs::write(site.join("cache/new.txt"), "new cache").unwrap();
    std::fs::write(site.join("errors/new.log"), "new err").unwrap();
    std::fs::write(site.join("x.swp"), "local x").unwrap();
    std::fs::remove_file(site.join("x.swp")).unwrap();
    std::fs::remove_dir_all(site.join("cache")).unwrap();
    std::fs::remove_file(site.join("errors/e.log")).unwrap();
    std::fs::write(site.join("sub/page.html"), "page v2").unwrap();
    std::fs::write(site.join("marker"), "m").unwrap();
    wait_until(ARRIVE, "marker and page v2 arrive", || {
        read(&dest.join("marker")) == "m" && read(&dest.join("sub/page.html")) == "page v2"
    });
    for gone in ["new.swp", "a.swp", "cache/new.txt", "errors/new.log"] {
        assert!(!dest.join(gone).exists(), "{gone}\n{}", daemon.dump());
    }
    assert_eq!(
        read(&dest.join("x.swp")),
        "remote swap",
        "{}",
        daemon.dump()
    );
    assert_eq!(read(&dest.join("cache/remote-only.txt")), "remote cache");
    assert_eq!(read(&dest.join("errors/old.log")), "old");
    let info = daemon.info_log();
    assert!(
        !info.contains(".swp") && !info.contains("new.txt") && !info.contains("new.log"),
        "{}",
        daemon.dump()
    );
    assert!(daemon.error_log().is_empty(), "{}", daemon.dump());
}

/// `"backups": N` keeps exactly N previous versions, newest as `.1`, for a file
/// mapping and inside a directory mapping, and delete leaves the backups alone.
#[test]
fn backups_rotate_to_exactly_n_in_order() {
    let mut env = Env::new("parity-backups");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    let conf = env.src("app.conf", "");
    let page = env.src("site/page.html", "");
    env.src("site/other.html", "other");
    let r = env.remote("r");
    let stray = r.join("www/stray.txt");
    std::fs::create_dir_all(stray.parent().unwrap()).unwrap();
    std::fs::write(&stray, "stray").unwrap();
    env.dir.chown_to_test_user("remote");
    env.map(
        &h.addr,
        json!([
            {"src": "app.conf", "dest": r.join("etc/app.conf"), "backups": 3},
            {"src": "site/", "dest": r.join("www"), "backups": 2, "delete": true},
        ]),
    );
    for v in 0..=5 {
        std::fs::write(&conf, format!("version {v}\n")).unwrap();
        std::fs::write(&page, format!("page {v}\n")).unwrap();
        set_mtime(&conf, v);
        set_mtime(&page, v);
        let run = env.run(&["sync"]);
        run.expect(0);
        assert_eq!(
            run.row(&h.addr).0,
            if v == 0 { 3 } else { 2 },
            "{}",
            run.dump()
        );
    }
    let etc = r.join("etc");
    let got: Vec<String> = ["app.conf", "app.conf.1", "app.conf.2", "app.conf.3"]
        .iter()
        .map(|n| read(&etc.join(n)))
        .collect();
    assert_eq!(
        got,
        ["version 5\n", "version 4\n", "version 3\n", "version 2\n"],
        "{}",
        env.dir.listing()
    );
    assert!(!etc.join("app.conf.4").exists(), "{}", env.dir.listing());
    // Each backup is the earlier version with its own mtime.
    assert_eq!(
        std::fs::metadata(etc.join("app.conf.3")).unwrap().mtime(),
        1_700_000_002
    );
    let www = r.join("www");
    assert_eq!(read(&www.join("page.html")), "page 5\n");
    assert_eq!(read(&www.join("page.html.1")), "page 4\n");
    assert_eq!(read(&www.join("page.html.2")), "page 3\n");
    assert!(!www.join("page.html.3").exists(), "{}", env.dir.listing());
    assert!(!stray.exists(), "delete still removes what is extraneous");
    assert!(env.error_log().is_empty(), "{}", env.error_log());
}

/// post_sync commands run after a batch landed, once per batch (not per file), in
/// order, stop at the first failure, and are logged; an unchanged mapping runs
/// nothing. In watch, a directory of several files moved in runs them once.
#[test]
fn post_sync_runs_once_per_batch_in_order_and_stops_at_first_failure() {
    let mut env = Env::new("parity-post");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    env.src("site/a.html", "a");
    env.src("site/b.html", "b");
    env.src("site/sub/c.html", "c");
    env.src("app.conf", "conf");
    env.src("marker", "m0");
    let r = env.remote("r");
    let log_a = r.join("post-a.log");
    let log_b = r.join("post-b.log");
    let q = |p: &Path| format!("'{}'", p.display());
    env.map(
        &h.addr,
        json!([
            {"src": "site/", "dest": r.join("www"), "post_sync": [
                format!("echo one >> {}", q(&log_a)),
                format!("echo two >> {}; echo hello-from-post-sync", q(&log_a)),
            ]},
            {"src": "app.conf", "dest": r.join("etc/app.conf"), "post_sync": [
                format!("echo first >> {}", q(&log_b)),
                "echo failing-output >&2; exit 3".to_string(),
                format!("echo never >> {}", q(&log_b)),
            ]},
            {"src": "marker", "dest": r.join("marker")},
        ]),
    );
    let run = env.run(&["sync"]);
    run.expect(1);
    assert_eq!(run.row(&h.addr).0, 5, "{}", run.dump());
    assert_eq!(
        read(&log_a),
        "one\ntwo\n",
        "once for three files\n{}",
        run.dump()
    );
    assert_eq!(read(&log_b), "first\n", "stopped at exit 3\n{}", run.dump());
    let info = env.info_log();
    let errors = env.error_log();
    let mapping_b = format!(
        "{} -> {}",
        env.cfg().join("app.conf").display(),
        r.join("etc/app.conf").display()
    );
    for needle in [
        "exited with status 0",
        "hello-from-post-sync",
        "failing-output",
        "`echo failing-output >&2; exit 3`: exited with status 3",
    ] {
        assert!(
            info.contains(needle),
            "info.log lacks {needle:?}\n{}",
            run.dump()
        );
    }
    let err_line = errors
        .lines()
        .find(|l| l.contains("exit 3"))
        .unwrap_or_else(|| panic!("no error line\n{}", run.dump()));
    assert!(
        err_line.contains(&format!("{}: post_sync {mapping_b}: `", h.addr))
            && err_line.contains("exited with status 3")
            && err_line.contains("were not run"),
        "{err_line}"
    );
    assert_eq!(
        errors.lines().count(),
        1,
        "only the failure\n{}",
        run.dump()
    );

    // Nothing changed: nothing runs.
    let again = env.run(&["sync"]);
    again.expect(0);
    assert_eq!(again.row(&h.addr), (0, 5, 0, 0, 0), "{}", again.dump());
    assert_eq!(read(&log_a), "one\ntwo\n", "{}", again.dump());
    assert_eq!(read(&log_b), "first\n");

    // Watch: a directory of three files moved in is one batch, so one run; the
    // marker (a later change, on a mapping without post_sync) proves it is over.
    let daemon = env.watch();
    let outside = env.cfg().join("incoming");
    for n in ["x", "y", "z"] {
        env.src(&format!("incoming/{n}.html"), n);
    }
    std::fs::rename(&outside, env.cfg().join("site/incoming")).unwrap();
    wait_until(ARRIVE, "moved directory arrives", || {
        read(&r.join("www/incoming/z.html")) == "z"
    });
    std::fs::write(env.cfg().join("marker"), "m1").unwrap();
    wait_until(ARRIVE, "marker arrives", || read(&r.join("marker")) == "m1");
    assert_eq!(
        read(&log_a),
        "one\ntwo\none\ntwo\n",
        "one more run for the batch\n{}",
        daemon.dump()
    );
    assert_eq!(read(&log_b), "first\n", "{}", daemon.dump());
}

/// `sync --dry-run` prints what the real run then does, line for line, and changes
/// nothing on the remote (tree checksummed before and after): no directory,
/// temporary removal, backup, deletion or post_sync. `--exit-code` gives 3 with
/// differences and 0 without; `--json` lines parse.
#[test]
fn dry_run_matches_the_real_run_and_changes_nothing() {
    let mut env = Env::new("parity-dry");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    env.src("site/same.html", "same");
    env.src("site/change.html", "old");
    env.src("site/gone.html", "gone");
    env.src("site/keep.swp", "swap");
    let r = env.remote("r");
    let www = r.join("www");
    let post_log = r.join("post.log");
    env.map(
        &h.addr,
        json!([
            {"src": "site/", "dest": www, "delete": true, "backups": 2,
             "exclude": ["*.swp"],
             "post_sync": [format!("echo ran >> '{}'", post_log.display())]},
            {"src": "app.conf", "dest": r.join("new/dir/app.conf")},
        ]),
    );
    env.src("app.conf", "conf");
    std::fs::remove_file(env.cfg().join("app.conf")).unwrap();
    // A first run (app.conf missing: exit 1) sets the baseline.
    env.run(&["sync"]).expect(1);
    std::fs::remove_file(&post_log).unwrap();
    std::fs::write(www.join("remote.swp"), "remote swap").unwrap();
    std::fs::write(www.join(".hostsync-tmp.0123456789abcdef"), "stale").unwrap();
    env.dir.chown_to_test_user("remote");
    // Local changes: one updated, one new, a new dir, a new symlink, one removed,
    // and a file mapping whose remote directory does not exist yet.
    std::fs::write(env.cfg().join("site/change.html"), "new content").unwrap();
    env.src("site/new.html", "new");
    env.dir.mkdir("cfg/site/newdir/empty");
    std::os::unix::fs::symlink("same.html", env.cfg().join("site/link")).unwrap();
    std::fs::remove_file(env.cfg().join("site/gone.html")).unwrap();
    env.src("app.conf", "conf");

    let before = tree_state(&r);
    let info_before = env.info_log().len();
    let dry = env.run(&["sync", "--dry-run"]);
    dry.expect(0);
    assert_eq!(
        tree_state(&r),
        before,
        "the dry run changed the remote\n{}",
        dry.dump()
    );
    assert!(!r.join("new").exists() && !post_log.exists());
    let lines = dry_lines(&dry);
    let p = |rel: &str| r.join(rel).display().to_string();
    let want: BTreeSet<(String, String, String, String)> = [
        ("[M]", p("www/change.html"), "updated"),
        ("[+]", p("www/new.html"), "added"),
        ("[+]", format!("{}/", p("www/newdir")), "added"),
        ("[+]", format!("{}/", p("www/newdir/empty")), "added"),
        ("[+]", p("www/link"), "added"),
        ("[-]", p("www/gone.html"), "deleted"),
        ("[+]", p("new/dir/app.conf"), "added"),
        // Every directory the sync makes, not only the deepest (issue 14, bug 5).
        ("[+]", format!("{}/", p("new")), "added"),
        ("[+]", format!("{}/", p("new/dir")), "added"),
    ]
    .into_iter()
    .map(|(t, path, w)| (t.to_string(), h.addr.clone(), path, w.to_string()))
    .collect();
    let got: BTreeSet<_> = lines.iter().cloned().collect();
    assert_eq!(got, want, "{}", dry.dump());
    assert_eq!(lines.len(), want.len(), "{}", dry.dump());
    assert!(
        !env.info_log()[info_before..].contains(": sent "),
        "{}",
        dry.dump()
    );
    assert!(dry.stderr.contains("9 difference(s)"), "{}", dry.dump());

    // --exit-code: 3 with differences; --json: one object per difference.
    env.run(&["sync", "--dry-run", "--exit-code"]).expect(3);
    let js = env.run(&["sync", "--dry-run", "--json"]);
    js.expect(0);
    let objects: Vec<Value> = js
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}\n{}", js.dump())))
        .collect();
    assert_eq!(objects.len(), want.len(), "{}", js.dump());
    assert!(
        objects
            .iter()
            .all(|o| o["type"] == "diff" && o["host"] == h.addr.as_str())
    );
    assert_eq!(tree_state(&r), before, "{}", js.dump());

    // The real run does exactly what the dry run said.
    let info_before = env.info_log().len();
    let real = env.run(&["sync"]);
    real.expect(0);
    let (sent, removed) = sent_and_removed(&env.info_log()[info_before..]);
    let files: BTreeSet<String> = lines
        .iter()
        .filter(|(t, _, path, _)| t != "[-]" && !path.ends_with('/'))
        .map(|(_, _, path, _)| path.clone())
        .collect();
    let deleted: BTreeSet<String> = lines
        .iter()
        .filter(|(t, ..)| t == "[-]")
        .map(|(_, _, path, _)| path.clone())
        .collect();
    assert_eq!(sent, files, "{}", real.dump());
    assert_eq!(removed, deleted, "{}", real.dump());
    for (t, _, path, _) in &lines {
        if t == "[+]" && path.ends_with('/') {
            assert!(Path::new(path).is_dir(), "{path}\n{}", real.dump());
        }
    }
    assert_eq!(
        read(&www.join("change.html.1")),
        "old",
        "backups are made for real"
    );
    assert_eq!(read(&post_log), "ran\n");
    assert_eq!(read(&www.join("remote.swp")), "remote swap");

    // Now nothing differs: no line, exit 0 even with --exit-code.
    let none = env.run(&["sync", "--dry-run", "--exit-code"]);
    none.expect(0);
    assert!(none.stdout.is_empty(), "{}", none.dump());
}

/// `--json` on sync and check prints one JSON object per line: file results,
/// errors, post_sync commands and host summaries; check rows.
#[test]
fn json_lines_parse_for_sync_and_check() {
    let mut env = Env::new("parity-json");
    let h = env.sshd();
    let mut down = env.sshd();
    env.add_host(&h, Auth::Key);
    env.add_host(&down, Auth::Key);
    down.stop();
    env.src("site/a.txt", "a");
    env.src("site/b.txt", "bb");
    let r = env.remote("r");
    env.map(
        &h.addr,
        json!([{"src": "site/", "dest": r.join("www"), "post_sync": ["true"]}]),
    );
    env.map(
        &down.addr,
        json!([{"src": "site/", "dest": r.join("down")}]),
    );
    let parse = |run: &Run| -> Vec<Value> {
        run.stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}\n{}", run.dump()))
            })
            .collect()
    };
    let run = env.run(&["sync", "--json"]);
    run.expect(1);
    let objects = parse(&run);
    let of = |t: &str| {
        objects
            .iter()
            .filter(|o| o["type"] == t)
            .collect::<Vec<_>>()
    };
    let files = of("file");
    assert_eq!(files.len(), 2, "{}", run.dump());
    assert!(
        files
            .iter()
            .all(|f| f["action"] == "sent" && f["host"] == h.addr.as_str())
    );
    let bytes: u64 = files.iter().map(|f| f["bytes"].as_u64().unwrap()).sum();
    assert_eq!(bytes, 3);
    assert_eq!(of("post_sync").len(), 1, "{}", run.dump());
    assert_eq!(of("post_sync")[0]["status"], 0);
    let hosts = of("host");
    assert_eq!(hosts.len(), 2, "{}", run.dump());
    let ok = hosts.iter().find(|o| o["host"] == h.addr.as_str()).unwrap();
    assert_eq!(
        (ok["status"].as_str(), ok["sent"].as_u64()),
        (Some("ok"), Some(2))
    );
    let bad = hosts
        .iter()
        .find(|o| o["host"] == down.addr.as_str())
        .unwrap();
    assert_eq!(bad["status"], "failed");
    assert!(bad["error"].as_str().unwrap().contains("host unreachable"));
    assert!(of("error").iter().any(|e| e["host"] == down.addr.as_str()));

    let check = env.run(&["check", "--json"]);
    check.expect(1);
    let rows = parse(&check);
    assert_eq!(rows.len(), 2, "{}", check.dump());
    assert!(rows.iter().all(|o| o["type"] == "check"));
    assert_eq!(rows[0]["status"], "ok");
    assert_eq!(rows[0]["auth"], "publickey");
    assert_eq!(rows[1]["status"], "failed");
    assert_eq!(rows[1]["fingerprint"], Value::Null);
}

/// On a terminal, sync draws a progress bar per host (files, bytes, rate, ETA)
/// and still ends with the summary table; `--quiet` draws none.
#[test]
fn progress_bars_on_a_terminal_and_none_with_quiet() {
    let mut env = Env::new("parity-progress");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    env.src("site/a.bin", vec![7u8; 300_000]);
    env.src("site/b.bin", vec![8u8; 300_000]);
    let r = env.remote("r");
    env.map(&h.addr, json!([{"src": "site/", "dest": r.join("www")}]));
    env.write_config();
    // `script` gives the command a pseudo-terminal as stdout.
    let on_tty = |args: &str| {
        let cmd = format!("{} {args}", env!("CARGO_BIN_EXE_hostsync"));
        let out = std::process::Command::new("script")
            .args(["-q", "-e", "-c", &cmd, "/dev/null"])
            .current_dir(env.cfg())
            .env("HOME", env.dir.path())
            .env_remove("SSH_AUTH_SOCK")
            .output()
            .expect("script(1) from util-linux is needed for this test");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = on_tty("sync");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&h.addr) && out.contains("ETA"), "{out}");
    assert!(out.contains("2/2 files"), "{out}");
    assert!(out.contains("ok: 2 sent"), "{out}");
    assert!(
        out.contains("HOST") && out.contains("SKIPPED"),
        "table\n{out}"
    );
    let (code, out) = on_tty("sync --quiet");
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("ETA") && out.contains("SKIPPED"), "{out}");
    assert_eq!(read(&r.join("www/a.bin")).len(), 300_000);
}

/// `hostsync completions SHELL` prints a script for bash, zsh and fish, with no
/// configuration present.
#[test]
fn completions_print_a_script_for_each_shell() {
    let d = crate::util::Dir::new("parity-completions");
    for shell in ["bash", "zsh", "fish"] {
        let run = run_in(d.path(), d.path(), &["completions", shell]);
        run.expect(0);
        assert!(
            run.stdout.len() > 200 && run.stdout.contains("hostsync"),
            "{shell}\n{}",
            run.dump()
        );
        assert!(run.stdout.contains("dry-run"), "{shell}\n{}", run.dump());
    }
    run_in(d.path(), d.path(), &["completions", "tcsh"]).expect(2);
}

/// Bad per-mapping options stop every command with exit 2 and a line naming the
/// file, the mapping, the field and the fix; nothing is contacted.
#[test]
fn bad_options_exit_2_naming_file_mapping_and_field() {
    let mut env = Env::new("parity-badopts");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    env.src("f.conf", "x");
    env.dir.mkdir("cfg/site");
    let file: PathBuf = env.cfg().join(format!("mappings/{}.json", h.addr));
    for (mapping, needle) in [
        (
            json!({"src": "site/", "dest": "/srv/x", "exclude": ["ok", "a["]}),
            "mapping #1: exclude #2 \"a[\": not a valid glob",
        ),
        (
            json!({"src": "site/", "dest": "/srv/x", "backups": 100}),
            "mapping #1: backups 100: must be a whole number from 0 to 99",
        ),
        (
            json!({"src": "f.conf", "dest": "/srv/x", "delete": true}),
            "mapping #1: delete: src",
        ),
        (
            json!({"src": "site/", "dest": "/srv/x", "post_sync": [""]}),
            "mapping #1: post_sync #1: the command is empty",
        ),
        (
            json!({"src": "site/", "dest": "/srv/x", "excludes": []}),
            "unknown field `excludes`",
        ),
    ] {
        env.map(&h.addr, json!([mapping]));
        for cmd in [&["sync"][..], &["sync", "--dry-run"], &["check"]] {
            let run = env.run(cmd);
            run.expect(2).expect_output(needle);
            assert!(
                run.stderr.contains(&file.display().to_string()),
                "{}",
                run.dump()
            );
        }
    }
    assert!(
        !h.log().contains("Accepted"),
        "nothing may log in\n{}",
        h.log()
    );
}
