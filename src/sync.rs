//! The synchronization primitives the limiter is built on, swapped for loom's
//! when the crate is compiled with `--cfg loom` so the model checker can
//! explore every interleaving.

#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard};
