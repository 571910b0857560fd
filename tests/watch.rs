//! `hostsync watch` against real sshd and real inotify (issue 3, live replication).
//! Every wait polls with a deadline; nothing sleeps a fixed time.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::util::hostsync::{Auth, Env, start_daemon};
use crate::util::{Fault, Proxy, test_user, wait_until};

/// How long a change may take to arrive in these tests (far above the real latency;
/// the benchmark measures that).
const ARRIVE: Duration = Duration::from_secs(15);

/// Reads a file, "" when missing.
fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Lines of info.log reporting a transfer to `dest`.
/// Polls `count` every 50 ms for `quiet`: it must not change meanwhile. Returns it.
fn stays_the_same(quiet: Duration, count: impl Fn() -> usize) -> usize {
    let first = count();
    let until = std::time::Instant::now() + quiet;
    while std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
        let now = count();
        assert_eq!(
            now, first,
            "changed from {first} to {now} while it should stay"
        );
    }
    first
}

fn sends_to(info: &str, dest: &Path) -> usize {
    let needle = format!(" -> {} (", dest.display());
    info.lines()
        .filter(|l| l.contains(": sent ") && l.contains(&needle))
        .count()
}

/// Create, modify, rename, delete and new directories in a nested tree reach every
/// host at its own destination; deletes only where the mapping says so.
#[test]
fn create_modify_rename_delete_reach_all_hosts() {
    let mut env = Env::new("watch-ops");
    let h1 = env.sshd();
    let h2 = env.sshd();
    env.add_host(&h1, Auth::Key);
    env.add_host(&h2, Auth::Key);
    env.src("site/a/old.txt", "old");
    env.src("site/keep.txt", "keep");
    let (r1, r2) = (env.remote("h1"), env.remote("h2"));
    env.map(
        &h1.addr,
        json!([{"src": "site/", "dest": r1.join("www"), "delete": true}]),
    );
    env.map(
        &h2.addr,
        json!([{"src": "site", "dest": r2.join("srv/site")}]),
    );
    let daemon = env.watch();
    let dests = [r1.join("www"), r2.join("srv/site")];
    for d in &dests {
        wait_until(ARRIVE, "initial reconcile", || {
            read(&d.join("a/old.txt")) == "old"
        });
    }
    let site = env.cfg().join("site");
    std::fs::create_dir_all(site.join("a/b/c")).unwrap();
    std::fs::write(site.join("a/b/c/new.txt"), "new").unwrap();
    std::fs::write(site.join("keep.txt"), "changed").unwrap();
    std::fs::rename(site.join("a/old.txt"), site.join("a/renamed.txt")).unwrap();
    // A whole directory moved in from outside the tree.
    std::fs::create_dir_all(env.cfg().join("outside/moved/deep")).unwrap();
    std::fs::write(env.cfg().join("outside/moved/deep/m.txt"), "moved").unwrap();
    std::fs::rename(env.cfg().join("outside/moved"), site.join("moved")).unwrap();
    for d in &dests {
        wait_until(ARRIVE, "changes on every host", || {
            read(&d.join("a/b/c/new.txt")) == "new"
                && read(&d.join("keep.txt")) == "changed"
                && read(&d.join("a/renamed.txt")) == "old"
                && read(&d.join("moved/deep/m.txt")) == "moved"
        });
    }
    // delete: true on h1 removes the old name; h2 (no delete) keeps it.
    wait_until(ARRIVE, "rename removes the old name on h1", || {
        !dests[0].join("a/old.txt").exists()
    });
    assert!(
        dests[1].join("a/old.txt").exists(),
        "{}\n{}",
        env.dir.listing(),
        daemon.dump()
    );
    std::fs::remove_file(site.join("keep.txt")).unwrap();
    std::fs::remove_dir_all(site.join("a/b")).unwrap();
    wait_until(ARRIVE, "deletes on h1", || {
        !dests[0].join("keep.txt").exists() && !dests[0].join("a/b").exists()
    });
    // A marker written after the deletes arrives on h2, so h2 had its chance to delete.
    std::fs::write(site.join("marker"), "m").unwrap();
    wait_until(ARRIVE, "marker on h2", || {
        read(&dests[1].join("marker")) == "m"
    });
    assert!(dests[1].join("keep.txt").exists() && dests[1].join("a/b/c/new.txt").exists());
    assert!(daemon.error_log().is_empty(), "{}", daemon.dump());
}

