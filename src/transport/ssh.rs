//! One SSH connection to one host: TCP, handshake, host-key check, authentication,
//! and the ways we talk to the remote: shell scripts, the SCP sink, and the
//! session's SFTP client ([`super::sftp`], started once and kept). What the
//! session learned about the host is cached here: perl, tar, and the tier that
//! serves it ([`Tier`], settled by `crate::exec::tier`, issue 16). A `watch`
//! session also keeps its running agent between rounds ([`super::agent::Parked`]).
//!
//! Pitfalls handled here (each measured with libssh2): TCP_NODELAY is set
//! before the handshake (without it every small write stalls on Nagle + delayed
//! ACK); the connect timeout bounds TCP connect, handshake and auth, and the I/O
//! timeout bounds every later blocking call, so a silent peer becomes an error
//! instead of a hang; host keys are checked with `check_port`, which understands
//! `[host]:port` entries; delayed ACKs are turned off after every receive
//! (`transport::quickack`: 40 ms less for the first channel of each session). A
//! session lives on the one worker thread that made it; while it is idle in
//! `watch`, [`super::keepalive`] probes it (issue 17).
//!
//! A host behind a bastion (issue 18) gets, instead of a TCP socket, one end of a
//! socket pair that [`super::jump`] bridges to a `direct-tcpip` channel of the
//! bastion's session; everything else (handshake, the host key checked under the
//! host's own `HostName` and port, login) is the same. ssh_config's values, where
//! `[ssh] ssh_config` is set, come with the [`Host`]: HostName, the known_hosts
//! file, the connect timeout and more key files.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use ssh2::{CheckResult, HashType, HostKeyType, KnownHostFileKind, Session};

use crate::config::{Host, HostKeyPolicy, SshSettings};

/// An authenticated session to one host.
pub(crate) struct Connection {
    /// The libssh2 session (blocking, owned by one thread).
    session: Session,
    /// Which auth method worked: `publickey`, `agent`, `password` or `keyboard-interactive`.
    pub(crate) auth_method: &'static str,
    /// The server's host key fingerprint, `SHA256:...` as OpenSSH prints it.
    pub(crate) fingerprint: String,
    /// Set from outside (shutdown) to abort a file transfer between two chunks.
    cancel: Arc<AtomicBool>,
    /// Whether the remote has GNU tar or bsdtar (the fast path), probed on first use.
    tar: std::cell::Cell<Option<bool>>,
    /// The quickest channel open seen: an estimate of the round trip.
    rtt: std::cell::Cell<Option<Duration>>,
    /// `[ssh] transfer`: which tiers may serve this host.
    transfer: crate::config::Transfer,
    /// The posix tier uses the SCP sink even where tar is there (a test knob).
    scp_sink: bool,
    /// The tier that serves this host, once the probe settled it (issue 16).
    tier: std::cell::Cell<Option<Tier>>,
    /// Why the first exec failed without a shell answering (an SFTP-only
    /// account runs internal-sftp for every exec): the probe then tries SFTP.
    no_shell: std::cell::RefCell<Option<String>>,
    /// This session's SFTP client, started on first use and kept for the
    /// session: a watched change costs no remote process start.
    sftp: std::cell::RefCell<Option<super::sftp::Sftp>>,
    /// `[sync] split`.
    split: bool,
    /// `[sync] inflight_kib`.
    inflight_kib: Option<u32>,
    /// `[ssh] io_timeout`, for the rate rule of replies ([`super::bounded`]).
    io_timeout: Duration,
    /// Whether the remote has perl for hostsync's agent ([`super::agent`]), once a
    /// start showed it.
    agent: std::cell::Cell<Option<bool>>,
    /// Whether an agent is kept running between batches (`watch`).
    keep_agent: std::cell::Cell<bool>,
    /// The agent kept from the last batch, if one is.
    parked: std::cell::RefCell<Option<super::agent::Parked>>,
    /// This client's id, in the names of its remote temporaries.
    client_id: String,
    /// `[ssh] strict_modes`.
    strict_modes: bool,
    /// The names of this session's temporaries on a host without perl.
    names: crate::remote::runs::Names,
    /// `<log_path>/runs`.
    runs_dir: std::path::PathBuf,
    /// `<log_path>/pushed`.
    pushed_dir: std::path::PathBuf,
    /// This session's run lock here (see [`crate::remote::runs`]); `None` if it could not
    /// be taken.
    _run: Option<crate::remote::runs::RunLock>,
    /// `[sync] delta_min_kib` in bytes (0: no deltas, issue 19).
    delta_min: u64,
    /// Whether the remote has `sha256sum` and `dd` for deltas without perl, once
    /// asked.
    sh_sums: std::cell::Cell<Option<bool>>,
    /// The probes of an idle session (`[ssh] keepalive_s`, issue 17).
    keepalive: super::keepalive::Keepalive,
    /// The cap on what this session sends (`[sync] bwlimit_kib`), while it lives.
    /// After `session`, so the socket is closed before its bucket goes.
    _limit: Option<super::bwlimit::Limited>,
}

