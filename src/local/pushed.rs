//! What was last pushed to each host: a small local record per host, so that a sync
//! can tell two edits of one second apart where the remote cannot (issue 14, bug 4).
//!
//! A file is skipped when the remote copy has its size, mode and mtime. Most
//! remotes keep mtimes to the nanosecond (the agent, GNU tar) or the microsecond
//! (OpenSSH's scp), and [`crate::exec::push`] compares at that precision. A remote that
//! keeps whole seconds (an old file system, a perl without Time::HiRes, a copy an
//! older hostsync or another tool made) shows the same second with no fraction, and
//! then this record decides, instead of reading the remote copy back: the file is
//! skipped when the record says this host was sent exactly this size and
//! mtime-to-the-nanosecond, or content with the same SHA-256; otherwise it is sent.
//! Without a record for the path (the first run, a deleted record) such a file is
//! skipped, as rsync does. `sync --checksum` compares content and needs no record.
//!
//! The record is `<log_path>/pushed/<ip_address>`, text, one line per remote file
//! that a run confirmed sent: `SHA256 SIZE MTIME.NANOSECONDS PATH` (the remote path,
//! with `\`, control characters and bytes that are not UTF-8 written as `\xNN`),
//! after one comment line. A removal (`"delete": true`) or a symlink put in a file's
//! place drops the lines at and below that path. A run loads the record only when a
//! comparison needs it, and saves once, at its end: under an flock of
//! `<ip_address>.lock` it reads the file again, applies its own changes in order,
//! writes `<ip_address>.new` and renames that over the record, so a reader sees the
//! old or the new record, never part of one, and two runs on one configuration
//! (a `sync` beside a `watch`) keep each other's lines. A line that cannot be read
//! is ignored; a record that cannot be written is a warning (the next run may then
//! skip a file edited within one second, as rsync would).

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::local::FileMeta;

/// The first line of every record file.
const HEADER: &str =
    "# hostsync: what was last pushed to this host (issue 14); SHA256 SIZE MTIME.NS PATH";

/// What one remote file was last sent: its size, the local mtime it had, its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    /// Size in bytes.
    pub(crate) size: u64,
    /// The local file's mtime, whole seconds.
    pub(crate) mtime: i64,
    /// The local file's mtime, nanosecond part.
    pub(crate) mtime_nsec: i64,
    /// SHA-256 of the content sent, lowercase hex.
    pub(crate) sha256: String,
}

impl Record {
    /// The record of a file sent with attributes `meta` and content `sha256`.
    pub(crate) fn sent(meta: &FileMeta, sha256: &str) -> Record {
        Record {
            size: meta.size,
            mtime: meta.mtime,
            mtime_nsec: meta.mtime_nsec,
            sha256: sha256.to_string(),
        }
    }

    /// Whether a local file with `meta` is, by size and mtime to the nanosecond, the
    /// file this record was made of.
    pub(crate) fn same_file(&self, meta: &FileMeta) -> bool {
        (self.size, self.mtime, self.mtime_nsec) == (meta.size, meta.mtime, meta.mtime_nsec)
    }
}

/// One change a run makes to the record, applied in order when it is saved.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    /// The remote path was sent this.
    Set(Vec<u8>, Record),
    /// The remote path, and everything below it, holds no file hostsync sent.
    Forget(Vec<u8>),
}

/// One host's record, as one run (a `sync` of that host, one `watch` round) uses it.
#[derive(Debug)]
pub(crate) struct Pushed {
    /// The record file.
    file: PathBuf,
    /// The lines of the file as the run first needed them (loaded on first use).
    known: std::cell::OnceCell<HashMap<Vec<u8>, Record>>,
    /// This run's changes, in order.
    changes: Vec<Change>,
}

impl Pushed {
    /// The record of host `address` in `dir` (`<log_path>/pushed`); nothing is read yet.
    pub(crate) fn open(dir: &Path, address: &str) -> Pushed {
        Pushed {
            file: dir.join(address),
            known: std::cell::OnceCell::new(),
            changes: Vec::new(),
        }
    }

    /// What remote path `remote` was last sent, as the record said when the run
    /// first asked.
    pub(crate) fn get(&self, remote: &[u8]) -> Option<&Record> {
        self.known.get_or_init(|| load(&self.file)).get(remote)
    }

    /// Notes that `remote` was sent `record`.
    pub(crate) fn set(&mut self, remote: Vec<u8>, record: Record) {
        self.changes.push(Change::Set(remote, record));
    }

    /// Notes that `remote` and everything below it no longer hold a file hostsync sent.
    pub(crate) fn forget(&mut self, remote: Vec<u8>) {
        self.changes.push(Change::Forget(remote));
    }

