//! Issue 14 ("The audit trail tells the truth") against real sshd: removals in
//! the summary and info.log, trailing-slash destinations, hosts without a mapping
//! file, host-key hints that name the configured known_hosts, the systemd steps
//! of the README, narrowed runs (`--host`, `sync PATH...`, `-c DIR`), "did you
//! mean", watch's lines on a terminal, why `sync -v` sends a file, readable bytes
//! and default keys; editor saves under watch (bug 1), two edits within one
//! second on every transfer tier and `--checksum` (bug 4), and dry runs on
//! destinations that cannot be written (bug 5). Every wait polls with a deadline;
//! nothing sleeps a fixed time.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::util::hostsync::{Auth, Env, run_in};
use crate::util::wait_until;

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

/// The command a hint puts in parentheses, from `start` up to `end`.
#[track_caller]
fn hint(line: &str, start: &str, end: &str) -> String {
    let from = line
        .find(start)
        .unwrap_or_else(|| panic!("no {start:?} in {line:?}"));
    let len = line[from..]
        .find(end)
        .unwrap_or_else(|| panic!("no {end:?} after {start:?} in {line:?}"));
    line[from..from + len].to_string()
}

/// Runs `command` with sh from `/`, as an operator pasting it would; panics with
/// its output unless it succeeds.
#[track_caller]
fn paste(command: &str, home: &Path) {
    let out = std::process::Command::new("sh")
        .args(["-c", command])
        .current_dir("/")
        .env("HOME", home)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`{command}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// See: issue 14, bug 7. With `[ssh] known_hosts` set (to a path with a space),
/// the mismatch hint is `ssh-keygen -R '[h]:p' -f FILE` and the unknown-key hint
/// `ssh-keyscan -p P H >> FILE`, FILE absolute and quoted; pasted from another
/// directory as they are, they fix the known_hosts that hostsync reads.
#[test]
fn host_key_hints_name_the_configured_known_hosts() {
    let mut env = Env::new("audit-hints");
    let unknown = env.sshd();
    let changed = env.sshd();
    for h in [&unknown, &changed] {
        env.add_host_raw(json!({"ip_address": h.addr, "port": h.port,
            "user": crate::util::test_user(), "identity_file": env.key.private}));
    }
    env.src("hello.txt", "hello\n");
    // One folder per host: both "hosts" share this machine's disk, and each
    // run clears stale temporaries in the folders it lists.
    let dest = |h: &crate::util::Sshd| env.remote(&h.addr).join("hello.txt");
    for h in [&unknown, &changed] {
        env.map(&h.addr, json!([{"src": "hello.txt", "dest": dest(h)}]));
    }
    env.write_config();
    let ini = std::fs::read_to_string(env.cfg().join("config.ini")).unwrap();
    let ini = ini.replace(
        "known_hosts = known_hosts",
        "known_hosts = trust store/hosts",
    );
    std::fs::write(env.cfg().join("config.ini"), ini).unwrap();
    let file = env.dir.mkdir("cfg/trust store").join("hosts");
    let impostor = crate::util::client_key(env.dir.path(), "ed25519", None);
    let fake: Vec<String> = impostor
        .public_line()
        .split_whitespace()
        .take(2)
        .map(String::from)
        .collect();
    std::fs::write(
        &file,
        format!("[{}]:{} {}\n", changed.addr, changed.port, fake.join(" ")),
    )
    .unwrap();
    let quoted = format!("'{}'", file.display());

    let run = crate::util::hostsync::run_in(&env.cfg(), env.dir.path(), &["sync"]);
    run.expect(1);
    let errors = env.error_log();
    let line_of = |addr: &str| {
        errors
            .lines()
            .find(|l| l.contains(&format!("] {addr}: host key")))
            .unwrap_or_else(|| panic!("no host key line for {addr}\n{}", run.dump()))
            .to_string()
    };
    let mismatch = hint(&line_of(&changed.addr), "ssh-keygen ", ")");
    assert_eq!(
        mismatch,
        format!(
            "ssh-keygen -R '[{}]:{}' -f {quoted}",
            changed.addr, changed.port
        ),
        "{}",
        run.dump()
    );
    let scan = hint(&line_of(&unknown.addr), "ssh-keyscan ", ")");
    assert_eq!(
        scan,
        format!(
            "ssh-keyscan -p {} {} >> {quoted}",
            unknown.port, unknown.addr
        ),
        "{}",
        run.dump()
    );

    // Followed literally: the old line goes, then both hosts' keys are scanned in.
    paste(&mismatch, env.dir.path());
    paste(&scan, env.dir.path());
    let scan_changed = format!(
        "ssh-keyscan -p {} {} >> {quoted}",
        changed.port, changed.addr
    );
    paste(&scan_changed, env.dir.path());
    let run = crate::util::hostsync::run_in(&env.cfg(), env.dir.path(), &["sync"]);
    run.expect(0);
    assert!(dest(&unknown).exists() && dest(&changed).exists());
}

/// See: issue 14, "-c DIR". `-c DIR` reads DIR/config.ini (paths relative to DIR);
/// a DIR without one is exit 2 with one line naming DIR/config.ini.
#[test]
fn config_option_accepts_a_directory() {
    let mut env = Env::new("audit-cdir");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    env.src("f.txt", "data");
    let r = env.remote("r");
    env.map(&h.addr, json!([{"src": "f.txt", "dest": r.join("f.txt")}]));
    env.write_config();
    let top = env.dir.path();
    let run = run_in(top, top, &["-c", "cfg", "sync"]);
    run.expect(0);
    assert_eq!(std::fs::read(r.join("f.txt")).unwrap(), b"data");
    assert!(env.info_log().contains("sync started"), "{}", run.dump());
    let run = run_in(top, top, &["-c", "cfg/", "check"]);
    run.expect(0);
    let run = run_in(top, top, &["-c", "cfg/mappings", "check"]);
    run.expect(2);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.dump());
    assert!(
        run.stderr
            .contains("cfg/mappings/config.ini: config.ini not found"),
        "{}",
        run.dump()
    );
}

/// See: issue 14, bug 3. A file src whose dest ends in `/` lands as
/// `dest/<file name>`, in a new or an existing directory, and the dry run names
/// that path; a dest without `/` that is a directory fails with a hint that
/// never says to remove it, in `sync` and in `check`.
#[test]
fn trailing_slash_dest_puts_a_file_inside_the_directory() {
    let mut env = Env::new("audit-slash");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    env.src("conf/a.txt", "a\n");
    env.src("conf/b.txt", "b\n");
    let r = env.remote("r");
    let existing = env.remote("r/existing");
    let blocker = env.remote("r/blocker");
    let slash = |p: &Path| format!("{}/", p.display());
    env.map(
        &h.addr,
        json!([
            {"src": "conf/a.txt", "dest": slash(&r.join("new"))},
            {"src": "conf/b.txt", "dest": slash(&existing)},
        ]),
    );
    let dry = env.run(&["sync", "--dry-run"]);
    dry.expect(0);
    let mut lines: Vec<&str> = dry.stdout.lines().collect();
    lines.sort();
    let mut want = [
        format!("[+] {} {}/ added", h.addr, r.join("new").display()),
        format!("[+] {} {} added", h.addr, r.join("new/a.txt").display()),
        format!("[+] {} {} added", h.addr, existing.join("b.txt").display()),
    ];
    want.sort();
    assert_eq!(lines, want, "{}", dry.dump());
    assert!(!r.join("new").exists(), "a dry run creates nothing");

    let run = env.run(&["sync"]);
    run.expect(0);
    assert_eq!(std::fs::read(r.join("new/a.txt")).unwrap(), b"a\n");
    assert_eq!(std::fs::read(existing.join("b.txt")).unwrap(), b"b\n");
    assert!(r.join("new").is_dir() && existing.is_dir());
    assert_eq!(env.run(&["sync"]).row(&h.addr), (0, 2, 0, 0, 0));

    // Without the slash, an existing directory is refused, and not "remove it".
    env.map(&h.addr, json!([{"src": "conf/a.txt", "dest": blocker}]));
    let run = env.run(&["sync"]);
    run.expect(1);
    let want = format!(
        "error: {}: {} -> {}: the remote path is a directory; change dest (a dest ending in / puts the file inside that directory)",
        h.addr,
        env.cfg().join("conf/a.txt").display(),
        blocker.display()
    );
    assert!(run.stdout.lines().any(|l| l == want), "{}", run.dump());
    let check = env.run(&["check"]);
    check
        .expect(1)
        .expect_output("is a directory, but src is a file; change dest");
    for out in [&run, &check] {
        assert!(!out.stdout.contains("remove it"), "{}", out.dump());
    }
    assert!(!env.error_log().contains("remove it"), "{}", run.dump());
    assert_eq!(std::fs::read_dir(&blocker).unwrap().count(), 0);
}

/// See: issue 14, bug 6. A host without a mapping file is a row with STATUS
/// `skipped: no mapping file mappings/<ip>.json` (JSON `"status": "skipped"`),
/// with a warning on stderr and in error.log; the exit code stays 0.
#[test]
fn host_without_mapping_file_is_a_skipped_row() {
    let mut env = Env::new("audit-unmapped");
    let bare = env.sshd();
    let mapped = env.sshd();
    env.add_host(&bare, Auth::Key);
    env.add_host(&mapped, Auth::Key);
    env.src("f.txt", "data");
    let r = env.remote("r");
    env.map(
        &mapped.addr,
        json!([{"src": "f.txt", "dest": r.join("f.txt")}]),
    );
    let run = env.run(&["sync"]);
    run.expect(0);
    let why = format!("no mapping file mappings/{}.json", bare.addr);
    assert_eq!(run.row(&bare.addr), (0, 0, 0, 0, 0), "{}", run.dump());
    assert_eq!(
        run.status(&bare.addr),
        format!("skipped: {why}"),
        "{}",
        run.dump()
    );
    assert_eq!(run.status(&mapped.addr), "ok", "{}", run.dump());
    // Rows keep connection_info.json's order.
    let hosts: Vec<&str> = run
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(hosts, [&bare.addr, &mapped.addr], "{}", run.dump());
    let warning = format!("{}: {why}; skipping this host", bare.addr);
    assert!(
        run.stderr
            .contains(&format!("hostsync: warning: {warning}")),
        "{}",
        run.dump()
    );
    assert!(env.error_log().contains(&warning), "{}", run.dump());
    assert!(
        !bare.log().contains("Accepted"),
        "a skipped host is not contacted"
    );

    let run = env.run(&["sync", "--json"]);
    run.expect(0);
    let host_lines: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["type"] == "host")
        .collect();
    assert_eq!(host_lines.len(), 2, "{}", run.dump());
    let bare_line = host_lines
        .iter()
        .find(|v| v["host"] == bare.addr.as_str())
        .unwrap();
    assert_eq!(bare_line["status"], "skipped", "{}", run.dump());
    assert_eq!(bare_line["sent"], 0);
}

/// How long a change may take to arrive in watch tests.
const ARRIVE: Duration = Duration::from_secs(15);

/// See: issue 14, "Narrow a run". `--host IP` (repeatable) on `check` and `watch`
/// as on `sync`: only those hosts are contacted and listed; an unknown one is
/// exit 2 with one line, before anything is contacted.
#[test]
fn host_option_narrows_check_and_watch() {
    let mut env = Env::new("audit-hostopt");
    let a = env.sshd();
    let b = env.sshd();
    let c = env.sshd();
    for h in [&a, &b, &c] {
        env.add_host(h, Auth::Key);
    }
    env.src("site/index.html", "one");
    let dest = |h: &crate::util::Sshd| env.remote(&h.addr).join("www");
    for h in [&a, &b, &c] {
        env.map(&h.addr, json!([{"src": "site/", "dest": dest(h)}]));
    }
    let run = env.run(&["check", "--host", &a.addr, "--host", &c.addr]);
    run.expect(0);
    let hosts: Vec<&str> = run
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(hosts, [&a.addr, &c.addr], "{}", run.dump());
    for args in [
        &["check", "--host", "127.9.9.9"][..],
        &["watch", "--host", "127.9.9.9"],
    ] {
        let run = env.run(args);
        run.expect(2)
            .expect_output("--host 127.9.9.9: no such host in connection_info.json");
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.dump());
    }
    for args in [
        &["check", "--host"][..],
        &["watch", "--bogus"],
        &["watch", "-q", "x"],
    ] {
        env.run(args).expect(2);
    }
    assert!(!b.log().contains("Accepted"), "{}", b.log());

    let mut d = env.watch_with(&["watch", "--host", &a.addr]);
    std::fs::write(env.cfg().join("site/new.html"), "two").unwrap();
    wait_until(ARRIVE, "new.html on the --host", || {
        std::fs::read(dest(&a).join("new.html")).is_ok_and(|c| c == b"two")
    });
    let (code, _) = d.terminate();
    assert_eq!(code, Some(0), "{}", d.dump());
    assert!(!dest(&b).join("index.html").exists(), "{}", d.dump());
    // b was never named, so never contacted; c only by the check.
    assert!(!b.log().contains("Accepted"), "{}", b.log());
    assert!(!dest(&c).join("new.html").exists(), "{}", d.dump());
    // Piped, watch prints no line per push (info.log has them).
    assert!(!d.output().contains(": sent "), "{}", d.dump());
    assert!(d.info_log().contains(": sent "), "{}", d.dump());
}

/// `hostsync ARGS` under script(1), so its stdout is a terminal; killed on drop.
struct OnTty {
    /// script(1), whose child is hostsync.
    script: std::process::Child,
    /// What the terminal showed.
    out: std::path::PathBuf,
}

impl OnTty {
    /// Starts `hostsync ARGS` on a pseudo-terminal of 80 columns in `env`'s config folder.
    fn start(env: &Env, args: &str) -> OnTty {
        env.write_config();
        let out = env
            .dir
            .join(format!("tty-{}.out", crate::util::sshd::random_u64()));
        let cmd = format!(
            "stty cols 80 rows 24; exec {} {args}",
            env!("CARGO_BIN_EXE_hostsync")
        );
        let script = std::process::Command::new("script")
            .args(["-q", "-e", "-c", &cmd, "/dev/null"])
            .current_dir(env.cfg())
            .env("HOME", env.dir.path())
            .env_remove("SSH_AUTH_SOCK")
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("script(1) from util-linux is needed for this test");
        OnTty { script, out }
    }

    /// Everything shown so far, with the terminal's carriage returns.
    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits for `needle` in the output.
    #[track_caller]
    fn wait_for(&self, needle: &str) {
        wait_until(ARRIVE, needle, || self.output().contains(needle));
    }

    /// SIGTERM to hostsync (script's child), then waits for both to exit.
    fn terminate(&mut self) -> Option<i32> {
        let pid = self.script.id();
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for child in children.split_whitespace() {
            // SAFETY: plain kill(2) on a child of our own child.
            unsafe { libc::kill(child.parse().unwrap(), libc::SIGTERM) };
        }
        wait_until(ARRIVE, "hostsync to exit on its terminal", || {
            self.script.try_wait().unwrap().is_some()
        });
        self.script.wait().unwrap().code()
    }
}

impl Drop for OnTty {
    fn drop(&mut self) {
        let _ = self.script.kill();
        let _ = self.script.wait();
        if std::thread::panicking() {
            eprintln!("--- terminal output\n{}---", self.output());
        }
    }
}

/// See: issue 14, "watch on a terminal". On a terminal, `watch` prints one line
/// per push per host (`HOST: sent LOCAL -> REMOTE (...)`, as `sync -v`); with
/// `-q` it prints none; its summary table still ends the run.
#[test]
fn watch_on_a_terminal_prints_a_line_per_push_unless_quiet() {
    let mut env = Env::new("audit-ttywatch");
    let a = env.sshd();
    let b = env.sshd();
    env.add_host(&a, Auth::Key);
    env.add_host(&b, Auth::Key);
    env.src("site/index.html", "one");
    let dest = |h: &crate::util::Sshd| env.remote(&h.addr).join("www");
    for h in [&a, &b] {
        env.map(&h.addr, json!([{"src": "site/", "dest": dest(h)}]));
    }
    let mut tty = OnTty::start(&env, "watch");
    tty.wait_for("hostsync: watching");
    let local = env.cfg().join("site/new.html");
    std::fs::write(&local, "two").unwrap();
    for h in [&a, &b] {
        tty.wait_for(&format!(
            "{}: sent {} -> {} (3 bytes",
            h.addr,
            local.display(),
            dest(h).join("new.html").display()
        ));
    }
    assert_eq!(tty.terminate(), Some(0), "{}", tty.output());
    assert!(
        tty.output().contains("SKIPPED  REMOVED"),
        "{}",
        tty.output()
    );

    let mut quiet = OnTty::start(&env, "watch -q");
    quiet.wait_for("hostsync: watching");
    let local = env.cfg().join("site/quiet.html");
    std::fs::write(&local, "three").unwrap();
    for h in [&a, &b] {
        let remote = dest(h).join("quiet.html");
        wait_until(ARRIVE, "quiet.html everywhere", || remote.exists());
    }
    assert_eq!(quiet.terminate(), Some(0), "{}", quiet.output());
    let shown = quiet.output();
    assert!(!shown.contains(": sent "), "{shown}");
    assert!(shown.contains("SKIPPED  REMOVED"), "{shown}");
}

/// See: issue 14, "Narrow a run". `sync PATH...` pushes only the mappings and
/// files under the given paths, relative paths taken from the current
/// directory: a file (sent, or removed under `"delete": true` when it is gone), a
/// directory (with the remote extras below it removed), a file mapping, a dry
/// run of one; `--host` narrows further. A path no mapping covers is exit 2.
#[test]
fn sync_paths_push_only_what_lies_under_them() {
    let mut env = Env::new("audit-paths");
    let a = env.sshd();
    let b = env.sshd();
    env.add_host(&a, Auth::Key);
    env.add_host(&b, Auth::Key);
    env.src("site/a.html", "a1");
    env.src("site/sub/b.html", "b1");
    env.src("site/sub/same.html", "same");
    env.src("site/sub/old.html", "old");
    env.src("app.conf", "c1");
    let www = |h: &crate::util::Sshd| env.remote(&h.addr).join("www");
    let conf = |h: &crate::util::Sshd| env.remote(&h.addr).join("app.conf");
    for h in [&a, &b] {
        env.map(
            &h.addr,
            json!([
                {"src": "site/", "dest": www(h), "delete": true},
                {"src": "app.conf", "dest": conf(h)},
            ]),
        );
    }
    env.run(&["sync"]).expect(0);
    let read = |p: &Path| String::from_utf8(std::fs::read(p).unwrap()).unwrap();
    // Different sizes, so the whole-mapping comparison sees every change.
    env.src("site/a.html", "a22");
    env.src("site/sub/b.html", "b22");
    env.src("app.conf", "c22");
    std::fs::remove_file(env.cfg().join("site/sub/old.html")).unwrap();
    let site = env.cfg().join("site");
    let top = env.dir.path();

    let run = run_in(&site, top, &["-c", "..", "sync", "a.html"]);
    run.expect(0);
    for h in [&a, &b] {
        assert_eq!(run.row(&h.addr), (1, 0, 0, 0, 3), "{}", run.dump());
        assert_eq!(read(&www(h).join("a.html")), "a22");
        assert_eq!(read(&www(h).join("sub/b.html")), "b1", "{}", run.dump());
        assert_eq!(read(&conf(h)), "c1");
        assert!(www(h).join("sub/old.html").exists());
    }

    let run = run_in(
        &site,
        top,
        &["-c", "..", "sync", "--dry-run", "../app.conf"],
    );
    run.expect(0);
    let want: Vec<String> = [&a, &b]
        .iter()
        .map(|h| format!("[M] {} {} updated", h.addr, conf(h).display()))
        .collect();
    assert_eq!(
        run.stdout.lines().collect::<Vec<_>>(),
        want,
        "{}",
        run.dump()
    );

    let run = run_in(
        &site,
        top,
        &["-c", "..", "sync", "--host", &b.addr, "sub/", "../app.conf"],
    );
    run.expect(0);
    assert!(!run.stdout.contains(&a.addr), "{}", run.dump());
    // b.html and app.conf sent, same.html skipped, old.html removed.
    assert_eq!(run.row(&b.addr), (2, 1, 1, 0, 6), "{}", run.dump());
    assert_eq!(read(&www(&b).join("sub/b.html")), "b22");
    assert_eq!(read(&conf(&b)), "c22");
    assert!(!www(&b).join("sub/old.html").exists(), "{}", run.dump());
    assert!(www(&a).join("sub/old.html").exists(), "a was not named");
    assert_eq!(read(&conf(&a)), "c1");

    std::fs::remove_file(site.join("a.html")).unwrap();
    let run = run_in(&site, top, &["-c", "..", "sync", "./a.html"]);
    run.expect(0)
        .expect_output("hostsync: warning: sync ./a.html: no such file or directory here");
    for h in [&a, &b] {
        assert_eq!(run.row(&h.addr), (0, 0, 1, 0, 0), "{}", run.dump());
        assert!(!www(h).join("a.html").exists());
    }

    for path in ["../nope/x.html", "../site2", "/"] {
        let run = run_in(&site, top, &["-c", "..", "sync", path]);
        if path == "/" {
            // `/` holds every src: the whole sync.
            run.expect(0);
            continue;
        }
        run.expect(2);
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.dump());
        assert!(
            run.stderr.contains(&format!("sync {path}: "))
                && run.stderr.contains("is not inside any mapping's src"),
            "{}",
            run.dump()
        );
    }
    // Not covered among the selected hosts is not covered.
    env.map(&b.addr, json!([{"src": "app.conf", "dest": conf(&b)}]));
    run_in(&site, top, &["-c", "..", "sync", "--host", &b.addr, "sub"]).expect(2);
}

/// Sets a file's mtime to `secs` since the epoch (touch -d @SECS).
fn set_mtime(p: &Path, secs: u64) {
    let out = std::process::Command::new("touch")
        .arg("-d")
        .arg(format!("@{secs}"))
        .arg(p)
        .output()
        .unwrap();
    assert!(out.status.success(), "touch {}: {out:?}", p.display());
}

/// See: issue 14, "sync -v says why". Each plain line of `sync -v` ends in why
/// the file was sent, as rsync -i tells it: new, size, mtime, mode; with -v,
/// info.log's line for the file has the same reason.
#[test]
fn sync_verbose_says_why_each_file_is_sent() {
    use std::os::unix::fs::PermissionsExt;
    let mut env = Env::new("audit-why");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    for name in ["size", "mtime", "mode", "same"] {
        let p = env.src(&format!("site/{name}.txt"), "12345");
        set_mtime(&p, 1_700_000_000);
    }
    let www = env.remote("r").join("www");
    env.map(&h.addr, json!([{"src": "site/", "dest": www}]));
    env.run(&["sync"]).expect(0);
    let site = env.cfg().join("site");
    env.src("site/new.txt", "n");
    std::fs::write(site.join("size.txt"), "1234567").unwrap();
    set_mtime(&site.join("size.txt"), 1_700_000_000);
    set_mtime(&site.join("mtime.txt"), 1_700_000_100);
    std::fs::set_permissions(
        site.join("mode.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();

    let run = env.run(&["-v", "sync"]);
    run.expect(0);
    for (name, bytes, why) in [
        ("new", 1, "new"),
        ("size", 7, "size"),
        ("mtime", 5, "mtime"),
        ("mode", 5, "mode"),
    ] {
        let line = format!(
            "{}: sent {} -> {} ({bytes} bytes; why: {why})",
            h.addr,
            site.join(format!("{name}.txt")).display(),
            www.join(format!("{name}.txt")).display()
        );
        assert!(
            run.stdout.lines().any(|l| l == line),
            "{line}\n{}",
            run.dump()
        );
        // info.log's line for it, with -v, in the same words.
        let logged = format!("INFO  [xfer-0] {line}");
        assert!(env.info_log().contains(&logged), "{logged}\n{}", run.dump());
    }
    assert!(!run.stdout.contains("same.txt"), "{}", run.dump());
    assert_eq!(run.row(&h.addr), (4, 1, 0, 0, 18), "{}", run.dump());
    // Without -v, info.log's line keeps its usual form.
    env.src("site/new.txt", "nn");
    env.run(&["sync"]).expect(0);
    let plain = format!(
        "{}: sent {} -> {} (2 bytes)\n",
        h.addr,
        site.join("new.txt").display(),
        www.join("new.txt").display()
    );
    assert!(
        env.info_log().contains(&plain),
        "{plain}\n{}",
        env.info_log()
    );
}

/// What a terminal shows of `out`: each line and carriage-return segment, ANSI
/// escape sequences removed.
fn screen_lines(out: &str) -> Vec<String> {
    let mut plain = String::new();
    let mut chars = out.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            // Parameters, then one final letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain.split(['\n', '\r']).map(String::from).collect()
}

/// The rows a terminal `width` columns wide shows for `out` (long lines wrap),
/// leaving out blank ones.
fn terminal_rows(out: &str, width: usize) -> Vec<String> {
    let mut rows = Vec::new();
    for line in screen_lines(out) {
        let chars: Vec<char> = line.chars().collect();
        for row in chars.chunks(width) {
            let row: String = row.iter().collect();
            if !row.trim().is_empty() {
                rows.push(row);
            }
        }
    }
    rows
}

/// See: issue 14, "The table reads at a glance". On a terminal of 80 columns the
/// progress bars fit and the table's BYTES read like `586 KiB`; piped output and
/// `--json` keep raw numbers for scripts.
#[test]
fn bytes_read_at_a_glance_on_a_terminal_and_bars_fit_80_columns() {
    let mut env = Env::new("audit-human");
    let hosts: Vec<crate::util::Sshd> = (0..3).map(|_| env.sshd()).collect();
    for h in &hosts {
        env.add_host(h, Auth::Key);
    }
    for i in 0..3 {
        env.src(&format!("site/f{i}.bin"), vec![b'x'; 200_000]);
    }
    for h in &hosts {
        let www = env.remote(&h.addr).join("www");
        env.map(&h.addr, json!([{"src": "site/", "dest": www}]));
    }
    let mut tty = OnTty::start(&env, "sync");
    let code = {
        wait_until(ARRIVE, "sync on a terminal to end", || {
            tty.script.try_wait().unwrap().is_some()
        });
        tty.script.wait().unwrap().code()
    };
    let shown = tty.output();
    assert_eq!(code, Some(0), "{shown}");
    assert!(
        shown.contains("ETA") && shown.contains("3/3 files"),
        "{shown}"
    );
    // indicatif fills each bar line with spaces to the terminal's width instead
    // of ending it; a bar wider than 80 columns would wrap, and the terminal
    // would show a row that does not start with a host.
    for row in terminal_rows(&shown, 80) {
        let starts_right = hosts
            .iter()
            .any(|h| row.starts_with(&format!("{} ", h.addr)))
            || row.starts_with("HOST ");
        assert!(starts_right, "a wrapped line: {row:?}\n{shown}");
    }
    for h in &hosts {
        let row = screen_lines(&shown)
            .into_iter()
            .find(|l| l.starts_with(&format!("{} ", h.addr)) && l.ends_with("  ok"))
            .unwrap_or_else(|| panic!("no table row for {}\n{shown}", h.addr));
        assert!(row.ends_with("  586 KiB  ok"), "{row:?}");
    }

    // Piped: the same table with raw numbers.
    for name in ["f0", "f1", "f2"] {
        env.src(&format!("site/{name}.bin"), vec![b'y'; 200_001]);
    }
    let run = env.run(&["sync"]);
    run.expect(0);
    for h in &hosts {
        assert_eq!(run.row(&h.addr), (3, 0, 0, 0, 600_003), "{}", run.dump());
    }
    env.src("site/f0.bin", vec![b'z'; 200_002]);
    let run = env.run(&["sync", "--json"]);
    run.expect(0);
    let bytes: Vec<u64> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == "host")
        .map(|v| v["bytes"].as_u64().unwrap())
        .collect();
    assert_eq!(bytes, [200_002; 3], "{}", run.dump());
}

/// Copies a client key to `$HOME/.ssh/NAME` (HOME is the test folder), mode 600.
fn install_default_key(env: &Env, key: &crate::util::ClientKey, name: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = env.dir.mkdir(".ssh");
    let dest = dir.join(name);
    std::fs::copy(&key.private, &dest).unwrap();
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600)).unwrap();
    dest
}

/// See: issue 14, "Default keys like ssh". With no identity_file and no agent,
/// `~/.ssh/id_ed25519`, `id_ecdsa` and `id_rsa` (those that exist) are tried in
/// that order, before the password; the final error names each key tried.
#[test]
fn default_keys_are_tried_like_ssh_and_named_when_they_fail() {
    let mut env = Env::new("audit-defkeys");
    let rsa = crate::util::client_key(env.dir.path(), "rsa", None);
    let h = crate::util::Sshd::start(env.dir.path(), &[&rsa]);
    let wrong_ed = crate::util::client_key(env.dir.path(), "ed25519", None);
    let wrong_ec = crate::util::client_key(env.dir.path(), "ecdsa", None);
    let password = crate::util::is_root();
    let mut host = json!({"ip_address": h.addr, "port": h.port, "user": crate::util::test_user()});
    if password {
        // As root the test user has a password; a wrong one comes after the keys.
        host["passkey"] = json!("not-the-Password-1");
    }
    env.add_host_raw(host);
    env.trust(h.known_hosts_line());
    env.src("f.txt", "data");
    let dest = env.remote("r").join("f.txt");
    env.map(&h.addr, json!([{"src": "f.txt", "dest": dest}]));

    let ed = install_default_key(&env, &wrong_ed, "id_ed25519");
    let ec = install_default_key(&env, &wrong_ec, "id_ecdsa");
    let run = env.run(&["sync"]);
    run.expect(1);
    let line = env
        .error_log()
        .lines()
        .find(|l| l.contains("auth failed"))
        .unwrap_or_else(|| panic!("no auth failure\n{}", run.dump()))
        .to_string();
    let tried = line.split_once(": tried ").unwrap().1;
    let methods: Vec<&str> = tried
        .split("), ")
        .map(|m| m.split(' ').next().unwrap())
        .collect();
    let want: &[&str] = if password {
        &["publickey", "publickey", "password"]
    } else {
        &["publickey", "publickey"]
    };
    assert_eq!(methods, want, "{}", run.dump());
    let (at_ed, at_ec) = (
        tried.find(&format!("publickey ({}: ", ed.display())),
        tried.find(&format!("publickey ({}: ", ec.display())),
    );
    assert!(at_ed.is_some() && at_ed < at_ec, "{}", run.dump());
    assert!(!dest.exists());

    // The key the server takes, as ~/.ssh/id_rsa: tried last of the three, it logs in.
    install_default_key(&env, &rsa, "id_rsa");
    let run = env.run(&["sync"]);
    run.expect(0);
    assert_eq!(std::fs::read(&dest).unwrap(), b"data");
    assert!(
        env.info_log().contains("(publickey, host key"),
        "{}",
        run.dump()
    );
    env.run(&["check"]).expect(0).expect_output("publickey");
}

/// The shell block of the README's "Running watch as a service (systemd)".
fn readme_systemd_block() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split_once("### Running watch as a service (systemd)")
        .expect("the README has the systemd section")
        .1;
    let block = section.split_once("```\n").expect("a code block").1;
    block
        .split_once("```")
        .expect("the block ends")
        .0
        .to_string()
}

