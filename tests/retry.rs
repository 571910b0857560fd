//! Issue 17 (a daemon that never gives up on a change): a remote disk that fills
//! up, a destination that turns read-only, temporaries of cut connections, and
//! `watch` retrying each refused path until it lands. Real sshd, real inotify,
//! real tmpfs mounts (as root, which CI is).

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::util::dir::temporaries;
use crate::util::hostsync::{Auth, Env};
use crate::util::{holds_within, root_or_skip, test_user_ids, wait_until};

/// A tmpfs mounted for one test, unmounted (lazily, so a busy one goes too) on drop.
pub struct Tmpfs {
    /// Where it is mounted.
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`4m`) at `path` (made if missing), owned by the
    /// ssh test user.
    pub fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let (uid, gid) = test_user_ids().expect("the ssh test user exists as root");
        let opts = format!("size={size},mode=0755,uid={uid},gid={gid}");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &opts, "tmpfs"])
            .arg(path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs -o {opts} tmpfs {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            path: path.to_path_buf(),
        }
    }

    /// Remounts it read-only (`ro`) or read-write (`rw`).
    pub fn remount(&self, how: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{how}")])
            .arg(&self.path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -o remount,{how} {}: {}",
            self.path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// A 6 MiB file pushed into a 4 MiB file system: the old content stays, no
/// temporary is left, one "no space" line, exit 1; then a 6-byte file still lands.
#[test]
fn a_full_disk_keeps_the_old_content_and_leaves_no_temporary() {
    for way in ["agent", "tar", "scp"] {
        full_disk_case(way);
    }
}

fn full_disk_case(way: &str) {
    if !root_or_skip("mount a small tmpfs as the destination") {
        return;
    }
    let mut env = Env::new(&format!("full-{way}"));
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    let r = env.remote("h");
    let fs = Tmpfs::mount(&r.join("small"), "4m");
    std::fs::write(fs.path.join("big.bin"), "old").unwrap();
    env.src("big.bin", vec![7u8; 6 << 20]);
    env.map(
        &h.addr,
        json!([{"src": "big.bin", "dest": fs.path.join("big.bin")}]),
    );
    let run = env.run_way(&["sync"], way);
    run.expect(1);
    let text = format!("{}{}", run.stdout, run.stderr);
    let errors = env.error_log();
    let lines: Vec<&str> = errors
        .lines()
        .filter(|l| l.to_lowercase().contains("no space"))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "{way}: {lines:?}\n{}\n{}",
        env.error_log(),
        run.dump()
    );
    assert!(
        text.to_lowercase().contains("no space"),
        "{way}: {}",
        run.dump()
    );
    assert_eq!(
        std::fs::read(fs.path.join("big.bin")).unwrap(),
        b"old",
        "{way}"
    );
    assert_eq!(
        temporaries(&fs.path),
        Vec::<String>::new(),
        "{way}: {}",
        run.dump()
    );
    env.src("big.bin", "small\n");
    env.run_way(&["sync"], way).expect(0);
    assert_eq!(
        std::fs::read(fs.path.join("big.bin")).unwrap(),
        b"small\n",
        "{way}"
    );
    assert_eq!(temporaries(&fs.path), Vec::<String>::new(), "{way}");
}

/// A rename the remote refuses (the dest is immutable, `chattr +i`) fails that
/// file, keeps the old content and leaves no temporary, whichever way the host
/// is served.
#[test]
fn a_refused_rename_leaves_no_temporary() {
    if !root_or_skip("make the destination immutable with chattr +i") {
        return;
    }
    for way in ["agent", "tar", "scp"] {
        let mut env = Env::new(&format!("refused-{way}"));
        let h = env.sshd();
        env.add_host(&h, Auth::Key);
        let r = env.remote("h");
        std::fs::write(r.join("locked.conf"), "old\n").unwrap();
        let _locked = Immutable::set(&r.join("locked.conf"));
        env.src("locked.conf", "new\n");
        env.map(
            &h.addr,
            json!([{"src": "locked.conf", "dest": r.join("locked.conf")}]),
        );
        let run = env.run_way(&["sync"], way);
        run.expect(1).expect_output("rename into place failed");
        assert_eq!(
            read(&r.join("locked.conf")),
            "old\n",
            "{way}: {}",
            run.dump()
        );
        assert_eq!(
            temporaries(&r),
            Vec::<String>::new(),
            "{way}: {}",
            run.dump()
        );
    }
}

/// `chattr +i` on a file, undone on drop (so the test folder can be removed).
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: &Path) -> Immutable {
        let ok = Command::new("chattr").arg("+i").arg(path).status();
        assert!(
            matches!(ok, Ok(s) if s.success()),
            "chattr +i {}: {ok:?}",
            path.display()
        );
        Immutable(path.to_path_buf())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

/// Reads a file, "" when missing.
fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// config.ini text for a short retry cap, so a retry comes within seconds.
const RETRY_3S: &str = "\n[sync]\nretry_max_s = 3\n";

/// How long a change or a retry may take in these tests: the retry cap (3 s) and
/// plenty of room for a slow machine. "No temporary is left" is polled for as
/// long: under watch a batch (a retry, or the one that just delivered) may still
/// hold its run's lock, removed when the batch ends; one left behind stays.
const LANDS: Duration = Duration::from_secs(15);

/// error.log lines that mention `needle`.
fn error_lines(log: &str, needle: &str) -> usize {
    log.lines()
        .filter(|l| l.to_lowercase().contains(needle))
        .count()
}

/// Under watch, a file that does not fit stays pending while a small change to
/// another path lands; it is retried (one error line, not one per retry) and
/// lands once space is freed, with no new local edit.
#[test]
fn watch_retries_a_path_that_did_not_fit_until_space_is_freed() {
    if !root_or_skip("mount a small tmpfs as the destination") {
        return;
    }
    let mut env = Env::new("watch-full");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    env.ini(RETRY_3S);
    let r = env.remote("h");
    let fs = Tmpfs::mount(&r.join("small"), "8m");
    std::fs::write(fs.path.join("filler"), vec![0u8; 4 << 20]).unwrap();
    env.src("site/small.txt", "a");
    env.map(&h.addr, json!([{"src": "site/", "dest": fs.path}]));
    let daemon = env.watch();
    let small = fs.path.join("small.txt");
    wait_until(LANDS, "initial reconcile", || read(&small) == "a");
    let big: Vec<u8> = vec![9u8; 6 << 20];
    std::fs::write(env.cfg().join("site/big.bin"), &big).unwrap();
    wait_until(LANDS, "the no space line", || {
        error_lines(&daemon.error_log(), "no space") > 0
    });
    std::fs::write(env.cfg().join("site/small.txt"), "b").unwrap();
    wait_until(LANDS, "the small change lands meanwhile", || {
        read(&small) == "b"
    });
    // A few retries pass (the cap is 3 s): still one line for the big file.
    let one = stays_the_same(Duration::from_secs(5), || {
        error_lines(&daemon.error_log(), "big.bin")
    });
    assert_eq!(one, 1, "{}", daemon.dump());
    assert!(!fs.path.join("big.bin").exists(), "{}", daemon.dump());
    assert!(
        holds_within(LANDS, || temporaries(&fs.path).is_empty()),
        "left: {:?}\n{}",
        temporaries(&fs.path),
        daemon.dump()
    );
    let (code, rows, dump) = status_json(&env);
    assert_eq!(code, 1, "{dump}");
    assert_eq!(state_of(&rows, &h.addr).0, "failing", "{dump}");
    let failing = &rows[0]["failing"][0];
    assert!(
        failing["path"].as_str().unwrap().contains("big.bin"),
        "{dump}"
    );
    assert!(
        failing["reason"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("no space"),
        "{dump}"
    );
    std::fs::remove_file(fs.path.join("filler")).unwrap();
    wait_until(
        Duration::from_secs(3 + 5),
        "the big file lands after space is freed",
        || std::fs::read(fs.path.join("big.bin")).is_ok_and(|b| b == big),
    );
    wait_until(LANDS, "one info line when it lands", || {
        daemon.info_log().contains("big.bin: landed after failing")
    });
    assert_eq!(
        error_lines(&daemon.error_log(), "big.bin"),
        1,
        "{}",
        daemon.dump()
    );
    assert!(
        holds_within(LANDS, || temporaries(&fs.path).is_empty()),
        "left: {:?}\n{}",
        temporaries(&fs.path),
        daemon.dump()
    );
}

/// A destination made read-only, then writable again: the change lands without
/// a new local edit.
#[test]
fn watch_delivers_a_change_once_a_read_only_destination_is_writable_again() {
    if !root_or_skip("mount and remount a tmpfs as the destination") {
        return;
    }
    let mut env = Env::new("watch-ro");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    env.ini(RETRY_3S);
    let r = env.remote("h");
    let fs = Tmpfs::mount(&r.join("ro"), "4m");
    env.src("site/a.txt", "v1");
    env.map(&h.addr, json!([{"src": "site/", "dest": fs.path}]));
    let daemon = env.watch();
    let a = fs.path.join("a.txt");
    wait_until(LANDS, "initial reconcile", || read(&a) == "v1");
    fs.remount("ro");
    std::fs::write(env.cfg().join("site/a.txt"), "v2").unwrap();
    wait_until(LANDS, "the read-only failure is logged", || {
        error_lines(&daemon.error_log(), "a.txt") > 0
    });
    assert_eq!(read(&a), "v1");
    fs.remount("rw");
    wait_until(
        Duration::from_secs(3 + 5),
        "the change lands without a new edit",
        || read(&a) == "v2",
    );
    assert_eq!(
        error_lines(&daemon.error_log(), "a.txt"),
        1,
        "{}",
        daemon.dump()
    );
    assert!(
        holds_within(LANDS, || temporaries(&fs.path).is_empty()),
        "left: {:?}\n{}",
        temporaries(&fs.path),
        daemon.dump()
    );
}

/// A local file rewritten over and over (and one deleted) while sync reads: the
/// others arrive, the remote copy is one version or absent, never two mixed, and
/// a second run completes.
#[test]
fn a_file_rewritten_or_deleted_while_sync_reads_it_tears_nothing() {
    let mut env = Env::new("rewrite");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    let r = env.remote("h");
    for i in 0..20 {
        env.src(&format!("site/f{i}.txt"), format!("file {i}\n"));
    }
    let big = env.src("site/big.bin", vec![0u8; 16 << 20]);
    let gone = env.src("site/gone.bin", vec![1u8; 8 << 20]);
    env.map(&h.addr, json!([{"src": "site/", "dest": r.join("www")}]));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, big) = (stop.clone(), big.clone());
        std::thread::spawn(move || {
            let mut v = 1u8;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Each version is one byte value throughout, 16 MiB long.
                std::fs::write(&big, vec![v; 16 << 20]).unwrap();
                v = v % 250 + 1;
            }
        })
    };
    let remover = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        let _ = std::fs::remove_file(gone);
    });
    let run = env.run(&["sync"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    remover.join().unwrap();
    assert!(run.code == 0 || run.code == 1, "{}", run.dump());
    let www = r.join("www");
    for i in 0..20 {
        assert_eq!(
            read(&www.join(format!("f{i}.txt"))),
            format!("file {i}\n"),
            "{}",
            run.dump()
        );
    }
    // The writer truncates and rewrites in place, so any length is a moment the
    // local file had; two byte values in one copy would be two versions mixed.
    if let Ok(got) = std::fs::read(www.join("big.bin")) {
        assert!(got.len() <= 16 << 20, "{}", run.dump());
        assert!(got.iter().all(|&b| b == got[0]), "torn: {}", run.dump());
    }
    if let Ok(got) = std::fs::read(www.join("gone.bin")) {
        assert!(got == vec![1u8; 8 << 20], "torn: {}", run.dump());
    }
    assert_eq!(temporaries(&www), Vec::<String>::new(), "{}", run.dump());
    env.run(&["sync"]).expect(0);
    assert!(std::fs::read(www.join("big.bin")).unwrap() == std::fs::read(&big).unwrap());
}

/// Polls `count` every 50 ms until it has not changed for `quiet`, and returns
/// it; panics if it is still changing at `deadline` from now. Where `count`
/// may legitimately move a little longer (an echo between daemons that crossed
/// a change under load), this is "it stops", not "it never moved".
fn settles(quiet: Duration, deadline: Duration, count: impl Fn() -> usize) -> usize {
    let end = std::time::Instant::now() + deadline;
    let (mut last, mut since) = (count(), std::time::Instant::now());
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = count();
        if now != last {
            (last, since) = (now, std::time::Instant::now());
        } else if since.elapsed() >= quiet {
            return last;
        }
        assert!(
            std::time::Instant::now() < end,
            "still changing ({last}) after {deadline:?}"
        );
    }
}

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

