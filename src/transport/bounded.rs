//! Limits on what a remote may send back (issue 13, "Bounded").
//!
//! Everything a server prints is untrusted: a listing answered with `cat
//! /dev/zero` must not grow hostsync without end, and a server that trickles one
//! byte every two seconds must not keep it waiting far past `io_timeout` (each
//! blocking read returns within `io_timeout`, so a trickle never trips libssh2's
//! own timeout). So every control reply (listing, probe, commit records, the
//! agent's answers, post_sync output) is read through a [`Budget`]:
//! - a size cap proportional to what was asked (a listing of N paths cannot need
//!   more than N times a generous record size, plus a fixed allowance);
//! - while hostsync waits for an answer, at least [`MIN_BYTES`] must arrive per
//!   `io_timeout` window, or the wait ends with one error line.
//!
//! File data hostsync sends is not limited here: a slow link or a bandwidth cap
//! only has to keep making progress within `io_timeout`, as before.

use std::io::Read;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// The least a remote must send per `io_timeout` window while hostsync waits.
pub(crate) const MIN_BYTES: u64 = 1024;

/// What a reply may still cost, and how fast it has been coming.
#[derive(Debug)]
pub(crate) struct Budget {
    /// What the reply may grow to, in bytes.
    cap: u64,
    /// What it has used so far.
    used: u64,
    /// The window of the rate rule.
    io_timeout: Duration,
    /// When the current window started.
    window: Instant,
    /// Bytes that arrived in the current window.
    in_window: u64,
    /// What is being read, for the error line ("the remote listing").
    what: &'static str,
}

impl Budget {
    /// A budget of `cap` bytes for `what`, with the rate rule's window `io_timeout`.
    pub(crate) fn new(what: &'static str, cap: u64, io_timeout: Duration) -> Budget {
        Budget {
            cap,
            used: 0,
            io_timeout,
            window: Instant::now(),
            in_window: 0,
            what,
        }
    }

    /// Allows `n` more bytes (a request was added that will be answered).
    pub(crate) fn grow(&mut self, n: u64) {
        self.cap = self.cap.saturating_add(n);
    }

    /// Starts a wait: the rate rule counts from now.
    pub(crate) fn wait_starts(&mut self) {
        self.window = Instant::now();
        self.in_window = 0;
    }

    /// Accounts for `n` bytes that arrived while hostsync was busy elsewhere (sending):
    /// only the size cap applies.
    pub(crate) fn took(&mut self, n: usize) -> Result<()> {
        self.used += n as u64;
        if self.used > self.cap {
            bail!(
                "{} sent more than {} bytes, more than was asked for; stopped reading",
                self.what,
                self.cap
            );
        }
        Ok(())
    }

    /// Accounts for `n` bytes that arrived while waiting. Fails when the reply
    /// outgrew its cap, or when a whole window passed with less than [`MIN_BYTES`].
    pub(crate) fn got(&mut self, n: usize) -> Result<()> {
        self.took(n)?;
        self.in_window += n as u64;
        if self.window.elapsed() >= self.io_timeout {
            if self.in_window < MIN_BYTES {
                bail!(
                    "{} sent only {} byte(s) in {} s (at least {MIN_BYTES} per io_timeout are needed); gave up waiting",
                    self.what,
                    self.in_window,
                    self.io_timeout.as_secs()
                );
            }
            self.wait_starts();
        }
        Ok(())
    }
}

/// Reads `from` to its end within `budget` (see the module doc).
pub(crate) fn read_to_end(from: &mut impl Read, budget: &mut Budget) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    budget.wait_starts();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => bail!("reading {}: {e}", budget.what),
        };
        budget.got(n)?;
        out.extend_from_slice(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out `chunk` bytes per read, sleeping `pause` before each.
    struct Trickle {
        left: usize,
        chunk: usize,
        pause: Duration,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.left == 0 {
                return Ok(0);
            }
            std::thread::sleep(self.pause);
            let n = self.chunk.min(self.left).min(buf.len());
            buf[..n].fill(b'x');
            self.left -= n;
            Ok(n)
        }
    }

    #[test]
    fn a_reply_past_its_cap_is_cut_off() {
        let mut zeros = std::io::repeat(0).take(10 << 20);
        let mut b = Budget::new("the remote listing", 1 << 20, Duration::from_secs(30));
        let e = read_to_end(&mut zeros, &mut b).unwrap_err().to_string();
        assert!(e.contains("more than 1048576 bytes"), "{e}");
        let mut small = std::io::repeat(0).take(1000);
        let mut b = Budget::new("x", 1000, Duration::from_secs(30));
        assert_eq!(read_to_end(&mut small, &mut b).unwrap().len(), 1000);
    }

    #[test]
    fn a_trickle_fails_within_about_one_window() {
        let window = Duration::from_millis(200);
        let mut slow = Trickle {
            left: 100,
            chunk: 1,
            pause: Duration::from_millis(20),
        };
        let started = Instant::now();
        let mut b = Budget::new("the remote agent", 1 << 20, window);
        let e = read_to_end(&mut slow, &mut b).unwrap_err().to_string();
        assert!(e.contains("gave up waiting"), "{e}");
        // Read whole, the trickle would take 2 s.
        assert!(started.elapsed() < window * 7, "{:?}", started.elapsed());
        // Fast enough: 1 KiB per read passes however long it takes in all.
        let mut steady = Trickle {
            left: 8 * 1024,
            chunk: 1024,
            pause: Duration::from_millis(40),
        };
        let mut b = Budget::new("x", 1 << 20, window);
        assert_eq!(read_to_end(&mut steady, &mut b).unwrap().len(), 8 * 1024);
    }
}
