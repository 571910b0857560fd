//! Pipelined uploads of many small files over one SFTP session
//! ([`Sftp::put_many`]): the same steps as [`Sftp::put`] for each file, but many
//! files in flight, so a batch costs about three round trips per window of
//! files, not three per file.
//!
//! Per file, each step sent only once the server confirmed the one before:
//! `OPEN` of the temporary (`O_CREAT|O_EXCL`); when its handle comes, every
//! `WRITE`, `FSETSTAT` (mode, times) and `CLOSE` at once; when all of those are
//! confirmed and the source says what it gave is whole ([`Source::whole`], asked
//! only then), `posix-rename@openssh.com` over the destination. A file whose
//! step was refused, or that was not whole, gets a `REMOVE` of its temporary
//! (unless its `OPEN` was refused: then the name is not ours), and its outcome
//! is told only once that reply came. Replies are matched by id, whatever their
//! order.
//!
//! Bounds: at most [`FILES`] files in flight (so at most that many local files
//! open), no new file while [`MAX_DATA`] bytes of file data are written and not
//! yet confirmed, and requests are written in one go only while fewer than
//! [`LOW`] written ones are unanswered, or when [`MAX_OUT`] bytes wait: the
//! server always has work, the outgoing buffer stays bounded (the feed gives
//! small files), and the replies of everything in flight (a few dozen bytes
//! each) fit easily in the channel's window, so neither side ever waits on the
//! other with a full window.

use std::collections::HashMap;

use anyhow::{Result, anyhow, bail};

use super::wire::{Attrs, Request, kind, open, status};
use super::{CHUNK, Reply, Sftp, Source, refused, show};

/// Files in flight at most.
pub(crate) const FILES: usize = 128;

/// Written requests left unanswered below which the queued ones are written.
const LOW: usize = 96;

/// File data written and not yet confirmed above which no new file starts
/// (half of sshd's 2 MiB channel window).
const MAX_DATA: u64 = 1024 * 1024;

/// Queued request bytes above which they are written whatever is unanswered.
const MAX_OUT: usize = 256 * 1024;

/// Where one upload of a pipelined batch goes.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The final path.
    pub(crate) dest: Vec<u8>,
    /// The temporary (same folder, this run's name for it).
    pub(crate) tmp: Vec<u8>,
    /// Permission bits to set.
    pub(crate) mode: u32,
    /// Modification time (seconds) to set; the access time gets the same.
    pub(crate) mtime: u32,
}

/// What feeds a pipelined batch and hears how each upload ended.
pub(crate) trait Feed {
    /// Where the bytes of one upload come from.
    type Src: Source;
    /// The next upload, or `None` when there is none left (or the batch stops).
    fn next(&mut self) -> Option<(Target, Self::Src)>;
    /// How one upload ended: `Ok(Some(bytes))` swapped in; `Ok(None)` not whole,
    /// nothing replaced; `Err` a step the server refused ([`super::Refused`]).
    /// The temporary is removed in both cases where it was made.
    fn done(&mut self, target: Target, src: Self::Src, outcome: Result<Option<u64>>);
}

/// Which request of an upload an id is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Open,
    /// The n-th write (for the order of errors).
    Write(u32),
    SetStat,
    Close,
    Rename,
    Remove,
}

/// One upload in flight.
struct Job<S> {
    target: Target,
    src: S,
    /// Replies still due for the writes, fsetstat and close.
    pending: usize,
    /// Bytes written.
    bytes: u64,
    /// The first refused step, by order of the steps, and its error.
    error: Option<(Step, anyhow::Error)>,
    /// The outcome once the temporary is being removed.
    outcome: Option<Result<Option<u64>>>,
}

/// Orders steps: a refused write is told before a refused close.
fn rank(s: Step) -> (u8, u32) {
    match s {
        Step::Open => (0, 0),
        Step::Write(n) => (1, n),
        Step::SetStat => (2, 0),
        Step::Close => (3, 0),
        Step::Rename => (4, 0),
        Step::Remove => (5, 0),
    }
}

