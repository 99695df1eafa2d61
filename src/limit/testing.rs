//! What the algorithms' tests share: random samples for the bound properties.

use std::time::Duration;

use proptest::prelude::*;

use super::Sample;

/// Any rtt, the extremes included.
fn any_rtt() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::MAX),
        (0u64..10_000).prop_map(Duration::from_millis),
    ]
}

/// Any sample with up to `max_inflight` in flight, one in five dropped.
pub(super) fn any_sample(max_inflight: usize) -> impl Strategy<Value = Sample> {
    (any_rtt(), 0..max_inflight, proptest::bool::weighted(0.2))
        .prop_map(|(rtt, inflight, dropped)| Sample::new(rtt, inflight, dropped))
}
