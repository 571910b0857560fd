//! Issue 16's watch latency: a `watch` session keeps one running agent for all its
//! rounds, so a watched change starts no remote process; a kept agent that died is
//! replaced on the same session and the change still arrives. Proved from the
//! sshd's VERBOSE log (one `Starting session:` line per exec) and its process tree.
//! A small changed file goes with its listing (the round's plan has nothing left
//! to send), is left alone where the remote already holds it, and is refused with
//! the usual one line, and retried, where the comparison refuses it.
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
    // lock and temporaries are gone between rounds. The agent releases them when
    // it reads the end of the batch, which the client no longer waits for, so
    // this polls (with the deadline) instead of looking once.
    wait("the last round to end", &h, &daemon, || {
        let log = daemon.info_log();
        log.matches("the agent is kept for the next batch").count()
            >= log.matches(": sent ").count()
    });
    wait("no lock or temporary between rounds", &h, &daemon, || {
        crate::util::dir::temporaries(&dest).is_empty()
    });
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

/// How often the info log says a file named `name` was sent.
fn sent(daemon: &Daemon, name: &str) -> usize {
    (daemon.info_log().lines())
        .filter(|l| l.contains(": sent ") && l.contains(&format!("/{name} (")))
        .count()
}

/// Issue 16: a small watched change goes with its listing, one round trip: once
/// the round reported it sent, no plan of that round had anything left to send
/// (no `item(s) under` line), and nothing was left behind.
#[test]
fn a_small_change_goes_with_its_listing() {
    let (env, h, daemon, dest) = started("agent-ahead");
    let site = env.cfg().join("site");
    let planned = |d: &Daemon| d.info_log().matches("item(s) under").count();
    for (i, body) in ["v2", "v3 longer", "v4"].iter().enumerate() {
        let before = planned(&daemon);
        change(&site.join("f.txt"), &dest.join("f.txt"), body, &h, &daemon);
        wait("the round's sent line", &h, &daemon, || {
            sent(&daemon, "f.txt") >= 3 + i
        });
        assert_eq!(
            planned(&daemon),
            before,
            "{body:?} went the two-round-trip way\n{}",
            daemon.dump()
        );
    }
    wait("no lock or temporary", &h, &daemon, || {
        crate::util::dir::temporaries(&dest).is_empty()
    });
    assert!(daemon.error_log().is_empty(), "{}", daemon.dump());
}

/// Issue 16, two-way: a remote copy that already holds the new content (another
/// daemon delivered it) is left as it is: not rewritten (same mtime), not
/// reported sent.
#[test]
fn a_change_the_remote_already_holds_is_left_alone() {
    let (env, h, daemon, dest) = started("agent-ahead-same");
    let site = env.cfg().join("site");
    std::fs::write(dest.join("g.txt"), "same body").unwrap();
    crate::util::dir::set_mtime(&dest.join("g.txt"), 1_600_000_000, 5);
    std::fs::write(site.join("g.txt"), "same body").unwrap();
    wait("the round to defer it", &h, &daemon, || {
        daemon.info_log().contains("g.txt not placed ahead: same")
    });
    // A later change proves the round ended; the first one still sent nothing.
    change(
        &site.join("f.txt"),
        &dest.join("f.txt"),
        "later",
        &h,
        &daemon,
    );
    wait("the later round's sent line", &h, &daemon, || {
        sent(&daemon, "f.txt") >= 3
    });
    let md = std::fs::metadata(dest.join("g.txt")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (md.mtime(), md.mtime_nsec()),
        (1_600_000_000, 5),
        "rewritten"
    );
    assert_eq!(sent(&daemon, "g.txt"), 0, "{}", daemon.dump());
    assert!(daemon.error_log().is_empty(), "{}", daemon.dump());
}

/// Issue 16 with issue 17: a small change the comparison refuses (the remote
/// path is a directory) is not placed ahead; the refusal is the usual one line,
/// the path stays pending, and it arrives once the directory is gone.
#[test]
fn a_refused_small_change_is_refused_once_and_retried() {
    let (env, h, daemon, dest) = started("agent-ahead-refused");
    let site = env.cfg().join("site");
    std::fs::create_dir(dest.join("d.txt")).unwrap();
    std::fs::write(site.join("d.txt"), "body").unwrap();
    wait("the refusal", &h, &daemon, || {
        daemon
            .error_log()
            .contains("the remote path is a directory")
    });
    assert!(
        daemon
            .info_log()
            .contains("d.txt not placed ahead: not a regular file there"),
        "{}",
        daemon.dump()
    );
    let errors = daemon.error_log();
    let line = errors
        .lines()
        .find(|l| l.contains("the remote path is a directory"))
        .unwrap();
    assert!(line.contains("d.txt"), "{errors}");
    assert!(dest.join("d.txt").is_dir(), "nothing written into it");
    std::fs::remove_dir(dest.join("d.txt")).unwrap();
    wait("the retried change", &h, &daemon, || {
        std::fs::read_to_string(dest.join("d.txt")).is_ok_and(|b| b == "body")
    });
    wait("no lock or temporary", &h, &daemon, || {
        crate::util::dir::temporaries(&dest).is_empty()
    });
}

/// Issue 16: a round whose files all went ahead ends its batch in the same
/// write; when the comparison still finds work (here a parent directory whose
/// mode drifted on the remote), the roots are resolved again in a new batch and
/// that work is done too.
#[test]
fn work_left_after_the_files_went_ahead_is_done_in_a_new_batch() {
    use std::os::unix::fs::PermissionsExt;
    let mut env = Env::new("agent-ahead-reopen");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    env.src("site/sub/x.txt", "x0");
    let site = env.cfg().join("site");
    std::fs::set_permissions(site.join("sub"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let r = env.remote("r");
    env.map(&h.addr, json!([{"src": "site/", "dest": r.join("www")}]));
    let daemon = env.watch_with(&["-v", "watch"]);
    let dest = r.join("www");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    wait("the initial reconcile", &h, &daemon, || {
        std::fs::read_to_string(dest.join("sub/x.txt")).is_ok_and(|b| b == "x0")
    });
    // A first change, so the worker's agent is kept and resumed for the next.
    change(
        &site.join("sub/x.txt"),
        &dest.join("sub/x.txt"),
        "x1",
        &h,
        &daemon,
    );
    assert_eq!(mode(&dest.join("sub")), 0o700);
    std::fs::set_permissions(dest.join("sub"), std::fs::Permissions::from_mode(0o755)).unwrap();
    change(
        &site.join("sub/x.txt"),
        &dest.join("sub/x.txt"),
        "x2",
        &h,
        &daemon,
    );
    wait("the parent's mode set again", &h, &daemon, || {
        mode(&dest.join("sub")) == 0o700
    });
    wait("no lock or temporary", &h, &daemon, || {
        crate::util::dir::temporaries(&dest).is_empty()
    });
    assert!(
        !daemon.info_log().contains("resolved again"),
        "{}",
        daemon.dump()
    );
    assert!(daemon.error_log().is_empty(), "{}", daemon.dump());
}
