//! The limiter's state machine: slots, partitions, the wait queue and the
//! limits, changed only under one lock so that every snapshot is consistent.
//!
//! Invariants, checked by the property tests after every step:
//! - `used <= max_concurrent`, a tool's `running <= cap`, a client's `used <=
//!   client_limit`, except right after a limit was lowered below what already
//!   runs (no new admission against it until it is back);
//! - `queue.len() <= queue_size` (unless `queue_size` was just lowered);
//! - nobody waits who could run: after every change, the waiters are served
//!   in order (round-robin over client lanes, then the discipline's order
//!   within a lane, skipping waiters whose tool or client is at its cap)
//!   until the next one in order does not fit the global limit (`stalled`)
//!   or none is eligible. While stalled, newcomers queue too, so a heavy call
//!   at the front is never starved by lighter ones behind it;
//! - continuations ([`Request::continuation`]) that cannot run at once wait
//!   on the priority line, served before every lane by the same rule (one
//!   held back by its tool's or client's limit is skipped; one held back by
//!   the global limit alone stalls everyone behind it). At most
//!   `max_continuations` wait there (unless it was just lowered); they are
//!   not counted in `queue.len()` and never shed by CoDel;
//! - `admitted + handed_over == completed + running`: a call counts as
//!   admitted when its caller takes the slot (so `admitted` never goes down);
//!   until then its slot is `handed_over`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::task::{Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

use super::discipline::Discipline;
use super::partitions::{ANONYMOUS, Clients, OTHER, Tools};
use super::queue::{Grant, Removed, WaitQueue};
use super::request::Request;
use super::retry::RetryEstimator;
use crate::config::{LimiterConfig, MAX_SLOTS};
use crate::limit::{FixedLimit, Limit, LimitAlgorithm, Sample};
use crate::metrics::{MetricsSnapshot, ToolSnapshot};
use crate::overload::{Overload, OverloadReason, Scope};

/// Which admissions are timed (their service time sampled when released):
/// every one admitted while at least half the limit is in use — when the
/// limit is being tested, the samples adaptive limits act on — and one in
/// this many otherwise. Two clock reads cost as much as the rest of an
/// uncontended admission (about 30 ns each on a virtual machine); a lightly
/// loaded limiter needs only a trickle of samples to keep its retry estimate
/// current, and the adaptive algorithms ignore samples of an under-used
/// limit anyway (AIMD's and Gradient2's app-limited guards). Calls handed a
/// slot from the queue are always timed (the clock was read for them anyway).
const TIMED_EVERY: u64 = 32;

/// The result of asking for a slot.
pub(crate) enum Admission {
    /// Admitted at once.
    Admitted(Grant),
    /// Waits at `key` in the queue for at most `timeout`.
    Enqueued { key: usize, timeout: Duration },
    /// Turned away (boxed: the admission is moved a few times on its way out,
    /// and the common, admitted answer should stay small).
    Rejected(Box<Overload>),
}

/// The clock, read at most once per operation and only if needed.
#[derive(Default)]
pub(crate) struct LazyNow(Option<Instant>);

impl LazyNow {
    pub(crate) fn at(now: Instant) -> Self {
        Self(Some(now))
    }

    pub(crate) fn get(&mut self) -> Instant {
        *self.0.get_or_insert_with(Instant::now)
    }
}

#[derive(Default)]
struct Counters {
    /// Slots handed to waiters whose callers have not taken them yet.
    handed_over: usize,
    admitted: u64,
    completed: u64,
    cancelled_in_queue: u64,
    /// Continuations admitted from the priority line.
    continuations_ahead: u64,
    rejected: [u64; 5],
}

pub(crate) struct State {
    config: LimiterConfig,
    /// The global limit: built from `config`, or given to the builder (kept
    /// until a reload changes the limit's settings).
    limit: Box<dyn Limit>,
    max_concurrent: usize,
    /// Slots in use (weights summed).
    used: usize,
    /// Calls holding slots.
    running: usize,
    queue: WaitQueue,
    tools: Tools,
    tools_keyed: bool,
    clients: Clients,
    discipline: Discipline,
    stalled: bool,
    counters: Counters,
    retry: RetryEstimator,
    /// The global limit is the builder's and stays across reloads (the
    /// fail-open share of a shared limit).
    pinned: bool,
}

