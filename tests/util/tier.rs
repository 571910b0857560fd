//! Issue 16's test matrix: the [`Target`]s every tier case runs against, and the
//! [`World`] of one case (an [`Env`], its server, the login user, the address
//! hostsync dials).
//!
//! The targets are the three foreign hosts of [`super::foreign`] (the BusyBox-only
//! login behind OpenSSH, the same login behind Dropbear, the SFTP-only account),
//! each with `[ssh] transfer` left at `auto`, and the plain OpenSSH host with each
//! tier forced (`transfer = gnu`, `sftp`, `posix`). A target knows how to start its
//! server and log in, the `transfer` key it sets, which tier `check` must name,
//! how its batches go (the `-v` line's `over WAY`), and whether names with a
//! newline are carried (README, "Names"). The cases themselves are written once,
//! in `tests/tier.rs`; the helpers here are what they (and `tests/posix.rs`,
//! `tests/sftp.rs`) share: the hostile site, tree comparison, settling counts.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::dir::set_mtime;
use super::foreign::{
    Dropbear, ForeignUser, busybox_sshd, busybox_user, chown_tree, foreign_remote, sftp_only_sshd,
    sftp_user,
};
use super::hostsync::{Daemon, Env, Run};
use super::sshd::{getent, passwd_field};
use super::{Fault, Proxy, Sshd, test_user, wait_until};

/// How long a watched change may take to arrive (far above the real latency).
pub const ARRIVE: Duration = Duration::from_secs(20);

/// One host of issue 16's matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// OpenSSH, the BusyBox-only login, `transfer` at auto.
    BusyBox,
    /// Dropbear (no SFTP subsystem), the BusyBox-only login, `transfer` at auto.
    Dropbear,
    /// OpenSSH, `ForceCommand internal-sftp`, `transfer` at auto.
    SftpOnly,
    /// OpenSSH, the ordinary test user, `[ssh] transfer = gnu`.
    Gnu,
    /// OpenSSH, the ordinary test user, `[ssh] transfer = sftp`.
    Sftp,
    /// OpenSSH, the ordinary test user, `[ssh] transfer = posix`.
    Posix,
}

impl Target {
    /// The `[ssh] transfer` value it sets; `None` leaves it at `auto`.
    pub fn transfer(self) -> Option<&'static str> {
        match self {
            Target::BusyBox | Target::Dropbear | Target::SftpOnly => None,
            Target::Gnu => Some("gnu"),
            Target::Sftp => Some("sftp"),
            Target::Posix => Some("posix"),
        }
    }

    /// The tier `check` must name for it (TIER column, JSON `tier`).
    pub fn tier(self) -> &'static str {
        match self {
            Target::BusyBox | Target::Dropbear | Target::Posix => "posix",
            Target::SftpOnly | Target::Sftp => "sftp",
            Target::Gnu => "gnu",
        }
    }

    /// How its batches go, as the `-v` line names it (README, "Logs"): BusyBox's
    /// tar is not one hostsync streams to, so those logins get the SCP sink.
    pub fn way(self) -> &'static str {
        match self {
            Target::BusyBox | Target::Dropbear => "scp",
            Target::SftpOnly | Target::Sftp => "sftp",
            Target::Posix => "tar",
            Target::Gnu => "agent",
        }
    }

    /// Whether names with a newline are carried: the agent and SFTP do; the
    /// posix tier refuses them (its SCP sink's records are lines; README "Names").
    pub fn newlines(self) -> bool {
        matches!(self, Target::SftpOnly | Target::Sftp | Target::Gnu)
    }

    /// The foreign user it logs in as; `None` for the ordinary test user.
    fn foreign_user(self) -> Option<&'static ForeignUser> {
        match self {
            Target::BusyBox | Target::Dropbear => Some(busybox_user()),
            Target::SftpOnly => Some(sftp_user()),
            Target::Gnu | Target::Sftp | Target::Posix => None,
        }
    }

    /// Starts its server for `env`.
    fn start(self, env: &Env) -> Server {
        match self {
            Target::BusyBox => Server::Open(busybox_sshd(env.dir.path())),
            Target::Dropbear => Server::Bear(Dropbear::start(env.dir.path())),
            Target::SftpOnly => Server::Open(sftp_only_sshd(env.dir.path())),
            Target::Gnu | Target::Sftp | Target::Posix => Server::Open(env.sshd()),
        }
    }
}

/// The server of one case.
pub enum Server {
    /// An OpenSSH sshd.
    Open(Sshd),
    /// A Dropbear sshd.
    Bear(Dropbear),
}

