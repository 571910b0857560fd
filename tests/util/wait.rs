//! Bounded polling helpers.
//!
//! Integration tests must never rely on fixed sleeps ("sleep 2 s and hope the
//! server is up"). Instead they poll a condition every ~20 ms until it holds,
//! and fail loudly with a description of what was awaited once a deadline has
//! passed.

use std::thread;
use std::time::{Duration, Instant};

/// How long to sleep between two evaluations of the polled condition.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `f` every ~20 ms until it returns `true`.
///
/// # Panics
///
/// Panics with a message naming `what` if `f` has not returned `true` within
/// `timeout`. `f` is always evaluated at least once, and once more after the
/// deadline has passed, so a slow final evaluation cannot cause a spurious
/// failure.
pub fn wait_until<F: FnMut() -> bool>(timeout: Duration, what: &str, mut f: F) {
    wait_for(timeout, what, || f().then_some(()));
}

/// Polls `f` every ~20 ms until it returns `true` or `timeout` has passed, and
/// says whether it did: for a check that fails with its own message (the
/// daemon's logs, what is left), such as "no temporary is left" while the
/// remote side may still be finishing the batch that delivered the content.
pub fn holds_within<F: FnMut() -> bool>(timeout: Duration, mut f: F) -> bool {
    let start = Instant::now();
    let deadline = start + timeout;
    loop {
        let past_deadline = Instant::now() >= deadline;
        if f() {
            return true;
        }
        if past_deadline {
            return false;
        }
        thread::sleep(POLL_INTERVAL.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// Polls `f` every ~20 ms until it returns `Some(value)`, and returns `value`.
///
/// # Panics
///
/// Panics with a message naming `what` if `f` has only returned `None` within
/// `timeout`.
pub fn wait_for<T, F: FnMut() -> Option<T>>(timeout: Duration, what: &str, mut f: F) -> T {
    let start = Instant::now();
    let deadline = start + timeout;
    loop {
        let past_deadline = Instant::now() >= deadline;
        if let Some(value) = f() {
            return value;
        }
        if past_deadline {
            panic!(
                "timed out after {:.1?} waiting for: {what}",
                start.elapsed()
            );
        }
        thread::sleep(POLL_INTERVAL.min(deadline.saturating_duration_since(Instant::now())));
    }
}