/// The README's system paths, and where the test puts each under `root`.
fn under_root(line: &str, root: &Path) -> String {
    let mut line = line.replace("target/release/hostsync", env!("CARGO_BIN_EXE_hostsync"));
    for system in [
        "/usr/local/bin/hostsync",
        "/etc/hostsync",
        "/var/lib/hostsync",
        "/var/log/hostsync",
        "/etc/systemd/system",
    ] {
        line = line.replace(system, &format!("{}{system}", root.display()));
    }
    line
}

/// Runs `script` with bash -e as root from the repository; panics with its output
/// unless it succeeds; returns its stdout.
#[track_caller]
fn run_steps(script: &str) -> String {
    let out = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the README steps failed ({})\n--- script\n{script}\n--- stdout\n{stdout}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// See: issue 14, bug 8. The README's systemd steps work when followed as
/// written, as far as a machine without a running systemd allows: as root, the
/// user `hostsync` (made only if missing, under the lock the test user's creation
/// takes), its directories and config go under a scratch root in place of `/`;
/// `check` runs through `runuser` against a loopback sshd; the installed unit,
/// with ExecStart pointed at the built binary, passes `systemd-analyze verify`
/// without a warning; its stop time agrees with the daemon's grace.
#[test]
fn readme_systemd_steps_work_as_written() {
    if !crate::util::root_or_skip("create the system user hostsync and run check through runuser") {
        return;
    }
    let analyze = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output();
    if analyze.is_err() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "systemd-analyze is missing; .ci/run installs the systemd package"
        );
        eprintln!("SKIPPED: systemd-analyze is missing (apt-get install systemd)");
        return;
    }
    let env = Env::new("audit-systemd");
    let h = env.sshd();
    let root = env.dir.mkdir("root");
    // What every Debian system has, which the steps write into.
    for dir in ["usr/local/bin", "etc/systemd/system", "var/lib", "var/log"] {
        env.dir.mkdir(Path::new("root").join(dir));
    }
    let block = readme_systemd_block();
    let (before, step3) = block
        .split_once("\n# 3.")
        .expect("step 3 in the README block");
    let mut steps = String::new();
    for line in before.lines() {
        if line.contains("useradd") {
            // The account is machine-wide and lives on: made once, under the lock that
            // serialises every test process's useradd (two at once would collide).
            steps.push_str(&format!(
                "flock /tmp/hostsync-test-user.lock sh -c '{line}'\n"
            ));
        } else {
            steps.push_str(&under_root(line, &root));
            steps.push('\n');
        }
    }
    run_steps(&steps);

    // What step 2's comments ask for: the hosts, a key, a mapping, known_hosts.
    let home = root.join("var/lib/hostsync");
    let key = home.join(".ssh/id_ed25519");
    std::fs::copy(&env.key.private, &key).unwrap();
    let hosts = root.join("etc/hostsync/connection_info.json");
    std::fs::write(
        &hosts,
        json!([{"ip_address": h.addr, "port": h.port, "user": crate::util::test_user(),
                "identity_file": key}])
        .to_string(),
    )
    .unwrap();
    std::fs::write(home.join("known_hosts"), h.known_hosts_line() + "\n").unwrap();
    let site = env.dir.mkdir("root/srv/site");
    std::fs::write(site.join("index.html"), "hi").unwrap();
    let dest = env.remote("www");
    std::fs::write(
        root.join(format!("etc/hostsync/mappings/{}.json", h.addr)),
        json!([{"src": site, "dest": dest}]).to_string(),
    )
    .unwrap();
    run_steps(&format!(
        "chown hostsync: {0} {1} && chmod 600 {0} {1}",
        hosts.display(),
        key.display()
    ));

    // Step 3 as written, but for systemctl and the log readers.
    let mut steps = String::new();
    for line in step3.lines().skip(1) {
        let program = line.split_whitespace().next().unwrap_or("");
        if !matches!(program, "systemctl" | "journalctl" | "tail") {
            steps.push_str(&under_root(line, &root));
            steps.push('\n');
        }
    }
    assert!(steps.contains("runuser -u hostsync -- "), "{steps}");
    let shown = run_steps(&steps);
    let row = shown
        .lines()
        .find(|l| l.starts_with(&format!("{} ", h.addr)))
        .unwrap_or_else(|| panic!("no check row\n{shown}"));
    assert!(row.contains(" ok "), "{shown}");
    let logs = root.join("var/log/hostsync/info.log");
    assert!(
        std::fs::read_to_string(&logs)
            .unwrap()
            .contains("check finished")
    );
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&logs).unwrap());
    assert_ne!(uid, 0, "info.log is written by the hostsync user");

    // The unit as installed, started from the built binary, verifies cleanly.
    let unit_text =
        std::fs::read_to_string(root.join("etc/systemd/system/hostsync.service")).unwrap();
    assert!(
        !unit_text.contains("PrivateTmp=yes"),
        "sources under /tmp must stay visible"
    );
    let unit = env.dir.mkdir("unit").join("hostsync.service");
    std::fs::write(
        &unit,
        unit_text.replace(
            "ExecStart=/usr/local/bin/hostsync",
            &format!("ExecStart={}", env!("CARGO_BIN_EXE_hostsync")),
        ),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );

    // Unit and README promise the same stop time, and the daemon keeps it.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(unit_text.contains("exits 0 within 5 s"), "{unit_text}");
    assert!(readme.contains("exits 0 within 5 seconds") && readme.contains("exits within 5 s"));
    assert!(hostsync::cmd::watch::SHUTDOWN_GRACE < Duration::from_secs(5));
    assert!(
        unit_text.contains("TimeoutStopSec=15s"),
        "systemd waits longer than that"
    );
}

