//! What kind of failure a report line is: the connection, the remote refusing a
//! path, something local, or a host that can never work as configured. Every
//! failure hostsync reports carries one (`report::HostReport::fail`), so what
//! decides the next step (retry the host, retry the path, wait for a local
//! change, tell the operator) does not have to read the message (issue 15; the
//! daemon's retries, issue 17, build on it).

/// What kind of failure a line reports, for whoever decides what to do next
/// (the daemon's retries, issue 17).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The connection could not be made or was lost: the host, later.
    Connection,
    /// The remote refused a path: permission, disk full, read-only, a directory
    /// where a file goes, a post_sync command that failed.
    Refused,
    /// Something here: the file vanished, cannot be read or kept changing; a
    /// name hostsync cannot carry; a src that cannot be scanned.
    Local,
    /// The host can never work as configured: authentication refused, a host
    /// key that does not match, a login shell that prints, a listing that
    /// cannot be read. Retrying soon does not help; the operator must act.
    Host,
}

impl Failure {
    /// The kind of a whole-host failure, told by hostsync's own words for it
    /// (the transport's errors, see `transport::ssh`); anything else is taken for
    /// a connection that can come back.
    pub(crate) fn of_host(reason: &str) -> Failure {
        const FOR_GOOD: &[&str] = &[
            "auth failed",
            "host key mismatch",
            "host key unknown",
            "the server sent no host key",
            "cannot read the remote listing",
            "does the remote login shell print text",
        ];
        if FOR_GOOD.iter().any(|p| reason.contains(p)) {
            Failure::Host
        } else {
            Failure::Connection
        }
    }
}
