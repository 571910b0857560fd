//! Issue 16's watch latency: a `watch` session keeps one running agent for all its
//! rounds, so a watched change starts no remote process; a kept agent that died is
//! replaced on the same session and the change still arrives. Proved from the
//! sshd's VERBOSE log (one `Starting session:` line per exec) and its process tree.
//! Every wait polls with a deadline.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::hostsync::{Auth, Daemon, Env};
use crate::util::sshd::Sshd;

/// How long a change may take to arrive (far above the real latency).
const ARRIVE: Duration = Duration::from_secs(15);

/// Execs (and subsystems) the server started so far.
fn sessions(h: &Sshd) -> usize {
    h.log().matches("Starting session:").count()
}

/// Logins the server accepted so far.
fn logins(h: &Sshd) -> usize {
    h.log().matches("Accepted publickey").count()
}

/// Polls until `cond` holds, or fails with the daemon's output and the server log.
fn wait(what: &str, h: &Sshd, daemon: &Daemon, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + ARRIVE;
    while !cond() {
        assert!(
            Instant::now() < until,
            "{what}: not within {ARRIVE:?}\n--- daemon ---\n{}\n--- sshd log ---\n{}",
            daemon.dump(),
            h.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `body` to `src`, then waits for it at `dest`.
fn change(src: &Path, dest: &Path, body: &str, h: &Sshd, daemon: &Daemon) {
    std::fs::write(src, body).unwrap();
    wait(
        &format!("{body:?} at {}", dest.display()),
        h,
        daemon,
        || std::fs::read_to_string(dest).is_ok_and(|b| b == body),
    );
}

/// One watched host, a tree mapped, and the daemon, after the initial reconcile
/// and a first change (so the worker's session and agent exist).
fn started(name: &str) -> (Env, Sshd, Daemon, std::path::PathBuf) {
    let mut env = Env::new(name);
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    env.src("site/f.txt", "v0");
    let r = env.remote("r");
    env.map(&h.addr, json!([{"src": "site/", "dest": r.join("www")}]));
    let daemon = env.watch_with(&["-v", "watch"]);
    let dest = r.join("www");
    wait("the initial reconcile", &h, &daemon, || {
        std::fs::read_to_string(dest.join("f.txt")).is_ok_and(|b| b == "v0")
    });
    let site = env.cfg().join("site");
    change(&site.join("f.txt"), &dest.join("f.txt"), "v1", &h, &daemon);
    // The kept agent alone runs perl (the reconcile's, if it had its own, ended).
    wait("one running agent", &h, &daemon, || {
        h.perl_sessions().len() == 1
    });
    (env, h, daemon, dest)
}

/// N watched changes after the first start no remote process: the sshd logs no
/// new session, one agent runs throughout, and every change arrives.
#[test]
fn watched_changes_reuse_one_agent_per_session() {
    let (env, h, daemon, dest) = started("agent-kept");
    let site = env.cfg().join("site");
    let (before, agent) = (sessions(&h), h.perl_sessions());
    for i in 2..8 {
        let name = format!("n{}.txt", i % 3);
        change(
            &site.join(&name),
            &dest.join(&name),
            &format!("v{i}"),
            &h,
            &daemon,
        );
    }
    assert_eq!(
        sessions(&h),
        before,
        "6 watched changes started remote processes\n--- daemon ---\n{}\n--- sshd log ---\n{}",
        daemon.dump(),
        h.log()
    );
    assert_eq!(h.perl_sessions(), agent, "the agent was replaced");
    // Every round has ended (the agent kept after each one that sent): the run's
    // lock and temporaries are gone between rounds.
    wait("the last round to end", &h, &daemon, || {
        let log = daemon.info_log();
        log.matches("the agent is kept for the next batch").count()
            >= log.matches(": sent ").count()
    });
    let leftovers: Vec<String> = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".hostsync-tmp."))
        .collect();
    assert!(leftovers.is_empty(), "between rounds: {leftovers:?}");
    assert!(daemon.error_log().is_empty(), "{}", daemon.dump());
}

/// The kept agent killed on the remote between two changes: the next change
/// starts a fresh agent on the same session (one exec, no new login) and arrives,
/// and the one after reuses the fresh agent.
#[test]
fn a_killed_agent_is_replaced_and_the_next_change_arrives() {
    let (env, h, daemon, dest) = started("agent-killed");
    let site = env.cfg().join("site");
    let agent = h.perl_sessions();
    h.kill_session(agent[0]);
    wait("the agent gone", &h, &daemon, || {
        h.perl_sessions().is_empty()
    });
    let (before, logged_in) = (sessions(&h), logins(&h));
    change(
        &site.join("f.txt"),
        &dest.join("f.txt"),
        "after",
        &h,
        &daemon,
    );
    assert_eq!(
        (sessions(&h), logins(&h)),
        (before + 1, logged_in),
        "not one fresh agent on the same session\n--- daemon ---\n{}\n--- sshd log ---\n{}",
        daemon.dump(),
        h.log()
    );
    change(
        &site.join("g.txt"),
        &dest.join("g.txt"),
        "later",
        &h,
        &daemon,
    );
    assert_eq!(sessions(&h), before + 1, "{}", h.log());
    assert!(daemon.error_log().is_empty(), "{}", daemon.dump());
}
