use std::time::Duration;

/// One observation fed to a [`Limit`](super::Limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Sample {
    /// Time from admission to release.
    pub rtt: Duration,
    /// Requests holding a slot when this one was admitted, itself included.
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
