//! The SFTP way to change a host (issue 16's sftp tier): hostsync's own SFTP
//! version 3 client over one channel of an open `ssh2::Session`.
//!
//! Why not libssh2's SFTP layer (the `ssh2::Sftp` API): it waits for each reply
//! before the next request (one outstanding request per kind and session), so a
//! listing cannot be pipelined; `ssh2::Sftp::rename` sends the plain version 3
//! rename, which refuses an existing target, whatever `RenameFlags` say; the
//! vendored libssh2 1.11 has `libssh2_sftp_posix_rename_ex`, but neither
//! `libssh2-sys` nor `ssh2` declares it and `ssh2::Sftp` does not expose its raw
//! handle; and libssh2 has no `hardlink@openssh.com` at all. Speaking the protocol
//! here ([`wire`]) needs no patch to either crate and gives every request of a
//! step in one write.
//!
//! What it does, each step confirmed by the server's reply:
//! - [`Sftp::start`]: the `sftp` subsystem, `INIT`/`VERSION`, the server's
//!   extensions (`posix-rename@openssh.com`, `hardlink@openssh.com`, ...). An
//!   account whose sshd runs `internal-sftp` for everything gets the same;
//!   a server without the subsystem is one error line ("no SFTP subsystem: ...").
//! - [`Sftp::list`] (in `tree`): the same [`Listing`] records the shell listing
//!   yields, pipelined: lstat of every ancestor (the ancestor rule of
//!   [`crate::remote::TRUST`]), then readdir of every folder with an lstat of
//!   every directory it names, many requests in flight. Times are whole seconds:
//!   version 3 carries no fraction, so `mtime_nsec` is 0 and hostsync's record of
//!   what it pushed decides equal seconds ([`crate::local::pushed`]).
//! - [`Sftp::put`]: upload to a temporary name of this run
//!   ([`crate::remote::runs::Names`]), created exclusively (`O_CREAT|O_EXCL`: a name
//!   planted in advance fails the step), writes pipelined, then `fsetstat` sets
//!   mode and mtime, then, once the server confirmed all of that, optional
//!   backups and `posix-rename@openssh.com` swap it in atomically. A connection
//!   that dies before the rename leaves the old file and a temporary that a
//!   later run removes ([`crate::remote::runs::removable`]).
//! - [`Sftp::put_many`] (in `pipe`): the same steps for a batch of small files,
//!   many files in flight at once, each file's next step sent as soon as the
//!   server confirmed its last one, so a batch costs about three round trips
//!   per window of files, not three per file.
//! - [`Sftp::symlink`], [`Sftp::mkdir`], [`Sftp::remove_tree`] (in `tree`), and
//!   backups that keep `dest` in place while taking `dest.1`
//!   (`hardlink@openssh.com`; without it a backup is an error, never skipped).
//!
//! Every read of a reply blocks at most the session's timeout
//! (`Session::set_timeout`, `[ssh] io_timeout` on hostsync's connections), so a
//! silent server is an error, not a hang.
//!
//! SFTP acts on paths, never relative to a checked folder, so a destination that
//! others than root and the login user can write is reported by the listing
//! (`RootState::open`), and the caller refuses it, as for hosts without perl
//! (issue 13). Nothing a server sends is trusted: replies are bounded
//! ([`wire::MAX_REPLY`]), parsed with bounds checks, and errors escape its text.

mod pipe;
mod tree;
pub(crate) mod wire;

use std::collections::HashMap;
use std::io::{Read, Write};

use anyhow::{Context, Result, anyhow, bail};

pub(crate) use self::pipe::{Feed, Target};
use self::wire::{Attrs, Fields, Name, Request, kind, open, status};
pub(crate) use crate::remote::{ListRoot, Listing, RemoteEntry, RootState};

/// Requests kept in flight while streaming file data or walking a tree: enough to
/// fill a 20 ms path at 100 MB/s with 32 KiB writes, and, with sshd's 2 MiB
/// channel window, never so many that both sides wait on each other.
const WINDOW: usize = 64;

