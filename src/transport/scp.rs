//! The SCP protocol, source side, over one exec channel running `scp -r -p -t ROOT`.
//!
//! One channel carries a whole batch of files and directories: `D` records
//! enter a directory (creating it), `E` leaves it, `T` sets the next file's
//! times (to the microsecond: OpenSSH's sink uses utimes(2)), `C` announces a
//! file, its bytes follow, then a `\0`. The remote `scp`
//! answers every record with one status byte: `\0` ok, `\1`/`\2` followed by an
//! error line.
//!
//! Acknowledgements are pipelined where that is safe and awaited where it is
//! not: after a `C` or `D` header we wait for its answer before going on,
//! because a refused header (permission denied, not a directory) makes the
//! remote skip it, and it would then read our file bytes as protocol records or
//! put later files in the wrong directory. The answers to data and `T`/`E`
//! records are collected lazily (they arrive in order), so a batch costs one
//! round trip per file, not one remote process per file.
//!
//! A batch is only done when [`ScpSink::finish`] has read every answer, sent
//! EOF, waited for the remote to close and seen exit status 0: dropping the
//! channel after the last write can truncate the last file while looking like
//! success (measured with libssh2: a 512 MiB file arrived truncated while the
//! client reported success).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, anyhow, bail};

use super::ssh::Connection;
use crate::local::FileMeta;
use crate::local::read::{Finished, Reading, ToSend, Unsendable};
use crate::remote::quote;

/// The longest error line the remote scp may send (issue 13, "Bounded").
const MAX_LINE: usize = 8 * 1024;

/// Size of each write; libssh2 sends at most ~32 KiB per packet anyway.
const CHUNK: usize = 256 * 1024;

/// What an outstanding acknowledgement answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ack {
    /// The greeting the sink sends when it starts (and when it enters a directory).
    Start,
    /// A `T` record.
    Times,
    /// A `C` header for file `id`.
    Header(usize),
    /// The data of file `id`.
    Data(usize),
    /// An `E` record.
    End,
}

/// How one uploaded file ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Stored under its temporary name, with these attributes (as the file was, unchanged,
    /// while it was read) and the SHA-256 of its content.
    Stored { meta: FileMeta, sha256: String },
    /// The local file changed while it was read (or is no longer the file the scan
    /// saw); the temporary copy must not be used.
    Changed,
    /// The local file is gone: there is nothing to send, and that is no error.
    Vanished,
    /// The remote refused it: the reason.
    Failed(String),
    /// The local file could not be read: the reason.
    Unreadable(String),
}

/// A running remote SCP sink rooted at one remote directory.
pub(crate) struct ScpSink {
    /// The exec channel running `scp -r -p -t ROOT`.
    channel: ssh2::Channel,
    /// Answers not read yet, oldest first.
    pending: VecDeque<Ack>,
    /// Directory names entered below the root.
    depth: usize,
    /// Outcomes by file id, filled as answers arrive.
    outcomes: Vec<Option<Outcome>>,
    /// Read buffer for local files.
    buf: Vec<u8>,
    /// Shutdown asked for: stop between two chunks.
    cancel: Arc<AtomicBool>,
}

impl ScpSink {
    /// Starts `scp -r -p -t -- ROOT` on the remote. ROOT must exist.
    pub(crate) fn open(conn: &Connection, root: &[u8]) -> Result<ScpSink> {
        let command = format!(
            "scp -r -p -t -- {}",
            String::from_utf8(quote(root)).map_err(|_| anyhow!(
                "remote path {:?} is not valid UTF-8, which an ssh exec request cannot carry",
                String::from_utf8_lossy(root)
            ))?
        );
        let channel = conn.exec(&command)?;
        let mut sink = ScpSink {
            channel,
            pending: VecDeque::from([Ack::Start]),
            depth: 0,
            outcomes: Vec::new(),
            buf: vec![0; CHUNK],
            cancel: conn.cancel_flag(),
        };
        sink.settle()?;
        Ok(sink)
    }

    /// Enters (creating if needed) directory `name` below the current one, with `mode`.
    /// Returns the remote's refusal as `Ok(Err(reason))`; the sink then stays where it was.
    pub(crate) fn enter(&mut self, name: &[u8], mode: u32) -> Result<Result<(), String>> {
        check_name(name)?;
        let mut line = format!("D{:04o} 0 ", mode & 0o7777).into_bytes();
        line.extend_from_slice(name);
        line.push(b'\n');
        self.write(&line)?;
        self.pending.push_back(Ack::Start);
        match self.settle()? {
            None => {
                self.depth += 1;
                Ok(Ok(()))
            }
            Some(reason) => Ok(Err(reason)),
        }
    }

