use std::time::Duration;

use super::{Limit, Sample, normalize_bounds};

/// Additive increase, multiplicative decrease: a loss-based adaptive limit.
///
/// The algorithm of Netflix concurrency-limits' `AIMDLimit`
/// (<https://github.com/Netflix/concurrency-limits>, `concurrency-limits-core`,
/// `limit/AIMDLimit.java`), rewritten here. It looks only at failures, never at
/// latency trends: while requests succeed the limit climbs one slot at a time,
/// and every sign of overload cuts it by a fixed ratio.
///
/// For each sample, with `limit` the current limit:
///
/// - **overload** — `sample.dropped`, or `sample.rtt > timeout`:
///   `limit = max(min_limit, min(limit - 1, floor(limit * backoff_ratio)))`,
///   so the limit always drops by at least one slot unless it is already at
///   `min_limit`;
/// - **success while the limit is used** — `sample.inflight * 2 >= limit`:
///   `limit = min(max_limit, limit + 1)`;
/// - **success while the limit is mostly idle** — `sample.inflight * 2 <
///   limit`: no change, so a quiet server's limit does not creep up to
///   `max_limit` without ever having been tested.
///
/// | Parameter | Unit | Default | Setter |
/// |---|---|---|---|
/// | initial limit | requests | required | [`Aimd::new`] |
/// | `min_limit` | requests, `>= 1` | 1 | [`Aimd::with_bounds`] |
/// | `max_limit` | requests, `>= min_limit` | 200, or the initial limit if larger | [`Aimd::with_bounds`] |
/// | `backoff_ratio` | factor in `[0.5, 1)` | 0.9 | [`Aimd::with_backoff_ratio`] |
/// | `timeout` | duration, `> 0` | 5 s | [`Aimd::with_timeout`] |
///
/// Netflix's defaults for `backoff_ratio`, `timeout` and `max_limit` are kept;
/// its `min_limit` default (20) is not, because it would sit above many of
/// the small limits MCP servers run with.
///
/// ```
/// use std::time::Duration;
///
/// use mcp_backpressure::limit::{Aimd, Limit, Sample};
///
/// let mut limit = Aimd::new(10).with_bounds(2, 20);
/// limit.on_sample(&Sample::new(Duration::from_millis(50), 10, false));
/// assert_eq!(limit.current(), 11);
/// limit.on_sample(&Sample::new(Duration::from_millis(50), 10, true));
/// assert_eq!(limit.current(), 9); // floor(11 * 0.9)
/// ```
#[derive(Clone, Debug)]
pub struct Aimd {
    limit: usize,
    min_limit: usize,
    max_limit: usize,
    backoff_ratio: f64,
    timeout: Duration,
}

impl Aimd {
    /// Default multiplicative decrease on overload.
    pub const DEFAULT_BACKOFF_RATIO: f64 = 0.9;
    /// Default latency above which a sample counts as dropped.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default `max_limit` (raised to the initial limit when that is larger).
    pub const DEFAULT_MAX_LIMIT: usize = 200;

