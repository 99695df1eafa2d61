use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use super::admission::Shared;
use super::queue::Grant;
use crate::limit::Sample;
use crate::sync::Arc;

/// What a finished request says about load; decides which sample, if any, the
/// limit algorithms and the retry estimate get when the permit is dropped.
///
/// The edges classify: a result is `Success`; a tool's own error, a
/// cancellation or a panic is `Ignore`; an upstream timeout or overload is
/// `Dropped`. A permit dropped without an outcome reports `Ignore`: a call
/// nobody classified says nothing about load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The request ran to its end and succeeded: its service time is a sample.
    Success,
    /// The request ended for reasons unrelated to load (its caller cancelled
    /// it, the tool failed on its own, it panicked, nobody said): no sample.
    /// The default.
    #[default]
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
    grant: Grant,
    outcome: Outcome,
    /// The shared limit's lease, freed after the local slot (field order).
    #[cfg(feature = "redis")]
    _lease: Option<crate::shared::Lease>,
}

impl Permit {
    pub(crate) fn new(shared: Arc<Shared>, grant: Grant) -> Self {
        Self {
            shared,
            grant,
            outcome: Outcome::Ignore,
            #[cfg(feature = "redis")]
            _lease: None,
        }
    }

    /// Attaches a shared limit's lease (freed after the local slot).
    #[cfg(feature = "redis")]
    pub(crate) fn attach_lease(&mut self, lease: crate::shared::Lease) {
        self._lease = Some(lease);
    }

    /// When the slot was handed to this request, if the permit is timed (its
    /// service time is then sampled when it is dropped): every request that
    /// waited in the queue or was admitted while at least half the limit was
    /// in use, and one in 32 of the others.
    pub fn admitted_at(&self) -> Option<Instant> {
        self.grant.at
    }

    /// The slots of the global limit this permit holds (its weight, at most
    /// the limit in force when it was admitted).
    pub fn cost(&self) -> usize {
        self.grant.cost
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
        let outcome = if std::thread::panicking() {
            Outcome::Ignore
        } else {
            self.outcome
        };
        let dropped = match outcome {
            Outcome::Success => false,
            Outcome::Dropped => true,
            Outcome::Ignore => {
                self.shared.release(&self.grant, None, None);
                return;
            }
        };
        match self.grant.at {
            Some(admitted_at) => {
                let now = Instant::now();
                let rtt = now.saturating_duration_since(admitted_at);
                let sample = Sample::new(rtt, self.grant.inflight as usize, dropped);
                self.shared.release(&self.grant, Some(sample), Some(now));
            }
            // An overload says what it says however long the call took: a
            // drop is fed even untimed (with no service time: the retry
            // estimate skips it, and no algorithm reads a drop's rtt).
            None if dropped => {
                let sample = Sample::new(Duration::ZERO, self.grant.inflight as usize, true);
                self.shared.release(&self.grant, Some(sample), None);
            }
            None => self.shared.release(&self.grant, None, None),
        }
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("admitted_at", &self.grant.at)
            .field("inflight", &self.grant.inflight)
            .field("cost", &self.grant.cost)
            .field("outcome", &self.outcome)
            .finish_non_exhaustive()
    }
}
