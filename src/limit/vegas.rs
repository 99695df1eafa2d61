use std::time::Duration;

use super::{Limit, Sample, normalize_bounds};

/// A delay-based limit modelled on TCP Vegas: estimates how many requests are
/// queueing from how far the latency sits above the no-load latency.
///
/// The algorithm of Netflix concurrency-limits' `VegasLimit`
/// (<https://github.com/Netflix/concurrency-limits>, `concurrency-limits-core`,
/// `limit/VegasLimit.java`), itself after TCP Vegas (Brakmo & Peterson, 1995),
/// rewritten here.
///
/// `rtt_noload` is the lowest rtt seen. Because the service's own baseline may
/// rise for good (a slower upstream), it is re-measured every
/// `probe_multiplier * limit` non-dropped samples: that sample's rtt replaces
/// it, whatever its value, and lower rtts pull it down again afterwards.
///
/// For each sample, with `limit` the current (fractional) limit and
/// `log(limit) = max(1, floor(log10(floor(limit))))`:
///
/// ```text
/// if dropped:                      target = limit - log(limit)
/// else if probe due:               rtt_noload = rtt;    keep limit
/// else if rtt < rtt_noload:        rtt_noload = rtt;    keep limit
/// else if inflight * 2 < limit:    keep limit           // app-limited
/// else:
///     queue = ceil(limit * (1 - rtt_noload / rtt))      // requests queueing
///     if   queue <= threshold:     target = limit + beta   // no queueing: grow fast
///     elif queue <  alpha:         target = limit + log(limit)
///     elif queue >  beta:          target = limit - log(limit)
///     else:                        keep limit           // within [alpha, beta]
/// limit = (1 - smoothing) * limit + smoothing * clamp(target, min_limit, max_limit)
/// ```
///
/// with `alpha = 3 * log(limit)`, `beta = 6 * log(limit)` and
/// `threshold = log(limit)` (Netflix's defaults, all in requests).
///
/// `current()` is `floor(limit)`, within `[min_limit, max_limit]`.
///
/// Differences from Netflix's `VegasLimit`, both to keep a sample's effect
/// predictable:
///
/// - **the probe is deterministic**: Netflix probes after
///   `jitter * probe_multiplier * limit` samples with a random `jitter` in
///   `[0.5, 1)`; here the jitter is 1 (no randomness under the limiter's lock);
/// - **a dropped sample always shrinks the limit and never touches
///   `rtt_noload`** (nor counts towards the probe): in Netflix a drop that
///   happens to be a probe or a new minimum updates `rtt_noload` instead of
///   shrinking, so a fast failure would both skip the cut and set an
///   unrealistically low baseline that makes every later success look queued.
///
/// | Parameter | Unit | Default | Setter |
/// |---|---|---|---|
/// | initial limit | requests | required | [`Vegas::new`] |
/// | `min_limit` | requests, `>= 1` | 1 | [`Vegas::with_bounds`] |
/// | `max_limit` | requests, `>= min_limit` | 1000, or the initial limit if larger | [`Vegas::with_bounds`] |
/// | `probe_multiplier` | samples per request of limit, `>= 1` | 30 | [`Vegas::with_probe_multiplier`] |
/// | `smoothing` | factor in `(0, 1]` | 1.0 (none) | [`Vegas::with_smoothing`] |
///
/// ```
/// use std::time::Duration;
///
/// use mcp_backpressure::limit::{Limit, Sample, Vegas};
///
/// let mut limit = Vegas::new(20);
/// let sample = Sample::new(Duration::from_millis(10), 20, false);
/// limit.on_sample(&sample); // the first sample sets rtt_noload
/// limit.on_sample(&sample); // no queueing: + beta = 6 * log10(20) floored
/// assert_eq!(limit.current(), 26);
/// ```
#[derive(Clone, Debug)]
pub struct Vegas {
    limit: f64,
    min_limit: usize,
    max_limit: usize,
    smoothing: f64,
    probe_multiplier: usize,
    probe_count: usize,
    rtt_noload: Option<Duration>,
}

impl Vegas {
    /// Default number of samples, per request of limit, between probes.
    pub const DEFAULT_PROBE_MULTIPLIER: usize = 30;
    /// Default weight of a new estimate against the current limit.
    pub const DEFAULT_SMOOTHING: f64 = 1.0;
    /// Default `max_limit` (raised to the initial limit when that is larger).
    pub const DEFAULT_MAX_LIMIT: usize = 1000;

