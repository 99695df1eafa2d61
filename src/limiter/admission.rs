use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use tokio::time::Instant;

use super::acquire::Acquire;
use super::permit::Permit;
use super::queue::Grant;
use super::request::Request;
use super::state::{Admission, LazyNow, State, WakeList};
use crate::config::{ConfigError, LimiterConfig};
use crate::limit::{Limit, Sample};
use crate::metrics::{MetricsSnapshot, ToolSnapshot};
use crate::overload::Overload;
use crate::sync::{Arc, Mutex, MutexGuard};

/// A callback run on every rejection.
pub type OnOverload = std::sync::Arc<dyn Fn(&Overload) + Send + Sync>;

/// A concurrency limiter with a bounded wait queue and a queue timeout, and
/// optionally per-tool limits and weights, per-client limits with fair
/// queueing, adaptive limits and a queue discipline (see [`LimiterConfig`]).
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
/// A request ([`Request`]: tool name, client key, cost) runs at once when it
/// fits every limit — the global limit (its cost in slots), its tool's limit
/// (one call) and its client's limit (its cost) — and nobody waiting is
/// stuck on the global limit. Otherwise it waits in the queue, if the queue
/// has room, until a slot is handed to it or `queue_timeout` passes;
/// otherwise it is rejected at once with `concurrency_limit` (no queue
/// configured) or `queue_full`. Every rejection names the limit that refused
/// in [`Overload::scope`].
///
/// # Fairness
///
/// The queue has one lane per client key (requests without a key share one),
/// served round-robin: a client with 300 queued calls delays another
/// client's single call by one turn, not 300 places. Within a lane, calls of
/// one tool are served in arrival order (or as the
/// [`QueueDiscipline`](crate::config::QueueDiscipline) says); a call held back
/// by its tool's or its client's limit never blocks calls behind it that
/// could run. When the queue is full, a newcomer takes the place of the
/// newest waiter of the client holding the most places, if that client holds
/// more than the newcomer's would (that waiter gets `queue_full`, scope
/// `client`). A freed slot is handed to the next waiter under the same lock
/// that counts it, so a newcomer never overtakes an eligible waiter.
///
/// Partition limits are caps, not reservations: idle global capacity is
/// usable by any call within its own caps.
///
/// # Continuations
///
/// A [`Request::continuation`] (the retry of a multi-round-trip call, whose
/// slot was given back while a person answered) that cannot run at once
/// waits on a *priority line* ahead of every client lane: it is served
/// before every ordinary queued call, and may wait (up to `queue_timeout`)
/// even when the queue is full or `queue_size` is 0. It keeps its tool's and
/// client's limits: one held back by them holds nobody else back, while one
/// held back by the global limit alone holds everyone behind it back (as a
/// waiter at the front of the queue does). At most `max_continuations` wait
/// there at once; past that, a continuation is treated like any other call.
/// They are counted in [`MetricsSnapshot::continuations_waiting`] (not in
/// `queued`) and [`MetricsSnapshot::continuations_ahead`].
///
/// # The retry delay
///
/// Every [`Overload`] carries `retry_after =
/// clamp(S̄ · (queued + 1) / limit, retry_after_min, retry_after_max)` for the
/// limit that refused: the global limit with the whole queue, a tool's limit
/// with that tool's waiters and service times, or the client limit with that
/// client's waiters. `S̄` is a moving average of how long timed requests
/// held their slot (weight 0.2 on the newest; `initial_service_time` until the
/// first one completes): the time for everyone queued ahead to be served plus
/// one more slot to free up.
///
/// # Cancel safety
///
/// [`acquire`](Self::acquire) is cancel safe: dropping its future at any point
/// — before it first polls, while queued, or after a slot was handed to it but
/// before it returned — leaves every count exact. A queued request leaves the
/// queue at once; a slot already handed to it goes to the next in line.
/// Dropping a [`Permit`], including during a panic, gives its slot back.
///
/// # Reconfiguration
///
/// [`reconfigure`](Self::reconfigure) changes every setting at runtime. Calls
/// running keep their slots and give back exactly what they took; waiters
/// keep their place and deadline; a raised limit serves waiters at once.
#[derive(Clone)]
pub struct Limiter {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    on_overload: Option<OnOverload>,
    /// The Redis side of a shared limit, if any.
    #[cfg(feature = "redis")]
    coordinator: Option<std::sync::Arc<crate::shared::Coordinator>>,
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
            #[cfg(feature = "redis")]
            shared: None,
        }
    }

    /// Waits for a slot, as an anonymous request (no tool, no client key):
    /// [`acquire_with`](Self::acquire_with) with [`Request::new`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: see [the type's docs](Self#cancel-safety).
    pub fn acquire(&self) -> impl Future<Output = Result<Permit, Overload>> + Send + '_ {
        self.acquire_with(Request::new())
    }

    /// Waits for a slot for `request`.
    ///
    /// Returns a [`Permit`] that holds the slots until dropped, or an
    /// [`Overload`] saying why the request was turned away and by which
    /// limit. The `on_overload` callback has run by the time the error is
    /// returned. Nothing happens until the future is first polled.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: see [the type's docs](Self#cancel-safety). Dropping the
    /// future never leaks a slot or a queue place.
    pub fn acquire_with<'a>(
        &'a self,
        request: Request<'a>,
    ) -> impl Future<Output = Result<Permit, Overload>> + Send + 'a {
        #[cfg(feature = "redis")]
        if let Some(coordinator) = &self.shared.coordinator {
            return AnyAcquire::Shared {
                inner: Box::pin(crate::shared::acquire(self, coordinator.clone(), request)),
            };
        }
        AnyAcquire::Local {
            inner: Acquire::new(self, request),
        }
    }

    /// The synchronous part of an admission: the answer, or where and until
    /// when to wait.
    #[allow(clippy::type_complexity)]
    pub(crate) fn admit(
        &self,
        request: &Request<'_>,
    ) -> Result<Result<Permit, Box<Overload>>, (usize, Instant)> {
        let mut now = LazyNow::default();
        let mut wake = WakeList::default();
        let admission = self.shared.lock().admit(request, &mut now, &mut wake);
        wake.wake_all();
        match admission {
            Admission::Admitted(grant) => Ok(Ok(Permit::new(self.shared.clone(), grant))),
            Admission::Rejected(overload) => Ok(Err(self.shared.rejected(overload))),
            Admission::Enqueued { key, timeout } => Err((key, deadline_after(now.get(), timeout))),
        }
    }

    /// A waiter's answer as a permit or a (boxed) rejection.
    pub(crate) fn decided(
        &self,
        decided: Result<Grant, Box<Overload>>,
    ) -> Result<Permit, Box<Overload>> {
        match decided {
            Ok(grant) => Ok(Permit::new(self.shared.clone(), grant)),
            Err(overload) => Err(self.shared.rejected(overload)),
        }
    }

    /// Re-reads the global limit's [`Limit::current`] and serves the waiters
    /// a higher value lets in, at once.
    ///
    /// The limiter reads `current()` after every sample it feeds; call this
    /// when a custom [`Limit`] (given to [`LimiterBuilder::limit`]) changes
    /// its value for reasons of its own — a controller, a limit shared with
    /// other processes — so the change is pushed rather than noticed at the
    /// next release.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use mcp_backpressure::limit::{Limit, Sample};
    /// use mcp_backpressure::{Limiter, LimiterConfig};
    ///
    /// struct Shared(Arc<AtomicUsize>);
    /// impl Limit for Shared {
    ///     fn current(&self) -> usize { self.0.load(Ordering::Relaxed) }
    ///     fn on_sample(&mut self, _: &Sample) {}
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let value = Arc::new(AtomicUsize::new(1));
    /// let limiter = Limiter::builder(LimiterConfig::new(1).with_queue_size(1))
    ///     .limit(Shared(value.clone()))
    ///     .build()
    ///     .unwrap();
    /// let _first = limiter.acquire().await.unwrap();
    /// let second = tokio::spawn({
    ///     let limiter = limiter.clone();
    ///     async move { limiter.acquire().await.is_ok() }
    /// });
    /// tokio::task::yield_now().await; // the second call is queued
    /// value.store(2, Ordering::Relaxed);
    /// limiter.limit_changed();
    /// assert!(second.await.unwrap());
    /// # }
    /// ```
    pub fn limit_changed(&self) {
        let mut wake = WakeList::default();
        self.shared
            .lock()
            .limit_changed(&mut LazyNow::default(), &mut wake);
        wake.wake_all();
    }

    /// A consistent snapshot of the global counters. Cheap; callable from sync code.
    ///
    /// With a shared limit, the counters are this process's, `active` counts
    /// the slots its running calls hold, `queued` adds its calls waiting in
    /// the shared queue, and `max_concurrent` is the shared limit (or the
    /// local share while in fail-open fallback).
    pub fn snapshot(&self) -> MetricsSnapshot {
        #[cfg(feature = "redis")]
        if let Some(coordinator) = &self.shared.coordinator {
            let state = self.shared.lock();
            let mut snapshot = state.snapshot();
            if !coordinator.in_fallback() {
                snapshot.max_concurrent = state.config().max_concurrent;
            }
            drop(state);
            snapshot.queued += coordinator.waiting();
            return snapshot;
        }
        self.shared.lock().snapshot()
    }

    /// The shared limit's own figures (Redis latency, errors, renewals,
    /// fallback), or `None` without a shared limit.
    #[cfg(feature = "redis")]
    pub fn shared_snapshot(&self) -> Option<crate::shared::SharedSnapshot> {
        self.shared.coordinator.as_ref().map(|c| c.snapshot())
    }

    /// One snapshot per configured tool (by name), then one named `*` for
    /// every other tool together: a bounded set whatever tool names clients send.
    pub fn tool_snapshots(&self) -> Vec<ToolSnapshot> {
        self.shared.lock().tool_snapshots()
    }

    /// The configuration in force.
    pub fn config(&self) -> LimiterConfig {
        self.shared.lock().config().clone()
    }

    /// Replaces the configuration at runtime (see
    /// [Reconfiguration](Self#reconfiguration)). An invalid configuration is
    /// refused and the one in force stays.
    ///
    /// An adaptive limit is rebuilt (from `max_concurrent`) only when its own
    /// settings change, so a reload that touches something else keeps what it
    /// learned; the same holds for each tool's limit. A custom limit given to
    /// [`LimiterBuilder::limit`] is replaced only when the global limit's
    /// settings (`limit`, `max_concurrent`, `min_limit`, `max_limit`) change.
    pub fn reconfigure(&self, config: LimiterConfig) -> Result<(), ConfigError> {
        config.validate()?;
        #[cfg(feature = "redis")]
        if let Some(coordinator) = &self.shared.coordinator {
            shared_compatible(&config)?;
            coordinator.set_limit(config.max_concurrent);
        }
        let mut wake = WakeList::default();
        self.shared
            .lock()
            .reconfigure(config, &mut LazyNow::default(), &mut wake);
        wake.wake_all();
        Ok(())
    }

    /// The shared state (the acquire future's waiter, the loom models).
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