/// The STATUS of `addr`'s row in a summary table printed in `out`.
#[track_caller]
fn table_status(out: &str, addr: &str) -> String {
    let line = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some(addr))
        .unwrap_or_else(|| panic!("no summary row for {addr}\n{out}"));
    line.split_whitespace()
        .skip(6)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Names under `dir` (at any depth) that contain `.tmp`: an editor's or hostsync's.
fn tmp_names(dir: &Path) -> Vec<String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .map(|e| e.path().display().to_string())
        .collect()
}

/// See: issue 14, bug 1. Editor-style saves (write `.page.html.tmp`, rename it
/// over `page.html`) under `watch`, to two hosts with `"delete": true`: a
/// temporary that is gone by the time it would be read is nothing to send, not an
/// error. error.log stays empty, every row says ok, the last content arrives and
/// no `.tmp` name is left on either host. Some saves follow each other at once,
/// others wait for the previous one to arrive, so both orders of the race happen.
#[test]
fn editor_saves_under_watch_raise_no_false_errors() {
    let mut env = Env::new("audit-saves");
    let a = env.sshd();
    let b = env.sshd();
    env.add_host(&a, Auth::Key);
    env.add_host(&b, Auth::Key);
    env.src("site/page.html", "v0");
    let www = |h: &crate::util::Sshd| env.remote(&h.addr).join("www");
    for h in [&a, &b] {
        env.map(
            &h.addr,
            json!([{"src": "site/", "dest": www(h), "delete": true}]),
        );
    }
    let mut d = env.watch();
    let site = env.cfg().join("site");
    let arrived = |v: &str| {
        [&a, &b]
            .iter()
            .all(|h| std::fs::read(www(h).join("page.html")).is_ok_and(|c| c == v.as_bytes()))
    };
    wait_until(ARRIVE, "the initial reconcile", || arrived("v0"));
    for i in 1..=20 {
        let content = format!("v{i}");
        std::fs::write(site.join(".page.html.tmp"), &content).unwrap();
        std::fs::rename(site.join(".page.html.tmp"), site.join("page.html")).unwrap();
        if i % 4 == 0 {
            wait_until(ARRIVE, &format!("save {i} on both hosts"), || {
                arrived(&content)
            });
        }
    }
    wait_until(ARRIVE, "the last save on both hosts", || arrived("v20"));
    // A temporary read before its rename may land; its removal follows in the
    // next round, so wait for it rather than catch a round in flight.
    wait_until(ARRIVE, "no .tmp name on either host", || {
        [&a, &b].iter().all(|h| tmp_names(&www(h)).is_empty())
    });
    let (code, _) = d.terminate();
    assert_eq!(code, Some(0), "{}", d.dump());
    let out = d.output();
    for h in [&a, &b] {
        assert_eq!(table_status(&out, &h.addr), "ok", "{}", d.dump());
        assert!(tmp_names(&www(h)).is_empty(), "{}", env.dir.listing());
    }
    assert_eq!(d.error_log(), "", "{}", d.dump());
    assert!(arrived("v20"), "{}", d.dump());
}