    /// Leaves the current directory.
    pub(crate) fn leave(&mut self) -> Result<()> {
        if self.depth == 0 {
            bail!("internal error: scp leave() at the root");
        }
        self.write(b"E\n")?;
        self.pending.push_back(Ack::End);
        self.depth -= 1;
        Ok(())
    }

    /// How many directories deep the sink currently is.
    pub(crate) fn depth(&self) -> usize {
        self.depth
    }

    /// Sends `local` as `name` in the current directory. Returns the file's id, whose
    /// [`Outcome`] [`finish`](Self::finish) reports. An `Err` means the channel broke.
    pub(crate) fn send(&mut self, name: &[u8], local: ToSend<'_>) -> Result<usize> {
        check_name(name)?;
        let id = self.outcomes.len();
        self.outcomes.push(None);
        let mut reading = match Reading::open(&local) {
            Ok(r) => r,
            Err(why) => {
                self.outcomes[id] = Some(unsendable(why));
                return Ok(id);
            }
        };
        let before = *reading.meta();
        let times = times_record(&before);
        self.write(times.as_bytes())?;
        self.pending.push_back(Ack::Times);
        let mut header = format!("C{:04o} {} ", before.mode, before.size).into_bytes();
        header.extend_from_slice(name);
        header.push(b'\n');
        self.write(&header)?;
        self.pending.push_back(Ack::Header(id));
        if self.settle()?.is_some() {
            return Ok(id); // refused: outcome recorded by settle(), no data follows
        }
        self.stream(&mut reading)?;
        self.write(b"\0")?;
        self.pending.push_back(Ack::Data(id));
        self.outcomes[id] = Some(outcome_of(reading.finish()));
        Ok(id)
    }

    /// Writes exactly the size `file` had when opened; pads with zeros if it
    /// shrank meanwhile (the protocol promised that many bytes), which
    /// [`Reading::finish`] then calls changed.
    fn stream(&mut self, file: &mut Reading) -> Result<()> {
        let mut left = file.owed();
        while left > 0 {
            if self.cancel.load(Ordering::Relaxed) {
                bail!("transfer cancelled by shutdown");
            }
            let want = left.min(CHUNK as u64) as usize;
            let n = match file.chunk(&mut self.buf[..want]) {
                0 => {
                    self.buf[..want].fill(0);
                    want
                }
                n => n,
            };
            self.channel
                .write_all(&self.buf[..n])
                .context("sending file data")?;
            left -= n as u64;
        }
        Ok(())
    }

    /// Leaves every directory, reads every answer, closes the channel and checks the exit
    /// status. Returns each file's outcome by id. An `Err` means nothing can be trusted.
    pub(crate) fn finish(mut self) -> Result<Vec<Outcome>> {
        while self.depth > 0 {
            self.leave()?;
        }
        self.settle()?;
        self.channel.send_eof().context("closing the scp channel")?;
        self.channel
            .wait_eof()
            .context("waiting for the remote scp to finish")?;
        self.channel.close().context("closing the scp channel")?;
        self.channel
            .wait_close()
            .context("closing the scp channel")?;
        let status = self
            .channel
            .exit_status()
            .context("reading scp's exit status")?;
        let outcomes: Vec<Outcome> = self
            .outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::Failed("no answer from the remote scp".into())))
            .collect();
        let any_failed = outcomes.iter().any(|o| matches!(o, Outcome::Failed(_)));
        if status != 0 && !any_failed {
            bail!("remote scp exited with status {status} without saying why");
        }
        Ok(outcomes)
    }

    /// Reads every outstanding answer. Returns the refusal of the last one, if it was refused;
    /// refusals of file headers and data are recorded as that file's outcome.
    fn settle(&mut self) -> Result<Option<String>> {
        let mut last = None;
        while let Some(ack) = self.pending.pop_front() {
            let result = self.read_ack()?;
            last = result.clone().err();
            if let Err(reason) = result {
                match ack {
                    Ack::Header(id) | Ack::Data(id) => {
                        self.outcomes[id] = Some(Outcome::Failed(reason));
                    }
                    Ack::Start if self.pending.is_empty() => {} // a refused `D`: caller handles
                    Ack::Start | Ack::Times | Ack::End => {
                        bail!("remote scp: {reason}");
                    }
                }
            }
        }
        Ok(last)
    }

    /// Reads one status byte (and its message line when it is an error).
    fn read_ack(&mut self) -> Result<Result<(), String>> {
        let mut b = [0u8; 1];
        self.channel
            .read_exact(&mut b)
            .map_err(|e| anyhow!("the remote scp stopped answering: {e}"))?;
        match b[0] {
            0 => Ok(Ok(())),
            1 | 2 => {
                let mut line = Vec::new();
                loop {
                    self.channel
                        .read_exact(&mut b)
                        .map_err(|e| anyhow!("the remote scp stopped answering: {e}"))?;
                    if b[0] == b'\n' {
                        break;
                    }
                    if line.len() >= MAX_LINE {
                        bail!("the remote scp sent an error line longer than {MAX_LINE} bytes");
                    }
                    line.push(b[0]);
                }
                Ok(Err(reason(&String::from_utf8_lossy(&line))))
            }
            other => bail!(
                "the remote scp sent an unexpected byte {other:#04x}; is `scp` on the remote OpenSSH's?"
            ),
        }
    }

    /// Writes protocol bytes.
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.channel
            .write_all(bytes)
            .context("sending to the remote scp")
    }
}

