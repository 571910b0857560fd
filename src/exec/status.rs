//! `<log_path>/status.json`: what the `watch` daemon is doing, per host, for
//! `hostsync status` and for monitoring (issue 17; operators wire lsyncd's status
//! file into Zabbix).
//!
//! The live workers put each host's state on a shared [`Board`] whenever it
//! changes; one thread (`status`) writes the file from it, atomically (a
//! temporary in the same folder, renamed over it), at most every
//! [`MIN_INTERVAL`], so a burst of changes costs a few writes a second. States:
//! `ok`, `catching-up` (work pending or in flight), `down` (unreachable, retried
//! with backoff), `failing` (reached, but some paths refused, retried).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The file's name in the log folder.
pub(crate) const STATUS_FILE: &str = "status.json";

/// The shortest time between two writes of the file.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(250);

/// One host's row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HostStatus {
    /// The address as configured.
    pub(crate) host: String,
    /// `ok`, `catching-up`, `down` or `failing`.
    pub(crate) state: String,
    /// Changes not delivered yet (a pending full reconcile counts as one).
    pub(crate) pending: u64,
    /// The paths that fail now, with why.
    pub(crate) failing: Vec<Failing>,
    /// When a round last reached the host and ended (RFC 3339, UTC); `None` before.
    pub(crate) last_ok: Option<String>,
    /// Bytes of file content sent since the daemon started.
    pub(crate) bytes: u64,
}

/// A path that fails, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Failing {
    /// `local -> remote` (or a mapping).
    pub(crate) path: String,
    /// The latest reason.
    pub(crate) reason: String,
}

/// The daemon's line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Daemon {
    /// Its process id.
    pub(crate) pid: u32,
    /// When it started (RFC 3339, UTC).
    pub(crate) started: String,
    /// Its config.ini, canonical.
    pub(crate) config: String,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Status {
    /// One row per host, in config order.
    pub(crate) hosts: Vec<HostStatus>,
    /// The daemon.
    pub(crate) daemon: Daemon,
}

/// What the workers update and the writer thread reads.
struct Inner {
    /// The current status.
    status: Status,
    /// Changed since the last write.
    dirty: bool,
    /// Set at shutdown: write once more and stop.
    done: bool,
    /// Per host number, whether it is in the configuration in force (a host a
    /// reload removed keeps its number and row, left out of the file).
    shown: Vec<bool>,
}

/// The shared status: workers [`Board::set`] rows; [`Board::start_writer`] writes them.
pub(crate) struct Board {
    /// The state, and a condition the writer waits on.
    inner: Mutex<Inner>,
    /// Signalled on every change.
    changed: Condvar,
}

impl Board {
    /// A board for `hosts` (all `catching-up`: the daemon starts with a full
    /// reconcile), for the daemon `daemon`.
    pub(crate) fn new(hosts: &[String], daemon: Daemon) -> Arc<Board> {
        let status = Status {
            hosts: hosts.iter().map(|h| new_row(h)).collect(),
            daemon,
        };
        Arc::new(Board {
            inner: Mutex::new(Inner {
                status,
                dirty: true,
                done: false,
                shown: vec![true; hosts.len()],
            }),
            changed: Condvar::new(),
        })
    }

    /// Sets host `idx`'s row; a row equal to the current one changes nothing.
    pub(crate) fn set(&self, idx: usize, row: HostStatus) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = inner.status.hosts.get_mut(idx)
            && *r != row
        {
            *r = row;
            inner.dirty = true;
            self.changed.notify_one();
        }
    }

    /// After a reload (SIGHUP): `hosts` are the host numbers in force with their
    /// addresses. A number new to the board gets a `catching-up` row (its full
    /// reconcile is on the way); a number not in `hosts` is left out of the file.
    pub(crate) fn follow(&self, hosts: &[(usize, String)]) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *inner;
        inner.shown.iter_mut().for_each(|s| *s = false);
        for (h, address) in hosts {
            while inner.status.hosts.len() <= *h {
                inner.status.hosts.push(new_row(address));
                inner.shown.push(false);
            }
            inner.shown[*h] = true;
        }
        inner.dirty = true;
        self.changed.notify_one();
    }

    /// What the file says now: the rows of the hosts in force.
    fn snapshot(inner: &Inner) -> Status {
        let hosts = (inner.status.hosts.iter().zip(&inner.shown))
            .filter(|(_, shown)| **shown)
            .map(|(row, _)| row.clone())
            .collect();
        Status {
            hosts,
            daemon: inner.status.daemon.clone(),
        }
    }

    /// Starts the `status` thread writing `dir/status.json` on every change, at
    /// most every [`MIN_INTERVAL`]; [`Writer::stop`] writes the last state and joins.
    pub(crate) fn start_writer(self: &Arc<Board>, dir: &Path) -> std::io::Result<Writer> {
        let board = self.clone();
        let path = dir.join(STATUS_FILE);
        let thread = std::thread::Builder::new()
            .name("status".into())
            .spawn(move || board.write_loop(&path))?;
        Ok(Writer {
            board: self.clone(),
            thread,
        })
    }

    /// The writer's loop: waits for a change, writes, waits out the interval.
    fn write_loop(&self, path: &Path) {
        let mut failed = false;
        loop {
            let (status, done) = {
                let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
                while !inner.dirty && !inner.done {
                    inner = self.changed.wait(inner).unwrap_or_else(|e| e.into_inner());
                }
                inner.dirty = false;
                (Board::snapshot(&inner), inner.done)
            };
            match write_atomically(path, &status) {
                Ok(()) => failed = false,
                Err(e) if !failed => {
                    failed = true;
                    log::error!("cannot write {}: {e}", path.display());
                }
                Err(_) => {}
            }
            if done {
                return;
            }
            std::thread::sleep(MIN_INTERVAL);
        }
    }
}