    /// Starts at `initial` (values below 1 act as 1) with bounds
    /// `[1, max(1000, initial)]` and the default parameters.
    pub fn new(initial: usize) -> Self {
        let initial = initial.max(1);
        Self {
            limit: initial as f64,
            min_limit: 1,
            max_limit: Self::DEFAULT_MAX_LIMIT.max(initial),
            smoothing: Self::DEFAULT_SMOOTHING,
            probe_multiplier: Self::DEFAULT_PROBE_MULTIPLIER,
            probe_count: 0,
            rtt_noload: None,
        }
    }

    /// Keeps the limit within `[min_limit, max_limit]`, moving the current
    /// limit into that range if it lies outside.
    ///
    /// Never panics: a `min_limit` of 0 acts as 1 and a `max_limit` below
    /// `min_limit` acts as `min_limit`. Validate configuration with
    /// [`check_bounds`](super::check_bounds) first to report such values.
    pub fn with_bounds(mut self, min_limit: usize, max_limit: usize) -> Self {
        (self.min_limit, self.max_limit) = normalize_bounds(min_limit, max_limit);
        self.limit = self
            .limit
            .clamp(self.min_limit as f64, self.max_limit as f64);
        self
    }

    /// Sets how often `rtt_noload` is re-measured: every
    /// `probe_multiplier * limit` non-dropped samples.
    ///
    /// # Panics
    ///
    /// If `probe_multiplier` is 0.
    pub fn with_probe_multiplier(mut self, probe_multiplier: usize) -> Self {
        assert!(
            probe_multiplier >= 1,
            "Vegas probe_multiplier must be at least 1"
        );
        self.probe_multiplier = probe_multiplier;
        self
    }

    /// Sets the weight of each new estimate against the current limit: 1.0
    /// replaces the limit by the estimate, smaller values move it slower.
    ///
    /// # Panics
    ///
    /// If `smoothing` is not in `(0, 1]`.
    pub fn with_smoothing(mut self, smoothing: f64) -> Self {
        assert!(
            smoothing > 0.0 && smoothing <= 1.0,
            "Vegas smoothing must be in (0, 1], got {smoothing}"
        );
        self.smoothing = smoothing;
        self
    }

    /// The lowest limit this algorithm will set.
    pub fn min_limit(&self) -> usize {
        self.min_limit
    }

    /// The highest limit this algorithm will set.
    pub fn max_limit(&self) -> usize {
        self.max_limit
    }

    /// Samples, per request of limit, between probes of `rtt_noload`.
    pub fn probe_multiplier(&self) -> usize {
        self.probe_multiplier
    }

    /// The weight of each new estimate against the current limit.
    pub fn smoothing(&self) -> f64 {
        self.smoothing
    }

    /// The no-load latency estimate (`None` before the first non-dropped
    /// sample).
    pub fn rtt_noload(&self) -> Option<Duration> {
        self.rtt_noload
    }

    /// The target limit for a non-dropped sample, or `None` to keep the limit.
    fn target(&self, rtt: Duration, rtt_noload: Duration) -> Option<f64> {
        let limit = self.limit;
        let log = log10_floor(limit);
        let (alpha, beta, threshold) = (3 * log, 6 * log, log);
        let queueing = 1.0 - rtt_noload.as_nanos() as f64 / rtt.as_nanos() as f64;
        // `as` saturates; `queueing` is in [0, 1) since rtt >= rtt_noload > 0.
        let queue = (limit * queueing).ceil() as usize;
        if queue <= threshold {
            Some(limit + beta as f64)
        } else if queue < alpha {
            Some(limit + log as f64)
        } else if queue > beta {
            Some(limit - log as f64)
        } else {
            None
        }
    }
}

/// `max(1, floor(log10(floor(limit))))`, Netflix's `Log10RootIntFunction`.
fn log10_floor(limit: f64) -> usize {
    // `as` saturates and maps NaN to 0.
    let limit = (limit as usize).max(1);
    (limit.ilog10() as usize).max(1)
}

impl Limit for Vegas {
    fn current(&self) -> usize {
        // `as` saturates and maps NaN to 0; the clamp restores the bounds.
        (self.limit as usize).clamp(self.min_limit, self.max_limit)
    }

