use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::PoisonError;
use std::time::Duration;

use tokio::time::Instant;

use super::permit::Permit;
use super::state::{Admission, State, WakeList};
use super::waiter::Waiter;
use crate::config::{ConfigError, LimiterConfig};
use crate::limit::{FixedLimit, Limit, Sample};
use crate::metrics::MetricsSnapshot;
use crate::overload::Overload;
use crate::sync::{Arc, Mutex, MutexGuard};

/// A callback run on every rejection.
pub type OnOverload = std::sync::Arc<dyn Fn(&Overload) + Send + Sync>;

/// A concurrency limiter with a bounded FIFO wait queue and a queue timeout.
///
/// Cloning a `Limiter` is cheap and every clone shares the same slots, queue
/// and counters: clone it into every session of a server to have one limit for
/// all of them.
///
/// ```
/// use std::time::Duration;
/// use mcp_backpressure::{Limiter, LimiterConfig, OverloadReason};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let limiter = Limiter::new(LimiterConfig::new(1)).unwrap();
/// let permit = limiter.acquire().await.unwrap();
/// // One slot, no queue: the next request is turned away at once.
/// let overload = limiter.acquire().await.unwrap_err();
/// assert_eq!(overload.reason, OverloadReason::ConcurrencyLimit);
/// assert_eq!(overload.snapshot.total_rejected, 1);
/// drop(permit);
/// assert_eq!(limiter.snapshot().active, 0);
/// # }
/// ```
///
/// # Admission
///
/// A request runs at once when a slot is free and nobody waits. Otherwise it
/// waits in the queue, if the queue has room, until a slot is handed to it or
/// `queue_timeout` passes; otherwise it is rejected at once with
/// `concurrency_limit` (no queue configured) or `queue_full`.
///
/// # Fairness
///
/// The queue is strictly first-in, first-out. A slot given back while anyone
/// waits is handed straight to the head of the queue under the same lock that
/// counts it, so a newcomer never overtakes a waiting request and never sees a
/// false `queue_full` while a slot changes hands.
///
/// # The retry delay
///
/// Every [`Overload`] carries `retry_after =
/// clamp(S̄ · (queued + 1) / max_concurrent, retry_after_min, retry_after_max)`,
/// where `S̄` is a moving average of how long admitted requests held their slot
/// (weight 0.2 on the newest; `initial_service_time` until the first one
/// completes) and `queued` the queue length when the rejection was counted:
/// the time for everyone queued now to be served plus one more slot to free up.
///
/// # Cancel safety
///
/// [`acquire`](Self::acquire) is cancel safe: dropping its future at any point
/// — before it first polls, while queued, or after a slot was handed to it but
/// before it returned — leaves every count exact. A queued request leaves the
/// queue at once; a slot already handed to it goes to the next in line.
/// Dropping a [`Permit`], including during a panic, gives its slot back.
#[derive(Clone)]
pub struct Limiter {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    config: LimiterConfig,
    on_overload: Option<OnOverload>,
}

impl Limiter {
    /// A limiter with a fixed limit of `config.max_concurrent`.
    pub fn new(config: LimiterConfig) -> Result<Self, ConfigError> {
        Self::builder(config).build()
    }

    /// A builder for a limiter with a callback or a custom limit algorithm.
    pub fn builder(config: LimiterConfig) -> LimiterBuilder {
        LimiterBuilder {
            config,
            on_overload: None,
            limit: None,
        }
    }

    /// Waits for a slot.
    ///
    /// Returns a [`Permit`] that holds the slot until dropped, or an
    /// [`Overload`] saying why the request was turned away. The `on_overload`
    /// callback has run by the time the error is returned.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: see [the type's docs](Self#cancel-safety). Dropping the
    /// future never leaks a slot or a queue place.
    pub async fn acquire(&self) -> Result<Permit, Overload> {
        let admission = self.shared.lock().admit();
        // The clock is read only when the answer needs it (the service time
        // starts, or the queue deadline is set): a rejection never does, and a
        // clock read is a good part of its cost.
        let key = match admission {
            Admission::Admitted { inflight } => {
                return Ok(Permit::new(self.shared.clone(), Instant::now(), inflight));
            }
            Admission::Rejected(overload) => return Err(self.shared.rejected(overload)),
            Admission::Enqueued { key } => key,
        };
        let mut waiter = Waiter::new(&self.shared, key);
        let deadline = deadline_after(Instant::now(), self.shared.config.queue_timeout);
        let grant = tokio::select! {
            biased;
            grant = &mut waiter => Ok(grant),
            () = tokio::time::sleep_until(deadline) => waiter.time_out(),
        };
        match grant {
            Ok(grant) => Ok(Permit::new(self.shared.clone(), grant.at, grant.inflight)),
            Err(overload) => Err(self.shared.rejected(overload)),
        }
    }

