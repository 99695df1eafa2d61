//! A byte budget: how many bytes of messages the proxy may hold at once — in
//! one direction of a stdio session, or for the HTTP request bodies being
//! read. Everything held holds a [`Lease`] on its size. When the budget is
//! spent, a stdio reader waits ([`Budget::grow`]) — backpressure to its one
//! peer — instead of growing; an HTTP body does not wait
//! ([`Budget::try_grow`]): its many clients would wait for each other
//! (`body` says why and what it does instead). `buffer_bytes`
//! (`--buffer-bytes`, default 16 MiB) sizes each.

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

    /// Whether `len` bytes (the whole budget if `len` is more) are free now.
    pub fn has_free(&self, len: usize) -> bool {
        len.min(self.total) <= self.bytes.available_permits()
    }

    /// Grows `lease` to `len` bytes — to the whole budget if `len` is more —
    /// if they are free now; otherwise leaves it as it was and returns
    /// false. Never waits, so never queues behind a waiter of [`grow`]
    /// (free bytes go to the first waiter before anyone else sees them).
    ///
    /// [`grow`]: Budget::grow
    pub fn try_grow(&self, lease: &mut Lease, len: usize) -> bool {
        let more = self.wanted(lease, len);
        if more == 0 {
            return true;
        }
        match Arc::clone(&self.bytes).try_acquire_many_owned(more) {
            Ok(permit) => {
                lease.merge(permit);
                true
            }
            Err(_) => false,
        }
    }

    /// The bytes `lease` lacks to hold `len` (at most the whole budget).
    fn wanted(&self, lease: &Lease, len: usize) -> u32 {
        let more = len.min(self.total).saturating_sub(lease.bytes());
        u32::try_from(more).expect("the total fits in u32")
    }

    /// Grows `lease` to `len` bytes — to the whole budget if `len` is more —
    /// waiting until they are free.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future while it waits takes nothing (and
    /// leaves `lease` as it was).
    pub async fn grow(&self, lease: &mut Lease, len: usize) {
        let more = self.wanted(lease, len);
        if more == 0 {
            return;
        }
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
        lease.merge(permit);
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

    fn merge(&mut self, permit: OwnedSemaphorePermit) {
        match &mut self.permit {
            Some(held) => held.merge(permit),
            None => self.permit = Some(permit),
        }
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

    #[tokio::test(start_paused = true)]
    async fn try_grow_takes_what_is_free_or_nothing() {
        let budget = Budget::new(1000);
        let mut a = Lease::empty();
        assert!(budget.try_grow(&mut a, 600));
        assert!(budget.try_grow(&mut a, 600), "already held: nothing more");
        let mut b = Lease::empty();
        assert!(budget.try_grow(&mut b, 300));
        assert_eq!(budget.in_use(), 900);
        assert!(budget.has_free(100) && !budget.has_free(101));
        // 200 more for b: only 100 free; b keeps what it had.
        assert!(!budget.try_grow(&mut b, 500));
        assert_eq!((b.bytes(), budget.in_use()), (300, 900));
        drop(a);
        assert!(budget.try_grow(&mut b, 5000), "capped at the whole budget");
        assert_eq!(b.bytes(), 1000);
        assert!(budget.has_free(0) && !budget.has_free(1));
        drop(b);
        assert!(budget.has_free(5000), "the whole budget at most");
    }
}
