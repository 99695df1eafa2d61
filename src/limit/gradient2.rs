use std::time::Duration;

use super::{Limit, Sample, normalize_bounds};

/// A latency-gradient limit: grows while the latency of each request stays
/// near the long-term average, shrinks when it climbs above it.
///
/// The algorithm of Netflix concurrency-limits' `Gradient2Limit`
/// (<https://github.com/Netflix/concurrency-limits>, `concurrency-limits-core`,
/// `limit/Gradient2Limit.java`), rewritten here. It compares two latencies:
///
/// - the **short rtt**: the sample's own `rtt`;
/// - the **long rtt**: an exponentially weighted moving average of the rtt
///   over about `long_window` samples (`weight = 2 / (long_window + 1)`),
///   which is a plain mean over the first 10 samples so that one early
///   outlier does not dominate it (Netflix's warm-up).
///
/// For each non-dropped sample, with `limit` the current (fractional) limit:
///
/// ```text
/// if long_rtt > 2 * short_rtt:  long_rtt *= 0.95             // drift correction
/// if inflight < limit / 2:      keep limit                   // app-limited
/// gradient = clamp(tolerance * long_rtt / short_rtt, 0.5, 1.0)
/// queue    = queue_size, or max(1, floor(sqrt(limit)))
/// target   = limit * gradient + queue
/// limit    = clamp(limit * (1 - smoothing) + target * smoothing, min_limit, max_limit)
/// ```
///
/// While latency stays within `tolerance` times the long average the gradient
/// is 1 and the limit grows by `smoothing * queue` per sample; when latency
/// climbs the gradient falls (never below 0.5, so one outlier cannot halve the
/// limit). The **drift correction** pulls the long average down by 5 % per
/// sample while it is more than twice the current latency — after a long
/// overload the average is inflated and would otherwise hold the gradient at
/// 1 long after latency recovered, hiding the next overload. An
/// **app-limited** sample (fewer than half the slots in use) still feeds the
/// average but never moves the limit: it says nothing about how many requests
/// the server can take.
///
/// **Dropped samples** (Netflix's `Gradient2Limit` ignores the drop flag; this
/// is this crate's choice): the sample's rtt measures a failure, not service
/// time, so it is *not* fed to the long average, and the limit is updated as if
/// the gradient were at its floor (0.5) with no queue allowance:
/// `limit = limit * (1 - smoothing / 2)`, a 10 % cut with the default
/// smoothing, applied even when app-limited.
///
/// `current()` is `floor(limit)`, within `[min_limit, max_limit]`.
///
/// | Parameter | Unit | Default | Setter |
/// |---|---|---|---|
/// | initial limit | requests | required | [`Gradient2::new`] |
/// | `min_limit` | requests, `>= 1` | 1 | [`Gradient2::with_bounds`] |
/// | `max_limit` | requests, `>= min_limit` | 200, or the initial limit if larger | [`Gradient2::with_bounds`] |
/// | `long_window` | samples, `>= 1` | 600 | [`Gradient2::with_long_window`] |
/// | `tolerance` | ratio, `>= 1` | 1.5 | [`Gradient2::with_tolerance`] |
/// | `smoothing` | factor in `(0, 1]` | 0.2 | [`Gradient2::with_smoothing`] |
/// | `queue_size` | requests | `sqrt(limit)`, at least 1 | [`Gradient2::with_queue_size`] |
///
/// Netflix's `Gradient2Limit` defaults its queue allowance to a constant 4;
/// the square root (what its first `GradientLimit` used) is the default here
/// so that the growth step scales with the limit. Its `min_limit` default
/// (20) is replaced by 1 for the same reason as in [`Aimd`](super::Aimd).
///
/// ```
/// use std::time::Duration;
///
/// use mcp_backpressure::limit::{Gradient2, Limit, Sample};
///
/// let mut limit = Gradient2::new(20).with_bounds(1, 100);
/// for _ in 0..50 {
///     let inflight = limit.current();
///     limit.on_sample(&Sample::new(Duration::from_millis(40), inflight, false));
/// }
/// assert!(limit.current() > 20); // steady latency: the limit grows
/// ```
#[derive(Clone, Debug)]
pub struct Gradient2 {
    limit: f64,
    min_limit: usize,
    max_limit: usize,
    smoothing: f64,
    tolerance: f64,
    queue_size: Option<usize>,
    long_rtt: LongRtt,
}

