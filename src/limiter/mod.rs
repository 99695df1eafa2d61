//! Enforcement: slots, partitions, the wait queue, permits.

mod acquire;
mod admission;
mod discipline;
mod partitions;
mod permit;
mod queue;
mod request;
mod retry;
mod state;
mod waiter;

#[cfg(all(test, loom))]
mod loom_tests;

pub use admission::{Limiter, LimiterBuilder, OnOverload};
pub use permit::{Outcome, Permit};
pub use request::Request;
