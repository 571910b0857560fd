//! The client side of the remote agent: one perl process per batch that does every
//! remote step relative to checked directories (issue 13).
//!
//! The agent ([`PROGRAM`], `agent.pl`, whose header gives the grammar) is started
//! with one exec, `perl -e BOOT CLIENT RUN STRICT` whose [`bootstrap`] reads the
//! program from stdin, and then speaks framed
//! records on the channel: a tag byte, a 4-byte big-endian length, NUL-separated
//! fields. Requests go out pipelined, file data included ([`Agent::put`]); answers
//! come back in request order, each request ended by exactly one [`tag::DONE`] or
//! [`tag::FAILED`] record, and hostsync reports a step as done only on its `DONE`.
//! If the agent dies or the connection breaks, every step still unanswered is
//! unconfirmed, and the caller reports it as failed.
//!
//! What the remote sends back is untrusted: one record is at most [`MAX_RECORD`]
//! bytes, the whole reply stays within a [`Budget`] that grows with each request
//! (a listing's allowance grows with the paths it asks for), and while hostsync
//! waits at least 1 KiB must arrive per `io_timeout` ([`super::bounded`]).
//!
//! A host without perl answers the exec with status 127 and no record; that is
//! [`NoAgent`], and the caller serves the host the old way (listing script, tar or
//! SCP, sh commit), which it allows only for destinations others cannot write.
//!
//! A `watch` session keeps its agent between rounds (issue 16): where the
//! connection asks for it ([`Connection::keeps_agent`]), [`Agent::finish`] ends
//! the batch with [`tag::NEXT`] instead of [`tag::QUIT`] (the run's locks are
//! released, its roots forgotten, and the next batch has a new run id) without
//! waiting for its answer, and parks the running agent on the connection
//! ([`Parked`]); the next batch takes it back with [`Agent::resume`] and checks
//! that answer with its own first one, so a small change costs its round trips
//! and no process start. A round whose files all went with the listing
//! ([`Agent::ahead`]) ends its batch in that same write ([`Agent::end_batch`])
//! and parks with nothing more to send. A parked agent that died is seen at the
//! first answer of the next batch, and the caller starts a fresh one.

use std::collections::VecDeque;
use std::io::{BufWriter, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Result, anyhow, bail};

use super::bounded::Budget;
use super::pace::Paced;
use super::ssh::Connection;
use crate::local::read::{Finished, Reading};
use crate::remote::{RemoteEntry, quote};

mod delta;

/// The agent's program, sent with every start (comment lines dropped, see [`program`]).
pub(crate) const PROGRAM: &str = include_str!("../remote/agent.pl");

/// The agent's record tags, named in [`crate::remote::tags::agent`].
pub(crate) use crate::remote::tags::agent as tag;

/// The largest record the agent may send (a path, a link target and a reason).
pub(crate) const MAX_RECORD: usize = 64 * 1024;

/// The largest data frame hostsync sends.
const CHUNK: usize = 256 * 1024;

/// Bytes buffered before a write to the channel.
const BUFFER: usize = 256 * 1024;

/// Reply bytes allowed per request that is not a listing.
const PER_STEP: u64 = 8 * 1024;

/// Reply bytes every listing may use whatever it asked for, and per path asked for.
const LISTING_BASE: u64 = 64 << 20;
const LISTING_PER_PATH: u64 = 64 * 1024;

/// The remote has no perl (the exec exited 127 without a record): serve it another way.
#[derive(Debug)]
pub(crate) struct NoAgent;

impl std::fmt::Display for NoAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the remote has no perl for hostsync's agent")
    }
}

impl std::error::Error for NoAgent {}

/// What the agent said about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hello {
    /// The login user's uid.
    pub(crate) uid: u32,
    /// Whether mtimes are read and set to the nanosecond (Time::HiRes).
    pub(crate) hires: bool,
    /// Whether listings carry SHA-256 of files (Digest::SHA or sha256sum).
    pub(crate) hashes: bool,
    /// Whether the agent computes block checksums for deltas (Digest::SHA).
    pub(crate) delta: bool,
}

/// One listed entry, with what only the agent reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    /// Path below the root.
    pub(crate) rel: Vec<u8>,
    /// The entry.
    pub(crate) entry: RemoteEntry,
    /// Its owner.
    pub(crate) uid: u32,
}

/// What a listing found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Listing {
    /// Every entry, parents before children.
    pub(crate) entries: Vec<Listed>,
    /// SHA-256 of the files a path listing named.
    pub(crate) hashes: Vec<(Vec<u8>, String)>,
    /// Parts that could not be listed.
    pub(crate) notes: Vec<String>,
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Done, with the request's fields (e.g. `placed`, `dropped`, `missing`).
    Done(Vec<Vec<u8>>),
    /// A listing, complete.
    Listing(Listing),
    /// Failed: the agent's reason.
    Failed(String),
    /// A file's block checksums (raw, as agent.pl sends them) and the length of
    /// the file they cover (issue 19).
    Sums(Vec<u8>, u64),
}

/// A request waiting for its answer.
enum Waiting {
    /// A listing, collecting its entries.
    List(Listing),
    /// Block checksums, collecting them.
    Sums(Vec<u8>),
    /// Any other request.
    Step,
    /// The end of the last batch, sent before the agent was parked (see
    /// [`Agent::finish`]): its answer is checked, not handed out.
    Next,
}

/// An agent kept running on its connection between two batches: its channel, its
/// greeting, and what it already sent. It was asked to end its run ([`tag::NEXT`])
/// and releases its locks, temporaries and roots as soon as it reads that; the
/// answer is read with the next batch's first one.
pub(crate) struct Parked {
    /// The agent's channel.
    channel: ssh2::Channel,
    /// What the agent said when it started.
    hello: Hello,
    /// Output taken in while the end of the batch was written (its answer, maybe).
    early: Vec<u8>,
    /// Whether the answer to that end is still to be read (the batch was not
    /// already ended with [`Agent::end_batch`]).
    owes: bool,
}

/// A running agent on one connection.
pub(crate) struct Agent<'c> {
    /// Its connection, for [`Agent::finish`].
    conn: &'c Connection,
    /// The channel, paced, buffered.
    out: BufWriter<Paced<'c>>,
    /// Reply bytes received and not parsed yet (from `at` on).
    input: Vec<u8>,
    /// Where parsing resumes in `input`.
    at: usize,
    /// Requests sent and not answered, oldest first.
    waiting: VecDeque<Waiting>,
    /// Answers not taken yet, in request order.
    answers: VecDeque<Answer>,
    /// What the replies may still cost.
    budget: Budget,
    /// The agent's greeting, once it came.
    hello: Option<Hello>,
    /// Shutdown: stop between two chunks.
    cancel: std::sync::Arc<AtomicBool>,
    /// A data buffer for files ([`CHUNK`] bytes once a file is sent; a watch
    /// round that sends none does not zero it).
    buf: Vec<u8>,
    /// The last request was the end of a batch ([`Agent::end_batch`]): nothing
    /// of this run is left on the remote, and parking needs no other end.
    ended: bool,
}