/// The shared limit's hooks into the local state.
#[cfg(feature = "redis")]
impl Limiter {
    /// Local admission (a shared limit in fail-open fallback).
    pub(crate) fn acquire_local<'a>(
        &'a self,
        request: Request<'a>,
    ) -> impl Future<Output = Result<Permit, Overload>> + Send + 'a {
        Acquire::new(self, request)
    }

    pub(crate) fn shared_ask(&self, request: &Request<'_>) -> crate::shared::coordinator::Ask {
        self.shared.lock().shared_ask(request)
    }

    /// A permit for a call Redis admitted, counted as running here.
    pub(crate) fn leased(&self, request: &Request<'_>, lease: crate::shared::Lease) -> Permit {
        let grant = self
            .shared
            .lock()
            .admit_leased(request, &mut LazyNow::default());
        let mut permit = Permit::new(self.shared.clone(), grant);
        permit.attach_lease(lease);
        permit
    }

    /// A rejection decided by the shared limit, counted here; the callback runs.
    pub(crate) fn shared_rejected(
        &self,
        request: &Request<'_>,
        reason: crate::OverloadReason,
        scope: crate::Scope,
        figures: crate::shared::coordinator::Figures,
    ) -> Overload {
        let overload = self.shared.lock().shared_rejected(
            request,
            reason,
            scope,
            figures.in_use,
            figures.queued,
        );
        *self.shared.rejected(Box::new(overload))
    }

    pub(crate) fn shared_cancelled(&self) {
        self.shared.lock().shared_cancelled();
    }
}

