//! Issue 14 ("The audit trail tells the truth") against real sshd: removals in
//! the summary and info.log, trailing-slash destinations, hosts without a mapping
//! file, host-key hints that name the configured known_hosts, the systemd steps
//! of the README, narrowed runs (`--host`, `sync PATH...`, `-c DIR`), "did you
//! mean", watch's lines on a terminal, why `sync -v` sends a file, readable bytes
//! and default keys. Every wait polls with a deadline; nothing sleeps a fixed time.

use serde_json::json;

use crate::util::hostsync::{Auth, Env};

/// The per-host line of info.log for `addr` (the last one).
fn done_line(info: &str, addr: &str) -> String {
    info.lines()
        .rfind(|l| l.contains(&format!("{addr}: done in ")))
        .unwrap_or_else(|| panic!("no done line for {addr}\n{info}"))
        .to_string()
}

/// The counts of a per-host line `done in N ms: S sent, K skipped, R removed, F
/// failed, B bytes`, as written after `ms: `.
fn done_counts(line: &str) -> &str {
    line.split_once(" ms: ")
        .unwrap_or_else(|| panic!("no `ms: ` in {line:?}"))
        .1
}

/// See: issue 14, bug 2. A delete under `sync` is counted in the table's REMOVED
/// column and in info.log's per-host line, not only in `--json`.
#[test]
fn removals_show_in_the_table_and_the_per_host_log_line() {
    let mut env = Env::new("audit-removed");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    env.src("site/keep.txt", "keep");
    env.src("site/old.txt", "old");
    env.src("site/sub/older.txt", "older");
    let r = env.remote("r");
    env.map(
        &h.addr,
        json!([{"src": "site/", "dest": r.join("www"), "delete": true}]),
    );
    env.run(&["sync"]).expect(0);
    assert!(r.join("www/sub/older.txt").exists());
    std::fs::remove_file(env.cfg().join("site/old.txt")).unwrap();
    std::fs::remove_dir_all(env.cfg().join("site/sub")).unwrap();

    let run = env.run(&["sync"]);
    run.expect(0);
    let header: Vec<&str> = run
        .stdout
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "HOST", "SENT", "SKIPPED", "REMOVED", "FAILED", "BYTES", "STATUS"
        ],
        "{}",
        run.dump()
    );
    // old.txt and the tree sub/ (its topmost path) are two removals.
    assert_eq!(run.row(&h.addr), (0, 1, 2, 0, 0), "{}", run.dump());
    assert_eq!(run.status(&h.addr), "ok", "{}", run.dump());
    assert!(!r.join("www/old.txt").exists() && !r.join("www/sub").exists());
    let line = done_line(&env.info_log(), &h.addr);
    assert_eq!(
        done_counts(&line),
        "0 sent, 1 skipped, 2 removed, 0 failed, 0 bytes",
        "{}",
        run.dump()
    );
}