/// The program without its comment lines and indentation: about half the bytes on
/// every exec. Only whole-line comments go; no line of the program starts a string.
pub(crate) fn program() -> String {
    PROGRAM
        .lines()
        .map(str::trim_start)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The exec's own program: reads the agent's `len` bytes from stdin (sysread, so
/// nothing after them is taken) and runs them. The agent goes on stdin, not in
/// the command: Dropbear ends the session on an exec command longer than about
/// 9000 bytes (issue 16), and the agent is 24 KB.
pub(crate) fn bootstrap(len: usize) -> String {
    format!(
        "my($n,$p)=({len},\"\");while(length($p)<$n){{sysread(STDIN,$p,$n-length($p),length($p)) or exit 9}}eval $p;die $@ if $@"
    )
}

impl<'c> Agent<'c> {
    /// Starts the agent on `conn` for client `client` and run `run` (both lowercase
    /// hex; see agent.pl), following symlinked ancestors only as the ancestor rule
    /// allows unless `strict` is false. Nothing is read yet: requests may follow at
    /// once, and the first answer shows whether the remote has perl ([`NoAgent`]).
    pub(crate) fn start(
        conn: &'c Connection,
        client: &str,
        run: &str,
        strict: bool,
    ) -> Result<Agent<'c>> {
        let program = program();
        let command = format!(
            "perl -e {} {client} {run} {}",
            String::from_utf8(quote(bootstrap(program.len()).as_bytes())).expect("ASCII"),
            u8::from(strict)
        );
        let channel = conn.exec(&command)?;
        let mut agent = Agent::on(conn, channel, None);
        agent.out.write_all(program.as_bytes())?;
        Ok(agent)
    }

    /// The agent `conn` kept from its last batch ([`Parked`]), if it has one, for
    /// a new batch (the run id it was given then). It may have died since: the
    /// first answer shows it.
    pub(crate) fn resume(conn: &'c Connection) -> Option<Agent<'c>> {
        let Parked {
            channel,
            hello,
            early,
            owes,
        } = conn.take_agent()?;
        let mut agent = Agent::on(conn, channel, Some(hello));
        agent.input = early;
        if owes {
            agent.budget.grow(PER_STEP);
            agent.waiting.push_back(Waiting::Next);
        }
        Some(agent)
    }

    /// An agent on `channel`, which greeted with `hello` if it did already.
    fn on(conn: &'c Connection, channel: ssh2::Channel, hello: Option<Hello>) -> Agent<'c> {
        Agent {
            conn,
            out: BufWriter::with_capacity(BUFFER, Paced::new(conn, channel)),
            input: Vec::new(),
            at: 0,
            waiting: VecDeque::new(),
            answers: VecDeque::new(),
            budget: Budget::new("the remote agent", PER_STEP, conn.io_timeout()),
            hello,
            cancel: conn.cancel_flag(),
            buf: Vec::new(),
            ended: false,
        }
    }

    /// The agent's greeting, once an answer has been read.
    pub(crate) fn hello(&self) -> Option<&Hello> {
        self.hello.as_ref()
    }

    /// Resolves destination root `id` at absolute `path` (made if `create`).
    /// Answer: `Done(["dir", dev, ino, open])` (`open` says who else can write
    /// there, or is empty), `Done(["missing"])`, or `Failed`.
    pub(crate) fn root(&mut self, id: usize, path: &[u8], create: bool) -> Result<()> {
        let id = id.to_string();
        self.request(
            tag::ROOT,
            &[id.as_bytes(), path, if create { b"1" } else { b"0" }],
        )
    }

    /// Lists root `id`, `depth` levels deep (`None`: all), or only `paths` (each
    /// with its parents, alone, and what is below it, hashing the files named);
    /// with `checksum` (`sync --checksum`) every file listed is hashed.
    pub(crate) fn list(
        &mut self,
        id: usize,
        depth: Option<u32>,
        paths: Option<&[Vec<u8>]>,
        checksum: bool,
    ) -> Result<()> {
        let id = id.to_string();
        let depth = depth.map(|d| d.to_string()).unwrap_or_default();
        let hash: &[u8] = if checksum { b"1" } else { b"0" };
        let mut fields: Vec<&[u8]> = vec![id.as_bytes(), depth.as_bytes(), hash];
        if let Some(paths) = paths {
            fields.extend(paths.iter().map(Vec::as_slice));
        }
        let asked = paths.map_or(0, <[_]>::len) as u64;
        self.ended = false;
        self.budget
            .grow(LISTING_BASE + asked.saturating_mul(LISTING_PER_PATH));
        self.send(tag::LIST, &fields)?;
        self.waiting.push_back(Waiting::List(Listing::default()));
        Ok(())
    }

    /// Makes directory `rel` below root `id` with `mode`, or sets the mode of the
    /// directory that is there.
    pub(crate) fn mkdir(&mut self, id: usize, rel: &[u8], mode: u32) -> Result<()> {
        let (id, mode) = (id.to_string(), format!("{mode:o}"));
        self.request(tag::DIR, &[id.as_bytes(), rel, mode.as_bytes()])
    }

    /// Makes symlink `rel` → `target` below root `id`, keeping `backups` of a file
    /// there, in `lane` (see [`Agent::lanes`]).
    pub(crate) fn link(
        &mut self,
        id: usize,
        rel: &[u8],
        target: &[u8],
        backups: u32,
        lane: u8,
    ) -> Result<()> {
        let (id, n, lane) = (id.to_string(), backups.to_string(), lane.to_string());
        self.request(
            tag::LINK,
            &[id.as_bytes(), rel, target, n.as_bytes(), lane.as_bytes()],
        )
    }

    /// Starts two lanes: until [`Agent::join`], the files and links sent with lane 1
    /// are made by a helper process of the agent, the others by the agent, so
    /// creating files (CPU work in the remote kernel) uses two cores. Answers stay
    /// in request order.
    pub(crate) fn lanes(&mut self) -> Result<()> {
        self.request(tag::LANES, &[])
    }

    /// Ends the lanes: the agent waits for its helper.
    pub(crate) fn join(&mut self) -> Result<()> {
        self.request(tag::JOIN, &[])
    }

    /// Removes `rel` (a file or a whole tree) below root `id`.
    pub(crate) fn remove(&mut self, id: usize, rel: &[u8]) -> Result<()> {
        let id = id.to_string();
        self.request(tag::REMOVE, &[id.as_bytes(), rel])
    }

    /// Removes temporary `rel` below root `id` if the run that made it is dead.
    pub(crate) fn stale(&mut self, id: usize, rel: &[u8]) -> Result<()> {
        let id = id.to_string();
        self.request(tag::STALE, &[id.as_bytes(), rel])
    }

    /// Sends local `file` (read from its start, `before` as it was opened) as `rel`
    /// below root `id`, with `mode` and `before`'s mtime, keeping `backups` of the
    /// file it replaces, in `lane` (see [`Agent::lanes`]). The agent keeps it only
    /// when it arrived whole and did not change while read; its answer (see
    /// [`Agent::answer`]) confirms the step.
    pub(crate) fn put(
        &mut self,
        id: usize,
        rel: &[u8],
        mut file: Reading,
        backups: u32,
        lane: u8,
    ) -> Result<Finished> {
        let before = *file.meta();
        let mode = before.mode;
        let id = id.to_string();
        let fields = [
            id,
            format!("{mode:o}"),
            before.mtime.to_string(),
            before.mtime_nsec.to_string(),
            before.size.to_string(),
            backups.to_string(),
            lane.to_string(),
        ];
        self.request(
            tag::PUT,
            &[
                fields[0].as_bytes(),
                rel,
                fields[1].as_bytes(),
                fields[2].as_bytes(),
                fields[3].as_bytes(),
                fields[4].as_bytes(),
                fields[5].as_bytes(),
                fields[6].as_bytes(),
            ],
        )?;
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                bail!("transfer cancelled by shutdown");
            }
            let mut buf = std::mem::take(&mut self.buf);
            buf.resize(CHUNK, 0);
            let n = file.chunk(&mut buf);
            let written = if n > 0 { self.data(&buf[..n]) } else { Ok(()) };
            self.buf = buf;
            written?;
            if n == 0 {
                break;
            }
        }
        let sent = file.finish();
        let keep: &[u8] = if matches!(sent, Finished::Whole(..)) {
            b"1"
        } else {
            b"0"
        };
        self.send(tag::VERDICT, &[keep])?;
        self.poll()?;
        Ok(sent)
    }

    /// Sends `data`, the whole content of a small local file read already
    /// (`meta` as it was opened, `sha256` of `data`), as `rel` below root `id`,
    /// ahead of the comparison ([`tag::AHEAD`]): the agent puts it in place only
    /// where nothing is there, or a regular file of other content or mode, which
    /// the comparison always sends; it keeps no backups. Answer: `Done(["placed"])`
    /// or `Done(["deferred", why])`.
    pub(crate) fn ahead(
        &mut self,
        id: usize,
        rel: &[u8],
        meta: &crate::local::FileMeta,
        sha256: &str,
        data: &[u8],
    ) -> Result<()> {
        let fields = [
            id.to_string(),
            format!("{:o}", meta.mode),
            meta.mtime.to_string(),
            meta.mtime_nsec.to_string(),
            data.len().to_string(),
        ];
        let [id, mode, secs, nsec, size] = fields.each_ref().map(|f| f.as_bytes());
        self.request(
            tag::AHEAD,
            &[id, rel, mode, secs, nsec, size, sha256.as_bytes()],
        )?;
        for part in data.chunks(CHUNK) {
            self.data(part)?;
        }
        self.send(tag::VERDICT, &[b"1"])
    }

    /// Ends this batch and begins the next ([`tag::NEXT`], a fresh run id) as a
    /// request of its own, answered `Done` in order: the run's locks go, its roots
    /// are forgotten (a request for one of them fails until it is resolved again
    /// with [`Agent::root`]). Sent in the same write as a watch round's files sent
    /// ahead, so a round that needs nothing more is over in one round trip, and
    /// parking then sends no other end.
    pub(crate) fn end_batch(&mut self) -> Result<()> {
        let run = crate::remote::fresh_hex();
        self.request(tag::NEXT, &[run.as_bytes()])?;
        self.ended = true;
        Ok(())
    }

    /// Takes in what the agent has answered so far, without waiting.
    pub(crate) fn poll(&mut self) -> Result<()> {
        let paced = self.out.get_mut();
        paced.pull()?;
        let early = paced.take_early();
        if !early.is_empty() {
            self.take(&early, false)?;
        }
        Ok(())
    }

    /// The next answer, in request order, waiting for it if need be.
    pub(crate) fn answer(&mut self) -> Result<Answer> {
        self.budget.wait_starts();
        loop {
            if let Some(a) = self.answers.pop_front() {
                return Ok(a);
            }
            if self.waiting.is_empty() {
                bail!("internal error: waiting for an answer to no request");
            }
            self.read_some()?;
        }
    }

    /// The next answer if it has arrived already.
    pub(crate) fn try_answer(&mut self) -> Option<Answer> {
        self.answers.pop_front()
    }

    /// Ends the batch. The agent releases its locks and exits 0, which is
    /// checked; or, where the connection keeps its agent, it begins a new run and
    /// is parked on the connection for the next batch ([`Agent::park`]).
    pub(crate) fn finish(mut self) -> Result<()> {
        if self.conn.keeps_agent() {
            return self.park();
        }
        self.request(tag::QUIT, &[])?;
        while !self.waiting.is_empty() || !self.answers.is_empty() {
            self.answer()?;
        }
        self.out.flush()?;
        let channel = self.out.get_mut().channel_mut();
        channel.send_eof()?;
        let mut rest = Vec::new();
        let _ = channel.take(PER_STEP).read_to_end(&mut rest);
        channel.wait_close()?;
        match channel.exit_status()? {
            0 => Ok(()),
            status => bail!("the remote agent exited with status {status}"),
        }
    }

    /// Takes in every answer still owed, then ends the batch with [`tag::NEXT`] (a
    /// fresh run id) and parks the agent on its connection without waiting for
    /// that answer: the agent releases the run's locks and forgets its roots as
    /// soon as it reads the request, and the next batch checks the answer along
    /// with its own first one ([`Waiting::Next`]), so a round waits for one round
    /// trip fewer. A batch that was ended already ([`Agent::end_batch`], nothing
    /// asked since) gets no other end. The agent may have said nothing more than
    /// it was asked.
    fn park(mut self) -> Result<()> {
        while !self.waiting.is_empty() || !self.answers.is_empty() {
            if self.answers.pop_front().is_none() {
                self.budget.wait_starts();
                self.read_some()?;
            }
        }
        let early = self.out.get_mut().take_early();
        let (Some(hello), true, true) = (
            self.hello.take(),
            self.at == self.input.len(),
            early.is_empty(),
        ) else {
            bail!("the remote agent sent more than it was asked for");
        };
        let owes = !self.ended;
        if owes {
            let run = crate::remote::fresh_hex();
            self.send(tag::NEXT, &[run.as_bytes()])?;
        }
        self.out.flush()?;
        let paced = (self.out.into_inner()).map_err(|e| anyhow!("{}", e.error()))?;
        let (channel, early, _) = paced.into_parts();
        self.conn.park_agent(Parked {
            channel,
            hello,
            early,
            owes,
        });
        log::debug!("the agent is kept for the next batch");
        Ok(())
    }

    /// Sends one request and expects one answer.
    fn request(&mut self, tag: u8, fields: &[&[u8]]) -> Result<()> {
        self.ended = false;
        self.budget.grow(PER_STEP);
        self.send(tag, fields)?;
        self.waiting.push_back(Waiting::Step);
        Ok(())
    }

    /// Writes one frame of file data: the tag, four bytes of length (big-endian),
    /// the bytes.
    fn data(&mut self, bytes: &[u8]) -> Result<()> {
        let len = u32::try_from(bytes.len())?.to_be_bytes();
        self.out.write_all(&[tag::DATA])?;
        self.out.write_all(&len)?;
        self.out.write_all(bytes)?;
        Ok(())
    }

    /// Writes one record.
    fn send(&mut self, tag: u8, fields: &[&[u8]]) -> Result<()> {
        self.out.write_all(&encode(tag, fields)?)?;
        Ok(())
    }

    /// Waits for more of the agent's output (everything buffered goes out first).
    fn read_some(&mut self) -> Result<()> {
        self.out.flush()?;
        let early = self.out.get_mut().take_early();
        if !early.is_empty() {
            return self.take(&early, true);
        }
        let mut buf = [0u8; 32 * 1024];
        let channel = self.out.get_mut().channel_mut();
        let n = channel
            .read(&mut buf)
            .map_err(|e| anyhow!("reading the remote agent's answers: {e}"))?;
        if n == 0 {
            return Err(self.ended());
        }
        self.take(&buf[..n], true)
    }

    /// Why the agent's output ended with requests unanswered.
    fn ended(&mut self) -> anyhow::Error {
        let channel = self.out.get_mut().channel_mut();
        let mut stderr = Vec::new();
        let _ = channel.stderr().take(4096).read_to_end(&mut stderr);
        let _ = channel.wait_close();
        let status = channel.exit_status().unwrap_or(-1);
        if self.hello.is_none() && status == 127 {
            return anyhow::Error::new(NoAgent);
        }
        let said = crate::escape::first_line(&stderr, 200);
        let said = if said.is_empty() {
            String::new()
        } else {
            format!(": {said}")
        };
        anyhow!("the remote agent stopped before it answered (exit status {status}{said})")
    }

    /// Accounts for and parses reply bytes; `waiting` applies the rate rule.
    fn take(&mut self, bytes: &[u8], waiting: bool) -> Result<()> {
        if waiting {
            self.budget.got(bytes.len())?;
        } else {
            self.budget.took(bytes.len())?;
        }
        self.input.extend_from_slice(bytes);
        while let Some((tag, payload)) = self.frame()? {
            self.record(tag, &payload)?;
        }
        if self.at > 0 {
            self.input.drain(..self.at);
            self.at = 0;
        }
        Ok(())
    }

    /// The next complete record in `input`, if there is one.
    fn frame(&mut self) -> Result<Option<(u8, Vec<u8>)>> {
        let avail = &self.input[self.at..];
        if avail.is_empty() {
            return Ok(None);
        }
        if self.hello.is_none() && avail[0] != tag::HELLO {
            bail!(
                "the remote printed \"{}\" where hostsync's agent should have started; does the remote login shell print text (e.g. from ~/.bashrc)? it must not, as for rsync",
                crate::escape::escape(&avail[..avail.len().min(60)])
            );
        }
        if avail.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([avail[1], avail[2], avail[3], avail[4]]) as usize;
        if len > MAX_RECORD {
            bail!("the remote agent sent a record of {len} bytes, more than {MAX_RECORD}");
        }
        if avail.len() < 5 + len {
            return Ok(None);
        }
        let frame = (avail[0], avail[5..5 + len].to_vec());
        self.at += 5 + len;
        Ok(Some(frame))
    }

    /// Files one record under the request it answers.
    fn record(&mut self, tag: u8, payload: &[u8]) -> Result<()> {
        let fields: Vec<&[u8]> = if payload.is_empty() {
            Vec::new()
        } else {
            payload.split(|&b| b == 0).collect()
        };
        match tag {
            tag::HELLO if self.hello.is_none() => {
                self.hello = Some(parse_hello(&fields)?);
            }
            tag::ENTRY | tag::HASH | tag::NOTE => {
                let Some(Waiting::List(listing)) = self.waiting.front_mut() else {
                    bail!("the remote agent sent a listing record that nothing asked for");
                };
                match tag {
                    tag::ENTRY => listing.entries.push(parse_entry(&fields)?),
                    tag::HASH => {
                        let [rel, hex] = fields[..] else {
                            bail!("the remote agent sent a bad hash record");
                        };
                        listing
                            .hashes
                            .push((rel.to_vec(), String::from_utf8_lossy(hex).into_owned()));
                    }
                    _ => listing
                        .notes
                        .push(String::from_utf8_lossy(payload).into_owned()),
                }
            }
            tag::SUMS_DATA => {
                let Some(Waiting::Sums(sums)) = self.waiting.front_mut() else {
                    bail!("the remote agent sent checksums that nothing asked for");
                };
                sums.extend_from_slice(payload);
            }
            tag::DONE | tag::FAILED => self.answered(tag, payload, &fields)?,
            other => bail!(
                "the remote agent sent an unknown record {:?}",
                char::from(other)
            ),
        }
        Ok(())
    }
}

impl Agent<'_> {
    /// The end of the oldest request: its [`Answer`], from what was collected.
    fn answered(&mut self, tag: u8, payload: &[u8], fields: &[&[u8]]) -> Result<()> {
        let Some(w) = self.waiting.pop_front() else {
            bail!("the remote agent answered a request that was not made");
        };
        self.answers.push_back(match (tag, w) {
            (tag::FAILED, Waiting::Next) => bail!(
                "the remote agent did not end its last batch: {}",
                String::from_utf8_lossy(payload)
            ),
            (tag::FAILED, _) => Answer::Failed(String::from_utf8_lossy(payload).into_owned()),
            (_, Waiting::List(listing)) => Answer::Listing(listing),
            (_, Waiting::Sums(sums)) => {
                let len = (fields.first())
                    .and_then(|f| std::str::from_utf8(f).ok()?.parse().ok())
                    .ok_or_else(|| anyhow!("the remote agent sent a bad length"))?;
                Answer::Sums(sums, len)
            }
            (_, Waiting::Step) => Answer::Done(fields.iter().map(|f| f.to_vec()).collect()),
            (_, Waiting::Next) => return Ok(()),
        });
        Ok(())
    }
}

