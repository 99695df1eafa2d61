//! Enforcement: slots, the FIFO wait queue, permits.

mod fifo;
mod permit;
mod retry;
mod state;
mod waiter;
mod waiters;

#[cfg(all(test, not(loom)))]
mod tests;

#[cfg(all(test, loom))]
mod loom_tests;

pub use fifo::{Limiter, LimiterBuilder, OnOverload};
pub use permit::{Outcome, Permit};
