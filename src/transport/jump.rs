//! Reaching a host through a bastion (issue 18): one SSH session per bastion,
//! carrying every target behind it as a `direct-tcpip` channel.
//!
//! libssh2 runs a session over a socket. A target behind a bastion gets one end
//! of a Unix socket pair from [`reach`]; the other end is bridged to a
//! `direct-tcpip` channel of the bastion's session by the bastion's own thread
//! (`jump-<bastion>`), which owns that session, as every libssh2 session lives on
//! one thread. That thread serves all its channels at once: libssh2 in
//! non-blocking mode, and one `poll` over the session's socket, every local end
//! and a wake-up socket. The target's session is the worker's own, exactly as for
//! a direct host (handshake, host key checked end to end under the target's own
//! name and port, login): only its encrypted bytes pass through here.
//!
//! Bastions are kept in one registry per process, keyed by who and where they are
//! (with their own chain), so every target behind one bastion shares its session;
//! `number_of_connections` still caps the target sessions (each bastion in use is
//! one session more). A bastion that cannot be logged in to, or whose session
//! dies, leaves the registry: every request waiting on it is answered "unreachable
//! via bastion B: ...", and the next request logs in anew, which is how targets
//! catch up once it is back (`watch`'s backoff, the next `sync`). A request that
//! met a session that had died while idle is asked once more of a fresh one. A
//! chain is a bastion whose own session runs over a channel of the one before.
//!
//! Non-blocking libssh2, and what it asks for (its transport.c, channel.c):
//! - a packet that was partly sent can only be finished by calling the same
//!   function again with the same data, and until then every other send of the
//!   session says EAGAIN; so a channel whose write would block while the session
//!   waits to send is written again, with its bytes unchanged, before it may be
//!   closed, and an open, an EOF or a close once started is repeated until done;
//! - reading one channel takes in the packets of all of them, so a pass over
//!   every channel is repeated until none makes progress before waiting;
//! - a channel's receive window is granted as it is read: a channel whose local
//!   end does not read is not read either (at most [`BUFFER`] waits here), except
//!   when the session is stuck on sending, where a window adjust may be the
//!   half-sent packet.

