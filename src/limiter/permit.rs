use std::fmt;

use tokio::time::Instant;

use super::fifo::Shared;
use crate::limit::Sample;
use crate::sync::Arc;

/// What a finished request says about load; decides which sample, if any, the
/// limit algorithm and the retry estimate get when the permit is dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The request ran to its end (whether the tool succeeded or not): its
    /// service time is a sample. The default.
    #[default]
    Success,
    /// The request ended for reasons unrelated to load (its caller cancelled
    /// it, it panicked): no sample.
    Ignore,
    /// The request failed in a way that signals overload (a timeout further
    /// down): a sample marked `dropped`, so an adaptive limit backs off.
    Dropped,
}

/// A slot held by one request. Dropping it gives the slot back — to the head
/// of the queue if anyone waits — exactly once, whatever the reason: normal
/// completion, an error, cancellation of the future that holds it, or a panic
/// unwinding through it.
#[must_use = "the slot is given back as soon as the permit is dropped"]
pub struct Permit {
    shared: Arc<Shared>,
    admitted_at: Instant,
    inflight: usize,
    outcome: Outcome,
}

impl Permit {
    pub(crate) fn new(shared: Arc<Shared>, admitted_at: Instant, inflight: usize) -> Self {
        Self {
            shared,
            admitted_at,
            inflight,
            outcome: Outcome::Success,
        }
    }

    /// When the slot was handed to this request (its service time starts here).
    pub fn admitted_at(&self) -> Instant {
        self.admitted_at
    }

    /// Sets the outcome reported when the permit is dropped. A permit dropped
    /// while its thread panics always reports [`Outcome::Ignore`].
    pub fn set_outcome(&mut self, outcome: Outcome) {
        self.outcome = outcome;
    }

    /// The outcome that will be reported.
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let now = Instant::now();
        let outcome = if std::thread::panicking() {
            Outcome::Ignore
        } else {
            self.outcome
        };
        let rtt = now.saturating_duration_since(self.admitted_at);
        let sample = match outcome {
            Outcome::Success => Some(Sample::new(rtt, self.inflight, false)),
            Outcome::Dropped => Some(Sample::new(rtt, self.inflight, true)),
            Outcome::Ignore => None,
        };
        self.shared.release(sample, now);
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("admitted_at", &self.admitted_at)
            .field("inflight", &self.inflight)
            .field("outcome", &self.outcome)
            .finish_non_exhaustive()
    }
}
