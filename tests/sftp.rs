//! Issue 16's sftp tier against real servers, beyond the matrix of
//! `tests/tier.rs` (which runs every case of the issue's test list on the
//! SFTP-only account and with each tier forced on plain OpenSSH): post_sync on an
//! SFTP-only host fails its mapping; a destination others can write is refused in
//! one line; a host with no shell and no SFTP subsystem fails `check` and `sync`;
//! a watch change's latency (printed for BENCHMARKS.md); `check` tells an
//! unwritable destination; SIGTERM mid-upload leaves no temporary. The SFTP-only
//! account is `hostsync-sftp` from `util::foreign` (`ForceCommand internal-sftp`).
//!
//! Cases and helpers grew out of the `foreign` branch's draft (tests/foreign.rs).

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::json;

use crate::util::hostsync::{Auth, Env};
use crate::util::tier::{ARRIVE, Target, World, read};
use crate::util::{Fault, wait_until};

/// One test per target for a case.
macro_rules! cases {
    ($case:ident { $( $name:ident: $target:ident; )* }) => {
        $(
            #[test]
            fn $name() {
                $case(Target::$target)
            }
        )*
    };
}

/// post_sync needs a shell: on the SFTP-only account a mapping with it fails, in
/// one line naming why, and nothing of it is sent; the mapping without it is
/// served. See: issue 16.
#[test]
fn post_sync_on_sftp_only_fails_its_mapping() {
    let w = World::new(Target::SftpOnly, "sftp-post");
    let r = w.remote("r");
    w.src("a/f.txt", "a", 0o644);
    w.src("b/g.txt", "b", 0o644);
    w.env.map(
        &w.addr,
        json!([
            {"src": "a/", "dest": r.join("a"), "post_sync": ["touch ran"]},
            {"src": "b/", "dest": r.join("b")},
        ]),
    );
    let run = w.run(&["sync"]);
    run.expect(1);
    let why = || w.dump(&run);
    assert_eq!(read(&r.join("b/g.txt")), "b", "{}", why());
    assert!(!r.join("a/f.txt").exists(), "{}", why());
    let errors = w.env.error_log();
    let lines: Vec<&str> = errors.lines().collect();
    assert!(
        lines.len() == 1
            && lines[0].contains("post_sync needs a shell")
            && lines[0].contains("serves only SFTP"),
        "{}",
        why()
    );
}

/// A destination that other users can write is refused with one line over
/// SFTP (it acts on paths, never relative to a checked folder: issue 13), on
/// the SFTP-only account and with `transfer = sftp`; nothing is written there,
/// `check` fails it with the same reason, and another mapping is served.
fn open_dest_refused(t: Target) {
    let w = World::new(t, "sftp-open");
    let r = w.remote("r");
    let open = r.join("open");
    std::fs::create_dir(&open).unwrap();
    w.own(&open);
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    w.src("site/f.txt", "f", 0o644);
    w.env.map(
        &w.addr,
        json!([
            {"src": "site/", "dest": open},
            {"src": "site/", "dest": r.join("safe")},
        ]),
    );
    let run = w.run(&["sync"]);
    run.expect(1);
    let why = || w.dump(&run);
    assert!(!open.join("f.txt").exists(), "{}", why());
    assert_eq!(read(&r.join("safe/f.txt")), "f", "{}", why());
    let errors = w.env.error_log();
    let lines: Vec<&str> = errors.lines().collect();
    assert!(
        lines.len() == 1 && lines[0].contains("other users can write"),
        "{}",
        why()
    );
    let check = w.run(&["check"]);
    check.expect(1);
    assert!(
        check.stdout.contains("other users can write there"),
        "{}",
        w.dump(&check)
    );
}

cases!(open_dest_refused {
    sftp_only_open_dest_is_refused_in_one_line: SftpOnly;
    forced_sftp_open_dest_is_refused_in_one_line: Sftp;
});

/// A host that runs no command and has no SFTP subsystem (every request runs
/// `ForceCommand /bin/false`): `check` fails it and `sync` fails it, each with
/// one line saying there is no shell and no SFTP subsystem.
#[test]
fn no_shell_and_no_sftp_fails_check_and_sync_in_one_line() {
    let mut env = Env::new("sftp-none");
    let mut h = env.sshd();
    h.restart_with_config("ForceCommand /bin/false");
    env.add_host(&h, Auth::Key);
    let r = env.remote("r");
    env.src("f.txt", "f");
    env.map(&h.addr, json!([{"src": "f.txt", "dest": r.join("f.txt")}]));
    let check = env.run(&["check"]);
    check.expect(1);
    assert!(
        check.stdout.contains("no shell and no SFTP subsystem"),
        "{}",
        check.dump()
    );
    let sync = env.run(&["sync"]);
    sync.expect(1);
    let errors = env.error_log();
    let lines: Vec<&str> = errors
        .lines()
        .filter(|l| l.contains("no shell and no SFTP subsystem"))
        .collect();
    assert_eq!(
        lines.len(),
        2,
        "one for check, one for sync\n{}",
        sync.dump()
    );
    assert!(!r.join("f.txt").exists());
}

