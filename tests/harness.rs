//! Smoke tests for the integration-test harness in `tests/util` itself.
//!
//! They drive the real OpenSSH client (`ssh`)
//! against the harness's servers and proxies, so a broken harness shows up
//! here rather than as mysterious failures in the hostsync tests.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::{
    Dir, Fault, Proxy, Sshd, TEST_PASSWORD, client_key, is_root, test_user, wait_for, wait_until,
};

/// Writes a known_hosts file holding `lines` and returns its path.
fn known_hosts(dir: &Dir, name: &str, lines: &[String]) -> std::path::PathBuf {
    dir.write(name, lines.join("\n") + "\n")
}

/// An OpenSSH client command with strict host key checking against
/// `known_hosts` and no user or system configuration.
fn ssh(known_hosts: &Path, addr: &str, port: u16) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.arg("-F")
        .arg("/dev/null")
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args([
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "ConnectTimeout=5",
            "-o",
            "ServerAliveInterval=2",
            "-o",
            "ServerAliveCountMax=3",
            "-p",
        ])
        .arg(port.to_string())
        .arg(format!("{}@{addr}", test_user()))
        .stdin(Stdio::null());
    cmd
}

/// Runs `remote` on `addr:port` logging in with the private key `key`.
fn ssh_with_key(key: &Path, known_hosts: &Path, addr: &str, port: u16, remote: &str) -> Output {
    let mut cmd = ssh(known_hosts, addr, port);
    cmd.arg("-i").arg(key).args([
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "--",
        remote,
    ]);
    cmd.output().expect("running ssh")
}

#[track_caller]
fn assert_prints(out: &Output, expected: &str, server: &Sshd) {
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == expected,
        "ssh to {}:{} failed ({}): stdout {:?}, stderr {:?}\nserver log:\n{}",
        server.addr,
        server.port,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
}

#[test]
fn two_servers_at_once_accept_key_logins() {
    let dir = Dir::new("two-servers");
    let key = client_key(dir.path(), "ed25519", None);
    let a = Sshd::start(dir.path(), &[&key]);
    let other = if a.addr == "127.0.0.200" {
        "127.0.0.201"
    } else {
        "127.0.0.200"
    };
    let b = Sshd::start_with(dir.path(), &[&key], Some(other));
    assert_ne!(a.addr, b.addr);
    assert_eq!(b.addr, other);
    assert_ne!(
        a.host_pub_line, b.host_pub_line,
        "each server has its own host key"
    );
    assert!(
        a.known_hosts_line()
            .starts_with(&format!("[{}]:{} ssh-ed25519 AAAA", a.addr, a.port))
    );

    for (i, server) in [&a, &b].into_iter().enumerate() {
        let kh = known_hosts(
            &dir,
            &format!("known_hosts_{i}"),
            &[server.known_hosts_line()],
        );
        let out = ssh_with_key(&key.private, &kh, &server.addr, server.port, "echo ok");
        assert_prints(&out, "ok", server);
        let out = ssh_with_key(&key.private, &kh, &server.addr, server.port, "id -un");
        assert_prints(&out, &test_user(), server);
        assert!(
            server.log().contains("Accepted publickey for"),
            "{}",
            server.log()
        );
    }

    // Strict checking really uses the line: b's key for a's address fails.
    let wrong = known_hosts(
        &dir,
        "known_hosts_wrong",
        &[b.known_hosts_line_as(&a.addr, a.port)],
    );
    let out = ssh_with_key(&key.private, &wrong, &a.addr, a.port, "echo ok");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("HOST IDENTIFICATION HAS CHANGED"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A key the server was not given is refused.
    let stranger = client_key(dir.path(), "ed25519", None);
    assert!(stranger.private.ends_with("id_ed25519_2"));
    let kh = known_hosts(&dir, "known_hosts_a", &[a.known_hosts_line()]);
    let out = ssh_with_key(&stranger.private, &kh, &a.addr, a.port, "echo ok");
    assert!(!out.status.success(), "unknown key was accepted");
}

#[test]
fn rsa_and_ecdsa_keys() {
    let dir = Dir::new("key-kinds");
    let rsa = client_key(dir.path(), "rsa", None);
    let ecdsa = client_key(dir.path(), "ecdsa", None);
    let locked = client_key(dir.path(), "ed25519", Some("secret passphrase"));
    let server = Sshd::start(dir.path(), &[&rsa, &ecdsa, &locked]);
    let kh = known_hosts(&dir, "known_hosts", &[server.known_hosts_line()]);
    for key in [&rsa, &ecdsa] {
        let out = ssh_with_key(&key.private, &kh, &server.addr, server.port, "echo ok");
        assert_prints(&out, "ok", &server);
    }
    assert!(rsa.public_line().starts_with("ssh-rsa "));
    assert!(ecdsa.public_line().starts_with("ecdsa-sha2-nistp256 "));

    // The passphrase really encrypts the key.
    let derive = |passphrase: &str| {
        Command::new("ssh-keygen")
            .args(["-y", "-P", passphrase, "-f"])
            .arg(&locked.private)
            .output()
            .expect("running ssh-keygen")
    };
    assert!(!derive("").status.success());
    let out = derive("secret passphrase");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1),
        locked.public_line().split_whitespace().nth(1)
    );
}

