//! What happened on each host: counts, failures, and the summary printed at the end.
//!
//! Workers fill one [`HostReport`] per host; failures are logged to error.log as
//! they happen (one line each, starting with the host; under `watch`, whose
//! retries log a path when it starts failing and when it lands, see
//! [`HostReport::defer`]) and kept here for the summary and the exit code. Each thing that happens is also handed, as an
//! [`Event`], to the report's [`Observer`], which is how `sync` draws progress
//! bars, prints plain lines or JSON lines while it runs ([`crate::output`]).

use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::failure::Failure;
use crate::reconcile::render::Diff;

/// Something that happened on a host during a sync, as it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event<'a> {
    /// The plan: this many files with this many bytes are about to be uploaded.
    Planned { files: u64, bytes: u64 },
    /// One file's content went out (it is committed, or fails, later).
    Uploaded { bytes: u64 },
    /// A file or symlink arrived at `remote`; `why` it was sent (`new`, `size, mtime`,
    /// ...; see `push`), empty when not known.
    /// `bytes` went over the link; `reused` more came from the remote's old copy
    /// (a delta, issue 19; 0 for a whole file).
    Sent {
        local: &'a str,
        remote: &'a str,
        bytes: u64,
        reused: u64,
        why: &'a str,
    },
    /// `remote` was removed because `local` is gone (`"delete": true`).
    Removed { local: &'a str, remote: &'a str },
    /// A file or mapping failed.
    Failed { what: &'a str, reason: &'a str },
    /// The whole host failed (unreachable, auth, host key).
    HostFailed { reason: &'a str },
    /// A post_sync command ran (`status` is `None` when it could not be started).
    PostSync {
        mapping: &'a str,
        command: &'a str,
        status: Option<i32>,
    },
    /// Everything for this host is done; the report is final.
    Finished { report: &'a HostReport },
}

/// The callback type an [`Observer`] wraps: host address and event.
pub(crate) type ObserverFn = dyn Fn(&str, &Event<'_>) + Send + Sync;

/// Receives a report's events; the default observes nothing. Reports compare
/// equal whatever their observers.
#[derive(Clone, Default)]
pub(crate) struct Observer {
    /// The callback, if any.
    f: Option<Arc<ObserverFn>>,
}

impl Observer {
    /// An observer calling `f` for every event.
    pub(crate) fn new(f: impl Fn(&str, &Event<'_>) + Send + Sync + 'static) -> Observer {
        Observer {
            f: Some(Arc::new(f)),
        }
    }

    /// Hands `event` of `host` to the callback, if any.
    fn emit(&self, host: &str, event: &Event<'_>) {
        if let Some(f) = &self.f {
            f(host, event);
        }
    }
}

impl PartialEq for Observer {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Observer {}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.f.is_some() {
            "Observer(..)"
        } else {
            "Observer(none)"
        })
    }
}

/// The outcome of one host's run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HostReport {
    /// The host's address as configured.
    pub(crate) address: String,
    /// Files and symlinks that arrived.
    pub(crate) sent: u64,
    /// Files already up to date.
    pub(crate) skipped: u64,
    /// Remote paths removed because they are gone locally (`"delete": true`).
    pub(crate) removed: u64,
    /// Files or mappings that did not arrive, and post_sync commands that failed.
    pub(crate) failed: u64,
    /// Bytes of file content that arrived.
    pub(crate) bytes: u64,
    /// The host could not be served at all (unreachable, auth, host key): the reason.
    pub(crate) fatal: Option<String>,
    /// What kind of failure `fatal` is.
    pub(crate) fatal_kind: Option<Failure>,
    /// The host was not served on purpose: why (`no mapping file mappings/IP.json`).
    /// Not a failure (issue 14, bug 6).
    pub(crate) skip: Option<String>,
    /// One line per failure, without the host prefix.
    pub(crate) errors: Vec<String>,
    /// The kind of each line of `errors`.
    pub(crate) kinds: Vec<Failure>,
    /// `sync --dry-run`: the differences found (nothing was changed).
    pub(crate) diffs: Vec<Diff>,
    /// Who hears about each event as it happens.
    pub(crate) observer: Observer,
    /// Each failure as (what, reason), in the order of `errors`.
    pub(crate) failures: Vec<(String, String)>,
    /// Set by `watch`: failures that its retries take care of ([`retried`]) are
    /// not logged here; the daemon logs when a path starts failing and when it
    /// lands, not once per retry (issue 17).
    pub(crate) defer: bool,
}

/// Whether `watch` retries a failure of `what` until it lands: every file or
/// mapping, not a post_sync command (run again only when something changes).
pub(crate) fn retried(what: &str) -> bool {
    !what.starts_with("post_sync ")
}

impl HostReport {
    /// An empty report for `address`.
    pub(crate) fn new(address: &str) -> HostReport {
        HostReport {
            address: address.to_string(),
            ..HostReport::default()
        }
    }

    /// An empty report for `address` whose events go to `observer`.
    pub(crate) fn observed(address: &str, observer: Observer) -> HostReport {
        HostReport {
            observer,
            ..HostReport::new(address)
        }
    }

