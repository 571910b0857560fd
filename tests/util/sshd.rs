//! A real OpenSSH server per test.
//!
//! [`Sshd::start`] runs `/usr/sbin/sshd -D` on its own loopback address
//! (127.0.0.2–127.0.0.254) and a random port, with its own generated host key,
//! its own `authorized_keys` file and its own log, all inside the test's
//! scratch directory. Several servers can run at once (one per simulated
//! host), and each one can be stopped and restarted on the same address to
//! simulate a host going down and coming back.
//!
//! When the tests run as root they log in as a dedicated local user,
//! [`TEST_USER`], which [`ensure_test_user`] creates on first use (with the
//! password [`TEST_PASSWORD`], for password-authentication tests). Otherwise
//! they log in as the current user, with keys only.
//!
//! Only loopback addresses are ever used.

use std::fs::{self, File};
use std::hash::{BuildHasher, RandomState};
use std::io::{self, BufRead, BufReader, Read, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// The local user the tests log in as when they run as root.
pub const TEST_USER: &str = "hostsync-t";

/// The password of [`TEST_USER`]. Distinctive so tests can grep logs and
/// output for it to check that it never leaks.
pub const TEST_PASSWORD: &str = "pw-Zq8!hostsync-test";

/// Lock file serializing test-user creation across test processes.
const USER_LOCK_PATH: &str = "/tmp/hostsync-test-user.lock";

/// How long a server gets to come up before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How many ports to try when sshd dies on start-up (e.g. port in use).
const START_ATTEMPTS: usize = 5;

/// The ports servers are started on are drawn from this range.
const PORT_RANGE: std::ops::RangeInclusive<u16> = 20000..=60000;

const INSTALL_HINT: &str = "install it with: apt-get install openssh-server openssh-client";

// ---------------------------------------------------------------------------
// Test user
// ---------------------------------------------------------------------------

/// Whether the tests run as root (and so log in as [`TEST_USER`]).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// For a test that needs root (`why` says what for): true as root; otherwise it
/// prints that it skips and returns false, except under CI (which runs as root),
/// where it fails.
pub fn root_or_skip(why: &str) -> bool {
    if is_root() {
        return true;
    }
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "CI must run as root"
    );
    eprintln!("SKIPPED: needs root to {why}");
    false
}

/// Makes sure the ssh test user exists and `/run/sshd` is there.
///
/// As root: creates the local user [`TEST_USER`] (shell `/bin/sh`, an empty
/// home directory without rc files, password [`TEST_PASSWORD`]) unless it
/// exists, and (re)sets its password. Idempotent and safe to call from many
/// threads and processes at once: the work is serialized by an exclusive lock
/// on `/tmp/hostsync-test-user.lock` and done at most once per process.
///
/// Not as root: panics if `CI=true`; otherwise prints a loud warning and
/// returns, and the tests log in as the current user (password tests will
/// not work).
///
/// [`Sshd::start`] calls this itself.
pub fn ensure_test_user() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(ensure_test_user_uncached);
}