/// Bytes of file data per write request (what one SSH packet of libssh2 holds).
const CHUNK: usize = 32 * 1024;

/// One reply of the server, by request id.
#[derive(Debug)]
enum Reply {
    Status(u32, String),
    Handle(Vec<u8>),
    Data(Vec<u8>),
    Names(Vec<Name>),
    Attrs(Attrs),
}

/// A step the server refused: what was asked, and the status it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    /// What was asked ("create /srv/x", ...), escaped.
    pub(crate) what: String,
    /// The SFTP status code ([`wire::status`]).
    pub(crate) code: u32,
    /// The server's message, escaped.
    pub(crate) message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let why = match self.code {
            status::NO_SUCH_FILE => "no such file or directory",
            status::PERMISSION_DENIED => "permission denied on the remote",
            status::OP_UNSUPPORTED => "not supported by this SFTP server",
            _ if self.message.is_empty() => "failed",
            _ => &self.message,
        };
        write!(f, "{}: {why}", self.what)
    }
}

impl std::error::Error for Refused {}

/// An open SFTP session: one channel, its extensions, the replies not yet taken.
pub(crate) struct Sftp {
    /// The channel running the `sftp` subsystem.
    channel: ssh2::Channel,
    /// The id of the next request.
    next_id: u32,
    /// Requests built but not yet written (written by [`Sftp::flush`]).
    out: Vec<u8>,
    /// Bytes read from the channel and not parsed yet, from `at` on: the channel
    /// is read in big pieces, so many small replies cost one read.
    input: Vec<u8>,
    /// Where the unparsed bytes of `input` start.
    at: usize,
    /// Replies read while waiting for another id.
    early: HashMap<u32, Reply>,
    /// Requests whose replies nobody waits for (a CLOSE after reading): dropped
    /// when they come.
    forget: std::collections::HashSet<u32>,
    /// The extensions of the server's `VERSION` (name, data).
    extensions: wire::Extensions,
    /// The login user's uid where known ([`Sftp::whoami`]), for the ancestor
    /// rule and the check of who else can write a destination.
    me: Option<Option<u32>>,
}

impl Sftp {
    /// Opens the `sftp` subsystem on `session` and exchanges `INIT`/`VERSION`.
    /// Fails with one line when the server has no SFTP subsystem.
    pub(crate) fn start(session: &ssh2::Session) -> Result<Sftp> {
        let mut channel = session
            .channel_session()
            .map_err(|e| anyhow!("cannot open a channel: {}", e.message()))?;
        channel
            .subsystem("sftp")
            .map_err(|e| anyhow!("no SFTP subsystem: {}", e.message()))?;
        let mut sftp = Sftp {
            channel,
            next_id: 0,
            out: Request::new(kind::INIT, 3).finish(),
            input: Vec::new(),
            at: 0,
            early: HashMap::new(),
            forget: std::collections::HashSet::new(),
            extensions: Vec::new(),
            me: None,
        };
        let (kind, body) = match sftp.flush().and_then(|()| sftp.read_packet()) {
            Ok(packet) => packet,
            Err(e) => return Err(sftp.ended(e)),
        };
        if kind != wire::kind::VERSION {
            bail!("no SFTP subsystem: the server answered INIT with packet type {kind}");
        }
        let (version, extensions) = wire::parse_version(&body).map_err(|e| anyhow!(e))?;
        if version < 3 {
            bail!("the SFTP server speaks version {version}; hostsync needs version 3");
        }
        sftp.extensions = extensions;
        Ok(sftp)
    }

    /// The error for a subsystem that ended before `VERSION`, with its stderr
    /// (e.g. `sh: /usr/lib/sftp-server: not found`).
    fn ended(&mut self, e: anyhow::Error) -> anyhow::Error {
        // Whatever runs there may still be reading (e.g. a login that printed
        // text before starting sftp-server): EOF first, so its stderr ends.
        let _ = self.channel.send_eof();
        let mut stderr = Vec::new();
        let _ = self.channel.stderr().take(4096).read_to_end(&mut stderr);
        let said = crate::escape::first_line(&stderr, 200);
        if said.is_empty() {
            anyhow!("no SFTP subsystem: {e:#}")
        } else {
            anyhow!("no SFTP subsystem: {e:#} ({said})")
        }
    }