#[test]
fn stop_kills_sessions_and_restart_reuses_address() {
    let dir = Dir::new("stop-restart");
    let key = client_key(dir.path(), "ed25519", None);
    let mut server = Sshd::start(dir.path(), &[&key]);
    let (addr, port) = (server.addr.clone(), server.port);
    let kh = known_hosts(&dir, "known_hosts", &[server.known_hosts_line()]);

    // A long-running session, to check stop() takes it down too.
    let mut session = ssh(&kh, &addr, port)
        .arg("-i")
        .arg(&key.private)
        .args(["-o", "BatchMode=yes", "--", "echo started; exec sleep 60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning ssh");
    let mut first = String::new();
    BufReader::new(session.stdout.take().expect("piped"))
        .read_line(&mut first)
        .expect("reading from ssh");
    assert_eq!(first.trim(), "started", "{}", server.log());

    let stopped_at = Instant::now();
    server.stop();
    assert!(!server.is_running());
    let status = wait_for(Duration::from_secs(10), "the ssh session to end", || {
        session.try_wait().expect("try_wait")
    });
    assert!(!status.success());
    assert!(
        stopped_at.elapsed() < Duration::from_secs(8),
        "session outlived stop()"
    );
    let out = ssh_with_key(&key.private, &kh, &addr, port, "echo ok");
    assert!(!out.status.success(), "stopped server still answers");
    server.stop(); // idempotent

    server.restart();
    assert!(server.is_running());
    assert_eq!((server.addr.as_str(), server.port), (addr.as_str(), port));
    let out = ssh_with_key(&key.private, &kh, &addr, port, "echo ok");
    assert_prints(&out, "ok", &server);
    assert_eq!(server.log().matches("Server listening on").count(), 2);

    server.restart(); // restarting a running server stops it first
    let out = ssh_with_key(&key.private, &kh, &addr, port, "echo ok");
    assert_prints(&out, "ok", &server);
}

#[test]
fn proxy_forwards_and_injects_faults() {
    let dir = Dir::new("proxy");
    let key = client_key(dir.path(), "ed25519", None);
    let server = Sshd::start(dir.path(), &[&key]);
    let proxy = Proxy::start(&server.addr, server.port, Fault::None);
    assert!(proxy.addr.starts_with("127."));
    let kh = known_hosts(
        &dir,
        "known_hosts",
        &[server.known_hosts_line_as(&proxy.addr, proxy.port)],
    );

    let out = ssh_with_key(&key.private, &kh, &proxy.addr, proxy.port, "echo ok");
    assert_prints(&out, "ok", &server);
    let after_clean = proxy.bytes_forwarded();
    assert!(after_clean > 1000, "forwarded only {after_clean} bytes");

    proxy.set_fault(Fault::CutAfter(1000));
    assert_eq!(proxy.fault(), Fault::CutAfter(1000));
    let out = ssh_with_key(&key.private, &kh, &proxy.addr, proxy.port, "echo ok");
    assert!(!out.status.success(), "ssh survived a cut connection");
    eprintln!(
        "cut connection: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );

    proxy.set_fault(Fault::Slow {
        bytes_per_sec: 20_000,
    });
    let started = Instant::now();
    let out = ssh_with_key(&key.private, &kh, &proxy.addr, proxy.port, "echo ok");
    assert_prints(&out, "ok", &server);
    eprintln!("slow connection took {:.2?}", started.elapsed());

    // A stalled connection is accepted but never sees the server's banner.
    proxy.set_fault(Fault::Stall);
    // The slow connection's copy threads may still be flushing its last bytes:
    // sample the counter only once it has stopped moving for 200 ms.
    let mut last = (proxy.bytes_forwarded(), Instant::now());
    wait_until(
        Duration::from_secs(10),
        "earlier connections to go quiet",
        || {
            let now = proxy.bytes_forwarded();
            if now != last.0 {
                last = (now, Instant::now());
            }
            last.1.elapsed() > Duration::from_millis(200)
        },
    );
    let forwarded = proxy.bytes_forwarded();
    let mut stalled =
        TcpStream::connect((proxy.addr.as_str(), proxy.port)).expect("connecting to the proxy");
    stalled
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8; 1];
    let err = stalled
        .read(&mut byte)
        .expect_err("a stalled proxy sent data");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err}"
    );
    assert_eq!(proxy.bytes_forwarded(), forwarded);
    assert_eq!(proxy.connections_accepted(), 4);

    // Dropping the proxy closes even stalled connections, promptly.
    let dropped_at = Instant::now();
    drop(proxy);
    assert!(dropped_at.elapsed() < Duration::from_secs(3));
    stalled
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    assert_eq!(stalled.read(&mut byte).expect("EOF after drop"), 0);
}

