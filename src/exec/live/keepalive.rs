//! The keepalive of a worker's idle session (`[ssh] keepalive_s`, issue 17).
//!
//! A worker keeps one session open between changes. While it is idle, the
//! worker wakes when the session's next probe is due and sends it
//! ([`crate::transport::keepalive`]); a session that left three probes in a row
//! unanswered, or whose transport failed, is dropped and a new one is opened to
//! the same host at once, so a change that comes meanwhile waits for the new
//! session (in the worker's queue), never for the old one's `io_timeout`. A
//! change that finds a probe unanswered for a whole interval does not trust the
//! session either and goes on a new one. One warning per session found dead;
//! if no new session can be opened (an info line), the next change tries again
//! and, failing, marks the host down as any failure does.

use std::time::Instant;

use super::Worker;
use crate::transport::keepalive::{MAX_UNANSWERED, Verdict};

impl Worker {
    /// When the open session's next probe is due, if it has one.
    pub(super) fn keepalive_due(&self) -> Option<Instant> {
        self.conn.as_ref().and_then(|(_, c)| c.keepalive_due())
    }

    /// Probes the open session if its probe is due; a dead one is replaced.
    pub(super) fn keep_alive(&mut self) {
        let Some((h, conn)) = &self.conn else {
            return;
        };
        if conn.keepalive_due().is_none_or(|due| due > Instant::now()) {
            return;
        }
        let h = *h;
        let address = &self.shared.targets[h].host.address;
        match conn.keep_alive() {
            Ok(Verdict::Alive) => return,
            Ok(Verdict::Dead(silent)) => log::warn!(
                "{address}: no reply to {MAX_UNANSWERED} keepalives in {}s; dropping the session and opening a new one",
                silent.as_secs()
            ),
            Err(e) => log::warn!("{address}: {e:#}; dropping the session and opening a new one"),
        }
        self.reopen(h);
    }

    /// Before a round for host `h`: replaces the open session to `h` if it is
    /// not to be trusted with a change (see the module docs).
    pub(super) fn check_session(&mut self, h: usize) {
        let suspect = matches!(&self.conn, Some((c, conn)) if *c == h && conn.suspect());
        if suspect {
            let address = &self.shared.targets[h].host.address;
            log::warn!(
                "{address}: a keepalive waited a whole interval for its reply; this change goes on a new session"
            );
            self.reopen(h);
        }
    }

    /// The open session was just used: its next probe waits a whole interval.
    pub(super) fn session_used(&self) {
        if let Some((_, c)) = &self.conn {
            c.rest();
        }
    }

    /// Drops the session and opens a new one to host `h`.
    fn reopen(&mut self, h: usize) {
        self.conn = None;
        if let Err(e) = self.connect(h) {
            let address = &self.shared.targets[h].host.address;
            // Not an error line of its own: the next change finds the host down.
            log::info!("{address}: cannot open a new session: {e:#}; the next change tries again");
        }
    }
}
