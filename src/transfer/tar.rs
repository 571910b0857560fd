//! The fast path for many files: one tar stream into `tar -x` on the remote.
//!
//! SCP needs one round trip per file for safety (see `transfer::scp`): a refused
//! header must be seen before the file's bytes follow. A tar stream has no such
//! hazard: every member is length-framed, and a member the remote cannot write
//! does not change how the rest of the stream is read. So a whole batch goes
//! down one exec channel with no waiting at all (the libssh2 notes measured
//! 0.215 s for 2,000 small files, against 0.35 s for SCP even with unsafely
//! pipelined acks and 0.52 s for rsync).
//!
//! The guarantees stay those of the SCP path: members are the same temporary
//! names in each file's own destination directory (`.hostsync-tmp.<hash>`),
//! committed by the same rename step; modes (`-p`) and mtimes are kept, mtimes
//! to the nanosecond through a pax `mtime` record where the second has a fraction
//! (GNU tar and bsdtar set it; issue 14, bug 4); owner
//! is the remote user (`--no-same-owner`). If the remote tar exits non-zero,
//! nothing from that stream is committed and the caller sends the same batch
//! again over SCP, which reports a reason per file. A file that changes while
//! it is read is padded to its announced size, flagged, and never committed.
//!
//! The commit rides along: once every file is read, the caller's commit records
//! (only the files that arrived whole) go as the archive's last member, and the
//! same exec runs the perl commit on them right after a successful `tar -x`. That
//! saves the commit its own channel: an open, an exec and a process start, about
//! 50 ms at a 20 ms round trip. Where the remote has no perl, the records are
//! dropped and the caller commits as before.
//!
//! The first stream of a batch does not even open a channel: the listing's own
//! exec ends by waiting for one line that names the root to extract into
//! ([`Reserved`]), and the stream follows that line on the same stdin. Two round
//! trips less (a channel open and an exec), about 65 ms at a 20 ms round trip.
//!
//! A big batch is split over two remote tars ([`SPLIT_PERL`]): two archives framed
//! into the one stream, each extracted by its own `tar -x`, because creating files
//! is CPU work in the remote kernel and one tar uses one core. Measured on this VM's
//! journal-less ext4 after repeated deletions (BENCHMARKS.md, session 4), 2,000
//! small files took 1,440 ms with one tar and 803 ms with two; on tmpfs it makes no
//! difference. The commit still runs once, after both tars succeeded.
//!
//! Every archive of a split stream carries every directory of the batch, ahead of
//! its files. Issue 12 found why: when only one archive made the directories, the
//! other tar could find a file's parent missing, make it itself while the first tar
//! made it too, and GNU tar 1.34 then gives up on that file ("Cannot open: No such
//! file or directory", exit 2), so about one split batch in ten fell back to SCP
//! ([`share_out`]). A stream ends with an end frame, so one cut at a frame boundary
//! is not taken for whole; and when a remote tar fails, its status and the first
//! line of its stderr say why ([`TarFailed`]).
//!
//! Used only when the remote has GNU tar or bsdtar (probed once per connection),
//! and not when the environment says `HOSTSYNC_TRANSFER=scp`.

use std::cell::RefCell;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, anyhow, bail};

use super::pace::Paced;
use super::remote::{COMMIT_PERL, TMP_PREFIX, fresh_hex, quote};
use super::scp::Outcome;
use super::ssh::{Connection, ScriptOutput};
use crate::local::FileMeta;

/// Bytes buffered before a write to the channel (tar headers are 512 bytes each).
const BUFFER: usize = 256 * 1024;

/// A member to extract below the root.
pub enum Member<'a> {
    /// A directory (created, or its mode set), relative to the root.
    Dir { rel: &'a [u8], mode: u32 },
    /// A local file, stored at `rel` (a temporary name) below the root; `size` is
    /// what the scan saw, for sharing a split stream's work out evenly.
    File {
        rel: Vec<u8>,
        local: crate::local::ToSend<'a>,
        size: u64,
    },
}

/// Why a remote tar (or the split demultiplexer) refused a stream: its exit status
/// and the first line of its stderr, e.g. `tar exit 2: Cannot mkdir: File exists`.
/// Nothing from that stream was committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarFailed {
    /// The exit status (the highest of the two tars for a split stream).
    pub status: i32,
    /// The first line of tar's stderr, without a leading `tar: `, escaped for humans
    /// (empty when tar said nothing).
    pub first_line: String,
}

impl std::fmt::Display for TarFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.first_line.as_str() {
            "" => write!(f, "tar exit {}", self.status),
            line => write!(f, "tar exit {}: {line}", self.status),
        }
    }
}

/// What the remote did with one stream.
pub struct Streamed {
    /// One outcome per `File` member, in order.
    pub outcomes: Vec<Outcome>,
    /// The output of the commit that ran on the remote right after `tar -x`, in the
    /// same exec (see [`upload`]); `None` when none was asked for or the remote has no
    /// perl, so the caller still has to commit those steps itself.
    pub commit: Option<ScriptOutput>,
}

/// The remote side of a stream: `tar -x` into `$1` (with `$4` = `2`, two of them
/// behind the demultiplexer `$5`, [`SPLIT_PERL`]), its status on a line, then, when
/// tar succeeded and the archive ended with the commit records `$2`, those records
/// fed to the perl commit `$3`, and its status. The records file is always removed.
/// Its name is a temporary name, so one left by a broken connection is stale next run.
/// Also the tail of the listing that hands its channel on ([`Reserved`]).
///
/// tar's stderr (and the demultiplexer's) goes to the channel's stderr, capped at
/// 4 KiB (the rest is read and dropped, so a tar with many warnings neither blocks
/// nor dies of SIGPIPE), then one NUL byte, then the commit's stderr: the caller
/// tells the two apart and names tar's first line when tar fails ([`TarFailed`]).
pub const REMOTE: &str = r#"exec 4>&1
s=$( { { if [ "$4" = 2 ]; then perl -e "$5" "$1"; else tar -x -p --no-same-owner -f - -C "$1"; fi 2>&1 >&4 4>&- 5>&-; echo "$?" >&5; } | { head -c 4096 >&2; cat >/dev/null; }; } 5>&1 )
exec 4>&-
printf '\000' >&2
echo "tar-exit:$s"
[ -n "$2" ] || exit 0
c=$1/$2
if [ "$s" = 0 ] && [ -f "$c" ] && command -v perl >/dev/null 2>&1; then
  perl -e "$3" <"$c"; echo "commit-exit:$?"
