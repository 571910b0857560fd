//! Foreign servers (issue 16): hosts that are not a GNU/Linux userland behind OpenSSH.
//!
//! * [`busybox_user`]: a real local user whose login shell is BusyBox `sh` with a
//!   PATH of BusyBox applets and OpenSSH's `scp` only, as on Alpine or OpenWrt:
//!   no GNU find, no GNU tar, no perl on its PATH. sshd and Dropbear run every
//!   command as `$SHELL -c COMMAND`, and Dropbear sets its own PATH, so the login
//!   shell is [`BB_LOGIN_SHELL`], a script run by BusyBox `sh` that sets PATH to
//!   [`BB_BIN`] and `exec`s BusyBox `sh` with the same arguments: every command
//!   really runs in BusyBox's ash (`/proc/$$/exe` is `/bin/busybox`). The shell is
//!   listed in `/etc/shells`, which Dropbear requires.
//! * [`sftp_user`] and [`sftp_only_sshd`]: an OpenSSH account limited to
//!   `ForceCommand internal-sftp` (a `Match User` block), as web hosts and file
//!   drops hand out.
//! * [`Dropbear`]: a real Dropbear sshd on a loopback address, serving the BusyBox
//!   user from its `~/.ssh/authorized_keys`; it has no SFTP subsystem (its
//!   compiled-in sftp-server, `/usr/lib/sftp-server`, does not exist).
//!
//! The users, their keys and the applet folder are made once per machine under
//! `/opt/hostsync-test` (under the harness's user lock, so parallel test processes
//! and worktrees agree) and reused: each user has one fixed key
//! ([`ForeignUser::key`]), so no two tests race on its `authorized_keys`. All of it
//! needs root; without root these helpers fail loudly instead of skipping (CI runs
//! as root). Only loopback addresses are used.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::json;

use super::hostsync::Env;
use super::sshd::{
    ClientKey, Sshd, create_unique_dir, find_program, free_port, generate_key, getent, is_root,
    kill_tree, make_user, next_loopback_addr, parse_id, passwd_field, pub_path, read_from,
    read_lossy, run, ssh_banner, user_lock,
};

/// The user whose login shell is BusyBox `sh`.
pub const BUSYBOX_USER: &str = "hostsync-bb";

/// The user limited to `ForceCommand internal-sftp` (on servers from [`sftp_only_sshd`]).
pub const SFTP_USER: &str = "hostsync-sftp";

/// Where the machine-wide pieces live (root-owned, mode 0755).
const BASE: &str = "/opt/hostsync-test";

/// The folder of applet symlinks (to `/bin/busybox`) plus OpenSSH's `scp`: the
/// BusyBox user's whole PATH.
pub const BB_BIN: &str = "/opt/hostsync-test/busybox/bin";

/// The BusyBox user's login shell (see the module docs).
pub const BB_LOGIN_SHELL: &str = "/opt/hostsync-test/busybox/login-sh";

/// The BusyBox binary (Debian `busybox-static`).
const BUSYBOX: &str = "/bin/busybox";

/// How long a Dropbear server gets to come up.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A local user for foreign-server tests, with one fixed key pair.
#[derive(Debug)]
pub struct ForeignUser {
    /// The login name.
    pub name: &'static str,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
    /// Its home directory.
    pub home: PathBuf,
    /// Its key pair (private key root-owned, 0600), authorized wherever it logs in.
    pub key: ClientKey,
}

/// Panics, loudly, unless the tests run as root: these users cannot exist otherwise.
fn require_root(what: &str) {
    assert!(
        is_root(),
        "the foreign-server tests (issue 16) need root to create the local user {what}; \
         run the tests as root, as CI does"
    );
}

