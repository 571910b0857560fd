//! `hostsync sync` against real OpenSSH servers on loopback (issue 2, Core).

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use serde_json::json;

use crate::util::dir::temporaries;
use crate::util::hostsync::{Auth, Env, PASSWORD};
use crate::util::{Fault, Proxy, root_or_skip};

/// Seed-format config with a password host and a key host, each with its own
/// destinations; a file and a nested tree with an empty dir; modes and mtimes
/// preserved; a second run sends nothing and no temporary is left.
#[test]
fn seed_config_pushes_to_each_hosts_own_destination_and_second_run_skips() {
    seed_config_case("agent");
}

/// The same the way a host without perl is served, over tar (`[ssh] transfer = posix`).
#[test]
fn seed_config_pushes_to_each_hosts_own_destination_and_second_run_skips_over_tar() {
    seed_config_case("tar");
}

/// The same over the SCP transport (`transfer = posix` with `HOSTSYNC_POSIX_SINK=scp`).
#[test]
fn seed_config_pushes_to_each_hosts_own_destination_and_second_run_skips_over_scp() {
    seed_config_case("scp");
}

fn seed_config_case(transport: &str) {
    if !root_or_skip("log in with a password (the test user gets one as root)") {
        return;
    }
    let mut env = Env::new("seed");
    let h1 = env.sshd();
    let h2 = env.sshd();
    env.add_host(&h1, Auth::Password(PASSWORD));
    env.add_host(&h2, Auth::Key);
    let conf = env.src("app.conf", "listen = 8080\n");
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o640)).unwrap();
    env.src("site/index.html", "<h1>hi</h1>\n");
    env.src("site/a/b/deep.txt", "deep\n");
    let script = env.src("site/bin/run.sh", "#!/bin/sh\necho run\n");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.dir.mkdir("cfg/site/empty/also-empty");
    let r1 = env.remote("h1");
    let r2 = env.remote("h2");
    env.map(
        &h1.addr,
        json!([
            {"src": "app.conf", "dest": r1.join("etc/app/app.conf")},
            {"src": "site/", "dest": r1.join("srv/www/site")},
        ]),
    );
    env.map(
        &h2.addr,
        json!([
            {"src": "app.conf", "dest": r2.join("opt/app.conf")},
            {"src": "site", "dest": r2.join("var/www")},
        ]),
    );

    let run = env.run_way(&["-v", "sync"], transport);
    run.expect(0);
    assert_eq!(run.row(&h1.addr).0, 4, "{}", run.dump());
    assert_eq!(run.row(&h2.addr).0, 4, "{}", run.dump());
    for (conf_dest, site) in [
        (r1.join("etc/app/app.conf"), r1.join("srv/www/site")),
        (r2.join("opt/app.conf"), r2.join("var/www")),
    ] {
        assert_eq!(std::fs::read(&conf_dest).unwrap(), b"listen = 8080\n");
        let meta = std::fs::metadata(&conf_dest).unwrap();
        assert_eq!(
            meta.mode() & 0o7777,
            0o640,
            "mode of {}",
            conf_dest.display()
        );
        assert_eq!(meta.mtime(), std::fs::metadata(&conf).unwrap().mtime());
        assert_eq!(
            std::fs::read(site.join("index.html")).unwrap(),
            b"<h1>hi</h1>\n"
        );
        assert_eq!(std::fs::read(site.join("a/b/deep.txt")).unwrap(), b"deep\n");
        assert_eq!(
            std::fs::metadata(site.join("bin/run.sh")).unwrap().mode() & 0o777,
            0o755
        );
        assert!(
            site.join("empty/also-empty").is_dir(),
            "{}",
            env.dir.listing()
        );
    }
    let info = env.info_log();
    let ways = crate::util::hostsync::ways(&info);
    assert!(
        !ways.is_empty() && ways.iter().all(|w| w == transport),
        "transport {transport} not used: {ways:?}\n{info}"
    );
    assert!(
        info.contains(&format!(
            "{}: sent {} -> {}",
            h1.addr,
            conf.display(),
            r1.join("etc/app/app.conf").display()
        )),
        "{info}"
    );
    assert!(env.error_log().is_empty(), "{}", run.dump());

    let again = env.run_way(&["-v", "sync"], transport);
    again.expect(0);
    assert_eq!(again.row(&h1.addr), (0, 4, 0, 0, 0), "{}", again.dump());
    assert_eq!(again.row(&h2.addr), (0, 4, 0, 0, 0), "{}", again.dump());
    assert!(
        temporaries(&env.dir.join("remote")).is_empty(),
        "{}",
        env.dir.listing()
    );
}

