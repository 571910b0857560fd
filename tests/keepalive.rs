//! Issue 17: `[ssh] keepalive_s` finds a dead idle `watch` session before a
//! change needs it. Real sshd whose session processes are frozen (SIGSTOP), so
//! TCP stays up and nothing answers, as on a hung host.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::hostsync::{Auth, Env};
use crate::util::wait_until;

/// Reads a file, "" when missing.
fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// The idle session's sshd processes are frozen with `io_timeout = 120` and
/// `keepalive_s = 2`; a change made 10 s later still arrives within 30 s, so it
/// did not wait for the frozen session's io_timeout. error.log says once that
/// the session stopped answering.
#[test]
fn keepalive_replaces_a_frozen_session_before_a_change_needs_it() {
    let mut env = Env::new("keepalive-frozen");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    env.ini("io_timeout = 120\nkeepalive_s = 2\n");
    env.src("f.txt", "v0");
    let r = env.remote("r");
    env.map(&h.addr, json!([{"src": "f.txt", "dest": r.join("f.txt")}]));
    let daemon = env.watch_with(&["-v", "watch"]);
    wait_until(Duration::from_secs(15), "initial reconcile", || {
        read(&r.join("f.txt")) == "v0"
    });
    // The worker keeps its session open once the round is done: the agent is
    // kept for the next round (issue 16), and every other remote command it
    // started has ended (sshd's VERBOSE log has a line for each).
    let idle = || {
        let log = h.log();
        let started = log.matches("Starting session: ").count();
        daemon
            .info_log()
            .contains("the agent is kept for the next batch")
            && log.matches("Close session: ").count() + 1 == started
    };
    wait_until(Duration::from_secs(15), "the round to finish", idle);
    let frozen = h.freeze_sessions();
    let since = Instant::now();
    // The scenario of the issue: the change comes 10 s after the host hung.
    wait_until(Duration::from_secs(11), "10 s since the freeze", || {
        since.elapsed() >= Duration::from_secs(10)
    });
    std::fs::write(env.cfg().join("f.txt"), "v1").unwrap();
    wait_until(
        Duration::from_secs(30),
        "the change after the freeze",
        || read(&r.join("f.txt")) == "v1",
    );
    assert!(
        frozen.still_frozen(),
        "the old session was resumed, so the test proves nothing\n{}",
        daemon.dump()
    );
    let dead: Vec<String> = daemon
        .error_log()
        .lines()
        .filter(|l| l.contains(&format!("{}: no reply to 3 keepalives", h.addr)))
        .map(str::to_string)
        .collect();
    assert_eq!(dead.len(), 1, "{}", daemon.dump());
    drop(frozen);
}

/// An idle session of a server that answers is probed and kept: no new login,
/// no warning, and a change later goes on the same session.
#[test]
fn keepalive_keeps_a_session_that_answers() {
    let mut env = Env::new("keepalive-alive");
    let mut h = env.sshd();
    // sshd logs each global request at DEBUG1: the probes can be counted.
    h.restart_with_log_level("DEBUG1");
    env.add_host(&h, Auth::Key);
    env.ini("keepalive_s = 1\n");
    env.src("f.txt", "v0");
    let r = env.remote("r");
    env.map(&h.addr, json!([{"src": "f.txt", "dest": r.join("f.txt")}]));
    let daemon = env.watch();
    wait_until(Duration::from_secs(15), "initial reconcile", || {
        read(&r.join("f.txt")) == "v0"
    });
    let logins = || {
        daemon
            .info_log()
            .lines()
            .filter(|l| l.contains(&format!("{}: connected as ", h.addr)))
            .count()
    };
    let before = logins();
    // Probes go out every second and the server answers each one.
    let probes = || h.log().matches("keepalive@openssh.com").count();
    let since = Instant::now();
    wait_until(Duration::from_secs(6), "five keepalive intervals", || {
        since.elapsed() >= Duration::from_secs(5)
    });
    std::fs::write(env.cfg().join("f.txt"), "v1").unwrap();
    wait_until(Duration::from_secs(15), "the change", || {
        read(&r.join("f.txt")) == "v1"
    });
    assert!(probes() >= 3, "{} probe(s)\n{}", probes(), h.log());
    assert_eq!(logins(), before, "{}", daemon.dump());
    assert_eq!(daemon.error_log(), "", "{}", daemon.dump());
}