/// The BusyBox user, made on first use (see the module docs).
pub fn busybox_user() -> &'static ForeignUser {
    static USER: OnceLock<ForeignUser> = OnceLock::new();
    USER.get_or_init(|| {
        require_root(BUSYBOX_USER);
        assert!(
            Path::new(BUSYBOX).is_file(),
            "{BUSYBOX} is missing: install it with apt-get install busybox-static (.ci/run does)"
        );
        let _lock = user_lock();
        install_busybox_path();
        allow_shell(BB_LOGIN_SHELL);
        make_foreign_user(BUSYBOX_USER, BB_LOGIN_SHELL)
    })
}

/// The SFTP-only user, made on first use (a normal `/bin/sh` account; the
/// server's `Match User` block is what limits it).
pub fn sftp_user() -> &'static ForeignUser {
    static USER: OnceLock<ForeignUser> = OnceLock::new();
    USER.get_or_init(|| {
        require_root(SFTP_USER);
        let _lock = user_lock();
        make_foreign_user(SFTP_USER, "/bin/sh")
    })
}

/// Makes `BB_BIN` (one symlink per applet of `busybox --list`, plus `scp`) and
/// `BB_LOGIN_SHELL`; only what is missing or different is written.
fn install_busybox_path() {
    fs::create_dir_all(BB_BIN).unwrap_or_else(|e| panic!("mkdir -p {BB_BIN}: {e}"));
    for dir in [BASE, "/opt/hostsync-test/busybox", BB_BIN] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod 0755 {dir}: {e}"));
    }
    let list = run(Command::new(BUSYBOX).arg("--list"));
    let scp = find_program("scp", "/usr/bin");
    let applets = String::from_utf8_lossy(&list).into_owned();
    let links = applets
        .lines()
        .filter(|a| !a.is_empty() && !a.contains('/'))
        .map(|a| (a.to_owned(), PathBuf::from(BUSYBOX)))
        .chain([("scp".to_owned(), scp)]);
    for (name, target) in links {
        let link = Path::new(BB_BIN).join(&name);
        if fs::read_link(&link).ok().as_deref() != Some(target.as_path()) {
            let _ = fs::remove_file(&link);
            std::os::unix::fs::symlink(&target, &link)
                .unwrap_or_else(|e| panic!("ln -s {} {}: {e}", target.display(), link.display()));
        }
    }
    let script = format!(
        "#!{BUSYBOX} sh\n\
         # Login shell of hostsync's BusyBox test user (tests/util/foreign.rs): BusyBox sh\n\
         # with a PATH of BusyBox applets and OpenSSH's scp only, as on Alpine or OpenWrt.\n\
         PATH={BB_BIN}\n\
         export PATH\n\
         exec {BB_BIN}/sh \"$@\"\n"
    );
    if fs::read_to_string(BB_LOGIN_SHELL).ok().as_deref() != Some(script.as_str()) {
        let tmp = format!("{BB_LOGIN_SHELL}.new");
        fs::write(&tmp, &script).unwrap_or_else(|e| panic!("writing {tmp}: {e}"));
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod {tmp}: {e}"));
        fs::rename(&tmp, BB_LOGIN_SHELL)
            .unwrap_or_else(|e| panic!("mv {tmp} {BB_LOGIN_SHELL}: {e}"));
    }
}

/// Adds `shell` to `/etc/shells` unless it is there (Dropbear refuses other shells).
fn allow_shell(shell: &str) {
    let shells = fs::read_to_string("/etc/shells").unwrap_or_default();
    if shells.lines().any(|l| l.trim() == shell) {
        return;
    }
    let mut text = shells;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(shell);
    text.push('\n');
    fs::write("/etc/shells", text).unwrap_or_else(|e| panic!("writing /etc/shells: {e}"));
}