    /// Hands an event to the observer (nothing is counted or logged).
    pub(crate) fn event(&self, event: Event<'_>) {
        self.observer.emit(&self.address, &event);
    }

    /// Records and logs a failure of one file or mapping, of `kind`.
    pub(crate) fn fail(&mut self, kind: Failure, what: &str, reason: &str) {
        if !(self.defer && retried(what)) {
            log::error!("{}: {what}: {reason}", self.address);
        }
        self.failed += 1;
        self.errors.push(format!("{what}: {reason}"));
        self.failures.push((what.to_string(), reason.to_string()));
        self.kinds.push(kind);
        self.event(Event::Failed { what, reason });
    }

    /// Records and logs that the whole host failed (its kind: [`Failure::of_host`]).
    pub(crate) fn fail_host(&mut self, reason: &str) {
        log::error!("{}: {reason}", self.address);
        self.fatal = Some(reason.to_string());
        self.fatal_kind = Some(Failure::of_host(reason));
        self.event(Event::HostFailed { reason });
    }

    /// Records and logs a file or symlink that arrived.
    /// `why`: why it was sent, for `sync -v`; with debug lines on (`-v`), info.log's
    /// line says it too, in the same words (issue 14).
    pub(crate) fn sent_file(&mut self, local: &str, remote: &str, bytes: u64, why: &str) {
        self.sent_delta(local, remote, bytes, 0, why);
    }

    /// [`HostReport::sent_file`] for a file of which `reused` bytes came from the
    /// remote's old copy and `bytes` went over the link (a delta, issue 19).
    pub(crate) fn sent_delta(
        &mut self,
        local: &str,
        remote: &str,
        bytes: u64,
        reused: u64,
        why: &str,
    ) {
        let why = if log::log_enabled!(log::Level::Debug) {
            why
        } else {
            ""
        };
        log::info!(
            "{}: sent {local} -> {remote} {}",
            self.address,
            amount(bytes, reused, why)
        );
        self.sent += 1;
        self.bytes += bytes;
        self.event(Event::Sent {
            local,
            remote,
            bytes,
            reused,
            why,
        });
    }

    /// Records and logs a remote path removed because it is gone locally.
    pub(crate) fn removed_path(&mut self, local: &str, remote: &str) {
        log::info!("{}: removed {remote} ({local} is gone)", self.address);
        self.removed += 1;
        self.event(Event::Removed { local, remote });
    }

    /// True when everything for this host arrived.
    pub(crate) fn ok(&self) -> bool {
        self.fatal.is_none() && self.failed == 0
    }
}

/// What a sent line says in parentheses: `(N bytes)`, `(N bytes, reused R bytes)`
/// for a delta, then `; why: WHY` when `why` is not empty.
pub(crate) fn amount(bytes: u64, reused: u64, why: &str) -> String {
    let mut out = format!("({bytes} bytes");
    if reused > 0 {
        let _ = write!(out, ", reused {reused} bytes");
    }
    if !why.is_empty() {
        let _ = write!(out, "; why: {why}");
    }
    out.push(')');
    out
}

/// Bytes for a person: `512 B`, `1.2 MiB`, `586 KiB` (binary units; one decimal
/// below 10, none above), at most 8 characters. Scripts get raw numbers instead.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    // Move up while the value would print as 1024 or more.
    while v.round() >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if v < 9.95 {
        format!("{v:.1} {}", UNITS[unit])
    } else {
        format!("{v:.0} {}", UNITS[unit])
    }
}

/// The table printed after `sync`: one row per host, then every failure. With
/// `human`, BYTES reads like `1.2 MiB` (a terminal); else it is the raw count.
pub(crate) fn summary(reports: &[HostReport], human: bool) -> String {
    let width = reports
        .iter()
        .map(|r| r.address.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:width$}  {:>6}  {:>7}  {:>7}  {:>6}  {:>12}  STATUS",
        "HOST", "SENT", "SKIPPED", "REMOVED", "FAILED", "BYTES"
    );
    for r in reports {
        let status = match (&r.fatal, &r.skip) {
            (Some(reason), _) => format!("failed: {}", crate::escape::controls(reason)),
            (None, _) if r.failed > 0 => "failed".to_string(),
            (None, Some(why)) => format!("skipped: {why}"),
            (None, None) => "ok".to_string(),
        };
        let _ = writeln!(
            out,
            "{:width$}  {:>6}  {:>7}  {:>7}  {:>6}  {:>12}  {status}",
            r.address,
            r.sent,
            r.skipped,
            r.removed,
            r.failed,
            if human {
                human_bytes(r.bytes)
            } else {
                r.bytes.to_string()
            }
        );
    }
    // Names and remote text may hold control characters (issue 13).
    for r in reports {
        for e in &r.errors {
            let _ = writeln!(out, "error: {}: {}", r.address, crate::escape::controls(e));
        }
    }
    out
}