#[test]
fn loopback_addresses_do_not_repeat_within_a_round() {
    // Two hosts of one test on one address made a watch test flaky (the
    // config check rejects a repeated ip_address). Tests on other threads
    // draw too, but 100 draws here stay within one round of 253 unless more
    // than 153 other servers start meanwhile.
    let drawn: Vec<String> = (0..100)
        .map(|_| crate::util::sshd::next_loopback_addr())
        .collect();
    let distinct: std::collections::HashSet<&String> = drawn.iter().collect();
    assert_eq!(
        distinct.len(),
        drawn.len(),
        "repeated loopback address in {drawn:?}"
    );
    for addr in &drawn {
        crate::util::sshd::assert_loopback(addr);
        assert!(
            addr != "127.0.0.1" && addr != "127.0.0.255",
            "{addr} is out of range"
        );
    }
}

#[test]
fn dir_helpers() {
    let dir = Dir::new("dir-helpers");
    let file = dir.write("a/b/c.txt", "hello");
    assert_eq!(file, dir.join("a/b/c.txt"));
    assert_eq!(dir.read("a/b/c.txt"), b"hello");
    let dest = dir.mkdir("remote/dest");
    dir.write("remote/dest/x", [0u8, 1, 2]);
    dir.chown_to_test_user("remote");
    let listing = dir.listing();
    assert!(listing.contains("a/b/c.txt"), "{listing}");
    if let Some((uid, _)) = crate::util::sshd::test_user_ids() {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&dest).unwrap().uid(), uid);
        assert!(listing.contains(&format!("{uid}:")), "{listing}");
    }
    eprintln!("{listing}");
}

#[test]
fn wait_helpers() {
    let mut calls = 0;
    let value = wait_for(Duration::from_secs(1), "the third call", || {
        calls += 1;
        (calls == 3).then_some(calls * 10)
    });
    assert_eq!(value, 30);
    wait_until(Duration::ZERO, "an immediately true condition", || true);
}

#[test]
#[should_panic(expected = "waiting for: something that never happens")]
fn wait_until_panics_after_deadline() {
    wait_until(
        Duration::from_millis(100),
        "something that never happens",
        || false,
    );
}