/// On a terminal (a progress bar is drawn) a batch is still one remote command:
/// the bar moves as files go into the stream, not by splitting the upload into
/// parts that each cost a channel and a process. Run under `script` for a pty.
#[test]
fn progress_bar_keeps_one_stream() {
    let mut env = Env::new("bar");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    for i in 0..600 {
        env.src(&format!("site/d{}/f{i}", i % 7), format!("file {i}\n"));
    }
    let r = env.remote("r");
    env.map(&h.addr, json!([{"src": "site/", "dest": r.join("www")}]));
    env.write_config();
    let exe = env!("CARGO_BIN_EXE_hostsync");
    let out = std::process::Command::new("script")
        .args(["-q", "-e", "-c", &format!("{exe} sync"), "/dev/null"])
        .current_dir(env.cfg())
        .env("HOME", env.dir.path())
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .expect("cannot run script(1) (util-linux/bsdutils)");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}\n{}", env.dir.listing());
    assert_eq!(std::fs::read(r.join("www/d4/f599")).unwrap(), b"file 599\n");
    assert!(
        shown.contains("600 sent") || shown.contains(" 600 "),
        "{shown}"
    );
    let sessions = h.log().matches("Starting session:").count();
    assert_eq!(sessions, 1, "one exec expected for the batch\n{}", h.log());
}

/// A batch of 300 files without the agent goes as one tar stream on the listing's
/// own exec, then one commit: two execs, every file whole with its mode, directory
/// modes kept, nothing left behind; a second run sends nothing.
#[test]
fn big_batch_goes_as_one_tar_stream_and_one_commit() {
    let mut env = Env::new("split");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    let mut private = None;
    for i in 0..300 {
        let f = env.src(
            &format!("site/d{}/s{}/f{i}", i % 3, i % 5),
            format!("{i}\n").repeat(i),
        );
        if i % 7 == 0 {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        if i == 1 {
            private = f.parent().map(Path::to_path_buf);
        }
    }
    let private = private.expect("site/d1/s1");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o750)).unwrap();
    let r = env.remote("r");
    env.map(&h.addr, json!([{"src": "site/", "dest": r.join("www")}]));

    let run = env.run_way(&["-v", "sync"], "tar");
    run.expect(0);
    assert_eq!(run.row(&h.addr).0, 300, "{}", run.dump());
    let info = env.info_log();
    assert_eq!(crate::util::hostsync::ways(&info), ["tar"], "{info}");
    let sessions = h.log().matches("Starting session:").count();
    assert_eq!(sessions, 2, "listing + stream, then commit\n{}", h.log());
    for i in 0..300 {
        let rel = format!("d{}/s{}/f{i}", i % 3, i % 5);
        let got = r.join("www").join(&rel);
        assert_eq!(
            std::fs::read(&got).unwrap(),
            format!("{i}\n").repeat(i).as_bytes(),
            "{rel}"
        );
        let mode = std::fs::metadata(&got).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode == 0o600, i % 7 == 0, "{rel}: {mode:o}");
    }
    let mode = std::fs::metadata(r.join("www/d1/s1"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o750);
    assert!(temporaries(&r).is_empty(), "{}", env.dir.listing());
    let again = env.run_way(&["sync"], "tar");
    again.expect(0);
    assert_eq!(again.row(&h.addr), (0, 300, 0, 0, 0), "{}", again.dump());
}