use std::collections::{BTreeMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use ssh2::{BlockDirections, Channel, ErrorCode, Session};

use crate::config::{Host, SshSettings};

/// Bytes buffered per channel and direction before that side is not read further.
const BUFFER: usize = 256 * 1024;

/// Bytes read from a local end or a channel in one call.
const CHUNK: usize = 64 * 1024;

/// How long the last bytes of a target that hung up may wait for the bastion's
/// window before the channel is closed without them.
const DRAIN: Duration = Duration::from_secs(5);

/// How many passes over the channels may follow each other before the sockets
/// are polled again (each pass that moved something is followed by another).
const PASSES: usize = 64;

/// Wake-ups in a row without progress after which the bridge waits 10 ms between
/// passes instead of trusting the socket's readiness (a guard against spinning).
const QUIET: u32 = 50;

/// How long a target waits for its channel, per connect timeout on the way: a
/// login is TCP, handshake and authentication, each bounded by it.
const STEPS_PER_LOGIN: u32 = 3;

/// The send buffer asked for on each end of a target's socket pair (the kernel
/// caps it at net.core.wmem_max). With the default (208 KiB) a target's blocking
/// libssh2 write kept finding it full, and libssh2 then waits for "readable or
/// writable" and spins while input is pending: 8 targets at 16 MiB each spent
/// more CPU spinning than the bridge spent on the bastion's encryption.
const PAIR_BUFFER: usize = 4 << 20;

/// libssh2's LIBSSH2_ERROR_EAGAIN.
const EAGAIN: i32 = -37;

/// libssh2 error codes after which the session itself is gone (socket, protocol,
/// key exchange, crypto), as opposed to one channel's trouble.
const SESSION_LOST: &[i32] = &[
    -1, -2, -3, -4, -5, -7, -8, -9, -12, -13, -14, -30, -43, -44, -45, -52,
];

/// The bridges of this process, by [`key`].
static BRIDGES: Mutex<BTreeMap<String, Arc<Bridge>>> = Mutex::new(BTreeMap::new());

/// Ids of bridges, so one that retires removes itself and not its successor.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// The way to a bastion's thread.
struct Bridge {
    /// This bridge's id (see [`NEXT_ID`]).
    id: u64,
    /// Requests for channels, served in order.
    requests: Sender<Request>,
    /// A byte written here wakes the thread's poll.
    wake: UnixStream,
}

/// A target's request for a channel to `host:port`.
struct Request {
    /// Where the bastion is to connect: the target's HostName.
    host: String,
    /// And its port.
    port: u16,
    /// Where the local end (or the refusal) goes.
    reply: Sender<Result<UnixStream, Refusal>>,
}

/// Why a channel was not opened.
struct Refusal {
    /// One line for the target's error.
    message: String,
    /// The bastion's session died (perhaps while idle): a new one may work.
    stale: bool,
}

/// A socket connected, through `bastion`, to `target`'s sshd (its HostName and
/// port), for `target`'s session. Logs in to the bastion if this process has no
/// session to it yet; bounded by the connect timeouts on the way.
pub(crate) fn reach(bastion: &Host, target: &Host, ssh: &SshSettings) -> Result<UnixStream> {
    let patience = patience(bastion, target, ssh);
    let mut last = String::new();
    for _ in 0..2 {
        let (reply, answer) = crossbeam_channel::bounded(1);
        ask(
            bastion,
            ssh,
            Request {
                host: target.host_name.clone(),
                port: target.port,
                reply,
            },
        );
        match answer.recv_timeout(patience) {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(r)) if r.stale => last = r.message,
            Ok(Err(r)) => bail!("{}", r.message),
            Err(RecvTimeoutError::Timeout) => bail!(
                "unreachable via bastion {}: no channel to {} port {} within {}s",
                bastion.address,
                target.host_name,
                target.port,
                patience.as_secs()
            ),
            Err(RecvTimeoutError::Disconnected) => bail!(
                "unreachable via bastion {}: its bridge stopped without an answer",
                bastion.address
            ),
        }
    }
    bail!("{last}")
}

/// How long a target waits for its channel: [`STEPS_PER_LOGIN`] connect timeouts
/// per bastion on the way, and one for the bastion's own connection to the target.
fn patience(bastion: &Host, target: &Host, ssh: &SshSettings) -> Duration {
    let mut hops = target.hops();
    if hops.is_empty() {
        hops.push(bastion);
    }
    let logins: Duration = hops
        .iter()
        .map(|h| super::ssh::connect_timeout(h, ssh) * STEPS_PER_LOGIN)
        .sum();
    logins + super::ssh::connect_timeout(target, ssh)
}

/// Who a bastion is, with the chain before it: bastions with the same key share
/// one session.
fn key(h: &Host) -> String {
    let before = h.jump.as_deref().map(key).unwrap_or_default();
    format!(
        "{}@{}:{} ({}) [{before}]",
        h.user, h.host_name, h.port, h.address
    )
}

/// Hands `req` to the bridge of `bastion`, starting one if there is none. Under
/// the registry's lock, so a bridge that retires (which takes the lock too) either
/// answers it or was already gone.
fn ask(bastion: &Host, ssh: &SshSettings, req: Request) {
    let key = key(bastion);
    let mut bridges = BRIDGES.lock().unwrap_or_else(PoisonError::into_inner);
    let bridge = match bridges.get(&key) {
        Some(b) => b.clone(),
        None => match start(bastion, ssh, &key) {
            Ok(b) => {
                bridges.insert(key.clone(), b.clone());
                b
            }
            Err(e) => {
                let _ = req.reply.send(Err(Refusal {
                    message: format!("unreachable via bastion {}: {e}", bastion.address),
                    stale: false,
                }));
                return;
            }
        },
    };
    match bridge.requests.send(req) {
        // A full wake-up socket already wakes the thread: the byte is not needed.
        Ok(()) => drop((&bridge.wake).write(&[1])),
        Err(crossbeam_channel::SendError(req)) => {
            bridges.remove(&key);
            let _ = req.reply.send(Err(Refusal {
                message: format!(
                    "unreachable via bastion {}: its bridge stopped",
                    bastion.address
                ),
                stale: true,
            }));
        }
    }
}

