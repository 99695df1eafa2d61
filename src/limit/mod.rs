//! Limit algorithms: how many requests may run at once.
//!
//! An algorithm is a formula fed [`Sample`]s; it never blocks, never sleeps and
//! knows nothing of queues. The [`Limiter`](crate::Limiter) enforces whatever
//! [`Limit::current`] says after each sample, so an adaptive algorithm can be
//! swapped in without touching enforcement.
//!
//! | Algorithm | Moves the limit on | Origin |
//! |---|---|---|
//! | [`FixedLimit`] | nothing: `max_concurrent` | — |
//! | [`Aimd`] | failures (drops, timeouts): +1 / ×0.9 | Netflix concurrency-limits `AIMDLimit` |
//! | [`Gradient2`] | latency against its long-term average | Netflix concurrency-limits `Gradient2Limit` |
//! | [`Vegas`] | latency above the no-load latency (estimated queueing) | Netflix concurrency-limits `VegasLimit`, after TCP Vegas |
//!
//! The adaptive algorithms are independent rewrites of the Java originals in
//! <https://github.com/Netflix/concurrency-limits>; each type's documentation
//! gives its formula, its parameters and where it departs from the original.
//! All of them stay within `[min_limit, max_limit]` (never below 1), do O(1)
//! work per sample and allocate nothing, read no clock and draw no random
//! numbers: the same samples always give the same limits.
//!
//! [`LimitAlgorithm`] selects one by name (`"fixed"`, `"aimd"`, `"gradient2"`,
//! `"vegas"`) and builds it; [`check_bounds`] validates the bounds first.

mod aimd;
mod algorithm;
mod fixed;
mod gradient2;
mod sample;
#[cfg(all(test, not(loom)))]
mod testing;
mod vegas;

pub use aimd::Aimd;
pub use algorithm::{LimitAlgorithm, ParseLimitAlgorithmError, check_bounds};
pub use fixed::FixedLimit;
pub use gradient2::Gradient2;
pub use sample::Sample;
pub use vegas::Vegas;

/// A concurrency-limit algorithm.
///
/// The limiter calls [`Limit::on_sample`] once for every request whose
/// outcome says something about load (see [`Outcome`](crate::Outcome)) and
/// reads [`Limit::current`] afterwards. Both are called with the limiter's lock
/// held: keep them short and never block. A panic in either is contained (the
/// limiter keeps its previous limit) but is a bug in the algorithm.
pub trait Limit: Send + 'static {
    /// The limit in force. Values below 1 are treated as 1.
    fn current(&self) -> usize;

    /// Feeds one sample.
    fn on_sample(&mut self, sample: &Sample);
}

/// Bounds as the adaptive algorithms apply them: `min_limit` at least 1,
/// `max_limit` at least `min_limit`.
fn normalize_bounds(min_limit: usize, max_limit: usize) -> (usize, usize) {
    let min_limit = min_limit.max(1);
    (min_limit, max_limit.max(min_limit))
}