fi
rm -f -- "$c""#;

/// The remote side of a split stream (`$4` = `2` in [`REMOTE`]): two `tar -x` into
/// the root `$1`, fed from one stdin of frames (one byte: which tar, four bytes:
/// length, big-endian, then the bytes; see [`Framer`]), ended by a frame for tar
/// [`END_LANE`] of length 0. Exits non-zero when the stream ends without that frame,
/// a frame names no tar, or either tar fails (then with the highest tar status), so
/// nothing is committed; its own reason goes to stderr as one `split stream:` line.
/// The pipes to the tars get 1 MiB where Linux allows it, so one busy tar does not
/// keep the other waiting for its next frame.
pub const SPLIT_PERL: &str = r#"use strict; my $root = shift; $SIG{PIPE} = "IGNORE"; my @t;
for my $i (0, 1) {
  open($t[$i], "|-", "tar", "-x", "-p", "--no-same-owner", "-f", "-", "-C", $root)
    or do { print STDERR "split stream: cannot start tar: $!\n"; exit 126 };
  fcntl($t[$i], 1031, 1 << 20) if $^O eq "linux";
}
binmode STDIN;
sub rd { my ($n) = @_; my $b = "";
  while (length($b) < $n) {
    my $r = sysread(STDIN, $b, $n - length($b), length($b));
    return undef if !$r;
  }
  return $b;
}
my $bad = "";
while (1) {
  my $h = rd(5);
  if (!defined $h) { $bad = "the stream ended before its end frame"; last }
  my ($l, $n) = unpack("CN", $h);
  last if $l == 255 && $n == 0;
  if ($l > 1) { $bad = "a frame names no tar ($l)"; last }
  my $d = rd($n);
  if (!defined $d) { $bad = "the stream ended inside a frame"; last }
  my $o = 0;
  while ($o < $n) {
    my $w = syswrite($t[$l], $d, $n - $o, $o);
    if (!defined $w) { $bad = "tar $l stopped reading: $!"; last }
    $o += $w;
  }
  last if $bad ne "";
}
print STDERR "split stream: $bad\n" if $bad ne "";
my $s = $bad ne "" ? 2 : 0;
for my $f (@t) {
  close($f);
  my $c = ($? & 127) ? 128 + ($? & 127) : $? >> 8;
  $s = $c if $c > $s;
}
exit $s;"#;

/// The lane byte of the frame that ends a split stream (with length 0): a stream
/// cut at a frame boundary must not look complete.
const END_LANE: u8 = 255;

/// A split stream ends its frames at about this size (see [`Framer`]).
const FRAME: usize = 64 * 1024;

/// How many tar processes a split stream feeds.
pub const SPLIT_LANES: usize = 2;

/// A channel whose remote side already ran the listing and now waits, in `read`, for
/// one line: `tar INDEX NAME` to run [`REMOTE`] on root number INDEX of the listing
/// with records NAME, anything else to exit. Saves the first stream of a batch its
/// own channel open and exec: two round trips.
pub struct Reserved {
    /// The waiting channel.
    pub channel: ssh2::Channel,
    /// The listing's roots, in order: what INDEX refers to.
    pub roots: Vec<Vec<u8>>,
}

impl Reserved {
    /// Tells the remote side there is nothing to extract and closes the channel.
    pub fn release(mut self) {
        // Best effort: the remote exits on this line or on EOF, whichever comes.
        let _ = self.channel.write_all(b"none\n");
        let _ = self.channel.send_eof();
        let _ = self.channel.wait_close();
    }
}