/// Starts the thread of a new bridge to `bastion`.
fn start(bastion: &Host, ssh: &SshSettings, key: &str) -> std::io::Result<Arc<Bridge>> {
    let (wake, woken) = UnixStream::pair()?;
    wake.set_nonblocking(true)?;
    woken.set_nonblocking(true)?;
    let (requests, incoming) = crossbeam_channel::unbounded();
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let (host, ssh, owned_key) = (bastion.clone(), ssh.clone(), key.to_string());
    std::thread::Builder::new()
        .name(format!("jump-{}", bastion.address))
        .spawn(move || serve(&host, &ssh, &owned_key, id, &incoming, woken))?;
    Ok(Arc::new(Bridge { id, requests, wake }))
}

/// The bridge thread: logs in to the bastion, serves channels until its session
/// ends, then retires the bridge.
fn serve(
    bastion: &Host,
    ssh: &SshSettings,
    key: &str,
    id: u64,
    incoming: &Receiver<Request>,
    woken: UnixStream,
) {
    let login = match super::ssh::login(bastion, ssh) {
        Ok(l) => l,
        Err(e) => {
            let message = format!("unreachable via bastion {}: {e:#}", bastion.address);
            return retire(key, id, incoming, &message, false);
        }
    };
    log::info!(
        "{}: connected as {} on port {} as a bastion ({}, host key {})",
        bastion.address,
        bastion.user,
        bastion.port,
        login.auth_method,
        login.fingerprint
    );
    login.session.set_blocking(false);
    let mut engine = Engine::new(login.session, bastion.address.clone());
    let why = engine.run(incoming, &woken);
    log::info!("{}: bastion session ended: {why}", bastion.address);
    let message = format!("unreachable via bastion {}: {why}", bastion.address);
    engine.refuse_waiting(&message);
    drop(engine);
    retire(key, id, incoming, &message, true);
}

/// Takes bridge `id` out of the registry and answers every request still queued.
fn retire(key: &str, id: u64, incoming: &Receiver<Request>, message: &str, stale: bool) {
    let mut bridges = BRIDGES.lock().unwrap_or_else(PoisonError::into_inner);
    if bridges.get(key).is_some_and(|b| b.id == id) {
        bridges.remove(key);
    }
    for req in incoming.try_iter() {
        let _ = req.reply.send(Err(Refusal {
            message: message.to_string(),
            stale,
        }));
    }
}

/// Whether libssh2's error `code` means the session is gone.
fn session_lost(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::Session(c) if SESSION_LOST.contains(&c))
}

/// What the bastion's session says went wrong last: whether the session is gone,
/// and the words.
fn last_error(session: &Session) -> (bool, String) {
    match ssh2::Error::last_session_error(session) {
        Some(e) if session_lost(e.code()) => (true, lost_words(e.message())),
        Some(e) => (false, e.message().to_string()),
        None => (false, "unknown libssh2 error".into()),
    }
}

/// libssh2's terse words for a lost session ("transport read"), made a sentence.
fn lost_words(libssh2: &str) -> String {
    format!("the connection to the bastion was lost ({libssh2})")
}