/// The host summary as one JSON object (`sync --json`); see README, "JSON output".
pub(crate) fn json_summary(r: &HostReport) -> Value {
    let status = match (r.ok(), &r.skip) {
        (false, _) => "failed",
        (true, Some(_)) => "skipped",
        (true, None) => "ok",
    };
    json!({
        "type": "host",
        "host": r.address,
        "status": status,
        "sent": r.sent,
        "skipped": r.skipped,
        "removed": r.removed,
        "failed": r.failed,
        "bytes": r.bytes,
        "error": r.fatal,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole-host failure's kind, from the transport's own words.
    #[test]
    fn host_failures_have_kinds() {
        for (reason, kind) in [
            (
                "host unreachable: connect to port 22: Connection refused (os error 111)",
                Failure::Connection,
            ),
            ("ssh handshake timed out after 10 s", Failure::Connection),
            (
                "sending file data: Failure while draining incoming flow",
                Failure::Connection,
            ),
            (
                "auth failed for user deploy: tried publickey (refused)",
                Failure::Host,
            ),
            (
                "host key mismatch: the server offered ssh-ed25519 SHA256:x, which differs",
                Failure::Host,
            ),
            (
                "host key unknown: the server offered ssh-ed25519 SHA256:x, which is not in k",
                Failure::Host,
            ),
            (
                "cannot read the remote listing: bad root index (does the remote login shell print text",
                Failure::Host,
            ),
        ] {
            assert_eq!(Failure::of_host(reason), kind, "{reason}");
            let mut r = HostReport::new("h");
            r.fail_host(reason);
            assert_eq!(r.fatal_kind, Some(kind));
        }
        let mut r = HostReport::new("h");
        r.fail(Failure::Refused, "a -> /b", "Permission denied");
        r.fail(Failure::Local, "a", "cannot read local file");
        assert_eq!(r.kinds, [Failure::Refused, Failure::Local]);
        assert_eq!(r.errors.len(), r.kinds.len());
    }

    #[test]
    fn summary_has_a_row_per_host_and_every_error() {
        let mut a = HostReport::new("127.0.0.2");
        a.sent = 3;
        a.removed = 2;
        a.bytes = 12;
        let mut b = HostReport::new("127.0.0.3");
        b.failed = 1;
        b.errors
            .push("/x -> /y: permission denied on the remote".into());
        let c = HostReport {
            fatal: Some("host unreachable".into()),
            ..HostReport::new("::1")
        };
        let d = HostReport {
            skip: Some("no mapping file mappings/127.0.0.4.json".into()),
            ..HostReport::new("127.0.0.4")
        };
        assert!(a.ok() && !b.ok() && !c.ok() && d.ok());
        assert_eq!(json_summary(&d)["status"], "skipped");
        assert_eq!(json_summary(&a)["status"], "ok");
        let s = summary(&[a.clone(), b, c, d], false);
        assert!(
            s.contains("127.0.0.4       0        0        0       0             0  skipped: no mapping file mappings/127.0.0.4.json\n"),
            "{s}"
        );
        assert!(
            s.starts_with("HOST         SENT  SKIPPED  REMOVED  FAILED         BYTES  STATUS\n"),
            "{s}"
        );
        assert!(
            s.contains("127.0.0.2       3        0        2       0            12  ok"),
            "{s}"
        );
        assert!(s.contains("failed: host unreachable"), "{s}");
        assert!(
            s.contains("error: 127.0.0.3: /x -> /y: permission denied"),
            "{s}"
        );
    }

    #[test]
    fn bytes_for_people() {
        for (n, want) in [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1536, "1.5 KiB"),
            (10 * 1024 - 1, "10 KiB"),
            (600_000, "586 KiB"),
            (1_258_291, "1.2 MiB"),
            (1024 * 1024 - 1, "1.0 MiB"),
            (5 * 1024 * 1024 * 1024, "5.0 GiB"),
            (u64::MAX, "16 EiB"),
        ] {
            assert_eq!(human_bytes(n), want, "{n}");
            assert!(human_bytes(n).len() <= 8, "{n}");
        }
        let mut r = HostReport::new("h");
        r.bytes = 1_258_291;
        assert!(summary(&[r.clone()], true).contains("  1.2 MiB  ok"));
        assert!(summary(&[r], false).contains("  1258291  ok"));
    }

    #[test]
    fn events_reach_the_observer_and_json_summary_has_every_count() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let mut r = HostReport::observed(
            "h",
            Observer::new(move |host, e| s2.lock().unwrap().push(format!("{host} {e:?}"))),
        );
        r.sent_file("/l", "/r", 5, "new");
        r.removed_path("/l2", "/r2");
        r.fail(Failure::Refused, "/x", "bad");
        assert_eq!((r.sent, r.bytes, r.removed, r.failed), (1, 5, 1, 1));
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert!(seen[0].starts_with("h Sent"), "{seen:?}");
        let j = json_summary(&r);
        assert_eq!(j["type"], "host");
        assert_eq!(j["status"], "failed");
        assert_eq!(j["bytes"], 5);
        assert_eq!(j["error"], Value::Null);
        assert_eq!(
            r,
            HostReport {
                observer: Observer::default(),
                ..r.clone()
            }
        );
    }
}