/// Wakers collected under the lock, woken after it is released.
#[derive(Default)]
pub(crate) struct WakeList {
    first: Option<Waker>,
    rest: Vec<Waker>,
}

impl WakeList {
    fn push(&mut self, waker: Option<Waker>) {
        let Some(waker) = waker else { return };
        if self.first.is_none() {
            self.first = Some(waker);
        } else {
            self.rest.push(waker);
        }
    }

    #[inline]
    pub(crate) fn wake_all(self) {
        if let Some(waker) = self.first {
            waker.wake();
            self.rest.into_iter().for_each(Waker::wake);
        }
    }
}

/// Builds the global limit `config` describes.
fn limit_of(config: &LimiterConfig) -> Box<dyn Limit> {
    match config.limit {
        LimitAlgorithm::Fixed => Box::new(FixedLimit::new(config.max_concurrent)),
        algorithm => algorithm.build(
            config.max_concurrent,
            config.min_limit,
            config.effective_max_limit(),
        ),
    }
}

/// Whether a reload changes how the global limit is built.
fn limit_changed(old: &LimiterConfig, new: &LimiterConfig) -> bool {
    (old.limit, old.max_concurrent, old.min_limit, old.max_limit)
        != (new.limit, new.max_concurrent, new.min_limit, new.max_limit)
}

/// Feeds `limit`; returns its new value, or `None` if it panicked (the
/// previous value stays in force).
pub(crate) fn feed(limit: &mut dyn Limit, sample: &Sample) -> Option<usize> {
    contained(|| {
        limit.on_sample(sample);
        limit.current()
    })
}

/// Runs a limit algorithm's code: its new value, or `None` if it panicked
/// (the previous value stays in force).
fn contained(f: impl FnOnce() -> usize) -> Option<usize> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(current) => Some(current.max(1)),
        Err(_) => {
            tracing::error!("a limit algorithm panicked; keeping its previous limit");
            None
        }
    }
}

impl State {
    pub(crate) fn new(config: LimiterConfig, custom: Option<Box<dyn Limit>>) -> Self {
        let limit = custom.unwrap_or_else(|| limit_of(&config));
        let max_concurrent = limit.current().max(1);
        let tools = Tools::new(&config);
        Self {
            limit,
            max_concurrent,
            used: 0,
            running: 0,
            queue: WaitQueue::default(),
            tools_keyed: tools.keyed(),
            tools,
            clients: Clients::new(&config),
            discipline: Discipline::new(config.discipline),
            stalled: false,
            counters: Counters::default(),
            retry: RetryEstimator::new(
                config.initial_service_time,
                config.retry_after_min,
                config.retry_after_max,
            ),
            config,
            pinned: false,
        }
    }

    /// Keeps the builder's global limit across reloads.
    #[cfg(feature = "redis")]
    pub(crate) fn pin_limit(&mut self) {
        self.pinned = true;
    }

    pub(crate) fn config(&self) -> &LimiterConfig {
        &self.config
    }