fn ensure_test_user_uncached() {
    if !is_root() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "the integration tests must run as root under CI \
                 (they create the ssh test user {TEST_USER:?})"
            );
        }
        // Written to stderr directly, bypassing the test harness's output
        // capture, so the warning is seen even when every test passes.
        let _ = writeln!(
            io::stderr(),
            "\n{bar}\nWARNING: not running as root, so the ssh test user {TEST_USER:?} is not \
             used.\nThe sshd tests log in as the current user ({user}) with keys only; \
             password-authentication\ntests need root. Run the tests as root for full \
             coverage (CI must).\n{bar}\n",
            bar = "!".repeat(78),
            user = test_user(),
        );
        return;
    }

    fs::create_dir_all("/run/sshd").unwrap_or_else(|e| panic!("mkdir -p /run/sshd: {e}"));
    fs::set_permissions("/run/sshd", fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod 0755 /run/sshd: {e}"));

    let _lock = user_lock();
    let entry = make_user(
        TEST_USER,
        &[
            "--shell",
            "/bin/sh",
            "--home-dir",
            &format!("/home/{TEST_USER}"),
            "--comment",
            "hostsync integration tests",
        ],
    );
    let home = PathBuf::from(passwd_field(&entry, 5));
    fs::create_dir_all(&home).unwrap_or_else(|e| panic!("mkdir -p {}: {e}", home.display()));
    for rc in [
        ".profile",
        ".bashrc",
        ".bash_profile",
        ".bash_logout",
        ".ssh/rc",
    ] {
        let _ = fs::remove_file(home.join(rc));
    }
    let (uid, gid) = (parse_id(&entry, 2), parse_id(&entry, 3));
    std::os::unix::fs::chown(&home, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", home.display()));
    fs::set_permissions(&home, fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", home.display()));

    // Always (re)set the password, in case the user predates a change of it.
    run_with_stdin(
        Command::new("chpasswd"),
        format!("{TEST_USER}:{TEST_PASSWORD}\n").as_bytes(),
    );
    // The lock is released when `_lock` is dropped.
}

/// The user the tests log in as: [`TEST_USER`] when running as root,
/// otherwise the current user.
pub fn test_user() -> String {
    if is_root() {
        return TEST_USER.to_owned();
    }
    static CURRENT: OnceLock<String> = OnceLock::new();
    CURRENT
        .get_or_init(|| {
            let out = run(Command::new("id").arg("-un"));
            String::from_utf8_lossy(&out).trim().to_owned()
        })
        .clone()
}

/// A second local user, with no login, who owns what an unprivileged attacker on
/// a remote host could write (issue 13's tests).
pub const ATTACKER: &str = "hostsync-a";

/// The uid and gid of [`ATTACKER`], creating the user on first use. Root only
/// (callers use [`root_or_skip`] first).
pub fn attacker_ids() -> (u32, u32) {
    static IDS: OnceLock<(u32, u32)> = OnceLock::new();
    *IDS.get_or_init(|| {
        assert!(is_root(), "the attacker user needs root");
        let _lock = user_lock();
        let entry = make_user(ATTACKER, &["--shell", "/usr/sbin/nologin"]);
        (parse_id(&entry, 2), parse_id(&entry, 3))
    })
}

/// The lock that serialises user creation across test processes (held while the
/// returned file is open).
pub fn user_lock() -> File {
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(USER_LOCK_PATH)
        .unwrap_or_else(|e| panic!("opening {USER_LOCK_PATH}: {e}"));
    lock.lock()
        .unwrap_or_else(|e| panic!("locking {USER_LOCK_PATH}: {e}"));
    lock
}

/// Creates local user `name` with `useradd ARGS` unless it exists (call under
/// [`user_lock`]: another process may be creating it); returns its passwd entry.
pub fn make_user(name: &str, args: &[&str]) -> String {
    if getent("passwd", name).is_none() {
        let mut useradd = Command::new("useradd");
        useradd.args(args).arg("--no-create-home");
        // A group of that name may survive from an earlier, removed user.
        if getent("group", name).is_some() {
            useradd.args(["--gid", name]);
        } else {
            useradd.arg("--user-group");
        }
        run(useradd.arg(name));
    }
    getent("passwd", name).unwrap_or_else(|| panic!("user {name} missing right after useradd"))
}

/// The uid and gid of [`TEST_USER`] when running as root (creating the user
/// if needed); `None` when not root, where the test user is the current user.
pub fn test_user_ids() -> Option<(u32, u32)> {
    if !is_root() {
        return None;
    }
    static IDS: OnceLock<(u32, u32)> = OnceLock::new();
    Some(*IDS.get_or_init(|| {
        ensure_test_user();
        let entry = getent("passwd", TEST_USER)
            .unwrap_or_else(|| panic!("user {TEST_USER} does not exist"));
        (parse_id(&entry, 2), parse_id(&entry, 3))
    }))
}

/// `getent DATABASE KEY`, or `None` if there is no such entry.
pub fn getent(database: &str, key: &str) -> Option<String> {
    let out = Command::new("getent")
        .args([database, key])
        .output()
        .unwrap_or_else(|e| panic!("running getent: {e}"));
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Field `index` (0-based) of a colon-separated passwd line.
pub fn passwd_field(entry: &str, index: usize) -> &str {
    entry
        .split(':')
        .nth(index)
        .unwrap_or_else(|| panic!("malformed passwd entry {entry:?}"))
}

pub fn parse_id(entry: &str, index: usize) -> u32 {
    let field = passwd_field(entry, index);
    field
        .parse()
        .unwrap_or_else(|e| panic!("bad id {field:?} in passwd entry {entry:?}: {e}"))
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

/// A random number, good enough for picking addresses and ports (not crypto).
pub fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    RandomState::new().hash_one((
        COUNTER.fetch_add(1, Ordering::Relaxed),
        std::process::id(),
        nanos,
    ))
}

/// The next loopback address in 127.0.0.2–127.0.0.254, as a string.
///
/// The first one is random (so runs differ); after that they go round the
/// range in order, so no two of the last 253 handed out in this process are
/// the same. Two hosts of one test must never share an address: hostsync
/// rightly rejects a config that lists an `ip_address` twice.
pub fn next_loopback_addr() -> String {
    static NEXT: OnceLock<AtomicU64> = OnceLock::new();
    let next = NEXT.get_or_init(|| AtomicU64::new(random_u64() % 253));
    format!("127.0.0.{}", 2 + next.fetch_add(1, Ordering::Relaxed) % 253)
}

/// Panics unless `addr` is an IPv4 loopback address: the tests must never
/// contact anything else.
pub fn assert_loopback(addr: &str) -> Ipv4Addr {
    let ip: Ipv4Addr = addr
        .parse()
        .unwrap_or_else(|e| panic!("{addr:?} is not an IPv4 address: {e}"));
    assert!(ip.is_loopback(), "{addr} is not a loopback address");
    ip
}

/// Panics unless `addr` is an IPv4 loopback address or `::1`; returns it parsed.
/// Servers may listen on `::1` (IPv6 tests); anything else is never contacted.
pub fn loopback_ip(addr: &str) -> IpAddr {
    if addr
        .parse::<Ipv6Addr>()
        .is_ok_and(|ip| ip == Ipv6Addr::LOCALHOST)
    {
        return IpAddr::V6(Ipv6Addr::LOCALHOST);
    }
    IpAddr::V4(assert_loopback(addr))
}

/// Runs a command to completion, panicking with its output on failure.
/// Returns its stdout.
pub fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Like [`run`], feeding `input` to the command's stdin.
fn run_with_stdin(mut cmd: Command, input: &[u8]) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input)
        .unwrap_or_else(|e| panic!("writing to {cmd:?}: {e}"));
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Finds an OpenSSH program: in `preferred` if it exists, else on `PATH`.
/// Panics with installation instructions if it is missing.
pub fn find_program(name: &str, preferred: &str) -> PathBuf {
    let preferred = Path::new(preferred).join(name);
    if preferred.is_file() {
        return preferred;
    }
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file() && candidate.is_absolute())
    });
    match found {
        Some(path) => path,
        None if std::env::var("CI").as_deref() == Ok("true") => panic!(
            "{name} is not installed on this CI machine, but the integration tests need it; \
             the CI script must {INSTALL_HINT}"
        ),
        None => panic!(
            "{name} is not installed, but the integration tests need a real OpenSSH; {INSTALL_HINT}"
        ),
    }
}

