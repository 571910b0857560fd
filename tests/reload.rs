//! Issue 17: SIGHUP makes `hostsync watch` read config.ini, connection_info.json
//! and the mappings again, without a restart. Real sshd, real inotify; every wait
//! polls with a deadline.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::hostsync::{Auth, Daemon, Env, run_in};
use crate::util::wait_until;

/// How long a change may take to arrive (far above the real latency).
const ARRIVE: Duration = Duration::from_secs(15);

/// Reads a file, "" when missing.
fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Sends SIGHUP to the daemon.
fn hup(daemon: &Daemon) {
    // SAFETY: plain kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(daemon.pid() as i32, libc::SIGHUP) };
    assert_eq!(rc, 0, "kill -HUP {}", daemon.pid());
}

/// Sends SIGHUP and waits until info.log shows the reload was read (done or refused).
fn reload(daemon: &Daemon) {
    let before = reloads(daemon);
    hup(daemon);
    wait_until(ARRIVE, "the reload to be taken in", || {
        reloads(daemon) > before
    });
}

/// How many reloads the daemon finished or refused so far.
fn reloads(daemon: &Daemon) -> usize {
    let info = daemon.info_log();
    info.lines()
        .filter(|l| l.contains("] reloaded ") || l.contains("configuration not reloaded"))
        .count()
}

