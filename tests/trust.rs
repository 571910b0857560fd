//! Issue 4, "Trust", against real OpenSSH servers on loopback: `hostsync check`,
//! every authentication method and key format, secrets that never leak, the
//! permission warning, hostile remote paths and symlinks, IPv6 and DNS names,
//! host key policies (hashed, changed, unknown, off), and a stalled server.
//! Deletion with `"delete": true` never reaches outside dest, through sync or watch.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::hostsync::{Auth, Env, PASSWORD, Run, run_in, run_in_env};
use crate::util::{Agent, ClientKey, Fault, Proxy, Sshd, is_root, root_or_skip, test_user};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Password logins need the root-created test user. Off CI a non-root run skips
/// with a message; under CI (which runs as root) a non-root run fails.
fn password_tests_possible() -> bool {
    root_or_skip("log in with a password (the test user is created by root)")
}

/// Generates a client key with ssh-keygen; `pem` writes the old PEM format (`-m PEM`).
fn make_key(dir: &Path, name: &str, kind: &str, pem: bool, passphrase: &str) -> ClientKey {
    let private = dir.join(name);
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", kind, "-N", passphrase, "-C", "trust-test", "-f"])
        .arg(&private);
    if pem {
        cmd.args(["-m", "PEM"]);
    }
    let out = cmd.output().expect("running ssh-keygen");
    assert!(out.status.success(), "ssh-keygen: {out:?}");
    ClientKey {
        public: PathBuf::from(format!("{}.pub", private.display())),
        private,
    }
}

/// The first line of a private key file: which format it really is.
fn key_header(key: &ClientKey) -> String {
    let text = std::fs::read_to_string(&key.private).unwrap();
    text.lines().next().unwrap_or_default().to_string()
}

/// A connection_info.json entry for `sshd` logging in as the test user.
fn entry(sshd: &Sshd) -> Value {
    json!({"ip_address": sshd.addr, "port": sshd.port, "user": test_user()})
}

/// The server's host key fingerprint as `ssh-keygen -l -E sha256` prints it.
fn host_fingerprint(sshd: &Sshd) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(sshd.dir.join("ssh_host_ed25519_key.pub"))
        .output()
        .expect("running ssh-keygen -l");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let fp = text
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    assert!(fp.starts_with("SHA256:"), "ssh-keygen -l printed {text:?}");
    fp
}

/// Maps one small file to `addr` and returns where it must arrive.
fn map_one_file(env: &Env, addr: &str, remote: &str) -> PathBuf {
    env.src("hello.txt", "hello\n");
    let dest = env.remote(remote).join("hello.txt");
    env.map(addr, json!([{"src": "hello.txt", "dest": dest}]));
    dest
}

/// The `check` table row of `addr`, split into its columns: HOST PORT USER AUTH
/// FINGERPRINT STATUS, then REASON joined back (ROUTE, `direct` or `via B`, is
/// left out; tests/bastion.rs reads it; so is TIER, issue 16, after AUTH, which
/// tests/sftp.rs reads).
#[track_caller]
fn check_row(run: &Run, addr: &str) -> Vec<String> {
    let line = run
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(addr))
        .unwrap_or_else(|| panic!("no check row for {addr}\n{}", run.dump()));
    let mut cols: Vec<String> = line.split_whitespace().take(7).map(String::from).collect();
    cols.remove(4);
    let rest: Vec<&str> = line.split_whitespace().skip(7).collect();
    let route = if rest.first() == Some(&"via") { 2 } else { 1 };
    cols.push(
        rest.iter()
            .skip(route)
            .copied()
            .collect::<Vec<_>>()
            .join(" "),
    );
    cols
}

/// Lines of `log` that mention `addr` and contain `needle`.
fn lines_with<'a>(log: &'a str, addr: &str, needle: &str) -> Vec<&'a str> {
    log.lines()
        .filter(|l| l.contains(&format!("] {addr}: ")) && l.contains(needle))
        .collect()
}

// ---------------------------------------------------------------------------
// hostsync check
// ---------------------------------------------------------------------------