/// The `T` record before a file: mtime and atime, each as seconds and microseconds.
/// OpenSSH's sink sets both with utimes(2), so the remote copy keeps its mtime to the
/// microsecond, not only the second (issue 14, bug 4).
fn times_record(meta: &FileMeta) -> String {
    let usec = |secs: i64, nsec: i64| if secs < 0 { 0 } else { nsec / 1000 };
    format!(
        "T{} {} {} 0\n",
        meta.mtime.max(0),
        usec(meta.mtime, meta.mtime_nsec),
        meta.atime.max(0)
    )
}

/// The outcome of a file read to its end ([`Reading::finish`]).
pub(crate) fn outcome_of(read: Finished) -> Outcome {
    match read {
        Finished::Whole(meta, sha256) => Outcome::Stored { meta, sha256 },
        Finished::Changed => Outcome::Changed,
        Finished::Unreadable(reason) => Outcome::Unreadable(reason),
    }
}

/// The outcome of a file that was not read.
pub(crate) fn unsendable(why: Unsendable) -> Outcome {
    match why {
        Unsendable::Vanished => Outcome::Vanished,
        Unsendable::Changed => Outcome::Changed,
        Unsendable::Unreadable(reason) => Outcome::Unreadable(reason),
    }
}

/// Names travel in one protocol line and must be a single path component.
fn check_name(name: &[u8]) -> Result<()> {
    if name.is_empty()
        || name.contains(&b'\n')
        || name.contains(&b'/')
        || name == b"."
        || name == b".."
    {
        bail!(
            "internal error: {:?} is not a valid scp record name",
            String::from_utf8_lossy(name)
        );
    }
    Ok(())
}

/// Turns `scp: /path/.hostsync-tmp.x: Permission denied` into `permission denied on the remote`.
fn reason(msg: &str) -> String {
    let last = msg.rsplit(": ").next().unwrap_or(msg).trim();
    let lower = last.to_lowercase();
    if lower.is_empty() {
        "refused by the remote scp".into()
    } else {
        format!("{lower} on the remote")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_drop_the_temp_path() {
        assert_eq!(
            reason("scp: /srv/x/.hostsync-tmp.0123: Permission denied"),
            "permission denied on the remote"
        );
        assert_eq!(
            reason("scp: /a: No space left on device"),
            "no space left on device on the remote"
        );
    }

    /// Issue 14, bug 4: the `T` record carries the microseconds, and OpenSSH's own
    /// `scp -t` (run here locally, as the remote runs it) sets them.
    #[test]
    fn times_keep_microseconds() {
        use std::io::Write as _;
        use std::os::unix::fs::MetadataExt;
        let meta = FileMeta {
            size: 3,
            mtime: 1_700_000_000,
            mtime_nsec: 123_456_789,
            atime: 1_700_000_005,
            mode: 0o640,
            dev: 0,
            ino: 0,
        };
        assert_eq!(times_record(&meta), "T1700000000 123456 1700000005 0\n");
        let before_epoch = FileMeta { mtime: -5, ..meta };
        assert_eq!(times_record(&before_epoch), "T0 0 1700000005 0\n");
        let d = tempfile::tempdir().unwrap();
        let mut scp = std::process::Command::new("scp")
            .args(["-p", "-t"])
            .arg(d.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("OpenSSH's scp");
        let mut input = scp.stdin.take().unwrap();
        input.write_all(times_record(&meta).as_bytes()).unwrap();
        input.write_all(b"C0640 3 f\nabc\0").unwrap();
        drop(input);
        let out = scp.wait_with_output().unwrap();
        assert!(
            out.status.success() && out.stdout.iter().all(|&b| b == 0),
            "{out:?}"
        );
        let got = std::fs::metadata(d.path().join("f")).unwrap();
        assert_eq!(
            (got.mtime(), got.mtime_nsec()),
            (1_700_000_000, 123_456_000)
        );
    }

    #[test]
    fn names_must_be_one_component() {
        assert!(check_name(b"ok name").is_ok());
        for bad in [&b""[..], b"a/b", b"a\nb", b".", b".."] {
            assert!(check_name(bad).is_err());
        }
    }
}