/// One target's channel and its local end, with what is on its way each way.
struct Lane {
    /// The `direct-tcpip` channel.
    channel: Channel,
    /// Our end of the target session's socket pair (non-blocking).
    local: UnixStream,
    /// Read from the local end, not yet written to the channel.
    up: Pending,
    /// Read from the channel, not yet written to the local end.
    down: Pending,
    /// The local end hung up (or failed): nothing more comes from it.
    local_eof: bool,
    /// When `local_eof` was seen, for [`DRAIN`].
    eof_at: Option<Instant>,
    /// Writing to the local end failed: what comes down is dropped.
    local_dead: bool,
    /// The channel's EOF came: nothing more comes down.
    remote_eof: bool,
    /// The local end's write side was shut after `remote_eof`.
    shut: bool,
    /// The last write would block while the session waits to send: the channel's
    /// packet may be half sent and must be written again before anything else.
    must_write: bool,
    /// The channel failed: close it.
    broken: bool,
    /// Poll saw the local end hang up: it is not polled again.
    hup: bool,
    /// The local end may have bytes: poll said so (or it hung up) since a read of
    /// it last found nothing. Saves a failing read per channel and pass.
    readable: bool,
}

impl Lane {
    /// A lane for a channel just opened.
    fn new(channel: Channel, local: UnixStream) -> Lane {
        Lane {
            channel,
            local,
            up: Pending::default(),
            down: Pending::default(),
            local_eof: false,
            eof_at: None,
            local_dead: false,
            remote_eof: false,
            shut: false,
            must_write: false,
            broken: false,
            hup: false,
            readable: true,
        }
    }

    /// Moves what can move without blocking; true if anything did. `Err` is the
    /// session's loss (its words).
    fn step(&mut self, s: &Session, scratch: &mut [u8], force: bool) -> Result<bool, String> {
        let mut moved = self.read_local(scratch);
        moved |= self.write_channel(s)?;
        if !self.remote_eof && !self.broken && (self.down.len() < BUFFER || force) {
            moved |= self.read_channel(s, scratch, force)?;
        }
        moved |= self.write_local();
        Ok(moved)
    }

    /// Whether the lane is over: the channel failed, or the target's side hung up
    /// and its last bytes went (or waited [`DRAIN`]), or writing to it failed; never
    /// while a packet of it may be half sent.
    fn finished(&self) -> bool {
        if self.must_write {
            return false;
        }
        let drained = self.up.is_empty() || self.eof_at.is_some_and(|t| t.elapsed() > DRAIN);
        self.broken || (self.local_eof && drained) || self.local_dead
    }