/// The second every same-second test edit is made in.
const SECOND: u64 = 1_700_000_000;

/// Sets `p`'s mtime to `SECOND` and `nanos` nanoseconds (futimens, as `touch -d` does).
fn set_mtime_in_second(p: &Path, nanos: u32) {
    let at = std::time::UNIX_EPOCH + Duration::new(SECOND, nanos);
    std::fs::File::open(p)
        .and_then(|f| f.set_modified(at))
        .unwrap_or_else(|e| panic!("set the mtime of {}: {e}", p.display()));
}

/// `p`'s mtime as (seconds, nanoseconds).
fn mtime_of(p: &Path) -> (i64, i64) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.mtime(), m.mtime_nsec())
}

/// See: issue 14, bug 4. Two edits of equal size within one second both arrive,
/// on the agent (default), over tar and over scp, with and without `--checksum`.
/// The mtimes are set, not waited for: the same second, other nanoseconds.
/// - The remote keeps the fraction (nanoseconds; microseconds over scp), so the
///   second edit is seen by mtime alone, with the host's record deleted.
/// - Where the remote copy has whole seconds only (the test truncates it, as such
///   a file system would), the record of what was last pushed tells the edits
///   apart, and a mere touch is still skipped by its content hash.
/// - An edit with the very size and nanosecond mtime of what was pushed is seen
///   only by `--checksum` (dry run and sync), which needs no record.
#[test]
fn same_second_edit_arrives_on_the_agent() {
    same_second_edit_case("agent");
}