impl Server {
    /// The loopback address it listens on.
    pub fn addr(&self) -> &str {
        match self {
            Server::Open(s) => &s.addr,
            Server::Bear(s) => &s.addr,
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        match self {
            Server::Open(s) => s.port,
            Server::Bear(s) => s.port,
        }
    }

    /// A `known_hosts` line with its key for `addr:port` (itself or a proxy).
    pub fn known_hosts_line_as(&self, addr: &str, port: u16) -> String {
        match self {
            Server::Open(s) => s.known_hosts_line_as(addr, port),
            Server::Bear(s) => s.known_hosts_line_as(addr, port),
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        match self {
            Server::Open(s) => s.log(),
            Server::Bear(s) => s.log(),
        }
    }
}

/// One case's world: an [`Env`], its server, and the user hostsync logs in as.
pub struct World {
    /// The server, dropped first, so its log is printed before `env`'s folder goes.
    pub server: Server,
    /// The config folder, hosts and mappings.
    pub env: Env,
    /// The target this world serves.
    pub target: Target,
    /// The login user; `None` for the ordinary test user.
    user: Option<&'static ForeignUser>,
    /// The address hostsync dials (the server's, or a proxy's).
    pub addr: String,
}

impl World {
    /// A server of `target`, added to a fresh env as its one host.
    pub fn new(target: Target, name: &str) -> World {
        let mut w = World::unconnected(target, name);
        let (addr, port) = (w.server.addr().to_owned(), w.server.port());
        w.add_host(&addr, port);
        w
    }

    /// Like [`World::new`], reached through a [`Proxy`] with `fault`.
    pub fn behind_proxy(target: Target, name: &str, fault: Fault) -> (World, Proxy) {
        let mut w = World::unconnected(target, name);
        let proxy = Proxy::start(w.server.addr(), w.server.port(), fault);
        w.add_host(&proxy.addr, proxy.port);
        (w, proxy)
    }

    fn unconnected(target: Target, name: &str) -> World {
        let mut env = Env::new(name);
        let server = target.start(&env);
        if let Some(tier) = target.transfer() {
            env.ini(&format!("transfer = {tier}\n"));
        }
        World {
            server,
            env,
            target,
            user: target.foreign_user(),
            addr: String::new(),
        }
    }

    /// Adds the host at `addr:port`, as the login user with its key, trusting
    /// the server's host key there.
    fn add_host(&mut self, addr: &str, port: u16) {
        let (user, key) = match self.user {
            Some(u) => (u.name.to_owned(), u.key.private.clone()),
            None => (test_user(), self.env.key.private.clone()),
        };
        self.env.add_host_raw(json!({
            "ip_address": addr, "port": port, "user": user, "identity_file": key,
        }));
        let known = self.server.known_hosts_line_as(addr, port);
        self.env.trust(known);
        self.addr = addr.to_owned();
    }

    /// A destination folder the login user owns.
    pub fn remote(&self, name: &str) -> PathBuf {
        match self.user {
            Some(user) => foreign_remote(&self.env, user, name),
            None => self.env.remote(name),
        }
    }

    /// Gives `path` (and what is below it) to the login user.
    pub fn own(&self, path: &Path) {
        match self.user {
            Some(user) => chown_tree(path, user),
            None => {
                let rel = path.strip_prefix(self.env.dir.path()).unwrap();
                self.env.dir.chown_to_test_user(rel);
            }
        }
    }

    /// The login user's home directory (where a remote command would start).
    pub fn home(&self) -> PathBuf {
        match self.user {
            Some(user) => user.home.clone(),
            None => {
                let name = test_user();
                let entry =
                    getent("passwd", &name).unwrap_or_else(|| panic!("no passwd entry for {name}"));
                PathBuf::from(passwd_field(&entry, 5))
            }
        }
    }

    /// Writes a local source file under `cfg/` with `mode`.
    pub fn src(&self, rel: &str, body: &str, mode: u32) -> PathBuf {
        let p = self.env.src(rel, body);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    /// Runs hostsync.
    pub fn run(&self, args: &[&str]) -> Run {
        self.env.run(args)
    }

    /// A run's dump plus the remote folders and the server log, for failure messages.
    pub fn dump(&self, run: &Run) -> String {
        self.dump_text(&run.dump())
    }

    /// A daemon's dump plus the remote folders and the server log.
    pub fn dump_daemon(&self, d: &Daemon) -> String {
        self.dump_text(&d.dump())
    }

    /// The `"type": "check"` object of a `check --json` run (panics with the dump
    /// when there is none).
    pub fn check_object(&self, run: &Run) -> Value {
        run.stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["type"] == "check")
            .unwrap_or_else(|| panic!("no check object\n{}", self.dump(run)))
    }

    fn dump_text(&self, what: &str) -> String {
        format!(
            "target: {:?}\n{what}\n{}--- server log\n{}",
            self.target,
            self.env.dir.listing(),
            self.server.log()
        )
    }
}

/// The site every sync case pushes: nested folders (one empty), modes, mtimes with
/// a fraction, a symlink, names with spaces, quotes, `$(...)` and backquotes (and
/// a newline where the target carries one); and a single-file mapping. Returns the
/// remote folder and the count of files and symlinks.
pub fn hostile_site(w: &World, pwned: &str) -> (PathBuf, u64) {
    let r = w.remote("r");
    let dollar = format!("site/$(touch {pwned}).txt");
    let backquote = format!("site/`touch {pwned}`.sh");
    let mut files = vec![
        ("site/a/b/deep.txt", "deep\n", 0o640),
        ("site/with space.txt", "space\n", 0o644),
        ("site/it's \"quoted\".txt", "quotes\n", 0o600),
        (dollar.as_str(), "dollar\n", 0o644),
        (backquote.as_str(), "#!/bin/sh\n", 0o755),
    ];
    if w.target.newlines() {
        files.push(("site/new\nline.txt", "newline\n", 0o644));
    }
    for (i, (rel, body, mode)) in files.iter().enumerate() {
        let p = w.src(rel, body, *mode);
        set_mtime(&p, 1_600_000_000 + i as u64 * 1000, 123_456_789);
    }
    w.env.dir.mkdir("cfg/site/empty");
    for (dir, mode) in [("site/empty", 0o750), ("site/a", 0o711)] {
        std::fs::set_permissions(w.env.cfg().join(dir), std::fs::Permissions::from_mode(mode))
            .unwrap();
    }
    std::os::unix::fs::symlink("a/b/deep.txt", w.env.cfg().join("site/link")).unwrap();
    let conf = w.src("conf/app.conf", "key = value\n", 0o600);
    set_mtime(&conf, 1_500_000_000, 0);
    w.env.map(
        &w.addr,
        json!([
            {"src": "site/", "dest": r.join("www")},
            {"src": "conf/app.conf", "dest": r.join("etc/app.conf")},
        ]),
    );
    (r, files.len() as u64 + 2)
}

/// What a path is, for comparing a local and a remote tree: kind, mode, size,
/// mtime in whole seconds, content or link target.
pub fn state(p: &Path) -> String {
    let md = p.symlink_metadata().unwrap();
    if md.file_type().is_symlink() {
        format!("link -> {}", std::fs::read_link(p).unwrap().display())
    } else if md.is_dir() {
        format!("dir {:o}", md.mode() & 0o7777)
    } else {
        format!(
            "file {:o} {} {} {:?}",
            md.mode() & 0o7777,
            md.len(),
            md.mtime(),
            String::from_utf8_lossy(&std::fs::read(p).unwrap())
        )
    }
}

/// Every path below `local` has its twin below `remote`, with the same [`state`].
pub fn assert_same_tree(local: &Path, remote: &Path, why: &dyn Fn() -> String) {
    for e in walkdir::WalkDir::new(local)
        .min_depth(1)
        .sort_by_file_name()
    {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(local).unwrap();
        let twin = remote.join(rel);
        assert!(
            twin.symlink_metadata().is_ok(),
            "{} did not arrive\n{}",
            twin.display(),
            why()
        );
        assert_eq!(
            state(&twin),
            state(e.path()),
            "{} differs\n{}",
            rel.display(),
            why()
        );
    }
}

/// A snapshot of every path below `root` (kind, mode, size, mtime, content).
pub fn snapshot(root: &Path) -> String {
    walkdir::WalkDir::new(root)
        .sort_by_file_name()
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            format!("{} {}\n", e.path().display(), state(e.path()))
        })
        .collect()
}

/// Reads a file, "" when missing.
pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Lines of info.log reporting a transfer to `dest`.
pub fn sends_to(info: &str, dest: &Path) -> usize {
    let needle = format!(" -> {} (", dest.display());
    info.lines()
        .filter(|l| l.contains(": sent ") && l.contains(&needle))
        .count()
}

/// The number `count` returns once it has stayed the same for 1.5 s (polled).
pub fn settled(what: &str, count: &dyn Fn() -> usize) -> usize {
    let mut last = (count(), Instant::now());
    wait_until(ARRIVE, what, || {
        let now = count();
        if now != last.0 {
            last = (now, Instant::now());
        }
        last.1.elapsed() > Duration::from_millis(1500)
    });
    count()
}