/// Two big roots: the first stream takes the listing's channel, the second its own
/// exec, one commit for both; every file arrives.
#[test]
fn second_big_root_streams_in_its_own_exec() {
    let mut env = Env::new("split2");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    for root in ["one", "two"] {
        for i in 0..200 {
            env.src(
                &format!("{root}/d{}/f{i}", i % 4),
                format!("{root} {i}\n").repeat(500),
            );
        }
    }
    let r = env.remote("r");
    env.map(
        &h.addr,
        json!([
            {"src": "one/", "dest": r.join("one")},
            {"src": "two/", "dest": r.join("two")},
        ]),
    );

    let run = env.run_way(&["-v", "sync"], "tar");
    run.expect(0);
    assert_eq!(run.row(&h.addr).0, 400, "{}", run.dump());
    let info = env.info_log();
    assert_eq!(crate::util::hostsync::ways(&info), ["tar", "tar"], "{info}");
    let sessions = h.log().matches("Starting session:").count();
    assert_eq!(
        sessions,
        3,
        "one exec per root, then the commit\n{}",
        h.log()
    );
    for root in ["one", "two"] {
        for i in 0..200 {
            let rel = format!("{root}/d{}/f{i}", i % 4);
            let got = std::fs::read(r.join(&rel)).unwrap();
            assert!(
                got == format!("{root} {i}\n").repeat(500).as_bytes(),
                "{rel}"
            );
        }
    }
    assert!(temporaries(&r).is_empty(), "{}", env.dir.listing());
}