/// How long dropping a session waits for the server to close its kept agent's
/// channel (libssh2 waits for the server's close; a frozen server sends none).
const AGENT_CLOSE_MS: u32 = 1000;

impl Drop for Connection {
    /// The kept agent goes first, waiting at most [`AGENT_CLOSE_MS`]: it reads
    /// end of input, holds no lock or temporary, and exits.
    fn drop(&mut self) {
        if let Some(agent) = self.parked.get_mut().take() {
            self.session.set_timeout(AGENT_CLOSE_MS);
            drop(agent);
        }
    }
}

/// The ways a host is changed (issue 16), as `check`'s TIER column names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tier {
    /// hostsync's perl agent (GNU/Linux hosts with perl).
    Gnu,
    /// The shell: listing script, tar stream or SCP sink, sh commit.
    Posix,
    /// The SFTP subsystem.
    Sftp,
}

impl Tier {
    /// The name `check` and the README use.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Tier::Gnu => "gnu",
            Tier::Posix => "posix",
            Tier::Sftp => "sftp",
        }
    }
}

/// What a remote script printed, and how it exited.
pub(crate) struct ScriptOutput {
    /// Everything on stdout.
    pub(crate) stdout: Vec<u8>,
    /// Everything on stderr.
    pub(crate) stderr: String,
    /// Exit status of the remote `sh`.
    pub(crate) status: i32,
}

impl Connection {
    /// Connects (through its bastions, if it has any), checks the host key and
    /// logs in. Errors say which step failed.
    pub(crate) fn open(host: &Host, ssh: &SshSettings) -> Result<Connection> {
        let Login {
            session,
            auth_method,
            fingerprint,
            limit,
        } = login_as_target(host, ssh)?;
        let run = crate::remote::fresh_hex();
        session.set_timeout(millis(ssh.io_timeout));
        log::info!(
            "{}: connected as {} on port {}{} ({auth_method}, host key {fingerprint})",
            host.address,
            host.user,
            host.port,
            via_words(host)
        );
        Ok(Connection {
            session,
            auth_method,
            fingerprint,
            cancel: Arc::new(AtomicBool::new(false)),
            tar: std::cell::Cell::new(None),
            rtt: std::cell::Cell::new(None),
            transfer: ssh.transfer,
            scp_sink: ssh.scp_sink,
            tier: std::cell::Cell::new(None),
            no_shell: std::cell::RefCell::new(None),
            sftp: std::cell::RefCell::new(None),
            split: ssh.split,
            inflight_kib: ssh.inflight_kib,
            io_timeout: ssh.io_timeout,
            agent: std::cell::Cell::new(None),
            keep_agent: std::cell::Cell::new(false),
            parked: std::cell::RefCell::new(None),
            client_id: ssh.client_id.clone(),
            strict_modes: ssh.strict_modes,
            _run: crate::remote::runs::hold(&ssh.runs_dir, &run),
            runs_dir: ssh.runs_dir.clone(),
            pushed_dir: ssh.pushed_dir.clone(),
            names: crate::remote::runs::Names {
                client: ssh.client_id.clone(),
                run,
            },
            delta_min: ssh.delta_min,
            sh_sums: std::cell::Cell::new(None),
            keepalive: super::keepalive::Keepalive::new(host.keepalive.unwrap_or(ssh.keepalive)),
            _limit: limit,
        })
    }

    /// The smallest file sent as a delta (`[sync] delta_min_kib`; 0: none is).
    pub(crate) fn delta_min(&self) -> u64 {
        self.delta_min
    }

    /// Whether the remote has `sha256sum` and `dd` for deltas without perl
    /// (`None`: not asked yet).
    pub(crate) fn sh_sums(&self) -> Option<bool> {
        self.sh_sums.get()
    }

    /// Records what the remote said about `sha256sum` and `dd`.
    pub(crate) fn set_sh_sums(&self, found: bool) {
        self.sh_sums.set(Some(found));
    }

    /// Whether batches may go as a tar stream: the remote has GNU tar or bsdtar and
    /// no tar stream failed on this connection. Asks the remote once.
    pub(crate) fn has_tar(&self) -> bool {
        if let Some(known) = self.tar.get() {
            return known;
        }
        if self.scp_forced() {
            self.tar.set(Some(false));
            return false;
        }
        let found = self
            .run_command("tar --version", b"", 64 * 1024)
            .is_ok_and(|out| {
                let first = String::from_utf8_lossy(&out.stdout);
                out.status == 0 && (first.contains("GNU tar") || first.contains("bsdtar"))
            });
        self.tar.set(Some(found));
        found
    }

    /// Whether a tar stream may be used: not forced off, and not known to be missing.
    pub(crate) fn tar_maybe(&self) -> bool {
        self.tar.get() != Some(false) && !self.scp_forced()
    }

    /// Whether nobody has asked the remote about tar yet (a listing may ask for
    /// [`Connection::has_tar`], saving it an exec of its own).
    pub(crate) fn tar_unknown(&self) -> bool {
        self.tar.get().is_none() && !self.scp_forced()
    }

