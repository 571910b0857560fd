//! Per-test scratch directories.
//!
//! Every test gets its own uniquely named directory under the system temp dir
//! (`/tmp/hostsync-<name>-XXXXXX`). It holds everything the test needs: client
//! keys, sshd configs and logs, the local source tree and the "remote"
//! destination directories that the sshd test user writes into.
//!
//! The directory is removed when the [`Dir`] is dropped, unless the test is
//! failing and the environment variable `HOSTSYNC_KEEP_TMP` is set, in which
//! case it is kept and its path is printed so it can be inspected.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::sshd;

/// Environment variable that keeps the scratch directory of a failing test.
pub const KEEP_TMP_ENV: &str = "HOSTSYNC_KEEP_TMP";

/// A unique temporary directory for one test.
///
/// All relative paths given to its methods are interpreted relative to
/// [`Dir::path`]. Every method panics (with the offending path) on I/O errors,
/// since any such error is a broken test environment rather than a result.
pub struct Dir {
    /// `None` only while being dropped.
    inner: Option<tempfile::TempDir>,
}

impl Dir {
    /// Creates a fresh directory named after `name` (typically the test name).
    ///
    /// The root is chmod'ed to 0755 so that the unprivileged ssh test user
    /// (see [`sshd::TEST_USER`]) can traverse it.
    pub fn new(name: &str) -> Dir {
        let inner = tempfile::Builder::new()
            .prefix(&format!("hostsync-{name}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("creating temp dir for test {name}: {e}"));
        fs::set_permissions(inner.path(), fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod 0755 {}: {e}", inner.path().display()));
        Dir { inner: Some(inner) }
    }

    /// The absolute path of the directory.
    pub fn path(&self) -> &Path {
        self.inner
            .as_ref()
            .expect("Dir used while being dropped")
            .path()
    }

    /// `self.path().join(rel)`.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path().join(rel)
    }

    /// Writes `contents` to `rel`, creating missing parent directories.
    /// Returns the absolute path of the file.
    pub fn write(&self, rel: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("mkdir -p {}: {e}", parent.display()));
        }
        fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Creates directory `rel` and its missing parents (`mkdir -p`).
    /// Returns the absolute path of the directory.
    pub fn mkdir(&self, rel: impl AsRef<Path>) -> PathBuf {
        let path = self.join(rel);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir -p {}: {e}", path.display()));
        path
    }

    /// Reads the whole file `rel`.
    pub fn read(&self, rel: impl AsRef<Path>) -> Vec<u8> {
        let path = self.join(rel);
        fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    /// Recursively changes the owner of `rel` (and everything below it) to the
    /// ssh test user, so that the user can write there over SSH/SCP.
    ///
    /// Used for "remote" destination directories. Symlinks are not followed.
    /// When the tests do not run as root the test user is the current user,
    /// who already owns everything, so this is a no-op.
    pub fn chown_to_test_user(&self, rel: impl AsRef<Path>) {
        let root = self.join(rel);
        let Some((uid, gid)) = sshd::test_user_ids() else {
            return;
        };
        for entry in walkdir::WalkDir::new(&root) {
            let entry = entry.unwrap_or_else(|e| panic!("walking {}: {e}", root.display()));
            std::os::unix::fs::lchown(entry.path(), Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {uid}:{gid} {}: {e}", entry.path().display()));
        }
    }

    /// A recursive, sorted listing of the directory, one entry per line, as
    /// `<type><mode> <uid>:<gid> <size> <relative path>[ -> <link target>]`.
    ///
    /// Meant for failure messages, e.g. `assert!(ok, "{}", dir.listing())`.
    pub fn listing(&self) -> String {
        let mut out = format!("listing of {}:\n", self.path().display());
        let walker = walkdir::WalkDir::new(self.path())
            .min_depth(1)
            .sort_by_file_name();
        for entry in walker {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    let _ = writeln!(out, "  <error: {e}>");
                    continue;
                }
            };
            let rel = entry
                .path()
                .strip_prefix(self.path())
                .unwrap_or(entry.path());
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(e) => {
                    let _ = writeln!(out, "  ? {}: <error: {e}>", rel.display());
                    continue;
                }
            };
            let kind = if meta.is_dir() {
                'd'
            } else if meta.is_symlink() {
                'l'
            } else if meta.is_file() {
                '-'
            } else {
                '?'
            };
            let _ = write!(
                out,
                "  {kind}{:04o} {}:{} {:>8} {}",
                meta.mode() & 0o7777,
                meta.uid(),
                meta.gid(),
                meta.len(),
                rel.display()
            );
            if meta.is_symlink()
                && let Ok(target) = fs::read_link(entry.path())
            {
                let _ = write!(out, " -> {}", target.display());
            }
            out.push('\n');
        }
        out
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        if std::thread::panicking() {
            if std::env::var_os(KEEP_TMP_ENV).is_some() {
                let kept = inner.keep();
                eprintln!("{KEEP_TMP_ENV} is set: keeping {}", kept.display());
                return;
            }
            eprintln!(
                "removing {} (set {KEEP_TMP_ENV}=1 to keep it for inspection)",
                inner.path().display()
            );
        }
        // Otherwise `inner` is dropped here, which removes the directory.
    }
}

/// Names of hostsync temporaries (`.hostsync-tmp.*`) anywhere below `dir`.
pub fn temporaries(dir: &Path) -> Vec<String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| {
            std::os::unix::ffi::OsStrExt::as_bytes(e.file_name()).starts_with(b".hostsync-tmp.")
        })
        .map(|e| e.path().display().to_string())
        .collect()
}

/// Sets the mtime of `p` to `secs.nanos`.
pub fn set_mtime(p: &Path, secs: u64, nanos: u32) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos);
    fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(t)
        .unwrap();
}