/// A file rewritten 1,000 times in a burst is sent a few times, and the last
/// content arrives. What coalescing guarantees (exec/live.rs): a worker drains
/// its whole queue before each round, so when the burst ends at most one round
/// is in flight and one more follows it; that one reads the last content, and
/// any later round finds the same content on the remote and sends nothing. So at
/// most 2 transfers are logged after the last write.
#[test]
fn burst_of_1000_writes_ends_with_last_content_in_few_transfers() {
    let mut env = Env::new("watch-burst");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    env.src("hot.txt", "start");
    let r = env.remote("r");
    env.map(
        &h.addr,
        json!([{"src": "hot.txt", "dest": r.join("hot.txt")}]),
    );
    let daemon = env.watch();
    wait_until(ARRIVE, "initial reconcile", || {
        read(&r.join("hot.txt")) == "start"
    });
    let hot = env.cfg().join("hot.txt");
    let started = std::time::Instant::now();
    for i in 0..1000 {
        std::fs::write(&hot, format!("version {i}\n")).unwrap();
    }
    let burst = started.elapsed();
    let during = sends_to(&daemon.info_log(), &r.join("hot.txt"));
    wait_until(ARRIVE, "last version arrives", || {
        read(&r.join("hot.txt")) == "version 999\n"
    });
    // The last transfer is logged once the remote confirmed it, just after the
    // file is there; then no round is left that would send anything.
    let count = || sends_to(&daemon.info_log(), &r.join("hot.txt"));
    let mut last = (count(), std::time::Instant::now());
    wait_until(ARRIVE, "the last transfer is logged", || {
        let now = count();
        if now != last.0 {
            last = (now, std::time::Instant::now());
        }
        last.1.elapsed() > Duration::from_millis(500)
    });
    let settled = stays_the_same(Duration::from_secs(2), count);
    eprintln!("burst of {burst:?}: {during} transfers during it, {settled} in all");
    assert!(
        settled - during <= 2,
        "{} transfers after the burst ended (at most the round in flight and one more)\n{}",
        settled - during,
        daemon.dump()
    );
    assert!(
        settled <= 100,
        "{settled} transfers for a 1,000-write burst\n{}",
        daemon.dump()
    );
}

/// A host stopped mid-stream keeps its pending changes and gets the latest content
/// when it is back; error.log and info.log say so once each.
#[test]
fn host_down_then_back_catches_up_and_logs_once_each() {
    let mut env = Env::new("watch-down");
    let mut h = env.sshd();
    let other = env.sshd();
    env.add_host(&h, Auth::Key);
    env.add_host(&other, Auth::Key);
    env.ini("[sync]\nretry_max_s = 1\n");
    env.src("f.txt", "v0");
    let (r, ro) = (env.remote("r"), env.remote("other"));
    env.map(&h.addr, json!([{"src": "f.txt", "dest": r.join("f.txt")}]));
    env.map(
        &other.addr,
        json!([{"src": "f.txt", "dest": ro.join("f.txt")}]),
    );
    let daemon = env.watch();
    wait_until(ARRIVE, "initial reconcile", || {
        read(&r.join("f.txt")) == "v0"
    });
    h.stop();
    let f = env.cfg().join("f.txt");
    for v in 1..=5 {
        std::fs::write(&f, format!("v{v}")).unwrap();
        // The other host carries on meanwhile.
        wait_until(ARRIVE, "other host keeps up", || {
            read(&ro.join("f.txt")) == format!("v{v}")
        });
    }
    wait_until(ARRIVE, "host down is logged", || {
        daemon.error_log().contains("host down")
    });
    h.restart();
    wait_until(ARRIVE, "latest content after restart", || {
        read(&r.join("f.txt")) == "v5"
    });
    wait_until(ARRIVE, "recovery is logged", || {
        daemon.info_log().contains("host is back")
    });
    let down_lines = daemon
        .error_log()
        .lines()
        .filter(|l| l.contains("host down"))
        .count();
    let back_lines = daemon
        .info_log()
        .lines()
        .filter(|l| l.contains("host is back"))
        .count();
    assert_eq!((down_lines, back_lines), (1, 1), "{}", daemon.dump());
    assert!(
        daemon
            .error_log()
            .contains(&format!("{}: host down", h.addr)),
        "{}",
        daemon.dump()
    );
}

