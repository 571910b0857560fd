//! [`Env`]: one test's hostsync setup (config folder, hosts, mappings, keys)
//! and [`Run`]: one run of the real `hostsync` binary against it.
//!
//! The config files are written in the seed format the Python tool used, plus
//! `[ssh] known_hosts` pointing at a known_hosts file of the test's own, so a
//! test never reads the developer's `~/.ssh` or ssh-agent: `HOME` is the test
//! folder and `SSH_AUTH_SOCK` is removed for every run.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use super::{ClientKey, Dir, Sshd, TEST_PASSWORD, client_key, ensure_test_user, test_user};

/// How a host entry logs in.
pub enum Auth {
    /// `identity_file` = the test's client key.
    Key,
    /// `passkey` = this password.
    Password(&'static str),
}

/// One test's world: a temp folder with `cfg/` (config.ini, connection_info.json,
/// mappings/, known_hosts, local sources) and `remote/` (destinations the ssh
/// test user may write to).
pub struct Env {
    /// The test's temp folder.
    pub dir: Dir,
    /// The client key every started sshd accepts.
    pub key: ClientKey,
    /// Host entries for connection_info.json.
    hosts: Vec<Value>,
    /// Lines of the test's known_hosts.
    known: Vec<String>,
    /// Extra config.ini text after the `[DEFAULT]` section.
    ini_extra: String,
}

impl Env {
    /// A fresh environment; ensures the ssh test user exists.
    pub fn new(name: &str) -> Env {
        ensure_test_user();
        let dir = Dir::new(name);
        let key = client_key(dir.path(), "ed25519", None);
        dir.mkdir("cfg/mappings");
        dir.mkdir("remote");
        dir.chown_to_test_user("remote");
        Env {
            dir,
            key,
            hosts: Vec::new(),
            known: Vec::new(),
            ini_extra: String::new(),
        }
    }

    /// The config folder (where config.ini lives).
    pub fn cfg(&self) -> PathBuf {
        self.dir.join("cfg")
    }

    /// Starts a real sshd that accepts the test key (and, as root, the test password).
    pub fn sshd(&self) -> Sshd {
        Sshd::start(self.dir.path(), &[&self.key])
    }

    /// A folder under `remote/` the ssh test user owns; returns its absolute path.
    pub fn remote(&self, name: &str) -> PathBuf {
        let p = self.dir.mkdir(Path::new("remote").join(name));
        self.dir.chown_to_test_user(Path::new("remote").join(name));
        p
    }

    /// Writes a local source file under `cfg/` and returns its path.
    pub fn src(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        self.dir.write(Path::new("cfg").join(rel), contents)
    }

    /// Adds `sshd` to connection_info.json with `auth`, and trusts its host key.
    pub fn add_host(&mut self, sshd: &Sshd, auth: Auth) {
        let mut entry = json!({"ip_address": sshd.addr, "user": test_user(), "port": sshd.port});
        match auth {
            Auth::Key => entry["identity_file"] = json!(self.key.private),
            Auth::Password(pw) => entry["passkey"] = json!(pw),
        }
        self.hosts.push(entry);
        self.known.push(sshd.known_hosts_line());
    }

    /// Adds a raw connection_info.json entry (nothing trusted).
    pub fn add_host_raw(&mut self, entry: Value) {
        self.hosts.push(entry);
    }

    /// Sets `field` of the connection_info.json entry of `addr` (`Value::Null`
    /// removes it), e.g. `proxy_jump` (issue 18).
    pub fn set_field(&mut self, addr: &str, field: &str, value: Value) {
        let entry = self
            .hosts
            .iter_mut()
            .find(|h| h["ip_address"] == addr)
            .unwrap_or_else(|| panic!("no host {addr} in this test's connection_info.json"));
        let map = entry.as_object_mut().expect("a host entry is an object");
        if value.is_null() {
            map.remove(field);
        } else {
            map.insert(field.to_string(), value);
        }
    }

    /// Adds a known_hosts line.
    pub fn trust(&mut self, line: String) {
        self.known.push(line);
    }