/// The same over tar (`[ssh] transfer = posix`: pax headers carry the nanoseconds).
#[test]
fn same_second_edit_arrives_over_tar() {
    same_second_edit_case("tar");
}

/// The same over scp (`HOSTSYNC_POSIX_SINK=scp`: the `T` record carries microseconds).
#[test]
fn same_second_edit_arrives_over_scp() {
    same_second_edit_case("scp");
}

fn same_second_edit_case(transport: &str) {
    let mut env = Env::new(&format!("audit-second-{transport}"));
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    let local = [env.src("site/f.txt", ""), env.src("app.conf", "")];
    let r = env.remote("r");
    let remote = [r.join("www/f.txt"), r.join("etc/app.conf")];
    env.map(
        &h.addr,
        json!([{"src": "site/", "dest": r.join("www")},
               {"src": "app.conf", "dest": remote[1]}]),
    );
    let record = env.cfg().join("logs/pushed").join(&h.addr);
    let sync = |extra: &[&str]| {
        let mut args = vec!["-v", "sync"];
        args.extend_from_slice(extra);
        env.run_way(&args, transport)
    };
    let edit = |text: &str, nanos: u32| {
        for p in &local {
            std::fs::write(p, text).unwrap();
            set_mtime_in_second(p, nanos);
        }
    };
    let on_remote = |text: &str| {
        remote
            .iter()
            .all(|p| std::fs::read(p).unwrap() == text.as_bytes())
    };
    let why_sent = |run: &crate::util::hostsync::Run, why: &str| {
        for p in &remote {
            let tail = format!(" -> {} (4 bytes; why: {why})", p.display());
            assert!(
                run.stdout.lines().any(|l| l.ends_with(&tail)),
                "{tail}\n{}",
                run.dump()
            );
        }
    };

    edit("AAAA", 100_000_000);
    let first = sync(&[]);
    first.expect(0);
    assert_eq!(first.row(&h.addr), (2, 0, 0, 0, 8), "{}", first.dump());
    let info = env.info_log();
    let ways = crate::util::hostsync::ways(&info);
    assert!(
        !ways.is_empty() && ways.iter().all(|w| w == transport),
        "transport {transport} not used: {ways:?}\n{info}"
    );
    for p in &remote {
        let (secs, nanos) = mtime_of(p);
        assert_eq!(secs, SECOND as i64, "{}", p.display());
        assert!(
            (nanos - 100_000_000).abs() < 1_000,
            "{}: {nanos} ns",
            p.display()
        );
    }
    let lines = std::fs::read_to_string(&record).unwrap();
    assert_eq!(
        lines.lines().filter(|l| !l.starts_with('#')).count(),
        2,
        "{lines}"
    );

    // The remote kept the fraction: the mtime tells the second edit apart.
    edit("BBBB", 600_000_000);
    std::fs::remove_file(&record).unwrap();
    let second = sync(&[]);
    second.expect(0);
    assert_eq!(second.row(&h.addr), (2, 0, 0, 0, 8), "{}", second.dump());
    why_sent(&second, "mtime");
    assert!(on_remote("BBBB"), "{}", second.dump());
    let again = sync(&[]);
    assert_eq!(
        again.expect(0).row(&h.addr),
        (0, 2, 0, 0, 0),
        "{}",
        again.dump()
    );

    // A remote that keeps whole seconds: the record decides.
    let truncate = || remote.iter().for_each(|p| set_mtime_in_second(p, 0));
    truncate();
    edit("CCCC", 300_000_000);
    let third = sync(&[]);
    third.expect(0);
    assert_eq!(third.row(&h.addr), (2, 0, 0, 0, 8), "{}", third.dump());
    why_sent(&third, "content");
    assert!(on_remote("CCCC"), "{}", third.dump());
    truncate();
    let same = sync(&[]);
    assert_eq!(
        same.expect(0).row(&h.addr),
        (0, 2, 0, 0, 0),
        "{}",
        same.dump()
    );
    local
        .iter()
        .for_each(|p| set_mtime_in_second(p, 900_000_000));
    let touched = sync(&[]);
    assert_eq!(
        touched.expect(0).row(&h.addr),
        (0, 2, 0, 0, 0),
        "{}",
        touched.dump()
    );

    // Same size, same nanosecond as recorded: only the content differs.
    edit("DDDD", 300_000_000);
    let blind = sync(&[]);
    assert_eq!(
        blind.expect(0).row(&h.addr),
        (0, 2, 0, 0, 0),
        "{}",
        blind.dump()
    );
    std::fs::remove_file(&record).unwrap();
    let mut dry_args = vec!["sync", "--dry-run", "--checksum"];
    let dry = env.run_way(&dry_args, transport);
    dry.expect(0);
    let mut shown: Vec<&str> = dry.stdout.lines().collect();
    shown.sort();
    let mut want: Vec<String> = remote
        .iter()
        .map(|p| format!("[M] {} {} updated", h.addr, p.display()))
        .collect();
    want.sort();
    assert_eq!(shown, want, "{}", dry.dump());
    assert!(
        on_remote("CCCC"),
        "the dry run changed nothing\n{}",
        dry.dump()
    );
    let checked = sync(&["--checksum"]);
    checked.expect(0);
    assert_eq!(checked.row(&h.addr), (2, 0, 0, 0, 8), "{}", checked.dump());
    why_sent(&checked, "content");
    assert!(on_remote("DDDD"), "{}", checked.dump());
    dry_args.push("--exit-code");
    env.run_way(&dry_args, transport).expect(0);
    let settled = sync(&["--checksum"]);
    assert_eq!(
        settled.expect(0).row(&h.addr),
        (0, 2, 0, 0, 0),
        "{}",
        settled.dump()
    );
    let plain = sync(&[]);
    assert_eq!(
        plain.expect(0).row(&h.addr),
        (0, 2, 0, 0, 0),
        "{}",
        plain.dump()
    );
    assert_eq!(env.error_log(), "", "{}", plain.dump());
}