/// The hosts `hostsync status --json` shows, polled until they are `want` (the
/// daemon writes status.json at most every 250 ms).
fn status_hosts(env: &Env, daemon: &Daemon, want: &[&str]) {
    let mut last;
    let shown = || {
        let run = env.run(&["status", "--json"]);
        let hosts: Vec<String> = (run.stdout.lines())
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v["host"].as_str().map(str::to_string))
            .collect();
        (hosts, run.dump())
    };
    let deadline = Instant::now() + ARRIVE;
    loop {
        let (hosts, dump) = shown();
        if hosts == want {
            return;
        }
        last = dump;
        assert!(
            Instant::now() < deadline,
            "status to show {want:?}\n{last}\n{}",
            daemon.dump()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Checks for `quiet` that `path` keeps the content `want`.
fn keeps(path: &Path, want: &str, quiet: Duration, daemon: &Daemon) {
    let until = Instant::now() + quiet;
    while Instant::now() < until {
        assert_eq!(read(path), want, "{}\n{}", path.display(), daemon.dump());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A host and its mapping added to the files, then SIGHUP: its files arrive
/// (the full reconcile a start gives it) from a source the daemon did not watch
/// before, later changes there arrive too, and the first host goes on as before.
#[test]
fn sighup_adds_a_host_and_its_mapping_without_a_restart() {
    let mut env = Env::new("reload-add");
    let h1 = env.sshd();
    let h2 = env.sshd();
    env.add_host(&h1, Auth::Key);
    env.src("f.txt", "v0");
    env.src("extra/a.txt", "a0");
    let (r1, r2) = (env.remote("r1"), env.remote("r2"));
    env.map(
        &h1.addr,
        json!([{"src": "f.txt", "dest": r1.join("f.txt")}]),
    );
    let daemon = env.watch();
    wait_until(ARRIVE, "first host's initial reconcile", || {
        read(&r1.join("f.txt")) == "v0"
    });

    env.add_host(&h2, Auth::Key);
    env.map(
        &h2.addr,
        json!([{"src": "extra/", "dest": r2.join("extra")}, {"src": "f.txt", "dest": r2.join("f.txt")}]),
    );
    env.write_config();
    reload(&daemon);
    wait_until(ARRIVE, "the new host's initial reconcile", || {
        read(&r2.join("extra/a.txt")) == "a0" && read(&r2.join("f.txt")) == "v0"
    });
    let info = daemon.info_log();
    assert!(
        info.contains(&format!("added: [{}]; changed: []; removed: []", h2.addr)),
        "{}",
        daemon.dump()
    );
    status_hosts(&env, &daemon, &[h1.addr.as_str(), h2.addr.as_str()]);
    // The new source is watched, and the old one still goes to both hosts.
    std::fs::write(env.cfg().join("extra/b.txt"), "b1").unwrap();
    std::fs::write(env.cfg().join("f.txt"), "v1").unwrap();
    wait_until(ARRIVE, "changes after the reload", || {
        read(&r2.join("extra/b.txt")) == "b1"
            && read(&r2.join("f.txt")) == "v1"
            && read(&r1.join("f.txt")) == "v1"
    });
    assert_eq!(daemon.error_log(), "", "{}", daemon.dump());
}

/// A broken connection_info.json on SIGHUP: error.log has the one line `sync`
/// exits 2 with, and the daemon keeps serving the hosts it had.
#[test]
fn sighup_with_a_broken_hosts_file_keeps_the_old_configuration() {
    let mut env = Env::new("reload-broken");
    let h1 = env.sshd();
    env.add_host(&h1, Auth::Key);
    env.src("f.txt", "v0");
    let r1 = env.remote("r1");
    env.map(
        &h1.addr,
        json!([{"src": "f.txt", "dest": r1.join("f.txt")}]),
    );
    let daemon = env.watch();
    wait_until(ARRIVE, "initial reconcile", || {
        read(&r1.join("f.txt")) == "v0"
    });

    let hosts = env.cfg().join("connection_info.json");
    let good = std::fs::read_to_string(&hosts).unwrap();
    std::fs::write(&hosts, good.replacen('{', "{,", 1)).unwrap();
    let sync = run_in(&env.cfg(), env.dir.path(), &["sync"]);
    sync.expect(2);
    let line = sync.stderr.trim().to_string();
    let message = line
        .strip_prefix("hostsync: ")
        .unwrap_or_else(|| panic!("sync's error line: {}", sync.dump()));
    assert!(message.contains("connection_info.json"), "{}", sync.dump());
    reload(&daemon);
    let refused: Vec<String> = daemon
        .error_log()
        .lines()
        .filter(|l| l.contains("configuration not reloaded"))
        .map(str::to_string)
        .collect();
    assert_eq!(refused.len(), 1, "{}", daemon.dump());
    assert!(
        refused[0].ends_with(message),
        "error.log: {}\nsync said: {message}",
        refused[0]
    );
    std::fs::write(env.cfg().join("f.txt"), "v1").unwrap();
    wait_until(ARRIVE, "the old host is still served", || {
        read(&r1.join("f.txt")) == "v1"
    });
    // Fixed again, a reload works and changes nothing.
    std::fs::write(&hosts, &good).unwrap();
    reload(&daemon);
    assert!(
        daemon
            .info_log()
            .contains("added: []; changed: []; removed: []"),
        "{}",
        daemon.dump()
    );
}

/// A host taken out of connection_info.json (and its mapping file removed),
/// then SIGHUP: it gets no more pushes, the others do, and info.log says so.
#[test]
fn sighup_after_removing_a_host_stops_pushes_to_it() {
    let mut env = Env::new("reload-remove");
    let h1 = env.sshd();
    let h2 = env.sshd();
    env.add_host(&h1, Auth::Key);
    env.add_host(&h2, Auth::Key);
    env.src("f.txt", "v0");
    let (r1, r2) = (env.remote("r1"), env.remote("r2"));
    env.map(
        &h1.addr,
        json!([{"src": "f.txt", "dest": r1.join("f.txt")}]),
    );
    env.map(
        &h2.addr,
        json!([{"src": "f.txt", "dest": r2.join("f.txt")}]),
    );
    let daemon = env.watch();
    wait_until(ARRIVE, "initial reconcile", || {
        read(&r1.join("f.txt")) == "v0" && read(&r2.join("f.txt")) == "v0"
    });

    let hosts = env.cfg().join("connection_info.json");
    let mut entries: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&hosts).unwrap()).unwrap();
    entries.retain(|e| e["ip_address"] != h2.addr.as_str());
    std::fs::write(&hosts, serde_json::to_vec_pretty(&entries).unwrap()).unwrap();
    std::fs::remove_file(env.cfg().join(format!("mappings/{}.json", h2.addr))).unwrap();
    reload(&daemon);
    let info = daemon.info_log();
    assert!(
        info.contains(&format!("added: []; changed: []; removed: [{}]", h2.addr))
            && info.contains(&format!("{}: removed from the configuration", h2.addr)),
        "{}",
        daemon.dump()
    );
    status_hosts(&env, &daemon, &[h1.addr.as_str()]);
    for v in ["v1", "v2"] {
        std::fs::write(env.cfg().join("f.txt"), v).unwrap();
        wait_until(ARRIVE, "the remaining host is served", || {
            read(&r1.join("f.txt")) == v
        });
    }
    keeps(&r2.join("f.txt"), "v0", Duration::from_secs(1), &daemon);
    assert_eq!(daemon.error_log(), "", "{}", daemon.dump());
}

/// A host that is down keeps its pending change through a reload that adds
/// another host: when it is back, the change arrives without a new edit (an
/// unchanged host gets no full reconcile from a reload, so only the kept
/// pending work can bring it).
#[test]
fn sighup_keeps_the_pending_work_of_an_unchanged_host() {
    let mut env = Env::new("reload-pending");
    let mut h1 = env.sshd();
    let h2 = env.sshd();
    env.add_host(&h1, Auth::Key);
    env.ini("[sync]\nretry_max_s = 1\n");
    env.src("f.txt", "v0");
    let (r1, r2) = (env.remote("r1"), env.remote("r2"));
    env.map(
        &h1.addr,
        json!([{"src": "f.txt", "dest": r1.join("f.txt")}]),
    );
    let daemon = env.watch();
    wait_until(ARRIVE, "initial reconcile", || {
        read(&r1.join("f.txt")) == "v0"
    });
    h1.stop();
    std::fs::write(env.cfg().join("f.txt"), "v1").unwrap();
    wait_until(ARRIVE, "the host is down", || {
        daemon
            .error_log()
            .contains(&format!("{}: host down", h1.addr))
    });

    env.add_host(&h2, Auth::Key);
    env.map(
        &h2.addr,
        json!([{"src": "f.txt", "dest": r2.join("f.txt")}]),
    );
    env.write_config();
    reload(&daemon);
    wait_until(ARRIVE, "the new host's initial reconcile", || {
        read(&r2.join("f.txt")) == "v1"
    });
    assert!(
        daemon
            .info_log()
            .contains(&format!("added: [{}]; changed: []; removed: []", h2.addr)),
        "{}",
        daemon.dump()
    );
    h1.restart();
    wait_until(ARRIVE, "the kept change after the host is back", || {
        read(&r1.join("f.txt")) == "v1"
    });
}

/// A host whose mapping file changed gets the full reconcile a start gives:
/// its new destination fills without a local edit.
#[test]
fn sighup_after_a_mapping_changed_reconciles_that_host() {
    let mut env = Env::new("reload-changed");
    let h1 = env.sshd();
    env.add_host(&h1, Auth::Key);
    env.src("f.txt", "v0");
    let r1 = env.remote("r1");
    env.map(
        &h1.addr,
        json!([{"src": "f.txt", "dest": r1.join("a.txt")}]),
    );
    let daemon = env.watch();
    wait_until(ARRIVE, "initial reconcile", || {
        read(&r1.join("a.txt")) == "v0"
    });
    env.map(
        &h1.addr,
        json!([{"src": "f.txt", "dest": r1.join("b.txt")}]),
    );
    reload(&daemon);
    wait_until(ARRIVE, "the new destination", || {
        read(&r1.join("b.txt")) == "v0"
    });
    assert!(
        daemon
            .info_log()
            .contains(&format!("added: []; changed: [{}]; removed: []", h1.addr)),
        "{}",
        daemon.dump()
    );
    std::fs::write(env.cfg().join("f.txt"), "v1").unwrap();
    wait_until(ARRIVE, "a later change goes to the new destination", || {
        read(&r1.join("b.txt")) == "v1"
    });
    assert_eq!(read(&r1.join("a.txt")), "v0", "{}", daemon.dump());
}