    /// Admits at once, enqueues, or rejects.
    pub(crate) fn admit(
        &mut self,
        request: &Request<'_>,
        now: &mut LazyNow,
        wake: &mut WakeList,
    ) -> Admission {
        let (tool, client, cost) = self.resolve(request);
        if !self.stalled && self.fits(client, tool, cost) {
            let busy = (self.used + cost.min(self.max_concurrent)) * 2 >= self.max_concurrent;
            let at =
                (busy || self.counters.admitted.is_multiple_of(TIMED_EVERY)).then(|| now.get());
            let grant = self.take_slot(client, tool, cost, at);
            self.claimed(&grant);
            return Admission::Admitted(grant);
        }
        if request.is_continuation() && self.queue.priority_len() < self.config.max_continuations {
            return self.wait_first(client, tool, cost, now, wake);
        }
        if self.config.queue_size == 0 {
            let scope = self.binding_scope(client, tool, cost);
            let overload = self.reject(OverloadReason::ConcurrencyLimit, scope, tool, client);
            self.release_if_idle(tool, client);
            return Admission::Rejected(Box::new(overload));
        }
        let mut evicted = None;
        if self.queue.len() >= self.config.queue_size {
            // Over the bound (it was just lowered): nobody new joins, not
            // even by taking someone's place.
            if self.queue.len() == self.config.queue_size {
                evicted = self.evict_for(client, wake);
            }
            if evicted.is_none() {
                let overload = self.reject(OverloadReason::QueueFull, Scope::Global, tool, client);
                self.release_if_idle(tool, client);
                return Admission::Rejected(Box::new(overload));
            }
        }
        let since = now.get();
        let Some(key) = self.queue.push(client, tool, cost, since) else {
            let overload = self.reject(OverloadReason::QueueFull, Scope::Global, tool, client);
            self.release_if_idle(tool, client);
            return Admission::Rejected(Box::new(overload));
        };
        // Held back by the global limit alone, it is the next call able to
        // run: newcomers queue behind it until it has its slots.
        if self.tools.get(tool).has_room() && self.clients.has_room(client, cost) {
            self.stalled = true;
        }
        self.tools.get_mut(tool).queued += 1;
        if self.queue.len() == 1 {
            self.discipline.on_nonempty(since);
        }
        if let Some((tool, client)) = evicted {
            self.release_if_idle(tool, client);
            // The evicted waiter may have been the one everyone else waited
            // behind: serve whom that lets in (the newcomer, maybe).
            self.grant_waiters(now, wake);
        }
        Admission::Enqueued {
            key,
            timeout: self.config.queue_timeout,
        }
    }

    /// A continuation that cannot run at once: it waits on the priority
    /// line, ahead of every lane and whatever the queue bound, and is served
    /// at once if only ordinary waiters held it back.
    fn wait_first(
        &mut self,
        client: u32,
        tool: u32,
        cost: usize,
        now: &mut LazyNow,
        wake: &mut WakeList,
    ) -> Admission {
        let Some(key) = self.queue.push_priority(client, tool, cost, now.get()) else {
            let overload = self.reject(OverloadReason::QueueFull, Scope::Global, tool, client);
            self.release_if_idle(tool, client);
            return Admission::Rejected(Box::new(overload));
        };
        self.tools.get_mut(tool).queued += 1;
        self.grant_waiters(now, wake);
        Admission::Enqueued {
            key,
            timeout: self.config.queue_timeout,
        }
    }

    /// The request's tool and client entries (created if new) and its cost.
    #[inline]
    fn resolve(&mut self, request: &Request<'_>) -> (u32, u32, usize) {
        let tool = if self.tools_keyed {
            self.tools.resolve(request.tool_name())
        } else {
            ANONYMOUS
        };
        let client = self.clients.resolve(request.client_key());
        let cost = request
            .cost_override()
            .unwrap_or_else(|| self.tools.get(tool).weight)
            .clamp(1, MAX_SLOTS);
        (tool, client, cost)
    }

    /// Gives a permit's slots back. `sample` is `None` when the outcome says
    /// nothing about load (cancellation, panic, no outcome) or the permit was
    /// not timed.
    pub(crate) fn release(
        &mut self,
        grant: &Grant,
        sample: Option<Sample>,
        now: &mut LazyNow,
        wake: &mut WakeList,
    ) {
        self.give_back(grant);
        self.counters.completed += 1;
        if let Some(sample) = sample {
            // An untimed drop carries no service time.
            let timed = grant.at.is_some();
            if timed {
                self.retry.observe(sample.rtt);
            }
            if let Some(current) = feed(self.limit.as_mut(), &sample) {
                self.max_concurrent = current;
            }
            // The tool's own limit is compared with the tool's own calls.
            let tool_sample = Sample::new(sample.rtt, grant.tool_inflight as usize, sample.dropped);
            self.tools.get_mut(grant.tool).observe(&tool_sample, timed);
        }
        self.release_if_idle(grant.tool, grant.client);
        self.grant_waiters(now, wake);
    }

    /// Polls a queued request: `Ready` once it was handed a slot or turned away.
    pub(crate) fn poll_waiter(
        &mut self,
        key: usize,
        waker: &Waker,
    ) -> Poll<Result<Grant, Box<Overload>>> {
        let poll = self.queue.poll(key, waker);
        if let Poll::Ready(Ok(grant)) = &poll {
            self.claimed(grant);
        }
        poll
    }