/// Streams `members` into `tar -x` below `root`, calling `sent(k)` as the `k`th file
/// member has gone into the stream (for progress). Once every member is written,
/// `commit` gets their outcomes and returns the commit records to run right after
/// the extraction, in the same exec (empty: none); they travel as the archive's last
/// member, so a batch costs one channel instead of two (two round trips and a
/// process start less). With `split` (the remote has perl), the members are shared
/// out over [`SPLIT_LANES`] archives in one stream, each extracted by a tar of its
/// own (see [`Framer`]). Returns `Ok(Err(why))` when the remote tar failed (nothing
/// was committed; send the batch another way). `Err` means the connection broke.
pub fn upload(
    conn: &Connection,
    root: &[u8],
    members: &[Member<'_>],
    commit: impl FnOnce(&[Outcome]) -> Vec<u8>,
    reserved: &mut Option<Reserved>,
    sent: &dyn Fn(usize),
    split: bool,
) -> Result<Result<Streamed, TarFailed>> {
    let records_name = commit_file_name(conn.names());
    let lanes = if split && worth_splitting(members) {
        SPLIT_LANES
    } else {
        1
    };
    log::debug!(
        "tar stream of {} member(s) into {}, {lanes} tar(s)",
        members.len(),
        String::from_utf8_lossy(&quote(root))
    );
    let started = std::time::Instant::now();
    let index = reserved
        .as_ref()
        .and_then(|r| r.roots.iter().position(|d| d.as_slice() == root));
    let channel = match (index, reserved.take()) {
        (Some(i), Some(Reserved { mut channel, .. })) => {
            let go = format!(
                "tar {i} {} {lanes}\n",
                String::from_utf8_lossy(&records_name)
            );
            channel
                .write_all(go.as_bytes())
                .context("starting the remote tar")?;
            channel
        }
        (_, other) => {
            *reserved = other;
            let root = String::from_utf8(quote(root))
                .map_err(|_| anyhow!("remote path is not valid UTF-8"))?;
            conn.exec(&remote_command(&root, &records_name, lanes))?
        }
    };
    let cancel = conn.cancel_flag();
    let writer = BufWriter::with_capacity(BUFFER, Paced::new(conn, channel));
    let (writer, outcomes, records) = if lanes > 1 {
        stream_split(writer, members, commit, sent, &cancel, &records_name)?
    } else {
        stream_one(writer, members, commit, sent, &cancel, &records_name)?
    };
    let (mut channel, mut out, waits) = writer
        .into_inner()
        .map_err(|e| e.into_error())
        .context("sending to the remote tar")?
        .into_parts();
    channel.send_eof().context("closing the tar stream")?;
    // A status line, then the commit's records: one short record per step.
    let cap = 64 * 1024 + 8 * 1024 * members.len() as u64;
    let mut budget = super::bounded::Budget::new("the remote tar", cap, conn.io_timeout());
    budget.took(out.len())?;
    out.extend(super::bounded::read_to_end(&mut channel, &mut budget)?);
    // At most 4 KiB of tar's and what the commit printed (see [`REMOTE`]); an
    // unreadable stderr must not hide the result.
    let mut stderr = Vec::new();
    let _ = channel.stderr().take(MAX_STDERR).read_to_end(&mut stderr);
    channel.wait_close().context("closing the tar channel")?;
    let (tar_status, tar_stderr, commit) = parse_output(&out, &stderr)?;
    log::debug!(
        "tar stream: {} ms, {waits} wait(s) for the remote, tar exit {tar_status}, {}",
        started.elapsed().as_millis(),
        match &commit {
            Some(c) => format!("commit exit {}", c.status),
            None if records.is_empty() => "no commit asked".to_string(),
            None => "commit not run".to_string(),
        }
    );
    if tar_status != 0 {
        return Ok(Err(TarFailed {
            status: tar_status,
            first_line: first_line(&tar_stderr),
        }));
    }
    Ok(Ok(Streamed { outcomes, commit }))
}

/// Whether a batch is big enough for two tars: at least [`SPLIT_MIN_COST`] of work
/// in at least two files, and every directory it makes stays writable for its owner
/// (one tar sets a directory's mode when it is done, while the other may still be
/// writing into it). `HOSTSYNC_SPLIT=0` never splits, for measuring.
fn worth_splitting(members: &[Member<'_>]) -> bool {
    if std::env::var("HOSTSYNC_SPLIT").is_ok_and(|v| v == "0") {
        return false;
    }
    let mut files = 0;
    let mut work = 0;
    for m in members {
        match m {
            Member::Dir { mode, .. } if mode & 0o300 != 0o300 => return false,
            Member::Dir { .. } => {}
            Member::File { .. } => {
                files += 1;
                work += cost(m);
            }
        }
    }
    files >= 2 && work >= SPLIT_MIN_COST
}

/// The least work ([`cost`]) a stream is split for: about 160 small files. Below,
/// starting perl and a second tar costs more than the second tar saves.
pub const SPLIT_MIN_COST: u64 = 2 << 20;

/// What a stream wrote: the writer back, one outcome per file, the commit records.
type Written<W> = (W, Vec<Outcome>, Vec<u8>);

/// Writes `members` as one archive, the commit records last.
fn stream_one<W: Write>(
    writer: W,
    members: &[Member<'_>],
    commit: impl FnOnce(&[Outcome]) -> Vec<u8>,
    sent: &dyn Fn(usize),
    cancel: &AtomicBool,
    records_name: &[u8],
) -> Result<Written<W>> {
    let mut builder = tar::Builder::new(writer);
    let mut outcomes = Vec::new();
    for m in members {
        if let Some(o) = append(&mut builder, m, cancel)? {
            outcomes.push(o);
            sent(outcomes.len() - 1);
        }
    }
    let records = commit(&outcomes);
    if !records.is_empty() {
        append_records(&mut builder, records_name, &records)?;
    }
    let writer = builder.into_inner().context("sending to the remote tar")?;
    Ok((writer, outcomes, records))
}

/// Writes `members` as [`SPLIT_LANES`] archives in one framed stream (see
/// [`share_out`] for who gets what); the first archive ends with the commit records,
/// which the remote runs once both tars succeeded.
fn stream_split<W: Write>(
    writer: W,
    members: &[Member<'_>],
    commit: impl FnOnce(&[Outcome]) -> Vec<u8>,
    sent: &dyn Fn(usize),
    cancel: &AtomicBool,
    records_name: &[u8],
) -> Result<Written<W>> {
    let out = Rc::new(RefCell::new(writer));
    let mut builders: Vec<tar::Builder<Framer<W>>> = (0..SPLIT_LANES)
        .map(|lane| tar::Builder::new(Framer::new(out.clone(), lane as u8)))
        .collect();
    let mut file_index = Vec::with_capacity(members.len());
    let mut files = 0;
    for m in members {
        file_index.push(files);
        files += usize::from(matches!(m, Member::File { .. }));
    }
    let mut outcomes: Vec<Option<Outcome>> = (0..files).map(|_| None).collect();
    let lanes = share_out(members);
    let mut next = [0usize; SPLIT_LANES];
    let mut done = [0u64; SPLIT_LANES];
    // Whichever archive is behind gets the next member, so both tars stay busy.
    while let Some(lane) = (0..SPLIT_LANES)
        .filter(|&l| next[l] < lanes[l].len())
        .min_by_key(|&l| done[l])
    {
        let m = lanes[lane][next[lane]];
        next[lane] += 1;
        done[lane] += cost(&members[m]);
        if let Some(o) = append(&mut builders[lane], &members[m], cancel)? {
            outcomes[file_index[m]] = Some(o);
            sent(file_index[m]);
        }
    }
    let outcomes: Vec<Outcome> = outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Outcome::Failed("not sent".into())))
        .collect();
    let records = commit(&outcomes);
    let mut builders = builders.into_iter();
    let mut first = builders.next().expect("one builder per lane");
    for b in builders {
        b.into_inner()
            .and_then(|mut f| f.flush())
            .context("sending to the remote tar")?;
    }
    if !records.is_empty() {
        append_records(&mut first, records_name, &records)?;
    }
    first
        .into_inner()
        .and_then(|mut f| f.flush())
        .context("sending to the remote tar")?;
    let mut writer = Rc::try_unwrap(out)
        .map_err(|_| anyhow!("a split stream's writer is still shared"))?
        .into_inner();
    writer
        .write_all(&[END_LANE, 0, 0, 0, 0])
        .context("sending to the remote tar")?;
    Ok((writer, outcomes, records))
}

/// Which members each archive of a split stream carries, in order: every directory
/// goes first into every archive, then the files in two runs of about equal
/// [`cost`], so each tar works in its own directories.
///
/// Why every archive carries every directory: a tar that finds a file's parent
/// missing makes it itself, and when the other tar creates that parent in the same
/// moment, GNU tar 1.34's `mkdir` fails with EEXIST and it gives up on the file
/// ("Cannot open: No such file or directory", tar exit 2; seen in about 1 run in
/// 10 of two concurrent tars sharing new directories, and in 1 `cargo test` run in
/// 4, issue 12). A directory member of its own is made with `mkdir`, and an existing
/// directory there is fine, so with its parents ahead of its files in its own
/// archive no tar ever needs a directory the other one is making.
fn share_out(members: &[Member<'_>]) -> [Vec<usize>; SPLIT_LANES] {
    let mut lanes: [Vec<usize>; SPLIT_LANES] = Default::default();
    let total: u64 = members
        .iter()
        .filter(|m| matches!(m, Member::File { .. }))
        .map(cost)
        .sum();
    let mut so_far = 0;
    for (i, m) in members.iter().enumerate() {
        if let Member::Dir { .. } = m {
            for lane in &mut lanes {
                lane.push(i);
            }
        }
    }
    for (i, m) in members.iter().enumerate() {
        if let Member::File { .. } = m {
            let lane = usize::from(so_far > 0 && so_far * 2 >= total);
            so_far += cost(m);
            lanes[lane].push(i);
        }
    }
    lanes
}

/// About what a member costs the remote: its bytes plus a fixed price per file
/// (creating a file costs about as much as writing 8 KiB into one).
fn cost(m: &Member<'_>) -> u64 {
    match m {
        Member::Dir { .. } => 512,
        Member::File { size, .. } => 512 + size.div_ceil(512) * 512 + 8192,
    }
}

/// Appends one member; a file gives its outcome.
fn append<W: Write>(
    builder: &mut tar::Builder<W>,
    m: &Member<'_>,
    cancel: &AtomicBool,
) -> Result<Option<Outcome>> {
    if cancel.load(Ordering::Relaxed) {
        bail!("transfer cancelled by shutdown");
    }
    match m {
        Member::Dir { rel, mode } => {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(*mode);
            h.set_size(0);
            h.set_mtime(now());
            builder
                .append_data(&mut h, bytes_path(rel), std::io::empty())
                .context("sending to the remote tar")?;
            Ok(None)
        }
        Member::File { rel, local, .. } => Ok(Some(send_file(builder, rel, local, cancel)?)),
    }
}

/// One archive of a split stream: what its tar builder writes goes out in frames of
/// about [`FRAME`] bytes, each a byte naming the archive, four bytes of length
/// (big-endian) and the bytes, which [`SPLIT_PERL`] hands to that archive's tar.
struct Framer<W: Write> {
    /// The one stream all archives share.
    out: Rc<RefCell<W>>,
    /// Which archive this is.
    lane: u8,
    /// Bytes not yet framed.
    buf: Vec<u8>,
}

impl<W: Write> Framer<W> {
    fn new(out: Rc<RefCell<W>>, lane: u8) -> Framer<W> {
        Framer {
            out,
            lane,
            buf: Vec::with_capacity(FRAME + 16 * 1024),
        }
    }

    /// Sends what is buffered as one frame.
    fn emit(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let len = u32::try_from(self.buf.len()).map_err(std::io::Error::other)?;
        let mut out = self.out.borrow_mut();
        out.write_all(&[self.lane])?;
        out.write_all(&len.to_be_bytes())?;
        out.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }
}

impl<W: Write> Write for Framer<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= FRAME {
            self.emit()?;
        }
        Ok(b.len())
    }

    /// Frames what is buffered; the shared stream is flushed by its owner.
    fn flush(&mut self) -> std::io::Result<()> {
        self.emit()
    }
}

/// The exec command: [`REMOTE`] under `sh -c` (whatever the login shell is), with the
/// root (already quoted), the records' name, the perl commit, the number of tars
/// and, for two, the demultiplexer as `$1` to `$5`.
fn remote_command(quoted_root: &str, records_name: &[u8], lanes: usize) -> String {
    let q = |b: &[u8]| String::from_utf8(quote(b)).expect("ASCII");
    let split = if lanes > 1 { SPLIT_PERL } else { "" };
    format!(
        "sh -c {} sh {quoted_root} {} {} {lanes} {}",
        q(REMOTE.as_bytes()),
        q(records_name),
        q(COMMIT_PERL.as_bytes()),
        q(split.as_bytes())
    )
}

/// A fresh temporary name of this run (see [`super::runs`]) for one stream's commit records.
fn commit_file_name(names: &super::runs::Names) -> Vec<u8> {
    format!("{TMP_PREFIX}{}.{}.{}", names.client, names.run, fresh_hex()).into_bytes()
}

/// Appends the commit records as the archive's last member (owner-only).
fn append_records<W: Write>(
    builder: &mut tar::Builder<W>,
    name: &[u8],
    records: &[u8],
) -> Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o600);
    h.set_size(records.len() as u64);
    h.set_mtime(now());
    builder
        .append_data(&mut h, bytes_path(name), records)
        .context("sending to the remote tar")
}

