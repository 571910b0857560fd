//! Finding a dead session before a change needs it (issue 17).
//!
//! A server that is frozen (a stopped process, a hung VM) keeps its TCP
//! connection up, so an idle session looks fine until the next change waits
//! `io_timeout` on it. An idle `watch` session is therefore probed every
//! `[ssh] keepalive_s` (a host's `ServerAliveInterval` wins) with a
//! `keepalive@openssh.com` global request that wants a reply, and the replies
//! are counted. libssh2's own keepalive never reads its replies (they pile up in
//! its packet list), so the probe is `libssh2_keepalive_probe`, a small patch of
//! the vendored libssh2 (vendor/README.md): it takes in what the server sent,
//! without waiting, frees and counts the replies, then sends the next probe.
//! [`MAX_UNANSWERED`] probes in a row without a reply make the session dead, as
//! OpenSSH's `ServerAliveCountMax 3` does; the caller drops it and opens another.
//!
//! The counting is pure ([`Probes::step`]); only [`Keepalive::probe`] does I/O.

use std::cell::Cell;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use ssh2::Session;

/// Probes in a row without a reply after which a session is dead (OpenSSH's
/// `ServerAliveCountMax` default).
pub(crate) const MAX_UNANSWERED: u32 = 3;

/// What a probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Answered, or not yet given up on; the next probe is sent.
    Alive,
    /// No reply to [`MAX_UNANSWERED`] probes in a row, sent this long ago and since.
    Dead(Duration),
}

/// The probe count of one session (pure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Probes {
    /// When the next probe is due.
    next: Instant,
    /// Probes sent since the last reply (or since the session was last used).
    unanswered: u32,
    /// When the oldest unanswered probe was sent.
    first_unanswered: Option<Instant>,
}

impl Probes {
    /// No probe sent; the first is due one `interval` after `now`.
    fn new(now: Instant, interval: Duration) -> Probes {
        Probes {
            next: now + interval,
            unanswered: 0,
            first_unanswered: None,
        }
    }

    /// Takes in `replies` answers at `now`: dead after [`MAX_UNANSWERED`] probes
    /// without one; otherwise counts the probe about to be sent and sets when
    /// the next one is due.
    fn step(&mut self, replies: u32, now: Instant, interval: Duration) -> Verdict {
        if replies > 0 {
            self.unanswered = 0;
            self.first_unanswered = None;
        }
        if self.unanswered >= MAX_UNANSWERED {
            let since = self.first_unanswered.unwrap_or(now);
            return Verdict::Dead(now.saturating_duration_since(since));
        }
        self.unanswered += 1;
        self.first_unanswered.get_or_insert(now);
        self.next = now + interval;
        Verdict::Alive
    }

    /// Whether a probe sent at least one `interval` before `now` is still
    /// unanswered, after `replies` came in: the session is not to be trusted
    /// with a change.
    fn suspect(&mut self, replies: u32, now: Instant, interval: Duration) -> bool {
        if replies > 0 {
            self.unanswered = 0;
            self.first_unanswered = None;
        }
        self.first_unanswered
            .is_some_and(|t| now.saturating_duration_since(t) >= interval)
    }
}

/// A session's keepalive: its interval (none: off) and probe count.
pub(crate) struct Keepalive {
    /// How long the session may sit idle before it is probed; `None`: never.
    interval: Option<Duration>,
    /// The probes so far.
    probes: Cell<Probes>,
}

impl Keepalive {
    /// A keepalive every `interval` (zero: none), starting now.
    pub(crate) fn new(interval: Duration) -> Keepalive {
        let interval = Some(interval).filter(|i| !i.is_zero());
        let now = Instant::now();
        Keepalive {
            interval,
            probes: Cell::new(Probes::new(now, interval.unwrap_or_default())),
        }
    }

    /// When the next probe is due (`None`: keepalives are off).
    pub(crate) fn due(&self) -> Option<Instant> {
        self.interval.map(|_| self.probes.get().next)
    }

    /// The session was just used and answered: the next probe waits a whole interval.
    pub(crate) fn rest(&self) {
        if let Some(interval) = self.interval {
            self.probes.set(Probes::new(Instant::now(), interval));
        }
    }