    fn on_sample(&mut self, sample: &Sample) {
        let target = if sample.dropped {
            self.limit - log10_floor(self.limit) as f64
        } else {
            // At least a nanosecond, so the ratio in `target` stays finite.
            let rtt = sample.rtt.max(Duration::from_nanos(1));
            self.probe_count = self.probe_count.saturating_add(1);
            if self.probe_count as f64 >= self.probe_multiplier as f64 * self.limit {
                self.probe_count = 0;
                self.rtt_noload = Some(rtt);
                return;
            }
            let rtt_noload = match self.rtt_noload {
                Some(noload) if noload <= rtt => noload,
                _ => {
                    self.rtt_noload = Some(rtt);
                    return;
                }
            };
            if (sample.inflight.saturating_mul(2) as f64) < self.limit {
                return;
            }
            match self.target(rtt, rtt_noload) {
                Some(target) => target,
                None => return,
            }
        };
        let (min, max) = (self.min_limit as f64, self.max_limit as f64);
        let next = (1.0 - self.smoothing) * self.limit + self.smoothing * target.clamp(min, max);
        if next.is_finite() {
            self.limit = next.clamp(min, max);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A Vegas limit whose `rtt_noload` is `noload` (probes kept far away).
    fn primed(initial: usize, noload: Duration) -> Vegas {
        let mut limit = Vegas::new(initial).with_probe_multiplier(1000);
        limit.on_sample(&Sample::new(noload, initial, false));
        assert_eq!(limit.current(), initial);
        assert_eq!(limit.rtt_noload(), Some(noload));
        limit
    }

    fn busy(limit: &mut Vegas, rtt: Duration) {
        let inflight = limit.current();
        limit.on_sample(&Sample::new(rtt, inflight, false));
    }

    #[test]
    fn defaults() {
        let limit = Vegas::new(20);
        assert_eq!(limit.current(), 20);
        assert_eq!((limit.min_limit(), limit.max_limit()), (1, 1000));
        assert_eq!(limit.probe_multiplier(), 30);
        assert_eq!(limit.smoothing(), 1.0);
        assert_eq!(limit.rtt_noload(), None);
        assert_eq!(Vegas::new(0).current(), 1);
        assert_eq!(Vegas::new(5000).max_limit(), 5000);
    }

    #[test]
    fn log10_floor_matches_netflix() {
        let got: Vec<usize> = [0.0, 1.0, 9.9, 10.0, 99.0, 100.0, 999.5, 1000.0]
            .into_iter()
            .map(log10_floor)
            .collect();
        assert_eq!(got, [1, 1, 1, 1, 1, 2, 2, 3]);
    }

    #[test]
    fn no_queueing_grows_by_beta() {
        let mut limit = primed(20, ms(10));
        let seen: Vec<usize> = (0..4)
            .map(|_| {
                busy(&mut limit, ms(10));
                limit.current()
            })
            .collect();
        // beta = 6 below 100, 12 from 100.
        assert_eq!(seen, [26, 32, 38, 44]);
        let mut big = primed(100, ms(10));
        busy(&mut big, ms(10));
        assert_eq!(big.current(), 112);
    }

    #[test]
    fn light_queueing_grows_by_log() {
        let mut limit = primed(20, ms(10));
        // queue = ceil(20 * (1 - 10 / 10.8)) = 2: threshold 1 < 2 < alpha 3.
        busy(&mut limit, Duration::from_micros(10_800));
        assert_eq!(limit.current(), 21);
    }

    #[test]
    fn moderate_queueing_holds() {
        let mut limit = primed(20, ms(10));
        // queue = ceil(20 * 0.2) = 4 or 5: within [alpha 3, beta 6].
        busy(&mut limit, Duration::from_micros(12_500));
        assert_eq!(limit.current(), 20);
    }

    #[test]
    fn heavy_queueing_shrinks() {
        let mut limit = primed(20, ms(10));
        // queue = ceil(20 * 0.9) = 18 > beta 6.
        busy(&mut limit, ms(100));
        assert_eq!(limit.current(), 19);
        for _ in 0..30 {
            busy(&mut limit, ms(100));
        }
        // Down one a sample until queue = ceil(6 * 0.9) = 6 is no longer above beta.
        assert_eq!(limit.current(), 6);
        assert_eq!(limit.rtt_noload(), Some(ms(10)));
    }

    #[test]
    fn dropped_shrinks_without_touching_rtt_noload() {
        let mut limit = primed(200, ms(10));
        limit.on_sample(&Sample::new(ms(1), 1, true));
        assert_eq!(limit.current(), 198); // 200 - log10(200) floored
        assert_eq!(limit.rtt_noload(), Some(ms(10)));
        let mut fresh = Vegas::new(20);
        fresh.on_sample(&Sample::new(ms(1), 1, true));
        assert_eq!(fresh.current(), 19);
        assert_eq!(fresh.rtt_noload(), None);
    }

    #[test]
    fn app_limited_samples_hold() {
        let mut limit = primed(20, ms(10));
        for _ in 0..50 {
            limit.on_sample(&Sample::new(ms(10), 9, false)); // 9 * 2 < 20
        }
        assert_eq!(limit.current(), 20);
    }

    #[test]
    fn a_lower_rtt_becomes_rtt_noload_without_moving_the_limit() {
        let mut limit = primed(20, ms(10));
        busy(&mut limit, ms(5));
        assert_eq!(limit.rtt_noload(), Some(ms(5)));
        assert_eq!(limit.current(), 20);
        busy(&mut limit, ms(10)); // now queue = ceil(20 * 0.5) = 10 > beta
        assert_eq!(limit.current(), 19);
    }

    #[test]
    fn probes_reset_rtt_noload_every_multiplier_times_limit_samples() {
        // Limit 10 (pinned), multiplier 2: every 20th non-dropped sample probes.
        let mut limit = Vegas::new(10).with_bounds(10, 10).with_probe_multiplier(2);
        let idle = |rtt| Sample::new(rtt, 1, false); // app-limited: limit stays 10
        limit.on_sample(&idle(ms(10)));
        assert_eq!(limit.rtt_noload(), Some(ms(10)));
        for _ in 2..20 {
            limit.on_sample(&idle(ms(50)));
            limit.on_sample(&Sample::new(ms(1), 1, true)); // drops do not count
            assert_eq!(limit.rtt_noload(), Some(ms(10)));
        }
        limit.on_sample(&idle(ms(50))); // sample 20
        assert_eq!(limit.rtt_noload(), Some(ms(50)));

        let mut limit = Vegas::new(10).with_probe_multiplier(2);
        let mut probes = Vec::new();
        for n in 1..=60 {
            let rtt = ms(100 + n);
            limit.on_sample(&idle(rtt));
            if limit.rtt_noload() == Some(rtt) && n > 1 {
                probes.push(n);
            }
        }
        assert_eq!(probes, [20, 40, 60]);
    }

    #[test]
    fn smoothing_moves_part_of_the_way() {
        let mut limit = primed(20, ms(10)).with_smoothing(0.5);
        busy(&mut limit, ms(10));
        assert_eq!(limit.current(), 23); // 20 + 0.5 * 6
    }

    #[test]
    fn stops_at_the_bounds() {
        let mut limit = primed(20, ms(10)).with_bounds(5, 30);
        for _ in 0..10 {
            busy(&mut limit, ms(10));
        }
        assert_eq!(limit.current(), 30);
        for _ in 0..40 {
            limit.on_sample(&Sample::new(ms(10), 30, true));
        }
        assert_eq!(limit.current(), 5);
    }

    #[test]
    fn bounds_are_normalized_and_clamp_the_limit() {
        let limit = Vegas::new(50).with_bounds(0, 10);
        assert_eq!((limit.min_limit(), limit.max_limit()), (1, 10));
        assert_eq!(limit.current(), 10);
        let limit = Vegas::new(3).with_bounds(5, 2);
        assert_eq!((limit.min_limit(), limit.max_limit()), (5, 5));
        assert_eq!(limit.current(), 5);
    }

    #[test]
    #[should_panic(expected = "probe_multiplier")]
    fn rejects_a_zero_probe_multiplier() {
        let _ = Vegas::new(10).with_probe_multiplier(0);
    }

    #[test]
    #[should_panic(expected = "smoothing")]
    fn rejects_smoothing_above_one() {
        let _ = Vegas::new(10).with_smoothing(1.5);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn stays_within_bounds(
            min in 1usize..50,
            span in 0usize..1200,
            initial in 0usize..1500,
            probe in 1usize..40,
            smoothing in 0.05f64..=1.0,
            samples in proptest::collection::vec(super::super::testing::any_sample(2000), 0..300),
        ) {
            let max = min + span;
            let mut limit = Vegas::new(initial)
                .with_bounds(min, max)
                .with_probe_multiplier(probe)
                .with_smoothing(smoothing);
            prop_assert!((min..=max).contains(&limit.current()));
            for sample in &samples {
                limit.on_sample(sample);
                prop_assert!((min..=max).contains(&limit.current()), "{limit:?}");
                prop_assert!(limit.limit.is_finite());
            }
        }
    }
}