/// The most of a stream's stderr that is read: tar's share is capped at 4 KiB
/// remotely ([`REMOTE`]), the rest is the commit's.
const MAX_STDERR: u64 = 64 * 1024;

/// The first line of what tar printed, for [`TarFailed`]: without GNU tar's `tar: `.
fn first_line(tar_stderr: &[u8]) -> String {
    let line = crate::escape::first_line(tar_stderr, 200);
    line.strip_prefix("tar: ")
        .map(str::to_string)
        .unwrap_or(line)
}

/// Splits what [`REMOTE`] printed: `tar-exit:N` on the first line, then the commit's
/// records and `commit-exit:N` if the commit ran; and its stderr at the first NUL,
/// tar's before, the commit's after. Returns tar's status, tar's stderr and the
/// commit's output.
fn parse_output(out: &[u8], stderr: &[u8]) -> Result<(i32, Vec<u8>, Option<ScriptOutput>)> {
    let text = |b: &[u8]| crate::escape::escape(b);
    let (tar_stderr, commit_stderr) = match stderr.iter().position(|&b| b == 0) {
        Some(i) => (&stderr[..i], &stderr[i + 1..]),
        None => (stderr, &b""[..]),
    };
    let newline = out.iter().position(|&b| b == b'\n');
    let (first, rest) = match newline {
        Some(i) => (&out[..i], &out[i + 1..]),
        None => (out, &b""[..]),
    };
    let tar_status = std::str::from_utf8(first)
        .ok()
        .and_then(|l| l.strip_prefix("tar-exit:"))
        .and_then(|c| c.trim().parse::<i32>().ok())
        .ok_or_else(|| {
            anyhow!(
                "the remote tar gave no status (output \"{}\", stderr \"{}\")",
                crate::escape::cut(&text(out), 200),
                crate::escape::first_line(stderr, 200)
            )
        })?;
    let body = rest.strip_suffix(b"\n").unwrap_or(rest);
    const MARK: &[u8] = b"commit-exit:";
    let commit = match body.windows(MARK.len()).rposition(|w| w == MARK) {
        Some(at) => {
            let status = std::str::from_utf8(&body[at + MARK.len()..])
                .ok()
                .and_then(|c| c.trim().parse::<i32>().ok())
                .ok_or_else(|| {
                    anyhow!(
                        "the remote commit gave a bad status (output \"{}\")",
                        crate::escape::cut(&text(out), 200)
                    )
                })?;
            Some(ScriptOutput {
                stdout: body[..at].to_vec(),
                stderr: String::from_utf8_lossy(commit_stderr).into_owned(),
                status,
            })
        }
        None if body.is_empty() => None,
        None => bail!(
            "unexpected output after the remote tar (output \"{}\")",
            crate::escape::cut(&text(out), 200)
        ),
    };
    Ok((tar_status, tar_stderr.to_vec(), commit))
}