/// One record: the tag, the length (4 bytes, big-endian), the NUL-separated fields.
pub(crate) fn encode(tag: u8, fields: &[&[u8]]) -> Result<Vec<u8>> {
    let len: usize = fields
        .iter()
        .map(|f| f.len() + 1)
        .sum::<usize>()
        .saturating_sub(1);
    let len32 = u32::try_from(len).map_err(|_| anyhow!("a request too large to send"))?;
    let mut out = Vec::with_capacity(5 + len);
    out.push(tag);
    out.extend_from_slice(&len32.to_be_bytes());
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(0);
        }
        out.extend_from_slice(f);
    }
    Ok(out)
}

/// `version uid hires hash`.
fn parse_hello(fields: &[&[u8]]) -> Result<Hello> {
    let text = |i: usize| {
        fields
            .get(i)
            .map(|f| String::from_utf8_lossy(f).into_owned())
    };
    let uid = text(1)
        .and_then(|u| u.parse().ok())
        .ok_or_else(|| anyhow!("the remote agent sent a bad greeting"))?;
    Ok(Hello {
        uid,
        hires: text(2).as_deref() == Some("1"),
        hashes: text(3).is_some_and(|h| h != "none"),
        delta: text(3).as_deref() == Some("digest"),
    })
}

/// `type size mtime-s mtime-ns mode uid rel target`.
fn parse_entry(fields: &[&[u8]]) -> Result<Listed> {
    let [kind, size, mtime, nsec, mode, uid, rel, target] = fields[..] else {
        bail!(
            "the remote agent sent a bad entry ({} fields)",
            fields.len()
        );
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let bad = |what: &str| anyhow!("the remote agent sent a bad {what} in an entry");
    Ok(Listed {
        rel: rel.to_vec(),
        entry: RemoteEntry {
            kind: *kind.first().ok_or_else(|| bad("type"))?,
            size: text(size).parse().map_err(|_| bad("size"))?,
            mtime: text(mtime)
                .split('.')
                .next()
                .unwrap_or("")
                .parse()
                .map_err(|_| bad("mtime"))?,
            mtime_nsec: text(nsec).parse().map_err(|_| bad("mtime"))?,
            mode: u32::from_str_radix(&text(mode), 8).map_err(|_| bad("mode"))?,
            target: target.to_vec(),
        },
        uid: text(uid).parse().map_err(|_| bad("owner"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;

    const CID: &str = "0123abcd";
    const RUN: &str = "00112233445566ff";

    /// One reply record: tag and fields.
    pub(super) type Rec = (u8, Vec<Vec<u8>>);

    pub(super) fn req(tag: u8, fields: &[&[u8]]) -> Vec<u8> {
        encode(tag, fields).unwrap()
    }

    /// A whole file put: the request, its data in two frames, the verdict.
    fn put(
        rel: &str,
        mode: &str,
        mtime: (i64, i64),
        body: &[u8],
        backups: u32,
        keep: bool,
    ) -> Vec<u8> {
        let (s, ns) = (mtime.0.to_string(), mtime.1.to_string());
        let size = body.len().to_string();
        let n = backups.to_string();
        let mut out = req(
            tag::PUT,
            &[
                b"0",
                rel.as_bytes(),
                mode.as_bytes(),
                s.as_bytes(),
                ns.as_bytes(),
                size.as_bytes(),
                n.as_bytes(),
            ],
        );
        let half = body.len() / 2;
        for part in [&body[..half], &body[half..]] {
            out.push(tag::DATA);
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part);
        }
        out.extend(req(tag::VERDICT, &[if keep { b"1" } else { b"0" }]));
        out
    }

    /// Runs the agent locally, as a remote runs it, on `input`; returns its records
    /// grouped per request (the greeting first, alone), its exit status and stderr.
    pub(super) fn run(input: &[u8], strict: bool) -> (Vec<Vec<Rec>>, i32, String) {
        run_perl(&[], input, strict)
    }

    /// [`run`] with `perl_args` (such as `-I DIR`) before the program.
    pub(super) fn run_perl(
        perl_args: &[&str],
        input: &[u8],
        strict: bool,
    ) -> (Vec<Vec<Rec>>, i32, String) {
        use std::process::{Command, Stdio};
        let program = program();
        let mut child = Command::new("perl")
            .args(perl_args)
            .args(["-e", &bootstrap(program.len()), CID, RUN])
            .arg(if strict { "1" } else { "0" })
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = [program.as_bytes(), input].concat();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        let mut groups = vec![Vec::new()];
        let mut at = 0;
        while at + 5 <= out.stdout.len() {
            let tag = out.stdout[at];
            let len = u32::from_be_bytes(out.stdout[at + 1..at + 5].try_into().unwrap()) as usize;
            let payload = &out.stdout[at + 5..at + 5 + len];
            at += 5 + len;
            let fields = payload.split(|&b| b == 0).map(<[u8]>::to_vec).collect();
            groups.last_mut().unwrap().push((tag, fields));
            if matches!(tag, tag::HELLO | tag::DONE | tag::FAILED) {
                groups.push(Vec::new());
            }
        }
        assert_eq!(at, out.stdout.len(), "trailing bytes");
        groups.pop_if(|g| g.is_empty());
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (groups, out.status.code().unwrap_or(-1), stderr)
    }

    /// The terminal record of each request after the greeting, as `K field...` or `F reason`.
    pub(super) fn verdicts(groups: &[Vec<Rec>]) -> Vec<String> {
        groups[1..]
            .iter()
            .map(|g| {
                let (tag, fields) = g.last().unwrap();
                let f: Vec<String> = fields
                    .iter()
                    .map(|x| String::from_utf8_lossy(x).into_owned())
                    .collect();
                format!("{} {}", char::from(*tag), f.join(" "))
                    .trim_end()
                    .to_string()
            })
            .collect()
    }

    pub(super) fn b(p: &Path) -> &[u8] {
        p.as_os_str().as_bytes()
    }

    /// Names of hostsync temporaries (and run locks) anywhere below `dir`.
    pub(super) fn temporaries(dir: &Path) -> Vec<String> {
        walkdir::WalkDir::new(dir)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().as_bytes().starts_with(b".hostsync-tmp."))
            .map(|e| e.path().display().to_string())
            .collect()
    }

    #[test]
    fn program_without_comments_is_valid_perl() {
        let out = std::process::Command::new("perl")
            .args(["-c", "-e", &program()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            program().len() < PROGRAM.len() * 3 / 4,
            "comments are dropped"
        );
    }

    /// The usual batch: a root made, a directory, a file with its mode and mtime, a
    /// symlink, a listing that sees them, the end; nothing left behind.
    #[test]
    fn agent_makes_lists_and_ends_cleanly() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("dest tree's");
        let mut input = req(tag::ROOT, &[b"0", b(&root), b"1"]);
        input.extend(req(tag::DIR, &[b"0", b"sub", b"750"]));
        input.extend(put(
            "sub/a\nb.txt",
            "640",
            (1_600_000_000, 123_456_789),
            b"hello",
            0,
            true,
        ));
        input.extend(req(tag::LINK, &[b"0", b"ln", b"../t", b"0"]));
        input.extend(req(tag::LIST, &[b"0", b"", b"0"]));
        input.extend(req(tag::LIST, &[b"0", b"", b"0", b"sub/a\nb.txt", b"gone"]));
        input.extend(req(tag::LIST, &[b"0", b"", b"1"]));
        input.extend(req(tag::LIST, &[b"0", b"", b"0", b"sub"]));
        input.extend(req(tag::LIST, &[b"0", b"", b"1", b"sub"]));
        input.extend(req(tag::QUIT, &[]));
        let (groups, status, stderr) = run(&input, true);
        assert_eq!(status, 0, "{stderr}");
        assert_eq!(groups[0][0].0, tag::HELLO);
        let v = verdicts(&groups);
        assert!(v[0].starts_with("K dir "), "{v:?}");
        assert_eq!(v[1..4], ["K", "K placed", "K placed"], "{v:?}");
        let f = root.join("sub/a\nb.txt");
        assert_eq!(std::fs::read(&f).unwrap(), b"hello");
        let m = std::fs::metadata(&f).unwrap();
        assert_eq!((m.mode() & 0o7777, m.mtime()), (0o640, 1_600_000_000));
        assert!(
            (m.mtime_nsec() - 123_456_789).abs() < 1_000,
            "{}",
            m.mtime_nsec()
        );
        assert_eq!(
            std::fs::metadata(root.join("sub")).unwrap().mode() & 0o777,
            0o750
        );
        assert_eq!(
            std::fs::read_link(root.join("ln")).unwrap(),
            Path::new("../t")
        );
        // The whole listing: every entry, parents first.
        let rels: Vec<(u8, Vec<u8>)> = groups[5]
            .iter()
            .filter(|(t, _)| *t == tag::ENTRY)
            .map(|(_, f)| (f[0][0], f[6].clone()))
            .collect();
        assert_eq!(
            rels,
            [
                (b'l', b"ln".to_vec()),
                (b'd', b"sub".to_vec()),
                (b'f', b"sub/a\nb.txt".to_vec())
            ]
        );
        // The path listing: the parent alone, the file, its hash; nothing for "gone".
        let recs = &groups[6];
        assert_eq!(
            recs.iter().filter(|(t, _)| *t == tag::ENTRY).count(),
            2,
            "{recs:?}"
        );
        let hash = recs.iter().find(|(t, _)| *t == tag::HASH).expect("a hash");
        assert_eq!(
            String::from_utf8_lossy(&hash.1[1]),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        // A whole listing with hashes (`sync --checksum`): one per regular file.
        let hashes: Vec<&Vec<Vec<u8>>> = groups[7]
            .iter()
            .filter(|(t, _)| *t == tag::HASH)
            .map(|(_, f)| f)
            .collect();
        assert_eq!(hashes.len(), 1, "{:?}", groups[7]);
        assert_eq!(hashes[0][..], [b"sub/a\nb.txt".to_vec(), hash.1[1].clone()]);
        assert!(groups[5].iter().all(|(t, _)| *t != tag::HASH));
        // A named directory's files are hashed only for `--checksum`.
        let hashed = |g: &[Rec]| g.iter().filter(|(t, _)| *t == tag::HASH).count();
        assert_eq!((hashed(&groups[8]), hashed(&groups[9])), (0, 1));
        assert!(
            temporaries(d.path()).is_empty(),
            "{:?}",
            temporaries(d.path())
        );
        assert_eq!(v.last().unwrap(), "K");
    }

    /// Issue 13, finding 2: a subdirectory of dest that is a symlink (planted before
    /// or after the listing) is never written, listed or removed through.
    #[test]
    fn a_symlinked_subdirectory_is_never_followed() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("dest");
        let outside = d.path().join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("conf.txt"), "root's").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("z")).unwrap();
        std::fs::create_dir_all(root.join("t")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("t/inner")).unwrap();
        let mut input = req(tag::ROOT, &[b"0", b(&root), b"1"]);
        input.extend(put("z/conf.txt", "644", (1, 0), b"pushed", 2, true));
        input.extend(req(tag::DIR, &[b"0", b"z", b"755"]));
        input.extend(req(tag::DIR, &[b"0", b"z/new", b"755"]));
        input.extend(req(tag::REMOVE, &[b"0", b"z/conf.txt"]));
        input.extend(req(tag::LINK, &[b"0", b"z/l", b"x", b"0"]));
        input.extend(req(tag::LIST, &[b"0", b"", b"0", b"z/conf.txt"]));
        input.extend(req(tag::REMOVE, &[b"0", b"t"]));
        input.extend(req(tag::REMOVE, &[b"0", b"z"]));
        let (groups, status, stderr) = run(&input, true);
        assert_eq!(status, 0, "{stderr}");
        let v = verdicts(&groups);
        let parent = "a parent is a symlink or not a directory on the remote";
        assert_eq!(v[1], format!("F {parent}"), "{v:?}");
        assert_eq!(v[2], "F the remote path exists and is not a directory");
        assert_eq!(v[3], format!("F cannot create remote directory: {parent}"));
        assert_eq!(v[4], format!("F not removed: {parent}"));
        assert_eq!(v[5], format!("F {parent}"));
        // Listed: only `z` itself, as the symlink it is.
        let listed: Vec<&Rec> = groups[7].iter().filter(|(t, _)| *t == tag::ENTRY).collect();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].1[0][0], listed[0].1[6].as_slice()),
            (b'l', &b"z"[..])
        );
        assert_eq!(v[7..], ["K removed", "K removed"]);
        assert_eq!(std::fs::read(outside.join("conf.txt")).unwrap(), b"root's");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);
        assert!(!root.join("z").exists() && !root.join("t").exists());
        assert!(temporaries(d.path()).is_empty());
    }

    /// Issue 13, finding 4 and "untrusted ancestors": a symlink on the way to dest
    /// is followed only in a directory nobody but root and the login user can write
    /// (a sticky one when the link is theirs), unless strict_modes is off.
    #[test]
    fn ancestor_symlinks_follow_only_in_trusted_directories() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real");
        std::fs::create_dir_all(&real).unwrap();
        let dir = |name: &str, mode: u32| {
            let p = d.path().join(name);
            std::fs::create_dir_all(&p).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            std::os::unix::fs::symlink(&real, p.join("l")).unwrap();
            p.join("l/dest")
        };
        let open = dir("open", 0o777);
        let trusted = dir("trusted", 0o755);
        let sticky = dir("sticky", 0o1777);
        let root_only = |p: &Path, strict: bool| {
            let input = req(tag::ROOT, &[b"0", b(p), b"1"]);
            verdicts(&run(&input, strict).0)[0].clone()
        };
        let refused = root_only(&open, true);
        assert!(
            refused.starts_with("F ")
                && refused.contains("/open/l is a symlink and its directory")
                && refused.contains("writable by its group or others (mode 0777)")
                && refused.contains("strict_modes = no"),
            "{refused}"
        );
        assert!(!real.join("dest").exists(), "nothing made through it");
        assert!(root_only(&trusted, true).starts_with("K dir"));
        assert!(real.join("dest").is_dir());
        assert!(
            root_only(&sticky, true).starts_with("K dir"),
            "a sticky dir and our own link"
        );
        assert!(
            root_only(&open, false).starts_with("K dir"),
            "strict_modes = no"
        );
        if crate::transport::agent::tests::is_root() {
            // In a sticky directory, someone else's link is not followed.
            std::os::unix::fs::lchown(sticky.parent().unwrap(), Some(65534), None).unwrap();
            let refused = root_only(&sticky, true);
            assert!(
                refused.contains("is a symlink and its directory"),
                "{refused}"
            );
            // A directory owned by another user does not hold a followed link either.
            std::os::unix::fs::chown(
                trusted.parent().unwrap().parent().unwrap(),
                Some(65534),
                None,
            )
            .unwrap();
            let refused = root_only(&trusted, true);
            assert!(
                refused.contains("is owned by nobody (uid 65534)"),
                "{refused}"
            );
        }
    }

    pub(crate) fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    /// A stale temporary goes only when its run is dead: its lock file free or gone,
    /// in the root or any directory above it; another version's only after a day;
    /// a directory planted at a temporary name stays.
    #[test]
    fn stale_temporaries_go_only_when_their_run_is_dead() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("r");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        let t = |run: &str, n: &str| format!(".hostsync-tmp.0123abcd.{run}.{n}");
        let dead = "aaaaaaaaaaaaaaaa";
        let live = "bbbbbbbbbbbbbbbb";
        let nested = "cccccccccccccccc";
        for (p, body) in [
            (t(dead, "0"), "x"),
            (t(dead, "lock"), ""),
            (t(live, "0"), "x"),
            (format!("sub/{}", t(nested, "7")), "x"),
            (".hostsync-tmp.0123456789abcdef".to_string(), "fresh"),
            (".hostsync-tmp.fedcba9876543210".to_string(), "old"),
        ] {
            std::fs::write(root.join(&p), body).unwrap();
        }
        std::fs::create_dir(root.join(t("dddddddddddddddd", "0"))).unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86400);
        std::fs::File::options()
            .write(true)
            .open(root.join(".hostsync-tmp.fedcba9876543210"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let hold = |path: &Path| {
            use std::os::fd::AsRawFd;
            let f = std::fs::File::create(path).unwrap();
            // SAFETY: a valid open fd.
            assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
            f
        };
        let _live_lock = hold(&root.join(t(live, "lock")));
        let _nested_lock = hold(&root.join(format!("sub/{}", t(nested, "lock"))));
        let mut input = req(tag::ROOT, &[b"0", b(&root), b"0"]);
        let names = [
            t(dead, "0"),
            t(live, "0"),
            format!("sub/{}", t(nested, "7")),
            ".hostsync-tmp.0123456789abcdef".to_string(),
            ".hostsync-tmp.fedcba9876543210".to_string(),
            t("dddddddddddddddd", "0"),
            t(dead, "lock"),
            "not-a-temporary".to_string(),
        ];
        for n in &names {
            input.extend(req(tag::STALE, &[b"0", n.as_bytes()]));
        }
        let (groups, status, stderr) = run(&input, true);
        assert_eq!(status, 0, "{stderr}");
        let v = verdicts(&groups);
        assert_eq!(
            v[1..],
            [
                "K removed",
                "K kept",
                "K kept",
                "K kept",
                "K removed",
                "K kept",
                "K removed",
                "K kept"
            ],
            "{names:?}"
        );
        assert!(root.join(t(live, "0")).exists() && root.join(t("dddddddddddddddd", "0")).is_dir());
    }

    /// `B` ends one batch and begins the next in the same process (issue 16): the
    /// old run's lock goes and its temporaries count as dead, the roots must be
    /// resolved again, the new run id is in force, and a bad run id is refused.
    #[test]
    fn next_batch_releases_the_run_and_forgets_the_roots() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("r");
        std::fs::create_dir_all(&root).unwrap();
        let next = "00000000000000aa";
        let old_tmp = format!(".hostsync-tmp.{CID}.{RUN}.77");
        let new_tmp = format!(".hostsync-tmp.{CID}.{next}.77");
        let lock = format!(".hostsync-tmp.{CID}.{RUN}.lock");
        for n in [&old_tmp, &new_tmp] {
            std::fs::write(root.join(n), "x").unwrap();
        }
        let mut input = req(tag::ROOT, &[b"0", b(&root), b"0"]);
        input.extend(put("a", "644", (1_600_000_000, 0), b"one", 0, true));
        input.extend(req(tag::STALE, &[b"0", old_tmp.as_bytes()]));
        input.extend(req(tag::NEXT, &[next.as_bytes()]));
        // Root 0 is forgotten until it is resolved again.
        input.extend(put("b", "644", (1_600_000_000, 0), b"two", 0, true));
        input.extend(req(tag::ROOT, &[b"0", b(&root), b"0"]));
        input.extend(req(tag::STALE, &[b"0", lock.as_bytes()]));
        input.extend(req(tag::STALE, &[b"0", old_tmp.as_bytes()]));
        input.extend(req(tag::STALE, &[b"0", new_tmp.as_bytes()]));
        input.extend(put("b", "644", (1_600_000_000, 0), b"two", 0, true));
        input.extend(req(tag::NEXT, &[b"../x"]));
        input.extend(req(tag::QUIT, &[]));
        let (groups, status, stderr) = run(&input, true);
        assert_eq!(status, 0, "{stderr}");
        let v = verdicts(&groups);
        assert_eq!(v[1..4], ["K placed", "K kept", "K"], "{v:?}");
        assert!(v[4].starts_with("F unknown root"), "{v:?}");
        assert!(v[5].starts_with("K dir "), "{v:?}");
        assert_eq!(
            v[6..],
            [
                "K gone",
                "K removed",
                "K kept",
                "K placed",
                "F bad run id",
                "K"
            ],
            "{v:?}"
        );
        assert_eq!(std::fs::read(root.join("b")).unwrap(), b"two");
        std::fs::remove_file(root.join(&new_tmp)).unwrap();
        assert!(
            temporaries(d.path()).is_empty(),
            "{:?}",
            temporaries(d.path())
        );
    }

    /// `backups` keeps exactly N previous versions, newest in `.1`; a symlink dest
    /// gets none; a backup slot that is a directory leaves dest as it was.
    #[test]
    fn puts_keep_numbered_backups() {
        let d = tempfile::tempdir().unwrap();
        let read = |s: &str| std::fs::read_to_string(d.path().join(s)).ok();
        let push = |v: &str, n: u32| {
            let mut input = req(tag::ROOT, &[b"0", b(d.path()), b"0"]);
            input.extend(put("app.conf", "644", (1, 0), v.as_bytes(), n, true));
            verdicts(&run(&input, true).0)[1].clone()
        };
        assert_eq!(push("v0", 3), "K placed");
        assert_eq!(read("app.conf.1"), None, "nothing to keep yet");
        for v in 1..=5 {
            assert_eq!(push(&format!("v{v}"), 3), "K placed");
        }
        let got: Vec<_> = [
            "app.conf",
            "app.conf.1",
            "app.conf.2",
            "app.conf.3",
            "app.conf.4",
        ]
        .map(read)
        .to_vec();
        assert_eq!(
            got[..4],
            ["v5", "v4", "v3", "v2"].map(|v| Some(v.to_string()))
        );
        assert_eq!(got[4], None, "exactly N");
        std::fs::create_dir(d.path().join("x.1")).unwrap();
        std::fs::write(d.path().join("x"), "old").unwrap();
        let mut input = req(tag::ROOT, &[b"0", b(d.path()), b"0"]);
        input.extend(put("x", "644", (1, 0), b"new", 1, true));
        let v = verdicts(&run(&input, true).0);
        assert!(
            v[1].starts_with("F not replaced: cannot drop the oldest backup"),
            "{v:?}"
        );
        assert_eq!(read("x").as_deref(), Some("old"));
        assert!(temporaries(d.path()).is_empty());
    }

    /// A file dropped (changed while read), short, or cut off mid-way leaves no
    /// temporary and the old content.
    #[test]
    fn dropped_short_and_cut_files_leave_nothing() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), "old").unwrap();
        let mut input = req(tag::ROOT, &[b"0", b(d.path()), b"0"]);
        input.extend(put("f", "644", (1, 0), b"changed", 0, false));
        let mut short = put("f", "644", (1, 0), b"0123456789", 0, true);
        // Announce 10 bytes, deliver 5: cut the second data frame out.
        let cut_at = short.len() - 5 - 5 - 6;
        short.drain(cut_at..cut_at + 10);
        input.extend(short);
        input.extend(put("missing/f", "644", (1, 0), b"x", 0, true));
        let (groups, status, stderr) = run(&input, true);
        assert_eq!(status, 0, "{stderr}");
        let v = verdicts(&groups);
        assert_eq!(v[1], "K dropped");
        assert_eq!(v[2], "F the file arrived short (5 of 10 bytes)");
        assert_eq!(v[3], "F a parent directory is missing on the remote");
        assert_eq!(std::fs::read(d.path().join("f")).unwrap(), b"old");
        // The input ends inside a file (a cut connection): no temporary stays.
        let mut cut = req(tag::ROOT, &[b"0", b(d.path()), b"0"]);
        let whole = put("f", "644", (1, 0), &[7u8; 1000], 0, true);
        cut.extend_from_slice(&whole[..whole.len() - 600]);
        let (_, status, stderr) = run(&cut, true);
        assert_eq!(status, 2, "{stderr}");
        assert_eq!(std::fs::read(d.path().join("f")).unwrap(), b"old");
        assert!(
            temporaries(d.path()).is_empty(),
            "{:?}",
            temporaries(d.path())
        );
    }

    /// Lanes: between W and J the files of lane 1 are made by a helper process;
    /// every file arrives, each answer comes in request order (a failure of the
    /// helper's lane lands at its own request), and nothing is left behind.
    #[test]
    fn two_lanes_answer_in_request_order() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("r");
        let mut input = req(tag::ROOT, &[b"0", b(&root), b"1"]);
        input.extend(req(tag::DIR, &[b"0", b"a", b"755"]));
        input.extend(req(tag::LANES, &[]));
        let mut expect = vec!["K".to_string(), "K".to_string()];
        for i in 0..200 {
            let lane = if i % 2 == 0 { "0" } else { "1" };
            // File 101 goes to a directory that is not there: its lane's failure.
            let rel = if i == 101 {
                "missing/f".to_string()
            } else {
                format!("a/f{i}")
            };
            let mut p = put(
                &rel,
                "644",
                (1, 0),
                format!("body {i}\n").as_bytes(),
                0,
                true,
            );
            // Insert the lane field into the P record: its payload ends with backups.
            let len = u32::from_be_bytes(p[1..5].try_into().unwrap()) as usize;
            let mut rec = p[5..5 + len].to_vec();
            rec.extend_from_slice(format!("\0{lane}").as_bytes());
            let mut head = vec![tag::PUT];
            head.extend_from_slice(&(rec.len() as u32).to_be_bytes());
            head.extend_from_slice(&rec);
            p.splice(0..5 + len, head);
            input.extend(p);
            expect.push(if i == 101 {
                "F a parent directory is missing on the remote".to_string()
            } else {
                "K placed".to_string()
            });
        }
        input.extend(req(tag::LINK, &[b"0", b"a/ln", b"f0", b"0", b"1"]));
        expect.push("K placed".to_string());
        input.extend(req(tag::JOIN, &[]));
        expect.push("K".to_string());
        input.extend(req(tag::QUIT, &[]));
        expect.push("K".to_string());
        let (groups, status, stderr) = run(&input, true);
        assert_eq!(status, 0, "{stderr}");
        let v = verdicts(&groups);
        assert!(v[0].starts_with("K dir"), "{v:?}");
        assert_eq!(v[1..], expect[..], "answers in request order");
        for i in (0..200).filter(|&i| i != 101) {
            let got = std::fs::read_to_string(root.join(format!("a/f{i}"))).unwrap();
            assert_eq!(got, format!("body {i}\n"));
        }
        assert_eq!(
            std::fs::read_link(root.join("a/ln")).unwrap(),
            Path::new("f0")
        );
        assert!(
            temporaries(d.path()).is_empty(),
            "{:?}",
            temporaries(d.path())
        );
    }

    /// A file sent ahead of the comparison (A, issue 16) as the client sends it:
    /// the request, its data, the verdict.
    fn ahead(rel: &str, mode: &str, mtime: (i64, i64), body: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        let (s, ns) = (mtime.0.to_string(), mtime.1.to_string());
        let size = body.len().to_string();
        let sha = crate::local::hex(&sha2::Sha256::digest(body));
        let mut out = req(
            tag::AHEAD,
            &[
                b"0",
                rel.as_bytes(),
                mode.as_bytes(),
                s.as_bytes(),
                ns.as_bytes(),
                size.as_bytes(),
                sha.as_bytes(),
            ],
        );
        out.push(tag::DATA);
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(body);
        out.extend(req(tag::VERDICT, &[b"1"]));
        out
    }

    /// A file sent ahead goes in place only where the comparison is sure to send
    /// it: nothing there, or a regular file of other content (of the same size
    /// too) or mode (with its mtime, nanoseconds included). The same file already
    /// there (two daemons mapped at each other), a directory, a symlink, a missing
    /// parent or an unknown root defer it to the client; nothing is left behind
    /// either way.
    #[test]
    fn a_file_sent_ahead_is_placed_only_where_compare_sends_it() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("r");
        std::fs::create_dir_all(root.join("dir")).unwrap();
        std::fs::write(root.join("other"), "old").unwrap();
        std::fs::write(root.join("same"), "same").unwrap();
        std::fs::write(root.join("even"), "abcd").unwrap();
        std::fs::set_permissions(root.join("same"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        std::fs::write(root.join("mode"), "body").unwrap();
        std::fs::set_permissions(root.join("mode"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        std::os::unix::fs::symlink("other", root.join("link")).unwrap();
        let same_mtime = std::fs::metadata(root.join("same")).unwrap().mtime();
        let mut input = req(tag::ROOT, &[b"0", b(&root), b"0"]);
        let t = (1_600_000_000, 123_456_789);
        for (rel, body) in [
            ("new", &b"fresh"[..]),
            ("other", b"changed"),
            ("same", b"same"),
            ("mode", b"body"),
            ("dir", b"x"),
            ("link", b"x"),
            ("missing/f", b"x"),
            ("even", b"wxyz"),
        ] {
            input.extend(ahead(rel, "644", t, body));
        }
        // An unknown root: deferred, its data still read to the end.
        let mut unknown = ahead("u", "644", t, b"x");
        unknown[5] = b'7';
        input.extend(unknown);
        input.extend(req(tag::QUIT, &[]));
        let (groups, status, stderr) = run(&input, true);
        assert_eq!(status, 0, "{stderr}");
        let v = verdicts(&groups);
        assert_eq!(
            v[1..4],
            ["K placed", "K placed", "K deferred same"],
            "{v:?}"
        );
        assert_eq!(v[4], "K placed", "{v:?}");
        assert_eq!(v[5], "K deferred not a regular file there", "{v:?}");
        assert_eq!(v[6], "K deferred not a regular file there", "{v:?}");
        assert_eq!(
            v[7], "K deferred a parent directory is missing on the remote",
            "{v:?}"
        );
        assert_eq!(v[8], "K placed", "{v:?}");
        assert!(v[9].starts_with("K deferred unknown root"), "{v:?}");
        assert_eq!(v[10], "K", "{v:?}");
        let read = |n: &str| std::fs::read(root.join(n)).unwrap();
        assert_eq!(
            (read("new"), read("other"), read("even")),
            (b"fresh".to_vec(), b"changed".to_vec(), b"wxyz".to_vec())
        );
        let new = std::fs::metadata(root.join("new")).unwrap();
        // To the nanosecond, give or take perl's doubles (as for P; see reconcile::skip).
        assert_eq!(new.mtime(), t.0);
        assert!(
            (new.mtime_nsec() - t.1).abs() < 1_000,
            "{}",
            new.mtime_nsec()
        );
        assert_eq!(new.permissions().mode() & 0o7777, 0o644);
        let mode = std::fs::metadata(root.join("mode")).unwrap();
        assert_eq!(
            mode.permissions().mode() & 0o7777,
            0o644,
            "a mode that differs"
        );
        let same = std::fs::metadata(root.join("same")).unwrap();
        assert_eq!(same.mtime(), same_mtime, "the same file is not written");
        assert!(root.join("dir").is_dir());
        assert_eq!(
            std::fs::read_link(root.join("link")).unwrap(),
            Path::new("other")
        );
        assert!(!root.join("missing").exists() && !root.join("u").exists());
        assert!(
            temporaries(d.path()).is_empty(),
            "{:?}",
            temporaries(d.path())
        );
    }

    /// The greeting and answers parse as the client reads them.
    #[test]
    fn hello_and_entries_parse() {
        let h = parse_hello(&[b"1", b"1000", b"1", b"digest"]).unwrap();
        assert_eq!(
            h,
            Hello {
                uid: 1000,
                hires: true,
                hashes: true,
                delta: true
            }
        );
        assert!(parse_hello(&[b"1"]).is_err());
        let e = parse_entry(&[b"f", b"5", b"1600000000", b"7", b"644", b"0", b"a/b", b""]).unwrap();
        assert_eq!(
            (e.entry.kind, e.entry.size, e.entry.mode, e.uid),
            (b'f', 5, 0o644, 0)
        );
        assert!(parse_entry(&[b"f", b"x", b"1", b"0", b"644", b"0", b"a", b""]).is_err());
        assert!(parse_entry(&[b"f"]).is_err());
    }
}