    /// A consistent snapshot of the counters. Cheap; callable from sync code.
    pub fn snapshot(&self) -> MetricsSnapshot {
        self.shared.lock().snapshot()
    }

    /// The configuration this limiter was built with.
    pub fn config(&self) -> &LimiterConfig {
        &self.shared.config
    }

    /// The shared state, for the loom models that drive it directly.
    #[cfg(all(test, loom))]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("config", &self.shared.config)
            .field("snapshot", &self.snapshot())
            .finish()
    }
}

/// `now + timeout`, or a deadline far enough away to never fire when the sum
/// would overflow.
fn deadline_after(now: Instant, timeout: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(60 * 60 * 24 * 365 * 30);
    now.checked_add(timeout.min(FAR))
        .unwrap_or_else(|| now + Duration::from_secs(60 * 60 * 24))
}

// === impl Shared ===

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // No code that can panic runs under the lock (the limit algorithm is
        // called inside `catch_unwind`), so a poisoned lock still guards a
        // consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn release(&self, sample: Option<Sample>, now: Instant) {
        let mut wake = WakeList::default();
        self.lock().release(sample, now, &mut wake);
        wake.wake_all();
    }

    pub(crate) fn cancel_waiter(&self, key: usize, now: Instant) {
        let mut wake = WakeList::default();
        self.lock().cancel_waiter(key, now, &mut wake);
        wake.wake_all();
    }

    /// Runs the callback (a panic in it is contained) and passes the error on.
    fn rejected(&self, overload: Overload) -> Overload {
        if let Some(callback) = &self.on_overload
            && catch_unwind(AssertUnwindSafe(|| callback(&overload))).is_err()
        {
            tracing::error!(reason = %overload.reason, "the on_overload callback panicked");
        }
        overload
    }
}

/// Builds a [`Limiter`] with options beyond its [`LimiterConfig`].
pub struct LimiterBuilder {
    config: LimiterConfig,
    on_overload: Option<OnOverload>,
    limit: Option<Box<dyn Limit>>,
}

impl LimiterBuilder {
    /// Runs `callback` on every rejection, after it was counted and before the
    /// error reaches the caller. It runs on the rejected request's task: keep it
    /// short (spawn a task for anything slow). A panic in it is caught and
    /// logged; the rejection proceeds as usual.
    pub fn on_overload<F>(mut self, callback: F) -> Self
    where
        F: Fn(&Overload) + Send + Sync + 'static,
    {
        self.on_overload = Some(std::sync::Arc::new(callback));
        self
    }

    /// Uses `limit` instead of a [`FixedLimit`] of `max_concurrent`.
    pub fn limit<L: Limit>(mut self, limit: L) -> Self {
        self.limit = Some(Box::new(limit));
        self
    }

    /// Validates the configuration and builds the limiter.
    pub fn build(self) -> Result<Limiter, ConfigError> {
        self.config.validate()?;
        let limit = self
            .limit
            .unwrap_or_else(|| Box::new(FixedLimit::new(self.config.max_concurrent)));
        Ok(Limiter {
            shared: Arc::new(Shared {
                state: Mutex::new(State::new(&self.config, limit)),
                config: self.config,
                on_overload: self.on_overload,
            }),
        })
    }
}

impl fmt::Debug for LimiterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimiterBuilder")
            .field("config", &self.config)
            .field("on_overload", &self.on_overload.is_some())
            .field("custom_limit", &self.limit.is_some())
            .finish()
    }
}
