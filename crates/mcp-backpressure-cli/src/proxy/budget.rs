//! A byte budget: how many bytes of messages the proxy may hold at once in
//! one direction. Every message held (read but not yet written, or waiting
//! for admission) holds a [`Lease`] on its size; when the budget is spent,
//! the reader waits — backpressure to the peer — instead of growing.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes charged per message on top of its length (the bookkeeping around
/// it), so that a flood of tiny messages is bounded too.
pub const PER_MESSAGE: usize = 256;

/// A byte budget. Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct Budget {
    bytes: Arc<Semaphore>,
    total: u32,
}

/// Bytes held from a [`Budget`]; returned when dropped.
#[derive(Debug)]
pub struct Lease(#[allow(dead_code)] OwnedSemaphorePermit);

impl Budget {
    /// A budget of `total` bytes (at most 4 GiB).
    pub fn new(total: usize) -> Self {
        let total = u32::try_from(total).unwrap_or(u32::MAX).max(1);
        Self {
            bytes: Arc::new(Semaphore::new(total as usize)),
            total,
        }
    }

    /// Waits until `len` bytes (plus [`PER_MESSAGE`]) are free, and holds
    /// them. A message larger than the whole budget takes the whole budget.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future holds nothing (tokio's semaphore
    /// is fair and gives back a partial acquisition).
    pub async fn reserve(&self, len: usize) -> Lease {
        let want = u32::try_from(len.saturating_add(PER_MESSAGE))
            .unwrap_or(u32::MAX)
            .min(self.total);
        let permit = self
            .bytes
            .clone()
            .acquire_many_owned(want)
            .await
            .expect("the budget's semaphore is never closed");
        Lease(permit)
    }

    /// Bytes free now.
    #[cfg(test)]
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_budget_holds_back_until_bytes_are_returned() {
        let budget = Budget::new(1000);
        let a = budget.reserve(500).await;
        assert_eq!(budget.available(), 1000 - 500 - PER_MESSAGE);
        let mut waiting = tokio_test::task::spawn(budget.reserve(500));
        assert!(waiting.poll().is_pending());
        drop(a);
        assert!(waiting.is_woken());
        let _b = match waiting.poll() {
            std::task::Poll::Ready(lease) => lease,
            std::task::Poll::Pending => panic!("the bytes were returned"),
        };
        // Larger than the whole budget: takes all of it.
        drop(_b);
        let all = budget.reserve(10_000).await;
        assert_eq!(budget.available(), 0);
        drop(all);
        assert_eq!(budget.available(), 1000);
    }
}
