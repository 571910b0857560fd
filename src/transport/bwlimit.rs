//! `[sync] bwlimit_kib`: a cap on what one connection sends, in bytes per second
//! (issue 19), as rsync's `--bwlimit` caps its socket writes.
//!
//! The cap is applied where every byte of a session leaves: libssh2's send
//! callback. So it holds for every way hostsync talks to a host (the agent, tar,
//! SCP, scripts, `check`) in `sync` and `watch` alike, and it counts what crosses
//! the wire, SSH framing included. Each connection gets its own [`Bucket`], so the
//! cap is per host.
//!
//! The bucket is pure (the clock is passed in) and unit-tested. The callback finds
//! its session's bucket by socket descriptor in a small registry; a descriptor
//! without one (libssh2 also calls the callback for the ssh-agent socket) sends
//! unlimited. It waits inside the callback when the bucket is empty: returning
//! EAGAIN instead would make a blocking libssh2 spin on a writable socket.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How much a full bucket holds: this much of a second at the rate. Small, so the
/// rate holds over short spans too; rsync sleeps after every write instead.
const BURST: f64 = 0.05;

/// The least a bucket holds, so that one SSH packet (at most 32 KiB of data plus
/// framing) can always go once the bucket is full.
const MIN_BURST: f64 = 36.0 * 1024.0;

/// The longest one wait inside the callback; then libssh2 calls again.
const LONGEST_WAIT: Duration = Duration::from_millis(200);

/// A token bucket: at most `rate` bytes per second, with bursts of at most the
/// bucket's size.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    /// Bytes per second.
    rate: f64,
    /// The most the bucket holds.
    size: f64,
    /// Bytes that may go now.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    last: Instant,
}

impl Bucket {
    /// A full bucket for `rate` bytes per second (more than 0), as of `now`.
    pub(crate) fn new(rate: u64, now: Instant) -> Bucket {
        let rate = rate.max(1) as f64;
        let size = (rate * BURST).max(MIN_BURST);
        Bucket {
            rate,
            size,
            tokens: size,
            last: now,
        }
    }

    /// How many of `want` bytes may go at `now` (they are taken), or, when none
    /// may, how long until some may.
    pub(crate) fn take(&mut self, now: Instant, want: usize) -> Result<usize, Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.size);
        self.last = now;
        if want == 0 {
            return Ok(0);
        }
        if self.tokens >= 1.0 {
            let n = (self.tokens.floor() as usize).min(want);
            self.tokens -= n as f64;
            return Ok(n);
        }
        // Wait until a packet's worth (or what is wanted) may go, not one byte:
        // fewer, larger sends.
        let need = (want as f64).min(self.size / 2.0) - self.tokens;
        Err(Duration::from_secs_f64(need / self.rate))
    }

    /// Gives back `n` bytes taken but not sent (the socket took fewer).
    pub(crate) fn refund(&mut self, n: usize) {
        self.tokens = (self.tokens + n as f64).min(self.size);
    }
}

/// The bucket of each limited session, by socket descriptor.
type Registry = Mutex<HashMap<RawFd, Arc<Mutex<Bucket>>>>;

/// The registry of every limited session of this process.
fn registry() -> &'static Registry {
    static REGISTRY: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

/// A session's place in the registry; dropping it removes the bucket.
pub(crate) struct Limited {
    /// The session's socket.
    fd: RawFd,
    /// Its bucket (compared on drop: the descriptor may be another session's by then).
    bucket: Arc<Mutex<Bucket>>,
}

impl Drop for Limited {
    fn drop(&mut self) {
        let mut map = registry().lock().unwrap_or_else(PoisonError::into_inner);
        if map
            .get(&self.fd)
            .is_some_and(|b| Arc::ptr_eq(b, &self.bucket))
        {
            map.remove(&self.fd);
        }
    }
}

/// Caps what `session` sends on socket `fd` at `rate` bytes per second. Call
/// before the handshake; keep the result as long as the session lives.
pub(crate) fn install(session: &ssh2::Session, fd: RawFd, rate: u64) -> Limited {
    /// libssh2.h: `LIBSSH2_CALLBACK_SEND`.
    const LIBSSH2_CALLBACK_SEND: libc::c_int = 5;
    unsafe extern "C" {
        // As in `quickack`: present in every libssh2 version.
        fn libssh2_session_callback_set(
            session: *mut libc::c_void,
            cbtype: libc::c_int,
            callback: *mut libc::c_void,
        ) -> *mut libc::c_void;
    }
    let bucket = Arc::new(Mutex::new(Bucket::new(rate, Instant::now())));
    registry()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(fd, bucket.clone());
    let mut raw = session.raw();
    let raw: *mut libc::c_void = std::ptr::from_mut(&mut *raw).cast();
    // SAFETY: `raw` is a live session (its lock is held for the call), and
    // `send_limited` has libssh2's LIBSSH2_SEND_FUNC signature.
    unsafe {
        libssh2_session_callback_set(raw, LIBSSH2_CALLBACK_SEND, send_limited as *mut _);
    }
    Limited { fd, bucket }
}