/// 200 big batches in a row against one sshd beside two busy threads, on `way`
/// (`Env::run_way`, "" for the default): every batch is one exec, every
/// file arrives whole, nothing is left behind. Returns info.log. (Issue 12 ran
/// it on the tar split, which issue 15 removed; the agent's lanes keep it.)
fn two_hundred_batches_under_load(name: &str, way: &str) -> String {
    // Enough work for two lanes (about 160 small files).
    const FILES: usize = 200;
    const ROUNDS: usize = 200;
    let mut env = Env::new(name);
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    let rel = |i: usize| format!("d{}/s{}/f{i}", i % 4, i % 3);
    for i in 0..FILES {
        env.src(&format!("tree/{}", rel(i)), format!("{i}\n").repeat(1000));
    }
    let r = env.remote("r");
    env.map(&h.addr, json!([{"src": "tree/", "dest": r.join("www")}]));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hogs: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                }
                x
            })
        })
        .collect();
    let mut failed = Vec::new();
    for round in 0..ROUNDS {
        let _ = std::fs::remove_dir_all(r.join("www"));
        let sessions = h.log().matches("Starting session:").count();
        let run = env.run_way(&["-v", "sync"], way);
        let one_exec = h.log().matches("Starting session:").count() == sessions + 1;
        if run.code != 0 || run.row(&h.addr).0 != FILES as u64 || !one_exec {
            failed.push(format!("round {round}:\n{}", run.dump()));
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for hog in hogs {
        hog.join().unwrap();
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    for i in 0..FILES {
        let got = std::fs::read(r.join("www").join(rel(i))).unwrap();
        assert_eq!(got, format!("{i}\n").repeat(1000).as_bytes(), "{}", rel(i));
    }
    assert!(temporaries(&r).is_empty(), "{}", env.dir.listing());
    env.info_log()
}

/// The agent's two lanes (a helper process makes half the files) over 200 batches.
#[test]
fn agent_lanes_never_fail_over_200_batches_under_load() {
    let info = two_hundred_batches_under_load("lanes200", "");
    let ways = crate::util::hostsync::ways(&info);
    assert_eq!(ways.len(), 200, "{ways:?}");
    assert!(ways.iter().all(|w| w == "agent in 2 lanes"), "{ways:?}");
}

/// Restarts `h` so that remote commands get a PATH with everything in /usr/bin and
/// /bin except the commands whose names start with `prefix`.
fn without_commands(env: &Env, h: &mut crate::util::Sshd, prefix: &str) {
    let bin = env.dir.mkdir(format!("no-{prefix}-bin"));
    for dir in ["/usr/bin", "/bin"] {
        for entry in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
            let name = entry.file_name();
            let link = bin.join(&name);
            if !name.as_bytes().starts_with(prefix.as_bytes()) && !link.exists() {
                std::os::unix::fs::symlink(entry.path(), link).unwrap();
            }
        }
    }
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    h.restart_with_config(&format!("SetEnv PATH={}", bin.display()));
}

/// One host whose remote commands lack `command` (see [`without_commands`]), mapped
/// a two-file site to `www` under the returned remote folder.
fn site_without(command: &str) -> (Env, crate::util::Sshd, std::path::PathBuf) {
    let mut env = Env::new(&format!("no{command}"));
    let mut h = env.sshd();
    without_commands(&env, &mut h, command);
    env.add_host(&h, Auth::Key);
    env.src("site/index.html", "<h1>hi</h1>\n");
    env.src("site/a/deep.txt", "deep\n");
    let r = env.remote("h");
    env.map(&h.addr, json!([{"src": "site/", "dest": r.join("www")}]));
    (env, h, r)
}

/// A remote without tar, served as one without perl (`[ssh] transfer = posix`):
/// the listing finds out, gives back the channel it kept for a stream, and the
/// files go over SCP; a second run sends nothing.
#[test]
fn remote_without_tar_sends_over_scp() {
    let (env, h, r) = site_without("tar");

    let run = env.run_way(&["-v", "sync"], "tar");
    run.expect(0);
    assert_eq!(run.row(&h.addr).0, 2, "{}", run.dump());
    assert_eq!(
        std::fs::read(r.join("www/index.html")).unwrap(),
        b"<h1>hi</h1>\n"
    );
    let info = env.info_log();
    assert_eq!(crate::util::hostsync::ways(&info), ["scp"], "{info}");
    assert!(temporaries(&r).is_empty(), "{}", env.dir.listing());
    let again = env.run_way(&["sync"], "tar");
    again.expect(0);
    assert_eq!(again.row(&h.addr), (0, 2, 0, 0, 0), "{}", again.dump());
}

/// A remote without perl (minimal images): no agent; the tar stream goes on the
/// listing's exec, then the commit runs with sh and `mv`; files arrive, nothing is
/// left behind, and a second run sends nothing.
#[test]
fn remote_without_perl_commits_with_sh() {
    let (env, h, r) = site_without("perl");
    for i in 0..200 {
        env.src(&format!("site/many/f{i}"), vec![b'x'; 4096]);
    }

    let run = env.run(&["-v", "sync"]);
    run.expect(0);
    assert_eq!(run.row(&h.addr).0, 202, "{}", run.dump());
    assert_eq!(
        std::fs::read(r.join("www/many/f199")).unwrap(),
        vec![b'x'; 4096]
    );
    assert_eq!(std::fs::read(r.join("www/a/deep.txt")).unwrap(), b"deep\n");
    let info = env.info_log();
    assert_eq!(crate::util::hostsync::ways(&info), ["tar"], "{info}");
    // The agent's start (perl missing), the listing + stream, the commit.
    let sessions = h.log().matches("Starting session:").count();
    assert_eq!(sessions, 3, "{}", h.log());
    assert!(temporaries(&r).is_empty(), "{}", env.dir.listing());
    let again = env.run(&["sync"]);
    again.expect(0);
    assert_eq!(again.row(&h.addr), (0, 202, 0, 0, 0), "{}", again.dump());
}

/// A host whose sshd is down: the others complete, exit 1, one error.log line.
#[test]
fn one_host_down_others_complete_and_exit_1() {
    let mut env = Env::new("down");
    let up = env.sshd();
    let mut down = env.sshd();
    env.add_host(&up, Auth::Key);
    env.add_host(&down, Auth::Key);
    down.stop();
    env.src("f.txt", "data");
    let r = env.remote("r");
    env.map(
        &up.addr,
        json!([{"src": "f.txt", "dest": r.join("up.txt")}]),
    );
    env.map(
        &down.addr,
        json!([{"src": "f.txt", "dest": r.join("down.txt")}]),
    );
    let run = env.run(&["sync"]);
    run.expect(1);
    assert_eq!(std::fs::read(r.join("up.txt")).unwrap(), b"data");
    assert!(!r.join("down.txt").exists());
    let errors = env.error_log();
    let lines: Vec<&str> = errors.lines().collect();
    assert_eq!(lines.len(), 1, "{}", run.dump());
    assert!(
        lines[0].contains(&format!("{}: host unreachable", down.addr)),
        "{}",
        run.dump()
    );
    assert!(
        !errors.contains(" sent "),
        "error.log must hold only failures\n{errors}"
    );
    run.expect_output("failed: host unreachable");
}

/// Wrong password: auth failed is logged, the password appears nowhere.
#[test]
fn wrong_password_fails_that_host_and_never_prints_the_password() {
    const WRONG: &str = "wrong-Pw-7731!xyz";
    let mut env = Env::new("wrongpw");
    let h = env.sshd();
    env.add_host(&h, Auth::Password(WRONG));
    env.src("f.txt", "data");
    let r = env.remote("r");
    env.map(&h.addr, json!([{"src": "f.txt", "dest": r.join("f.txt")}]));
    let run = env.run(&["sync"]);
    run.expect(1);
    assert!(
        env.error_log()
            .contains(&format!("{}: auth failed for user", h.addr)),
        "{}",
        run.dump()
    );
    for text in [&run.stdout, &run.stderr, &env.info_log(), &env.error_log()] {
        assert!(!text.contains(WRONG), "password leaked:\n{}", run.dump());
    }
    assert!(!r.join("f.txt").exists());
}

/// A destination the remote user cannot write: permission denied on the remote,
/// for that mapping only.
#[test]
fn unwritable_destination_is_reported_and_others_arrive() {
    if !root_or_skip("make a folder the ssh test user cannot write") {
        return;
    }
    let mut env = Env::new("unwritable");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    env.src("f.txt", "data");
    env.src("tree/x.txt", "x");
    let ok = env.remote("ok");
    // Owned by root, 0755: the test user can enter but not write.
    let locked = env.dir.mkdir("remote/locked");
    env.map(
        &h.addr,
        json!([
            {"src": "f.txt", "dest": locked.join("f.txt")},
            {"src": "tree/", "dest": locked.join("sub/tree")},
            {"src": "f.txt", "dest": ok.join("f.txt")},
        ]),
    );
    let run = env.run(&["sync"]);
    run.expect(1);
    assert_eq!(std::fs::read(ok.join("f.txt")).unwrap(), b"data");
    assert!(!locked.join("f.txt").exists());
    let errors = env.error_log();
    assert!(
        errors.contains(&format!("{}: ", h.addr))
            && errors.to_lowercase().contains("permission denied"),
        "{}",
        run.dump()
    );
    assert!(
        errors.contains(&locked.join("f.txt").display().to_string()),
        "{}",
        run.dump()
    );
    assert_eq!(run.row(&h.addr).3, 2, "{}", run.dump());
}

/// Names with spaces, quotes, `$(...)`, backticks, `;`, a leading `-`, unicode
/// and non-UTF-8 bytes arrive byte-exact, and no remote command runs.
#[test]
fn hostile_names_arrive_byte_exact_and_run_nothing() {
    hostile_names_case("agent");
}

/// The same over tar (`[ssh] transfer = posix`).
#[test]
fn hostile_names_arrive_byte_exact_and_run_nothing_over_tar() {
    hostile_names_case("tar");
}

/// The same over the SCP transport (`transfer = posix` with `HOSTSYNC_POSIX_SINK=scp`).
#[test]
fn hostile_names_arrive_byte_exact_and_run_nothing_over_scp() {
    hostile_names_case("scp");
}

fn hostile_names_case(transport: &str) {
    let mut env = Env::new("names");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    // Writable by the ssh test user, so an injected `touch` would really create it.
    let marker = env.remote("marker").join("INJECTED");
    let m = marker.display().to_string();
    let names: Vec<Vec<u8>> = vec![
        b"with space.txt".to_vec(),
        b"single'quote".to_vec(),
        b"double\"quote".to_vec(),
        format!("$(touch {m})").into_bytes(),
        format!("`touch {m}`").into_bytes(),
        format!("a; touch {m}").into_bytes(),
        b"-rf".to_vec(),
        "unicod\u{e9}-\u{65e5}\u{672c}.txt".as_bytes().to_vec(),
        b"latin1-\xe9\xff".to_vec(),
    ];
    for (i, n) in names.iter().enumerate() {
        let p = env
            .dir
            .join("cfg/tree")
            .join(std::ffi::OsStr::from_bytes(n));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, format!("content {i}")).unwrap();
    }
    let r = env.remote("r");
    let dest = r.join(format!("dest $(touch {m}) 'q' `x`"));
    env.map(&h.addr, json!([{"src": "tree/", "dest": dest}]));
    let run = env.run_way(&["-v", "sync"], transport);
    run.expect(0);
    for (i, n) in names.iter().enumerate() {
        let p = dest.join(std::ffi::OsStr::from_bytes(n));
        assert_eq!(
            std::fs::read(&p).unwrap_or_default(),
            format!("content {i}").as_bytes(),
            "{}\n{}",
            p.display(),
            env.dir.listing()
        );
    }
    assert!(!marker.exists(), "a remote command ran\n{}", run.dump());
    assert!(!env.dir.join("remote").join("INJECTED").exists());
}

