//! Reading a local file to send it, the same way for every transport (the
//! agent's frames, the SCP sink, the tar stream): opened without following a
//! symlink (unless asked), only if it is still the file the scan saw (issue 13),
//! hashed on the way, and at the end compared with what it was when opened, so a
//! file that changed while it was read is never reported as sent.

use std::io::Read as _;
use std::path::Path;

use super::{FileMeta, hex};

/// Why a local file is not sent now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unsendable {
    /// It no longer exists: nothing to send (an editor's temporary renamed away).
    Vanished,
    /// It is no longer what the scan saw (another file, a symlink now): scan again.
    Changed,
    /// It exists but cannot be read: the reason.
    Unreadable(String),
}

/// What to read for one upload: the path, the file the scan saw there, whether a
/// symlink there is followed, and which mode bits the remote copy keeps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ToSend<'a> {
    /// The local path.
    pub(crate) path: &'a Path,
    /// The file as scanned (`None`: whatever is there now, on a retry).
    pub(crate) expect: Option<&'a FileMeta>,
    /// Follow a symlink at `path` (a file src, or `"follow_symlinks": true`).
    pub(crate) follow: bool,
    /// The mode bits kept (`0o1777` drops setuid and setgid; see
    /// [`crate::config::Mapping::file_mode`]).
    pub(crate) mode_mask: u32,
}

impl ToSend<'_> {
    /// Opens it (see [`open_for_send`]); the attributes returned carry the mode the
    /// remote copy gets.
    pub(crate) fn open(&self) -> Result<(Opened, FileMeta), Unsendable> {
        let (file, mut meta) = open_for_send(self.path, self.expect, self.follow)?;
        meta.mode &= self.mode_mask;
        Ok((Opened::new(file), meta))
    }
}

/// A local file opened for sending: what is read through it is hashed on the way,
/// so a host's record of what it was sent carries the content's SHA-256
/// ([`crate::local::pushed`]) without the file being read twice.
pub(crate) struct Opened {
    /// The open file.
    file: std::fs::File,
    /// SHA-256 of every byte read so far.
    hasher: sha2::Sha256,
}

impl Opened {
    /// Wraps `file`, nothing read yet.
    pub(crate) fn new(file: std::fs::File) -> Opened {
        use sha2::Digest;
        Opened {
            file,
            hasher: sha2::Sha256::new(),
        }
    }

    /// The file's attributes now (to see whether it changed while it was read).
    pub(crate) fn metadata(&self) -> std::io::Result<std::fs::Metadata> {
        self.file.metadata()
    }

    /// Reads at `offset` without moving on or hashing (a delta's second pass over
    /// the file, issue 19).
    pub(crate) fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(&self.file, buf, offset)
    }

    /// SHA-256, lowercase hex, of what was read: the file's content once it was
    /// read to its end without changing.
    pub(crate) fn sha256(&self) -> String {
        use sha2::Digest;
        hex(&self.hasher.clone().finalize())
    }
}

impl std::io::Read for Opened {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let n = self.file.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Opens local file `path` for sending: without following a symlink at `path`
/// unless `follow`, and, with `expect`, only if it is still the file the scan saw
/// (same device and inode). Returns the file and its attributes now.
pub(crate) fn open_for_send(
    path: &Path,
    expect: Option<&FileMeta>,
    follow: bool,
) -> Result<(std::fs::File, FileMeta), Unsendable> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    if !follow {
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    } else {
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = match options.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Unsendable::Vanished),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(Unsendable::Changed),
        Err(e) => {
            return Err(Unsendable::Unreadable(format!(
                "cannot read local file: {e}"
            )));
        }
    };
    let meta = match file.metadata() {
        Ok(m) if m.is_file() => FileMeta::of(&m),
        Ok(_) => return Err(Unsendable::Changed),
        Err(e) => {
            return Err(Unsendable::Unreadable(format!(
                "cannot stat local file: {e}"
            )));
        }
    };
    if expect.is_some_and(|x| (x.dev, x.ino) != (meta.dev, meta.ino)) {
        return Err(Unsendable::Changed);
    }
    Ok((file, meta))
}