    /// Applies this run's changes to the record file (see the module doc); a run
    /// that changed nothing writes nothing. An `Err` says why the file could not be
    /// written, with its path.
    pub(crate) fn save(&mut self) -> std::io::Result<()> {
        let file = &self.file;
        if self.changes.is_empty() {
            return Ok(());
        }
        let with_path =
            |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", file.display()));
        let dir = file.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(with_path)?;
        let _lock = lock(&sibling(file, "lock")).map_err(with_path)?;
        let mut entries = load(file);
        for change in self.changes.drain(..) {
            apply(&mut entries, change);
        }
        let new = sibling(file, "new");
        write(&new, &entries).map_err(with_path)?;
        std::fs::rename(&new, file).map_err(with_path)
    }
}

/// `file` with `.suffix` appended to its name (`10.0.0.1` → `10.0.0.1.lock`;
/// `Path::with_extension` would replace the `.1`).
fn sibling(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    file.with_file_name(name)
}

/// Applies one change to the entries.
fn apply(entries: &mut HashMap<Vec<u8>, Record>, change: Change) {
    match change {
        Change::Set(path, record) => {
            entries.insert(path, record);
        }
        Change::Forget(path) => {
            entries.retain(|p, _| !(p == &path || is_below(p, &path)));
        }
    }
}

/// True when `path` lies strictly below directory `dir` (absolute, `/`-separated).
fn is_below(path: &[u8], dir: &[u8]) -> bool {
    let dir = dir.strip_suffix(b"/").unwrap_or(dir);
    path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/'
}

/// Takes an exclusive flock on `path` (created if missing), held until the file is dropped.
fn lock(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::fd::AsRawFd as _;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    // SAFETY: flock(2) on a descriptor this function owns.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(f)
}

/// The record file's entries; a missing or unreadable file is an empty record, and a
/// line that does not parse is left out.
fn load(file: &Path) -> HashMap<Vec<u8>, Record> {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return HashMap::new(),
        Err(e) => {
            log::warn!("{}: cannot read what was last pushed: {e}", file.display());
            return HashMap::new();
        }
    };
    let mut entries = HashMap::new();
    for line in bytes.split(|&b| b == b'\n') {
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        match parse_line(line) {
            Some((path, record)) => {
                entries.insert(path, record);
            }
            None => log::debug!(
                "{}: ignoring a line that does not parse: {}",
                file.display(),
                crate::escape::escape(line)
            ),
        }
    }
    entries
}

/// Writes the entries to `path`, sorted, so the file diffs well. Not fsynced: a
/// record lost in a crash only means a later run knows less (see the module doc),
/// and `watch` saves after every round.
fn write(path: &Path, entries: &HashMap<Vec<u8>, Record>) -> std::io::Result<()> {
    let mut sorted: Vec<(&Vec<u8>, &Record)> = entries.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = Vec::with_capacity(64 + sorted.len() * 128);
    out.extend_from_slice(HEADER.as_bytes());
    out.push(b'\n');
    for (p, r) in sorted {
        out.extend_from_slice(line(p, r).as_bytes());
        out.push(b'\n');
    }
    std::fs::File::create(path)?.write_all(&out)
}

/// One line: `SHA256 SIZE MTIME.NS PATH`.
fn line(path: &[u8], r: &Record) -> String {
    format!(
        "{} {} {}.{:09} {}",
        r.sha256,
        r.size,
        r.mtime,
        r.mtime_nsec,
        encode(path)
    )
}

/// Parses [`line()`]'s format.
fn parse_line(line: &[u8]) -> Option<(Vec<u8>, Record)> {
    let text = std::str::from_utf8(line).ok()?;
    let mut f = text.splitn(4, ' ');
    let sha256 = f.next()?;
    let size = f.next()?.parse().ok()?;
    let (secs, nanos) = f.next()?.split_once('.')?;
    let path = decode(f.next()?)?;
    let ok =
        sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()) && nanos.len() == 9;
    ok.then_some(())?;
    Some((
        path,
        Record {
            size,
            mtime: secs.parse().ok()?,
            mtime_nsec: nanos.parse().ok()?,
            sha256: sha256.to_string(),
        },
    ))
}

/// A path as one line of text: valid UTF-8 stays as it is, except that `\` and
/// control characters, like bytes that are not UTF-8, become `\xNN` (reversible).
fn encode(path: &[u8]) -> String {
    let mut out = String::with_capacity(path.len());
    let hex = |out: &mut String, bytes: &[u8]| {
        for b in bytes {
            out.push_str(&format!("\\x{b:02x}"));
        }
    };
    for chunk in path.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' || c.is_control() {
                hex(&mut out, c.encode_utf8(&mut [0; 4]).as_bytes());
            } else {
                out.push(c);
            }
        }
        hex(&mut out, chunk.invalid());
    }
    out
}