/// Two daemons whose mappings point at each other's file settle after one transfer
/// per change instead of sending it back and forth.
#[test]
fn two_daemons_mapped_at_each_other_do_not_ping_pong() {
    let mut env = Env::new("watch-pingpong");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    let a = env.remote("a");
    let b = env.remote("b");
    std::fs::write(a.join("f"), "same").unwrap();
    std::fs::write(b.join("f"), "same").unwrap();
    let mtime = std::fs::metadata(a.join("f")).unwrap().mtime();
    let set = |p: &Path| {
        let t = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(mtime as u64);
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(t)
            .unwrap();
    };
    set(&a.join("f"));
    set(&b.join("f"));
    env.dir.chown_to_test_user("remote");
    // Daemon A: a/f -> b/f.  Daemon B (a second config folder): b/f -> a/f.
    env.map(&h.addr, json!([{"src": a.join("f"), "dest": b.join("f")}]));
    let da = env.watch();
    let cfg_b = env.dir.join("cfg-b");
    copy_config(&env.cfg(), &cfg_b);
    std::fs::write(
        cfg_b.join(format!("mappings/{}.json", h.addr)),
        json!([{"src": b.join("f"), "dest": a.join("f")}]).to_string(),
    )
    .unwrap();
    let db = start_daemon(&cfg_b, env.dir.path());
    let total = || sends_to(&da.info_log(), &b.join("f")) + sends_to(&db.info_log(), &a.join("f"));
    // Settled means the transfer count stays the same over several debounce
    // periods (50 ms) and retry periods (the first retry comes after 1 s): 3 s.
    let quiet = Duration::from_secs(3);
    wait_until(ARRIVE, "both daemons made their start-up reconcile", || {
        da.info_log().contains("watching") && db.info_log().contains("watching")
    });
    let before = stays_the_same(quiet, total);
    assert_eq!(
        before,
        0,
        "equal files are not sent\n{}\n{}",
        da.dump(),
        db.dump()
    );
    std::fs::write(a.join("f"), "from a").unwrap();
    wait_until(ARRIVE, "a's change reaches b", || {
        read(&b.join("f")) == "from a" && total() == 1
    });
    assert_eq!(
        stays_the_same(quiet, total),
        1,
        "{}\n{}",
        da.dump(),
        db.dump()
    );
    std::fs::write(b.join("f"), "from b!").unwrap();
    wait_until(ARRIVE, "b's change reaches a", || {
        read(&a.join("f")) == "from b!" && total() == 2
    });
    assert_eq!(
        stays_the_same(quiet, total),
        2,
        "{}\n{}",
        da.dump(),
        db.dump()
    );
    assert_eq!(read(&a.join("f")), read(&b.join("f")));
    let _ = test_user();
}

/// Copies config.ini, connection_info.json and known_hosts into a second config folder.
fn copy_config(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("mappings")).unwrap();
    for f in ["config.ini", "connection_info.json", "known_hosts"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

/// SIGTERM while a large file is in flight: exit 0 within 5 s, no temporary left.
/// The host is behind a proxy that passes 1 MiB/s, so the 64 MiB file is surely
/// still in flight when the signal comes, however fast the machine is.
#[test]
fn sigterm_mid_transfer_exits_cleanly_without_temporaries() {
    let mut env = Env::new("watch-term");
    let h = env.sshd();
    let proxy = Proxy::start(
        &h.addr,
        h.port,
        Fault::Slow {
            bytes_per_sec: 1 << 20,
        },
    );
    env.add_host_raw(json!({"ip_address": proxy.addr, "port": proxy.port, "user": crate::util::test_user(), "identity_file": env.key.private}));
    env.trust(h.known_hosts_line_as(&proxy.addr, proxy.port));
    let big: Vec<u8> = (0..64u32 << 20).map(|i| (i % 251) as u8).collect();
    env.src("big.bin", &big);
    let r = env.remote("r");
    env.dir.chown_to_test_user("remote/r");
    env.map(
        &proxy.addr,
        json!([{"src": "big.bin", "dest": r.join("big.bin")}]),
    );
    let mut daemon = env.watch();
    let temporaries = || {
        std::fs::read_dir(&r)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".hostsync-tmp.")
            })
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .collect::<Vec<u64>>()
    };
    wait_until(ARRIVE, "transfer in flight", || {
        temporaries().iter().any(|&n| n > 256 << 10)
    });
    let (code, took) = daemon.terminate();
    assert_eq!(code, Some(0), "{}", daemon.dump());
    assert!(
        took < Duration::from_secs(5),
        "exit took {took:?}\n{}",
        daemon.dump()
    );
    wait_until(Duration::from_secs(3), "no temporary left", || {
        temporaries().is_empty()
    });
    assert!(!r.join("big.bin").exists());
    assert!(
        daemon.info_log().contains("summary since start"),
        "{}",
        daemon.dump()
    );
}

/// A log folder inside a watched src is refused at start (exit 2).
#[test]
fn log_dir_inside_watched_tree_is_refused() {
    let mut env = Env::new("watch-logdir");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    env.src("site/index.html", "x");
    let r = env.remote("r");
    env.map(&h.addr, json!([{"src": "site/", "dest": r.join("www")}]));
    env.write_config();
    let ini = env.cfg().join("config.ini");
    let text = read(&ini).replace("log_path = logs", "log_path = site/logs");
    std::fs::write(&ini, text).unwrap();
    let run = crate::util::hostsync::run_in(&env.cfg(), env.dir.path(), &["watch"]);
    run.expect(2).expect_output("is inside the watched src");
    assert!(!env.cfg().join("site/logs").exists());
}