/// A local file being read for one upload ([`Reading::open`]): at most the size it
/// had when opened, in chunks, then [`Reading::finish`] says whether what was read
/// is the file.
pub(crate) struct Reading {
    /// The open file, hashed as it is read.
    file: Opened,
    /// Its attributes when opened (mode as the remote copy keeps it).
    before: FileMeta,
    /// Bytes of `before.size` not read yet.
    left: u64,
    /// Why it stopped short, if it did.
    trouble: Option<Finished>,
}

/// What reading a file to its end found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Finished {
    /// Read whole and unchanged: its attributes and content hash.
    Whole(FileMeta, String),
    /// It changed while it was read (shorter, or another size or mtime after).
    Changed,
    /// It could not be read or stat'ed: the reason.
    Unreadable(String),
}

impl Reading {
    /// Opens what `to` names (see [`open_for_send`]).
    pub(crate) fn open(to: &ToSend<'_>) -> Result<Reading, Unsendable> {
        let (file, before) = to.open()?;
        Ok(Reading {
            file,
            left: before.size,
            before,
            trouble: None,
        })
    }

    /// Its attributes when opened, the mode as the remote copy keeps it.
    pub(crate) fn meta(&self) -> &FileMeta {
        &self.before
    }

    /// Bytes of the size it was opened with that have not been read yet.
    pub(crate) fn owed(&self) -> u64 {
        self.left
    }

    /// Reads its next bytes into `buf` (at most what is owed); 0 once everything
    /// owed was read, or the file ended early or could not be read (a transport
    /// that announced the size then pads the rest, and [`Reading::finish`] says
    /// it changed).
    pub(crate) fn chunk(&mut self, buf: &mut [u8]) -> usize {
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        while want > 0 && self.trouble.is_none() {
            match self.file.read(&mut buf[..want]) {
                Ok(0) => self.trouble = Some(Finished::Changed),
                Ok(n) => {
                    self.left -= n as u64;
                    return n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let why = format!("cannot read local file: {e}");
                    self.trouble = Some(Finished::Unreadable(why));
                }
            }
        }
        0
    }

    /// Whether what was read is the file: all of it, and its size and mtime are
    /// still what they were when it was opened.
    pub(crate) fn finish(self) -> Finished {
        if let Some(t) = self.trouble {
            return t;
        }
        if self.left > 0 {
            return Finished::Changed;
        }
        match self.file.metadata() {
            Ok(m) if self.before.unchanged(&FileMeta::of(&m)) => {
                Finished::Whole(self.before, self.file.sha256())
            }
            Ok(_) => Finished::Changed,
            Err(e) => Finished::Unreadable(format!("cannot stat local file: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to_send(path: &Path) -> ToSend<'_> {
        ToSend {
            path,
            expect: None,
            follow: false,
            mode_mask: 0o7777,
        }
    }

    /// What a send reads is hashed on the way, to the file's digest, and a file
    /// read to its end unchanged is whole.
    #[test]
    fn a_file_read_whole_is_hashed_on_the_way() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, "12345").unwrap();
        let mut r = Reading::open(&to_send(&f)).unwrap();
        let mut buf = [0u8; 3];
        let mut got = Vec::new();
        loop {
            let n = r.chunk(&mut buf);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!((got.as_slice(), r.owed()), (&b"12345"[..], 0));
        match r.finish() {
            Finished::Whole(meta, sha) => {
                assert_eq!(meta.size, 5);
                assert_eq!(sha, super::super::sha256_hex(&f).unwrap());
            }
            other => panic!("{other:?}"),
        }
    }

    /// A file that shrinks while it is read stops short and changed; one that is
    /// rewritten to the same size with a new mtime changed too.
    #[test]
    fn a_file_that_changes_while_read_is_never_whole() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, vec![b'x'; 10_000]).unwrap();
        let mut r = Reading::open(&to_send(&f)).unwrap();
        let mut buf = [0u8; 4096];
        assert_eq!(r.chunk(&mut buf), 4096);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&f)
            .unwrap()
            .set_len(5000)
            .unwrap();
        assert_eq!(r.chunk(&mut buf), 904);
        assert_eq!(r.chunk(&mut buf), 0, "short: nothing more");
        assert_eq!(r.owed(), 5000);
        assert_eq!(r.finish(), Finished::Changed);

        std::fs::write(&f, "abc").unwrap();
        let mut r = Reading::open(&to_send(&f)).unwrap();
        assert_eq!(r.chunk(&mut buf), 3);
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_eq!(r.finish(), Finished::Changed);
    }
}