    /// Records what a listing found out about the remote's tar (first answer wins).
    pub(crate) fn set_tar_probed(&self, found: bool) {
        if self.tar.get().is_none() {
            self.tar.set(Some(found));
        }
    }

    /// `[sync] split`: whether the agent may make a big batch in two lanes.
    pub(crate) fn may_split(&self) -> bool {
        self.split
    }

    /// `[sync] inflight_kib`: `None` for automatic.
    pub(crate) fn inflight_kib(&self) -> Option<u32> {
        self.inflight_kib
    }

    /// Whether the posix tier must use the SCP sink (`HOSTSYNC_POSIX_SINK=scp`).
    fn scp_forced(&self) -> bool {
        self.scp_sink
    }

    /// `[ssh] transfer`: which tiers may serve this host.
    pub(crate) fn transfer(&self) -> crate::config::Transfer {
        self.transfer
    }

    /// The tier serving this host, once known.
    pub(crate) fn tier(&self) -> Option<Tier> {
        self.tier.get()
    }

    /// Records the tier that serves this host (the probe's result).
    pub(crate) fn set_tier(&self, tier: Tier) {
        self.tier.set(Some(tier));
    }

    /// Why the first exec got no shell, if it did not (see [`Connection::set_no_shell`]).
    pub(crate) fn no_shell(&self) -> Option<String> {
        self.no_shell.borrow().clone()
    }

    /// Records that the first exec ended before any shell or perl answered.
    pub(crate) fn set_no_shell(&self, why: String) {
        *self.no_shell.borrow_mut() = Some(why);
    }

    /// This session's SFTP client, started on first use (see [`super::sftp`]);
    /// the error says when the host has no SFTP subsystem. A client whose
    /// session failed is dropped, so the next call starts a new one.
    pub(crate) fn with_sftp<T>(
        &self,
        f: impl FnOnce(&mut super::sftp::Sftp) -> Result<T>,
    ) -> Result<T> {
        let mut slot = self.sftp.borrow_mut();
        if slot.is_none() {
            *slot = Some(super::sftp::Sftp::start(&self.session)?);
        }
        let result = f(slot.as_mut().expect("started above"));
        if let Err(e) = &result
            && !e.is::<super::sftp::Refused>()
        {
            *slot = None;
        }
        result
    }

    /// Stops using the tar fast path on this connection (after a tar stream failed).
    pub(crate) fn disable_tar(&self) {
        self.tar.set(Some(false));
    }

    /// Whether hostsync's agent may serve this host: not known to lack perl, and
    /// allowed by `[ssh] transfer` (`auto` or `gnu`).
    pub(crate) fn agent_maybe(&self) -> bool {
        use crate::config::Transfer;
        self.agent.get() != Some(false) && matches!(self.transfer, Transfer::Auto | Transfer::Gnu)
    }

    /// Whether no agent start has shown yet whether the remote has perl.
    pub(crate) fn agent_unknown(&self) -> bool {
        self.agent.get().is_none()
    }

    /// Records whether the remote has perl for the agent.
    pub(crate) fn set_agent(&self, found: bool) {
        self.agent.set(Some(found));
    }

    /// Keeps the agent running between batches on this session (`watch`: a
    /// round then costs no remote process start; see [`super::agent`]).
    pub(crate) fn set_keep_agent(&self) {
        self.keep_agent.set(true);
    }

    /// Whether the agent is kept between batches (see [`Connection::set_keep_agent`]).
    pub(crate) fn keeps_agent(&self) -> bool {
        self.keep_agent.get()
    }

    /// Keeps `agent`, whose batch has ended, for the next batch.
    pub(crate) fn park_agent(&self, agent: super::agent::Parked) {
        *self.parked.borrow_mut() = Some(agent);
    }

    /// The agent kept from the last batch, if one is (it is no longer kept).
    pub(crate) fn take_agent(&self) -> Option<super::agent::Parked> {
        self.parked.borrow_mut().take()
    }

    /// The names of this session's temporaries on a host without perl.
    pub(crate) fn names(&self) -> &crate::remote::runs::Names {
        &self.names
    }

    /// Where the runs of this client hold their locks (see [`crate::remote::runs`]).
    pub(crate) fn runs_dir(&self) -> &std::path::Path {
        &self.runs_dir
    }

    /// Where the record of what was last pushed to each host lives (`crate::local::pushed`).
    pub(crate) fn pushed_dir(&self) -> &std::path::Path {
        &self.pushed_dir
    }

    /// This client's id (see [`crate::config::client_id`]).
    pub(crate) fn client_id(&self) -> &str {
        &self.client_id
    }

    /// `[ssh] strict_modes`: the ancestor rule for symlinks on the way to dest.
    pub(crate) fn strict_modes(&self) -> bool {
        self.strict_modes
    }

    /// How long any single read or write may block (`[ssh] io_timeout`).
    pub(crate) fn io_timeout(&self) -> Duration {
        self.io_timeout
    }