/// Creates (or fixes) user `name` with login shell `shell`, an rc-free home and its
/// fixed key in `~/.ssh/authorized_keys` (Dropbear's strict modes: 0755 home,
/// 0700 `.ssh`, 0600 file, all the user's). Call under [`user_lock`].
fn make_foreign_user(name: &'static str, shell: &str) -> ForeignUser {
    let home = PathBuf::from(format!("/home/{name}"));
    let home_text = home.to_string_lossy().into_owned();
    let args = ["--shell", shell, "--home-dir", &home_text];
    let mut entry = make_user(
        name,
        &[&args[..], &["--comment", "hostsync tests"]].concat(),
    );
    if passwd_field(&entry, 6) != shell || passwd_field(&entry, 5) != home_text {
        run(Command::new("usermod").args(args).arg(name));
        entry = getent("passwd", name).unwrap_or_else(|| panic!("user {name} vanished"));
    }
    // useradd locks the new account ("!"), which sshd refuses even for keys:
    // "*" is no password, and not locked.
    run(Command::new("usermod").args(["-p", "*", name]));
    let (uid, gid) = (parse_id(&entry, 2), parse_id(&entry, 3));
    let key = fixed_key(name);
    let ssh_dir = home.join(".ssh");
    fs::create_dir_all(&ssh_dir).unwrap_or_else(|e| panic!("mkdir -p {}: {e}", ssh_dir.display()));
    for rc in [
        ".profile",
        ".bashrc",
        ".ashrc",
        ".ssh/rc",
        ".ssh/environment",
    ] {
        let _ = fs::remove_file(home.join(rc));
    }
    let keys = ssh_dir.join("authorized_keys");
    fs::write(&keys, key.public_line() + "\n")
        .unwrap_or_else(|e| panic!("writing {}: {e}", keys.display()));
    for (path, mode) in [(&home, 0o755), (&ssh_dir, 0o700), (&keys, 0o600)] {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    }
    ForeignUser {
        name,
        uid,
        gid,
        home,
        key,
    }
}

/// The fixed key pair of user `name` in `BASE/keys` (made if missing).
fn fixed_key(name: &str) -> ClientKey {
    let dir = Path::new(BASE).join("keys");
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir -p {}: {e}", dir.display()));
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.display()));
    let private = dir.join(format!("id_ed25519_{name}"));
    if !private.is_file() || !pub_path(&private).is_file() {
        let _ = fs::remove_file(&private);
        let _ = fs::remove_file(pub_path(&private));
        generate_key(&private, "ed25519", "", &format!("{name}@hostsync-tests"));
    }
    ClientKey {
        public: pub_path(&private),
        private,
    }
}

/// An OpenSSH server (the harness's [`Sshd`]) where the BusyBox user logs in.
pub fn busybox_sshd(dir: &Path) -> Sshd {
    let user = busybox_user();
    Sshd::start_configured(
        dir,
        &[&user.key],
        None,
        &format!("AllowUsers {}\n", user.name),
    )
}

/// An OpenSSH server where [`SFTP_USER`] gets nothing but `internal-sftp`.
pub fn sftp_only_sshd(dir: &Path) -> Sshd {
    let user = sftp_user();
    let extra = format!(
        "AllowUsers {name}\nMatch User {name}\n    ForceCommand internal-sftp\n",
        name = user.name
    );
    Sshd::start_configured(dir, &[&user.key], None, &extra)
}

