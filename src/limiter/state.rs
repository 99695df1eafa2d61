//! The limiter's state machine: counts, the wait queue and the limit, changed
//! only under one lock so that every snapshot is consistent.
//!
//! Invariants, checked by the property test after every step:
//! - `active <= max_concurrent`, except right after an adaptive limit dropped
//!   below the number already running (no new admission until it is back);
//! - `queue.len() <= queue_size`;
//! - a request waits only while every slot is busy: `queue.len() > 0` implies
//!   `active >= max_concurrent`, so a freed slot always goes to the head of the
//!   queue and a newcomer never overtakes it;
//! - `admitted == completed + active`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::task::{Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

use super::retry::RetryEstimator;
use super::waiters::{Grant, Removed, WaiterQueue};
use crate::config::LimiterConfig;
use crate::limit::{Limit, Sample};
use crate::metrics::MetricsSnapshot;
use crate::overload::{Overload, OverloadReason};

/// The result of asking for a slot.
pub(crate) enum Admission {
    /// A slot was free; `inflight` counts this request.
    Admitted { inflight: usize },
    /// Every slot was busy; the request waits at `key` in the queue.
    Enqueued { key: usize },
    /// Every slot was busy and the queue could not take it.
    Rejected(Overload),
}

#[derive(Default)]
struct Counters {
    admitted: u64,
    completed: u64,
    cancelled_in_queue: u64,
    rejected: [u64; 3],
}

pub(crate) struct State {
    limit: Box<dyn Limit>,
    max_concurrent: usize,
    queue_size: usize,
    queue_timeout: Duration,
    active: usize,
    queue: WaiterQueue,
    counters: Counters,
    retry: RetryEstimator,
}

/// Wakers collected under the lock, woken after it is released.
#[derive(Default)]
pub(crate) struct WakeList {
    first: Option<Waker>,
    rest: Vec<Waker>,
}

impl WakeList {
    fn push(&mut self, waker: Waker) {
        if self.first.is_none() {
            self.first = Some(waker);
        } else {
            self.rest.push(waker);
        }
    }

    pub(crate) fn wake_all(self) {
        if let Some(waker) = self.first {
            waker.wake();
        }
        self.rest.into_iter().for_each(Waker::wake);
    }
}

impl State {
    pub(crate) fn new(config: &LimiterConfig, limit: Box<dyn Limit>) -> Self {
        let max_concurrent = limit.current().max(1);
        Self {
            limit,
            max_concurrent,
            queue_size: config.queue_size,
            queue_timeout: config.queue_timeout,
            active: 0,
            queue: WaiterQueue::default(),
            counters: Counters::default(),
            retry: RetryEstimator::new(
                config.initial_service_time,
                config.retry_after_min,
                config.retry_after_max,
            ),
        }
    }

    /// Admits at once, enqueues, or rejects.
    pub(crate) fn admit(&mut self) -> Admission {
        if self.active < self.max_concurrent && self.queue.len() == 0 {
            self.active += 1;
            self.counters.admitted += 1;
            return Admission::Admitted {
                inflight: self.active,
            };
        }
        if self.queue.len() < self.queue_size
            && let Some(key) = self.queue.push_back()
        {
            return Admission::Enqueued { key };
        }
        let reason = if self.queue_size == 0 {
            OverloadReason::ConcurrencyLimit
        } else {
            OverloadReason::QueueFull
        };
        Admission::Rejected(self.reject(reason))
    }

    /// Gives a slot back. `sample` is `None` when the outcome says nothing
    /// about load (cancellation, panic).
    pub(crate) fn release(&mut self, sample: Option<Sample>, now: Instant, wake: &mut WakeList) {
        self.active -= 1;
        self.counters.completed += 1;
        if let Some(sample) = sample {
            self.retry.observe(sample.rtt);
            self.feed_limit(&sample);
        }
        self.grant_waiters(now, wake);
    }

    /// Polls a queued request: `Ready` once a slot was handed to it.
    pub(crate) fn poll_waiter(&mut self, key: usize, waker: &Waker) -> Poll<Grant> {
        self.queue.poll(key, waker)
    }

    /// A queued request's caller went away. It counts as cancelled in the
    /// queue either way: a slot already handed to it, but never claimed, is
    /// taken back uncounted (the request was never admitted) and goes to the
    /// next in line.
    pub(crate) fn cancel_waiter(&mut self, key: usize, now: Instant, wake: &mut WakeList) {
        self.counters.cancelled_in_queue += 1;
        if let Removed::Granted(_) = self.queue.remove(key) {
            self.active -= 1;
            self.counters.admitted -= 1;
            self.grant_waiters(now, wake);
        }
    }

    /// A queued request's deadline passed. If a slot was handed to it in the
    /// meantime it keeps it; otherwise it leaves the queue, rejected.
    // `Overload` is large, but it is the error every caller returns by value
    // anyway; boxing it here would only add an allocation to the timeout path.
    #[allow(clippy::result_large_err)]
    pub(crate) fn time_out_waiter(&mut self, key: usize) -> Result<Grant, Overload> {
        match self.queue.remove(key) {
            Removed::Granted(grant) => Ok(grant),
            Removed::Waiting => Err(self.reject(OverloadReason::QueueTimeout)),
        }
    }

    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        let [concurrency_limit, queue_full, queue_timeout] = self.counters.rejected;
        MetricsSnapshot {
            active: self.active,
            queued: self.queue.len(),
            max_concurrent: self.max_concurrent,
            queue_size: self.queue_size,
            admitted: self.counters.admitted,
            completed: self.counters.completed,
            cancelled_in_queue: self.counters.cancelled_in_queue,
            total_rejected: concurrency_limit + queue_full + queue_timeout,
            rejected_concurrency_limit: concurrency_limit,
            rejected_queue_full: queue_full,
            rejected_queue_timeout: queue_timeout,
        }
    }

    /// Counts a rejection, then snapshots, so the snapshot includes it.
    fn reject(&mut self, reason: OverloadReason) -> Overload {
        self.counters.rejected[reason_index(reason)] += 1;
        let retry_after = self.retry.estimate(self.queue.len(), self.max_concurrent);
        Overload::new(reason, self.snapshot(), retry_after, self.queue_timeout)
    }

    /// Hands free slots to the head of the queue, as many as the limit allows.
    fn grant_waiters(&mut self, now: Instant, wake: &mut WakeList) {
        while self.active < self.max_concurrent {
            let grant = Grant {
                at: now,
                inflight: self.active + 1,
            };
            let Some(waker) = self.queue.grant_front(grant) else {
                break;
            };
            self.active += 1;
            self.counters.admitted += 1;
            if let Some(waker) = waker {
                wake.push(waker);
            }
        }
    }

    /// Feeds the algorithm; a panicking algorithm keeps the previous limit.
    fn feed_limit(&mut self, sample: &Sample) {
        let limit = &mut self.limit;
        match catch_unwind(AssertUnwindSafe(|| {
            limit.on_sample(sample);
            limit.current()
        })) {
            Ok(current) => self.max_concurrent = current.max(1),
            Err(_) => tracing::error!("the limit algorithm panicked; keeping the previous limit"),
        }
    }
}

fn reason_index(reason: OverloadReason) -> usize {
    match reason {
        OverloadReason::ConcurrencyLimit => 0,
        OverloadReason::QueueFull => 1,
        OverloadReason::QueueTimeout => 2,
    }
}