/// How many of `want` bytes socket `fd` may send now, waiting for the bucket if
/// need be; `want` when the socket is not limited.
fn allowance(fd: RawFd, want: usize) -> (usize, Option<Arc<Mutex<Bucket>>>) {
    let bucket = registry()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&fd)
        .cloned();
    let Some(bucket) = bucket else {
        return (want, None);
    };
    loop {
        let taken = bucket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(Instant::now(), want);
        match taken {
            Ok(n) => return (n, Some(bucket)),
            Err(wait) => std::thread::sleep(wait.min(LONGEST_WAIT)),
        }
    }
}

/// libssh2's own send function (`ssh2_send` in its misc.c: `-errno` on failure,
/// EINTR and EWOULDBLOCK as EAGAIN), sending no faster than the socket's bucket.
unsafe extern "C" fn send_limited(
    socket: libc::c_int,
    buffer: *const libc::c_void,
    length: libc::size_t,
    flags: libc::c_int,
    _abstract: *mut *mut libc::c_void,
) -> libc::ssize_t {
    let (n, bucket) = allowance(socket, length);
    // SAFETY: libssh2 passes its own socket and a buffer of `length` bytes; `n`
    // is at most `length`.
    let rc = unsafe { libc::send(socket, buffer, n, flags) };
    let sent = usize::try_from(rc).unwrap_or(0);
    if let Some(b) = bucket
        && sent < n
    {
        b.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .refund(n - sent);
    }
    if rc < 0 {
        let errno = std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        return match errno {
            libc::EINTR | libc::EAGAIN => -(libc::EAGAIN as libc::ssize_t),
            e => -(e as libc::ssize_t),
        };
    }
    rc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Over a simulated 10 s, a sender that always wants more gets the rate, plus
    /// at most one bucket; and it is never told to wait while bytes may go.
    #[test]
    fn the_bucket_gives_the_rate_and_no_more() {
        let t0 = Instant::now();
        let rate = 2048 * 1024;
        let mut b = Bucket::new(rate, t0);
        let mut now = t0;
        let mut sent = 0u64;
        while now < t0 + Duration::from_secs(10) {
            match b.take(now, 32 * 1024) {
                Ok(n) => {
                    assert!(n > 0 && n <= 32 * 1024);
                    sent += n as u64;
                }
                Err(wait) => {
                    assert!(wait > Duration::ZERO && wait < Duration::from_millis(100));
                    now += wait;
                }
            }
        }
        let expect = rate as f64 * 10.0;
        let got = sent as f64;
        assert!(
            got >= expect * 0.99 && got <= expect + (rate as f64 * BURST).max(MIN_BURST) + 1.0,
            "{got} bytes for {expect}"
        );
    }

    /// A full bucket lets one burst go at once, then only what time adds.
    #[test]
    fn bursts_are_bounded_and_refunds_come_back() {
        let t0 = Instant::now();
        let mut b = Bucket::new(1024 * 1024, t0);
        let first = b.take(t0, 10 << 20).unwrap();
        assert_eq!(
            first as f64,
            (1024.0 * 1024.0 * BURST).max(MIN_BURST).floor()
        );
        let wait = b.take(t0, 1000).unwrap_err();
        // 1000 bytes at 1 MiB/s: about a millisecond.
        assert!(wait <= Duration::from_millis(1), "{wait:?}");
        // 10 ms at 1 MiB/s: 10485.76 bytes, and what was left over.
        let n = b.take(t0 + Duration::from_millis(10), 1 << 20).unwrap();
        assert!((10485..=10487).contains(&n), "{n}");
        b.refund(485);
        assert_eq!(
            b.take(t0 + Duration::from_millis(10), 1 << 20).unwrap(),
            485
        );
        // Time that passed while nothing was wanted fills the bucket no further than full.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(b.take(later, usize::MAX).unwrap(), first);
        assert_eq!(b.take(later, 0), Ok(0));
    }

    /// A slow rate still sends: the bucket holds at least one SSH packet.
    #[test]
    fn a_slow_rate_still_lets_a_packet_through() {
        let t0 = Instant::now();
        let mut b = Bucket::new(1024, t0);
        assert_eq!(b.take(t0, 33 * 1024).unwrap(), 33 * 1024);
        assert_eq!(
            b.take(t0, 33 * 1024).unwrap(),
            3 * 1024,
            "the rest of the bucket"
        );
        let wait = b.take(t0, 33 * 1024).unwrap_err();
        assert!(wait > Duration::from_secs(10), "{wait:?}");
    }

    /// Sockets without a bucket send unlimited; a registered one is limited, and
    /// its registration goes with its guard.
    #[test]
    fn the_registry_limits_only_registered_sockets() {
        assert_eq!(allowance(-77, 5000).0, 5000);
        let bucket = Arc::new(Mutex::new(Bucket::new(1, Instant::now())));
        registry().lock().unwrap().insert(-78, bucket.clone());
        let guard = Limited { fd: -78, bucket };
        let (n, b) = allowance(-78, 100_000);
        assert!(b.is_some() && n == MIN_BURST as usize, "{n}");
        drop(guard);
        assert!(allowance(-78, 7).1.is_none());
    }
}