    /// Whether the server announced extension `name` (e.g. `posix-rename@openssh.com`).
    pub(crate) fn has(&self, name: &str) -> bool {
        self.extensions.iter().any(|(n, _)| n == name.as_bytes())
    }

    /// The login user's uid, as far as SFTP tells: the owner of the starting
    /// folder (the home) when that is not root's and only its owner can write it
    /// (sshd's StrictModes asks the same of a home). `None` otherwise (a root-owned
    /// chroot): then only group and other write bits make a folder "open".
    pub(crate) fn whoami(&mut self) -> Result<Option<u32>> {
        if let Some(me) = self.me {
            return Ok(me);
        }
        let id = self.send(|id| Request::new(kind::LSTAT, id).str(b"."));
        let me = match self.reply(id)? {
            Reply::Attrs(a) if a.kind() == b'd' => a
                .uid()
                .filter(|&u| u != 0 && a.mode.is_some_and(|m| m & 0o022 == 0)),
            _ => None,
        };
        self.me = Some(me);
        Ok(me)
    }

    /// Queues one request built by `build` with the next id; returns the id.
    fn send(&mut self, build: impl FnOnce(u32) -> Request) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.out.extend_from_slice(&build(id).finish());
        id
    }

    /// Writes every queued request.
    fn flush(&mut self) -> Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        // Not `Channel::flush`: libssh2_channel_flush discards what the server has
        // sent and we have not read yet (replies to the first of these requests).
        self.channel
            .write_all(&out)
            .context("sending SFTP requests")
    }

    /// Reads one packet: its type and the rest (id first).
    fn read_packet(&mut self) -> Result<(u8, Vec<u8>)> {
        self.fill(4)?;
        let head = &self.input[self.at..self.at + 4];
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if len == 0 || len > wire::MAX_REPLY {
            bail!("the SFTP server sent a packet of {len} bytes");
        }
        self.fill(4 + len)?;
        let start = self.at + 4;
        let (kind, body) = (
            self.input[start],
            self.input[start + 1..start + len].to_vec(),
        );
        self.at = start + len;
        Ok((kind, body))
    }

    /// Reads from the channel until at least `need` unparsed bytes are there.
    fn fill(&mut self, need: usize) -> Result<()> {
        const PIECE: usize = 64 * 1024;
        if self.at > 0 && self.input.len() - self.at < need {
            self.input.drain(..self.at);
            self.at = 0;
        }
        while self.input.len() - self.at < need {
            let have = self.input.len();
            self.input.resize(have + PIECE, 0);
            let got = self.channel.read(&mut self.input[have..]);
            self.input.truncate(have + *got.as_ref().unwrap_or(&0));
            if got.context("the SFTP session ended")? == 0 {
                bail!("the SFTP session ended");
            }
        }
        Ok(())
    }

    /// The reply to request `id` (flushing first; replies to others are kept).
    fn reply(&mut self, id: u32) -> Result<Reply> {
        self.flush()?;
        loop {
            if let Some(r) = self.early.remove(&id) {
                return Ok(r);
            }
            let (got, reply) = self.next_reply()?;
            if got == id {
                return Ok(reply);
            }
            if !self.forget.remove(&got) {
                self.early.insert(got, reply);
            }
        }
    }

    /// Reads and parses the next reply packet, whatever its id, but for those of
    /// requests nobody waits for.
    fn next_reply(&mut self) -> Result<(u32, Reply)> {
        loop {
            let (id, reply) = self.read_reply()?;
            if !self.forget.remove(&id) {
                return Ok((id, reply));
            }
        }
    }

    /// Reads and parses the next reply packet.
    fn read_reply(&mut self) -> Result<(u32, Reply)> {
        let (kind, body) = self.read_packet()?;
        let mut f = Fields::new(&body);
        let id = f.u32().map_err(|e| anyhow!(e))?;
        let reply = match kind {
            kind::STATUS => {
                let code = f.u32().map_err(|e| anyhow!(e))?;
                let msg = f.str().unwrap_or_default();
                Reply::Status(code, crate::escape::escape(msg))
            }
            kind::HANDLE => Reply::Handle(f.str().map_err(|e| anyhow!(e))?.to_vec()),
            kind::DATA => Reply::Data(f.str().map_err(|e| anyhow!(e))?.to_vec()),
            kind::NAME => Reply::Names(wire::parse_names(&mut f).map_err(|e| anyhow!(e))?),
            kind::ATTRS => Reply::Attrs(f.attrs().map_err(|e| anyhow!(e))?),
            other => bail!("the SFTP server sent an unexpected packet type {other}"),
        };
        Ok((id, reply))
    }

    /// Waits for request `id`, which must succeed (`STATUS OK`); `what` names it.
    fn expect_ok(&mut self, id: u32, what: impl FnOnce() -> String) -> Result<()> {
        match self.reply(id)? {
            Reply::Status(status::OK, _) => Ok(()),
            Reply::Status(code, message) => Err(refused(what(), code, message)),
            other => bail!("{}: unexpected SFTP reply {other:?}", what()),
        }
    }

    /// Waits for request `id`, which must answer with a handle.
    fn expect_handle(&mut self, id: u32, what: impl FnOnce() -> String) -> Result<Vec<u8>> {
        match self.reply(id)? {
            Reply::Handle(h) => Ok(h),
            Reply::Status(code, message) => Err(refused(what(), code, message)),
            other => bail!("{}: unexpected SFTP reply {other:?}", what()),
        }
    }

    /// lstat of `path`: `None` when it does not exist.
    pub(crate) fn lstat(&mut self, path: &[u8]) -> Result<Option<Attrs>> {
        let id = self.send(|id| Request::new(kind::LSTAT, id).str(path));
        match self.reply(id)? {
            Reply::Attrs(a) => Ok(Some(a)),
            Reply::Status(status::NO_SUCH_FILE, _) => Ok(None),
            Reply::Status(code, message) => {
                Err(refused(format!("lstat {}", show(path)), code, message))
            }
            other => bail!("lstat {}: unexpected SFTP reply {other:?}", show(path)),
        }
    }

    /// Makes directory `path` with exactly `mode` (a `setstat` after `mkdir`, so
    /// the server's umask does not count).
    pub(crate) fn mkdir(&mut self, path: &[u8], mode: u32) -> Result<()> {
        let perm = Attrs {
            mode: Some(mode & 0o7777),
            ..Attrs::default()
        };
        let made = self.send(|id| Request::new(kind::MKDIR, id).str(path).attrs(&perm));
        let set = self.send(|id| Request::new(kind::SETSTAT, id).str(path).attrs(&perm));
        let what = || format!("mkdir {}", show(path));
        self.expect_ok(made, what)?;
        self.expect_ok(set, || format!("chmod {}", show(path)))
    }

    /// Sets the permission bits of `path` to `mode`.
    pub(crate) fn chmod(&mut self, path: &[u8], mode: u32) -> Result<()> {
        let perm = Attrs {
            mode: Some(mode & 0o7777),
            ..Attrs::default()
        };
        let id = self.send(|id| Request::new(kind::SETSTAT, id).str(path).attrs(&perm));
        self.expect_ok(id, || format!("chmod {}", show(path)))
    }

    /// Removes the file or symlink `path` (not a directory).
    pub(crate) fn remove_file(&mut self, path: &[u8]) -> Result<()> {
        let id = self.send(|id| Request::new(kind::REMOVE, id).str(path));
        self.expect_ok(id, || format!("remove {}", show(path)))
    }

    /// Queues the atomic replace of `to` by `from`: `posix-rename@openssh.com`, or
    /// the plain rename where the server lacks it (which refuses an existing `to`,
    /// so nothing is ever replaced non-atomically).
    fn queue_rename(&mut self, from: &[u8], to: &[u8]) -> u32 {
        if self.has("posix-rename@openssh.com") {
            self.send(|id| {
                Request::new(kind::EXTENDED, id)
                    .str(b"posix-rename@openssh.com")
                    .str(from)
                    .str(to)
            })
        } else {
            self.send(|id| Request::new(kind::RENAME, id).str(from).str(to))
        }
    }

    /// Renames `from` over `to` atomically (see `queue_rename`).
    pub(crate) fn rename(&mut self, from: &[u8], to: &[u8]) -> Result<()> {
        let id = self.queue_rename(from, to);
        self.expect_ok(id, || format!("rename {} to {}", show(from), show(to)))
    }
}