/// The remote path of a failure line `error: HOST: LOCAL -> REMOTE: REASON`.
fn failed_remote<'a>(line: &'a str, addr: &str) -> &'a str {
    let what = line
        .strip_prefix(&format!("error: {addr}: "))
        .unwrap_or_else(|| panic!("not a failure of {addr}: {line:?}"));
    let remote = what.split_once(" -> ").map_or(what, |(_, r)| r);
    remote.split_once(": ").map_or(remote, |(p, _)| p)
}

/// See: issue 14, bug 5. The dry run asks check's question: a dest the login user
/// cannot write (or make) is one `[!] HOST PATH/ not writable: REASON` line among
/// the others (JSON `"change": "unwritable"`), exit 1, instead of promising its
/// files; every directory it would make is listed, not only the deepest; and the
/// following sync fails exactly under the `[!]` paths and delivers the rest.
#[test]
fn dry_run_flags_unwritable_dests_and_sync_fails_exactly_those() {
    use std::collections::BTreeSet;
    use std::os::unix::fs::PermissionsExt;
    let mut env = Env::new("audit-unwritable");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    env.src("site/index.html", "hi");
    env.src("site/sub/a.txt", "a");
    env.src("tree/t.txt", "t");
    env.src("app.conf", "c");
    let r = env.remote("r");
    let locked = env.remote("r/locked");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    let www = r.join("new/deeper/www");
    env.map(
        &h.addr,
        json!([{"src": "site/", "dest": www},
               {"src": "app.conf", "dest": locked.join("app.conf")},
               {"src": "tree/", "dest": locked.join("sub/www")}]),
    );
    let dir = |p: &Path| format!("{}/", p.display());

    let dry = env.run(&["sync", "--dry-run"]);
    dry.expect(1);
    let lines: BTreeSet<&str> = dry.stdout.lines().collect();
    let want_added: BTreeSet<String> = [
        dir(&r.join("new")),
        dir(&r.join("new/deeper")),
        dir(&www),
        www.join("index.html").display().to_string(),
        dir(&www.join("sub")),
        www.join("sub/a.txt").display().to_string(),
    ]
    .iter()
    .map(|p| format!("[+] {} {p} added", h.addr))
    .collect();
    let added: BTreeSet<String> = lines
        .iter()
        .filter(|l| l.starts_with("[+] "))
        .map(|l| l.to_string())
        .collect();
    assert_eq!(added, want_added, "{}", dry.dump());
    let flagged: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("[!] "))
        .collect();
    let user = crate::util::test_user();
    let want_flagged = [
        format!(
            "[!] {} {} not writable: permission denied on the remote: {user} cannot write {}; make it writable for {user} or change dest",
            h.addr,
            dir(&locked),
            locked.display()
        ),
        format!(
            "[!] {} {} not writable: permission denied on the remote: {} is missing and {user} cannot create it in {}; create it for {user} or change dest",
            h.addr,
            dir(&locked.join("sub/www")),
            locked.join("sub/www").display(),
            locked.display()
        ),
    ];
    assert_eq!(flagged, want_flagged, "{}", dry.dump());
    assert_eq!(lines.len(), added.len() + flagged.len(), "{}", dry.dump());
    assert!(!r.join("new").exists(), "the dry run made nothing");
    let failures = dry
        .stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .count();
    assert_eq!(failures, 2, "{}", dry.dump());
    // The same where the host is served without the agent (listing script).
    let scripted = env.run_way(&["sync", "--dry-run"], "tar");
    scripted.expect(1);
    assert_eq!(scripted.stdout, dry.stdout, "{}", scripted.dump());
    let json = env.run(&["sync", "--dry-run", "--json"]);
    json.expect(1);
    let unwritable: Vec<serde_json::Value> = json
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["change"] == "unwritable")
        .collect();
    assert_eq!(unwritable.len(), 2, "{}", json.dump());
    assert!(
        unwritable.iter().all(|v| v["dir"] == true
            && v["reason"]
                .as_str()
                .unwrap()
                .starts_with("permission denied on the remote")),
        "{}",
        json.dump()
    );

    // The sync fails exactly under the [!] paths, and delivers the rest.
    let run = env.run(&["sync"]);
    run.expect(1);
    assert_eq!(std::fs::read(www.join("sub/a.txt")).unwrap(), b"a");
    let flagged_dirs = [dir(&locked), dir(&locked.join("sub/www"))];
    // sync prints its failures after the table, on stdout (the dry run: on stderr).
    let errors: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert!(!errors.is_empty(), "{}", run.dump());
    for e in &errors {
        let at = format!("{}/", failed_remote(e, &h.addr));
        assert!(
            flagged_dirs.iter().any(|d| at.starts_with(d.as_str())),
            "{e}: not under a [!] path\n{}",
            run.dump()
        );
    }
    for d in &flagged_dirs {
        assert!(
            errors
                .iter()
                .any(|e| format!("{}/", failed_remote(e, &h.addr)).starts_with(d.as_str())),
            "no failure under {d}\n{}",
            run.dump()
        );
    }
    let (sent, _, _, failed, _) = run.row(&h.addr);
    assert_eq!((sent, failed), (2, errors.len() as u64), "{}", run.dump());
}