/// One pipelined batch while it runs.
struct Pipe<'f, F: Feed> {
    feed: &'f mut F,
    /// Uploads in flight, by slot.
    jobs: Vec<Option<Job<F::Src>>>,
    /// Requests in flight: slot and step, by id.
    ops: HashMap<u32, (usize, Step)>,
    /// Requests queued but not written yet.
    unwritten: usize,
    /// Whether the feed has no more uploads.
    ended: bool,
    /// File data written whose writes are not all answered yet.
    data: u64,
}

impl Sftp {
    /// Uploads everything `feed` gives, many files in flight (see the module
    /// docs); tells `feed` each outcome. An `Err` means the session failed:
    /// temporaries still there are removed by a later run.
    pub(crate) fn put_many<F: Feed>(&mut self, feed: &mut F) -> Result<()> {
        let mut pipe = Pipe {
            feed,
            jobs: Vec::new(),
            ops: HashMap::new(),
            unwritten: 0,
            ended: false,
            data: 0,
        };
        loop {
            pipe.fill(self);
            if pipe.ops.is_empty() {
                return Ok(());
            }
            let written = pipe.ops.len() - pipe.unwritten;
            if written < LOW || self.out.len() > MAX_OUT {
                self.flush()?;
                pipe.unwritten = 0;
            }
            let (id, reply) = self.next_reply()?;
            let (slot, step) = pipe
                .ops
                .remove(&id)
                .ok_or_else(|| anyhow!("the SFTP server answered request {id}, not asked"))?;
            pipe.answered(self, slot, step, reply)?;
        }
    }
}