    /// A slot handed to a waiter was taken by its caller: only now is the
    /// call admitted (so `admitted` never goes down when a caller leaves
    /// before taking its slot).
    fn claimed(&mut self, grant: &Grant) {
        self.counters.admitted += 1;
        self.counters.handed_over -= grant.from_queue as usize;
        self.counters.continuations_ahead += grant.priority as u64;
        self.tools.get_mut(grant.tool).admitted += 1;
    }

    /// A queued request's caller went away. It counts as cancelled in the
    /// queue either way: a slot already handed to it, but never claimed, is
    /// taken back uncounted (the request was never admitted) and goes to the
    /// next in line.
    pub(crate) fn cancel_waiter(&mut self, key: usize, now: &mut LazyNow, wake: &mut WakeList) {
        match self.queue.remove(key) {
            Removed::Waiting(waiting) => {
                self.counters.cancelled_in_queue += 1;
                self.leave_queue(waiting.tool);
                self.release_if_idle(waiting.tool, waiting.client);
            }
            Removed::Granted(grant) => {
                self.counters.cancelled_in_queue += 1;
                self.counters.handed_over -= 1;
                self.give_back(&grant);
                self.release_if_idle(grant.tool, grant.client);
            }
            // Already counted as rejected.
            Removed::Rejected(_) => return,
        }
        self.grant_waiters(now, wake);
    }

    /// A queued request's deadline passed. If a slot was handed to it (or it
    /// was turned away) in the meantime, that stands; otherwise it leaves the
    /// queue, rejected with `queue_timeout` by the limit that held it back.
    pub(crate) fn time_out_waiter(
        &mut self,
        key: usize,
        now: &mut LazyNow,
        wake: &mut WakeList,
    ) -> Result<Grant, Box<Overload>> {
        match self.queue.remove(key) {
            Removed::Granted(grant) => {
                self.claimed(&grant);
                Ok(grant)
            }
            Removed::Rejected(overload) => Err(overload),
            Removed::Waiting(waiting) => {
                self.leave_queue(waiting.tool);
                let scope = self.binding_scope(waiting.client, waiting.tool, waiting.cost());
                let overload = self.reject(
                    OverloadReason::QueueTimeout,
                    scope,
                    waiting.tool,
                    waiting.client,
                );
                self.release_if_idle(waiting.tool, waiting.client);
                // It may have been the call everyone else waited behind.
                self.grant_waiters(now, wake);
                Err(Box::new(overload))
            }
        }
    }

    /// Applies a new configuration (validated by the caller): counts of calls
    /// in flight and of waiters are kept exactly; new limits apply at once
    /// (waiters a higher limit lets in are served now); a lower limit or
    /// queue bound only stops new admissions until the figures are back
    /// under it. Waiters keep the deadline they were given.
    pub(crate) fn reconfigure(
        &mut self,
        config: LimiterConfig,
        now: &mut LazyNow,
        wake: &mut WakeList,
    ) {
        if !self.pinned && limit_changed(&self.config, &config) {
            self.limit = limit_of(&config);
            self.max_concurrent = self.limit.current().max(1);
        }
        self.retry = self
            .retry
            .with_bounds(config.retry_after_min, config.retry_after_max);
        self.tools.reconfigure(&config);
        self.tools_keyed = self.tools.keyed();
        self.clients.reconfigure(&config);
        self.discipline.set_kind(config.discipline);
        self.config = config;
        self.grant_waiters(now, wake);
    }