    /// The round trip to the host, as far as channel opens tell (`None` before the first).
    pub(crate) fn rtt(&self) -> Option<Duration> {
        self.rtt.get()
    }

    /// Lets libssh2 take in whatever the server has sent (window adjusts included)
    /// without blocking; data for `channel` is appended to `early`.
    pub(crate) fn take_input(
        &self,
        channel: &mut ssh2::Channel,
        early: &mut Vec<u8>,
    ) -> Result<()> {
        self.session.set_blocking(false);
        let mut buf = [0u8; 16 * 1024];
        let result = loop {
            match channel.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => early.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.session.set_blocking(true);
        result.context("reading from the server")
    }

    /// Waits up to `timeout` for bytes from the server; false if none came.
    pub(crate) fn wait_input(&self, timeout: Duration) -> Result<bool> {
        use std::os::fd::AsRawFd;
        let mut fds = libc::pollfd {
            fd: self.session.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: `fds` is one valid pollfd and the count is 1.
        match unsafe { libc::poll(&mut fds, 1, ms) } {
            n if n > 0 => Ok(true),
            0 => Ok(false),
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    Ok(true)
                } else {
                    Err(e).context("waiting for the server")
                }
            }
        }
    }

    /// When this idle session's next keepalive probe is due (`None`: they are off).
    pub(crate) fn keepalive_due(&self) -> Option<std::time::Instant> {
        self.keepalive.due()
    }

    /// Sends a keepalive probe, having counted the replies so far (see
    /// [`super::keepalive`]); `Err` when the transport failed.
    pub(crate) fn keep_alive(&self) -> Result<super::keepalive::Verdict> {
        self.keepalive.probe(&self.session)
    }

    /// Whether this idle session should not be trusted with a change: a probe
    /// waited a whole interval for its reply, or the transport failed.
    pub(crate) fn suspect(&self) -> bool {
        self.keepalive.suspect(&self.session).unwrap_or(true)
    }

    /// The session was just used: its next probe waits a whole interval.
    pub(crate) fn rest(&self) {
        self.keepalive.rest();
    }

    /// Makes transfers on this connection stop early once `flag` is set.
    pub(crate) fn set_cancel(&mut self, flag: Arc<AtomicBool>) {
        self.cancel = flag;
    }

    /// The flag that aborts transfers (see [`Connection::set_cancel`]).
    pub(crate) fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    /// Runs a POSIX sh script fed on stdin (`sh -s`) and collects its output, at
    /// most `cap` bytes of it (see [`super::bounded`]).
    pub(crate) fn run_script(&self, script: &[u8], cap: u64) -> Result<ScriptOutput> {
        self.run_command("sh -s", script, cap)
    }