/// Absolute path of the sshd binary (sshd refuses to run from a relative path).
pub fn sshd_program() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| find_program("sshd", "/usr/sbin"))
        .clone()
}

/// Absolute path of ssh-keygen.
pub fn ssh_keygen_program() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| find_program("ssh-keygen", "/usr/bin"))
        .clone()
}

/// The (major, minor) version of the installed sshd, from `sshd -V`.
fn sshd_version() -> (u32, u32) {
    static VERSION: OnceLock<(u32, u32)> = OnceLock::new();
    *VERSION.get_or_init(|| {
        let out = Command::new(sshd_program())
            .arg("-V")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running sshd -V: {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // "OpenSSH_9.2p1 Debian-2+deb12u3, OpenSSL 3.0.15 3 Sep 2024"
        let parse = || -> Option<(u32, u32)> {
            let rest = &text[text.find("OpenSSH_")? + "OpenSSH_".len()..];
            let mut parts = rest.split(|c: char| !c.is_ascii_digit());
            Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
        };
        parse().unwrap_or_else(|| panic!("cannot parse the output of sshd -V: {text:?}"))
    })
}

/// Creates the first of `parent/prefix1`, `parent/prefix2`, ... that does not
/// exist yet, with mode 0755, and returns it.
pub fn create_unique_dir(parent: &Path, prefix: &str) -> PathBuf {
    for n in 1..10_000 {
        let dir = parent.join(format!("{prefix}{n}"));
        match fs::create_dir(&dir) {
            Ok(()) => {
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
                    .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.display()));
                return dir;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => panic!("mkdir {}: {e}", dir.display()),
        }
    }
    panic!("no unused {prefix}N directory name in {}", parent.display());
}