impl<F: Feed> Pipe<'_, F> {
    /// Starts uploads until [`FILES`] are in flight or the feed has no more.
    fn fill(&mut self, sftp: &mut Sftp) {
        while !self.ended && self.data < MAX_DATA && self.jobs.iter().flatten().count() < FILES {
            let Some((target, src)) = self.feed.next() else {
                self.ended = true;
                return;
            };
            let creating = Attrs {
                mode: Some(0o600),
                ..Attrs::default()
            };
            let flags = open::WRITE | open::CREAT | open::EXCL;
            let job = Job {
                target,
                src,
                pending: 0,
                bytes: 0,
                error: None,
                outcome: None,
            };
            let slot = match self.jobs.iter().position(Option::is_none) {
                Some(free) => free,
                None => {
                    self.jobs.push(None);
                    self.jobs.len() - 1
                }
            };
            let tmp = &job.target.tmp;
            let id = sftp.send(|id| {
                Request::new(kind::OPEN, id)
                    .str(tmp)
                    .u32(flags)
                    .attrs(&creating)
            });
            self.jobs[slot] = Some(job);
            self.queued(id, slot, Step::Open);
        }
    }

    /// Notes request `id` of the upload in `slot`.
    fn queued(&mut self, id: u32, slot: usize, step: Step) {
        self.ops.insert(id, (slot, step));
        self.unwritten += 1;
    }

    /// The upload in `slot`.
    fn job(&mut self, slot: usize) -> Result<&mut Job<F::Src>> {
        self.jobs
            .get_mut(slot)
            .and_then(Option::as_mut)
            .ok_or_else(|| anyhow!("SFTP pipeline: no upload in slot {slot}"))
    }

    /// Takes the upload in `slot` out of the batch: it is over.
    fn take(&mut self, slot: usize) -> Result<Job<F::Src>> {
        self.jobs
            .get_mut(slot)
            .and_then(Option::take)
            .ok_or_else(|| anyhow!("SFTP pipeline: no upload in slot {slot}"))
    }

    /// Handles the reply to one request.
    fn answered(&mut self, sftp: &mut Sftp, slot: usize, step: Step, reply: Reply) -> Result<()> {
        match (step, reply) {
            (Step::Open, Reply::Handle(h)) => self.write(sftp, slot, &h),
            (Step::Open, Reply::Status(code, message)) => {
                let job = self.take(slot)?;
                let what = format!("create {}", show(&job.target.tmp));
                self.feed
                    .done(job.target, job.src, Err(refused(what, code, message)));
                Ok(())
            }
            (Step::Remove, _) => {
                let job = self.take(slot)?;
                let outcome = job.outcome.unwrap_or(Ok(None));
                self.feed.done(job.target, job.src, outcome);
                Ok(())
            }
            (Step::Rename, Reply::Status(status::OK, _)) => {
                let job = self.take(slot)?;
                let bytes = job.bytes;
                self.feed.done(job.target, job.src, Ok(Some(bytes)));
                Ok(())
            }
            (Step::Rename, Reply::Status(code, message)) => {
                let job = self.job(slot)?;
                let t = &job.target;
                let what = format!("rename {} to {}", show(&t.tmp), show(&t.dest));
                job.outcome = Some(Err(refused(what, code, message)));
                self.remove(sftp, slot);
                Ok(())
            }
            (_, Reply::Status(code, message)) => self.confirmed(sftp, slot, step, code, message),
            (_, other) => {
                let tmp = show(&self.job(slot)?.target.tmp);
                bail!("{tmp}: unexpected SFTP reply {other:?} to {step:?}")
            }
        }
    }

    /// The handle came: queues every write, then fsetstat and close.
    fn write(&mut self, sftp: &mut Sftp, slot: usize, handle: &[u8]) -> Result<()> {
        let mut buf = vec![0u8; CHUNK];
        let mut ids = Vec::new();
        let job = self.job(slot)?;
        loop {
            let n = job.src.chunk(&mut buf);
            if n == 0 {
                break;
            }
            let (chunk, at) = (&buf[..n], job.bytes);
            let id = sftp.send(|id| Request::new(kind::WRITE, id).str(handle).u64(at).str(chunk));
            ids.push((id, Step::Write(ids.len() as u32)));
            job.bytes += n as u64;
        }
        let attrs = Attrs {
            mode: Some(job.target.mode & 0o7777),
            atime_mtime: Some((job.target.mtime, job.target.mtime)),
            ..Attrs::default()
        };
        let set = sftp.send(|id| Request::new(kind::FSETSTAT, id).str(handle).attrs(&attrs));
        let close = sftp.send(|id| Request::new(kind::CLOSE, id).str(handle));
        ids.extend([(set, Step::SetStat), (close, Step::Close)]);
        job.pending = ids.len();
        self.data += job.bytes;
        for (id, step) in ids {
            self.queued(id, slot, step);
        }
        Ok(())
    }

    /// A write, fsetstat or close answered with `code`; once all are in, the
    /// rename (whole and nothing refused) or the removal of the temporary.
    fn confirmed(
        &mut self,
        sftp: &mut Sftp,
        slot: usize,
        step: Step,
        code: u32,
        message: String,
    ) -> Result<()> {
        let job = self.job(slot)?;
        job.pending = job.pending.saturating_sub(1);
        if code != status::OK
            && job
                .error
                .as_ref()
                .is_none_or(|(s, _)| rank(step) < rank(*s))
        {
            let tmp = show(&job.target.tmp);
            let what = match step {
                Step::SetStat => format!("set mode and mtime of {tmp}"),
                Step::Close => format!("close {tmp}"),
                _ => format!("write {tmp}"),
            };
            job.error = Some((step, refused(what, code, message)));
        }
        if job.pending > 0 {
            return Ok(());
        }
        let bytes = job.bytes;
        let rename = if let Some((_, e)) = job.error.take() {
            job.outcome = Some(Err(e));
            None
        } else if job.src.whole() {
            Some((job.target.tmp.clone(), job.target.dest.clone()))
        } else {
            job.outcome = Some(Ok(None));
            None
        };
        self.data = self.data.saturating_sub(bytes);
        match rename {
            Some((tmp, dest)) => {
                let id = sftp.queue_rename(&tmp, &dest);
                self.queued(id, slot, Step::Rename);
            }
            None => self.remove(sftp, slot),
        }
        Ok(())
    }

    /// Queues the removal of the temporary of the upload in `slot`.
    fn remove(&mut self, sftp: &mut Sftp, slot: usize) {
        let Some(job) = self.jobs[slot].as_ref() else {
            return;
        };
        let tmp = &job.target.tmp;
        let id = sftp.send(|id| Request::new(kind::REMOVE, id).str(tmp));
        self.queued(id, slot, Step::Remove);
    }
}
