//! Keyed admission against a reference model.
//!
//! Proptest generates a configuration (global limit, queue, two configured
//! tools with caps and weights, a default tool limit, a per-client limit) and
//! a sequence of steps: calls of a tool from a client arrive, permits are
//! given back, queued calls are abandoned, time moves on (queue timeouts).
//! Some calls are continuations of multi-round-trip calls: the model keeps
//! them on a priority line served before every lane (up to
//! `max_continuations` of them; past it they are ordinary calls).
//! Each `acquire_with` future is driven by hand on a paused clock. The
//! reference model is the admission policy written the plain way — vectors
//! and linear scans, no slab, no linked lists, no entry lifetimes — and after
//! every step the limiter must agree with it on every decision (admitted,
//! queued, rejected with which reason and scope), on every count, and on
//! every cap: global slots, each tool's calls, each client's slots.
#![cfg(not(loom))]

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use mcp_backpressure::config::ToolConfig;
use mcp_backpressure::{Limiter, LimiterConfig, Overload, OverloadReason, Permit, Request, Scope};
use proptest::prelude::*;
use proptest::sample::Index;
use tokio::time::Instant;
use tokio_test::task::{self, Spawn};

/// Tools the generated calls name: two configured, two not, and none.
const TOOLS: [Option<&str>; 5] = [Some("a"), Some("b"), Some("c"), Some("d"), None];
/// Client keys the generated calls carry.
const CLIENTS: [Option<&str>; 4] = [Some("x"), Some("y"), Some("z"), None];

#[derive(Clone, Debug)]
struct Config {
    max_concurrent: usize,
    queue_size: usize,
    timeout_ms: u64,
    /// Cap and weight of tool `a` and of tool `b`.
    a: (Option<usize>, usize),
    b: (Option<usize>, usize),
    default_tool_limit: Option<usize>,
    client_limit: Option<usize>,
    max_continuations: usize,
}

impl Config {
    fn limiter(&self) -> Limiter {
        Limiter::new(self.limiter_config()).expect("valid")
    }

    fn limiter_config(&self) -> LimiterConfig {
        let tool = |(cap, weight): (Option<usize>, usize)| {
            let t = ToolConfig::new().with_weight(weight);
            match cap {
                Some(cap) => t.with_max_concurrent(cap),
                None => t,
            }
        };
        let mut config = LimiterConfig::new(self.max_concurrent)
            .with_queue_size(self.queue_size)
            .with_queue_timeout(Duration::from_millis(self.timeout_ms))
            .with_tool("a", tool(self.a))
            .with_tool("b", tool(self.b))
            .with_max_continuations(self.max_continuations);
        if let Some(limit) = self.default_tool_limit {
            config = config.with_default_tool_limit(limit);
        }
        if let Some(limit) = self.client_limit {
            config = config.with_client_limit(limit);
        }
        config
    }
}

fn config() -> impl Strategy<Value = Config> {
    (
        1..=4usize,
        0..=5usize,
        1..=40u64,
        (prop::option::of(1..=2usize), 1..=3usize),
        (prop::option::of(1..=3usize), 1..=2usize),
        prop::option::of(1..=2usize),
        prop::option::of(1..=3usize),
        0..=2usize,
    )
        .prop_map(
            |(
                max_concurrent,
                queue_size,
                timeout_ms,
                a,
                b,
                default_tool_limit,
                client_limit,
                max_continuations,
            )| {
                Config {
                    max_concurrent,
                    queue_size,
                    timeout_ms,
                    a,
                    b,
                    default_tool_limit,
                    client_limit,
                    max_continuations,
                }
            },
        )
}

#[derive(Clone, Debug)]
enum Op {
    Arrive {
        tool: usize,
        client: usize,
        /// A continuation of a multi-round-trip call.
        continuation: bool,
    },
    Complete {
        which: Index,
    },
    Cancel {
        which: Index,
    },
    Advance {
        ms: u64,
    },
    /// `Limiter::reconfigure` with a new configuration, calls in flight.
    Reconfigure(Config),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (0..TOOLS.len(), 0..CLIENTS.len(), prop::bool::weighted(0.25))
            .prop_map(|(tool, client, continuation)| Op::Arrive { tool, client, continuation }),
        6 => any::<Index>().prop_map(|which| Op::Complete { which }),
        2 => any::<Index>().prop_map(|which| Op::Cancel { which }),
        4 => (0..=30u64).prop_map(|ms| Op::Advance { ms }),
        1 => config().prop_map(Op::Reconfigure),
    ]
}

