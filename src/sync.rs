//! The synchronization primitives the limiter is built on, swapped for loom's
//! when the crate is compiled with `--cfg loom` so the model checker can
//! explore every interleaving.
//!
//! Outside loom the lock is `parking_lot`'s: no poisoning to check on every
//! lock and unlock (the limiter runs no code that can panic under its lock),
//! and a smaller fast path than `std`'s.

#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use parking_lot::{Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::Arc;

/// Locks `mutex`. A poisoned loom mutex (only possible in a model that
/// panicked) still guards a consistent state: no code that can panic runs
/// under the limiter's lock.
#[cfg(loom)]
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Locks `mutex`.
#[cfg(not(loom))]
#[inline]
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock()
}