/// The servers, keys and known_hosts lines also work with libssh2 (through
/// the `ssh2` crate), the client hostsync itself uses.
#[test]
fn libssh2_client_compatibility() {
    use ssh2::{CheckResult, KnownHostFileKind, Session};

    let dir = Dir::new("libssh2");
    let ed25519 = client_key(dir.path(), "ed25519", None);
    let rsa = client_key(dir.path(), "rsa", None);
    let ecdsa = client_key(dir.path(), "ecdsa", None);
    let locked = client_key(dir.path(), "ed25519", Some("secret passphrase"));
    let server = Sshd::start(dir.path(), &[&ed25519, &rsa, &ecdsa, &locked]);
    let kh = known_hosts(&dir, "known_hosts", &[server.known_hosts_line()]);

    let connect = || {
        let tcp = TcpStream::connect((server.addr.as_str(), server.port)).expect("connect");
        let mut session = Session::new().expect("libssh2 session");
        session.set_timeout(10_000);
        session.set_tcp_stream(tcp);
        session.handshake().expect("handshake");
        let mut known = session.known_hosts().expect("known hosts");
        known
            .read_file(&kh, KnownHostFileKind::OpenSSH)
            .expect("reading known_hosts");
        let (key, _) = session.host_key().expect("host key");
        assert!(matches!(
            known.check_port(&server.addr, server.port, key),
            CheckResult::Match
        ));
        session
    };
    let user = test_user();
    for (key, passphrase) in [
        (&ed25519, None),
        (&rsa, None),
        (&ecdsa, None),
        (&locked, Some("secret passphrase")),
    ] {
        let session = connect();
        session
            .userauth_pubkey_file(&user, None, &key.private, passphrase)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", key.private.display(), server.log()));
        let mut channel = session.channel_session().expect("channel");
        channel.exec("echo ok").expect("exec");
        let mut out = String::new();
        channel.read_to_string(&mut out).expect("read");
        assert_eq!(out.trim(), "ok");
    }
    if is_root() {
        let session = connect();
        session
            .userauth_password(&user, TEST_PASSWORD)
            .unwrap_or_else(|e| panic!("password: {e}\n{}", server.log()));
        assert!(session.authenticated());
        assert!(connect().userauth_password(&user, "wrong").is_err());
    }
}

// ---------------------------------------------------------------------------
// Issue 16's foreign servers are what they claim to be
// ---------------------------------------------------------------------------

/// Prints what a login's shell and PATH offer, one `key=value` per line.
const PROBE: &str = r#"printf 'exe=%s\n' "$(readlink /proc/$$/exe)"
printf 'path=%s\n' "$PATH"
printf 'perl=%s\n' "$(command -v perl || echo none)"
printf 'scp=%s\n' "$(readlink -f "$(command -v scp)")"
if find . -maxdepth 0 -printf x >/dev/null 2>&1; then echo printf=works; else echo printf=fails; fi
case "$(tar --version 2>&1)" in *"GNU tar"*) echo tar=gnu ;; *) echo tar=other ;; esac
case "$(find --help 2>&1)" in *BusyBox*) echo find=busybox ;; *) echo find=other ;; esac
"#;