/// `hostsync status --json`: one object per host, then the daemon's.
fn status_json(env: &Env) -> (i32, Vec<serde_json::Value>, String) {
    let run = env.run(&["status", "--json"]);
    let rows = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{}", run.dump())))
        .collect();
    (run.code, rows, run.dump())
}

/// The row of `host` in a status: (state, pending).
fn state_of(rows: &[serde_json::Value], host: &str) -> (String, u64) {
    let row = rows
        .iter()
        .find(|r| r["host"] == host)
        .expect("a row per host");
    (
        row["state"].as_str().unwrap().to_string(),
        row["pending"].as_u64().unwrap(),
    )
}

/// `status` with no daemon exits 3; with one, every host ok (exit 0); a host
/// whose sshd is stopped is down with its change pending (exit 1), and ok again
/// once it is back.
#[test]
fn status_shows_ok_down_and_no_daemon() {
    let mut env = Env::new("status");
    let h1 = env.sshd();
    let mut h2 = env.sshd();
    env.add_host(&h1, Auth::Key);
    env.add_host(&h2, Auth::Key);
    env.ini(RETRY_3S);
    env.src("site/a.txt", "1");
    let (r1, r2) = (env.remote("h1"), env.remote("h2"));
    env.map(&h1.addr, json!([{"src": "site/", "dest": r1.join("www")}]));
    env.map(&h2.addr, json!([{"src": "site/", "dest": r2.join("www")}]));
    env.run(&["status"])
        .expect(3)
        .expect_output("no hostsync watch is running for");
    let mut daemon = env.watch();
    wait_until(LANDS, "both hosts ok", || {
        let (code, rows, _) = status_json(&env);
        code == 0
            && rows.len() == 3
            && [&h1.addr, &h2.addr]
                .iter()
                .all(|h| state_of(&rows, h).0 == "ok")
    });
    let (_, rows, dump) = status_json(&env);
    assert_eq!(rows[0]["bytes"], 1, "{dump}");
    assert!(
        rows[0]["last_ok"].as_str().unwrap().ends_with('Z'),
        "{dump}"
    );
    assert_eq!(rows[2]["daemon"]["pid"], daemon.pid(), "{dump}");
    let canonical = std::fs::canonicalize(env.cfg().join("config.ini")).unwrap();
    assert_eq!(
        rows[2]["daemon"]["config"],
        canonical.display().to_string(),
        "{dump}"
    );
    let table = env.run(&["status"]);
    table
        .expect(0)
        .expect_output(&format!("daemon: pid {}", daemon.pid()));
    h2.stop();
    std::fs::write(env.cfg().join("site/a.txt"), "2").unwrap();
    // h1 takes the change too: it is ok again once that round is on the file
    // (written at most every 250 ms), while h2 stays down with it pending.
    wait_until(LANDS, "h2 down with its change pending, h1 ok", || {
        let (code, rows, _) = status_json(&env);
        let (state, pending) = state_of(&rows, &h2.addr);
        code == 1 && state == "down" && pending >= 1 && state_of(&rows, &h1.addr).0 == "ok"
    });
    h2.restart();
    wait_until(LANDS, "h2 back and ok", || {
        let (code, rows, _) = status_json(&env);
        code == 0 && state_of(&rows, &h2.addr) == ("ok".to_string(), 0)
    });
    assert_eq!(read(&r2.join("www/a.txt")), "2");
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0), "{}", daemon.dump());
    env.run(&["status"]).expect(3);
}