/// A connection cut in the middle of a large file keeps the old remote content;
/// the next run completes and leaves no temporary.
#[test]
fn connection_cut_mid_transfer_keeps_old_content_then_next_run_completes() {
    connection_cut_case("agent");
}

/// The same over tar (`[ssh] transfer = posix`).
#[test]
fn connection_cut_mid_transfer_keeps_old_content_then_next_run_completes_over_tar() {
    connection_cut_case("tar");
}

/// The same over the SCP transport (`transfer = posix` with `HOSTSYNC_POSIX_SINK=scp`).
#[test]
fn connection_cut_mid_transfer_keeps_old_content_then_next_run_completes_over_scp() {
    connection_cut_case("scp");
}

/// A tar stream the remote tar fails on (a directory the remote user cannot
/// write): nothing from the stream is committed, the batch goes again over SCP,
/// which delivers the rest and names the refused files.
#[test]
fn tar_stream_with_a_failing_tar_falls_back_to_scp() {
    if !root_or_skip("make a folder the ssh test user cannot write") {
        return;
    }
    let mut env = Env::new("splitfail");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    let rel = |i: usize| format!("d{}/f{i}", i / 100);
    for i in 0..400 {
        env.src(
            &format!("tree/{}", rel(i)),
            vec![b'a' + (i % 26) as u8; 4096],
        );
    }
    let r = env.remote("r");
    for d in 0..4 {
        std::fs::create_dir_all(r.join(format!("www/d{d}"))).unwrap();
    }
    env.dir.chown_to_test_user("remote/r");
    // Owned by root, 0755: the test user can list it but not write into it.
    let locked = r.join("www/d3");
    std::os::unix::fs::chown(&locked, Some(0), Some(0)).unwrap();
    env.map(&h.addr, json!([{"src": "tree/", "dest": r.join("www")}]));

    let run = env.run_way(&["-v", "sync"], "tar");
    run.expect(1);
    let info = env.info_log();
    assert_eq!(crate::util::hostsync::ways(&info), ["tar", "scp"], "{info}");
    // Issue 12: the line says why the tar failed, with its status and first line.
    let why = info
        .lines()
        .find(|l| l.contains("the remote tar failed under"))
        .unwrap_or_else(|| panic!("no tar failure line\n{info}"));
    assert!(
        why.contains("(tar exit 2: d3/.hostsync-tmp.")
            && why.contains("Permission denied); sending this batch over scp"),
        "{why}"
    );
    assert_eq!(run.row(&h.addr).0, 300, "{}", run.dump());
    assert_eq!(run.row(&h.addr).3, 100, "{}", run.dump());
    for i in 0..300 {
        let got = std::fs::read(r.join("www").join(rel(i))).unwrap();
        assert_eq!(got, vec![b'a' + (i % 26) as u8; 4096], "{}", rel(i));
    }
    assert!(!locked.join("f300").exists());
    assert!(
        env.error_log().to_lowercase().contains("permission denied"),
        "{}",
        run.dump()
    );
    assert!(temporaries(&r).is_empty(), "{}", env.dir.listing());
}