/// `check` prints one row per host (ip, port, user, auth, fingerprint, status,
/// reason), tests writability without creating anything, logs failures to
/// error.log, and exits 1 when any host failed, 0 when all are ready.
#[test]
fn check_reports_every_host_and_sends_nothing() {
    let mut env = Env::new("check");
    let good = env.sshd();
    let locked_host = env.sshd();
    let mut down = env.sshd();
    let unmapped = env.sshd();
    for h in [&good, &locked_host, &down, &unmapped] {
        env.add_host(h, Auth::Key);
    }
    down.stop();
    env.src("site/index.html", "hi");
    env.src("app.conf", "x");
    let r = env.remote("r");
    // Missing but creatable (a directory src) and an existing parent (a file src).
    env.map(
        &good.addr,
        json!([
            {"src": "site/", "dest": r.join("new/deeper/site")},
            {"src": "app.conf", "dest": r.join("app.conf")},
        ]),
    );
    // Not writable by the test user: owned by root (as root), or mode 0555.
    let locked = env.dir.mkdir("remote/locked");
    if !is_root() {
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    env.map(
        &locked_host.addr,
        json!([{"src": "app.conf", "dest": locked.join("sub/app.conf")}]),
    );
    env.map(
        &down.addr,
        json!([{"src": "app.conf", "dest": r.join("d")}]),
    );

    let run = env.run(&["check"]);
    run.expect(1);
    let user = test_user();
    let row = check_row(&run, &good.addr);
    assert_eq!(
        row[1..6],
        [
            good.port.to_string(),
            user.clone(),
            "publickey".into(),
            host_fingerprint(&good),
            "ok".into()
        ],
        "{}",
        run.dump()
    );
    assert_eq!(row[6], "2 destination dirs writable", "{}", run.dump());
    let row = check_row(&run, &locked_host.addr);
    assert_eq!(row[5], "failed", "{}", run.dump());
    assert!(
        row[6].contains("permission denied on the remote")
            && row[6].contains(&locked.join("sub").display().to_string()),
        "{}",
        run.dump()
    );
    let row = check_row(&run, &down.addr);
    assert_eq!((row[3].as_str(), row[4].as_str()), ("-", "-"));
    assert!(row[6].starts_with("host unreachable"), "{}", run.dump());
    let row = check_row(&run, &unmapped.addr);
    assert_eq!(row[5], "ok", "{}", run.dump());
    assert_eq!(
        row[6],
        "no mapping file; sync skips this host",
        "{}",
        run.dump()
    );
    assert_eq!(run.stdout.lines().count(), 5, "{}", run.dump());
    assert!(run.stdout.starts_with("HOST "), "{}", run.dump());

    // Nothing was created or sent.
    assert!(!r.join("new").exists() && !r.join("app.conf").exists());
    assert!(!locked.join("sub").exists());
    // Each failure is one error.log line starting with the host, as in sync.
    let errors = env.error_log();
    assert_eq!(
        lines_with(&errors, &locked_host.addr, "permission denied").len(),
        1,
        "{}",
        run.dump()
    );
    assert_eq!(
        lines_with(&errors, &down.addr, "host unreachable").len(),
        1,
        "{}",
        run.dump()
    );

    // With the failing hosts gone from the config, every host is ready: exit 0.
    let mut env2 = Env::new("check-ok");
    let h = env2.sshd();
    env2.add_host(&h, Auth::Key);
    map_one_file(&env2, &h.addr, "r");
    env2.run(&["check"]).expect(0);
}

/// A configuration error stops `check` with exit 2 and the same message as `sync`.
#[test]
fn check_config_errors_match_sync() {
    let mut env = Env::new("check-config");
    env.add_host_raw(json!({"ip_address": "300.1.1.1", "user": "u"}));
    let sync = env.run(&["sync"]);
    sync.expect(2);
    let check = env.run(&["check"]);
    check.expect(2);
    assert_eq!(
        check.stderr,
        sync.stderr,
        "{}\n{}",
        sync.dump(),
        check.dump()
    );
    assert!(
        check.stderr.contains("not a valid IPv4"),
        "{}",
        check.dump()
    );
    assert!(check.stdout.is_empty(), "{}", check.dump());
}

// ---------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------

/// ed25519, ecdsa and rsa keys in OpenSSH format, ecdsa and rsa in PEM format,
/// with and without passphrase, all log in with `identity_file`.
#[test]
fn key_types_and_formats_log_in() {
    let env = Env::new("keys");
    let d = env.dir.path();
    // (key, passphrase, expected first line)
    let keys = [
        (make_key(d, "ed", "ed25519", false, ""), "", "OPENSSH"),
        (make_key(d, "ec", "ecdsa", false, ""), "", "OPENSSH"),
        (make_key(d, "rsa", "rsa", false, ""), "", "OPENSSH"),
        (make_key(d, "ec.pem", "ecdsa", true, ""), "", "EC"),
        (make_key(d, "rsa.pem", "rsa", true, ""), "", "RSA"),
        (
            make_key(d, "edp", "ed25519", false, "pp-Ed-91xq"),
            "pp-Ed-91xq",
            "OPENSSH",
        ),
        (
            make_key(d, "ecp.pem", "ecdsa", true, "pp-Ec-91xq"),
            "pp-Ec-91xq",
            "EC",
        ),
        (
            make_key(d, "rsap.pem", "rsa", true, "pp-Rsa-91xq"),
            "pp-Rsa-91xq",
            "RSA",
        ),
    ];
    let authorized: Vec<&ClientKey> = keys.iter().map(|(k, _, _)| k).collect();
    let h = Sshd::start(d, &authorized);
    let mut env = env;
    env.trust(h.known_hosts_line());
    map_one_file(&env, &h.addr, "r");
    env.write_config();
    for (key, passphrase, header) in &keys {
        assert_eq!(
            key_header(key),
            format!("-----BEGIN {header} PRIVATE KEY-----"),
            "{}",
            key.private.display()
        );
        let mut host = entry(&h);
        host["identity_file"] = json!(key.private);
        if !passphrase.is_empty() {
            host["passphrase"] = json!(passphrase);
        }
        write_hosts(&env, &[host]);
        let run = run_in(&env.cfg(), env.dir.path(), &["check"]);
        run.expect(0);
        let row = check_row(&run, &h.addr);
        assert_eq!(row[3], "publickey", "{}", run.dump());
        assert_eq!(row[6], "1 destination dir writable", "{}", run.dump());
    }
}

/// An ed25519 key in PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----` as `openssl
/// genpkey` writes it, or `ENCRYPTED PRIVATE KEY` with a passphrase) and its
/// public key. `ssh-keygen -m PEM -t ed25519` cannot produce PEM (it writes the
/// OpenSSH format), so this is the only PEM ed25519 there is.
fn pkcs8_ed25519_key(dir: &Path, name: &str, passphrase: Option<&str>) -> ClientKey {
    use base64::Engine;
    let private = dir.join(name);
    let mut genpkey = Command::new("openssl");
    genpkey
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&private);
    if let Some(p) = passphrase {
        genpkey.args(["-aes-256-cbc", "-pass", &format!("pass:{p}")]);
    }
    let out = genpkey.output().expect("running openssl");
    assert!(out.status.success(), "{out:?}");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    // The SubjectPublicKeyInfo DER ends with the 32-byte raw public key.
    let der = Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-passin"])
        .arg(format!("pass:{}", passphrase.unwrap_or("")))
        .arg("-in")
        .arg(&private)
        .output()
        .expect("running openssl pkey");
    assert!(der.status.success() && der.stdout.len() > 32, "{der:?}");
    let raw = &der.stdout[der.stdout.len() - 32..];
    let mut blob = Vec::new();
    for part in [&b"ssh-ed25519"[..], raw] {
        blob.extend_from_slice(&(part.len() as u32).to_be_bytes());
        blob.extend_from_slice(part);
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(blob);
    let public = dir.join(format!("{name}.pub"));
    std::fs::write(&public, format!("ssh-ed25519 {b64} pkcs8\n")).unwrap();
    ClientKey { private, public }
}

/// libssh2 (through OpenSSL) also reads ed25519 keys in PKCS#8 PEM, plain and
/// encrypted with a passphrase.
#[test]
fn ed25519_pkcs8_pem_keys_log_in() {
    const PHRASE: &str = "pp-P8-20xq";
    let mut env = Env::new("pkcs8");
    let plain = pkcs8_ed25519_key(env.dir.path(), "p8", None);
    let locked = pkcs8_ed25519_key(env.dir.path(), "p8e", Some(PHRASE));
    assert_eq!(key_header(&plain), "-----BEGIN PRIVATE KEY-----");
    assert_eq!(key_header(&locked), "-----BEGIN ENCRYPTED PRIVATE KEY-----");
    let h = Sshd::start(env.dir.path(), &[&plain, &locked]);
    env.trust(h.known_hosts_line());
    map_one_file(&env, &h.addr, "r");
    env.write_config();
    for (key, phrase) in [(&plain, None), (&locked, Some(PHRASE))] {
        let mut host = entry(&h);
        host["identity_file"] = json!(key.private);
        if let Some(p) = phrase {
            host["passphrase"] = json!(p);
        }
        write_hosts(&env, &[host]);
        let run = run_in(&env.cfg(), env.dir.path(), &["check"]);
        run.expect(0);
        assert_eq!(check_row(&run, &h.addr)[3], "publickey", "{}", run.dump());
    }
}

/// Writes connection_info.json with exactly `hosts` (the rest of `env` unchanged).
fn write_hosts(env: &Env, hosts: &[Value]) {
    env.dir.write(
        "cfg/connection_info.json",
        serde_json::to_vec_pretty(&Value::Array(hosts.to_vec())).unwrap(),
    );
}

/// A passphrase inline or through `passphrase_env` opens the key; a wrong one fails
/// naming publickey, and `passphrase_env` naming an unset variable is a config error.
#[test]
fn key_passphrase_inline_and_from_env() {
    const PHRASE: &str = "phr-Kx42!trust";
    let mut env = Env::new("passphrase");
    let key = crate::util::client_key(env.dir.path(), "ed25519", Some(PHRASE));
    let h = Sshd::start(env.dir.path(), &[&key]);
    env.trust(h.known_hosts_line());
    let dest = map_one_file(&env, &h.addr, "r");
    env.write_config();
    let cfg = env.cfg();
    let home = env.dir.path();
    let mut host = entry(&h);
    host["identity_file"] = json!(key.private);

    host["passphrase"] = json!(PHRASE);
    write_hosts(&env, std::slice::from_ref(&host));
    run_in(&cfg, home, &["sync"]).expect(0);
    assert_eq!(std::fs::read(&dest).unwrap(), b"hello\n");

    host.as_object_mut().unwrap().remove("passphrase");
    host["passphrase_env"] = json!("TRUST_KEY_PHRASE");
    write_hosts(&env, std::slice::from_ref(&host));
    let run = run_in_env(&cfg, home, &["check"], &[("TRUST_KEY_PHRASE", PHRASE)]);
    run.expect(0);
    assert_eq!(check_row(&run, &h.addr)[3], "publickey", "{}", run.dump());

    let run = run_in_env(
        &cfg,
        home,
        &["check"],
        &[("TRUST_KEY_PHRASE", "wrong-Phrase-3")],
    );
    run.expect(1);
    assert!(
        check_row(&run, &h.addr)[6].contains("tried publickey"),
        "{}",
        run.dump()
    );
    let dump = run.dump();
    assert!(
        !dump.contains("wrong-Phrase-3") && !dump.contains(PHRASE),
        "{dump}"
    );
    run_in(&cfg, home, &["check"])
        .expect(2)
        .expect_output("passphrase_env names the environment variable TRUST_KEY_PHRASE");
}

/// `passkey_env` reads the password from the environment.
#[test]
fn passkey_from_env_logs_in() {
    if !password_tests_possible() {
        return;
    }
    let mut env = Env::new("passkey-env");
    let h = env.sshd();
    let mut host = entry(&h);
    host["passkey_env"] = json!("TRUST_PASSKEY");
    env.add_host_raw(host);
    env.trust(h.known_hosts_line());
    let dest = map_one_file(&env, &h.addr, "r");
    let run = env.run_env(&["sync"], &[("TRUST_PASSKEY", PASSWORD)]);
    run.expect(0);
    assert_eq!(std::fs::read(&dest).unwrap(), b"hello\n");
    assert!(
        env.info_log()
            .contains(&format!("{}: connected as", h.addr))
            && env.info_log().contains("(password, host key SHA256:"),
        "{}",
        run.dump()
    );
}

/// The ssh-agent (SSH_AUTH_SOCK) logs in when no identity_file or password is set.
#[test]
fn agent_logs_in() {
    let mut env = Env::new("agent");
    let h = env.sshd();
    let agent = Agent::start(env.dir.path());
    agent.add(&env.key);
    env.add_host_raw(entry(&h));
    env.trust(h.known_hosts_line());
    let dest = map_one_file(&env, &h.addr, "r");
    let run = env.run_env(&["check"], &[("SSH_AUTH_SOCK", agent.sock())]);
    run.expect(0);
    assert_eq!(check_row(&run, &h.addr)[3], "agent", "{}", run.dump());
    env.run_env(&["sync"], &[("SSH_AUTH_SOCK", agent.sock())])
        .expect(0);
    assert_eq!(std::fs::read(&dest).unwrap(), b"hello\n");
    // Without the agent there is nothing to try, and the message says what to add.
    env.run(&["check"])
        .expect(1)
        .expect_output("no method to try");
}

/// A key from identity_file is signed and sent at once: the server never gets the
/// "would you accept this key?" query first (our patch to the vendored libssh2, one
/// round trip less per login). Without the patch the same login shows two requests.
#[test]
fn identity_file_login_skips_the_key_query() {
    // sshd logs every publickey request at DEBUG1, the query as well as the
    // signed one, and each successful login at VERBOSE.
    let count = |log: &str| {
        let requests = log.matches("method publickey").count();
        let logins = log.matches("Accepted publickey").count();
        (requests, logins)
    };
    let mut env = Env::new("noquery");
    let mut h = env.sshd();
    h.restart_with_log_level("DEBUG1");
    env.add_host(&h, Auth::Key);
    let dest = map_one_file(&env, &h.addr, "r");
    env.run(&["sync"]).expect(0);
    assert_eq!(std::fs::read(&dest).unwrap(), b"hello\n");
    let log = h.log();
    let (requests, logins) = count(&log);
    assert!(logins >= 1, "no key login in the log:\n{log}");
    assert_eq!(requests, logins, "the key was queried first:\n{log}");
}

/// A wrong identity_file and an agent with a wrong key fall through to the password.
#[test]
fn wrong_key_and_agent_fall_through_to_password() {
    if !password_tests_possible() {
        return;
    }
    let mut env = Env::new("fallthrough");
    let h = env.sshd();
    let stranger = crate::util::client_key(env.dir.path(), "ecdsa", None);
    let agent = Agent::start(env.dir.path());
    agent.add(&stranger);
    let mut host = entry(&h);
    host["identity_file"] = json!(stranger.private);
    host["passkey"] = json!(PASSWORD);
    env.add_host_raw(host);
    env.trust(h.known_hosts_line());
    let dest = map_one_file(&env, &h.addr, "r");
    let run = env.run_env(&["sync"], &[("SSH_AUTH_SOCK", agent.sock())]);
    run.expect(0);
    assert_eq!(std::fs::read(&dest).unwrap(), b"hello\n");
    assert!(
        env.info_log().contains("(password, host key SHA256:"),
        "{}",
        run.dump()
    );
}

/// When every method fails, one error names each method tried, in order.
#[test]
fn all_methods_failing_are_each_named() {
    if !password_tests_possible() {
        return;
    }
    let mut env = Env::new("allfail");
    let h = env.sshd();
    let stranger = crate::util::client_key(env.dir.path(), "rsa", None);
    let agent = Agent::start(env.dir.path());
    agent.add(&stranger);
    let mut host = entry(&h);
    host["identity_file"] = json!(stranger.private);
    host["passkey"] = json!("not-the-Password-1");
    env.add_host_raw(host);
    env.trust(h.known_hosts_line());
    map_one_file(&env, &h.addr, "r");
    let run = env.run_env(&["sync"], &[("SSH_AUTH_SOCK", agent.sock())]);
    run.expect(1);
    let errors = env.error_log();
    let line = lines_with(&errors, &h.addr, "auth failed");
    assert_eq!(line.len(), 1, "{}", run.dump());
    let tried = line[0]
        .split_once(": tried ")
        .unwrap_or_else(|| panic!("no `tried` list\n{}", run.dump()))
        .1;
    let methods: Vec<&str> = tried
        .split(", ")
        .map(|m| m.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        methods,
        ["publickey", "agent", "password"],
        "{}",
        run.dump()
    );
    assert!(
        tried.contains(&stranger.private.display().to_string()),
        "{}",
        run.dump()
    );
}

// ---------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------

/// No password, passphrase or private key material appears in any output, log or
/// `--help`, across good, wrong and config-error runs of `sync` and `check`.
#[test]
fn secrets_never_appear_anywhere() {
    if !password_tests_possible() {
        return;
    }
    const WRONG: &str = "wrongPw-Secret-5521";
    const PHRASE: &str = "keyPhrase-Secret-7730";
    const NUMERIC: &str = "48151623420";
    let mut env = Env::new("secrets");
    let key = crate::util::client_key(env.dir.path(), "ed25519", Some(PHRASE));
    let good = Sshd::start(env.dir.path(), &[&key]);
    let bad = Sshd::start(env.dir.path(), &[]);
    let keyed = Sshd::start(env.dir.path(), &[&key]);
    let mut key_host = entry(&keyed);
    key_host["identity_file"] = json!(key.private);
    key_host["passphrase"] = json!(PHRASE);
    env.add_host(&good, Auth::Password(PASSWORD));
    env.add_host(&bad, Auth::Password(WRONG));
    env.add_host_raw(key_host);
    env.trust(keyed.known_hosts_line());
    env.src("f.txt", "data");
    let r = env.remote("r");
    for h in [&good, &bad, &keyed] {
        env.map(&h.addr, json!([{"src": "f.txt", "dest": r.join(&h.addr)}]));
    }
    let mut texts: Vec<(String, String)> = Vec::new();
    let mut keep = |name: &str, run: &Run, env: &Env| {
        texts.push((name.into(), format!("{}{}", run.stdout, run.stderr)));
        texts.push((format!("{name} logs"), env.info_log() + &env.error_log()));
    };
    let sync = env.run(&["sync"]);
    sync.expect(1);
    keep("sync", &sync, &env);
    let check = env.run(&["-v", "check"]);
    check.expect(1);
    keep("check", &check, &env);
    for args in [&["--help"][..], &["sync", "--help"], &["check", "--help"]] {
        let help = env.run(args);
        help.expect(0);
        keep(&args.join(" "), &help, &env);
    }
    // A config error: a numeric password has the wrong type; serde would echo it.
    let mut broken = Env::new("secrets-config");
    broken.add_host_raw(
        json!({"ip_address": "127.0.0.2", "user": "u", "passkey": NUMERIC.parse::<u64>().unwrap()}),
    );
    let run = broken.run(&["sync"]);
    run.expect(2).expect_output("passkey must be a string");
    keep("config error", &run, &broken);

    // Private key material: the body lines of the encrypted key and of the plain one.
    let key_text = std::fs::read_to_string(&key.private).unwrap()
        + &std::fs::read_to_string(&env.key.private).unwrap();
    let key_lines: Vec<&str> = key_text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(check.stdout.contains("publickey") && check.stdout.contains("password"));
    for (name, text) in &texts {
        for secret in [PASSWORD, WRONG, PHRASE, NUMERIC]
            .iter()
            .chain(key_lines.iter())
        {
            assert!(
                !text.contains(secret),
                "secret {secret:?} leaked in {name}:\n{text}"
            );
        }
    }
}

/// connection_info.json readable by others while it holds an inline secret: one
/// warning naming the file and the chmod, and the run goes on. chmod 600 silences it.
#[test]
fn readable_hosts_file_with_inline_secret_warns_but_runs() {
    let mut env = Env::new("perms");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    // The key logs in first; the (unused) inline password is what makes the file sensitive.
    let hosts = env.cfg().join("connection_info.json");
    let dest = map_one_file(&env, &h.addr, "r");
    env.write_config();
    let mut host = entry(&h);
    host["identity_file"] = json!(env.key.private);
    host["passkey"] = json!("unused-Inline-Pw");
    write_hosts(&env, std::slice::from_ref(&host));
    std::fs::set_permissions(&hosts, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = run_in(&env.cfg(), env.dir.path(), &["sync"]);
    run.expect(0);
    assert_eq!(std::fs::read(&dest).unwrap(), b"hello\n");
    let warnings: Vec<String> = env
        .error_log()
        .lines()
        .filter(|l| l.contains(" WARN "))
        .map(String::from)
        .collect();
    assert_eq!(warnings.len(), 1, "{}", run.dump());
    assert!(
        warnings[0].contains(&format!("{}: holds a passkey", hosts.display()))
            && warnings[0].contains(&format!("chmod 600 {}", hosts.display())),
        "{}",
        run.dump()
    );
    run.expect_output("chmod 600");

    std::fs::set_permissions(&hosts, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(env.cfg().join("logs/error.log")).unwrap();
    let run = run_in(&env.cfg(), env.dir.path(), &["check"]);
    run.expect(0);
    assert!(env.error_log().is_empty(), "{}", run.dump());
}

// ---------------------------------------------------------------------------
// Remote paths and names
// ---------------------------------------------------------------------------

/// A local name with a newline: the agent (NUL-separated, length-framed) carries
/// it byte-exact, and a second sync sends nothing; the SCP sink (line records)
/// refuses it with a clear error while its siblings arrive. A dest with a
/// newline is a config error.
#[test]
fn newline_names_go_where_the_protocol_carries_them() {
    let mut env = Env::new("newline");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    env.src("tree/good.txt", "good");
    env.src("tree/bad\nname.txt", "bad");
    let (ra, rs) = (env.remote("ra"), env.remote("rs"));
    env.map(&h.addr, json!([{"src": "tree/", "dest": ra.join("t")}]));
    let run = env.run(&["sync"]);
    run.expect(0);
    assert_eq!(
        std::fs::read(ra.join("t/bad\nname.txt")).unwrap(),
        b"bad",
        "{}",
        run.dump()
    );
    assert_eq!(std::fs::read(ra.join("t/good.txt")).unwrap(), b"good");
    let again = env.run(&["sync"]);
    again.expect(0);
    assert_eq!(again.row(&h.addr), (0, 2, 0, 0, 0), "{}", again.dump());

    env.map(&h.addr, json!([{"src": "tree/", "dest": rs.join("t")}]));
    let run = env.run_way(&["sync"], "scp");
    run.expect(1);
    assert_eq!(std::fs::read(rs.join("t/good.txt")).unwrap(), b"good");
    let names: Vec<_> = std::fs::read_dir(rs.join("t"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["good.txt"], "{}", env.dir.listing());
    assert!(
        env.error_log().contains(
            "the name contains a newline, which the SCP protocol cannot carry; rename it"
        ),
        "{}",
        run.dump()
    );

    env.map(&h.addr, json!([{"src": "tree/", "dest": "/tmp/a\nb"}]));
    env.run(&["sync"])
        .expect(2)
        .expect_output("contains a NUL or newline character");
}

/// Destinations full of shell syntax (spaces, both quotes, `$(...)`, backticks,
/// `;`, a leading `-`), a file src whose dest name starts with `-`, and a
/// non-UTF-8 directory name: `check` and `sync` treat every byte literally, and
/// the marker file that an injection would create never appears.
#[test]
fn hostile_destinations_are_literal_in_check_and_sync() {
    let mut env = Env::new("dests");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    // The marker's folder must be writable by the remote user, or an injected
    // `touch` would fail silently and prove nothing.
    let marker = env.remote("marker").join("INJECTED");
    let m = marker.display().to_string();
    let r = env.remote("r");
    let nasty = format!("-n a b; touch {m}; \"dq\" 'sq' $(touch {m}) `touch {m}` |x&");
    let dir_dest = r.join(&nasty).join("--help");
    let file_dest = r.join(format!("-e ;$(touch {m})")).join("-rf");
    env.src("tree/plain.txt", "plain");
    let odd = env
        .dir
        .join("cfg/tree")
        .join(std::ffi::OsStr::from_bytes(b"dir-\xff\xfe"));
    std::fs::create_dir_all(&odd).unwrap();
    std::fs::write(odd.join("inside.txt"), "inside").unwrap();
    env.src("-rf", "dash");
    env.map(
        &h.addr,
        json!([
            {"src": "tree/", "dest": dir_dest},
            {"src": "-rf", "dest": file_dest},
        ]),
    );
    let check = env.run(&["check"]);
    check.expect(0);
    assert!(
        !marker.exists(),
        "check ran a remote command\n{}",
        check.dump()
    );
    let created = std::fs::read_dir(&r).unwrap().count();
    assert_eq!(
        created,
        0,
        "check must create nothing\n{}",
        env.dir.listing()
    );
    let run = env.run(&["sync"]);
    run.expect(0);
    assert_eq!(std::fs::read(dir_dest.join("plain.txt")).unwrap(), b"plain");
    let odd_remote = dir_dest.join(std::ffi::OsStr::from_bytes(b"dir-\xff\xfe"));
    assert_eq!(
        std::fs::read(odd_remote.join("inside.txt")).unwrap(),
        b"inside",
        "{}",
        env.dir.listing()
    );
    assert_eq!(std::fs::read(&file_dest).unwrap(), b"dash");
    assert!(
        !marker.exists(),
        "a remote command ran\n{}\n{}",
        check.dump(),
        run.dump()
    );
    env.run(&["sync"]).expect(0);
    assert!(!marker.exists());
}

/// Symlinks inside a mirrored directory are recreated with the same target string,
/// never followed: the content of a file outside src never arrives.
#[test]
fn symlinks_are_recreated_not_followed() {
    const OUTSIDE: &str = "outside-content-Zt93";
    let mut env = Env::new("symlinks");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    let outside = env.src("outside/secret.txt", OUTSIDE);
    env.src("tree/sub/file.txt", "inside");
    let tree = env.cfg().join("tree");
    let links: [(&str, PathBuf); 4] = [
        ("rel", PathBuf::from("sub/file.txt")),
        ("abs-out", outside.clone()),
        ("dir-out", PathBuf::from("../outside")),
        ("dangling", PathBuf::from("no/such/target")),
    ];
    for (name, target) in &links {
        std::os::unix::fs::symlink(target, tree.join(name)).unwrap();
    }
    let r = env.remote("r");
    env.map(&h.addr, json!([{"src": "tree/", "dest": r.join("t")}]));
    let run = env.run(&["sync"]);
    run.expect(0);
    for (name, target) in &links {
        let p = r.join("t").join(name);
        let meta = std::fs::symlink_metadata(&p)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", p.display(), env.dir.listing()));
        assert!(
            meta.file_type().is_symlink(),
            "{} is not a symlink",
            p.display()
        );
        assert_eq!(&std::fs::read_link(&p).unwrap(), target);
    }
    // No regular file or directory under the destination holds the outside content.
    for e in walkdir::WalkDir::new(r.join("t")).follow_links(false) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let content = std::fs::read(e.path()).unwrap();
            assert_ne!(content, OUTSIDE.as_bytes(), "{}", e.path().display());
        }
    }
    // A second run sees the links as up to date.
    let again = env.run(&["sync"]);
    again.expect(0);
    assert_eq!(again.row(&h.addr).0, 0, "{}", again.dump());
}

// ---------------------------------------------------------------------------
// IPv6 and DNS names
// ---------------------------------------------------------------------------

/// `ip_address` "::1" against an sshd on [::1]: known_hosts `[::1]:port`, plain and
/// hashed, mapping file `mappings/::1.json`; `check` and `sync` both work.
#[test]
fn ipv6_literal_host() {
    let mut env = Env::new("ipv6");
    let h = Sshd::start_with(env.dir.path(), &[&env.key], Some("::1"));
    assert!(
        h.known_hosts_line()
            .starts_with(&format!("[::1]:{} ", h.port))
    );
    env.add_host(&h, Auth::Key);
    let dest = map_one_file(&env, "::1", "r");
    assert!(env.cfg().join("mappings/::1.json").is_file());
    let check = env.run(&["check"]);
    check.expect(0);
    assert_eq!(check_row(&check, "::1")[5], "ok", "{}", check.dump());
    env.run(&["sync"]).expect(0);
    assert_eq!(std::fs::read(&dest).unwrap(), b"hello\n");

    hash_known_hosts(&env.cfg().join("known_hosts"));
    std::fs::remove_file(&dest).unwrap();
    let run = run_in(&env.cfg(), env.dir.path(), &["sync"]);
    run.expect(0);
    assert_eq!(std::fs::read(&dest).unwrap(), b"hello\n");
}

/// A DNS name (`localhost`) as ip_address: resolved for the connection, matched
/// as `[localhost]:port` in known_hosts, mapping file `mappings/localhost.json`.
#[test]
fn dns_name_host() {
    let mut env = Env::new("dns");
    let h = Sshd::start_with(env.dir.path(), &[&env.key], Some("127.0.0.1"));
    let mut host = entry(&h);
    host["ip_address"] = json!("localhost");
    host["identity_file"] = json!(env.key.private);
    env.add_host_raw(host);
    env.trust(h.known_hosts_line_as("localhost", h.port));
    let dest = map_one_file(&env, "localhost", "r");
    let run = env.run(&["sync"]);
    run.expect(0);
    assert_eq!(std::fs::read(&dest).unwrap(), b"hello\n");
    assert!(
        env.info_log().contains("localhost: connected as"),
        "{}",
        run.dump()
    );
}

// ---------------------------------------------------------------------------
// Host keys
// ---------------------------------------------------------------------------

/// Hashes every entry of a known_hosts file in place (`ssh-keygen -H`).
fn hash_known_hosts(path: &Path) {
    let out = Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(path)
        .output()
        .expect("running ssh-keygen -H");
    assert!(out.status.success(), "ssh-keygen -H: {out:?}");
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.lines().all(|l| l.starts_with("|1|")),
        "not hashed:\n{text}"
    );
}

/// Hashed known_hosts entries (`ssh-keygen -H`) are accepted under strict.
#[test]
fn hashed_known_hosts_accepted_under_strict() {
    let mut env = Env::new("hashed");
    let a = env.sshd();
    let b = env.sshd();
    env.add_host(&a, Auth::Key);
    env.add_host(&b, Auth::Key);
    let da = map_one_file(&env, &a.addr, "a");
    let db = env.remote("b").join("hello.txt");
    env.map(&b.addr, json!([{"src": "hello.txt", "dest": db}]));
    env.ini("host_key_policy = strict\n");
    env.write_config();
    let known = env.cfg().join("known_hosts");
    hash_known_hosts(&known);
    assert!(!std::fs::read_to_string(&known).unwrap().contains(&a.addr));
    let run = run_in(&env.cfg(), env.dir.path(), &["sync"]);
    run.expect(0);
    assert!(da.exists() && db.exists(), "{}", run.dump());
}

/// `host_key_policy = off` connects without checking and warns once per host per run.
#[test]
fn policy_off_warns_once_per_host_per_run() {
    let mut env = Env::new("off");
    let a = env.sshd();
    let b = env.sshd();
    let key = env.key.private.clone();
    for h in [&a, &b] {
        let mut host = entry(h);
        host["identity_file"] = json!(key);
        env.add_host_raw(host);
    }
    map_one_file(&env, &a.addr, "a");
    env.map(
        &b.addr,
        json!([{"src": "hello.txt", "dest": env.remote("b").join("x")}]),
    );
    env.ini("host_key_policy = off\n");
    for (n, args) in [["sync"], ["check"]].iter().enumerate() {
        let run = env.run(args);
        run.expect(0);
        let errors = env.error_log();
        for h in [&a, &b] {
            let warned = lines_with(&errors, &h.addr, "host key not verified");
            assert_eq!(warned.len(), n + 1, "{}", run.dump());
            assert!(
                warned[n].contains(" WARN ") && warned[n].contains(&host_fingerprint(h)),
                "{}",
                run.dump()
            );
        }
    }
}

/// Under strict, an unknown key and a changed key each give one error.log line
/// naming the host, the key type, the SHA256 fingerprint seen, and what to do;
/// the other host carries on and known_hosts is not touched.
#[test]
fn strict_refuses_unknown_and_changed_keys_with_one_actionable_line() {
    let mut env = Env::new("strict");
    let unknown = env.sshd();
    let changed = env.sshd();
    let fine = env.sshd();
    env.add_host(&fine, Auth::Key);
    for h in [&unknown, &changed] {
        let mut host = entry(h);
        host["identity_file"] = json!(env.key.private);
        env.add_host_raw(host);
    }
    let impostor = crate::util::client_key(env.dir.path(), "ed25519", None);
    let fake = impostor.public_line();
    let fake_key: Vec<&str> = fake.split_whitespace().take(2).collect();
    env.trust(format!(
        "[{}]:{} {}",
        changed.addr,
        changed.port,
        fake_key.join(" ")
    ));
    env.src("hello.txt", "hello\n");
    let r = env.remote("r");
    for h in [&unknown, &changed, &fine] {
        env.map(
            &h.addr,
            json!([{"src": "hello.txt", "dest": r.join(&h.addr)}]),
        );
    }
    let before = {
        env.write_config();
        std::fs::read_to_string(env.cfg().join("known_hosts")).unwrap()
    };
    let run = run_in(&env.cfg(), env.dir.path(), &["sync"]);
    run.expect(1);
    assert!(r.join(&fine.addr).exists(), "{}", run.dump());
    assert!(!r.join(&unknown.addr).exists() && !r.join(&changed.addr).exists());
    let errors = env.error_log();
    let u = lines_with(&errors, &unknown.addr, "");
    assert_eq!(u.len(), 1, "{}", run.dump());
    for needle in [
        "host key unknown",
        "ssh-ed25519",
        &host_fingerprint(&unknown),
        &format!("ssh-keyscan -p {} {}", unknown.port, unknown.addr),
        "accept-new",
    ] {
        assert!(u[0].contains(needle), "{needle:?} missing\n{}", run.dump());
    }
    let c = lines_with(&errors, &changed.addr, "");
    assert_eq!(c.len(), 1, "{}", run.dump());
    for needle in [
        "host key mismatch",
        "ssh-ed25519",
        &host_fingerprint(&changed),
        &format!("ssh-keygen -R '[{}]:{}'", changed.addr, changed.port),
    ] {
        assert!(c[0].contains(needle), "{needle:?} missing\n{}", run.dump());
    }
    assert!(
        lines_with(&errors, &fine.addr, "").is_empty(),
        "{}",
        run.dump()
    );
    let after = std::fs::read_to_string(env.cfg().join("known_hosts")).unwrap();
    assert_eq!(before, after, "strict must not touch known_hosts");
}

// ---------------------------------------------------------------------------
// Network faults
// ---------------------------------------------------------------------------

/// A server that accepts the TCP connection and then says nothing is given up on
/// after connect_timeout, while the other host in the same run completes; the
/// same for `check`. Elapsed time is only a sanity bound (3x the timeout).
#[test]
fn stalled_server_is_given_up_after_connect_timeout() {
    const TIMEOUT_S: u64 = 2;
    let mut env = Env::new("stall");
    let good = env.sshd();
    let victim = env.sshd();
    let proxy = Proxy::start(&victim.addr, victim.port, Fault::Stall);
    env.add_host(&good, Auth::Key);
    env.add_host_raw(json!({"ip_address": proxy.addr, "port": proxy.port, "user": test_user(), "identity_file": env.key.private}));
    env.trust(victim.known_hosts_line_as(&proxy.addr, proxy.port));
    env.ini(&format!("connect_timeout = {TIMEOUT_S}\n"));
    let dest = map_one_file(&env, &good.addr, "good");
    env.map(
        &proxy.addr,
        json!([{"src": "hello.txt", "dest": env.remote("stalled").join("hello.txt")}]),
    );
    let bound = Duration::from_secs(3 * TIMEOUT_S);
    for args in [["sync"], ["check"]] {
        let started = Instant::now();
        let run = env.run(&args);
        let took = started.elapsed();
        run.expect(1);
        assert!(took < bound, "took {took:?}\n{}", run.dump());
        assert!(dest.exists(), "{}", run.dump());
        let errors = env.error_log();
        let stalled = lines_with(&errors, &proxy.addr, "");
        assert!(
            stalled.last().is_some_and(|l| l.contains(&format!(
                "host unreachable: ssh handshake timed out: no answer within connect_timeout ({TIMEOUT_S}s)"
            ))),
            "{}",
            run.dump()
        );
    }
    assert!(proxy.connections_accepted() >= 2);
}

/// `"delete": true` never removes or writes anything outside dest: remote symlinks
/// that lead outside are removed as links (sync), never written through, and a
/// local delete below a remote symlinked directory is refused (watch).
#[test]
fn deletion_never_reaches_outside_dest() {
    let mut env = Env::new("delete-escape");
    let h = env.sshd();
    env.add_host(&h, Auth::Key);
    let r = env.remote("r");
    let outside = env.remote("outside");
    std::fs::write(outside.join("precious"), "keep me").unwrap();
    let dest = r.join("www");
    std::fs::create_dir_all(&dest).unwrap();
    // Extraneous remote entries: a link to a directory outside, and one to a file.
    std::os::unix::fs::symlink(&outside, dest.join("link-dir")).unwrap();
    std::os::unix::fs::symlink(outside.join("precious"), dest.join("link-file")).unwrap();
    // Where the local tree has a directory, the remote has a link leading outside.
    std::os::unix::fs::symlink(&outside, dest.join("sub")).unwrap();
    env.dir.chown_to_test_user("remote");
    env.src("site/sub/precious", "overwrite attempt");
    env.src("site/keep/f", "f");
    env.map(
        &h.addr,
        json!([{"src": "site/", "dest": dest, "delete": true}]),
    );

    let run = env.run(&["sync"]);
    run.expect(1);
    assert!(
        !dest.join("link-dir").exists() && !dest.join("link-file").exists(),
        "{}",
        env.dir.listing()
    );
    assert_eq!(
        std::fs::read_to_string(outside.join("precious")).unwrap(),
        "keep me",
        "{}",
        run.dump()
    );
    assert!(
        std::fs::symlink_metadata(dest.join("sub"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        env.error_log().contains("exists and is not a directory"),
        "{}",
        run.dump()
    );
    assert_eq!(std::fs::read_to_string(dest.join("keep/f")).unwrap(), "f");

    // Watch: the remote `keep` becomes a link to outside; deleting keep/f locally
    // must not delete outside/f.
    std::fs::write(outside.join("f"), "outside f").unwrap();
    std::fs::remove_dir_all(dest.join("keep")).unwrap();
    std::os::unix::fs::symlink(&outside, dest.join("keep")).unwrap();
    std::fs::remove_file(env.cfg().join("site/sub/precious")).unwrap();
    std::fs::remove_dir(env.cfg().join("site/sub")).unwrap();
    std::fs::remove_file(dest.join("sub")).unwrap();
    let daemon = env.watch();
    // The start-up reconcile first (it reports the remote `keep` link as "not a
    // directory"); a delete it scanned after would never become a path event.
    crate::util::wait_until(
        Duration::from_secs(15),
        "start-up reconcile seen keep",
        || {
            let log = daemon.info_log();
            log.rsplit_once("] watching ").is_some_and(|(_, after)| {
                after.contains("site/keep -> ") && after.contains("exists and is not a directory")
            })
        },
    );
    let refusals = || {
        daemon
            .error_log()
            .lines()
            .filter(|l| l.contains("site/keep -> ") && l.contains("exists and is not a directory"))
            .count()
    };
    let before = refusals();
    std::fs::remove_file(env.cfg().join("site/keep/f")).unwrap();
    std::fs::write(env.cfg().join("site/marker"), "m").unwrap();
    crate::util::wait_until(
        Duration::from_secs(15),
        "marker arrives after the delete",
        || std::fs::read_to_string(dest.join("marker")).is_ok_and(|m| m == "m"),
    );
    // The round for the delete (before the marker's, or the same) sees the remote
    // `keep` is a link and removes nothing below it (the agent never looks
    // through it). `keep` was failing already, so error.log keeps its one line
    // (issue 17: one line when a path starts failing, not one per round).
    assert_eq!(refusals(), before, "{}", daemon.dump());
    assert_eq!(
        std::fs::read_to_string(outside.join("f")).unwrap(),
        "outside f",
        "{}",
        daemon.dump()
    );
    assert_eq!(
        std::fs::read_to_string(outside.join("precious")).unwrap(),
        "keep me"
    );
}
