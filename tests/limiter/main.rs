//! Behaviour of the limiter: every scenario of the Python package's suite,
//! then keyed admission, adaptive limits, disciplines and reconfiguration,
//! deterministic on tokio's paused clock.
#![cfg(not(loom))]

mod adaptive;
mod cancellation;
mod concurrency;
mod continuations;
mod disciplines;
mod keyed;
mod metrics;
mod queue_bound;
mod queue_timeout;
mod reconfigure;
mod regressions;
mod retry_after;
mod review2_defects;
mod review_defects;
mod support;