    /// Starts at `initial` (values below 1 act as 1) with bounds
    /// `[1, max(200, initial)]` and the default parameters.
    pub fn new(initial: usize) -> Self {
        let initial = initial.max(1);
        Self {
            limit: initial,
            min_limit: 1,
            max_limit: Self::DEFAULT_MAX_LIMIT.max(initial),
            backoff_ratio: Self::DEFAULT_BACKOFF_RATIO,
            timeout: Self::DEFAULT_TIMEOUT,
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
        self.limit = self.limit.clamp(self.min_limit, self.max_limit);
        self
    }

    /// Sets the factor the limit is multiplied by on overload.
    ///
    /// # Panics
    ///
    /// If `backoff_ratio` is not in `[0.5, 1)` (the range Netflix allows).
    pub fn with_backoff_ratio(mut self, backoff_ratio: f64) -> Self {
        assert!(
            (0.5..1.0).contains(&backoff_ratio),
            "Aimd backoff_ratio must be in [0.5, 1), got {backoff_ratio}"
        );
        self.backoff_ratio = backoff_ratio;
        self
    }

    /// Sets the latency above which a successful sample still counts as
    /// dropped.
    ///
    /// # Panics
    ///
    /// If `timeout` is zero.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        assert!(!timeout.is_zero(), "Aimd timeout must be greater than zero");
        self.timeout = timeout;
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

    /// The factor the limit is multiplied by on overload.
    pub fn backoff_ratio(&self) -> f64 {
        self.backoff_ratio
    }

    /// The latency above which a sample counts as dropped.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl Limit for Aimd {
    fn current(&self) -> usize {
        self.limit
    }

    fn on_sample(&mut self, sample: &Sample) {
        let limit = self.limit;
        let next = if sample.dropped || sample.rtt > self.timeout {
            // `as` saturates; the product is below `limit` since the ratio < 1.
            let backed_off = (limit as f64 * self.backoff_ratio) as usize;
            backed_off.min(limit.saturating_sub(1))
        } else if sample.inflight.saturating_mul(2) >= limit {
            limit.saturating_add(1)
        } else {
            limit
        };
        self.limit = next.clamp(self.min_limit, self.max_limit);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const FAST: Duration = Duration::from_millis(10);

    fn ok(inflight: usize) -> Sample {
        Sample::new(FAST, inflight, false)
    }

    fn dropped() -> Sample {
        Sample::new(FAST, 1, true)
    }

    #[test]
    fn defaults() {
        let limit = Aimd::new(10);
        assert_eq!(limit.current(), 10);
        assert_eq!((limit.min_limit(), limit.max_limit()), (1, 200));
        assert_eq!(limit.backoff_ratio(), 0.9);
        assert_eq!(limit.timeout(), Duration::from_secs(5));
        assert_eq!(Aimd::new(500).max_limit(), 500);
        assert_eq!(Aimd::new(0).current(), 1);
    }

    #[test]
    fn grows_by_one_per_used_sample() {
        let mut limit = Aimd::new(10).with_bounds(1, 100);
        for expected in 11..=15 {
            // Half the limit in use is enough.
            limit.on_sample(&ok(limit.current() / 2 + limit.current() % 2));
            assert_eq!(limit.current(), expected);
        }
    }

    #[test]
    fn does_not_grow_when_mostly_idle() {
        let mut limit = Aimd::new(10).with_bounds(1, 100);
        for _ in 0..50 {
            limit.on_sample(&ok(4)); // 4 * 2 < 10
        }
        assert_eq!(limit.current(), 10);
        limit.on_sample(&ok(5));
        assert_eq!(limit.current(), 11);
    }

    #[test]
    fn backs_off_by_the_ratio_on_drop() {
        let mut limit = Aimd::new(100).with_bounds(1, 200);
        limit.on_sample(&dropped());
        assert_eq!(limit.current(), 90);
        limit.on_sample(&dropped());
        assert_eq!(limit.current(), 81);
        limit.on_sample(&dropped());
        assert_eq!(limit.current(), 72); // floor(72.9)

        let mut halving = Aimd::new(100).with_backoff_ratio(0.5);
        halving.on_sample(&dropped());
        assert_eq!(halving.current(), 50);
    }

    #[test]
    fn a_slow_success_counts_as_dropped() {
        let mut limit = Aimd::new(100).with_timeout(Duration::from_secs(1));
        limit.on_sample(&Sample::new(Duration::from_secs(1), 100, false));
        assert_eq!(limit.current(), 101, "rtt == timeout is not a drop");
        limit.on_sample(&Sample::new(Duration::from_millis(1001), 100, false));
        assert_eq!(limit.current(), 90); // floor(101 * 0.9)

        let mut default_timeout = Aimd::new(100);
        default_timeout.on_sample(&Sample::new(Duration::from_secs(6), 100, false));
        assert_eq!(default_timeout.current(), 90);
    }

    #[test]
    fn small_limits_still_step_down() {
        // floor(5 * 0.9) = 4, floor(2 * 0.9) = 1: every drop removes a slot.
        let mut limit = Aimd::new(5).with_bounds(1, 10);
        let seen: Vec<usize> = (0..5)
            .map(|_| {
                limit.on_sample(&dropped());
                limit.current()
            })
            .collect();
        assert_eq!(seen, [4, 3, 2, 1, 1]);
    }

    #[test]
    fn stops_at_the_bounds() {
        let mut limit = Aimd::new(8).with_bounds(7, 9);
        for _ in 0..5 {
            limit.on_sample(&ok(100));
        }
        assert_eq!(limit.current(), 9);
        for _ in 0..5 {
            limit.on_sample(&dropped());
        }
        assert_eq!(limit.current(), 7);
    }

    #[test]
    fn bounds_are_normalized_and_clamp_the_limit() {
        let limit = Aimd::new(50).with_bounds(0, 10);
        assert_eq!((limit.min_limit(), limit.max_limit()), (1, 10));
        assert_eq!(limit.current(), 10);
        let limit = Aimd::new(3).with_bounds(5, 2);
        assert_eq!((limit.min_limit(), limit.max_limit()), (5, 5));
        assert_eq!(limit.current(), 5);
    }

    #[test]
    #[should_panic(expected = "backoff_ratio")]
    fn rejects_a_ratio_of_one() {
        let _ = Aimd::new(10).with_backoff_ratio(1.0);
    }

    #[test]
    #[should_panic(expected = "timeout")]
    fn rejects_a_zero_timeout() {
        let _ = Aimd::new(10).with_timeout(Duration::ZERO);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn stays_within_bounds(
            min in 1usize..50,
            span in 0usize..300,
            initial in 0usize..400,
            samples in proptest::collection::vec(super::super::testing::any_sample(600), 0..300),
        ) {
            let max = min + span;
            let mut limit = Aimd::new(initial).with_bounds(min, max);
            prop_assert!((min..=max).contains(&limit.current()));
            for sample in &samples {
                limit.on_sample(sample);
                prop_assert!((min..=max).contains(&limit.current()), "{limit:?}");
            }
        }
    }
}