    /// Appends text to config.ini (after `[DEFAULT]` and `[ssh]`).
    pub fn ini(&mut self, text: &str) {
        self.ini_extra.push_str(text);
    }

    /// Writes `mappings/<addr>.json`.
    pub fn map(&self, addr: &str, mappings: Value) {
        self.dir.write(
            Path::new("cfg/mappings").join(format!("{addr}.json")),
            serde_json::to_vec_pretty(&mappings).unwrap(),
        );
    }

    /// Writes the config files and runs `hostsync ARGS` in the config folder.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    /// Like [`Env::run`], with extra environment variables (e.g. `SSH_AUTH_SOCK`
    /// of a test agent, or the variables `passkey_env` names).
    pub fn run_env(&self, args: &[&str], vars: &[(&str, &str)]) -> Run {
        self.write_config();
        run_in_env(&self.cfg(), self.dir.path(), args, vars)
    }

    /// Writes the config files and runs `hostsync ARGS` with the hosts served the
    /// way `way` names (issue 16): `""` or `agent` for `[ssh] transfer = auto`,
    /// `tar` for `posix`, `scp` for `posix` with the SCP sink forced (the test
    /// knob `HOSTSYNC_POSIX_SINK=scp`), or a tier's own name.
    pub fn run_way(&self, args: &[&str], way: &str) -> Run {
        let (ssh, vars) = way_settings(way);
        self.write_config_with(&ssh);
        run_in_env(&self.cfg(), self.dir.path(), args, &vars)
    }

    /// Writes config.ini, connection_info.json and known_hosts.
    pub fn write_config(&self) {
        self.write_config_with("");
    }

