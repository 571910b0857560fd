//! Pacing a stream: no more unacknowledged bytes in flight than the link needs.
//!
//! A tar stream written as fast as libssh2 allows fills the whole channel window
//! (2 MiB with OpenSSH), and on a fast link the bytes pile up inside the remote
//! sshd faster than `tar` takes them. Profiled on loopback (BENCHMARKS.md), sshd
//! then spent its time growing a buffer 32 KiB at a time to almost 4 MiB, each step
//! a fresh `mmap`, a copy and a `munmap` (glibc's `recallocarray` path above its
//! mmap threshold): page faults were 10% of the machine's samples, and 2,000 small
//! files took 300 ms in the stream instead of 95.
//!
//! So the writer keeps at most [`limit_for`] bytes unacknowledged: it learns what
//! the remote took from the window adjusts sshd sends as it writes to the
//! command's stdin, and waits for them when it is that far ahead. The limit grows
//! with the round trip (at least [`RATE`] bytes per second), so it never holds back
//! a link where the round trip, not sshd, is the bottleneck; from about 10 ms up
//! the channel window binds first, exactly as without pacing. A server that
//! sends no window adjust within [`STALL`] gets an unpaced stream.
//!
//! `[sync] inflight_kib = N` sets the limit in KiB (`0`: no pacing).

use std::io::Write;
use std::time::Duration;

use anyhow::Result;

use super::ssh::Connection;

/// The least the limit ever is. Chosen by measurement on loopback (2,000 files and
/// one 256 MiB file; BENCHMARKS.md): 192-256 KiB were best for small files, 384-512
/// KiB for the big one. It must stay well above OpenSSH's adjust threshold (three
/// 32 KiB packets), or the remote would never send an adjust.
pub(crate) const FLOOR: u32 = 384 * 1024;

/// The throughput (bytes per second) the limit always allows: it is at least this
/// much times the round trip.
pub(crate) const RATE: f64 = 200.0e6;

/// How long to wait for a window adjust before giving up pacing for this stream.
pub(crate) const STALL: Duration = Duration::from_millis(100);

/// The in-flight limit for a link with round trip `rtt` (unknown: [`FLOOR`]).
pub(crate) fn limit_for(rtt: Option<Duration>) -> u32 {
    let by_rate = rtt.map_or(0.0, |r| RATE * r.as_secs_f64());
    let limit = by_rate.max(f64::from(FLOOR));
    if limit >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        limit as u32
    }
}

/// The limit to use on `conn`: [`limit_for`] its round trip, unless `[sync]
/// inflight_kib` says otherwise.
fn limit(conn: &Connection) -> u32 {
    match conn.inflight_kib() {
        Some(kib) => kib.saturating_mul(1024),
        None => limit_for(conn.rtt()),
    }
}

/// A channel writer that stays at most its limit ahead of the remote.
pub(crate) struct Paced<'a> {
    conn: &'a Connection,
    channel: ssh2::Channel,
    /// Most bytes unacknowledged; 0: no pacing.
    limit: u32,
    /// The largest window seen: the remote's full window.
    window: u32,
    /// Channel output that arrived while waiting (e.g. an early `tar-exit`).
    early: Vec<u8>,
    /// How often the writer waited for the remote.
    waits: u64,
}

impl<'a> Paced<'a> {
    /// Paces `channel`, a channel of `conn`.
    pub(crate) fn new(conn: &'a Connection, channel: ssh2::Channel) -> Paced<'a> {
        let limit = limit(conn);
        log::debug!(
            "pacing at {} KiB in flight (round trip {} µs)",
            limit / 1024,
            conn.rtt().map_or(0, |r| r.as_micros())
        );
        Paced {
            conn,
            channel,
            limit,
            window: 0,
            early: Vec::new(),
            waits: 0,
        }
    }

    /// The channel back, with what it already said, and how often the writer waited.
    pub(crate) fn into_parts(self) -> (ssh2::Channel, Vec<u8>, u64) {
        (self.channel, self.early, self.waits)
    }

    /// Takes in, without blocking, what the remote has sent so far (see
    /// [`Paced::take_early`]).
    pub(crate) fn pull(&mut self) -> Result<()> {
        self.conn.take_input(&mut self.channel, &mut self.early)
    }

    /// What the remote has sent that was taken in while writing, emptied.
    pub(crate) fn take_early(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.early)
    }

    /// The channel, for blocking reads once everything is written.
    pub(crate) fn channel_mut(&mut self) -> &mut ssh2::Channel {
        &mut self.channel
    }

    /// How many of `want` bytes may go now; waits for the remote when none may.
    fn room(&mut self, want: usize) -> Result<usize> {
        loop {
            if self.limit == 0 {
                return Ok(want);
            }
            let remaining = self.channel.write_window().remaining;
            self.window = self.window.max(remaining);
            let in_flight = self.window - remaining;
            if in_flight < self.limit {
                return Ok(want.min((self.limit - in_flight) as usize));
            }
            // Take in what has arrived already; wait only if that was no adjust.
            self.conn.take_input(&mut self.channel, &mut self.early)?;
            if self.channel.write_window().remaining > remaining {
                continue;
            }
            self.waits += 1;
            if !self.conn.wait_input(STALL)? {
                log::debug!(
                    "no window adjust within {} ms; sending unpaced",
                    STALL.as_millis()
                );
                self.limit = 0;
            }
        }
    }
}

impl Write for Paced<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.room(buf.len()).map_err(std::io::Error::other)?;
        self.channel.write(&buf[..n])
    }

    /// Nothing to do: every write went to libssh2 already. Never `Channel::flush`:
    /// in libssh2 that *discards* what the remote sent and nobody read yet
    /// (`libssh2_channel_flush_ex`). It lost the agent's greeting when a
    /// `BufWriter` above was flushed before the first read (seen under load).
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_grows_with_the_round_trip() {
        assert_eq!(limit_for(None), FLOOR);
        assert_eq!(limit_for(Some(Duration::from_micros(100))), FLOOR);
        // 10 ms at 200 MB/s: 2 MB, about OpenSSH's whole window.
        assert_eq!(limit_for(Some(Duration::from_millis(10))), 2_000_000);
        assert!(limit_for(Some(Duration::from_millis(20))) > 2 << 20);
        assert_eq!(limit_for(Some(Duration::from_secs(3600))), u32::MAX);
        // Never below OpenSSH's adjust threshold (3 x 32 KiB) with room to spare.
        const { assert!(FLOOR >= 4 * 32 * 1024) };
    }
}