/// The error for a refused step.
fn refused(what: String, code: u32, message: String) -> anyhow::Error {
    anyhow::Error::new(Refused {
        what,
        code,
        message,
    })
}

/// A remote path for messages: escaped, one line.
fn show(p: &[u8]) -> String {
    crate::escape::escape(p)
}

/// Where the bytes of one upload come from.
pub(crate) trait Source {
    /// Fills `buf` with the next bytes; 0 at the end (or when reading stopped).
    fn chunk(&mut self, buf: &mut [u8]) -> usize;
    /// Whether everything given is the whole, unchanged content (asked once, after
    /// the last chunk): only then is the upload swapped in.
    fn whole(&mut self) -> bool;
}

/// A byte slice is whole by definition.
impl Source for &[u8] {
    fn chunk(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.len());
        buf[..n].copy_from_slice(&self[..n]);
        *self = &self[n..];
        n
    }

    fn whole(&mut self) -> bool {
        true
    }
}

/// What one upload is to become.
#[derive(Debug, Clone)]
pub(crate) struct Put<'a> {
    /// The final path.
    pub(crate) dest: &'a [u8],
    /// The temporary (same folder, this run's name for it).
    pub(crate) tmp: &'a [u8],
    /// Permission bits to set.
    pub(crate) mode: u32,
    /// Modification time (seconds) to set; the access time gets the same.
    pub(crate) mtime: u32,
    /// How many numbered backups of a regular file at `dest` to keep (0: none).
    pub(crate) backups: u32,
}