/// A second `watch` on the same config.ini refuses (also with another --host),
/// naming the pid; a second config.ini on the same log_path is refused; once the
/// daemon is gone, its pid file does not block a new one.
#[test]
fn one_daemon_per_config_and_a_stale_pid_file_never_blocks() {
    let mut env = Env::new("single");
    let h1 = env.sshd();
    let h2 = env.sshd();
    env.add_host(&h1, Auth::Key);
    env.add_host(&h2, Auth::Key);
    env.src("site/a.txt", "1");
    let r = env.remote("h");
    env.map(&h1.addr, json!([{"src": "site/", "dest": r.join("1")}]));
    env.map(&h2.addr, json!([{"src": "site/", "dest": r.join("2")}]));
    let mut daemon = env.watch_with(&["watch", "--host", &h1.addr]);
    let pid = daemon.pid().to_string();
    for args in [vec!["watch"], vec!["watch", "--host", &h2.addr]] {
        let run = env.run(&args);
        run.expect(2)
            .expect_output("already running")
            .expect_output(&format!("pid {pid}"));
    }
    // Another config.ini whose log_path is this one's logs folder.
    let other = env.dir.mkdir("other");
    for f in ["connection_info.json", "known_hosts"] {
        std::fs::copy(env.cfg().join(f), other.join(f)).unwrap();
    }
    std::fs::create_dir_all(other.join("mappings")).unwrap();
    let ini = std::fs::read_to_string(env.cfg().join("config.ini"))
        .unwrap()
        .replace(
            "log_path = logs",
            &format!("log_path = {}", env.cfg().join("logs").display()),
        );
    std::fs::write(other.join("config.ini"), ini).unwrap();
    let run = crate::util::hostsync::run_in(&other, env.dir.path(), &["watch"]);
    run.expect(2)
        .expect_output("give each config.ini its own log_path")
        .expect_output(&format!("pid {pid}"));
    // Killed, as a crash would: the file stays, the lock goes with the process.
    drop(daemon);
    assert!(env.cfg().join("logs/watch.pid").exists());
    daemon = env.watch();
    assert_ne!(daemon.pid().to_string(), pid);
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0), "{}", daemon.dump());
}

