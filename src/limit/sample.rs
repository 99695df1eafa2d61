use std::time::Duration;

/// One observation fed to a [`Limit`](super::Limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Sample {
    /// Time from admission to release. Zero for a dropped sample of a permit
    /// that was not timed (a drop is always fed; its time is not known).
    pub rtt: Duration,
    /// In use when this one was admitted, itself included: slots of the
    /// global limit (weights summed) for the global limit's algorithm, calls
    /// of the tool for a tool's own limit.
    pub inflight: usize,
    /// The request failed in a way that signals overload (a timeout, a
    /// rejection further down): the algorithm should back off.
    pub dropped: bool,
}

impl Sample {
    /// Builds a sample.
    pub fn new(rtt: Duration, inflight: usize, dropped: bool) -> Self {
        Self {
            rtt,
            inflight,
            dropped,
        }
    }
}