impl Sftp {
    /// Uploads what `data` gives as `p.dest` (see the module docs): temporary,
    /// pipelined writes, fsetstat, close; then, when `data` says what it gave is
    /// whole ([`Source::whole`]) and the server confirmed all of that, backups and
    /// the atomic rename. Returns the bytes written, or `None` when `data` was not
    /// whole (nothing replaced). On an error, or when not whole, the temporary is
    /// removed where the session still allows it.
    pub(crate) fn put(&mut self, p: &Put<'_>, data: &mut dyn Source) -> Result<Option<u64>> {
        let creating = Attrs {
            mode: Some(0o600),
            ..Attrs::default()
        };
        let flags = open::WRITE | open::CREAT | open::EXCL;
        let id = self.send(|id| {
            Request::new(kind::OPEN, id)
                .str(p.tmp)
                .u32(flags)
                .attrs(&creating)
        });
        let handle = self.expect_handle(id, || format!("create {}", show(p.tmp)))?;
        let done = self.write_all_data(&handle, p, data).and_then(|n| {
            if !data.whole() {
                return Ok(None);
            }
            self.keep_backups(p.dest, p.backups)?;
            self.rename(p.tmp, p.dest).map(|()| Some(n))
        });
        if !matches!(done, Ok(Some(_))) {
            // Best effort: the session may be gone (then a later run removes it).
            let id = self.send(|id| Request::new(kind::REMOVE, id).str(p.tmp));
            let _ = self.reply(id);
        }
        done
    }