/// SIGTERM with a host down: the daemon logs how many changes it still had
/// pending for that host, and exits 0 as before.
#[test]
fn sigterm_logs_what_is_still_pending_per_host() {
    let mut env = Env::new("term-pending");
    let mut h = env.sshd();
    env.add_host(&h, Auth::Key);
    env.src("site/a.txt", "1");
    let r = env.remote("h");
    env.map(&h.addr, json!([{"src": "site/", "dest": r.join("www")}]));
    h.stop();
    let mut daemon = env.watch();
    wait_until(LANDS, "the host is down", || {
        daemon.error_log().contains("host down")
    });
    std::fs::write(env.cfg().join("site/a.txt"), "2").unwrap();
    wait_until(LANDS, "the change is pending", || {
        let (_, rows, _) = status_json(&env);
        state_of(&rows, &h.addr).1 >= 2
    });
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0), "{}", daemon.dump());
    let info = daemon.info_log();
    let line = info
        .lines()
        .find(|l| l.contains("still pending at shutdown"))
        .unwrap_or_else(|| panic!("no pending line\n{}", daemon.dump()));
    assert!(
        line.contains(&format!("{}: 2 change(s) still pending", h.addr)),
        "{line}"
    );
}

/// A host whose login prints text before every command (so no listing or agent
/// greeting parses) fails the same way every time: one error line with the
/// remedy, and it is retried at the cap, not every second.
#[test]
fn a_host_that_can_never_work_is_retried_at_the_cap_not_hammered() {
    let mut env = Env::new("chatty");
    let h = crate::util::Sshd::start_configured(
        env.dir.path(),
        &[&env.key],
        None,
        "ForceCommand echo 'Welcome to the host!'; eval \"$SSH_ORIGINAL_COMMAND\"\n",
    );
    env.add_host(&h, Auth::Key);
    env.src("site/a.txt", "1");
    let r = env.remote("h");
    env.map(&h.addr, json!([{"src": "site/", "dest": r.join("www")}]));
    let daemon = env.watch();
    wait_until(LANDS, "the host's error line", || {
        error_lines(&daemon.error_log(), "login shell print") > 0
    });
    let logins = || h.log().matches("Accepted publickey").count();
    // With a 1 s first retry doubling, 5 s would see two or three more logins.
    stays_the_same(Duration::from_secs(5), logins);
    assert_eq!(
        error_lines(&daemon.error_log(), &h.addr),
        1,
        "{}",
        daemon.dump()
    );
    let (_, rows, dump) = status_json(&env);
    assert_eq!(state_of(&rows, &h.addr).0, "down", "{dump}");
    assert!(!r.join("www/a.txt").exists());
}