    /// Runs `command` and reads its stdout up to `end` followed by a NUL-terminated
    /// text (see [`crate::remote::listing_then_tar`]), leaving the channel open for
    /// what comes next. Returns the channel, the output before `end`, and the text.
    /// If the output ends first, the error shows what came, the stderr and the status.
    pub(crate) fn run_until(
        &self,
        command: &str,
        end: &[u8],
        cap: u64,
    ) -> Result<(ssh2::Channel, ScriptOutput)> {
        let started = std::time::Instant::now();
        let mut budget = super::bounded::Budget::new("the remote listing", cap, self.io_timeout);
        let mut ch = self.exec(command)?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        // Where the search for `end` resumes: only new bytes are looked at.
        let mut from = 0;
        let mut found = None;
        loop {
            if found.is_none() {
                found = find_end(&out, end, from);
                from = out.len().saturating_sub(end.len());
            }
            if let Some(at) = found {
                let rest = &out[at + end.len()..];
                if let Some(nul) = rest.iter().position(|&b| b == 0) {
                    let stderr = String::from_utf8_lossy(&rest[..nul]).into_owned();
                    if nul + 1 != rest.len() {
                        bail!("the remote listing went on after its end");
                    }
                    out.truncate(at);
                    log::debug!(
                        "remote listing: {} bytes after {} ms",
                        out.len(),
                        started.elapsed().as_millis()
                    );
                    let output = ScriptOutput {
                        stdout: out,
                        stderr,
                        status: 0,
                    };
                    return Ok((ch, output));
                }
            }
            let n = ch
                .read(&mut buf)
                .context("reading the remote shell's output")?;
            budget.got(n)?;
            if n == 0 {
                let mut stderr = Vec::new();
                let _ = ch.stderr().take(4096).read_to_end(&mut stderr);
                let _ = ch.wait_close();
                let status = ch.exit_status().unwrap_or(-1);
                bail!(
                    "the remote listing ended early (exit status {status}, output \"{}\"); stderr: {}",
                    crate::escape::escape(&out[..out.len().min(200)]),
                    crate::escape::fold(&stderr, 300)
                );
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    /// Runs `command` with `input` on its stdin and collects its output: at most `cap`
    /// bytes of stdout and 64 KiB of stderr, arriving at least as fast as
    /// [`super::bounded`] asks.
    pub(crate) fn run_command(
        &self,
        command: &str,
        input: &[u8],
        cap: u64,
    ) -> Result<ScriptOutput> {
        let started = std::time::Instant::now();
        let mut ch = self
            .session
            .channel_session()
            .map_err(|e| anyhow!("cannot open a channel: {}", e.message()))?;
        ch.exec(command).map_err(|e| {
            anyhow!(
                "cannot start `{command:.20}` on the remote: {}",
                e.message()
            )
        })?;
        ch.write_all(input)
            .context("sending a script to the remote shell")?;
        ch.send_eof()
            .context("sending a script to the remote shell")?;
        let mut budget = super::bounded::Budget::new("the remote command", cap, self.io_timeout);
        let stdout = super::bounded::read_to_end(&mut ch, &mut budget)?;
        let mut stderr = Vec::new();
        // Stderr is informational; an unreadable one must not hide the result.
        let _ = ch.stderr().take(64 * 1024).read_to_end(&mut stderr);
        let stderr = String::from_utf8_lossy(&stderr).into_owned();
        ch.wait_close()
            .context("closing the remote shell channel")?;
        let status = ch.exit_status().context("reading the remote exit status")?;
        log::debug!(
            "remote `{command:.20}`: exit {status} after {} ms",
            started.elapsed().as_millis()
        );
        Ok(ScriptOutput {
            stdout,
            stderr,
            status,
        })
    }

    /// Opens a channel running `command` (the SCP sink), for `transport::scp`.
    pub(crate) fn exec(&self, command: &str) -> Result<ssh2::Channel> {
        let opening = std::time::Instant::now();
        let mut ch = self
            .session
            .channel_session()
            .map_err(|e| anyhow!("cannot open a channel: {}", e.message()))?;
        let took = opening.elapsed();
        if self.rtt.get().is_none_or(|r| took < r) {
            self.rtt.set(Some(took));
        }
        ch.exec(command)
            .map_err(|e| anyhow!("cannot start `{command}` on the remote: {}", e.message()))?;
        Ok(ch)
    }
}

/// A session that is logged in, and how.
pub(crate) struct Login {
    /// The session, blocking, its timeout still the connect timeout.
    pub(crate) session: Session,
    /// Which auth method worked.
    pub(crate) auth_method: &'static str,
    /// The server's host key fingerprint.
    pub(crate) fingerprint: String,
    /// The bandwidth cap of a target's session (`[sync] bwlimit_kib`); a
    /// bastion's session is not capped (what it carries is, per target).
    pub(crate) limit: Option<super::bwlimit::Limited>,
}

/// Reaches `host` (over TCP, or through its bastion), handshakes, checks its host
/// key and logs in; every blocking step is bounded by its connect timeout. Errors
/// say which step failed.
pub(crate) fn login(host: &Host, ssh: &SshSettings) -> Result<Login> {
    login_with(host, ssh, false)
}

/// [`login`] for the host files go to: with `[ssh] compression` and the
/// `[sync] bwlimit_kib` cap (issue 19), which a bastion's session does without.
fn login_as_target(host: &Host, ssh: &SshSettings) -> Result<Login> {
    login_with(host, ssh, true)
}

/// [`login`], with compression and the cap when `target`.
fn login_with(host: &Host, ssh: &SshSettings, target: bool) -> Result<Login> {
    use std::os::fd::AsRawFd;
    let timeout = connect_timeout(host, ssh);
    let mut session = Session::new().context("cannot create an ssh session")?;
    super::quickack::install(&session);
    let cap = |fd: i32| {
        (target && ssh.bwlimit > 0).then(|| super::bwlimit::install(&session, fd, ssh.bwlimit))
    };
    session.set_compress(target && ssh.compression);
    let limit = match &host.jump {
        None => {
            let tcp = connect_tcp(host, timeout)?;
            let limit = cap(tcp.as_raw_fd());
            session.set_tcp_stream(tcp);
            limit
        }
        Some(bastion) => {
            let pair = super::jump::reach(bastion, host, ssh)?;
            let limit = cap(pair.as_raw_fd());
            session.set_tcp_stream(pair);
            limit
        }
    };
    session.set_timeout(millis(timeout));
    session
        .handshake()
        .map_err(|e| handshake_error(&e, timeout))?;
    log::debug!(
        "{}: negotiated kex {}, cipher {}, mac {}, compression {}",
        host.address,
        session.methods(ssh2::MethodType::Kex).unwrap_or("?"),
        session.methods(ssh2::MethodType::CryptCs).unwrap_or("?"),
        session.methods(ssh2::MethodType::MacCs).unwrap_or("?"),
        session.methods(ssh2::MethodType::CompCs).unwrap_or("?")
    );
    let fingerprint = verify_host_key(&session, host, ssh)?;
    let auth_method = authenticate(&session, host)?;
    Ok(Login {
        session,
        auth_method,
        fingerprint,
        limit,
    })
}

/// ssh_config's `ConnectTimeout` for this host, else `[ssh] connect_timeout`.
pub(crate) fn connect_timeout(host: &Host, ssh: &SshSettings) -> Duration {
    host.connect_timeout.unwrap_or(ssh.connect_timeout)
}

/// `" via bastion B"` (`" via bastions B1,B2"`, the first logged in to first) for
/// the audit trail's connected line; empty for a direct host.
fn via_words(host: &Host) -> String {
    let hops = host.hops();
    let names: Vec<&str> = hops.iter().map(|h| h.address.as_str()).collect();
    match names.len() {
        0 => String::new(),
        1 => format!(" via bastion {}", names[0]),
        _ => format!(" via bastions {}", names.join(",")),
    }
}

/// Where `end` starts in `out` at or after `from`, at a record boundary (the start,
/// or after a NUL).
fn find_end(out: &[u8], end: &[u8], from: usize) -> Option<usize> {
    let from = from.min(out.len());
    out[from..]
        .windows(end.len())
        .enumerate()
        .map(|(i, w)| (from + i, w))
        .find(|&(i, w)| w == end && (i == 0 || out[i - 1] == 0))
        .map(|(i, _)| i)
}

/// libssh2's `LIBSSH2_ERROR_TIMEOUT`: a blocking call passed `Session::set_timeout`.
const LIBSSH2_ERROR_TIMEOUT: i32 = -9;

/// Words a failed handshake; a timeout means TCP was accepted but SSH never answered
/// (a stalled server or network path), which deserves more than libssh2's wording.
fn handshake_error(e: &ssh2::Error, timeout: Duration) -> anyhow::Error {
    if e.code() == ssh2::ErrorCode::Session(LIBSSH2_ERROR_TIMEOUT) {
        anyhow!(
            "host unreachable: ssh handshake timed out: no answer within connect_timeout ({}s)",
            timeout.as_secs()
        )
    } else {
        anyhow!("ssh handshake failed: {}", e.message())
    }
}

/// libssh2 takes timeouts in milliseconds as u32.
fn millis(d: Duration) -> u32 {
    d.as_millis().min(u128::from(u32::MAX)) as u32
}

/// Resolves the host's `HostName` and connects with a timeout; sets TCP_NODELAY.
fn connect_tcp(host: &Host, timeout: Duration) -> Result<TcpStream> {
    let addrs: Vec<_> = (host.host_name.as_str(), host.port)
        .to_socket_addrs()
        .map_err(|e| anyhow!("host unreachable: cannot resolve {}: {e}", host.host_name))?
        .collect();
    let mut last = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(tcp) => {
                tcp.set_nodelay(true).context("cannot set TCP_NODELAY")?;
                return Ok(tcp);
            }
            Err(e) => last = Some(e),
        }
    }
    match last {
        Some(e) if e.kind() == std::io::ErrorKind::TimedOut => bail!(
            "host unreachable: connect to port {} timed out after {}s",
            host.port,
            timeout.as_secs()
        ),
        Some(e) => bail!("host unreachable: connect to port {}: {e}", host.port),
        None => bail!(
            "host unreachable: {} resolves to no address",
            host.host_name
        ),
    }
}

/// Checks the server's key against known_hosts (ssh_config's UserKnownHostsFile, else
/// `[ssh] known_hosts`) under the host's `HostName` and port, per the policy;
/// returns its fingerprint.
fn verify_host_key(session: &Session, host: &Host, ssh: &SshSettings) -> Result<String> {
    let known_hosts = host.known_hosts.as_ref().unwrap_or(&ssh.known_hosts);
    let (key, key_type) = session
        .host_key()
        .ok_or_else(|| anyhow!("the server sent no host key"))?;
    let fingerprint = fingerprint(session);
    let type_name = key_type_name(key_type);
    if ssh.host_key_policy == HostKeyPolicy::Off {
        if first_unverified(host) {
            log::warn!(
                "{}: host key not verified ({type_name} {fingerprint}) because host_key_policy = off",
                host.address
            );
        }
        return Ok(fingerprint);
    }
    let mut known = session.known_hosts().context("cannot use known_hosts")?;
    if known_hosts.exists() {
        known
            .read_file(known_hosts, KnownHostFileKind::OpenSSH)
            .map_err(|e| {
                anyhow!(
                    "cannot read known_hosts {}: {}",
                    known_hosts.display(),
                    e.message()
                )
            })?;
    }
    match known.check_port(&host.host_name, host.port, key) {
        CheckResult::Match => Ok(fingerprint),
        // Both hints name the configured file (issue 14, bug 7): without `-f`,
        // ssh-keygen edits ~/.ssh/known_hosts; `>> known_hosts` would be relative
        // to wherever the operator stands.
        CheckResult::Mismatch => bail!(
            "host key mismatch: the server offered {type_name} {fingerprint}, which differs from the key in {}; if the host was really reinstalled, remove its old line (ssh-keygen -R '{}' -f {}) and connect again, otherwise someone may be intercepting the connection",
            known_hosts.display(),
            known_hosts_name(host),
            shell_word(known_hosts)
        ),
        CheckResult::NotFound if ssh.host_key_policy == HostKeyPolicy::AcceptNew => {
            append_known_host(known_hosts, host, type_name, key)?;
            log::info!(
                "{}: added host key {type_name} {fingerprint} to {}",
                host.address,
                known_hosts.display()
            );
            Ok(fingerprint)
        }
        CheckResult::NotFound => bail!(
            "host key unknown: the server offered {type_name} {fingerprint}, which is not in {}; verify it and add it ({}), or set host_key_policy = accept-new",
            known_hosts.display(),
            keyscan_hint(host, known_hosts)
        ),
        CheckResult::Failure => bail!("host key check failed in libssh2"),
    }
}

/// How to fetch a host's key into `known_hosts`: `ssh-keyscan`, which cannot go
/// through a bastion, or for a host behind one OpenSSH's `ssh -J` (which prints the
/// fingerprint to compare, then adds the key to that file).
fn keyscan_hint(host: &Host, known_hosts: &Path) -> String {
    let file = shell_word(known_hosts);
    if host.jump.is_none() {
        return format!("ssh-keyscan -p {} {} >> {file}", host.port, host.host_name);
    }
    let hops: Vec<String> = host
        .hops()
        .iter()
        .map(|h| format!("{}@{}:{}", h.user, h.host_name, h.port))
        .collect();
    format!(
        "ssh -J {} -o UserKnownHostsFile={file} -p {} {}@{} true",
        hops.join(","),
        host.port,
        host.user,
        host.host_name
    )
}

/// `path` as one word for a POSIX shell, quoted only when it needs to be, so a
/// hint can be pasted as it is.
fn shell_word(path: &Path) -> String {
    let text = path.display().to_string();
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+,:@%=".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// True the first time this process connects to `host` unverified, so that
/// `host_key_policy = off` warns once per host per run, however often a
/// long-running command reconnects (issue 4).
fn first_unverified(host: &Host) -> bool {
    static WARNED: std::sync::Mutex<std::collections::BTreeSet<(String, u16)>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut warned = WARNED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    warned.insert((host.address.clone(), host.port))
}

/// The SHA256 fingerprint as OpenSSH prints it (`SHA256:` + unpadded base64).
fn fingerprint(session: &Session) -> String {
    let hash = session.host_key_hash(HashType::Sha256).unwrap_or_default();
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(hash)
    )
}

/// The OpenSSH name of a host key type.
fn key_type_name(t: HostKeyType) -> &'static str {
    match t {
        HostKeyType::Rsa => "ssh-rsa",
        HostKeyType::Dss => "ssh-dss",
        HostKeyType::Ecdsa256 => "ecdsa-sha2-nistp256",
        HostKeyType::Ecdsa384 => "ecdsa-sha2-nistp384",
        HostKeyType::Ecdsa521 => "ecdsa-sha2-nistp521",
        HostKeyType::Ed25519 => "ssh-ed25519",
        HostKeyType::Unknown => "unknown",
    }
}