/// The bytes [`encode`] wrote; `None` for a malformed escape.
fn decode(text: &str) -> Option<Vec<u8>> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            let hex = text
                .get(i + 2..i + 4)
                .filter(|_| b.get(i + 1) == Some(&b'x'))?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(size: u64, nsec: i64, sha: char) -> Record {
        Record {
            size,
            mtime: 1_700_000_000,
            mtime_nsec: nsec,
            sha256: sha.to_string().repeat(64),
        }
    }

    /// Any remote name survives a line of the file, which stays one line.
    #[test]
    fn paths_round_trip_through_one_line() {
        for p in [
            &b"/srv/www/index.html"[..],
            b"/a b/caf\xc3\xa9",
            b"/x\\y\nz\r\x1b[2J\x7f",
            b"/bad\xff\xfeutf8",
            b"/c1\xc2\x85control",
        ] {
            let text = line(p, &record(3, 5, 'a'));
            assert!(
                !text.contains('\n') && !text.chars().any(char::is_control),
                "{text}"
            );
            assert_eq!(
                parse_line(text.as_bytes()),
                Some((p.to_vec(), record(3, 5, 'a')))
            );
        }
        assert_eq!(encode("/a b/café".as_bytes()), "/a b/café");
        for bad in [
            "zz 1 2.000000000 /p",
            "x 1 2 /p",
            &format!("{} 1 2.5 /p", "a".repeat(64)),
        ] {
            assert_eq!(parse_line(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(decode("/a\\x"), None);
    }

    /// Saved changes are read back; a forgotten tree goes with what is below it; two
    /// runs that saved one after the other keep each other's lines.
    #[test]
    fn saves_merge_and_forget_trees() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("pushed");
        let mut first = Pushed::open(&dir, "10.0.0.1");
        assert_eq!(first.get(b"/w/a"), None);
        let mut second = Pushed::open(&dir, "10.0.0.1");
        assert_eq!(second.get(b"/w/a"), None, "loaded before the first save");
        first.set(b"/w/a".to_vec(), record(1, 1, 'a'));
        first.set(b"/w/sub/b".to_vec(), record(2, 2, 'b'));
        first.set(b"/w/subway".to_vec(), record(3, 3, 'c'));
        first.save().unwrap();
        second.set(b"/w/c".to_vec(), record(4, 4, 'd'));
        second.save().unwrap();
        let again = Pushed::open(&dir, "10.0.0.1");
        assert_eq!(again.get(b"/w/a"), Some(&record(1, 1, 'a')));
        assert_eq!(again.get(b"/w/c"), Some(&record(4, 4, 'd')));
        let mut third = Pushed::open(&dir, "10.0.0.1");
        third.forget(b"/w/sub".to_vec());
        third.set(b"/w/a".to_vec(), record(5, 5, 'e'));
        third.save().unwrap();
        let after = Pushed::open(&dir, "10.0.0.1");
        assert_eq!(after.get(b"/w/sub/b"), None);
        assert_eq!(after.get(b"/w/subway"), Some(&record(3, 3, 'c')));
        assert_eq!(after.get(b"/w/a"), Some(&record(5, 5, 'e')));
        let text = std::fs::read_to_string(dir.join("10.0.0.1")).unwrap();
        assert!(text.starts_with("# hostsync"), "{text}");
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(!dir.join("10.0.0.1.new").exists());
        // Nothing changed: nothing written (the file keeps its time).
        let mut idle = Pushed::open(&dir, "10.0.0.2");
        idle.save().unwrap();
        assert!(!dir.join("10.0.0.2").exists());
    }

    #[test]
    fn same_file_is_size_and_mtime_to_the_nanosecond() {
        let meta = FileMeta {
            size: 4,
            mtime: 1_700_000_000,
            mtime_nsec: 100,
            atime: 0,
            mode: 0o644,
            dev: 0,
            ino: 0,
        };
        let r = Record::sent(&meta, &"a".repeat(64));
        assert!(r.same_file(&meta));
        assert!(!r.same_file(&FileMeta {
            mtime_nsec: 101,
            ..meta
        }));
        assert!(!r.same_file(&FileMeta { size: 5, ..meta }));
        assert!(is_below(b"/w/sub/b", b"/w/sub") && !is_below(b"/w/subway", b"/w/sub"));
        assert!(is_below(b"/w/x", b"/w/"));
    }
}
