//! Limit algorithms: how many requests may run at once.
//!
//! An algorithm is a formula fed [`Sample`]s; it never blocks, never sleeps and
//! knows nothing of queues. The [`Limiter`](crate::Limiter) enforces whatever
//! [`Limit::current`] says after each sample, so an adaptive algorithm can be
//! swapped in without touching enforcement.

mod fixed;
mod sample;

pub use fixed::FixedLimit;
pub use sample::Sample;

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