/// Under watch, on a host without perl (served over its shell): a batch cut off
/// with the connection leaves its temporary, and the next connect removes it
/// (only this client's, of a session that is over) while the file lands.
#[test]
fn watch_removes_a_cut_sessions_temporary_at_the_next_connect() {
    use crate::util::{Fault, Proxy};
    let mut env = Env::new("watch-cut");
    let mut h = env.sshd();
    without_perl(&env, &mut h);
    // A fault holds for the connections accepted while it is set: every session
    // is cut after 2 MiB up, enough for the first reconcile, not for big.bin.
    let proxy = Proxy::start(&h.addr, h.port, Fault::CutAfter(2 << 20));
    env.add_host_raw(json!({"ip_address": proxy.addr, "port": proxy.port, "user": crate::util::test_user(), "identity_file": env.key.private}));
    env.trust(h.known_hosts_line_as(&proxy.addr, proxy.port));
    env.ini(RETRY_3S);
    let r = env.remote("h");
    // Another client's temporary (its name says so): never touched.
    let foreign_tmp = r.join(".hostsync-tmp.0badc0de.0123456789abcdef.1");
    std::fs::write(&foreign_tmp, "someone else's").unwrap();
    env.src("site/small.txt", "a");
    env.map(&proxy.addr, json!([{"src": "site/", "dest": r}]));
    let daemon = env.watch();
    wait_until(LANDS, "initial reconcile", || {
        read(&r.join("small.txt")) == "a"
    });
    let big: Vec<u8> = (0..24u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(env.cfg().join("site/big.bin"), &big).unwrap();
    let ours = || {
        temporaries(&r)
            .into_iter()
            .filter(|t| !t.ends_with(".0badc0de.0123456789abcdef.1"))
            .count()
    };
    wait_until(LANDS, "a cut session's temporary", || {
        ours() > 0 && error_lines(&daemon.error_log(), "host down") > 0
    });
    proxy.set_fault(Fault::None);
    let landed = || std::fs::read(r.join("big.bin")).is_ok_and(|b| b == big);
    wait_until(LANDS, "the big file lands", landed);
    wait_until(LANDS, "the cut sessions' temporaries are gone", || {
        ours() == 0
    });
    assert!(foreign_tmp.exists(), "{}", daemon.dump());
}

/// Restarts `h` so that remote commands get a PATH of every command in /usr/bin
/// and /bin but perl: the host is served over its shell, as one without perl.
fn without_perl(env: &Env, h: &mut crate::util::Sshd) {
    let bin = env.dir.mkdir("no-perl-bin");
    for dir in ["/usr/bin", "/bin"] {
        for entry in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
            let name = entry.file_name();
            let link = bin.join(&name);
            if !name.as_bytes().starts_with(b"perl") && !link.exists() {
                std::os::unix::fs::symlink(entry.path(), link).unwrap();
            }
        }
    }
    h.restart_with_config(&format!("SetEnv PATH={}", bin.display()));
}

