//! Which runs of this client are alive, and the names of their remote temporaries.
//!
//! Every remote temporary is named `.hostsync-tmp.CLIENT.RUN.N`: CLIENT says which
//! machine and configuration made it ([`crate::config::client_id`]), RUN which
//! session of it (random, so nobody can plant a link at a name before it is
//! used). Where the agent serves a host, the run holds a lock on the remote for
//! its life (agent.pl). Hosts without perl cannot hold one, so a run also holds a
//! lock here, `<log_path>/runs/RUN.lock` (flock, released by the kernel when the
//! process dies), and a temporary found on such a host is removed only when it is
//! this client's and its run's lock here is free, or when it is a day old
//! ([`removable`]). Never another pusher's live temporary (issue 13).

use std::path::{Path, PathBuf};

use super::TMP_PREFIX;

/// How old a temporary of another client (or of an older version) must be before
/// it is removed: its run is surely over.
pub(crate) const STALE_AFTER_S: i64 = 24 * 3600;

/// The names of one run's temporaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Names {
    /// This client's id (8 hex digits).
    pub(crate) client: String,
    /// This run's id (16 hex digits).
    pub(crate) run: String,
}

impl Names {
    /// The temporary for `name` in the same directory: the same for the same name in
    /// one run (so the upload and the commit agree on it), unpredictable to others.
    pub(crate) fn for_name(&self, name: &[u8]) -> Vec<u8> {
        // FNV-1a, 64 bit: short, and stable within the run.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in name {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{TMP_PREFIX}{}.{}.{h:016x}", self.client, self.run).into_bytes()
    }

    /// The temporary path for destination path `dest`: same directory.
    pub(crate) fn for_path(&self, dest: &[u8]) -> Vec<u8> {
        let cut = dest.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
        let mut p = dest[..cut].to_vec();
        p.extend_from_slice(&self.for_name(&dest[cut..]));
        p
    }
}

/// `.hostsync-tmp.CLIENT.RUN.REST` split into CLIENT and RUN, if `name` has that form.
pub(crate) fn parse(name: &[u8]) -> Option<(&str, &str)> {
    let rest = std::str::from_utf8(name.strip_prefix(TMP_PREFIX.as_bytes())?).ok()?;
    let mut parts = rest.splitn(3, '.');
    let (client, run, _) = (parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(client, 8) && hex(run, 16)).then_some((client, run))
}

/// This process's hold on a run id: the lock file `<dir>/RUN.lock`, removed on drop.
#[derive(Debug)]
pub(crate) struct RunLock {
    /// The lock file.
    path: PathBuf,
    /// Its open file, holding the flock.
    _file: std::fs::File,
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Takes the lock of run `run` in `dir` (made if missing). `None` when that fails
/// (an unwritable log folder): then no run of this client counts as dead, and only
/// day-old temporaries are removed on hosts without perl.
pub(crate) fn hold(dir: &Path, run: &str) -> Option<RunLock> {
    use std::os::fd::AsRawFd;
    std::fs::create_dir_all(dir).ok()?;
    let path = dir.join(format!("{run}.lock"));
    let file = std::fs::File::create(&path).ok()?;
    // SAFETY: a valid open fd.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return None;
    }
    Some(RunLock { path, _file: file })
}

/// Whether run `run` of this client is alive: its lock file in `dir` is held.
pub(crate) fn alive(dir: &Path, run: &str) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(file) = std::fs::File::open(dir.join(format!("{run}.lock"))) else {
        return false;
    };
    // SAFETY: a valid open fd.
    let free = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    !free
}

/// Whether a temporary `name` with mtime `mtime` (seconds), found on a host without
/// perl, may be removed by a run of client `client` at time `now`, given which runs
/// are alive (`alive`, this client's only). A directory planted at such a name is
/// never removed (the caller checks the kind).
pub(crate) fn removable(
    name: &[u8],
    mtime: i64,
    now: i64,
    client: &str,
    alive: &dyn Fn(&str) -> bool,
) -> bool {
    match parse(name) {
        Some((c, run)) if c == client => !alive(run),
        _ => now - mtime >= STALE_AFTER_S,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_client_and_run_and_parse_back() {
        let n = Names {
            client: "0123abcd".into(),
            run: "00112233445566ff".into(),
        };
        let t = n.for_name(b"conf.txt");
        assert_eq!(t, n.for_name(b"conf.txt"));
        assert_ne!(t, n.for_name(b"other"));
        assert!(t.starts_with(b".hostsync-tmp.0123abcd.00112233445566ff."));
        assert!(n.for_name(&[b'a'; 255]).len() < 60);
        assert_eq!(parse(&t), Some(("0123abcd", "00112233445566ff")));
        assert_eq!(
            parse(b".hostsync-tmp.0123456789abcdef"),
            None,
            "an older version's"
        );
        assert_eq!(parse(b"conf.txt"), None);
        assert_eq!(
            n.for_path(b"/srv/www/a.html"),
            [&b"/srv/www/"[..], &n.for_name(b"a.html")].concat()
        );
    }

    #[test]
    fn only_dead_runs_of_this_client_and_day_old_others_are_removed() {
        let now = 1_000_000;
        let live = |run: &str| run == "aaaaaaaaaaaaaaaa";
        let t = |c: &str, r: &str| format!(".hostsync-tmp.{c}.{r}.1").into_bytes();
        let ours = "0123abcd";
        assert!(!removable(
            &t(ours, "aaaaaaaaaaaaaaaa"),
            now,
            now,
            ours,
            &live
        ));
        assert!(removable(
            &t(ours, "bbbbbbbbbbbbbbbb"),
            now,
            now,
            ours,
            &live
        ));
        assert!(!removable(
            &t("99999999", "bbbbbbbbbbbbbbbb"),
            now,
            now,
            ours,
            &live
        ));
        assert!(removable(
            &t("99999999", "bbbbbbbbbbbbbbbb"),
            now - STALE_AFTER_S,
            now,
            ours,
            &live
        ));
        assert!(!removable(
            b".hostsync-tmp.0123456789abcdef",
            now - 60,
            now,
            ours,
            &live
        ));
    }

    #[test]
    fn a_held_run_is_alive_until_dropped() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("runs");
        assert!(!alive(&dir, "00112233445566ff"));
        let lock = hold(&dir, "00112233445566ff").expect("lock");
        assert!(alive(&dir, "00112233445566ff"));
        drop(lock);
        assert!(!alive(&dir, "00112233445566ff"));
        assert!(!dir.join("00112233445566ff.lock").exists());
    }
}