    /// Re-reads the global limit (a custom one changed on its own) and
    /// serves whom a higher value lets in.
    pub(crate) fn limit_changed(&mut self, now: &mut LazyNow, wake: &mut WakeList) {
        let limit = &self.limit;
        if let Some(current) = contained(|| limit.current()) {
            self.max_concurrent = current;
        }
        self.grant_waiters(now, wake);
    }

    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        let [
            concurrency_limit,
            queue_full,
            queue_timeout,
            queue_shed,
            shared_unavailable,
        ] = self.counters.rejected;
        MetricsSnapshot {
            active: self.used,
            running: self.running,
            handed_over: self.counters.handed_over,
            queued: self.queue.len(),
            continuations_waiting: self.queue.priority_len(),
            continuations_ahead: self.counters.continuations_ahead,
            max_concurrent: self.max_concurrent,
            queue_size: self.config.queue_size,
            admitted: self.counters.admitted,
            completed: self.counters.completed,
            cancelled_in_queue: self.counters.cancelled_in_queue,
            total_rejected: concurrency_limit
                + queue_full
                + queue_timeout
                + queue_shed
                + shared_unavailable,
            rejected_concurrency_limit: concurrency_limit,
            rejected_queue_full: queue_full,
            rejected_queue_timeout: queue_timeout,
            rejected_queue_shed: queue_shed,
            rejected_shared_unavailable: shared_unavailable,
            tracked_keys: self.tools.tracked() + self.clients.tracked(),
        }
    }

    /// One snapshot per configured tool, then `*` for all the others.
    pub(crate) fn tool_snapshots(&self) -> Vec<ToolSnapshot> {
        let mut configured = Vec::new();
        let mut other = ToolSnapshot {
            tool: OTHER.into(),
            limit: self.config.default_tool_limit,
            ..ToolSnapshot::default()
        };
        for entry in self.tools.iter() {
            if entry.configured {
                configured.push(ToolSnapshot {
                    tool: entry.name.to_string(),
                    running: entry.running,
                    queued: entry.queued,
                    limit: entry.cap,
                    admitted: entry.admitted,
                    rejected: entry.rejected,
                });
            } else {
                other.running += entry.running;
                other.queued += entry.queued;
                other.admitted += entry.admitted;
                other.rejected += entry.rejected;
            }
        }
        configured.sort_by(|a, b| a.tool.cmp(&b.tool));
        configured.push(other);
        configured
    }

    /// Whether a call fits every limit now.
    #[inline]
    fn fits(&self, client: u32, tool: u32, cost: usize) -> bool {
        self.tools.get(tool).has_room()
            && self.clients.has_room(client, cost)
            && self.used + cost.min(self.max_concurrent) <= self.max_concurrent
    }

    /// The first limit, most specific first, that holds a call back.
    fn binding_scope(&self, client: u32, tool: u32, cost: usize) -> Scope {
        let entry = self.tools.get(tool);
        if !entry.has_room() {
            Scope::Tool(entry.name.to_string())
        } else if !self.clients.has_room(client, cost) {
            Scope::Client
        } else {
            Scope::Global
        }
    }

    #[inline]
    fn take_slot(&mut self, client: u32, tool: u32, cost: usize, at: Option<Instant>) -> Grant {
        let cost = cost.min(self.max_concurrent);
        let client_cost = self.clients.cost(cost);
        self.used += cost;
        self.running += 1;
        let entry = self.tools.get_mut(tool);
        entry.running += 1;
        let tool_inflight = saturate(entry.running);
        self.clients.get_mut(client).used += client_cost;
        Grant {
            from_queue: false,
            priority: false,
            at,
            inflight: saturate(self.used),
            tool_inflight,
            cost,
            client_cost,
            tool,
            client,
        }
    }

    #[inline]
    fn give_back(&mut self, grant: &Grant) {
        self.used -= grant.cost;
        self.running -= 1;
        self.tools.get_mut(grant.tool).running -= 1;
        self.clients.get_mut(grant.client).used -= grant.client_cost;
    }

    /// A waiter left the queue (served, turned away or gone).
    fn leave_queue(&mut self, tool: u32) {
        self.tools.get_mut(tool).queued -= 1;
        if self.queue.len() == 0 {
            self.discipline.on_empty();
        }
    }

    #[inline]
    fn release_if_idle(&mut self, tool: u32, client: u32) {
        self.tools.release_if_idle(tool);
        self.clients
            .release_if_idle(client, self.queue.all_queued_of(client));
    }

    /// The queue is full and `client` wants a place: if another client holds
    /// more places than `client` would, its newest waiter gives its place up
    /// (rejected with `queue_full`, scope `client`), so one client flooding
    /// the queue cannot lock the others out of it.
    /// Returns the victim's entries, to be released once the newcomer holds
    /// its own (they may be the same tool entry).
    fn evict_for(&mut self, client: u32, wake: &mut WakeList) -> Option<(u32, u32)> {
        let longest = self.queue.longest_lane()?;
        if longest == client || self.queue.queued_of(longest) <= self.queue.queued_of(client) + 1 {
            return None;
        }
        let victim = self.queue.newest_of(longest)?;
        let (tool, victim_client) = {
            let waiting = self.queue.waiting(victim);
            (waiting.tool, waiting.client)
        };
        let overload = self.reject(
            OverloadReason::QueueFull,
            Scope::Client,
            tool,
            victim_client,
        );
        wake.push(self.queue.reject(victim, overload));
        self.leave_queue(tool);
        Some((tool, victim_client))
    }

    /// Counts a rejection and builds the error, with the retry delay of the
    /// limit that refused.
    fn reject(&mut self, reason: OverloadReason, scope: Scope, tool: u32, client: u32) -> Overload {
        self.counters.rejected[reason_index(reason)] += 1;
        self.tools.get_mut(tool).rejected += 1;
        let retry_after = match &scope {
            Scope::Global => self.retry.estimate(self.queue.len(), self.max_concurrent),
            Scope::Tool(_) => {
                let entry = self.tools.get(tool);
                let retry = entry.retry.as_ref().unwrap_or(&self.retry);
                retry.estimate(entry.queued, entry.cap.unwrap_or(self.max_concurrent))
            }
            Scope::Client => self.retry.estimate(
                self.queue.queued_of(client),
                self.clients.cap.unwrap_or(self.max_concurrent),
            ),
        };
        Overload::new(
            reason,
            self.snapshot(),
            retry_after,
            self.config.queue_timeout,
        )
        .with_scope(scope)
    }

    /// Serves waiters in order while the next one fits (see the module docs).
    #[inline]
    fn grant_waiters(&mut self, now: &mut LazyNow, wake: &mut WakeList) {
        self.stalled = false;
        if self.queue.len() == 0 && self.queue.priority_len() == 0 {
            return;
        }
        if self.queue.priority_len() > 0 && !self.serve_priority(now, wake) {
            return;
        }
        if self.queue.len() > 0 {
            self.serve_queue(now, wake);
        }
    }

    /// Serves the priority line in order, skipping continuations held back
    /// by their tool's or client's limit; returns `false` (stalled) when the
    /// next one does not fit the global limit: nobody behind it is served.
    /// Continuations are never shed: they are few, and a person waits on them.
    fn serve_priority(&mut self, now: &mut LazyNow, wake: &mut WakeList) -> bool {
        loop {
            let (tools, clients) = (&self.tools, &self.clients);
            let Some(key) = self.queue.priority_candidate(|tool, client, cost| {
                tools.get(tool).has_room() && clients.has_room(client, cost)
            }) else {
                return true;
            };
            let waiting = self.queue.waiting(key);
            let (tool, client, cost) = (waiting.tool, waiting.client, waiting.cost());
            if self.used + cost.min(self.max_concurrent) > self.max_concurrent {
                self.stalled = true;
                return false;
            }
            let mut grant = self.take_slot(client, tool, cost, Some(now.get()));
            grant.from_queue = true;
            grant.priority = true;
            self.counters.handed_over += 1;
            wake.push(self.queue.grant(key, grant));
            self.leave_queue(tool);
        }
    }

    fn serve_queue(&mut self, now: &mut LazyNow, wake: &mut WakeList) {
        let mut misses = 0;
        while let Some(client) = self.queue.front() {
            if misses >= self.queue.lanes_waiting() {
                break;
            }
            let lifo = self.discipline.needs_clock() && self.discipline.lifo(now.get());
            let (tools, clients) = (&self.tools, &self.clients);
            // The lane's next call among those its tool's and its client's
            // limits let run: one held back by either never blocks the
            // lane's other calls.
            let Some(key) = self.queue.candidate(client, lifo, |tool, cost| {
                tools.get(tool).has_room() && clients.has_room(client, cost)
            }) else {
                self.queue.rotate();
                misses += 1;
                continue;
            };
            let waiting = self.queue.waiting(key);
            let (tool, cost, since) = (waiting.tool, waiting.cost(), self.queue.since(waiting));
            if self.used + cost.min(self.max_concurrent) > self.max_concurrent {
                self.stalled = true;
                break;
            }
            misses = 0;
            if self.discipline.needs_clock() {
                let at = now.get();
                if self
                    .discipline
                    .shed(at.saturating_duration_since(since), at)
                {
                    let overload =
                        self.reject(OverloadReason::QueueShed, Scope::Global, tool, client);
                    wake.push(self.queue.reject(key, overload));
                    self.leave_queue(tool);
                    self.release_if_idle(tool, client);
                    continue;
                }
            }
            let mut grant = self.take_slot(client, tool, cost, Some(now.get()));
            grant.from_queue = true;
            self.counters.handed_over += 1;
            wake.push(self.queue.grant(key, grant));
            self.leave_queue(tool);
            if self.queue.front() == Some(client) {
                // Its turn is over: round-robin.
                self.queue.rotate();
            }
        }
    }
}