/// Three daemons in a full mesh (SimpleFileSync's example): nodes a, b and c
/// each run `watch` with their own config, mapping their copy of one file to the
/// other two (through three sshd on loopback). Each appends a line in turn; all
/// three end with the same three lines, and the transfers stop.
#[test]
fn three_daemons_in_a_full_mesh_agree_and_settle() {
    let mut env = Env::new("mesh");
    let nodes: Vec<crate::util::Sshd> = (0..3).map(|_| env.sshd()).collect();
    for h in &nodes {
        env.add_host(h, Auth::Key);
    }
    let names = ["a", "b", "c"];
    let files: Vec<PathBuf> = names.iter().map(|n| env.remote(n).join("f")).collect();
    for f in &files {
        std::fs::write(f, "").unwrap();
        let t = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        std::fs::File::options()
            .write(true)
            .open(f)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }
    env.dir.chown_to_test_user("remote");
    env.write_config();
    let hosts: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(env.cfg().join("connection_info.json")).unwrap())
            .unwrap();
    let mut daemons = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let cfg = env.dir.join(format!("node-{name}"));
        std::fs::create_dir_all(cfg.join("mappings")).unwrap();
        for f in ["config.ini", "known_hosts"] {
            std::fs::copy(env.cfg().join(f), cfg.join(f)).unwrap();
        }
        let others: Vec<&serde_json::Value> =
            (0..3).filter(|&j| j != i).map(|j| &hosts[j]).collect();
        std::fs::write(
            cfg.join("connection_info.json"),
            serde_json::to_vec(&others).unwrap(),
        )
        .unwrap();
        for j in (0..3).filter(|&j| j != i) {
            let mapping = json!([{"src": files[i], "dest": files[j]}]);
            std::fs::write(
                cfg.join(format!("mappings/{}.json", nodes[j].addr)),
                mapping.to_string(),
            )
            .unwrap();
        }
        daemons.push(crate::util::hostsync::start_daemon(&cfg, env.dir.path()));
    }
    let sends = || -> usize {
        daemons
            .iter()
            .map(|d| {
                d.info_log()
                    .lines()
                    .filter(|l| l.contains(": sent "))
                    .count()
            })
            .sum()
    };
    let dumps = || {
        daemons
            .iter()
            .map(|d| d.dump())
            .collect::<Vec<_>>()
            .join("\n")
    };
    // Each start-up reconcile pushes that node's copy to the others (local is
    // the truth at start), so the lines are appended once all three settled.
    let cfgs: Vec<PathBuf> = names
        .iter()
        .map(|n| env.dir.join(format!("node-{n}")))
        .collect();
    wait_until(LANDS, "every node's start-up reconcile is done", || {
        cfgs.iter().all(|cfg| {
            let run = crate::util::hostsync::run_in(cfg, env.dir.path(), &["status", "--json"]);
            run.code == 0 && run.stdout.matches("\"state\":\"ok\"").count() == 2
        })
    });
    let settled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        settles(Duration::from_secs(2), LANDS, sends)
    }));
    let at_start = settled.unwrap_or_else(|_| panic!("{}", dumps()));
    let mut want = String::new();
    for (i, name) in names.iter().enumerate() {
        let line = format!("line from {name}\n");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&files[i])
            .unwrap();
        std::io::Write::write_all(&mut f, line.as_bytes()).unwrap();
        drop(f);
        want.push_str(&line);
        // Every node has it, and the info line of each of the two sends is in.
        wait_until(LANDS, &format!("{name}'s line on every node"), || {
            files.iter().all(|f| read(f) == want) && sends() >= at_start + 2 * (i + 1)
        });
        // Transfers stop: none over several debounce and retry periods (an echo
        // that crossed the change may still land first; the total below bounds them).
        let settled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            settles(Duration::from_secs(3), LANDS, sends)
        }));
        settled.unwrap_or_else(|_| panic!("{}", dumps()));
    }
    for f in &files {
        assert_eq!(
            read(f),
            "line from a\nline from b\nline from c\n",
            "{}",
            dumps()
        );
    }
    // Each line crossed to the two other nodes, and at most once more each way.
    let total = sends() - at_start;
    assert!((6..=12).contains(&total), "{total} sends\n{}", dumps());
    for d in &daemons {
        assert!(d.error_log().is_empty(), "{}", dumps());
    }
}