/// The row of a host before its first round: `catching-up`, its full reconcile pending.
fn new_row(address: &str) -> HostStatus {
    HostStatus {
        host: address.to_string(),
        state: "catching-up".into(),
        pending: 1,
        failing: Vec::new(),
        last_ok: None,
        bytes: 0,
    }
}

/// The `status` thread, to be stopped at shutdown.
pub(crate) struct Writer {
    /// The board it writes.
    board: Arc<Board>,
    /// The thread.
    thread: std::thread::JoinHandle<()>,
}

impl Writer {
    /// Writes the last state and joins the thread.
    pub(crate) fn stop(self) {
        {
            let mut inner = self.board.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.done = true;
            self.board.changed.notify_one();
        }
        if self.thread.join().is_err() {
            log::error!("the status thread panicked; this is a bug in hostsync");
        }
    }
}

/// Writes `status` to `path` through a temporary in the same folder and a rename,
/// so a reader sees the old file or the new one, never part of one.
fn write_atomically(path: &Path, status: &Status) -> std::io::Result<()> {
    let tmp: PathBuf = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Reads `dir/status.json`.
pub(crate) fn read(dir: &Path) -> anyhow::Result<Status> {
    let path = dir.join(STATUS_FILE);
    let text = std::fs::read(&path)?;
    Ok(serde_json::from_slice(&text)?)
}

/// Now as RFC 3339 in UTC, whole seconds: `2026-12-01T15:04:19Z`.
pub(crate) fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    rfc3339(secs)
}

/// Unix seconds as RFC 3339 in UTC (Howard Hinnant's days-to-civil algorithm).
fn rfc3339(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_137_459), "2026-12-01T15:04:19Z");
    }

    /// The writer writes the board's state, and its last state at stop.
    #[test]
    fn the_writer_keeps_the_file_current() {
        let d = tempfile::tempdir().unwrap();
        let daemon = Daemon {
            pid: 1,
            started: rfc3339(0),
            config: "/c/config.ini".into(),
        };
        let board = Board::new(&["h1".to_string(), "h2".to_string()], daemon);
        let writer = board.start_writer(d.path()).unwrap();
        let row = HostStatus {
            host: "h2".into(),
            state: "failing".into(),
            pending: 2,
            failing: vec![Failing {
                path: "/a -> /b".into(),
                reason: "no space left on device".into(),
            }],
            last_ok: Some(rfc3339(60)),
            bytes: 5,
        };
        board.set(1, row.clone());
        writer.stop();
        let got = read(d.path()).unwrap();
        assert_eq!(got.hosts[1], row);
        assert_eq!(got.hosts[0].state, "catching-up");
        assert_eq!(got.daemon.pid, 1);
        assert!(!d.path().join("status.json.tmp").exists());
    }

    /// A reload's hosts: a removed number leaves the file, a new one joins it as
    /// `catching-up`, and the rows of the others stay as the workers set them.
    #[test]
    fn a_reload_adds_and_hides_rows_by_host_number() {
        let d = tempfile::tempdir().unwrap();
        let daemon = Daemon {
            pid: 1,
            started: rfc3339(0),
            config: "/c/config.ini".into(),
        };
        let board = Board::new(&["h1".to_string(), "h2".to_string()], daemon);
        let mut ok = new_row("h2");
        ok.state = "ok".into();
        ok.pending = 0;
        board.set(1, ok.clone());
        board.follow(&[(1, "h2".into()), (2, "h3".into())]);
        let writer = board.start_writer(d.path()).unwrap();
        writer.stop();
        let got = read(d.path()).unwrap();
        let hosts: Vec<&str> = got.hosts.iter().map(|h| h.host.as_str()).collect();
        assert_eq!(hosts, ["h2", "h3"]);
        assert_eq!(got.hosts[0], ok);
        assert_eq!(got.hosts[1].state, "catching-up");
    }
}