/// The same for a tar stream of many files: a cut mid-stream commits none of its
/// files; the next run completes.
#[test]
fn connection_cut_mid_tar_stream_keeps_old_content_then_next_run_completes() {
    let mut env = Env::new("cutsplit");
    let h = env.sshd();
    let proxy = Proxy::start(&h.addr, h.port, Fault::CutAfter(4 * 1024 * 1024));
    env.add_host_raw(json!({"ip_address": proxy.addr, "port": proxy.port, "user": crate::util::test_user(), "identity_file": env.key.private}));
    env.trust(h.known_hosts_line_as(&proxy.addr, proxy.port));
    let r = env.remote("r");
    let body = |i: usize| -> Vec<u8> { (0..32 * 1024).map(|k| ((i + k) % 251) as u8).collect() };
    let rel = |i: usize| format!("d{}/f{i}", i % 4);
    for i in 0..400 {
        env.src(&format!("tree/{}", rel(i)), body(i));
        let old = r.join("www").join(rel(i));
        std::fs::create_dir_all(old.parent().unwrap()).unwrap();
        std::fs::write(&old, b"old content").unwrap();
    }
    env.dir.chown_to_test_user("remote/r");
    env.map(
        &proxy.addr,
        json!([{"src": "tree/", "dest": r.join("www")}]),
    );

    let run = env.run_way(&["-v", "sync"], "tar");
    run.expect(1);
    let ways = crate::util::hostsync::ways(&env.info_log());
    assert_eq!(ways, ["tar"], "{}", run.dump());
    for i in 0..400 {
        let got = std::fs::read(r.join("www").join(rel(i))).unwrap();
        assert_eq!(got, b"old content", "{}\n{}", rel(i), run.dump());
    }

    proxy.set_fault(Fault::None);
    let again = env.run_way(&["-v", "sync"], "tar");
    again.expect(0);
    for i in 0..400 {
        let got = std::fs::read(r.join("www").join(rel(i))).unwrap();
        assert!(got == body(i), "{} differs after the second run", rel(i));
    }
    assert!(temporaries(&r).is_empty(), "{}", env.dir.listing());
}