/// What happened to a call, as both sides report it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Decision {
    Admitted,
    Rejected(OverloadReason, Scope),
}

// ---------------------------------------------------------------- the model

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ToolKey {
    /// No limit of its own (no name, or unconfigured without a default limit).
    Anonymous,
    Named(&'static str),
}

#[derive(Clone, Debug)]
struct Call {
    id: u64,
    client: Option<&'static str>,
    tool: ToolKey,
    cost: usize,
    client_cost: usize,
}

#[derive(Clone, Debug)]
struct Waiting {
    id: u64,
    client: Option<&'static str>,
    tool: ToolKey,
    weight: usize,
    seq: u64,
    deadline: Instant,
}

struct Model {
    config: Config,
    running: Vec<Call>,
    waiting: Vec<Waiting>,
    /// Continuations waiting ahead of every lane, in arrival order.
    priority: Vec<Waiting>,
    /// Granted from the priority line, not collected yet.
    granted_ahead: Vec<u64>,
    /// Continuations admitted from the priority line.
    ahead: u64,
    /// Lanes with waiters, the next to serve first.
    ring: Vec<Option<&'static str>>,
    /// Decided for a pending future, not collected yet.
    decided: HashMap<u64, Decision>,
    stalled: bool,
    seq: u64,
    admitted: u64,
    completed: u64,
    cancelled: u64,
    rejected: HashMap<OverloadReason, u64>,
    /// A reload happened: a lower limit may leave more running than it allows
    /// (until calls finish), so the snapshot's caps are not checked; every
    /// admission still is (in `take_slot`).
    reloaded: bool,
}

impl Model {
    fn new(config: Config) -> Self {
        Self {
            config,
            running: Vec::new(),
            waiting: Vec::new(),
            priority: Vec::new(),
            granted_ahead: Vec::new(),
            ahead: 0,
            ring: Vec::new(),
            decided: HashMap::new(),
            stalled: false,
            seq: 0,
            admitted: 0,
            completed: 0,
            cancelled: 0,
            rejected: HashMap::new(),
            reloaded: false,
        }
    }

    fn reconfigure(&mut self, config: Config) {
        self.config = config;
        self.reloaded = true;
        self.grant_waiters();
    }

    fn tool_key(&self, tool: Option<&'static str>) -> ToolKey {
        match tool {
            Some(name @ ("a" | "b")) => ToolKey::Named(name),
            Some(name) if self.config.default_tool_limit.is_some() => ToolKey::Named(name),
            _ => ToolKey::Anonymous,
        }
    }

    fn cap(&self, tool: ToolKey) -> Option<usize> {
        match tool {
            ToolKey::Anonymous => None,
            // A configured tool without a limit of its own gets the default.
            ToolKey::Named("a") => self.config.a.0.or(self.config.default_tool_limit),
            ToolKey::Named("b") => self.config.b.0.or(self.config.default_tool_limit),
            ToolKey::Named(_) => self.config.default_tool_limit,
        }
    }

    fn weight(&self, tool: ToolKey) -> usize {
        match tool {
            ToolKey::Named("a") => self.config.a.1,
            ToolKey::Named("b") => self.config.b.1,
            _ => 1,
        }
    }

    fn used(&self) -> usize {
        self.running.iter().map(|c| c.cost).sum()
    }

    fn tool_room(&self, tool: ToolKey) -> bool {
        let running = self.running.iter().filter(|c| c.tool == tool).count();
        self.cap(tool).is_none_or(|cap| running < cap)
    }

    fn client_cost(&self, cost: usize) -> usize {
        self.config.client_limit.map_or(cost, |cap| cost.min(cap))
    }

    fn client_room(&self, client: Option<&str>, cost: usize) -> bool {
        let used: usize = self
            .running
            .iter()
            .filter(|c| c.client == client)
            .map(|c| c.client_cost)
            .sum();
        self.config
            .client_limit
            .is_none_or(|cap| used + self.client_cost(cost) <= cap)
    }

    fn global_cost(&self, weight: usize) -> usize {
        weight.min(self.config.max_concurrent)
    }

    fn fits(&self, client: Option<&str>, tool: ToolKey, weight: usize) -> bool {
        self.tool_room(tool)
            && self.client_room(client, weight)
            && self.used() + self.global_cost(weight) <= self.config.max_concurrent
    }

    fn binding(&self, client: Option<&str>, tool: ToolKey, weight: usize) -> Scope {
        if !self.tool_room(tool) {
            match tool {
                ToolKey::Named(name) => Scope::Tool(name.into()),
                ToolKey::Anonymous => unreachable!("no cap"),
            }
        } else if !self.client_room(client, weight) {
            Scope::Client
        } else {
            Scope::Global
        }
    }

    fn queued_of(&self, client: Option<&str>) -> usize {
        self.waiting.iter().filter(|w| w.client == client).count()
    }

    fn reject(&mut self, reason: OverloadReason) {
        *self.rejected.entry(reason).or_default() += 1;
    }

    fn take_slot(&mut self, id: u64, client: Option<&'static str>, tool: ToolKey, weight: usize) {
        let cost = self.global_cost(weight);
        let client_cost = self.client_cost(cost);
        // Nobody is admitted beyond a limit, whatever happened before.
        assert!(
            self.used() + cost <= self.config.max_concurrent,
            "#{id}: global"
        );
        assert!(self.tool_room(tool), "#{id}: tool {tool:?}");
        assert!(self.client_room(client, weight), "#{id}: client {client:?}");
        self.running.push(Call {
            id,
            client,
            tool,
            cost,
            client_cost,
        });
        self.admitted += 1;
    }

    /// A new call: `Some(decision)` at once, or `None` (queued).
    fn arrive(
        &mut self,
        id: u64,
        tool: Option<&'static str>,
        client: Option<&'static str>,
        continuation: bool,
        now: Instant,
    ) -> Option<Decision> {
        let tool = self.tool_key(tool);
        let weight = self.weight(tool);
        if !self.stalled && self.fits(client, tool, weight) {
            self.take_slot(id, client, tool, weight);
            return Some(Decision::Admitted);
        }
        if continuation && self.priority.len() < self.config.max_continuations {
            self.priority.push(Waiting {
                id,
                client,
                tool,
                weight,
                seq: self.seq,
                deadline: now + Duration::from_millis(self.config.timeout_ms),
            });
            self.seq += 1;
            // Served at once if only ordinary waiters held it back.
            self.grant_waiters();
            return self.decided.remove(&id).inspect(|_| self.collect(id));
        }
        if self.config.queue_size == 0 {
            let scope = self.binding(client, tool, weight);
            self.reject(OverloadReason::ConcurrencyLimit);
            return Some(Decision::Rejected(OverloadReason::ConcurrencyLimit, scope));
        }
        let mut evicted = false;
        if self.waiting.len() >= self.config.queue_size {
            // Over a just-lowered bound nobody joins, even by eviction.
            evicted = self.waiting.len() == self.config.queue_size && self.evict_for(client);
            if !evicted {
                self.reject(OverloadReason::QueueFull);
                return Some(Decision::Rejected(OverloadReason::QueueFull, Scope::Global));
            }
        }
        if self.tool_room(tool) && self.client_room(client, weight) {
            self.stalled = true;
        }
        self.waiting.push(Waiting {
            id,
            client,
            tool,
            weight,
            seq: self.seq,
            deadline: now + Duration::from_millis(self.config.timeout_ms),
        });
        self.seq += 1;
        if !self.ring.contains(&client) {
            self.ring.push(client);
        }
        if evicted {
            // The evicted waiter may have been the one others waited behind.
            self.grant_waiters();
            return self.decided.remove(&id);
        }
        None
    }

    fn evict_for(&mut self, client: Option<&str>) -> bool {
        let mut longest: Option<(usize, Option<&'static str>)> = None;
        for &lane in &self.ring {
            let queued = self.queued_of(lane);
            if longest.is_none_or(|(most, _)| queued > most) {
                longest = Some((queued, lane));
            }
        }
        let Some((most, lane)) = longest else {
            return false;
        };
        if lane == client || most <= self.queued_of(client) + 1 {
            return false;
        }
        let victim = self
            .waiting
            .iter()
            .filter(|w| w.client == lane)
            .max_by_key(|w| w.seq)
            .expect("a lane in the ring has waiters")
            .id;
        self.remove_waiting(victim);
        self.reject(OverloadReason::QueueFull);
        self.decided.insert(
            victim,
            Decision::Rejected(OverloadReason::QueueFull, Scope::Client),
        );
        true
    }

    /// A granted call's caller took its slot.
    fn collect(&mut self, id: u64) {
        if let Some(at) = self.granted_ahead.iter().position(|&g| g == id) {
            self.granted_ahead.remove(at);
            self.ahead += 1;
        }
    }

    fn remove_waiting(&mut self, id: u64) -> Waiting {
        if let Some(at) = self.priority.iter().position(|w| w.id == id) {
            return self.priority.remove(at);
        }
        let at = self
            .waiting
            .iter()
            .position(|w| w.id == id)
            .expect("waiting");
        let w = self.waiting.remove(at);
        if self.queued_of(w.client) == 0 {
            self.ring.retain(|&c| c != w.client);
        }
        w
    }

    fn grant_waiters(&mut self) {
        self.stalled = false;
        // The priority line first, in arrival order, skipping continuations
        // their tool's or client's limit holds back.
        while let Some(w) = self
            .priority
            .iter()
            .find(|w| self.tool_room(w.tool) && self.client_room(w.client, w.weight))
            .cloned()
        {
            if self.used() + self.global_cost(w.weight) > self.config.max_concurrent {
                self.stalled = true;
                return;
            }
            self.remove_waiting(w.id);
            self.take_slot(w.id, w.client, w.tool, w.weight);
            self.decided.insert(w.id, Decision::Admitted);
            self.granted_ahead.push(w.id);
        }
        let mut misses = 0;
        while !self.ring.is_empty() && misses < self.ring.len() {
            let lane = self.ring[0];
            // The head of each of the lane's tool flows (FIFO per tool),
            // then the oldest head its tool's and client's limits let run.
            let heads = self
                .waiting
                .iter()
                .filter(|w| w.client == lane)
                .filter(|w| {
                    !self
                        .waiting
                        .iter()
                        .any(|o| o.client == lane && o.tool == w.tool && o.seq < w.seq)
                });
            let next = heads
                .filter(|w| self.tool_room(w.tool) && self.client_room(lane, w.weight))
                .min_by_key(|w| w.seq)
                .cloned();
            let Some(w) = next else {
                self.ring.rotate_left(1);
                misses += 1;
                continue;
            };
            if self.used() + self.global_cost(w.weight) > self.config.max_concurrent {
                self.stalled = true;
                break;
            }
            misses = 0;
            self.remove_waiting(w.id);
            self.take_slot(w.id, w.client, w.tool, w.weight);
            self.decided.insert(w.id, Decision::Admitted);
            if self.ring.first() == Some(&lane) {
                self.ring.rotate_left(1);
            }
        }
    }

    fn complete(&mut self, id: u64) {
        let at = self
            .running
            .iter()
            .position(|c| c.id == id)
            .expect("running");
        self.running.remove(at);
        self.completed += 1;
        self.grant_waiters();
    }

    fn cancel(&mut self, id: u64) {
        match self.decided.remove(&id) {
            Some(Decision::Admitted) => {
                let at = self
                    .running
                    .iter()
                    .position(|c| c.id == id)
                    .expect("granted");
                self.running.remove(at);
                self.admitted -= 1;
                self.cancelled += 1;
                self.granted_ahead.retain(|&g| g != id);
            }
            Some(Decision::Rejected(..)) => return,
            None => {
                self.remove_waiting(id);
                self.cancelled += 1;
            }
        }
        self.grant_waiters();
    }

    /// A pending future is polled at `now`: its decision, if any.
    fn poll(&mut self, id: u64, now: Instant) -> Option<Decision> {
        if let Some(decision) = self.decided.remove(&id) {
            self.collect(id);
            return Some(decision);
        }
        let w = self
            .waiting
            .iter()
            .chain(&self.priority)
            .find(|w| w.id == id)
            .expect("pending")
            .clone();
        if now < w.deadline {
            return None;
        }
        self.remove_waiting(id);
        let scope = self.binding(w.client, w.tool, w.weight);
        self.reject(OverloadReason::QueueTimeout);
        self.grant_waiters();
        Some(Decision::Rejected(OverloadReason::QueueTimeout, scope))
    }
}

// -------------------------------------------------------------- the harness

type Acquire<'l> = Spawn<Pin<Box<dyn Future<Output = Result<Permit, Overload>> + 'l>>>;

struct Harness<'l> {
    limiter: &'l Limiter,
    model: Model,
    held: Vec<(u64, Permit)>,
    pending: Vec<(u64, Acquire<'l>)>,
    next_id: u64,
}

fn decision(result: &Result<Permit, Overload>) -> Decision {
    match result {
        Ok(_) => Decision::Admitted,
        Err(overload) => Decision::Rejected(overload.reason, overload.scope.clone()),
    }
}

impl<'l> Harness<'l> {
    fn run(&mut self, op: &Op) {
        match *op {
            Op::Arrive {
                tool,
                client,
                continuation,
            } => {
                let (tool, client) = (TOOLS[tool], CLIENTS[client]);
                let id = self.next_id;
                self.next_id += 1;
                let mut request = Request::new();
                if let Some(tool) = tool {
                    request = request.tool(tool);
                }
                if let Some(client) = client {
                    request = request.client(client);
                }
                if continuation {
                    request = request.continuation();
                }
                let future: Pin<Box<dyn Future<Output = _> + 'l>> =
                    Box::pin(self.limiter.acquire_with(request));
                let mut future = task::spawn(future);
                let expected = self
                    .model
                    .arrive(id, tool, client, continuation, Instant::now());
                match future.poll() {
                    Poll::Ready(result) => {
                        assert_eq!(
                            Some(decision(&result)),
                            expected,
                            "call #{id} ({tool:?}, {client:?})"
                        );
                        if let Ok(permit) = result {
                            self.held.push((id, permit));
                        }
                    }
                    Poll::Pending => {
                        assert_eq!(
                            expected, None,
                            "call #{id} ({tool:?}, {client:?}) was queued"
                        );
                        self.pending.push((id, future));
                    }
                }
            }
            Op::Complete { which } => {
                if !self.held.is_empty() {
                    let (id, permit) = self.held.remove(which.index(self.held.len()));
                    drop(permit);
                    self.model.complete(id);
                }
            }
            Op::Cancel { which } => {
                if !self.pending.is_empty() {
                    let (id, future) = self.pending.remove(which.index(self.pending.len()));
                    drop(future);
                    self.model.cancel(id);
                }
            }
            // The clock was moved by the caller (`advance` is async).
            Op::Advance { .. } => {}
            Op::Reconfigure(ref config) => {
                self.limiter
                    .reconfigure(config.limiter_config())
                    .expect("valid");
                self.model.reconfigure(config.clone());
            }
        }
        self.poll_all();
        self.check();
    }

    /// Polls every pending future, oldest first, until nothing changes (a
    /// timeout can serve a waiter polled earlier in the same round).
    fn poll_all(&mut self) {
        loop {
            let mut changed = false;
            let now = Instant::now();
            let mut i = 0;
            while i < self.pending.len() {
                let id = self.pending[i].0;
                let real = self.pending[i].1.poll();
                let expected = self.model.poll(id, now);
                match real {
                    Poll::Pending => {
                        assert_eq!(expected, None, "call #{id} still waits");
                        i += 1;
                    }
                    Poll::Ready(result) => {
                        assert_eq!(Some(decision(&result)), expected, "call #{id} when polled");
                        drop(self.pending.remove(i));
                        if let Ok(permit) = result {
                            self.held.push((id, permit));
                        }
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
    }

    fn check(&self) {
        let s = self.limiter.snapshot();
        let m = &self.model;
        let c = &m.config;
        // Counts agree.
        assert_eq!(s.active, m.used(), "slots: {s:?}");
        assert_eq!(s.running, m.running.len(), "{s:?}");
        assert_eq!(s.queued, m.waiting.len(), "{s:?}");
        assert_eq!(s.continuations_waiting, m.priority.len(), "{s:?}");
        assert_eq!(s.continuations_ahead, m.ahead, "{s:?}");
        assert_eq!(
            (s.admitted, s.completed, s.cancelled_in_queue),
            (m.admitted, m.completed, m.cancelled),
            "{s:?}"
        );
        for reason in OverloadReason::ALL {
            assert_eq!(
                s.rejected(reason),
                m.rejected.get(&reason).copied().unwrap_or(0),
                "{reason}: {s:?}"
            );
        }
        assert_eq!(s.admitted, s.completed + s.running as u64, "{s:?}");
        assert_eq!(s.max_concurrent, c.max_concurrent, "{s:?}");
        // Per-tool figures of the configured tools agree too.
        for t in self.limiter.tool_snapshots() {
            if t.tool == "a" || t.tool == "b" {
                let key = ToolKey::Named(if t.tool == "a" { "a" } else { "b" });
                let running = m.running.iter().filter(|call| call.tool == key).count();
                let queued = m
                    .waiting
                    .iter()
                    .chain(&m.priority)
                    .filter(|w| w.tool == key)
                    .count();
                assert_eq!((t.running, t.queued), (running, queued), "{t:?}");
            }
        }
        // Nothing tracked beyond the keys in use.
        let keys_in_use = {
            let mut keys: Vec<&str> = m
                .running
                .iter()
                .map(|call| call.client)
                .chain(m.waiting.iter().chain(&m.priority).map(|w| w.client))
                .flatten()
                .collect();
            let tools = m
                .running
                .iter()
                .map(|call| call.tool)
                .chain(m.waiting.iter().chain(&m.priority).map(|w| w.tool))
                .filter_map(|tool| match tool {
                    ToolKey::Named(name) if name != "a" && name != "b" => Some(name),
                    _ => None,
                });
            keys.sort_unstable();
            keys.dedup();
            let mut tools: Vec<&str> = tools.collect();
            tools.sort_unstable();
            tools.dedup();
            keys.len() + tools.len()
        };
        assert_eq!(s.tracked_keys, keys_in_use, "{s:?}");
        // Every cap holds (unless a reload lowered one below what runs).
        if !m.reloaded {
            // Every cap holds.
            assert!(s.active <= c.max_concurrent, "global: {s:?}");
            assert!(s.queued <= c.queue_size, "queue: {s:?}");
            assert!(
                s.continuations_waiting <= c.max_continuations,
                "priority line: {s:?}"
            );
            for tool in ["a", "b", "c", "d"] {
                let key = m.tool_key(Some(tool));
                let running = m.running.iter().filter(|call| call.tool == key).count();
                if let Some(cap) = m.cap(key) {
                    assert!(running <= cap, "tool {tool}: {running} > {cap}");
                }
            }
            if let Some(cap) = c.client_limit {
                for client in CLIENTS {
                    let used: usize = m
                        .running
                        .iter()
                        .filter(|call| call.client == client)
                        .map(|call| call.client_cost)
                        .sum();
                    assert!(used <= cap, "client {client:?}: {used} > {cap}");
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn keyed_admission_matches_the_model(
        config in config(),
        ops in prop::collection::vec(op(), 1..=80),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let limiter = config.limiter();
            let mut harness = Harness {
                limiter: &limiter,
                model: Model::new(config.clone()),
                held: Vec::new(),
                pending: Vec::new(),
                next_id: 0,
            };
            for op in &ops {
                if let Op::Advance { ms } = op {
                    tokio::time::advance(Duration::from_millis(*ms)).await;
                }
                harness.run(op);
            }
            // Drain: everything given back, every waiter gone.
            harness.held.clear();
            harness.pending.clear();
            let s = limiter.snapshot();
            assert_eq!(
                (s.active, s.running, s.queued, s.continuations_waiting, s.tracked_keys),
                (0, 0, 0, 0, 0),
                "{s:?}"
            );
        });
    }
}