    /// Local end → `up`, while there is room.
    fn read_local(&mut self, scratch: &mut [u8]) -> bool {
        let mut moved = false;
        while self.readable && !self.local_eof && self.up.len() < BUFFER {
            let room = (BUFFER - self.up.len()).min(scratch.len());
            match self.local.read(&mut scratch[..room]) {
                Ok(n) if n > 0 => {
                    self.up.push(&scratch[..n]);
                    moved = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.readable = false;
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // The end, or a failure: the target's session is gone either way.
                _ => {
                    self.local_eof = true;
                    self.eof_at = Some(Instant::now());
                    moved = true;
                }
            }
        }
        moved
    }

    /// `up` → the channel, then the channel's EOF once the local end hung up.
    fn write_channel(&mut self, s: &Session) -> Result<bool, String> {
        let mut moved = false;
        while !self.up.is_empty() && !self.broken {
            match self.channel.write(self.up.bytes()) {
                Ok(0) => {
                    self.must_write = false;
                    break;
                }
                Ok(n) => {
                    self.up.consume(n);
                    self.must_write = false;
                    moved = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.must_write = matches!(
                        s.block_directions(),
                        BlockDirections::Outbound | BlockDirections::Both
                    );
                    break;
                }
                Err(_) => {
                    self.must_write = false;
                    moved |= self.channel_failed(s)?;
                }
            }
        }
        Ok(moved)
    }

    /// The channel → `down`: one read when `force`d (the session is stuck on
    /// sending and this read may finish a window adjust), else while there is room.
    fn read_channel(
        &mut self,
        s: &Session,
        scratch: &mut [u8],
        force: bool,
    ) -> Result<bool, String> {
        let mut moved = false;
        loop {
            match self.channel.read(scratch) {
                Ok(0) => {
                    if self.channel.eof() {
                        self.remote_eof = true;
                        moved = true;
                    }
                    break;
                }
                Ok(n) => {
                    self.down.push(&scratch[..n]);
                    moved = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    moved |= self.channel_failed(s)?;
                    break;
                }
            }
            if force || self.down.len() >= BUFFER {
                break;
            }
        }
        Ok(moved)
    }

    /// `down` → the local end; once the channel's EOF came and all is written, the
    /// local end's write side is shut, so the target's session sees the end.
    fn write_local(&mut self) -> bool {
        let mut moved = false;
        while !self.down.is_empty() && !self.local_dead {
            match send_nosignal(self.local.as_raw_fd(), self.down.bytes()) {
                Ok(n) => {
                    self.down.consume(n);
                    moved = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.local_dead = true;
                    self.down.clear();
                    moved = true;
                }
            }
        }
        if self.remote_eof && self.down.is_empty() && !self.shut {
            let _ = self.local.shutdown(std::net::Shutdown::Write);
            self.shut = true;
            moved = true;
        }
        moved
    }

    /// After a channel call failed: `Err` if the session is gone, else the lane is
    /// broken (returns true: that is progress).
    fn channel_failed(&mut self, s: &Session) -> Result<bool, String> {
        let (lost, why) = last_error(s);
        if lost {
            return Err(why);
        }
        log::debug!("bastion channel failed: {why}");
        self.broken = true;
        Ok(true)
    }

    /// What to poll the local end for: input while there is room to take it,
    /// output while bytes wait for it; a hung-up end is not polled (fd -1).
    fn poll_request(&self) -> libc::pollfd {
        let mut ev = 0;
        if !self.local_eof && self.up.len() < BUFFER {
            ev |= libc::POLLIN;
        }
        if !self.down.is_empty() && !self.local_dead {
            ev |= libc::POLLOUT;
        }
        pollfd(if self.hup { -1 } else { self.local.as_raw_fd() }, ev)
    }

    /// Notes what `poll` said of the local end: a hang-up or error is read as
    /// input too, so the lane finds out.
    fn polled(&mut self, revents: libc::c_short) {
        if revents & (libc::POLLHUP | libc::POLLERR) != 0 {
            self.hup = true;
            self.readable = true;
        }
        if revents & libc::POLLIN != 0 {
            self.readable = true;
        }
    }
}

/// Bytes on their way in one direction: a buffer read from the front, so taking
/// 32 KiB off a full one moves nothing (it is compacted once half of it is read).
/// What a half-sent packet needs, the same bytes at the front, holds: they stay
/// in order whatever moves.
#[derive(Default)]
struct Pending {
    /// The bytes, those before `start` already gone.
    buf: Vec<u8>,
    /// Where the bytes still on their way begin.
    start: usize,
}

impl Pending {
    /// How many bytes wait.
    fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Whether none wait.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes that wait, oldest first.
    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Adds bytes at the end.
    fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Takes `n` bytes off the front.
    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.buf.len() {
            self.clear();
        }
    }

    /// Drops every byte.
    fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
    }
}

