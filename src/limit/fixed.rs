use super::{Limit, Sample};

/// A limit that never changes: `max_concurrent` from the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedLimit {
    limit: usize,
}

impl FixedLimit {
    /// A fixed limit of `limit` (values below 1 act as 1).
    pub fn new(limit: usize) -> Self {
        Self { limit }
    }
}

impl Limit for FixedLimit {
    fn current(&self) -> usize {
        self.limit
    }

    fn on_sample(&mut self, _sample: &Sample) {}
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn ignores_samples() {
        let mut limit = FixedLimit::new(7);
        limit.on_sample(&Sample::new(Duration::from_secs(9), 7, true));
        assert_eq!(limit.current(), 7);
    }
}