/// The shared limit's side of the state: what this process runs is counted
/// here too (for its metrics, its retry estimate and the fail-open
/// fallback), but Redis decides.
#[cfg(feature = "redis")]
impl State {
    /// What the shared admission script needs to know about `request`,
    /// under the configuration in force.
    pub(crate) fn shared_ask(&self, request: &Request<'_>) -> crate::shared::coordinator::Ask {
        use super::partitions::truncate;
        let config = &self.config;
        let limit = config.max_concurrent.max(1);
        let tool = request.tool_name().map(truncate);
        let tool_config = tool.and_then(|name| config.tools.get(name));
        let tool_limit = match (tool, tool_config) {
            (_, Some(t)) => t.max_concurrent.or(config.default_tool_limit),
            (Some(_), None) => config.default_tool_limit,
            (None, None) => None,
        };
        let weight = tool_config.map_or(1, |t| t.weight);
        let cost = request.cost_override().unwrap_or(weight).clamp(1, limit);
        let client_cost = config.client_limit.map_or(cost, |cap| cost.min(cap.max(1)));
        crate::shared::coordinator::Ask {
            cost,
            client_cost,
            tool: tool.map(str::to_string),
            client: request
                .client_key()
                .map(truncate)
                .unwrap_or_default()
                .to_string(),
            tool_limit: tool_limit.unwrap_or(0),
            client_limit: config.client_limit.unwrap_or(0),
            limit,
            queue_size: config.queue_size,
            queue_timeout: config.queue_timeout,
        }
    }