/// Changes the owner of `path` and everything below it (links not followed).
pub fn chown_tree(path: &Path, user: &ForeignUser) {
    for entry in walkdir::WalkDir::new(path) {
        let entry = entry.unwrap_or_else(|e| panic!("walking {}: {e}", path.display()));
        std::os::unix::fs::lchown(entry.path(), Some(user.uid), Some(user.gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", entry.path().display()));
    }
}

/// A destination folder `fremote/NAME` of `env` that `user` owns, below folders
/// only root can write (so no ancestor rule refuses it), e.g. `fremote/h1`.
pub fn foreign_remote(env: &Env, user: &ForeignUser, name: &str) -> PathBuf {
    let base = env.dir.mkdir("fremote");
    fs::set_permissions(&base, fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", base.display()));
    let dir = env.dir.mkdir(Path::new("fremote").join(name));
    chown_tree(&dir, user);
    dir
}

/// Adds a host at `addr:port` with host key line `known` to `env`'s
/// connection_info.json, logging in as `user` with its fixed key.
pub fn add_foreign_host(env: &mut Env, addr: &str, port: u16, known: String, user: &ForeignUser) {
    env.add_host_raw(json!({
        "ip_address": addr,
        "port": port,
        "user": user.name,
        "identity_file": user.key.private,
    }));
    env.trust(known);
}

/// An OpenSSH client command logging in to `addr:port` as `user` with its key,
/// checking the host key strictly against `known_hosts`, no user configuration.
pub fn ssh_as(known_hosts: &Path, addr: &str, port: u16, user: &ForeignUser) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.args(["-F", "/dev/null", "-o"])
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args(client_options())
        .arg("-i")
        .arg(&user.key.private)
        .arg("-p")
        .arg(port.to_string())
        .arg(format!("{}@{addr}", user.name))
        .stdin(Stdio::null());
    cmd
}

/// OpenSSH's `sftp -b -` against `addr:port` as `user`, reading `batch` as its commands.
pub fn sftp_batch(
    known_hosts: &Path,
    addr: &str,
    port: u16,
    user: &ForeignUser,
    batch: &str,
) -> Output {
    let mut child = Command::new("sftp")
        .args(["-F", "/dev/null", "-o"])
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args(client_options())
        .arg("-i")
        .arg(&user.key.private)
        .arg("-P")
        .arg(port.to_string())
        .args(["-b", "-"])
        .arg(format!("{}@{addr}", user.name))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running sftp: {e}"));
    std::io::Write::write_all(&mut child.stdin.take().expect("piped"), batch.as_bytes())
        .unwrap_or_else(|e| panic!("writing sftp's batch: {e}"));
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for sftp: {e}"))
}

/// The options every client command of these helpers shares.
fn client_options() -> [&'static str; 14] {
    [
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=5",
        "-o",
        "ServerAliveInterval=2",
        "-o",
        "ServerAliveCountMax=3",
    ]
}

/// A running (or stopped) Dropbear server serving the BusyBox user.
///
/// Dropping it kills the server and every session it serves; if the test is
/// panicking, the server log is printed first.
pub struct Dropbear {
    /// The loopback address it listens on.
    pub addr: String,
    /// The port it listens on.
    pub port: u16,
    /// The host public key line (`ssh-ed25519 AAAA... comment`).
    pub host_pub_line: String,
    /// Its log (`-E`: stderr), appended to across restarts.
    pub log_path: PathBuf,
    /// Its own folder: host key, pid file, log.
    pub dir: PathBuf,
    /// The host key file (Dropbear's format).
    host_key: PathBuf,
    /// The server process while it runs.
    child: Option<Child>,
}

impl Dropbear {
    /// Starts Dropbear on a fresh loopback address and port with a new ed25519 host
    /// key; the BusyBox user is made first. Panics with the log if it does not
    /// come up within 10 s.
    pub fn start(dir: &Path) -> Dropbear {
        busybox_user();
        let own = create_unique_dir(dir, "dropbear-");
        let host_key = own.join("dropbear_ed25519_host_key");
        let keygen = find_program("dropbearkey", "/usr/bin");
        run(Command::new(&keygen)
            .args(["-t", "ed25519", "-f"])
            .arg(&host_key));
        let public = run(Command::new(&keygen).arg("-y").arg("-f").arg(&host_key));
        let host_pub_line = String::from_utf8_lossy(&public)
            .lines()
            .find(|l| l.starts_with("ssh-ed25519 "))
            .unwrap_or_else(|| panic!("no public key in dropbearkey -y's output"))
            .to_owned();
        let mut server = Dropbear {
            addr: next_loopback_addr(),
            port: 0,
            host_pub_line,
            log_path: own.join("dropbear.log"),
            dir: own,
            host_key,
            child: None,
        };
        let mut failures = Vec::new();
        for _ in 0..5 {
            server.port = free_port(&server.addr);
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(why) => failures.push(format!("port {}: {why}", server.port)),
            }
        }
        panic!(
            "dropbear did not start on {} ({}):\n{}",
            server.addr,
            failures.join("; "),
            server.log()
        );
    }

    /// Runs `dropbear -F -E` and waits until it answers with an SSH banner;
    /// `Err` when it exits first.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let program = find_program("dropbear", "/usr/sbin");
        let log = fs::File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.log_path.display()));
        let offset = fs::metadata(&self.log_path).map_or(0, |m| m.len());
        // Dropbear runs its compiled-in /usr/lib/sftp-server for the "sftp"
        // subsystem, which Debian's openssh-sftp-server provides: hide it in a mount
        // namespace of the server's own, as on a host that lacks it (OpenWrt).
        let mut child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "/bin/sh", "-c"])
            .arg(hide_sftp_server())
            .arg(&program)
            .args(["-F", "-E", "-s", "-m", "-r"])
            .arg(&self.host_key)
            .arg("-P")
            .arg(self.dir.join("dropbear.pid"))
            .arg("-p")
            .arg(format!("{}:{}", self.addr, self.port))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup the log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", program.display()));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "exited with {status}: {}",
                    read_from(&self.log_path, offset).trim()
                ));
            }
            if ssh_banner(&self.addr, self.port) {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                kill_tree(&mut child);
                panic!(
                    "dropbear on {}:{} was not ready after {START_TIMEOUT:?}:\n{}",
                    self.addr,
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The `known_hosts` line for this server (`[addr]:port ssh-ed25519 AAAA...`).
    pub fn known_hosts_line(&self) -> String {
        self.known_hosts_line_as(&self.addr, self.port)
    }

    /// A `known_hosts` line with this server's key for another address and port
    /// (a proxy in front of it).
    pub fn known_hosts_line_as(&self, addr: &str, port: u16) -> String {
        let key: Vec<&str> = self.host_pub_line.split_whitespace().take(2).collect();
        format!("[{addr}]:{port} {}", key.join(" "))
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        read_lossy(&self.log_path)
    }

    /// Kills the server and its sessions. Does nothing if it is stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_tree(&mut child);
        }
    }

    /// Starts it again on the same address, port and key.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(why) = self.spawn_and_wait() {
            panic!("dropbear could not be restarted: {why}\n{}", self.log());
        }
    }
}