    /// [`Env::write_config`] with `ssh` added to config.ini's `[ssh]` section.
    pub fn write_config_with(&self, ssh: &str) {
        // A test may set its own connect_timeout through `ini`; a key set twice is an error.
        let timeout = if self.ini_extra.contains("connect_timeout") {
            ""
        } else {
            "connect_timeout = 5\n"
        };
        let ini = format!(
            "[DEFAULT]\nnumber_of_connections = 4\nlog_path = logs\nconnection_info_path = connection_info.json\naddress_mapper_path = mappings\n\n[ssh]\nknown_hosts = known_hosts\n{ssh}{timeout}{}",
            self.ini_extra
        );
        self.dir.write("cfg/config.ini", ini);
        self.dir.write(
            "cfg/connection_info.json",
            serde_json::to_vec_pretty(&Value::Array(self.hosts.clone())).unwrap(),
        );
        // As a careful operator keeps it: hosts may carry passwords (see trust tests).
        std::fs::set_permissions(
            self.cfg().join("connection_info.json"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let mut known = self.known.join("\n");
        known.push('\n');
        self.dir.write("cfg/known_hosts", known);
    }

    /// info.log's content ("" if missing).
    pub fn info_log(&self) -> String {
        std::fs::read_to_string(self.cfg().join("logs/info.log")).unwrap_or_default()
    }

    /// error.log's content ("" if missing).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.cfg().join("logs/error.log")).unwrap_or_default()
    }
}

/// The `[ssh]` lines and environment of a way to serve hosts (see [`Env::run_way`]).
pub fn way_settings(way: &str) -> (String, Vec<(&'static str, &'static str)>) {
    match way {
        "" | "agent" => (String::new(), Vec::new()),
        "tar" => ("transfer = posix\n".into(), Vec::new()),
        "scp" => (
            "transfer = posix\n".into(),
            vec![("HOSTSYNC_POSIX_SINK", "scp")],
        ),
        tier => (format!("transfer = {tier}\n"), Vec::new()),
    }
}

/// Runs the hostsync binary in `cwd` with `HOME=home` and no ssh-agent.
pub fn run_in(cwd: &Path, home: &Path, args: &[&str]) -> Run {
    run_in_env(cwd, home, args, &[])
}

/// Like [`run_in`], then sets `vars` (which may bring back an `SSH_AUTH_SOCK`).
pub fn run_in_env(cwd: &Path, home: &Path, args: &[&str], vars: &[(&str, &str)]) -> Run {
    let exe = env!("CARGO_BIN_EXE_hostsync");
    let out = Command::new(exe)
        .args(args)
        .current_dir(cwd)
        .env("HOME", home)
        .env_remove("SSH_AUTH_SOCK")
        .env("RUST_BACKTRACE", "0")
        .envs(vars.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {exe}: {e}"));
    Run {
        cmd: format!("(cd {} && hostsync {})", cwd.display(), args.join(" ")),
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        logs: cwd.join("logs"),
    }
}

/// Like [`Env::run_env`], but the run may take at most `limit` (it is killed and the
/// test fails past it), and the peak memory of the process is measured (VmHWM, in
/// KiB, polled every 20 ms): for runs against a server that floods or trickles.
pub fn run_bounded(
    env: &Env,
    args: &[&str],
    way: &str,
    limit: std::time::Duration,
) -> (Run, u64, std::time::Duration) {
    let (ssh, vars) = way_settings(way);
    env.write_config_with(&ssh);
    let cwd = env.cfg();
    let exe = env!("CARGO_BIN_EXE_hostsync");
    let mut child = Command::new(exe)
        .args(args)
        .current_dir(&cwd)
        .env("HOME", env.dir.path())
        .env_remove("SSH_AUTH_SOCK")
        .env("RUST_BACKTRACE", "0")
        .envs(vars.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {exe}: {e}"));
    let started = std::time::Instant::now();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    let mut pipes = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let readers = (
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut pipes.0, &mut s);
            s
        }),
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut pipes.1, &mut s);
            s
        }),
    );
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_file) {
            for line in text.lines().filter(|l| l.starts_with("VmHWM:")) {
                let kib = line.split_whitespace().nth(1).and_then(|n| n.parse().ok());
                peak = peak.max(kib.unwrap_or(0));
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("hostsync {} ran longer than {limit:?}", args.join(" "));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let took = started.elapsed();
    let run = Run {
        cmd: format!("(cd {} && hostsync {})", cwd.display(), args.join(" ")),
        code: status.code().unwrap_or(-1),
        stdout: readers.0.join().unwrap(),
        stderr: readers.1.join().unwrap(),
        logs: cwd.join("logs"),
    };
    (run, peak, took)
}

/// One finished run of the binary.
pub struct Run {
    /// The command, for failure messages.
    pub cmd: String,
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// The log folder, dumped on failure.
    logs: PathBuf,
}

impl Run {
    /// Everything about the run, for failure messages.
    pub fn dump(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.logs.join(n)).unwrap_or_default();
        format!(
            "command: {}\nexit code: {}\n--- stdout\n{}--- stderr\n{}--- info.log\n{}--- error.log\n{}---",
            self.cmd,
            self.code,
            self.stdout,
            self.stderr,
            read("info.log"),
            read("error.log")
        )
    }

    /// Panics with the whole dump unless the exit code is `code`.
    #[track_caller]
    pub fn expect(&self, code: i32) -> &Run {
        assert_eq!(self.code, code, "unexpected exit code\n{}", self.dump());
        self
    }

    /// Panics with the dump unless stdout+stderr contains `needle`.
    #[track_caller]
    pub fn expect_output(&self, needle: &str) -> &Run {
        assert!(
            self.stdout.contains(needle) || self.stderr.contains(needle),
            "output lacks {needle:?}\n{}",
            self.dump()
        );
        self
    }

    /// The summary row of `addr` (README, "Output"): (sent, skipped, removed,
    /// failed, bytes), from `HOST SENT SKIPPED REMOVED FAILED BYTES STATUS`.
    #[track_caller]
    pub fn row(&self, addr: &str) -> (u64, u64, u64, u64, u64) {
        let line = self.row_line(addr);
        let n: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(5)
            .map(|f| {
                f.parse()
                    .unwrap_or_else(|_| panic!("count {f:?} in {line:?}\n{}", self.dump()))
            })
            .collect();
        (n[0], n[1], n[2], n[3], n[4])
    }

    /// The STATUS column of `addr`'s summary row (all that follows BYTES).
    #[track_caller]
    pub fn status(&self, addr: &str) -> String {
        let line = self.row_line(addr);
        let mut rest = line.trim_start();
        for _ in 0..6 {
            rest = rest
                .split_once(char::is_whitespace)
                .map_or("", |(_, r)| r)
                .trim_start();
        }
        rest.to_string()
    }

    /// The summary table's line for `addr`.
    #[track_caller]
    fn row_line(&self, addr: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(addr))
            .unwrap_or_else(|| panic!("no summary row for {addr}\n{}", self.dump()))
    }
}