/// See: issue 14, "Every new option, including usage errors". `--checksum` is a
/// `sync` option (with or without `--dry-run`): on `watch` or `check`, or given a
/// value, it is exit 2 naming it, and no host is contacted. With `sync PATH...`
/// it also compares the files below a named directory by content.
#[test]
fn checksum_is_a_sync_option_only() {
    let mut env = Env::new("audit-checksum-usage");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    env.src("site/a.txt", "a");
    let www = env.remote("r").join("www");
    env.map(&h.addr, json!([{"src": "site/", "dest": www}]));
    for args in [
        &["watch", "--checksum"][..],
        &["check", "--checksum"],
        &["sync", "--checksum=yes"],
    ] {
        let run = env.run(args);
        run.expect(2);
        let first = run.stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error: ") && first.contains("--checksum"),
            "{}",
            run.dump()
        );
    }
    assert!(!h.log().contains("Accepted"), "{}", h.log());
    env.run(&["sync", "--dry-run", "--checksum"]).expect(0);
    env.run(&["sync", "--checksum"]).expect(0);
    assert_eq!(std::fs::read(www.join("a.txt")).unwrap(), b"a");
    // Same size, same mtime to the nanosecond, other content, below a named dir.
    let b = env.src("site/sub/b.txt", "bbbb");
    set_mtime_in_second(&b, 0);
    env.run(&["sync", "site/sub"]).expect(0);
    std::fs::write(&b, "cccc").unwrap();
    set_mtime_in_second(&b, 0);
    let by_mtime = env.run(&["sync", "site/sub"]);
    assert_eq!(by_mtime.expect(0).row(&h.addr).0, 0, "{}", by_mtime.dump());
    let by_content = env.run(&["sync", "--checksum", "site/sub"]);
    assert_eq!(
        by_content.expect(0).row(&h.addr).0,
        1,
        "{}",
        by_content.dump()
    );
    assert_eq!(std::fs::read(www.join("sub/b.txt")).unwrap(), b"cccc");
}