/// Dropbear's compiled-in SFTP server.
const DROPBEAR_SFTP_SERVER: &str = "/usr/lib/sftp-server";

/// An sh script (run under `unshare --mount`) that hides [`DROPBEAR_SFTP_SERVER`]
/// and then `exec`s its arguments: a tmpfs over the folder of OpenSSH's helpers
/// where the path leads there (Debian), else `/dev/null` bound over the file, so
/// running it fails as on a host without one; nothing where there is none.
fn hide_sftp_server() -> String {
    let hide = match fs::canonicalize(DROPBEAR_SFTP_SERVER) {
        Ok(real) if real.parent() == Some(Path::new("/usr/lib/openssh")) => {
            "mount -t tmpfs -o mode=0755 hostsync-no-sftp /usr/lib/openssh".to_owned()
        }
        Ok(real) => format!("mount --bind /dev/null '{}'", real.display()),
        Err(_) => "true".to_owned(),
    };
    format!(
        "{hide} || {{ echo 'cannot hide {DROPBEAR_SFTP_SERVER}' >&2; exit 1; }}\nexec \"$0\" \"$@\""
    )
}

impl Drop for Dropbear {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "=== dropbear {}:{} log ({}) ===\n{}=== end of dropbear log ===",
                self.addr,
                self.port,
                self.log_path.display(),
                self.log()
            );
        }
    }
}
