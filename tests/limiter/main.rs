//! Behaviour of the limiter: every scenario of the Python package's suite,
//! deterministic on tokio's paused clock.
#![cfg(not(loom))]

mod cancellation;
mod concurrency;
mod metrics;
mod queue_bound;
mod queue_timeout;
mod regressions;
mod retry_after;
mod support;