impl Gradient2 {
    /// Default number of samples the long rtt average spans.
    pub const DEFAULT_LONG_WINDOW: usize = 600;
    /// Default latency increase tolerated before the limit shrinks.
    pub const DEFAULT_TOLERANCE: f64 = 1.5;
    /// Default weight of a new estimate against the current limit.
    pub const DEFAULT_SMOOTHING: f64 = 0.2;
    /// Default `max_limit` (raised to the initial limit when that is larger).
    pub const DEFAULT_MAX_LIMIT: usize = 200;
    /// Samples averaged plainly before the long rtt becomes an EWMA.
    const WARMUP: u32 = 10;

    /// Starts at `initial` (values below 1 act as 1) with bounds
    /// `[1, max(200, initial)]` and the default parameters.
    pub fn new(initial: usize) -> Self {
        let initial = initial.max(1);
        Self {
            limit: initial as f64,
            min_limit: 1,
            max_limit: Self::DEFAULT_MAX_LIMIT.max(initial),
            smoothing: Self::DEFAULT_SMOOTHING,
            tolerance: Self::DEFAULT_TOLERANCE,
            queue_size: None,
            long_rtt: LongRtt::new(Self::DEFAULT_LONG_WINDOW),
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

    /// Sets how many samples the long rtt average spans (its weight is
    /// `2 / (long_window + 1)`). Resets the average.
    ///
    /// # Panics
    ///
    /// If `long_window` is 0.
    pub fn with_long_window(mut self, long_window: usize) -> Self {
        assert!(long_window >= 1, "Gradient2 long_window must be at least 1");
        self.long_rtt = LongRtt::new(long_window);
        self
    }

    /// Sets how much the latency may exceed the long average before the limit
    /// shrinks: 2.0 tolerates a doubling.
    ///
    /// # Panics
    ///
    /// If `tolerance` is below 1 or not finite.
    pub fn with_tolerance(mut self, tolerance: f64) -> Self {
        assert!(
            tolerance.is_finite() && tolerance >= 1.0,
            "Gradient2 tolerance must be a finite number >= 1, got {tolerance}"
        );
        self.tolerance = tolerance;
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
            "Gradient2 smoothing must be in (0, 1], got {smoothing}"
        );
        self.smoothing = smoothing;
        self
    }

    /// Sets a fixed queue allowance (requests the limit may grow by per
    /// estimate) instead of `sqrt(limit)`.
    pub fn with_queue_size(mut self, queue_size: usize) -> Self {
        self.queue_size = Some(queue_size);
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

    /// How many samples the long rtt average spans.
    pub fn long_window(&self) -> usize {
        self.long_rtt.window
    }

    /// The latency increase tolerated before the limit shrinks.
    pub fn tolerance(&self) -> f64 {
        self.tolerance
    }

    /// The weight of each new estimate against the current limit.
    pub fn smoothing(&self) -> f64 {
        self.smoothing
    }

    /// The fixed queue allowance, or `None` for `sqrt(limit)`.
    pub fn queue_size(&self) -> Option<usize> {
        self.queue_size
    }

    /// The long-term average rtt (zero before the first sample).
    pub fn long_rtt(&self) -> Duration {
        // `as` saturates.
        Duration::from_nanos(self.long_rtt.value.round() as u64)
    }

    fn queue_allowance(&self) -> f64 {
        match self.queue_size {
            Some(queue) => queue as f64,
            None => self.limit.sqrt().floor().max(1.0),
        }
    }
}

impl Limit for Gradient2 {
    fn current(&self) -> usize {
        // `as` saturates and maps NaN to 0; the clamp restores the bounds.
        (self.limit as usize).clamp(self.min_limit, self.max_limit)
    }

    fn on_sample(&mut self, sample: &Sample) {
        let limit = self.limit;
        let next = if sample.dropped {
            // Gradient at its floor, no queue allowance.
            limit * (1.0 - self.smoothing) + limit * 0.5 * self.smoothing
        } else {
            // In nanoseconds, at least one, so the ratios below stay finite.
            let short = (sample.rtt.as_nanos() as f64).max(1.0);
            let mut long = self.long_rtt.add(short);
            if long > 2.0 * short {
                long *= 0.95;
                self.long_rtt.value = long;
            }
            if (sample.inflight as f64) < limit / 2.0 {
                return;
            }
            let gradient = (self.tolerance * long / short).clamp(0.5, 1.0);
            let target = limit * gradient + self.queue_allowance();
            limit * (1.0 - self.smoothing) + target * self.smoothing
        };
        if next.is_finite() {
            self.limit = next.clamp(self.min_limit as f64, self.max_limit as f64);
        }
    }
}

/// The long rtt: a plain mean over the first [`Gradient2::WARMUP`] samples,
/// then an exponentially weighted moving average, in nanoseconds.
#[derive(Clone, Debug)]
struct LongRtt {
    window: usize,
    factor: f64,
    count: u32,
    sum: f64,
    value: f64,
}

impl LongRtt {
    fn new(window: usize) -> Self {
        Self {
            window,
            factor: 2.0 / (window as f64 + 1.0),
            count: 0,
            sum: 0.0,
            value: 0.0,
        }
    }

    /// Adds a sample and returns the new average.
    fn add(&mut self, rtt: f64) -> f64 {
        if self.count < Gradient2::WARMUP {
            self.count += 1;
            self.sum += rtt;
            self.value = self.sum / f64::from(self.count);
        } else {
            self.value = self.value * (1.0 - self.factor) + rtt * self.factor;
        }
        self.value
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Feeds `n` samples of `rtt` with every slot in use.
    fn busy(limit: &mut Gradient2, rtt: Duration, n: usize) {
        for _ in 0..n {
            let inflight = limit.current();
            limit.on_sample(&Sample::new(rtt, inflight, false));
        }
    }

    #[test]
    fn defaults() {
        let limit = Gradient2::new(20);
        assert_eq!(limit.current(), 20);
        assert_eq!((limit.min_limit(), limit.max_limit()), (1, 200));
        assert_eq!(limit.long_window(), 600);
        assert_eq!(limit.tolerance(), 1.5);
        assert_eq!(limit.smoothing(), 0.2);
        assert_eq!(limit.queue_size(), None);
        assert_eq!(limit.long_rtt(), Duration::ZERO);
        assert_eq!(Gradient2::new(0).current(), 1);
    }

    #[test]
    fn long_rtt_warms_up_with_a_plain_mean() {
        let mut limit = Gradient2::new(10).with_long_window(3);
        limit.on_sample(&Sample::new(ms(10), 10, false));
        limit.on_sample(&Sample::new(ms(20), 10, false));
        assert_eq!(limit.long_rtt(), ms(15));
        for _ in 0..8 {
            limit.on_sample(&Sample::new(ms(15), 10, false));
        }
        assert_eq!(limit.long_rtt(), ms(15));
        // Past the warm-up: EWMA with weight 2 / (3 + 1).
        limit.on_sample(&Sample::new(ms(25), 10, false));
        assert_eq!(limit.long_rtt(), ms(20));
    }

    #[test]
    fn steady_latency_grows_to_max() {
        let mut limit = Gradient2::new(10).with_bounds(1, 100);
        limit.on_sample(&Sample::new(ms(40), 10, false));
        // gradient 1, queue floor(sqrt(10)) = 3: 10 + 0.2 * 3.
        assert!((limit.limit - 10.6).abs() < 1e-9, "{}", limit.limit);
        let mut previous = limit.current();
        for _ in 0..40 {
            busy(&mut limit, ms(40), 5);
            assert!(limit.current() >= previous);
            previous = limit.current();
        }
        assert_eq!(limit.current(), 100);
    }

    #[test]
    fn latency_doubling_shrinks_the_limit() {
        let mut limit = Gradient2::new(100).with_bounds(1, 200);
        busy(&mut limit, ms(10), 20);
        let before = limit.current();
        assert!(before > 100, "{before}");
        busy(&mut limit, ms(20), 1);
        assert!(limit.current() < before, "{} !< {before}", limit.current());
        busy(&mut limit, ms(20), 30);
        let after = limit.current();
        assert!(after < before * 3 / 4, "{after} vs {before}");
    }

    #[test]
    fn tolerance_absorbs_small_increases() {
        let mut limit = Gradient2::new(100).with_bounds(1, 200);
        busy(&mut limit, ms(10), 20);
        let before = limit.current();
        // 1.4x is within the 1.5x tolerance: still growing.
        busy(&mut limit, ms(14), 10);
        assert!(limit.current() > before);
    }

    #[test]
    fn app_limited_samples_do_not_grow() {
        let mut limit = Gradient2::new(40).with_bounds(1, 200);
        for _ in 0..100 {
            limit.on_sample(&Sample::new(ms(10), 19, false)); // 19 < 40 / 2
        }
        assert_eq!(limit.current(), 40);
        assert_eq!(
            limit.long_rtt(),
            ms(10),
            "app-limited samples feed the average"
        );
        limit.on_sample(&Sample::new(ms(10), 20, false));
        assert_eq!(limit.current(), 41); // 40 + 0.2 * floor(sqrt(40))
    }

    #[test]
    fn recovers_after_latency_returns_to_normal() {
        let mut limit = Gradient2::new(100).with_bounds(1, 200);
        busy(&mut limit, ms(10), 20);
        busy(&mut limit, ms(100), 100);
        let low = limit.current();
        assert!(low < 50, "{low}");
        busy(&mut limit, ms(10), 300);
        assert!(limit.current() > 2 * low, "{} vs {low}", limit.current());
    }

    #[test]
    fn drift_correction_decays_an_inflated_long_rtt() {
        let mut limit = Gradient2::new(10).with_long_window(1000);
        for _ in 0..10 {
            limit.on_sample(&Sample::new(ms(100), 10, false));
        }
        assert_eq!(limit.long_rtt(), ms(100));
        limit.on_sample(&Sample::new(ms(10), 10, false));
        // EWMA alone: 100 - 90 * 2 / 1001 = 99.82 ms; the correction takes 5 % off.
        let expected = (1e8 * (1.0 - 2.0 / 1001.0) + 1e7 * 2.0 / 1001.0) * 0.95;
        let got = limit.long_rtt().as_nanos() as f64;
        assert!((got - expected).abs() <= 1.0, "{got} vs {expected}");
        for _ in 0..100 {
            limit.on_sample(&Sample::new(ms(10), 10, false));
        }
        assert!(limit.long_rtt() < ms(21), "{:?}", limit.long_rtt());
    }

    #[test]
    fn dropped_samples_shrink_and_skip_the_average() {
        let mut limit = Gradient2::new(100).with_bounds(1, 200);
        limit.on_sample(&Sample::new(ms(10), 100, false));
        let long = limit.long_rtt();
        let before = limit.limit;
        limit.on_sample(&Sample::new(Duration::from_secs(30), 1, true));
        assert!((limit.limit - before * 0.9).abs() < 1e-9);
        assert_eq!(limit.long_rtt(), long);
        for _ in 0..100 {
            limit.on_sample(&Sample::new(ms(10), 1, true));
        }
        assert_eq!(limit.current(), 1);
    }

    #[test]
    fn fixed_queue_size() {
        let mut limit = Gradient2::new(100).with_queue_size(10);
        limit.on_sample(&Sample::new(ms(10), 100, false));
        assert_eq!(limit.current(), 102); // 100 + 0.2 * 10
    }

    #[test]
    fn bounds_are_normalized_and_clamp_the_limit() {
        let limit = Gradient2::new(50).with_bounds(0, 10);
        assert_eq!((limit.min_limit(), limit.max_limit()), (1, 10));
        assert_eq!(limit.current(), 10);
        let limit = Gradient2::new(3).with_bounds(5, 2);
        assert_eq!((limit.min_limit(), limit.max_limit()), (5, 5));
        assert_eq!(limit.current(), 5);
    }

    #[test]
    #[should_panic(expected = "tolerance")]
    fn rejects_a_tolerance_below_one() {
        let _ = Gradient2::new(10).with_tolerance(0.9);
    }

    #[test]
    #[should_panic(expected = "smoothing")]
    fn rejects_zero_smoothing() {
        let _ = Gradient2::new(10).with_smoothing(0.0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn stays_within_bounds(
            min in 1usize..50,
            span in 0usize..300,
            initial in 0usize..400,
            window in 1usize..700,
            queue in proptest::option::of(0usize..50),
            samples in proptest::collection::vec(super::super::testing::any_sample(600), 0..300),
        ) {
            let max = min + span;
            let mut limit = Gradient2::new(initial)
                .with_bounds(min, max)
                .with_long_window(window);
            if let Some(queue) = queue {
                limit = limit.with_queue_size(queue);
            }
            prop_assert!((min..=max).contains(&limit.current()));
            for sample in &samples {
                limit.on_sample(sample);
                prop_assert!((min..=max).contains(&limit.current()), "{limit:?}");
                prop_assert!(limit.limit.is_finite());
            }
        }
    }
}