/// How a host is written in known_hosts: `name` on port 22, `[name]:port`
/// otherwise, for its `HostName` (as OpenSSH without HostKeyAlias).
fn known_hosts_name(host: &Host) -> String {
    if host.port == 22 {
        host.host_name.clone()
    } else {
        format!("[{}]:{}", host.host_name, host.port)
    }
}

/// Appends one known_hosts line (one write, O_APPEND, so parallel workers don't interleave).
fn append_known_host(path: &Path, host: &Host, type_name: &str, key: &[u8]) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let line = format!(
        "{} {type_name} {}\n",
        known_hosts_name(host),
        base64::engine::general_purpose::STANDARD.encode(key)
    );
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot open known_hosts {}", path.display()))?;
    f.write_all(line.as_bytes())
        .with_context(|| format!("cannot write known_hosts {}", path.display()))
}

/// The key files ssh tries when it is given none: `~/.ssh/id_ed25519`, `id_ecdsa`
/// and `id_rsa`, those that exist, in that order (`$HOME`, as `~` in the config).
fn default_keys() -> Vec<std::path::PathBuf> {
    let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) else {
        return Vec::new();
    };
    ["id_ed25519", "id_ecdsa", "id_rsa"]
        .iter()
        .map(|name| Path::new(&home).join(".ssh").join(name))
        .filter(|p| p.is_file())
        .collect()
}

