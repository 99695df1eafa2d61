//! The pace a request body must keep: a minimum rate, with a bounded head
//! start.
//!
//! A body has a deadline. It starts `stall` after the first poll; every
//! chunk moves it later by the chunk's length at `min_rate` (n bytes earn
//! n / `min_rate` seconds), but never more than `stall` past the chunk's
//! arrival. The body is cut when the deadline passes. Hence, for any span
//! of L seconds while the body is read, at least `min_rate` × (L − `stall`)
//! bytes arrived in it, or the body was cut before the span ended:
//!
//! - a client that stops sending is cut at most `stall` after its last
//!   byte, whatever it sent before (no credit banks beyond `stall`);
//! - a client that trickles below `min_rate` is cut too, however regularly
//!   it sends, at most `stall` + (what it banked) later;
//! - a client that sends at `min_rate` or faster is never cut by the pace
//!   (the body's total timeout still applies).
//!
//! `min_rate` = 0 leaves only the stall: at most `stall` without a byte.

use std::time::Duration;

use tokio::time::Instant;

/// A body's pace: see the module's documentation.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    min_rate: u64,
    stall: Duration,
    deadline: Instant,
}

impl Pace {
    /// The pace of a body first polled at `now`.
    pub fn new(min_rate: u64, stall: Duration, now: Instant) -> Self {
        Self {
            min_rate,
            stall,
            deadline: now + stall,
        }
    }

    /// When the body is cut unless more bytes arrive before.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// `len` bytes arrived at `now`: moves the deadline.
    pub fn received(&mut self, len: usize, now: Instant) {
        let cap = now + self.stall;
        let earned = match self.min_rate {
            0 => None,
            rate => {
                let nanos = (len as u128 * 1_000_000_000) / u128::from(rate);
                Some(Duration::from_nanos(
                    u64::try_from(nanos).unwrap_or(u64::MAX),
                ))
            }
        };
        self.deadline = earned
            .and_then(|earned| self.deadline.checked_add(earned))
            .map_or(cap, |moved| moved.min(cap));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn a_stall_is_cut_at_most_stall_after_the_last_byte() {
        let start = Instant::now();
        let mut pace = Pace::new(1000, 5 * SECOND, start);
        assert_eq!(pace.deadline(), start + 5 * SECOND);
        // A burst worth far more than the stall: capped.
        pace.received(1_000_000, start + SECOND);
        assert_eq!(pace.deadline(), start + 6 * SECOND);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_below_the_rate_is_cut() {
        let start = Instant::now();
        let mut pace = Pace::new(1000, 5 * SECOND, start);
        // 500 bytes a second, half the rate: the deadline gains half a
        // second each second, 5 s + (k - 1) / 2 before the k-th chunk: it
        // is reached at 9 s (4000 bytes in 9 s = 1000 x (9 - 5)).
        let mut now = start;
        loop {
            now += SECOND;
            if now >= pace.deadline() {
                break;
            }
            pace.received(500, now);
        }
        assert_eq!(now - start, 9 * SECOND);
        assert_eq!(pace.deadline(), start + 9 * SECOND);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_at_the_rate_is_never_cut() {
        let start = Instant::now();
        let mut pace = Pace::new(1000, 2 * SECOND, start);
        for s in 1..=3600 {
            let now = start + s * SECOND;
            assert!(now < pace.deadline(), "cut at {s} s");
            pace.received(1000, now);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_rate_only_the_stall_counts() {
        let start = Instant::now();
        let mut pace = Pace::new(0, 3 * SECOND, start);
        pace.received(1, start + 2 * SECOND);
        assert_eq!(pace.deadline(), start + 5 * SECOND);
        pace.received(1, start + 4 * SECOND);
        assert_eq!(pace.deadline(), start + 7 * SECOND);
    }
}
