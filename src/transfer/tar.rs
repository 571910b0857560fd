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
//! committed by the same rename step; modes (`-p`) and mtimes are kept; owner
//! is the remote user (`--no-same-owner`). If the remote tar exits non-zero,
//! nothing from that stream is committed and the caller sends the same batch
//! again over SCP, which reports a reason per file. A file that changes while
//! it is read is padded to its announced size, flagged, and never committed.
//!
//! Used only when the remote has GNU tar or bsdtar (probed once per connection),
//! and not when the environment says `HOSTSYNC_TRANSFER=scp`.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result, anyhow, bail};

use super::remote::quote;
use super::scp::Outcome;
use super::ssh::Connection;
use crate::local::FileMeta;

/// Bytes buffered before a write to the channel (tar headers are 512 bytes each).
const BUFFER: usize = 256 * 1024;

/// A member to extract below the root.
pub enum Member<'a> {
    /// A directory (created, or its mode set), relative to the root.
    Dir { rel: &'a [u8], mode: u32 },
    /// A local file, stored at `rel` (a temporary name) below the root.
    File { rel: Vec<u8>, local: &'a Path },
}

/// Streams `members` into `tar -x` below `root`. Returns one outcome per `File`
/// member in order, or `Ok(None)` when the remote tar failed (nothing may be
/// committed; send the batch another way). `Err` means the connection broke.
pub fn upload(
    conn: &Connection,
    root: &[u8],
    members: &[Member<'_>],
) -> Result<Option<Vec<Outcome>>> {
    let root =
        String::from_utf8(quote(root)).map_err(|_| anyhow!("remote path is not valid UTF-8"))?;
    // Run under sh whatever the login shell is; tar's stderr is dropped so a flood of
    // errors can never fill the channel and stall the upload (SCP gives the reasons).
    let command = format!(
        "sh -c {} {root}",
        String::from_utf8(quote(
            br#"tar -x -p --no-same-owner -f - -C "$0" 2>/dev/null; echo "tar-exit:$?""#
        ))
        .expect("ASCII")
    );
    log::debug!(
        "tar stream of {} member(s) into {}",
        members.len(),
        String::from_utf8_lossy(root.as_bytes())
    );
    let started = std::time::Instant::now();
    let channel = conn.exec(&command)?;
    let cancel = conn.cancel_flag();
    let mut builder = tar::Builder::new(BufWriter::with_capacity(BUFFER, channel));
    let mut outcomes = Vec::new();
    for m in members {
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
            }
            Member::File { rel, local } => {
                outcomes.push(send_file(&mut builder, rel, local, &cancel)?);
            }
        }
    }
    let mut channel = builder
        .into_inner()
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .context("sending to the remote tar")?;
    channel.send_eof().context("closing the tar stream")?;
    let mut out = String::new();
    channel
        .read_to_string(&mut out)
        .context("reading the remote tar's status")?;
    channel.wait_close().context("closing the tar channel")?;
    log::debug!(
        "tar stream: {} ms, remote said {:?}",
        started.elapsed().as_millis(),
        out.trim()
    );
    match out.trim().strip_prefix("tar-exit:") {
        Some("0") => Ok(Some(outcomes)),
        Some(code) => {
            log::debug!("remote tar exited with {code}; falling back to scp for this batch");
            Ok(None)
        }
        None => bail!("the remote tar gave no status (output {out:?})"),
    }
}

/// Appends one file; a file that cannot be read is a failed outcome, not an error.
fn send_file<W: Write>(
    builder: &mut tar::Builder<W>,
    rel: &[u8],
    local: &Path,
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<Outcome> {
    let file = match File::open(local) {
        Ok(f) => f,
        Err(e) => return Ok(Outcome::Failed(format!("cannot read local file: {e}"))),
    };
    let before = match file.metadata() {
        Ok(m) if m.is_file() => FileMeta::of(&m),
        Ok(_) => {
            return Ok(Outcome::Failed(
                "local path is no longer a regular file".into(),
            ));
        }
        Err(e) => return Ok(Outcome::Failed(format!("cannot stat local file: {e}"))),
    };
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(before.mode);
    h.set_size(before.size);
    h.set_mtime(before.mtime.max(0) as u64);
    let mut reader = Exact {
        file: &file,
        left: before.size,
        torn: false,
        cancel,
    };
    builder
        .append_data(&mut h, bytes_path(rel), &mut reader)
        .context("sending to the remote tar")?;
    if cancel.load(Ordering::Relaxed) {
        bail!("transfer cancelled by shutdown");
    }
    let after = file.metadata().map(|m| FileMeta::of(&m)).ok();
    let unchanged = after.is_some_and(|a| {
        a.size == before.size && a.mtime == before.mtime && a.mtime_nsec == before.mtime_nsec
    });
    Ok(if reader.torn || !unchanged {
        Outcome::Changed
    } else {
        Outcome::Stored { meta: before }
    })
}

/// Reads exactly `left` bytes: pads with zeros if the file shrank, stops if it grew.
struct Exact<'a> {
    /// The open local file.
    file: &'a File,
    /// Bytes still owed to the archive.
    left: u64,
    /// The file had fewer bytes than announced.
    torn: bool,
    /// Shutdown: end the member early (the stream is abandoned anyway).
    cancel: &'a std::sync::atomic::AtomicBool,
}

impl Read for Exact<'_> {
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
            (&*self.file).read(&mut buf[..want])?
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
        let o = send_file(&mut b, b"sub dir/.hostsync-tmp.1", &src.join("a"), &never).unwrap();
        assert!(matches!(o, Outcome::Stored { meta } if meta.size == 5));
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
        let f = File::open(src.join("a")).unwrap();
        let mut r = Exact {
            file: &f,
            left: 8,
            torn: false,
            cancel: &never,
        };
        let mut buf = Vec::new();
        r.read_to_end(&mut buf).unwrap();
        assert_eq!(buf, b"hello\0\0\0");
        assert!(r.torn);
    }
}