/// `send(2)` without SIGPIPE (a target whose session went away is no signal).
fn send_nosignal(fd: RawFd, data: &[u8]) -> std::io::Result<usize> {
    // SAFETY: `data` is valid for `data.len()` bytes and `fd` is an open socket.
    let n = unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// A bastion's session and every channel it carries, driven by one thread.
struct Engine {
    /// The bastion's session, non-blocking.
    session: Session,
    /// The bastion's name, for messages.
    name: String,
    /// Open channels.
    lanes: Vec<Lane>,
    /// Requests waiting for their turn (libssh2 opens one channel at a time).
    queue: VecDeque<Request>,
    /// The request whose channel is being opened.
    opening: Option<Request>,
    /// Channels being closed (a close, once started, is repeated until done).
    closing: Vec<Channel>,
    /// Data waits on the session's socket while no channel reads it: not polled
    /// for again until one does.
    unread: bool,
    /// Reused read buffer.
    scratch: Vec<u8>,
}

impl Engine {
    fn new(session: Session, name: String) -> Engine {
        Engine {
            session,
            name,
            lanes: Vec::new(),
            queue: VecDeque::new(),
            opening: None,
            closing: Vec::new(),
            unread: false,
            scratch: vec![0; CHUNK],
        }
    }

    /// Serves requests and channels until the session ends; returns why it ended.
    fn run(&mut self, incoming: &Receiver<Request>, woken: &UnixStream) -> String {
        let mut force = false;
        let mut quiet = 0u32;
        loop {
            drain_wakeups(woken);
            self.queue.extend(incoming.try_iter());
            let mut moved = false;
            let mut more = false;
            for n in 0..PASSES {
                match self.pass(force) {
                    Ok(true) => moved = true,
                    Ok(false) => break,
                    Err(why) => return why,
                }
                force = false;
                more = n + 1 == PASSES;
            }
            quiet = if moved { 0 } else { quiet.saturating_add(1) };
            // Nothing but the sockets can move the bridge on, except the DRAIN
            // deadline of a target that hung up: idle, it waits without a timer.
            let timeout = if more {
                0
            } else if quiet > QUIET {
                10
            } else if self.lanes.iter().any(|l| l.local_eof && !l.up.is_empty()) {
                1000
            } else {
                -1
            };
            match self.wait(woken, timeout, quiet <= QUIET) {
                Ok(f) => force = f,
                Err(why) => return why,
            }
        }
    }

    /// Whether anything is in flight (a channel, an open or a close).
    fn busy(&self) -> bool {
        !self.lanes.is_empty()
            || self.opening.is_some()
            || !self.queue.is_empty()
            || !self.closing.is_empty()
    }

    /// One pass: the open in progress, every lane, every close. True if anything
    /// moved; `Err` when the session is gone.
    fn pass(&mut self, force: bool) -> Result<bool, String> {
        let mut moved = self.open()?;
        for lane in &mut self.lanes {
            moved |= lane.step(&self.session, &mut self.scratch, force)?;
        }
        let (done, live): (Vec<Lane>, Vec<Lane>) = std::mem::take(&mut self.lanes)
            .into_iter()
            .partition(Lane::finished);
        self.lanes = live;
        moved |= !done.is_empty();
        self.closing.extend(done.into_iter().map(|l| l.channel));
        let before = self.closing.len();
        let mut kept = Vec::new();
        for mut ch in std::mem::take(&mut self.closing) {
            match ch.close() {
                Err(e) if e.code() == ErrorCode::Session(EAGAIN) => kept.push(ch),
                Err(e) if session_lost(e.code()) => return Err(lost_words(e.message())),
                _ => {}
            }
        }
        moved |= kept.len() != before;
        self.closing = kept;
        Ok(moved)
    }

    /// Goes on with the channel being opened (or starts the next); true if it
    /// finished either way.
    fn open(&mut self) -> Result<bool, String> {
        if self.opening.is_none() {
            self.opening = self.queue.pop_front();
        }
        let Some(req) = &self.opening else {
            return Ok(false);
        };
        let opened = self.session.channel_direct_tcpip(&req.host, req.port, None);
        let req = match opened {
            Err(e) if e.code() == ErrorCode::Session(EAGAIN) => return Ok(false),
            Err(e) if session_lost(e.code()) => return Err(lost_words(e.message())),
            _ => self.opening.take().expect("a request is being opened"),
        };
        match opened {
            Ok(channel) => self.hand_over(channel, req),
            Err(e) => {
                let why = e.message().to_lowercase();
                let hint = if why.contains("prohibited") {
                    " (its sshd refuses TCP forwarding: set AllowTcpForwarding yes there)"
                } else {
                    ""
                };
                let _ = req.reply.send(Err(Refusal {
                    message: format!(
                        "host unreachable: bastion {} could not connect to {} port {}: {why}{hint}",
                        self.name, req.host, req.port
                    ),
                    stale: false,
                }));
            }
        }
        Ok(true)
    }

    /// Gives the requester its end of a new socket pair bridged to `channel`.
    fn hand_over(&mut self, channel: Channel, req: Request) {
        let pair = UnixStream::pair().and_then(|(ours, theirs)| {
            ours.set_nonblocking(true)?;
            for end in [&ours, &theirs] {
                grow_send_buffer(end);
            }
            Ok((ours, theirs))
        });
        match pair {
            Ok((ours, theirs)) => {
                log::debug!(
                    "{}: channel to {} port {} open",
                    self.name,
                    req.host,
                    req.port
                );
                // A requester that gave up meanwhile drops its end: the lane then ends.
                let _ = req.reply.send(Ok(theirs));
                self.lanes.push(Lane::new(channel, ours));
            }
            Err(e) => {
                let _ = req.reply.send(Err(Refusal {
                    message: format!("cannot make a socket pair for the bastion's channel: {e}"),
                    stale: false,
                }));
                self.closing.push(channel);
            }
        }
    }

    /// Answers every request not yet served (the session is gone).
    fn refuse_waiting(&mut self, message: &str) {
        for req in self.opening.take().into_iter().chain(self.queue.drain(..)) {
            let _ = req.reply.send(Err(Refusal {
                message: message.to_string(),
                stale: true,
            }));
        }
    }

    /// Polls the session's socket, the wake-up socket and every local end;
    /// returns whether the session's socket became writable (a stuck send may now
    /// go: see [`Lane::read_channel`]). `Err` when the bastion hung up.
    fn wait(&mut self, woken: &UnixStream, timeout: i32, trust_out: bool) -> Result<bool, String> {
        let fd = self.session.as_raw_fd();
        let idle = !self.busy();
        let mut fds = vec![
            pollfd(woken.as_raw_fd(), libc::POLLIN),
            pollfd(fd, self.session_events(idle, trust_out)),
        ];
        fds.extend(self.lanes.iter().map(Lane::poll_request));
        // SAFETY: `fds` is a valid array of `fds.len()` pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(format!("cannot poll the bastion's socket: {e}"));
        }
        for (lane, p) in self.lanes.iter_mut().zip(&fds[2..]) {
            lane.polled(p.revents);
        }
        let session = fds[1].revents;
        if session & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
            return Err("the connection to the bastion was closed".into());
        }
        if idle && session & libc::POLLIN != 0 {
            self.idle_input(fd)?;
        }
        if !idle {
            self.unread = false;
        }
        Ok(session & libc::POLLOUT != 0)
    }

    /// What to poll the session's socket for: input when something waits for
    /// the bastion's packets (or, `idle`, to notice it hang up), output when a
    /// send is stuck and `trust_out` says its writability means something.
    fn session_events(&self, idle: bool, trust_out: bool) -> libc::c_short {
        // The session's input is wanted by an open, a close, a channel with room
        // for more, or one whose bytes wait for the bastion's window to open.
        let reading = self.opening.is_some()
            || !self.closing.is_empty()
            || self
                .lanes
                .iter()
                .any(|l| (!l.remote_eof && l.down.len() < BUFFER) || !l.up.is_empty());
        let mut events = 0;
        if reading || (idle && !self.unread) {
            events |= libc::POLLIN;
        }
        let outbound = matches!(
            self.session.block_directions(),
            BlockDirections::Outbound | BlockDirections::Both
        );
        if outbound && trust_out {
            events |= libc::POLLOUT;
        }
        events
    }

    /// The session's socket is readable while no channel is in flight: its end
    /// (the bastion went away) ends the session; anything else waits for the
    /// next channel, which reads it.
    fn idle_input(&mut self, fd: RawFd) -> Result<(), String> {
        let mut byte = 0u8;
        // SAFETY: one byte of `byte` is writable; MSG_PEEK leaves it in the socket.
        let n = unsafe {
            libc::recv(
                fd,
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if n == 0 {
            return Err("the bastion closed the connection".into());
        }
        if n > 0 {
            self.unread = true;
        }
        Ok(())
    }
}

/// Asks for a [`PAIR_BUFFER`] send buffer on `end`; a smaller one only costs speed.
fn grow_send_buffer(end: &UnixStream) {
    let size = PAIR_BUFFER as libc::c_int;
    // SAFETY: a valid socket and a c_int option value of the right size.
    unsafe {
        libc::setsockopt(
            end.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// A pollfd for `fd` and `events`.
fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// Reads whatever woke the thread.
fn drain_wakeups(woken: &UnixStream) {
    let mut buf = [0u8; 64];
    while matches!((&*woken).read(&mut buf), Ok(n) if n > 0) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(address: &str, jump: Option<Host>) -> Host {
        Host {
            address: address.into(),
            host_name: address.into(),
            port: 22,
            user: "u".into(),
            jump: jump.map(Box::new),
            ..Host::default()
        }
    }

    /// Bastions with the same chain share a session; another chain does not.
    #[test]
    fn keys_name_the_chain() {
        let outer = host("10.0.0.1", None);
        let a = host("10.0.0.2", Some(outer.clone()));
        let b = host("10.0.0.2", None);
        assert_ne!(key(&a), key(&b));
        assert_eq!(key(&a), key(&host("10.0.0.2", Some(outer))));
        let mut other_user = b.clone();
        other_user.user = "v".into();
        assert_ne!(key(&b), key(&other_user));
    }

    #[test]
    fn pending_bytes_keep_their_order() {
        let mut p = Pending::default();
        p.push(b"abcdef");
        p.consume(2);
        assert_eq!(p.bytes(), b"cdef");
        p.consume(2);
        p.push(b"gh");
        assert_eq!((p.bytes(), p.start), (&b"efgh"[..], 0), "compacted");
        p.consume(4);
        assert!(p.is_empty() && p.buf.is_empty());
    }

    #[test]
    fn patience_counts_every_login_on_the_way() {
        let ssh = SshSettings {
            connect_timeout: Duration::from_secs(2),
            ..SshSettings::for_tests()
        };
        let chain = host("t", Some(host("b2", Some(host("b1", None)))));
        let b2 = chain.jump.as_deref().unwrap();
        assert_eq!(
            patience(b2, &chain, &ssh),
            Duration::from_secs(2 * 3 * 2 + 2)
        );
    }

    /// A bastion nobody listens for is refused at once, with its name; the
    /// registry keeps no bridge for it afterwards.
    #[test]
    fn an_unreachable_bastion_names_itself() {
        let ssh = SshSettings {
            known_hosts: "/nonexistent/known_hosts".into(),
            connect_timeout: Duration::from_secs(2),
            ..SshSettings::for_tests()
        };
        // Port 1 on loopback: nothing listens there (connection refused).
        let mut bastion = host("127.0.0.1", None);
        bastion.port = 1;
        let target = host("127.0.0.2", Some(bastion.clone()));
        let e = format!("{:#}", reach(&bastion, &target, &ssh).unwrap_err());
        assert!(
            e.starts_with(
                "unreachable via bastion 127.0.0.1: host unreachable: connect to port 1: "
            ),
            "{e}"
        );
        let bridges = BRIDGES.lock().unwrap();
        assert!(!bridges.contains_key(&key(&bastion)), "retired");
    }
}
