//! The retry delay advertised in every overload error.
//!
//! ```text
//! retry_after = clamp( S̄ · (queued + 1) / max_concurrent , retry_after_min , retry_after_max )
//! ```
//!
//! `S̄` is an exponentially weighted moving average (weight 0.2 on the newest
//! sample) of how long admitted requests held their slot; until the first
//! request completes it is `initial_service_time`. `queued` is the queue length
//! when the rejection was counted. With `max_concurrent` slots each turning
//! over every `S̄` on average, `S̄ · (queued + 1) / max_concurrent` is the time
//! until everybody queued now has been served and a slot is free for one more:
//! a client that waits that long has a fair chance of being admitted.

use std::time::Duration;

const WEIGHT_OF_NEWEST: f64 = 0.2;

#[derive(Clone, Copy, Debug)]
pub(crate) struct RetryEstimator {
    mean_service_secs: f64,
    observed: bool,
    min: Duration,
    max: Duration,
}

impl RetryEstimator {
    pub(crate) fn new(initial_service_time: Duration, min: Duration, max: Duration) -> Self {
        Self {
            mean_service_secs: initial_service_time.as_secs_f64(),
            observed: false,
            min,
            max,
        }
    }

    /// The same estimate with new bounds.
    pub(crate) fn with_bounds(self, min: Duration, max: Duration) -> Self {
        Self { min, max, ..self }
    }

    /// Feeds the time one request held its slot.
    pub(crate) fn observe(&mut self, service_time: Duration) {
        let secs = service_time.as_secs_f64();
        if self.observed {
            self.mean_service_secs += WEIGHT_OF_NEWEST * (secs - self.mean_service_secs);
        } else {
            self.mean_service_secs = secs;
            self.observed = true;
        }
    }

    /// The delay to advertise, given the queue length and the limit in force.
    pub(crate) fn estimate(&self, queued: usize, max_concurrent: usize) -> Duration {
        let secs = self.mean_service_secs * (queued as f64 + 1.0) / max_concurrent.max(1) as f64;
        Duration::try_from_secs_f64(secs)
            .unwrap_or(self.max)
            .clamp(self.min, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn estimator() -> RetryEstimator {
        RetryEstimator::new(
            Duration::from_secs(1),
            Duration::from_millis(10),
            Duration::from_secs(60),
        )
    }

    #[test]
    fn uses_the_initial_service_time_until_a_sample_arrives() {
        // 1 s · (10 + 1) / 5 = 2.2 s
        assert_eq!(estimator().estimate(10, 5), Duration::from_millis(2200));
    }

    #[test]
    fn the_first_sample_replaces_the_prior_then_averages() {
        let mut e = estimator();
        e.observe(Duration::from_millis(100));
        assert_eq!(e.estimate(0, 1), Duration::from_millis(100));
        e.observe(Duration::from_millis(600));
        // 100 + 0.2 · (600 − 100) = 200 ms
        assert_eq!(e.estimate(0, 1).as_millis(), 200);
    }

    #[test]
    fn grows_with_the_queue_and_shrinks_with_the_limit() {
        let mut e = estimator();
        e.observe(Duration::from_millis(50));
        assert!(e.estimate(50, 5) > e.estimate(10, 5));
        assert!(e.estimate(10, 10) < e.estimate(10, 5));
        // 50 ms · 51 / 5 = 510 ms
        assert_eq!(e.estimate(50, 5).as_millis(), 510);
    }

    #[test]
    fn is_bounded() {
        let mut e = estimator();
        e.observe(Duration::from_nanos(1));
        assert_eq!(e.estimate(0, 100), Duration::from_millis(10));
        e.observe(Duration::from_secs(1_000_000));
        e.observe(Duration::from_secs(1_000_000));
        assert_eq!(e.estimate(1_000, 1), Duration::from_secs(60));
    }
}