fn connection_cut_case(transport: &str) {
    let mut env = Env::new("cut");
    let h = env.sshd();
    let proxy = Proxy::start(&h.addr, h.port, Fault::CutAfter(4 * 1024 * 1024));
    env.add_host_raw(json!({"ip_address": proxy.addr, "port": proxy.port, "user": crate::util::test_user(), "identity_file": env.key.private}));
    env.trust(h.known_hosts_line_as(&proxy.addr, proxy.port));
    let big: Vec<u8> = (0..32 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    env.src("big.bin", &big);
    let r = env.remote("r");
    std::fs::write(r.join("big.bin"), b"old content").unwrap();
    env.dir.chown_to_test_user("remote/r");
    env.map(
        &proxy.addr,
        json!([{"src": "big.bin", "dest": r.join("big.bin")}]),
    );
    let run = env.run_way(&["-v", "sync"], transport);
    run.expect(1);
    assert_eq!(
        std::fs::read(r.join("big.bin")).unwrap(),
        b"old content",
        "{}",
        run.dump()
    );
    assert!(env.error_log().contains(&proxy.addr), "{}", run.dump());

    proxy.set_fault(Fault::None);
    let again = env.run_way(&["-v", "sync"], transport);
    again.expect(0);
    assert!(
        std::fs::read(r.join("big.bin")).unwrap() == big,
        "content differs after the second run"
    );
    assert!(temporaries(&r).is_empty(), "{}", env.dir.listing());
}

/// Several MiB of random bytes (hundreds of SSH packets) arrive intact over the
/// default cipher, chacha20-poly1305, whose ChaCha20 and Poly1305 come from
/// OpenSSL in the vendored libssh2 (vendor/README.md): a wrong key stream or tag
/// would fail sshd's MAC check or change the bytes.
#[test]
fn big_random_file_over_chacha20_arrives_intact() {
    let mut env = Env::new("chacha");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let big: Vec<u8> = (0..(6 << 20) + 12345)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    env.src("random.bin", &big);
    let r = env.remote("r");
    env.dir.chown_to_test_user("remote/r");
    env.map(
        &h.addr,
        json!([{"src": "random.bin", "dest": r.join("random.bin")}]),
    );
    for transport in ["tar", "scp"] {
        let _ = std::fs::remove_file(r.join("random.bin"));
        let run = env.run_way(&["-v", "sync"], transport);
        run.expect(0);
        assert!(
            env.info_log()
                .contains("cipher chacha20-poly1305@openssh.com"),
            "{}",
            run.dump()
        );
        assert!(
            std::fs::read(r.join("random.bin")).unwrap() == big,
            "{transport}: content differs\n{}",
            run.dump()
        );
    }
}

/// A missing src fails that mapping only; a host without a mapping file is skipped
/// with a warning; `--host` limits the run.
#[test]
fn missing_src_unmapped_host_and_host_filter() {
    let mut env = Env::new("partial");
    let a = env.sshd();
    let b = env.sshd();
    env.add_host(&a, Auth::Key);
    env.add_host(&b, Auth::Key);
    env.src("f.txt", "data");
    let r = env.remote("r");
    env.map(
        &a.addr,
        json!([
            {"src": "nope.txt", "dest": r.join("nope.txt")},
            {"src": "f.txt", "dest": r.join("f.txt")},
        ]),
    );
    let run = env.run(&["sync"]);
    run.expect(1);
    assert_eq!(std::fs::read(r.join("f.txt")).unwrap(), b"data");
    let errors = env.error_log();
    assert!(
        errors.contains("nope.txt: src does not exist"),
        "{}",
        run.dump()
    );
    assert!(
        errors.contains(&format!("WARN  [main] {}: no mapping file", b.addr)),
        "{}",
        run.dump()
    );

    env.map(
        &b.addr,
        json!([{"src": "f.txt", "dest": r.join("only-b.txt")}]),
    );
    let run = env.run(&["sync", "--host", &b.addr]);
    run.expect(0);
    assert!(r.join("only-b.txt").exists());
    assert!(!run.stdout.contains(&a.addr), "{}", run.dump());
    env.run(&["sync", "--host", "127.9.9.9"])
        .expect(2)
        .expect_output("no such host");
}

/// Host keys: unknown refused under strict; accept-new records it; a changed key is refused.
#[test]
fn host_key_policies() {
    let mut env = Env::new("hostkeys");
    let h = env.sshd();
    env.add_host_raw(json!({"ip_address": h.addr, "port": h.port, "user": crate::util::test_user(), "identity_file": env.key.private}));
    env.src("f.txt", "data");
    let r = env.remote("r");
    env.map(&h.addr, json!([{"src": "f.txt", "dest": r.join("f.txt")}]));
    let run = env.run(&["sync"]);
    run.expect(1);
    assert!(
        env.error_log().contains("host key unknown"),
        "{}",
        run.dump()
    );
    assert!(env.error_log().contains("SHA256:"), "{}", run.dump());

    env.ini("host_key_policy = accept-new\n");
    env.write_config();
    std::fs::write(env.cfg().join("known_hosts"), "").unwrap();
    let run = crate::util::hostsync::run_in(&env.cfg(), env.dir.path(), &["sync"]);
    run.expect(0);
    let known = std::fs::read_to_string(env.cfg().join("known_hosts")).unwrap();
    assert!(
        known.contains(&format!("[{}]:{} ssh-ed25519 ", h.addr, h.port)),
        "{known}"
    );

    // Same address and port, different key: refused even under accept-new.
    let other = crate::util::client_key(env.dir.path(), "ed25519", None);
    let fake = format!(
        "[{}]:{} {}\n",
        h.addr,
        h.port,
        other
            .public_line()
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    );
    std::fs::write(env.cfg().join("known_hosts"), fake).unwrap();
    let run = crate::util::hostsync::run_in(&env.cfg(), env.dir.path(), &["sync"]);
    run.expect(1);
    assert!(
        env.error_log().contains("host key mismatch"),
        "{}",
        run.dump()
    );
    let known = std::fs::read_to_string(env.cfg().join("known_hosts")).unwrap();
    assert_eq!(
        known.lines().count(),
        1,
        "a changed key must not be added\n{known}"
    );
}