/// Tries identity_file, then ssh_config's IdentityFiles, then the ssh-agent, then
/// (without any of those key files) the default keys, then the password; names
/// every method and key tried.
fn authenticate(session: &Session, host: &Host) -> Result<&'static str> {
    let mut auth = Auth {
        session,
        user: host.user.as_str(),
        tried: Vec::new(),
    };
    if let Some(key) = &host.identity_file {
        if !key.exists() {
            auth.tried
                .push(format!("publickey ({}: file not found)", key.display()));
        } else if auth.key(key, host.passphrase.as_ref().map(|p| p.expose())) {
            return Ok("publickey");
        }
    }
    // ssh_config's keys: one that does not exist is skipped, as ssh skips it.
    for key in host.config_identity_files.iter().filter(|k| k.is_file()) {
        if auth.key(key, None) {
            return Ok("publickey");
        }
    }
    if std::env::var_os("SSH_AUTH_SOCK").is_some_and(|s| !s.is_empty()) && auth.agent() {
        return Ok("agent");
    }
    if host.identity_file.is_none() && host.config_identity_files.is_empty() {
        // As ssh does without -i: the usual key files, after the agent (issue 14).
        for key in default_keys() {
            if auth.key(&key, None) {
                return Ok("publickey");
            }
        }
    }
    if let Some(pw) = &host.password
        && let Some(method) = auth.password(pw.expose())
    {
        return Ok(method);
    }
    auth.failed()
}

