//! One `watch` daemon per configuration (issue 17): an `flock` on
//! `<log_path>/watch.pid`, held for the daemon's life and released by the kernel
//! when it dies, so a file left by a crashed daemon never blocks a restart. The
//! file says who holds it: the pid on the first line, config.ini's canonical path
//! on the second. `hostsync status` asks the same lock whether a daemon runs.

use std::io::{Read as _, Seek as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The lock file's name in the log folder.
pub(crate) const PID_FILE: &str = "watch.pid";

/// The running daemon's hold on its configuration; released when dropped.
#[derive(Debug)]
pub(crate) struct Instance {
    /// The open, locked pid file.
    _file: std::fs::File,
}

/// Who holds a lock: the pid and the config.ini it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    /// The daemon's process id.
    pub(crate) pid: u32,
    /// Its config.ini, canonical.
    pub(crate) config: PathBuf,
}

/// config.ini's canonical path (as given when it cannot be resolved).
pub(crate) fn canonical(config: &Path) -> PathBuf {
    std::fs::canonicalize(config).unwrap_or_else(|_| config.to_path_buf())
}

/// Takes the lock for `config` in `log_dir` (made if missing). An `Err` (exit 2)
/// names the pid that holds it: a daemon on the same config.ini, whatever its
/// `--host`, or on another config.ini that shares this log_path.
pub(crate) fn acquire(log_dir: &Path, config: &Path) -> Result<Instance> {
    let path = log_dir.join(PID_FILE);
    std::fs::create_dir_all(log_dir)
        .with_context(|| format!("cannot create log_path {}", log_dir.display()))?;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    if !try_lock(&file) {
        let holder = read_holder(&mut file);
        let config = canonical(config);
        bail!("{}", refusal(&path, &config, holder.as_ref()));
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| {
            let me = canonical(config);
            writeln!(file, "{}\n{}", std::process::id(), me.display())
        })
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Instance { _file: file })
}

/// The one-line refusal when `path` is held (by `holder`, if it could be read).
fn refusal(path: &Path, config: &Path, holder: Option<&Holder>) -> String {
    match holder {
        Some(h) if h.config == config => format!(
            "another hostsync watch (pid {}) is already running for {}; stop it first (one daemon per config.ini, whatever its --host)",
            h.pid,
            config.display()
        ),
        Some(h) => format!(
            "{}: log_path is in use by hostsync watch (pid {}) for {}; give each config.ini its own log_path",
            path.display(),
            h.pid,
            h.config.display()
        ),
        None => format!(
            "{}: another hostsync watch holds this lock; stop it first",
            path.display()
        ),
    }
}

/// The daemon running for `config` with its logs in `log_dir`, if one is: the
/// lock is held and names that config.ini.
pub(crate) fn running(log_dir: &Path, config: &Path) -> Option<Holder> {
    let mut file = std::fs::File::open(log_dir.join(PID_FILE)).ok()?;
    if try_lock(&file) {
        return None; // free: nobody runs (the kernel releases it on drop)
    }
    read_holder(&mut file).filter(|h| h.config == canonical(config))
}

/// Tries an exclusive, non-blocking flock on `file`.
fn try_lock(file: &std::fs::File) -> bool {
    // SAFETY: a valid open fd.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Reads `PID\nCONFIG\n` from the start of `file`.
fn read_holder(file: &mut std::fs::File) -> Option<Holder> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.take(8192).read_to_string(&mut text).ok()?;
    parse(&text)
}

/// `PID\nCONFIG\n` as a [`Holder`].
fn parse(text: &str) -> Option<Holder> {
    let mut lines = text.lines();
    let pid = lines.next()?.trim().parse().ok()?;
    let config = PathBuf::from(lines.next()?);
    Some(Holder { pid, config })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second hold on the same folder is refused with the first one's pid; once
    /// the first is dropped (as when its process dies) it is free again.
    #[test]
    fn one_holder_at_a_time_and_a_dead_one_never_blocks() {
        let d = tempfile::tempdir().unwrap();
        let cfg = d.path().join("config.ini");
        std::fs::write(&cfg, "").unwrap();
        let logs = d.path().join("logs");
        let first = acquire(&logs, &cfg).unwrap();
        let me = std::process::id();
        assert_eq!(
            running(&logs, &cfg),
            Some(Holder {
                pid: me,
                config: canonical(&cfg)
            })
        );
        // flock locks are per open file, so a second open in this process conflicts.
        let e = acquire(&logs, &cfg).unwrap_err().to_string();
        assert!(e.contains(&format!("pid {me}")), "{e}");
        assert!(e.contains("already running"), "{e}");
        let other = d.path().join("other.ini");
        std::fs::write(&other, "").unwrap();
        let e = acquire(&logs, &other).unwrap_err().to_string();
        assert!(e.contains("give each config.ini its own log_path"), "{e}");
        assert_eq!(running(&logs, &other), None);
        drop(first);
        assert_eq!(running(&logs, &cfg), None, "the file alone does not count");
        let _again = acquire(&logs, &cfg).unwrap();
        assert_eq!(parse("12\n/x\n").unwrap().pid, 12);
        assert_eq!(parse("garbage"), None);
    }
}