    /// Counts a call Redis admitted as running here, whatever the local
    /// (fallback) limit says. Always timed: the round trip dwarfs a clock read.
    pub(crate) fn admit_leased(&mut self, request: &Request<'_>, now: &mut LazyNow) -> Grant {
        let (tool, client, cost) = self.resolve(request);
        let grant = self.take_slot(client, tool, cost, Some(now.get()));
        self.claimed(&grant);
        grant
    }

    /// Counts a rejection Redis decided (or the fail-closed answer) and
    /// builds its error, with the shared limit's figures.
    pub(crate) fn shared_rejected(
        &mut self,
        request: &Request<'_>,
        reason: OverloadReason,
        scope: Scope,
        in_use: usize,
        queued: usize,
    ) -> Overload {
        let (tool, client, _) = self.resolve(request);
        let limit = self.config.max_concurrent.max(1);
        let global = scope == Scope::Global;
        let mut overload = self.reject(reason, scope, tool, client);
        self.release_if_idle(tool, client);
        overload.snapshot.active = in_use;
        overload.snapshot.queued = queued;
        overload.snapshot.max_concurrent = limit;
        if global {
            overload.retry_after = self.retry.estimate(queued, limit);
        }
        if reason == OverloadReason::SharedUnavailable {
            // Nothing says when Redis is back: a second is a fair guess.
            overload.retry_after = Duration::from_secs(1)
                .clamp(self.config.retry_after_min, self.config.retry_after_max);
        }
        overload
    }

    /// A caller left the shared queue before its answer.
    pub(crate) fn shared_cancelled(&mut self) {
        self.counters.cancelled_in_queue += 1;
    }
}

/// A count as `u32`, saturated.
fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn reason_index(reason: OverloadReason) -> usize {
    match reason {
        OverloadReason::ConcurrencyLimit => 0,
        OverloadReason::QueueFull => 1,
        OverloadReason::QueueTimeout => 2,
        OverloadReason::QueueShed => 3,
        OverloadReason::SharedUnavailable => 4,
    }
}