/// The same for a big file sent as a delta (issue 19): the remote rebuilds it
/// into the temporary from its old copy, and that fills the disk.
#[test]
fn a_full_disk_during_a_delta_leaves_no_temporary() {
    if !root_or_skip("mount a small tmpfs as the destination") {
        return;
    }
    for way in ["agent", "tar"] {
        let mut env = Env::new(&format!("full-delta-{way}"));
        let h = env.sshd();
        env.add_host(&h, Auth::Key);
        let r = env.remote("h");
        let fs = Tmpfs::mount(&r.join("small"), "8m");
        let body = |n: usize| -> Vec<u8> { (0..n).map(|i| (i * 7 % 251) as u8).collect() };
        // The old copy shares most of the new one, so it goes as a delta.
        std::fs::write(fs.path.join("big.bin"), body(3 << 20)).unwrap();
        std::fs::write(fs.path.join("filler"), vec![0u8; 3 << 20]).unwrap();
        env.src("big.bin", body(4 << 20));
        env.map(
            &h.addr,
            json!([{"src": "big.bin", "dest": fs.path.join("big.bin")}]),
        );
        let run = env.run_way(&["-v", "sync"], way);
        run.expect(1);
        let info = env.info_log();
        assert!(info.contains("the delta failed"), "{way}: {}", run.dump());
        assert!(
            std::fs::read(fs.path.join("big.bin")).unwrap() == body(3 << 20),
            "{way}"
        );
        assert_eq!(
            temporaries(&fs.path),
            Vec::<String>::new(),
            "{way}: {}",
            run.dump()
        );
    }
}
