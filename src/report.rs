//! What happened on each host: counts, failures, and the summary printed at the end.
//!
//! Workers fill one [`HostReport`] per host; failures are logged to error.log as
//! they happen (one line each, starting with the host) and kept here for the
//! summary and the exit code.

use std::fmt::Write as _;

/// The outcome of one host's run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostReport {
    /// The host's address as configured.
    pub address: String,
    /// Files and symlinks that arrived.
    pub sent: u64,
    /// Files already up to date.
    pub skipped: u64,
    /// Remote paths removed because they are gone locally (`"delete": true`).
    pub removed: u64,
    /// Files or mappings that did not arrive.
    pub failed: u64,
    /// Bytes of file content that arrived.
    pub bytes: u64,
    /// The host could not be served at all (unreachable, auth, host key): the reason.
    pub fatal: Option<String>,
    /// One line per failure, without the host prefix.
    pub errors: Vec<String>,
}

impl HostReport {
    /// An empty report for `address`.
    pub fn new(address: &str) -> HostReport {
        HostReport {
            address: address.to_string(),
            ..HostReport::default()
        }
    }

    /// Records and logs a failure of one file or mapping.
    pub fn fail(&mut self, what: &str, reason: &str) {
        log::error!("{}: {what}: {reason}", self.address);
        self.failed += 1;
        self.errors.push(format!("{what}: {reason}"));
    }

    /// Records and logs that the whole host failed.
    pub fn fail_host(&mut self, reason: &str) {
        log::error!("{}: {reason}", self.address);
        self.fatal = Some(reason.to_string());
    }

    /// True when everything for this host arrived.
    pub fn ok(&self) -> bool {
        self.fatal.is_none() && self.failed == 0
    }
}

/// The table printed after `sync`: one row per host, then every failure.
pub fn summary(reports: &[HostReport]) -> String {
    let width = reports
        .iter()
        .map(|r| r.address.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:width$}  {:>6}  {:>7}  {:>6}  {:>12}  STATUS",
        "HOST", "SENT", "SKIPPED", "FAILED", "BYTES"
    );
    for r in reports {
        let status = match &r.fatal {
            Some(reason) => format!("failed: {reason}"),
            None if r.failed > 0 => "failed".to_string(),
            None => "ok".to_string(),
        };
        let _ = writeln!(
            out,
            "{:width$}  {:>6}  {:>7}  {:>6}  {:>12}  {status}",
            r.address, r.sent, r.skipped, r.failed, r.bytes
        );
    }
    for r in reports {
        for e in &r.errors {
            let _ = writeln!(out, "error: {}: {e}", r.address);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_has_a_row_per_host_and_every_error() {
        let mut a = HostReport::new("127.0.0.2");
        a.sent = 3;
        a.bytes = 12;
        let mut b = HostReport::new("127.0.0.3");
        b.failed = 1;
        b.errors
            .push("/x -> /y: permission denied on the remote".into());
        let c = HostReport {
            fatal: Some("host unreachable".into()),
            ..HostReport::new("::1")
        };
        assert!(a.ok() && !b.ok() && !c.ok());
        let s = summary(&[a, b, c]);
        assert!(
            s.contains("127.0.0.2       3        0       0            12  ok"),
            "{s}"
        );
        assert!(s.contains("failed: host unreachable"), "{s}");
        assert!(
            s.contains("error: 127.0.0.3: /x -> /y: permission denied"),
            "{s}"
        );
    }
}