/// Appends one file; a file that cannot be read is a failed outcome, not an error.
fn send_file<W: Write>(
    builder: &mut tar::Builder<W>,
    rel: &[u8],
    local: &crate::local::ToSend<'_>,
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<Outcome> {
    let (mut file, before) = match local.open() {
        Ok(opened) => opened,
        Err(why) => return Ok(super::scp::unsendable(why)),
    };
    if let Some(mtime) = pax_mtime(&before) {
        builder
            .append_pax_extensions([("mtime", mtime.as_bytes())])
            .context("sending to the remote tar")?;
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(before.mode);
    h.set_size(before.size);
    h.set_mtime(before.mtime.max(0) as u64);
    let mut reader = Exact {
        file: &mut file,
        left: before.size,
        torn: false,
        cancel,
    };
    builder
        .append_data(&mut h, bytes_path(rel), &mut reader)
        .context("sending to the remote tar")?;
    let torn = reader.torn;
    if cancel.load(Ordering::Relaxed) {
        bail!("transfer cancelled by shutdown");
    }
    let after = file.metadata().map(|m| FileMeta::of(&m)).ok();
    let unchanged = after.is_some_and(|a| before.unchanged(&a));
    Ok(if torn || !unchanged {
        Outcome::Changed
    } else {
        Outcome::Stored {
            meta: before,
            sha256: file.sha256(),
        }
    })
}

/// A pax `mtime` record with the nanoseconds a tar header has no room for
/// (`S.NNNNNNNNN`), so GNU tar and bsdtar set the remote file's mtime to the
/// nanosecond and two saves within one second stay apart (issue 14, bug 4);
/// `None` for a whole second, which the header itself carries.
fn pax_mtime(meta: &FileMeta) -> Option<String> {
    (meta.mtime >= 0 && meta.mtime_nsec > 0)
        .then(|| format!("{}.{:09}", meta.mtime, meta.mtime_nsec))
}

/// Reads exactly `left` bytes: pads with zeros if the file shrank, stops if it grew.
struct Exact<'a, R> {
    /// The open local file.
    file: &'a mut R,
    /// Bytes still owed to the archive.
    left: u64,
    /// The file had fewer bytes than announced.
    torn: bool,
    /// Shutdown: end the member early (the stream is abandoned anyway).
    cancel: &'a std::sync::atomic::AtomicBool,
}

impl<R: Read> Read for Exact<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        if self.cancel.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("cancelled"));
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = if self.torn {
            0
        } else {
            self.file.read(&mut buf[..want])?
        };
        let n = if n == 0 {
            self.torn = true;
            buf[..want].fill(0);
            want
        } else {
            n
        };
        self.left -= n as u64;
        Ok(n)
    }
}