    /// Takes in the replies so far and sends the next probe (see the module docs).
    /// `Err`: the transport failed, so the session is dead too.
    pub(crate) fn probe(&self, session: &Session) -> Result<Verdict> {
        let Some(interval) = self.interval else {
            return Ok(Verdict::Alive);
        };
        let replies = replies(session, true)?;
        let mut probes = self.probes.get();
        let verdict = probes.step(replies, Instant::now(), interval);
        self.probes.set(probes);
        Ok(verdict)
    }

    /// Before a change goes on this idle session: whether a probe has waited a
    /// whole interval for its reply (after taking in what came). `Err`: the
    /// transport failed.
    pub(crate) fn suspect(&self, session: &Session) -> Result<bool> {
        let Some(interval) = self.interval else {
            return Ok(false);
        };
        if self.probes.get().first_unanswered.is_none() {
            return Ok(false);
        }
        let replies = replies(session, false)?;
        let mut probes = self.probes.get();
        let suspect = probes.suspect(replies, Instant::now(), interval);
        self.probes.set(probes);
        Ok(suspect)
    }
}

/// Calls the patched `libssh2_keepalive_probe` on `session`, non-blocking for
/// the call: the replies it freed; with `send`, the next probe is sent.
fn replies(session: &Session, send: bool) -> Result<u32> {
    unsafe extern "C" {
        // vendor/libssh2-sys/libssh2/src/keepalive.c (hostsync's patch).
        fn libssh2_keepalive_probe(session: *mut libc::c_void, send: libc::c_int) -> libc::c_int;
    }
    session.set_blocking(false);
    let rc = {
        let mut raw = session.raw();
        let raw: *mut libc::c_void = std::ptr::from_mut(&mut *raw).cast();
        // SAFETY: `raw` is a live session (its lock is held for the call), used
        // on this thread only, and the call does not block (non-blocking above).
        unsafe { libssh2_keepalive_probe(raw, libc::c_int::from(send)) }
    };
    session.set_blocking(true);
    if rc < 0 {
        bail!("keepalive: {}", transport_error(rc));
    }
    Ok(rc.unsigned_abs())
}

/// What a libssh2 transport error code means, in words.
fn transport_error(rc: libc::c_int) -> String {
    match rc {
        // LIBSSH2_ERROR_SOCKET_DISCONNECT, _SOCKET_RECV, _SOCKET_SEND
        -13 => "the server closed the connection".into(),
        -43 => "cannot read from the server".into(),
        -7 => "cannot write to the server".into(),
        _ => format!("the session failed (libssh2 error {rc})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(2);

    /// A reply each time keeps the session alive; three probes without one make it
    /// dead at the fourth step, as OpenSSH's ServerAliveCountMax 3.
    #[test]
    fn three_unanswered_probes_make_a_session_dead() {
        let t0 = Instant::now();
        let mut p = Probes::new(t0, S);
        assert_eq!(p.next, t0 + S);
        for i in 1..=5 {
            assert_eq!(p.step(1, t0 + S * i, S), Verdict::Alive);
            assert_eq!(p.unanswered, 1);
        }
        let mut p = Probes::new(t0, S);
        for i in 1..=3 {
            assert_eq!(p.step(0, t0 + S * i, S), Verdict::Alive);
            assert_eq!(p.next, t0 + S * (i + 1));
        }
        assert_eq!(p.step(0, t0 + S * 4, S), Verdict::Dead(S * 3));
        // A late reply to any of them is enough.
        let mut p = Probes::new(t0, S);
        p.step(0, t0 + S, S);
        p.step(0, t0 + S * 2, S);
        p.step(0, t0 + S * 3, S);
        assert_eq!(p.step(1, t0 + S * 4, S), Verdict::Alive);
    }

    #[test]
    fn transport_errors_are_words() {
        assert_eq!(transport_error(-13), "the server closed the connection");
        assert_eq!(
            transport_error(-99),
            "the session failed (libssh2 error -99)"
        );
    }

    /// A change does not go on a session whose probe waited a whole interval.
    #[test]
    fn a_probe_unanswered_for_an_interval_makes_a_session_suspect() {
        let t0 = Instant::now();
        let mut p = Probes::new(t0, S);
        assert!(!p.suspect(0, t0 + S, S));
        p.step(0, t0 + S, S);
        assert!(!p.suspect(0, t0 + S + S / 2, S));
        assert!(p.suspect(0, t0 + S * 2, S));
        assert!(!p.suspect(1, t0 + S * 2, S));
    }
}