    /// Streams `data` into `handle` with [`WINDOW`] writes in flight, then
    /// fsetstat (mode, times) and close; every reply must be OK.
    fn write_all_data(&mut self, handle: &[u8], p: &Put<'_>, data: &mut dyn Source) -> Result<u64> {
        let mut inflight = std::collections::VecDeque::new();
        let mut offset = 0u64;
        let mut buf = vec![0u8; CHUNK];
        let what = || format!("write {}", show(p.tmp));
        loop {
            let n = data.chunk(&mut buf);
            if n == 0 {
                break;
            }
            let chunk = &buf[..n];
            let at = offset;
            inflight.push_back(
                self.send(|id| Request::new(kind::WRITE, id).str(handle).u64(at).str(chunk)),
            );
            offset += n as u64;
            if inflight.len() >= WINDOW {
                let id = inflight.pop_front().expect("non-empty");
                self.expect_ok(id, what)?;
            }
        }
        let attrs = Attrs {
            mode: Some(p.mode & 0o7777),
            atime_mtime: Some((p.mtime, p.mtime)),
            ..Attrs::default()
        };
        let set = self.send(|id| Request::new(kind::FSETSTAT, id).str(handle).attrs(&attrs));
        let close = self.send(|id| Request::new(kind::CLOSE, id).str(handle));
        for id in inflight {
            self.expect_ok(id, what)?;
        }
        self.expect_ok(set, || format!("set mode and mtime of {}", show(p.tmp)))?;
        self.expect_ok(close, || format!("close {}", show(p.tmp)))?;
        Ok(offset)
    }

    /// Makes a symlink `dest` pointing at `target`: created at `tmp`, then
    /// renamed over `dest` atomically (a regular file there is kept as a backup
    /// first, as [`Sftp::put`] does).
    pub(crate) fn symlink(
        &mut self,
        target: &[u8],
        dest: &[u8],
        tmp: &[u8],
        backups: u32,
    ) -> Result<()> {
        // OpenSSH's sftp-server takes the target first, then the link's path
        // (the reverse of draft-02); every common server follows OpenSSH.
        let id = self.send(|id| Request::new(kind::SYMLINK, id).str(target).str(tmp));
        self.expect_ok(id, || format!("symlink {}", show(tmp)))?;
        let done = self
            .keep_backups(dest, backups)
            .and_then(|()| self.rename(tmp, dest));
        if done.is_err() {
            let _ = self.remove_file(tmp);
        }
        done
    }

    /// With `n` > 0 and a regular file at `dest`: `dest.(n-1)` → `dest.n` …
    /// `dest.1` → `dest.2` (oldest dropped), then `dest.1` becomes a hard link to
    /// `dest`, which stays in place. Any step that fails fails the replace.
    fn keep_backups(&mut self, dest: &[u8], n: u32) -> Result<()> {
        if n == 0 || self.lstat(dest)?.is_none_or(|a| a.kind() != b'f') {
            return Ok(());
        }
        if !self.has("hardlink@openssh.com") {
            return Err(refused(
                format!("{}: not replaced", show(dest)),
                status::FAILURE,
                "keeping a backup needs the SFTP extension hardlink@openssh.com, which this server lacks; set \"backups\": 0 for this mapping".into(),
            ));
        }
        let numbered = |k: u32| [dest, format!(".{k}").as_bytes()].concat();
        let stats: Vec<u32> = (1..=n)
            .map(|k| {
                let p = numbered(k);
                self.send(|id| Request::new(kind::LSTAT, id).str(&p))
            })
            .collect();
        let mut exists = Vec::new();
        for id in stats {
            exists.push(matches!(self.reply(id)?, Reply::Attrs(_)));
        }
        for k in (1..n).rev().filter(|&k| exists[k as usize - 1]) {
            let what = || format!("not replaced: cannot rotate {}", show(&numbered(k)));
            let id = self.queue_rename(&numbered(k), &numbered(k + 1));
            self.expect_ok(id, what)?;
        }
        if n == 1 && exists[0] {
            let id = self.send(|id| Request::new(kind::REMOVE, id).str(&numbered(1)));
            self.expect_ok(id, || {
                format!(
                    "not replaced: cannot drop the oldest backup {}",
                    show(&numbered(1))
                )
            })?;
        }
        let id = self.send(|id| {
            Request::new(kind::EXTENDED, id)
                .str(b"hardlink@openssh.com")
                .str(dest)
                .str(&numbered(1))
        });
        self.expect_ok(id, || {
            format!(
                "not replaced: cannot keep the previous version as {}",
                show(&numbered(1))
            )
        })
    }
}