/// Runs `cmd`, printing command, status, output and `log` when `check` fails.
#[track_caller]
fn expect_run(cmd: &mut Command, log: &str, check: impl Fn(&Output) -> bool) -> Output {
    let out = cmd.output().expect("running the client");
    assert!(
        check(&out),
        "{cmd:?}: unexpected result ({})\n--- stdout\n{}--- stderr\n{}--- server log\n{log}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    out
}

/// `PROBE` over ssh shows BusyBox's sh, a PATH of applets, no perl, no
/// `find -printf`, no GNU tar, and OpenSSH's scp.
#[track_caller]
fn assert_busybox_login(known: &Path, addr: &str, port: u16, log: &dyn Fn() -> String) {
    use crate::util::foreign::{BB_BIN, busybox_user, ssh_as};
    let mut cmd = ssh_as(known, addr, port, busybox_user());
    cmd.arg(PROBE);
    let out = expect_run(&mut cmd, &log(), |o| o.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let scp = std::fs::canonicalize(crate::util::sshd::find_program("scp", "/usr/bin")).unwrap();
    let busybox = std::fs::canonicalize("/bin/busybox").unwrap();
    let want = format!(
        "exe={}\npath={BB_BIN}\nperl=none\nscp={}\nprintf=fails\ntar=other\nfind=busybox\n",
        busybox.display(),
        scp.display()
    );
    assert_eq!(text, want, "{cmd:?}\nserver log:\n{}", log());
}

/// The BusyBox login over OpenSSH: BusyBox's sh runs every command, with only
/// applets (and scp) on its PATH; the plain test user's login is still GNU.
#[test]
fn busybox_login_over_openssh_has_only_busybox_tools() {
    let dir = Dir::new("foreign-bb");
    let server = crate::util::foreign::busybox_sshd(dir.path());
    let kh = known_hosts(&dir, "known_hosts", &[server.known_hosts_line()]);
    assert_busybox_login(&kh, &server.addr, server.port, &|| server.log());
    // The same probe as the ordinary test user shows the GNU userland, so the
    // probe can tell the two apart.
    let key = client_key(dir.path(), "ed25519", None);
    let plain = Sshd::start(dir.path(), &[&key]);
    let kh = known_hosts(&dir, "known_hosts_plain", &[plain.known_hosts_line()]);
    let out = ssh_with_key(&key.private, &kh, &plain.addr, plain.port, PROBE);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("printf=works\ntar=gnu\n") && !text.contains("busybox"),
        "{text}\n{}",
        plain.log()
    );
}

/// Dropbear serves the BusyBox login (its own banner, scp's sink on PATH) and has
/// no SFTP subsystem.
#[test]
fn dropbear_serves_the_busybox_login_without_sftp() {
    use crate::util::foreign::{Dropbear, busybox_user, foreign_remote, sftp_batch};
    let dir = Dir::new("foreign-dropbear");
    let server = Dropbear::start(dir.path());
    let mut banner = String::new();
    let tcp = TcpStream::connect((server.addr.as_str(), server.port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    BufReader::new(tcp).read_line(&mut banner).unwrap();
    assert!(banner.starts_with("SSH-2.0-dropbear"), "{banner:?}");
    let kh = known_hosts(&dir, "known_hosts", &[server.known_hosts_line()]);
    assert_busybox_login(&kh, &server.addr, server.port, &|| server.log());
    let user = busybox_user();
    let out = sftp_batch(&kh, &server.addr, server.port, user, "ls /\n");
    // The subsystem's command runs in the login shell, which does not find it.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("/usr/lib/sftp-server: not found"),
        "sftp on Dropbear ({}): {}{stderr}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        server.log()
    );
    // OpenSSH's scp in its SCP mode (-O) reaches the scp sink on the BusyBox PATH.
    let env = crate::util::hostsync::Env::new("foreign-dropbear-scp");
    let dest = foreign_remote(&env, user, "d");
    let local = dir.write("payload.txt", "via scp\n");
    let mut scp = Command::new("scp");
    scp.args(["-O", "-q", "-F", "/dev/null", "-o"])
        .arg(format!("UserKnownHostsFile={}", kh.display()))
        .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i"])
        .arg(&user.key.private)
        .arg("-P")
        .arg(server.port.to_string())
        .arg(&local)
        .arg(format!("{}@{}:{}/", user.name, server.addr, dest.display()));
    expect_run(&mut scp, &server.log(), |o| o.status.success());
    assert_eq!(
        std::fs::read_to_string(dest.join("payload.txt")).unwrap(),
        "via scp\n"
    );
}

/// The SFTP-only account: a command is refused (sshd runs internal-sftp instead),
/// an SFTP session lists a folder.
#[test]
fn sftp_only_account_refuses_exec_but_lists_over_sftp() {
    use crate::util::foreign::{foreign_remote, sftp_batch, sftp_only_sshd, sftp_user, ssh_as};
    let dir = Dir::new("foreign-sftp");
    let server = sftp_only_sshd(dir.path());
    let kh = known_hosts(&dir, "known_hosts", &[server.known_hosts_line()]);
    let user = sftp_user();
    let mut cmd = ssh_as(&kh, &server.addr, server.port, user);
    cmd.arg("echo exec-ran");
    // internal-sftp reads the command's bytes as SFTP packets, says so and exits.
    expect_run(&mut cmd, &server.log(), |o| {
        let stdout = String::from_utf8_lossy(&o.stdout);
        !o.status.success()
            && !stdout.contains("exec-ran")
            && stdout.contains("This service allows sftp connections only.")
    });
    let env = crate::util::hostsync::Env::new("foreign-sftp-ls");
    let d = foreign_remote(&env, user, "d");
    std::fs::write(d.join("marker file"), "x").unwrap();
    let out = sftp_batch(
        &kh,
        &server.addr,
        server.port,
        user,
        &format!("ls -1 \"{}\"\n", d.display()),
    );
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("marker file"),
        "sftp ls failed ({}): {}{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
}