/// Seconds since the epoch, for directory members.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Bytes as a path (Unix paths are bytes).
fn bytes_path(b: &[u8]) -> &Path {
    use std::os::unix::ffi::OsStrExt;
    Path::new(std::ffi::OsStr::from_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};

    /// The archive our builder writes is what GNU tar extracts: temp names, modes,
    /// mtimes, nested dirs; a file that shrank while read is padded and flagged.
    #[test]
    fn archive_extracts_with_local_tar() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("a"), "hello").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(src.join("a"), std::fs::Permissions::from_mode(0o640)).unwrap();
        let out = d.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        let mut child = Command::new("tar")
            .args(["-x", "-p", "--no-same-owner", "-f", "-", "-C"])
            .arg(&out)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut b = tar::Builder::new(stdin);
        let never = std::sync::atomic::AtomicBool::new(false);
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o750);
        h.set_size(0);
        b.append_data(&mut h, "sub dir", std::io::empty()).unwrap();
        let a = src.join("a");
        let o = send_file(&mut b, b"sub dir/.hostsync-tmp.1", &plain(&a), &never).unwrap();
        assert!(matches!(&o, Outcome::Stored { meta, .. } if meta.size == 5));
        let hello = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        assert!(matches!(o, Outcome::Stored { sha256, .. } if sha256 == hello));
        b.into_inner().unwrap();
        assert!(child.wait().unwrap().success());
        let got = out.join("sub dir/.hostsync-tmp.1");
        assert_eq!(std::fs::read(&got).unwrap(), b"hello");
        let meta = std::fs::metadata(&got).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(meta.mode() & 0o7777, 0o640);
        assert_eq!(
            meta.mtime(),
            std::fs::metadata(src.join("a")).unwrap().mtime()
        );
        assert_eq!(
            std::fs::metadata(out.join("sub dir")).unwrap().mode() & 0o7777,
            0o750
        );

        // A reader that runs short is padded and flagged.
        let mut f = File::open(src.join("a")).unwrap();
        let mut r = Exact {
            file: &mut f,
            left: 8,
            torn: false,
            cancel: &never,
        };
        let mut buf = Vec::new();
        r.read_to_end(&mut buf).unwrap();
        assert_eq!(buf, b"hello\0\0\0");
        assert!(r.torn);
    }

    /// Issue 14, bug 4: GNU tar keeps the nanoseconds of a file's mtime, which a
    /// pax record carries (also ahead of a GNU long name); a whole second needs none.
    #[test]
    fn extracted_files_keep_nanosecond_mtimes() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let long = "n".repeat(150);
        let at = |secs, nanos| std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos);
        let files = [
            ("short", at(1_700_000_000, 123_456_789)),
            (long.as_str(), at(1_700_000_000, 600_000_001)),
            ("whole", at(1_700_000_001, 0)),
        ];
        for (name, mtime) in &files {
            let p = d.path().join(name);
            std::fs::write(&p, "x").unwrap();
            File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(*mtime)
                .unwrap();
        }
        let out = d.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        let mut child = Command::new("tar")
            .args(["-x", "-p", "--no-same-owner", "-f", "-", "-C"])
            .arg(&out)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let mut b = tar::Builder::new(child.stdin.take().unwrap());
        let never = AtomicBool::new(false);
        for (name, _) in &files {
            let p = d.path().join(name);
            let o = send_file(&mut b, name.as_bytes(), &plain(&p), &never).unwrap();
            assert!(matches!(o, Outcome::Stored { .. }), "{name}");
        }
        b.into_inner().unwrap();
        assert!(child.wait().unwrap().success());
        for (name, mtime) in &files {
            let got = std::fs::metadata(out.join(name)).unwrap();
            let want = std::fs::metadata(d.path().join(name)).unwrap();
            assert_eq!(
                (got.mtime(), got.mtime_nsec()),
                (want.mtime(), want.mtime_nsec())
            );
            assert_eq!(got.modified().unwrap(), *mtime, "{name}");
        }
        let whole = FileMeta::of(&std::fs::metadata(d.path().join("whole")).unwrap());
        assert_eq!(pax_mtime(&whole), None);
    }

    /// An archive as [`upload`] writes it: one file under its temporary name and,
    /// with `records`, the commit records as the last member.
    fn archive(tmp: &str, body: &[u8], records_name: &[u8], records: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(body.len() as u64);
        b.append_data(&mut h, tmp, body).unwrap();
        if !records.is_empty() {
            append_records(&mut b, records_name, records).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// Runs `sh -c SCRIPT ARGS...` locally, as sshd would, with `path` as PATH and
    /// `input` on stdin.
    fn sh_c(script: &[u8], args: &[&[u8]], path: &str, input: &[u8]) -> std::process::Output {
        use std::io::Write as _;
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(std::ffi::OsStr::from_bytes(script))
            .args(args.iter().map(|a| std::ffi::OsStr::from_bytes(a)))
            .env("PATH", path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The script may stop reading early (a broken stream), as a remote may.
        match child.stdin.take().unwrap().write_all(input) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other.unwrap(),
        }
        child.wait_with_output().unwrap()
    }

    /// A local file to send as the tests send one: whatever is there, not following a
    /// link, every mode bit kept.
    fn plain(path: &Path) -> crate::local::ToSend<'_> {
        crate::local::ToSend {
            path,
            expect: None,
            follow: false,
            mode_mask: 0o7777,
        }
    }

    /// The temporary names of a test run.
    fn test_names() -> super::super::runs::Names {
        super::super::runs::Names {
            client: "0123abcd".into(),
            run: "00112233445566ff".into(),
        }
    }

    /// Runs [`REMOTE`] locally and reads its output as [`upload`] does.
    fn run_remote(
        root: &Path,
        name: &[u8],
        input: &[u8],
        path: &str,
    ) -> (i32, Option<ScriptOutput>) {
        let args: [&[u8]; 4] = [
            b"sh",
            root.as_os_str().as_bytes(),
            name,
            COMMIT_PERL.as_bytes(),
        ];
        let out = sh_c(REMOTE.as_bytes(), &args, path, input);
        let (status, _, commit) = parse_output(&out.stdout, &out.stderr).unwrap();
        (status, commit)
    }

    /// The stream's own exec commits what the records say, only after tar succeeded
    /// and only where perl exists; the records file never stays behind.
    #[test]
    fn stream_commits_in_the_same_exec() {
        use super::super::remote::{Commit, commit_records};
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let dest = root.join("conf");
        std::fs::write(&dest, "old").unwrap();
        let tmp = ".hostsync-tmp.conf";
        let name = commit_file_name(&test_names());
        assert!(
            super::super::remote::is_tmp_name(&name),
            "a leftover must read as stale"
        );
        let step = |dest: &Path| Commit::Rename {
            tmp: root.join(tmp).as_os_str().as_bytes().to_vec(),
            dest: dest.as_os_str().as_bytes().to_vec(),
            backups: 0,
        };
        let records = commit_records(&[step(&dest), step(&root.join("missing-dir/x"))]);
        let leftovers = || {
            std::fs::read_dir(root)
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_name().as_bytes() == name.as_slice())
                .count()
        };
        let path = std::env::var("PATH").unwrap();

        // tar fails after it extracted the records (the archive breaks off in a
        // member after them): nothing is committed, and the records are removed.
        let mut b = tar::Builder::new(Vec::new());
        append_records(&mut b, &name, &records).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(10_000);
        b.append_data(&mut h, tmp, &[7u8; 10_000][..]).unwrap();
        let mut broken = b.into_inner().unwrap();
        broken.truncate(broken.len() - 9_000);
        let (tar_status, commit) = run_remote(root, &name, &broken, &path);
        assert_ne!(tar_status, 0);
        assert!(commit.is_none());
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        assert_eq!(leftovers(), 0);

        // No perl on the remote: extracted, not committed; the caller commits with sh.
        let nobin = tempfile::tempdir().unwrap();
        for tool in ["tar", "rm", "head", "cat"] {
            let found = Command::new("/bin/sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .unwrap();
            let at = String::from_utf8(found.stdout).unwrap();
            std::os::unix::fs::symlink(at.trim(), nobin.path().join(tool)).unwrap();
        }
        let input = archive(tmp, b"new", &name, &records);
        let (tar_status, commit) = run_remote(root, &name, &input, nobin.path().to_str().unwrap());
        assert_eq!(tar_status, 0);
        assert!(commit.is_none(), "no perl, so no commit");
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        assert_eq!(std::fs::read(root.join(tmp)).unwrap(), b"new");
        assert_eq!(leftovers(), 0);

        // Normal case: renamed into place; the second step's failure is reported.
        let (tar_status, commit) = run_remote(root, &name, &input, &path);
        assert_eq!(tar_status, 0);
        let commit = commit.expect("the commit ran");
        assert_eq!(commit.status, 0);
        assert_eq!(std::fs::read(&dest).unwrap(), b"new");
        assert!(!root.join(tmp).exists());
        let failures = super::super::remote::parse_failures(&commit.stdout);
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert_eq!(failures[0].0, 1);
        assert!(
            failures[0].1.contains("rename into place failed"),
            "{failures:?}"
        );
        assert_eq!(leftovers(), 0);

        // No records: tar only.
        let (tar_status, commit) = run_remote(root, b"", &archive(tmp, b"x", b"", b""), &path);
        assert_eq!((tar_status, commit.is_none()), (0, true));
    }

    #[test]
    fn output_without_a_tar_status_is_an_error() {
        assert!(parse_output(b"", b"").is_err());
        assert!(parse_output(b"hello\n", b"").is_err());
        assert!(parse_output(b"tar-exit:0\nstray", b"").is_err());
        let (s, e, c) = parse_output(b"tar-exit:2\n", b"tar: x: Cannot open\n\0").unwrap();
        assert_eq!((s, c.is_none()), (2, true));
        assert_eq!(first_line(&e), "x: Cannot open");
        // The commit's stderr is what follows the NUL, tar's never reaches it.
        let (s, _, c) = parse_output(
            b"tar-exit:0\ncommit-exit:0\n",
            b"tar: a warning\n\0perl said\n",
        )
        .unwrap();
        assert_eq!((s, c.unwrap().stderr.as_str()), (0, "perl said\n"));
    }

    /// The listing that keeps its channel, run locally as `sh -c SCRIPT TOKEN`: the
    /// listing, the end record with the listing's stderr, then the line that picks a
    /// root, then the stream into that root and its commit, all on one stdin.
    #[test]
    fn listing_hands_its_channel_to_the_stream() {
        use super::super::remote::{
            Commit, ListRoot, commit_records, listing_end, listing_then_tar, parse_listing,
        };
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a root");
        let b = d.path().join("b's root");
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(b.join("old"), "old").unwrap();
        let root = |p: &Path| ListRoot {
            dir: p.as_os_str().as_bytes().to_vec(),
            max_depth: None,
            paths: None,
            checksum: false,
        };
        let roots = [root(&a), root(&b)];
        let script = listing_then_tar(
            &roots,
            true,
            true,
            REMOTE,
            COMMIT_PERL.as_bytes(),
            SPLIT_PERL.as_bytes(),
        );
        let token = "0123456789abcdef";
        let run_with_path = |input: &[u8], path: &str| {
            let out = sh_c(&script, &[token.as_bytes()], path, input);
            assert!(out.status.success(), "{out:?}");
            out.stdout
        };
        let run = |input: &[u8]| run_with_path(input, &std::env::var("PATH").unwrap());
        let split = |out: &[u8]| -> (Vec<u8>, Vec<u8>, Vec<u8>) {
            let end = listing_end(token);
            let at = out
                .windows(end.len())
                .position(|w| w == end)
                .expect("no end record");
            let rest = &out[at + end.len()..];
            let nul = rest.iter().position(|&c| c == 0).expect("no stderr field");
            (
                out[..at].to_vec(),
                rest[..nul].to_vec(),
                rest[nul + 1..].to_vec(),
            )
        };

        // Nothing to send: the listing (which made the missing root), then nothing.
        let (listing, stderr, after) = split(&run(b"none\n"));
        let parsed = parse_listing(&listing, 2).unwrap();
        assert!(a.is_dir(), "the listing makes missing roots");
        assert!(parsed.states[1].entries.contains_key(b"old".as_slice()));
        assert_eq!(parsed.tar, Some(true));
        assert_eq!(parsed.split, Some(true), "perl is there");
        assert!(stderr.is_empty(), "{}", String::from_utf8_lossy(&stderr));
        assert!(after.is_empty(), "{}", String::from_utf8_lossy(&after));

        // A stream into root 1 ("b's root"), with its commit.
        let name = commit_file_name(&test_names());
        let tmp = ".hostsync-tmp.new";
        let records = commit_records(&[Commit::Rename {
            tmp: b.join(tmp).as_os_str().as_bytes().to_vec(),
            dest: b.join("old").as_os_str().as_bytes().to_vec(),
            backups: 0,
        }]);
        let mut input = format!("tar 1 {}\n", String::from_utf8_lossy(&name)).into_bytes();
        input.extend(archive(tmp, b"new", &name, &records));
        let (_, _, after) = split(&run(&input));
        let (tar_status, _, commit) = parse_output(&after, b"").unwrap();
        assert_eq!(tar_status, 0);
        assert_eq!(commit.expect("the commit ran").status, 0);
        assert_eq!(std::fs::read(b.join("old")).unwrap(), b"new");
        assert!(!b.join(tmp).exists() && !b.join(std::ffi::OsStr::from_bytes(&name)).exists());

        // The listing's stderr comes back in the end record: a `find` that complains
        // first on stderr (a wrapper ahead of the real one on PATH).
        let bin = d.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let real = Command::new("/bin/sh")
            .args(["-c", "command -v find"])
            .output()
            .unwrap();
        let real = String::from_utf8(real.stdout).unwrap();
        std::fs::write(
            bin.join("find"),
            format!(
                "#!/bin/sh\necho 'find: cannot read it' >&2\nexec {} \"$@\"\n",
                real.trim()
            ),
        )
        .unwrap();
        std::fs::set_permissions(bin.join("find"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
        let (listing, stderr, _) = split(&run_with_path(b"", &path));
        assert_eq!(
            String::from_utf8_lossy(&stderr),
            "find: cannot read it\nfind: cannot read it"
        );
        assert!(
            parse_listing(&listing, 2).unwrap().states[1]
                .entries
                .contains_key(b"old".as_slice())
        );
    }

    /// `n` local files under `src` (sizes from empty to several frames) and the
    /// members that send them below `a/` and `b/` under temporary names, as push does.
    fn split_members(src: &Path, n: usize) -> Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> {
        (0..n)
            .map(|i| {
                let dir = if i < n / 2 { "a" } else { "b" };
                let body: Vec<u8> = (0..(i * 7919) % (3 * FRAME))
                    .map(|k| (k % 251) as u8)
                    .collect();
                let local = src.join(format!("f{i}"));
                std::fs::write(&local, &body).unwrap();
                (
                    format!("{dir}/.hostsync-tmp.f{i}").into_bytes(),
                    format!("{dir}/f{i}").into_bytes(),
                    body,
                )
            })
            .collect()
    }

    /// A split stream, run through [`REMOTE`] with [`SPLIT_PERL`] as the remote runs
    /// it: both archives are extracted (directory modes from archive 0), and the
    /// commit runs once, after both tars. A stream cut short, or a frame that names
    /// no tar, commits nothing.
    #[test]
    fn split_stream_extracts_with_two_tars_and_commits_once() {
        use super::super::remote::{Commit, commit_records};
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        let files = split_members(&src, 40);
        let locals: Vec<std::path::PathBuf> = (0..files.len())
            .map(|i| src.join(format!("f{i}")))
            .collect();
        let mut members = vec![
            Member::Dir {
                rel: b"a",
                mode: 0o750,
            },
            Member::Dir {
                rel: b"b",
                mode: 0o755,
            },
        ];
        for ((tmp, _, body), local) in files.iter().zip(&locals) {
            members.push(Member::File {
                rel: tmp.clone(),
                local: plain(local),
                size: body.len() as u64,
            });
        }
        assert!(worth_splitting(&members) || std::env::var("HOSTSYNC_SPLIT").is_ok());
        let lanes = share_out(&members);
        assert!(lanes.iter().all(|l| !l.is_empty()), "{lanes:?}");

        let stream = |root: &Path, name: &[u8]| -> Vec<u8> {
            let seen = std::cell::RefCell::new(Vec::new());
            let never = AtomicBool::new(false);
            let (out, outcomes, records) = stream_split(
                Vec::new(),
                &members,
                |outcomes| {
                    let steps: Vec<Commit> = files
                        .iter()
                        .zip(outcomes)
                        .filter(|(_, o)| matches!(o, Outcome::Stored { .. }))
                        .map(|((tmp, dest, _), _)| Commit::Rename {
                            tmp: [root.as_os_str().as_bytes(), b"/", tmp].concat(),
                            dest: [root.as_os_str().as_bytes(), b"/", dest].concat(),
                            backups: 0,
                        })
                        .collect();
                    commit_records(&steps)
                },
                &|k| seen.borrow_mut().push(k),
                &never,
                name,
            )
            .unwrap();
            assert!(!records.is_empty());
            assert!(outcomes.iter().all(|o| matches!(o, Outcome::Stored { .. })));
            let mut seen = seen.into_inner();
            seen.sort_unstable();
            assert_eq!(seen, (0..files.len()).collect::<Vec<_>>(), "each file once");
            out
        };
        let run = |root: &Path, name: &[u8], input: &[u8]| {
            let args: [&[u8]; 6] = [
                b"sh",
                root.as_os_str().as_bytes(),
                name,
                COMMIT_PERL.as_bytes(),
                b"2",
                SPLIT_PERL.as_bytes(),
            ];
            let out = sh_c(
                REMOTE.as_bytes(),
                &args,
                &std::env::var("PATH").unwrap(),
                input,
            );
            let (status, tar_stderr, commit) = parse_output(&out.stdout, &out.stderr).unwrap();
            (status, first_line(&tar_stderr), commit)
        };
        let name = commit_file_name(&test_names());

        // Both tars make new directories at once, many times over: the race of
        // issue 12 (see `share_out`) failed about 1 round in 10 before the fix.
        for round in 0..200 {
            let good = d.path().join(format!("good{round}"));
            std::fs::create_dir_all(&good).unwrap();
            let (tar_status, why, commit) = run(&good, &name, &stream(&good, &name));
            assert_eq!(tar_status, 0, "round {round}: {why}");
            assert_eq!(commit.expect("the commit ran").status, 0);
            for (_, dest, body) in &files {
                let got = good.join(std::ffi::OsStr::from_bytes(dest));
                assert_eq!(&std::fs::read(&got).unwrap(), body, "{}", got.display());
            }
            let left: Vec<_> = ["", "a", "b"]
                .iter()
                .flat_map(|dir| std::fs::read_dir(good.join(dir)).unwrap())
                .map(|e| e.unwrap().file_name())
                .filter(|n| n.as_bytes().starts_with(TMP_PREFIX.as_bytes()))
                .collect();
            assert!(left.is_empty(), "temporaries left: {left:?}");
            let mode = |p: &str| {
                std::fs::metadata(good.join(p))
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o777
            };
            assert_eq!((mode("a"), mode("b")), (0o750, 0o755));
        }
        let good = d.path().join("good0");

        for (why, said, broken) in [
            (
                "cut short",
                "split stream: the stream ended inside a frame",
                {
                    let mut s = stream(&good, &name);
                    s.truncate(s.len() - 1000);
                    s
                },
            ),
            // Both archives whole, only the end frame missing: still not complete.
            (
                "cut at a frame's end",
                "split stream: the stream ended before its end frame",
                {
                    let mut s = stream(&good, &name);
                    s.truncate(s.len() - 5);
                    s
                },
            ),
            (
                "a frame for a third tar",
                "split stream: a frame names no tar (2)",
                {
                    let mut s = stream(&good, &name);
                    s.splice(0..0, [2u8, 0, 0, 0, 1, 0]);
                    s
                },
            ),
        ] {
            let root = d.path().join(why);
            std::fs::create_dir_all(&root).unwrap();
            let (tar_status, first, commit) = run(&root, &name, &broken);
            assert_ne!(tar_status, 0, "{why}");
            assert_eq!(first, said, "{why}");
            assert!(commit.is_none(), "{why}");
            for (_, dest, _) in &files {
                assert!(
                    !root.join(std::ffi::OsStr::from_bytes(dest)).exists(),
                    "{why}"
                );
            }
        }
    }

    /// Directories first, in every archive; files in two runs of about equal cost; a
    /// small batch or one with a directory its owner cannot write is not split.
    #[test]
    fn split_shares_work_evenly_and_only_when_it_pays() {
        let local = Path::new("/nonexistent");
        let file = |size| Member::File {
            rel: b"x".to_vec(),
            local: plain(local),
            size,
        };
        let mut members = vec![Member::Dir {
            rel: b"a",
            mode: 0o755,
        }];
        members.extend((0..200).map(|_| file(4096)));
        members.insert(
            101,
            Member::Dir {
                rel: b"b",
                mode: 0o700,
            },
        );
        let lanes = share_out(&members);
        assert_eq!(lanes[0][..2], [0, 101], "directories first");
        assert_eq!(
            lanes[1][..2],
            [0, 101],
            "every archive makes every directory"
        );
        assert_eq!((lanes[0].len(), lanes[1].len()), (102, 102));
        assert!(worth_splitting(&members));
        assert!(!worth_splitting(&members[..50]), "too little work");
        members.push(Member::Dir {
            rel: b"c",
            mode: 0o500,
        });
        assert!(!worth_splitting(&members), "a read-only directory");
        // One big file and many small ones: the big one is half the work alone.
        let mut members = vec![file(64 << 20)];
        members.extend((0..100).map(|_| file(10)));
        let lanes = share_out(&members);
        assert_eq!((lanes[0].len(), lanes[1].len()), (1, 100));
    }
}