/// A shared limit is a fixed limit: an adaptive algorithm's signal is one
/// process's.
#[cfg(feature = "redis")]
fn shared_compatible(config: &LimiterConfig) -> Result<(), ConfigError> {
    let adaptive = config.limit != crate::limit::LimitAlgorithm::Fixed
        || config
            .tools
            .values()
            .any(|t| t.limit != crate::limit::LimitAlgorithm::Fixed);
    if adaptive {
        return Err(ConfigError::Invalid {
            setting: "limit".into(),
            reason: "a shared limit is fixed (an adaptive limit learns from one process)".into(),
        });
    }
    Ok(())
}

pin_project_lite::pin_project! {
    /// The future of [`Limiter::acquire_with`]: local, or against a shared
    /// limit (boxed: it holds a Redis round trip anyway).
    #[project = AnyAcquireProj]
    enum AnyAcquire<'a> {
        Local { #[pin] inner: Acquire<'a> },
        Shared { inner: std::pin::Pin<Box<dyn Future<Output = Result<Permit, Overload>> + Send + 'a>> },
    }
}

impl Future for AnyAcquire<'_> {
    type Output = Result<Permit, Overload>;

    #[inline]
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match self.project() {
            AnyAcquireProj::Local { inner } => inner.poll(cx),
            AnyAcquireProj::Shared { inner } => inner.as_mut().poll(cx),
        }
    }
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("config", &self.config())
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
        // called inside `catch_unwind`).
        crate::sync::lock(&self.state)
    }

    pub(crate) fn release(&self, grant: &Grant, sample: Option<Sample>, now: Option<Instant>) {
        let mut wake = WakeList::default();
        let mut now = now.map_or_else(LazyNow::default, LazyNow::at);
        self.lock().release(grant, sample, &mut now, &mut wake);
        wake.wake_all();
    }

    pub(crate) fn cancel_waiter(&self, key: usize) {
        let mut wake = WakeList::default();
        self.lock()
            .cancel_waiter(key, &mut LazyNow::default(), &mut wake);
        wake.wake_all();
    }

    /// Runs the callback (a panic in it is contained) and passes the error on.
    fn rejected(&self, overload: Box<Overload>) -> Box<Overload> {
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
    #[cfg(feature = "redis")]
    shared: Option<crate::shared::SharedLimit>,
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

    /// Uses `limit` for the global limit instead of the one the configuration
    /// describes (`limit`, `max_concurrent`, `min_limit`, `max_limit`).
    pub fn limit<L: Limit>(mut self, limit: L) -> Self {
        self.limit = Some(Box::new(limit));
        self
    }

    /// Shares the limit with every process naming the same Redis key (see
    /// [`shared`](crate::shared)). The limiter must then be built inside a
    /// tokio runtime (it starts two background tasks), with a fixed limit.
    #[cfg(feature = "redis")]
    pub fn shared(mut self, shared: crate::shared::SharedLimit) -> Self {
        self.shared = Some(shared);
        self
    }

    /// Validates the configuration and builds the limiter.
    ///
    /// With a shared limit: fails on a setting the shared limit refuses, a
    /// custom limit, or outside a tokio runtime. Redis is not contacted here
    /// (an unreachable Redis is handled by the fail mode).
    pub fn build(self) -> Result<Limiter, ConfigError> {
        self.config.validate()?;
        #[allow(unused_mut)]
        let mut limit = self.limit;
        #[cfg(feature = "redis")]
        let coordinator = match self.shared {
            None => None,
            Some(shared) => {
                shared_compatible(&self.config)?;
                if limit.is_some() {
                    return Err(ConfigError::Invalid {
                        setting: "limit".into(),
                        reason: "a shared limit takes no custom limit".into(),
                    });
                }
                let share = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(
                    self.config.max_concurrent,
                ));
                limit = Some(Box::new(crate::shared::FallbackShare(share.clone())));
                Some(crate::shared::Coordinator::start(
                    shared,
                    self.config.max_concurrent,
                    share,
                )?)
            }
        };
        #[allow(unused_mut)]
        let mut state = State::new(self.config, limit);
        #[cfg(feature = "redis")]
        if coordinator.is_some() {
            state.pin_limit();
        }
        Ok(Limiter {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                on_overload: self.on_overload,
                #[cfg(feature = "redis")]
                coordinator,
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