/// What one watched change costs: 20 changes of a 10-byte file, each from the
/// write to the new content at the destination (polled every 0.2 ms). On the
/// SFTP-only account the session's SFTP channel stays open (no remote process
/// per change); with `transfer = gnu`, for comparison, each change is one agent
/// exec. Every change must arrive; the medians are printed for BENCHMARKS.md
/// (`-- --nocapture --test-threads 1`). See: issue 16, "Watch latency".
fn watch_latency(t: Target) {
    let w = World::new(t, "sftp-lat");
    let r = w.remote("r");
    let f = w.src("site/f.txt", "start-0000", 0o644);
    w.env
        .map(&w.addr, json!([{"src": "site/", "dest": r.join("www")}]));
    let daemon = w.env.watch();
    let dest = r.join("www/f.txt");
    wait_until(ARRIVE, "the initial reconcile", || {
        read(&dest) == "start-0000"
    });
    let mut took = Vec::new();
    for i in 0..20 {
        let body = format!("change-{i:03}");
        let start = std::time::Instant::now();
        std::fs::write(&f, &body).unwrap();
        while read(&dest) != body {
            assert!(
                start.elapsed() < ARRIVE,
                "change {i} did not arrive\n{}",
                w.dump_daemon(&daemon)
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        took.push(start.elapsed());
    }
    took.sort();
    eprintln!(
        "{t:?} watch, write to arrival: p50 {:.2} ms, p90 {:.2} ms",
        took[10].as_secs_f64() * 1e3,
        took[18].as_secs_f64() * 1e3
    );
    assert!(daemon.error_log().is_empty(), "{}", w.dump_daemon(&daemon));
}

cases!(watch_latency {
    sftp_only_watch_change_arrives_and_its_latency_is_printed: SftpOnly;
    forced_gnu_watch_change_arrives_and_its_latency_is_printed: Gnu;
});

/// `check` over SFTP tells a destination the login cannot write (nor make) from
/// one it can, as the shell's probe does: a dest below a folder root owns fails
/// with the reason, `sync` fails it too, and the writable one is counted.
#[test]
fn sftp_only_check_tells_an_unwritable_dest() {
    let w = World::new(Target::SftpOnly, "sftp-ro");
    let r = w.remote("r");
    let locked = r.join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    w.src("site/f.txt", "f", 0o644);
    w.env.map(
        &w.addr,
        json!([
            {"src": "site/", "dest": locked.join("www")},
            {"src": "site/", "dest": r.join("ok")},
        ]),
    );
    let check = w.run(&["check", "--json"]);
    check.expect(1);
    let row = w.check_object(&check);
    let problems = row["problems"].to_string();
    assert!(
        row["writable"] == 1
            && row["tier"] == "sftp"
            && problems.contains("permission denied on the remote")
            && problems.contains(&locked.display().to_string()),
        "{}",
        w.dump(&check)
    );
    let sync = w.run(&["sync"]);
    sync.expect(1);
    assert_eq!(read(&r.join("ok/f.txt")), "f", "{}", w.dump(&sync));
    assert!(!locked.join("www").exists(), "{}", w.dump(&sync));
}

/// SIGTERM while a large file is in flight over SFTP: the upload stops between
/// two chunks, the daemon exits 0 within 5 s, the temporary is removed and the
/// destination never appears. The host is behind a proxy that passes 1 MiB/s,
/// so the 64 MiB file is surely still in flight when the signal comes.
#[test]
fn sftp_only_sigterm_mid_upload_exits_cleanly_without_temporaries() {
    let (w, _proxy) = World::behind_proxy(
        Target::SftpOnly,
        "sftp-term",
        Fault::Slow {
            bytes_per_sec: 1 << 20,
        },
    );
    let big: Vec<u8> = (0..64u32 << 20).map(|i| (i % 251) as u8).collect();
    w.env.src("big.bin", &big);
    let r = w.remote("r");
    w.env.map(
        &w.addr,
        json!([{"src": "big.bin", "dest": r.join("big.bin")}]),
    );
    let mut daemon = w.env.watch();
    let sizes = || {
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
    wait_until(ARRIVE, "upload in flight", || {
        sizes().iter().any(|&n| n > 256 << 10)
    });
    let (code, took) = daemon.terminate();
    let why = || w.dump_daemon(&daemon);
    assert_eq!(code, Some(0), "{}", why());
    assert!(
        took < Duration::from_secs(5),
        "exit took {took:?}\n{}",
        why()
    );
    wait_until(Duration::from_secs(3), "no temporary left", || {
        sizes().is_empty()
    });
    assert!(!r.join("big.bin").exists(), "{}", why());
}
