//! What `watch` keeps of the paths a host refused, so nothing is dropped (issue 17).
//!
//! A round that reaches the host may still fail some paths: a full disk, a quota,
//! permission denied, a read-only file system, a directory where a file goes, a
//! local file that kept changing. Such a round's whole work is kept here and tried
//! again, with the latest local content, on the same capped backoff as a host that
//! is down (`[sync] retry_max_s`), until it lands or no mapping covers the path any
//! more. Other changes of the host go on meanwhile in their own rounds.
//!
//! One error line when a path starts failing, one info line when it lands: the
//! round's report defers those lines ([`crate::report::HostReport::defer`]) and
//! [`Refusals::settle`] writes them by comparing what failed before and now. A
//! retried round carries all the kept work, so only it can tell that a path landed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::reconcile::Scope;
use crate::report::{HostReport, retried};

/// First retry delay after a path failed; doubles up to `retry_max`.
pub(crate) const FIRST_RETRY: Duration = Duration::from_secs(1);

/// One host's refused work and the paths failing now.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    /// A full reconcile is to be retried.
    full: bool,
    /// Paths to retry, per mapping index.
    paths: BTreeMap<usize, BTreeSet<PathBuf>>,
    /// What fails now (`local -> remote`, or a mapping), with the latest reason.
    failing: BTreeMap<String, String>,
    /// Current retry delay.
    backoff: Duration,
    /// When to retry; `None` while nothing is kept (or it was taken).
    next_try: Option<Instant>,
    /// The kept work was taken: the next round that reaches the host carries all of
    /// it, so it settles which paths still fail.
    covering: bool,
}

impl Refusals {
    /// When the kept work is due, if any is kept.
    pub(crate) fn next_try(&self) -> Option<Instant> {
        self.next_try
    }

    /// Whether the kept work is due at `now`.
    pub(crate) fn due(&self, now: Instant) -> bool {
        self.next_try.is_some_and(|t| t <= now)
    }

    /// How many paths are kept (a kept full reconcile counts as one).
    pub(crate) fn kept(&self) -> usize {
        usize::from(self.full) + self.paths.values().map(BTreeSet::len).sum::<usize>()
    }

    /// What fails now, with why.
    pub(crate) fn failing(&self) -> &BTreeMap<String, String> {
        &self.failing
    }

    /// Takes the kept work (a full reconcile flag, and paths per mapping) for a round.
    pub(crate) fn take(&mut self) -> (bool, BTreeMap<usize, BTreeSet<PathBuf>>) {
        self.next_try = None;
        self.covering = true;
        (
            std::mem::take(&mut self.full),
            std::mem::take(&mut self.paths),
        )
    }

    /// After a round of `work` that reached host `address` and ended as `round`
    /// says: logs each path that starts failing and (after a retried round) each
    /// that landed, and keeps the work again if anything failed, due after the
    /// next backoff step (capped at `retry_max`).
    pub(crate) fn settle(
        &mut self,
        address: &str,
        work: &[(usize, Scope)],
        round: &HostReport,
        retry_max: Duration,
        now: Instant,
    ) {
        let failed: BTreeMap<String, String> = (round.failures.iter())
            .filter(|(what, _)| retried(what))
            .cloned()
            .collect();
        for (what, reason) in &failed {
            if !self.failing.contains_key(what) {
                log::error!(
                    "{address}: {what}: {reason}; kept pending and retried with backoff up to {}s",
                    retry_max.as_secs()
                );
            }
        }
        let retried_round = std::mem::take(&mut self.covering);
        if retried_round {
            for what in self.failing.keys().filter(|w| !failed.contains_key(*w)) {
                log::info!(
                    "{address}: {what}: landed after failing (or nothing is left to send); no longer pending"
                );
            }
            self.failing.clear();
        }
        if failed.is_empty() {
            if retried_round {
                self.backoff = Duration::ZERO;
            }
            return;
        }
        self.failing.extend(failed);
        self.keep(work);
        self.backoff = if self.backoff.is_zero() {
            FIRST_RETRY.min(retry_max)
        } else if retried_round {
            (self.backoff * 2).min(retry_max)
        } else {
            self.backoff
        };
        if retried_round || self.next_try.is_none() {
            self.next_try = Some(now + self.backoff);
        }
    }

    /// Adds `work` to what is kept.
    fn keep(&mut self, work: &[(usize, Scope)]) {
        for (m, scope) in work {
            match scope {
                Scope::All => self.full = true,
                Scope::Paths(p) => self.paths.entry(*m).or_default().extend(p.iter().cloned()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::Failure;

    fn round(failures: &[&str]) -> HostReport {
        let mut r = HostReport::new("h");
        r.defer = true;
        for what in failures {
            r.fail(
                Failure::Refused,
                what,
                "no space left on device on the remote",
            );
        }
        r
    }

    fn paths(p: &[&str]) -> Vec<(usize, Scope)> {
        vec![(0, Scope::Paths(p.iter().map(PathBuf::from).collect()))]
    }

    /// A refused path is kept with its round's work and retried on a doubling,
    /// capped delay; a retried round that succeeds clears it; post_sync is not kept.
    #[test]
    fn refused_work_is_kept_and_retried_with_capped_backoff() {
        let cap = Duration::from_secs(3);
        let t0 = Instant::now();
        let mut r = Refusals::default();
        r.settle("h", &paths(&["/a", "/b"]), &round(&["/a -> /r/a"]), cap, t0);
        assert_eq!(r.next_try(), Some(t0 + FIRST_RETRY));
        assert!(!r.due(t0) && r.due(t0 + FIRST_RETRY));
        assert_eq!(r.failing().len(), 1);
        // A fresh round meanwhile that fails another path keeps both, same due time.
        r.settle("h", &paths(&["/c"]), &round(&["/c -> /r/c"]), cap, t0);
        assert_eq!(r.next_try(), Some(t0 + FIRST_RETRY));
        assert_eq!(r.failing().len(), 2);
        let (full, kept) = r.take();
        assert!(!full);
        assert_eq!(kept[&0].len(), 3);
        assert_eq!(r.next_try(), None);
        let work = vec![(0, Scope::Paths(kept[&0].clone()))];
        let mut t = t0;
        for want in [2, 3, 3] {
            r.settle("h", &work, &round(&["/a -> /r/a"]), cap, t);
            assert_eq!(r.next_try(), Some(t + Duration::from_secs(want)));
            assert_eq!(r.failing().keys().collect::<Vec<_>>(), ["/a -> /r/a"]);
            r.take();
            t += Duration::from_secs(want);
        }
        r.settle("h", &work, &round(&[]), cap, t);
        assert!(r.failing().is_empty() && r.next_try().is_none());
        let mut post = round(&[]);
        post.fail(
            Failure::Refused,
            "post_sync a -> /b: `x`",
            "exited with status 1",
        );
        r.settle("h", &work, &post, cap, t);
        assert!(r.failing().is_empty() && r.next_try().is_none());
        assert_eq!(r.take(), (false, BTreeMap::new()));
    }

    /// A full round that failed is retried as a full round.
    #[test]
    fn a_failed_full_round_is_kept_whole() {
        let mut r = Refusals::default();
        let work = vec![(0, Scope::All), (1, Scope::All)];
        let now = Instant::now();
        r.settle(
            "h",
            &work,
            &round(&["src -> /d"]),
            Duration::from_secs(30),
            now,
        );
        assert_eq!(r.take(), (true, BTreeMap::new()));
    }
}