/// One login attempt on a session: every method tried so far, and how it failed.
struct Auth<'a> {
    /// The session being logged in.
    session: &'a Session,
    /// The remote login name.
    user: &'a str,
    /// One `method (why)` per method or key that did not log in.
    tried: Vec<String>,
}

impl Auth<'_> {
    /// Offers the key file `key` (unlocked with `pass`); true once logged in.
    fn key(&mut self, key: &Path, pass: Option<&str>) -> bool {
        match self
            .session
            .userauth_pubkey_file(self.user, None, key, pass)
        {
            Ok(()) if self.session.authenticated() => return true,
            Ok(()) => self
                .tried
                .push(format!("publickey ({}: not accepted)", key.display())),
            Err(e) => self
                .tried
                .push(format!("publickey ({}: {})", key.display(), e.message())),
        }
        false
    }

    /// Offers the ssh-agent's keys; true once logged in.
    fn agent(&mut self) -> bool {
        match self.session.userauth_agent(self.user) {
            Ok(()) if self.session.authenticated() => return true,
            Ok(()) => self.tried.push("agent (no key accepted)".to_string()),
            Err(e) => self.tried.push(format!("agent ({})", e.message())),
        }
        false
    }

    /// Sends the password, or, where the server offers no password method, answers
    /// keyboard-interactive with it; the method that logged in, if one did.
    fn password(&mut self, pw: &str) -> Option<&'static str> {
        match self.session.userauth_password(self.user, pw) {
            Ok(()) if self.session.authenticated() => return Some("password"),
            Ok(()) => self.tried.push("password (not accepted)".to_string()),
            Err(e) => {
                // Servers that only offer PAM's keyboard-interactive get the password there.
                let mut prompt = PasswordPrompt(pw);
                match self
                    .session
                    .userauth_keyboard_interactive(self.user, &mut prompt)
                {
                    Ok(()) if self.session.authenticated() => return Some("keyboard-interactive"),
                    _ => self.tried.push(format!("password ({})", e.message())),
                }
            }
        }
        None
    }

    /// The error when nothing logged in: every method tried, or that there was none.
    fn failed(self) -> Result<&'static str> {
        let user = self.user;
        if self.tried.is_empty() {
            bail!(
                "auth failed for user {user}: no method to try; add identity_file or passkey to this host in connection_info.json, put a key at ~/.ssh/id_ed25519, or start an ssh-agent"
            );
        }
        bail!(
            "auth failed for user {user}: tried {}",
            self.tried.join(", ")
        )
    }
}

/// Answers every hidden keyboard-interactive prompt with the password.
struct PasswordPrompt<'a>(&'a str);

impl ssh2::KeyboardInteractivePrompt for PasswordPrompt<'_> {
    fn prompt<'b>(
        &mut self,
        _username: &str,
        _instructions: &str,
        prompts: &[ssh2::Prompt<'b>],
    ) -> Vec<String> {
        prompts
            .iter()
            .map(|p| {
                if p.echo {
                    String::new()
                } else {
                    self.0.to_string()
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hint_paths_paste_into_a_shell() {
        assert_eq!(
            shell_word(Path::new("/etc/hostsync/known_hosts")),
            "/etc/hostsync/known_hosts"
        );
        assert_eq!(shell_word(Path::new("/a b/it's")), r"'/a b/it'\''s'");
    }

    #[test]
    fn the_listing_end_counts_only_at_a_record_boundary() {
        let end = b"Z\0tok\0";
        assert_eq!(find_end(b"Z\0tok\0", end, 0), Some(0));
        assert_eq!(find_end(b"F\0a\0Z\0tok\0err\0", end, 0), Some(4));
        // Inside a field (no NUL before it) it is data, not the end.
        assert_eq!(find_end(b"F\0aZ\0tok\0", end, 0), None);
        // A later, real one is still found.
        assert_eq!(find_end(b"F\0aZ\0tok\0\0Z\0tok\0", end, 0), Some(10));
        // The search resumes where it left off (at most `end.len()` back).
        assert_eq!(find_end(b"F\0a\0Z\0tok\0", end, 3), Some(4));
        assert_eq!(find_end(b"F\0a\0Z\0tok\0", end, 5), None);
        assert_eq!(find_end(b"F\0", end, 9), None);
    }
}