/// The test password, re-exported for tests that check it never leaks.
pub const PASSWORD: &str = TEST_PASSWORD;

/// A running `hostsync watch`, killed on drop.
pub struct Daemon {
    /// The child process.
    child: Option<std::process::Child>,
    /// Where its stdout and stderr go.
    out: PathBuf,
    /// The config folder (for logs).
    cfg: PathBuf,
}

impl Env {
    /// Writes the config and starts `hostsync watch`; returns once it is watching.
    pub fn watch(&self) -> Daemon {
        self.watch_with(&["watch"])
    }

    /// Like [`Env::watch`] with these arguments (`["watch", "--host", IP]`).
    pub fn watch_with(&self, args: &[&str]) -> Daemon {
        self.write_config();
        start_daemon_with(&self.cfg(), self.dir.path(), args)
    }
}

/// Starts `hostsync watch` in `cfg` and waits until it says it is watching.
pub fn start_daemon(cfg: &Path, home: &Path) -> Daemon {
    start_daemon_with(cfg, home, &["watch"])
}

/// Starts `hostsync ARGS` (a watch) in `cfg` and waits until it says it is watching.
pub fn start_daemon_with(cfg: &Path, home: &Path, args: &[&str]) -> Daemon {
    let exe = env!("CARGO_BIN_EXE_hostsync");
    let out = cfg.join(format!("daemon-{}.out", super::sshd::random_u64()));
    let file = std::fs::File::create(&out).unwrap();
    let child = Command::new(exe)
        .args(args)
        .current_dir(cfg)
        .env("HOME", home)
        .env_remove("SSH_AUTH_SOCK")
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {exe} watch: {e}"));
    let mut d = Daemon {
        child: Some(child),
        out,
        cfg: cfg.to_path_buf(),
    };
    let started = std::time::Instant::now();
    while !d.output().contains("hostsync: watching") {
        if let Some(status) = d.child.as_mut().unwrap().try_wait().unwrap() {
            panic!(
                "hostsync watch exited with {status} before watching\n{}",
                d.dump()
            );
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "hostsync watch did not start watching within 20 s\n{}",
            d.dump()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    d
}

impl Daemon {
    /// stdout and stderr so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// info.log so far.
    pub fn info_log(&self) -> String {
        std::fs::read_to_string(self.cfg.join("logs/info.log")).unwrap_or_default()
    }

    /// error.log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.cfg.join("logs/error.log")).unwrap_or_default()
    }

    /// Everything, for failure messages.
    pub fn dump(&self) -> String {
        format!(
            "--- daemon output ({})\n{}--- info.log\n{}--- error.log\n{}---",
            self.cfg.display(),
            self.output(),
            self.info_log(),
            self.error_log()
        )
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends SIGTERM and waits (at most 10 s) for the exit; returns the exit code and
    /// how long it took.
    pub fn terminate(&mut self) -> (Option<i32>, std::time::Duration) {
        let mut child = self.child.take().expect("daemon already stopped");
        let started = std::time::Instant::now();
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status.code(), started.elapsed());
            }
            if started.elapsed() > std::time::Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                return (None, started.elapsed());
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.dump());
        }
    }
}

/// The ways batches went, from the `-v` line README's "Logs" names (`HOST: N
/// item(s) under DIR over WAY`), in log order: `agent`, `agent in 2 lanes`,
/// `tar` or `scp`.
pub fn ways(info: &str) -> Vec<String> {
    info.lines()
        .filter(|l| l.contains(" item(s) under "))
        .filter_map(|l| l.rsplit_once(" over "))
        .map(|(_, way)| way.to_string())
        .collect()
}
