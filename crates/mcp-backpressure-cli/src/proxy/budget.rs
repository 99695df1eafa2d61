//! A byte budget: how many bytes of messages the proxy may hold at once — in
//! one direction of a stdio session, or for the HTTP request bodies being
//! read. Everything held holds a [`Lease`] on its size; when the budget is
//! spent, the reader waits — backpressure to the peer — instead of growing.
//! `buffer_bytes` (`--buffer-bytes`, default 16 MiB) sizes each.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes charged per stdio message on top of its length (the bookkeeping
/// around it), so that a flood of tiny messages is bounded too.
pub const PER_MESSAGE: usize = 256;

/// A byte budget: a semaphore counting bytes. Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct Budget {
    bytes: Arc<Semaphore>,
    total: usize,
}

/// Bytes held from a [`Budget`], given back when dropped.
#[derive(Debug)]
pub struct Lease {
    permit: Option<OwnedSemaphorePermit>,
}

impl Budget {
    /// A budget of `total` bytes (between 1 byte and 4 GiB).
    pub fn new(total: usize) -> Self {
        let total = total.clamp(1, u32::MAX as usize);
        Self {
            bytes: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// Bytes held now: by leases, and by reads waiting for more (the
    /// semaphore hands bytes that come back to the first waiter, in order,
    /// until it has all it asked for).
    pub fn in_use(&self) -> usize {
        self.total - self.bytes.available_permits()
    }

    /// Grows `lease` to `len` bytes — to the whole budget if `len` is more.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future while it waits takes nothing (and
    /// leaves `lease` as it was).
    pub async fn grow(&self, lease: &mut Lease, len: usize) {
        let want = len.min(self.total);
        let more = want.saturating_sub(lease.bytes());
        if more == 0 {
            return;
        }
        let more = u32::try_from(more).expect("the total fits in u32");
        let permit = match Arc::clone(&self.bytes).try_acquire_many_owned(more) {
            Ok(permit) => permit,
            Err(_) => {
                // Logged where the wait starts (end-to-end tests wait for it).
                tracing::debug!(
                    wanted = more,
                    in_use = self.in_use(),
                    total = self.total,
                    "the byte budget is spent; waiting"
                );
                Arc::clone(&self.bytes)
                    .acquire_many_owned(more)
                    .await
                    .expect("the budget's semaphore is never closed")
            }
        };
        match &mut lease.permit {
            Some(held) => held.merge(permit),
            None => lease.permit = Some(permit),
        }
    }
}

impl Lease {
    /// A lease that holds nothing.
    pub fn empty() -> Self {
        Self { permit: None }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.permit
            .as_ref()
            .map_or(0, OwnedSemaphorePermit::num_permits)
    }
}

impl Budget {
    /// Waits until `len` bytes (plus [`PER_MESSAGE`]) are free, and holds
    /// them; a message larger than the whole budget takes the whole budget.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future holds nothing.
    pub async fn reserve(&self, len: usize) -> Lease {
        let mut lease = Lease::empty();
        self.grow(&mut lease, len.saturating_add(PER_MESSAGE)).await;
        lease
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_budget_holds_back_until_bytes_are_returned() {
        let budget = Budget::new(1000);
        let a = budget.reserve(500).await;
        assert_eq!(budget.in_use(), 500 + PER_MESSAGE);
        let mut waiting = tokio_test::task::spawn(budget.reserve(500));
        assert!(waiting.poll().is_pending());
        drop(a);
        assert!(waiting.is_woken());
        let std::task::Poll::Ready(b) = waiting.poll() else {
            panic!("the bytes were returned");
        };
        drop(b);
        // Larger than the whole budget: takes all of it.
        let all = budget.reserve(10_000).await;
        assert_eq!((all.bytes(), budget.in_use()), (1000, 1000));
        drop(all);
        assert_eq!(budget.in_use(), 0);
    }
}