pub fn read_lossy(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

// ---------------------------------------------------------------------------
// Client keys
// ---------------------------------------------------------------------------

/// A client key pair generated by [`client_key`].
#[derive(Clone, Debug)]
pub struct ClientKey {
    /// The private key file (OpenSSH format, mode 0600).
    pub private: PathBuf,
    /// The public key file (`<private>.pub`).
    pub public: PathBuf,
}

impl ClientKey {
    /// The public key as one `authorized_keys` line, without the newline.
    pub fn public_line(&self) -> String {
        read_lossy(&self.public).trim().to_owned()
    }
}

/// Generates a new client key pair in `dir` with ssh-keygen.
///
/// `kind` is `"ed25519"`, `"rsa"` or `"ecdsa"`; `passphrase` encrypts the
/// private key. Files are named `id_<kind>`, `id_<kind>_2`, ... so several
/// keys of one kind can live in the same directory.
pub fn client_key(dir: &Path, kind: &str, passphrase: Option<&str>) -> ClientKey {
    assert!(
        matches!(kind, "ed25519" | "rsa" | "ecdsa"),
        "unsupported key kind {kind:?} (expected ed25519, rsa or ecdsa)"
    );
    let private = (1..10_000)
        .map(|n| match n {
            1 => dir.join(format!("id_{kind}")),
            n => dir.join(format!("id_{kind}_{n}")),
        })
        .find(|p| !p.exists() && !pub_path(p).exists())
        .expect("an unused key file name");
    generate_key(
        &private,
        kind,
        passphrase.unwrap_or(""),
        "hostsync-test-client",
    );
    ClientKey {
        public: pub_path(&private),
        private,
    }
}

/// `<private>.pub`, as ssh-keygen names it.
pub fn pub_path(private: &Path) -> PathBuf {
    let mut public = private.as_os_str().to_owned();
    public.push(".pub");
    PathBuf::from(public)
}

pub fn generate_key(private: &Path, kind: &str, passphrase: &str, comment: &str) {
    run(Command::new(ssh_keygen_program())
        .args(["-q", "-t", kind, "-N", passphrase, "-C", comment, "-f"])
        .arg(private));
}

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

/// A running (or stopped) OpenSSH server for one simulated host.
///
/// Dropping it kills the server and every session it is serving; if the
/// test is panicking, the server log is printed to stderr first.
pub struct Sshd {
    /// The loopback address it listens on, e.g. `"127.0.0.37"`.
    pub addr: String,
    /// The port it listens on.
    pub port: u16,
    /// The host public key, as in the `.pub` file:
    /// `"ssh-ed25519 AAAA... hostsync-test-host"`.
    pub host_pub_line: String,
    /// The server log (`sshd -E`, LogLevel VERBOSE). Appended to across
    /// restarts.
    pub log_path: PathBuf,
    /// The server's own directory: config, host key, authorized_keys, log.
    pub dir: PathBuf,
    config_path: PathBuf,
    stderr_path: PathBuf,
    /// Lines written at the end of every generated config (e.g. a `Match` block).
    extra_config: String,
    child: Option<Child>,
}

/// Why a start attempt failed without timing out.
struct Died(ExitStatus);

impl Sshd {
    /// Starts a server on a random loopback address that accepts the given
    /// client keys (and, as root, [`TEST_PASSWORD`]) for [`test_user()`].
    ///
    /// Its files go into a new subdirectory `sshd-N` of `dir`. Returns once
    /// the server accepts connections; panics with the server log if it does
    /// not come up within 10 s.
    pub fn start(dir: &Path, authorized: &[&ClientKey]) -> Sshd {
        Sshd::start_with(dir, authorized, None)
    }

    /// Like [`Sshd::start`], listening on `addr` (a 127.x.y.z address, or
    /// `::1` for IPv6) if given, otherwise on a random address in
    /// 127.0.0.2–127.0.0.254.
    pub fn start_with(dir: &Path, authorized: &[&ClientKey], addr: Option<&str>) -> Sshd {
        Sshd::start_configured(dir, authorized, addr, "")
    }

    /// Like [`Sshd::start_with`], with `extra` written at the end of the config
    /// from the first start on: more `AllowUsers`, or a `Match User` block (the
    /// SFTP-only account of `super::foreign`). Lines that
    /// [`Sshd::restart_with_config`] adds later land inside such a block.
    pub fn start_configured(
        dir: &Path,
        authorized: &[&ClientKey],
        addr: Option<&str>,
        extra: &str,
    ) -> Sshd {
        ensure_test_user();
        let program = sshd_program();
        let addr = match addr {
            Some(addr) => addr.to_owned(),
            None => next_loopback_addr(),
        };
        loopback_ip(&addr);

        let own_dir = create_unique_dir(dir, "sshd-");
        let text = own_dir.to_string_lossy();
        assert!(
            !text.contains(|c: char| c.is_whitespace() || c == '%' || c == '"'),
            "sshd config paths must not contain whitespace, % or quotes: {text}"
        );

        let host_key = own_dir.join("ssh_host_ed25519_key");
        generate_key(&host_key, "ed25519", "", "hostsync-test-host");
        let host_pub_line = read_lossy(&pub_path(&host_key)).trim().to_owned();

        // sshd reads authorized_keys as the logged-in user: keep it readable.
        let authorized_keys = own_dir.join("authorized_keys");
        let keys: String = authorized
            .iter()
            .map(|key| key.public_line() + "\n")
            .collect();
        fs::write(&authorized_keys, keys)
            .unwrap_or_else(|e| panic!("writing {}: {e}", authorized_keys.display()));
        fs::set_permissions(&authorized_keys, fs::Permissions::from_mode(0o644))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", authorized_keys.display()));

        let mut sshd = Sshd {
            addr,
            port: 0,
            host_pub_line,
            log_path: own_dir.join("sshd.log"),
            config_path: own_dir.join("sshd_config"),
            stderr_path: own_dir.join("sshd.stderr"),
            dir: own_dir,
            extra_config: extra.to_owned(),
            child: None,
        };

        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            sshd.port = free_port(&sshd.addr);
            sshd.write_config(&host_key, &authorized_keys);
            match sshd.spawn_and_wait(&program) {
                Ok(()) => return sshd,
                Err(Died(status)) => {
                    failures.push(format!("port {}: sshd exited with {status}", sshd.port));
                }
            }
        }
        panic!(
            "sshd did not start on {} after {START_ATTEMPTS} attempts ({}).\n{}",
            sshd.addr,
            failures.join("; "),
            sshd.diagnostics()
        );
    }

    /// The `known_hosts` line for this server:
    /// `"[127.0.0.37]:PORT ssh-ed25519 AAAA..."` (without the key comment).
    pub fn known_hosts_line(&self) -> String {
        self.known_hosts_line_as(&self.addr, self.port)
    }

    /// A `known_hosts` line declaring this server's host key for another
    /// address and port, e.g. a [`super::Proxy`] in front of it.
    pub fn known_hosts_line_as(&self, addr: &str, port: u16) -> String {
        let key: Vec<&str> = self.host_pub_line.split_whitespace().take(2).collect();
        format!("[{addr}]:{port} {}", key.join(" "))
    }

    /// The server log so far (including earlier runs before a restart).
    pub fn log(&self) -> String {
        read_lossy(&self.log_path)
    }

    /// Whether the server is currently running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Kills the server and every session it is serving (SIGKILL), as if
    /// the host had gone down. New connections are refused until
    /// [`Sshd::restart`]. Does nothing if already stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_tree(&mut child);
        }
    }

    /// Starts the server again on the same address and port with the same
    /// keys and config (stopping it first if it is running), and waits until
    /// it accepts connections.
    ///
    /// Panics with the log if that fails, e.g. because something else took
    /// the port in the meantime.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(Died(status)) = self.spawn_and_wait(&sshd_program()) {
            panic!(
                "sshd could not be restarted on {}:{} (exited with {status}).\n{}",
                self.addr,
                self.port,
                self.diagnostics()
            );
        }
    }

    /// Restarts the server with `lines` added to its config (e.g. `SetEnv PATH=...`
    /// to give remote commands a different PATH).
    pub fn restart_with_config(&mut self, lines: &str) {
        let mut config = read_lossy(&self.config_path);
        config.push_str(lines);
        if !lines.ends_with('\n') {
            config.push('\n');
        }
        fs::write(&self.config_path, config)
            .unwrap_or_else(|e| panic!("writing {}: {e}", self.config_path.display()));
        self.restart();
    }

    /// Removes the config lines that start with `prefix` (added by
    /// [`Sshd::restart_with_config`]); takes effect at the next restart.
    pub fn drop_config_lines(&self, prefix: &str) {
        let kept: String = read_lossy(&self.config_path)
            .lines()
            .filter(|l| !l.starts_with(prefix))
            .map(|l| format!("{l}\n"))
            .collect();
        fs::write(&self.config_path, kept)
            .unwrap_or_else(|e| panic!("writing {}: {e}", self.config_path.display()));
    }

    /// Restarts the server with `LogLevel level` instead of VERBOSE, e.g. `DEBUG1`
    /// to see each authentication request in the log.
    pub fn restart_with_log_level(&mut self, level: &str) {
        let config = read_lossy(&self.config_path)
            .replace("LogLevel VERBOSE\n", &format!("LogLevel {level}\n"));
        assert!(config.contains(&format!("LogLevel {level}\n")), "{config}");
        fs::write(&self.config_path, config)
            .unwrap_or_else(|e| panic!("writing {}: {e}", self.config_path.display()));
        self.restart();
    }

    fn write_config(&self, host_key: &Path, authorized_keys: &Path) {
        let sftp_server = Path::new("/usr/lib/openssh/sftp-server");
        let sftp = if sftp_server.is_file() {
            sftp_server.to_string_lossy().into_owned()
        } else {
            "internal-sftp".to_owned()
        };
        let mut config = format!(
            "# Generated by the hostsync integration-test harness.\n\
             ListenAddress {listen}\n\
             HostKey {host_key}\n\
             PidFile {pid}\n\
             AuthorizedKeysFile {authorized_keys}\n\
             AllowUsers {user}\n\
             StrictModes no\n\
             UsePAM no\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication yes\n\
             PermitEmptyPasswords no\n\
             KbdInteractiveAuthentication no\n\
             LogLevel VERBOSE\n\
             Subsystem sftp {sftp}\n\
             MaxSessions 50\n\
             MaxStartups 100\n\
             UseDNS no\n\
             PrintMotd no\n\
             PrintLastLog no\n",
            listen = SocketAddr::new(loopback_ip(&self.addr), self.port),
            host_key = host_key.display(),
            pid = self.dir.join("sshd.pid").display(),
            authorized_keys = authorized_keys.display(),
            user = test_user(),
        );
        // OpenSSH 9.8+ throttles sources that fail authentication or drop
        // connections; the fault-injection tests do that on purpose.
        if sshd_version() >= (9, 8) {
            config.push_str("PerSourcePenalties no\n");
        }
        // Last: a `Match` block in it applies to the end of the file.
        config.push_str(&self.extra_config);
        fs::write(&self.config_path, config)
            .unwrap_or_else(|e| panic!("writing {}: {e}", self.config_path.display()));
    }

    /// Spawns sshd with the current config and waits until it is ready.
    /// Returns `Err` if it exited first; panics if it is still not ready
    /// after [`START_TIMEOUT`].
    fn spawn_and_wait(&mut self, program: &Path) -> Result<(), Died> {
        assert!(self.child.is_none(), "sshd is already running");
        // The log is appended to across restarts: only look at the new part.
        let log_offset = fs::metadata(&self.log_path).map_or(0, |m| m.len());
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(&self.stderr_path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.stderr_path.display()));
        let stdout = stderr
            .try_clone()
            .unwrap_or_else(|e| panic!("dup {}: {e}", self.stderr_path.display()));
        let mut child = Command::new(program)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&self.config_path)
            .arg("-E")
            .arg(&self.log_path)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", program.display()));

        let listening = format!("Server listening on {} port {}.", self.addr, self.port);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Died(status));
            }
            let logged = read_from(&self.log_path, log_offset).contains(&listening);
            if logged && ssh_banner(&self.addr, self.port) && matches!(child.try_wait(), Ok(None)) {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                kill_tree(&mut child);
                panic!(
                    "sshd on {}:{} was not ready after {START_TIMEOUT:?}.\n{}",
                    self.addr,
                    self.port,
                    self.diagnostics()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Config, log and stderr of the server, for failure messages.
    pub fn diagnostics(&self) -> String {
        format!(
            "--- {} ---\n{}\n--- {} ---\n{}\n--- {} ---\n{}",
            self.config_path.display(),
            read_lossy(&self.config_path),
            self.log_path.display(),
            read_lossy(&self.log_path),
            self.stderr_path.display(),
            read_lossy(&self.stderr_path),
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            eprintln!(
                "=== sshd {}:{} log ({}) ===\n{}=== end of sshd log ===",
                self.addr,
                self.port,
                self.log_path.display(),
                self.log()
            );
        }
    }
}

/// A port in [`PORT_RANGE`] that nothing listens on at `addr` right now.
///
/// sshd may still lose a race for it, which [`Sshd::start_with`] handles by
/// retrying; probing first just avoids spawning sshd for ports known taken.
pub fn free_port(addr: &str) -> u16 {
    let ip = loopback_ip(addr);
    let span = u64::from(PORT_RANGE.end() - PORT_RANGE.start()) + 1;
    for _ in 0..100 {
        let offset = u16::try_from(random_u64() % span).expect("offset fits the range");
        let port = PORT_RANGE.start() + offset;
        if TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port found on {addr} after 100 tries");
}

/// The contents of `path` from byte `offset` on (empty if unreadable).
pub fn read_from(path: &Path, offset: u64) -> String {
    let Ok(bytes) = fs::read(path) else {
        return String::new();
    };
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// Whether an SSH server answers with its identification string on
/// `addr:port`.
///
/// Reads the whole identification line and then half-closes, so that sshd
/// sees an orderly EOF instead of a reset. The probe still shows up in the
/// server log as a connection from 127.0.0.1 that closed before key exchange.
pub fn ssh_banner(addr: &str, port: u16) -> bool {
    let target = SocketAddr::new(loopback_ip(addr), port);
    let Ok(stream) = TcpStream::connect_timeout(&target, Duration::from_millis(500)) else {
        return false;
    };
    if stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .is_err()
    {
        return false;
    }
    let mut line = Vec::new();
    let read = BufReader::new((&stream).take(256)).read_until(b'\n', &mut line);
    let _ = stream.shutdown(Shutdown::Write);
    read.is_ok() && line.starts_with(b"SSH-2.0-") && line.ends_with(b"\n")
}

// ---------------------------------------------------------------------------
// Killing a server with all its sessions
// ---------------------------------------------------------------------------

/// Kills `child` and all its descendants with SIGKILL, then reaps `child`.
///
/// sshd's per-connection processes call setsid(), so killing a process group
/// would miss them; instead the process tree is found through /proc. Every
/// process found is first frozen with SIGSTOP, so none can fork new ones
/// between the scan and the kill.
pub fn kill_tree(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        let root = i32::try_from(child.id()).expect("pid fits in i32");
        signal(root, libc::SIGSTOP);
        let mut victims = vec![root];
        // Bounded: each round only adds processes forked before the freeze.
        for _ in 0..20 {
            let new: Vec<i32> = descendants(&victims)
                .into_iter()
                .filter(|pid| !victims.contains(pid))
                .collect();
            if new.is_empty() {
                break;
            }
            for &pid in &new {
                signal(pid, libc::SIGSTOP);
            }
            victims.extend(new);
        }
        for &pid in &victims {
            signal(pid, libc::SIGKILL);
        }
    }
    let _ = child.wait();
}

fn signal(pid: i32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions; `pid` is positive,
    // so only that one process is signalled.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// All processes whose parent is in `roots` or, transitively, below them.
fn descendants(roots: &[i32]) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: Vec<(i32, i32)> = entries
        .filter_map(|entry| {
            let pid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // "pid (comm) state ppid ...": comm may contain spaces and parens.
            let after_comm = &stat[stat.rfind(')')? + 1..];
            let ppid = after_comm.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut found: Vec<i32> = roots.to_vec();
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        for &(pid, ppid) in &parents {
            if ppid == parent && !found.contains(&pid) {
                found.push(pid);
            }
        }
        i += 1;
    }
    found.split_off(roots.len())
}

// ---------------------------------------------------------------------------
// Freezing a server's sessions (issue 17: the keepalive finds a dead session)
// ---------------------------------------------------------------------------

/// Sessions frozen with SIGSTOP; dropping it resumes them (SIGCONT).
pub struct Frozen {
    /// The frozen processes.
    pub pids: Vec<i32>,
}

impl Sshd {
    /// Freezes (SIGSTOP) every process serving a session, not the listener: the
    /// sessions' TCP connections stay up but nothing answers on them, as on a
    /// hung host, while new connections are still accepted. Panics if there is
    /// no session to freeze.
    pub fn freeze_sessions(&self) -> Frozen {
        let root = i32::try_from(self.child.as_ref().expect("sshd is running").id())
            .expect("pid fits in i32");
        let pids = descendants(&[root]);
        assert!(
            !pids.is_empty(),
            "sshd {}:{} has no session to freeze",
            self.addr,
            self.port
        );
        for &pid in &pids {
            signal(pid, libc::SIGSTOP);
        }
        Frozen { pids }
    }

    /// The pids of this server's session processes that run perl (hostsync's
    /// agent is `perl -e BOOT ...`), found by walking its process tree.
    pub fn perl_sessions(&self) -> Vec<i32> {
        let root = i32::try_from(self.child.as_ref().expect("sshd is running").id())
            .expect("pid fits in i32");
        descendants(&[root])
            .into_iter()
            .filter(|pid| {
                fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    let mut args = c.split(|&b| b == 0);
                    args.next()
                        .is_some_and(|a| a == b"perl" || a.ends_with(b"/perl"))
                        && args.next() == Some(b"-e")
                })
            })
            .collect()
    }

    /// Kills (SIGKILL) process `pid`, one of [`Sshd::perl_sessions`].
    pub fn kill_session(&self, pid: i32) {
        signal(pid, libc::SIGKILL);
    }
}

impl Frozen {
    /// Whether every frozen process is still stopped (state `T` in /proc).
    pub fn still_frozen(&self) -> bool {
        self.pids.iter().all(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rfind(')')
                    .and_then(|i| stat[i + 1..].split_whitespace().next())
                    == Some("T")
            })
        })
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for &pid in &self.pids {
            signal(pid, libc::SIGCONT);
        }
    }
}
