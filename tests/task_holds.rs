//! Task holds: a permit turned into a hold keeps every charge it made until
//! the hold ends, exactly once, by one counted cause; TTLs and polls run on
//! tokio's (paused) clock. Then a property test against a plain model.
#![cfg(not(loom))]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use mcp_backpressure::config::ToolConfig;
use mcp_backpressure::task_holds::{
    DEFAULT_POLL_INTERVAL, Held, HoldEnd, Lifetime, MAX_POLL_INTERVAL, MIN_POLL_INTERVAL, TaskHolds,
};
use mcp_backpressure::{Limiter, LimiterConfig, Outcome, Permit, Request, Scope};
use proptest::prelude::*;
use proptest::sample::Index;
use tokio::time::Instant;
use tokio_test::task;

const SECOND: Duration = Duration::from_secs(1);

fn lifetime(ttl: Option<Duration>, poll: Option<Duration>) -> Lifetime {
    Lifetime::new(ttl, poll)
}

/// A call's answer, without waiting (the limiters here have no queue).
fn try_acquire(limiter: &Limiter, request: Request<'_>) -> Result<Permit, Scope> {
    let mut call = task::spawn(limiter.acquire_with(request));
    match call.poll() {
        std::task::Poll::Ready(answer) => answer.map_err(|overload| overload.scope),
        std::task::Poll::Pending => panic!("queued: these limiters have no queue"),
    }
}

/// Lets the spawned expiry task run until it waits again.
async fn settle() {
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
}

fn consistent(holds: &TaskHolds<&'static str>) {
    let s = holds.snapshot();
    assert_eq!(s.created, s.held as u64 + s.ended.total(), "{s:?}");
}

// ------------------------------------------------------------ behaviour

#[tokio::test(start_paused = true)]
async fn a_hold_keeps_its_tool_client_and_global_charges() {
    let limiter = Limiter::new(
        LimiterConfig::new(3)
            .with_tool("t", ToolConfig::new().with_max_concurrent(1))
            .with_client_limit(2),
    )
    .unwrap();
    let holds = TaskHolds::new(10);
    let now = Instant::now();
    let permit = try_acquire(&limiter, Request::new().tool("t").client("c")).unwrap();
    assert_eq!(
        holds.hold("s", "1", permit, Lifetime::default(), now),
        Held::New
    );
    // The tool's only call is taken by the hold.
    let refused = try_acquire(&limiter, Request::new().tool("t").client("d")).unwrap_err();
    assert_eq!(refused, Scope::Tool("t".into()));
    // The client's second slot is free, then taken by a second hold.
    let permit = try_acquire(&limiter, Request::new().tool("u").client("c")).unwrap();
    holds.hold("s", "2", permit, Lifetime::default(), now);
    let refused = try_acquire(&limiter, Request::new().client("c")).unwrap_err();
    assert_eq!(refused, Scope::Client);
    // The third global slot; then the global limit refuses.
    let third = try_acquire(&limiter, Request::new().client("d")).unwrap();
    let refused = try_acquire(&limiter, Request::new().client("e")).unwrap_err();
    assert_eq!(refused, Scope::Global);
    assert_eq!(limiter.snapshot().active, 3);
    assert_eq!(holds.snapshot().slots, 2);
    drop(third);
    // The holds end: every charge is given back.
    assert!(holds.end("s", "1", HoldEnd::Terminal, Outcome::Success));
    assert!(try_acquire(&limiter, Request::new().tool("t").client("d")).is_ok());
    assert!(holds.end("s", "2", HoldEnd::Terminal, Outcome::Ignore));
    let s = limiter.snapshot();
    assert_eq!((s.active, s.tracked_keys), (0, 0));
    consistent(&holds);
}

#[tokio::test(start_paused = true)]
async fn a_hold_ends_exactly_once_and_each_cause_is_counted() {
    let limiter = Limiter::new(LimiterConfig::new(8)).unwrap();
    let holds = TaskHolds::new(10);
    let causes = [
        HoldEnd::Terminal,
        HoldEnd::Cancel,
        HoldEnd::OwnPoll,
        HoldEnd::UnknownTask,
    ];
    for (i, cause) in causes.into_iter().enumerate() {
        let id = i.to_string();
        let permit = limiter.acquire().await.unwrap();
        holds.hold("s", &id, permit, Lifetime::default(), Instant::now());
        assert!(holds.contains("s", &id));
        assert!(holds.end("s", &id, cause, Outcome::Ignore));
        assert!(!holds.contains("s", &id));
        // A second end of any cause finds nothing and counts nothing.
        for again in HoldEnd::ALL {
            assert!(!holds.end("s", &id, again, Outcome::Ignore));
        }
        assert_eq!(holds.snapshot().ended.get(cause), 1, "{cause}");
    }
    let s = holds.snapshot();
    assert_eq!((s.created, s.held, s.ended.total()), (4, 0, 4));
    assert_eq!((s.ended.ttl, s.ended.cap, s.ended.closed), (0, 0, 0));
    assert_eq!(limiter.snapshot().active, 0);
    // An unknown scope or task is no hold.
    assert!(!holds.end("other", "0", HoldEnd::Terminal, Outcome::Ignore));
    consistent(&holds);
}

#[tokio::test(start_paused = true)]
async fn a_ttl_runs_out_on_tokios_clock() {
    let limiter = Limiter::new(LimiterConfig::new(8)).unwrap();
    let holds = TaskHolds::new(10);
    let start = Instant::now();
    let ttl = 10 * SECOND;
    holds.hold(
        "s",
        "short",
        limiter.acquire().await.unwrap(),
        lifetime(Some(ttl), None),
        start,
    );
    holds.hold(
        "s",
        "forever",
        limiter.acquire().await.unwrap(),
        lifetime(None, None),
        start,
    );
    assert!(
        holds
            .expire(start + ttl - Duration::from_millis(1))
            .is_empty()
    );
    tokio::time::advance(ttl).await;
    let expired = holds.expire(Instant::now());
    assert_eq!(expired, vec![("s", Arc::from("short"))]);
    assert!(holds.expire(Instant::now()).is_empty(), "once");
    assert!(holds.expire(start + 1000 * ttl).is_empty(), "no TTL");
    assert!(holds.contains("s", "forever"));
    let s = holds.snapshot();
    assert_eq!((s.held, s.ended.ttl), (1, 1));
    assert_eq!(limiter.snapshot().active, 1);
    consistent(&holds);
}

#[tokio::test(start_paused = true)]
async fn polls_fall_due_after_their_interval_and_seen_resets_them() {
    let limiter = Limiter::new(LimiterConfig::new(8)).unwrap();
    let holds = TaskHolds::new(10);
    let t0 = Instant::now();
    holds.hold(
        "s",
        "a",
        limiter.acquire().await.unwrap(),
        lifetime(None, Some(SECOND)),
        t0,
    );
    assert_eq!(holds.next_wake(), Some(t0 + SECOND));
    assert!(holds.due(t0 + SECOND - Duration::from_millis(1)).is_empty());
    assert_eq!(holds.due(t0 + SECOND), vec![("s", Arc::from("a"))]);
    // Counted as asked at once: not due again until another interval.
    assert!(holds.due(t0 + SECOND).is_empty());
    assert_eq!(holds.due(t0 + 2 * SECOND).len(), 1);
    // Seen alive: the next own poll waits a whole interval from then.
    assert!(holds.seen("s", "a", t0 + 2 * SECOND + SECOND / 2));
    assert!(holds.due(t0 + 3 * SECOND).is_empty());
    assert_eq!(holds.due(t0 + 3 * SECOND + SECOND / 2).len(), 1);
    assert!(!holds.seen("s", "missing", t0), "not held");
    // Faster polls than the floor are asked at the floor's pace; none given
    // is the default.
    assert_eq!(
        lifetime(None, Some(Duration::from_millis(1))).poll_interval(),
        MIN_POLL_INTERVAL
    );
    assert_eq!(lifetime(None, None).poll_interval(), DEFAULT_POLL_INTERVAL);
    assert_eq!(
        lifetime(None, Some(Duration::from_secs(3600))).poll_interval(),
        MAX_POLL_INTERVAL
    );
    holds.hold(
        "s",
        "fast",
        limiter.acquire().await.unwrap(),
        lifetime(None, Some(Duration::from_millis(1))),
        t0,
    );
    assert!(holds.due(t0 + MIN_POLL_INTERVAL / 2).is_empty());
    assert_eq!(
        holds.due(t0 + MIN_POLL_INTERVAL),
        vec![("s", Arc::from("fast"))]
    );
    consistent(&holds);
}

#[tokio::test(start_paused = true)]
async fn past_the_cap_the_least_recently_seen_hold_ends_and_the_new_one_stays() {
    let limiter = Limiter::new(LimiterConfig::new(8)).unwrap();
    let holds = TaskHolds::new(2);
    let t0 = Instant::now();
    let any = Lifetime::default();
    holds.hold("s", "a", limiter.acquire().await.unwrap(), any, t0);
    holds.hold("s", "b", limiter.acquire().await.unwrap(), any, t0);
    // `a` is confirmed alive later than `b` was made: `b` is the stalest.
    holds.seen("s", "a", t0 + SECOND);
    let held = holds.hold("s", "c", limiter.acquire().await.unwrap(), any, t0 + SECOND);
    assert_eq!(held, Held::Evicted("s", Arc::from("b")));
    assert!(holds.contains("s", "a") && holds.contains("s", "c"));
    assert!(!holds.contains("s", "b"));
    // Among holds seen at the same instant, the older goes first.
    holds.seen("s", "c", t0 + 2 * SECOND);
    holds.seen("s", "a", t0 + 2 * SECOND);
    let held = holds.hold(
        "t",
        "d",
        limiter.acquire().await.unwrap(),
        any,
        t0 + 2 * SECOND,
    );
    assert_eq!(held, Held::Evicted("s", Arc::from("c")));
    let s = holds.snapshot();
    assert_eq!((s.held, s.ended.cap, s.created), (2, 2, 4));
    assert_eq!(
        limiter.snapshot().active,
        2,
        "the evicted holds' slots are free"
    );
    consistent(&holds);
}

#[tokio::test(start_paused = true)]
async fn a_second_hold_of_the_same_task_gives_its_permit_back() {
    let limiter = Limiter::new(LimiterConfig::new(8)).unwrap();
    let holds = TaskHolds::new(10);
    let now = Instant::now();
    let first = limiter.acquire().await.unwrap();
    let second = limiter.acquire().await.unwrap();
    assert_eq!(
        holds.hold("s", "a", first, Lifetime::default(), now),
        Held::New
    );
    assert_eq!(limiter.snapshot().active, 2);
    assert_eq!(
        holds.hold("s", "a", second, Lifetime::default(), now),
        Held::Already
    );
    assert_eq!(limiter.snapshot().active, 1);
    let s = holds.snapshot();
    assert_eq!((s.held, s.created, s.slots), (1, 1, 1));
    // The same id in another scope is another task.
    let third = limiter.acquire().await.unwrap();
    assert_eq!(
        holds.hold("t", "a", third, Lifetime::default(), now),
        Held::New
    );
    consistent(&holds);
}

#[tokio::test(start_paused = true)]
async fn a_closing_scope_ends_its_holds_only() {
    let limiter = Limiter::new(LimiterConfig::new(8)).unwrap();
    let holds = TaskHolds::new(10);
    let now = Instant::now();
    for (scope, id) in [("s", "1"), ("s", "2"), ("t", "1")] {
        let permit = limiter.acquire().await.unwrap();
        holds.hold(scope, id, permit, Lifetime::default(), now);
    }
    let ended: BTreeSet<Arc<str>> = holds.end_scope("s").into_iter().collect();
    assert_eq!(ended, BTreeSet::from([Arc::from("1"), Arc::from("2")]));
    assert!(holds.end_scope("s").is_empty());
    assert!(holds.end_scope("nobody").is_empty());
    assert!(holds.contains("t", "1"));
    let s = holds.snapshot();
    assert_eq!((s.held, s.slots, s.ended.closed), (1, 1, 2));
    assert_eq!(limiter.snapshot().active, 1);
    consistent(&holds);
}

#[tokio::test(start_paused = true)]
async fn end_all_ends_every_hold() {
    let limiter =
        Limiter::new(LimiterConfig::new(8).with_tool("heavy", ToolConfig::new().with_weight(3)))
            .unwrap();
    let holds = TaskHolds::new(10);
    let now = Instant::now();
    let heavy = limiter
        .acquire_with(Request::new().tool("heavy"))
        .await
        .unwrap();
    holds.hold("s", "1", heavy, Lifetime::default(), now);
    holds.hold(
        "t",
        "1",
        limiter.acquire().await.unwrap(),
        Lifetime::default(),
        now,
    );
    assert_eq!(holds.snapshot().slots, 4);
    assert_eq!(holds.end_all(), 2);
    assert_eq!(holds.end_all(), 0);
    assert!(holds.is_empty());
    let s = holds.snapshot();
    assert_eq!((s.held, s.slots, s.ended.closed), (0, 0, 2));
    assert_eq!(limiter.snapshot().active, 0);
    consistent(&holds);
}

#[tokio::test(start_paused = true)]
async fn run_expiry_ends_holds_as_their_ttls_run_out() {
    let limiter = Limiter::new(LimiterConfig::new(8)).unwrap();
    let holds: TaskHolds<&'static str> = TaskHolds::new(10);
    let expiry = tokio::spawn(holds.clone().run_expiry());
    let t0 = Instant::now();
    holds.hold(
        "s",
        "long",
        limiter.acquire().await.unwrap(),
        lifetime(Some(10 * SECOND), None),
        t0,
    );
    settle().await;
    // A hold with an earlier deadline, made while the task sleeps.
    holds.hold(
        "s",
        "short",
        limiter.acquire().await.unwrap(),
        lifetime(Some(2 * SECOND), None),
        t0,
    );
    tokio::time::advance(2 * SECOND).await;
    settle().await;
    assert!(!holds.contains("s", "short"));
    assert!(holds.contains("s", "long"));
    assert_eq!(limiter.snapshot().active, 1);
    tokio::time::advance(8 * SECOND).await;
    settle().await;
    assert!(holds.is_empty());
    assert_eq!(holds.snapshot().ended.ttl, 2);
    assert_eq!(limiter.snapshot().active, 0);
    expiry.abort();
    consistent(&holds);
}

#[tokio::test(start_paused = true)]
async fn absurd_ttls_and_poll_intervals_do_not_panic() {
    let limiter = Limiter::new(LimiterConfig::new(8)).unwrap();
    let holds = TaskHolds::new(10);
    let now = Instant::now();
    holds.hold(
        "s",
        "a",
        limiter.acquire().await.unwrap(),
        Lifetime::from_millis(Some(u64::MAX), Some(u64::MAX)),
        now,
    );
    // Past the clock's range: never.
    holds.hold(
        "s",
        "b",
        limiter.acquire().await.unwrap(),
        Lifetime::new(Some(Duration::MAX), Some(Duration::MAX)),
        now,
    );
    // The TTLs never run out; the polls are at most MAX_POLL_INTERVAL apart,
    // so a hold whose client vanished is still asked about.
    assert!(holds.expire(now + 1000 * SECOND).is_empty());
    assert_eq!(holds.next_wake(), Some(now + MAX_POLL_INTERVAL));
    assert!(
        holds
            .due(now + MAX_POLL_INTERVAL - Duration::from_millis(1))
            .is_empty()
    );
    assert_eq!(holds.due(now + MAX_POLL_INTERVAL).len(), 2);
    assert!(holds.end("s", "a", HoldEnd::Terminal, Outcome::Ignore));
    assert!(holds.end("s", "b", HoldEnd::Terminal, Outcome::Ignore));
    assert_eq!(holds.next_wake(), None);
}

// ------------------------------------------------------------ the model

/// The limiter's slots.
const N: usize = 4;
/// Tool `t`'s cap.
const TOOL_CAP: usize = 2;
const SCOPES: [&str; 3] = ["s1", "s2", "s3"];
/// Tools the generated calls name: capped, weighted (2 slots), none.
const TOOLS: [Option<&str>; 3] = [Some("t"), Some("w"), None];

/// A hold made of a new call: its scope, TTL and poll interval (ms), and
/// whether it reuses a task id already held in its scope.
#[derive(Clone, Debug)]
struct NewHold {
    scope: usize,
    ttl_ms: Option<u64>,
    poll_ms: Option<u64>,
    reuse: Option<Index>,
}

#[derive(Clone, Debug)]
enum Op {
    /// A call; admitted, maybe at once a hold (a fresh task id, or one
    /// already held in that scope).
    Create {
        tool: usize,
        hold: Option<NewHold>,
    },
    Finish(Index),
    Poll(Index),
    End(Index, HoldEnd),
    EndUnknown(usize),
    Expire(u64),
    Due(u64),
    Disconnect(usize),
    SetCap(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let hold = (
        0..SCOPES.len(),
        prop::option::of(0..=500u64),
        prop::option::of(0..=300u64),
        prop::option::weighted(0.2, any::<Index>()),
    )
        .prop_map(|(scope, ttl_ms, poll_ms, reuse)| NewHold {
            scope,
            ttl_ms,
            poll_ms,
            reuse,
        });
    prop_oneof![
        8 => (0..TOOLS.len(), prop::option::weighted(0.8, hold))
            .prop_map(|(tool, hold)| Op::Create { tool, hold }),
        3 => any::<Index>().prop_map(Op::Finish),
        3 => any::<Index>().prop_map(Op::Poll),
        3 => (any::<Index>(), prop::sample::select(vec![
            HoldEnd::Terminal,
            HoldEnd::Cancel,
            HoldEnd::UnknownTask,
            HoldEnd::OwnPoll,
        ]))
            .prop_map(|(which, cause)| Op::End(which, cause)),
        1 => (0..SCOPES.len()).prop_map(Op::EndUnknown),
        3 => (0..=300u64).prop_map(Op::Expire),
        2 => (0..=300u64).prop_map(Op::Due),
        1 => (0..SCOPES.len()).prop_map(Op::Disconnect),
        1 => (0..=5usize).prop_map(Op::SetCap),
    ]
}

#[derive(Clone, Debug)]
struct ModelHold {
    cost: usize,
    tool: Option<&'static str>,
    deadline: Option<Instant>,
    poll: Duration,
    seen: Instant,
    seq: u64,
}

type Key = (&'static str, String);

struct Model {
    limiter: Limiter,
    holds: TaskHolds<&'static str>,
    plain: Vec<(usize, Option<&'static str>, Permit)>,
    held: BTreeMap<Key, ModelHold>,
    cap: usize,
    /// The most holds allowed now: the cap, or more right after it was
    /// lowered below what is held (those stay until they end).
    allowed: usize,
    created: u64,
    ended: std::collections::HashMap<HoldEnd, u64>,
    next_id: u64,
    seq: u64,
}

fn cost_of(tool: Option<&str>) -> usize {
    if tool == Some("w") { 2 } else { 1 }
}

impl Model {
    fn new(cap: usize) -> Self {
        let limiter = Limiter::new(
            LimiterConfig::new(N)
                .with_tool("t", ToolConfig::new().with_max_concurrent(TOOL_CAP))
                .with_tool("w", ToolConfig::new().with_weight(2)),
        )
        .unwrap();
        Self {
            limiter,
            holds: TaskHolds::new(cap),
            plain: Vec::new(),
            held: BTreeMap::new(),
            cap: cap.max(1),
            allowed: cap.max(1),
            created: 0,
            ended: std::collections::HashMap::new(),
            next_id: 0,
            seq: 0,
        }
    }

    fn active(&self) -> usize {
        self.plain.iter().map(|p| p.0).sum::<usize>()
            + self.held.values().map(|h| h.cost).sum::<usize>()
    }

    fn tool_running(&self, tool: &str) -> usize {
        self.plain.iter().filter(|p| p.1 == Some(tool)).count()
            + self.held.values().filter(|h| h.tool == Some(tool)).count()
    }

    fn end(&mut self, key: &Key, cause: HoldEnd) {
        self.held.remove(key).expect("held");
        *self.ended.entry(cause).or_default() += 1;
    }

    fn nth_hold(&self, which: Index) -> Option<Key> {
        if self.held.is_empty() {
            return None;
        }
        self.held.keys().nth(which.index(self.held.len())).cloned()
    }

    fn run(&mut self, op: &Op) {
        let now = Instant::now();
        match op {
            Op::Create { tool, hold } => {
                let tool = TOOLS[*tool];
                let cost = cost_of(tool);
                let fits = self.active() + cost <= N
                    && (tool != Some("t") || self.tool_running("t") < TOOL_CAP);
                let mut request = Request::new();
                if let Some(tool) = tool {
                    request = request.tool(tool);
                }
                let answer = try_acquire(&self.limiter, request);
                assert_eq!(
                    answer.is_ok(),
                    fits,
                    "{tool:?}: {:?}",
                    answer.as_ref().err()
                );
                let Ok(permit) = answer else { return };
                let Some(NewHold {
                    scope,
                    ttl_ms,
                    poll_ms,
                    reuse,
                }) = hold
                else {
                    self.plain.push((cost, tool, permit));
                    return;
                };
                let scope = SCOPES[*scope];
                let existing: Vec<&Key> = self.held.keys().filter(|k| k.0 == scope).collect();
                let id = match reuse {
                    Some(which) if !existing.is_empty() => {
                        existing[which.index(existing.len())].1.clone()
                    }
                    _ => {
                        self.next_id += 1;
                        format!("task-{}", self.next_id)
                    }
                };
                let lifetime = Lifetime::from_millis(*ttl_ms, *poll_ms);
                let got = self.holds.hold(scope, &id, permit, lifetime, now);
                let key = (scope, id);
                let expected = if self.held.contains_key(&key) {
                    Held::Already
                } else {
                    let evicted = if self.held.len() >= self.cap {
                        let stalest = self
                            .held
                            .iter()
                            .min_by_key(|(_, h)| (h.seen, h.seq))
                            .map(|(k, _)| k.clone())
                            .expect("at the cap");
                        self.end(&stalest, HoldEnd::Cap);
                        Some(stalest)
                    } else {
                        None
                    };
                    self.held.insert(
                        key.clone(),
                        ModelHold {
                            cost,
                            tool,
                            deadline: lifetime.ttl().map(|ttl| now + ttl),
                            poll: lifetime.poll_interval(),
                            seen: now,
                            seq: self.seq,
                        },
                    );
                    self.seq += 1;
                    self.created += 1;
                    match evicted {
                        Some((scope, id)) => Held::Evicted(scope, Arc::from(id.as_str())),
                        None => Held::New,
                    }
                };
                assert_eq!(got, expected, "{key:?}");
            }
            Op::Finish(which) => {
                if !self.plain.is_empty() {
                    drop(self.plain.remove(which.index(self.plain.len())));
                }
            }
            Op::Poll(which) => {
                let Some(key) = self.nth_hold(*which) else {
                    return;
                };
                assert!(self.holds.seen(key.0, &key.1, now));
                let hold = self.held.get_mut(&key).unwrap();
                hold.seen = hold.seen.max(now);
                hold.seq = self.seq;
                self.seq += 1;
            }
            Op::End(which, cause) => {
                let Some(key) = self.nth_hold(*which) else {
                    return;
                };
                assert!(self.holds.end(key.0, &key.1, *cause, Outcome::Ignore));
                assert!(!self.holds.end(key.0, &key.1, *cause, Outcome::Ignore));
                self.end(&key, *cause);
            }
            Op::EndUnknown(scope) => {
                assert!(!self.holds.end(
                    SCOPES[*scope],
                    "unknown",
                    HoldEnd::UnknownTask,
                    Outcome::Ignore
                ));
            }
            // The clock was moved by the caller.
            Op::Expire(_) => {
                let got: BTreeSet<Key> = self
                    .holds
                    .expire(now)
                    .into_iter()
                    .map(|(s, id)| (s, id.to_string()))
                    .collect();
                let expected: BTreeSet<Key> = self
                    .held
                    .iter()
                    .filter(|(_, h)| h.deadline.is_some_and(|d| d <= now))
                    .map(|(k, _)| k.clone())
                    .collect();
                assert_eq!(got, expected);
                for key in &expected {
                    self.end(key, HoldEnd::Ttl);
                }
            }
            Op::Due(_) => {
                let got: BTreeSet<Key> = self
                    .holds
                    .due(now)
                    .into_iter()
                    .map(|(s, id)| (s, id.to_string()))
                    .collect();
                let mut expected = BTreeSet::new();
                for (key, hold) in &mut self.held {
                    if hold.seen + hold.poll <= now {
                        hold.seen = now;
                        expected.insert(key.clone());
                    }
                }
                assert_eq!(got, expected);
            }
            Op::Disconnect(scope) => {
                let scope = SCOPES[*scope];
                let got: BTreeSet<String> = self
                    .holds
                    .end_scope(scope)
                    .into_iter()
                    .map(|id| id.to_string())
                    .collect();
                let keys: Vec<Key> = self.held.keys().filter(|k| k.0 == scope).cloned().collect();
                let expected: BTreeSet<String> = keys.iter().map(|k| k.1.clone()).collect();
                assert_eq!(got, expected);
                for key in &keys {
                    self.end(key, HoldEnd::Closed);
                }
            }
            Op::SetCap(cap) => {
                self.holds.set_max_holds(*cap);
                self.cap = (*cap).max(1);
            }
        }
        self.allowed = self.cap.max(self.held.len().min(self.allowed));
    }

    fn check(&self) {
        let s = self.holds.snapshot();
        let active = self.limiter.snapshot().active;
        let plain: usize = self.plain.iter().map(|p| p.0).sum();
        assert_eq!(s.held, self.held.len(), "{s:?}");
        assert!(
            s.held <= self.allowed,
            "{} holds over {}",
            s.held,
            self.allowed
        );
        assert_eq!(s.max_holds, self.cap);
        assert_eq!(s.slots, self.held.values().map(|h| h.cost).sum::<usize>());
        assert_eq!(active, plain + s.slots, "{s:?}");
        assert!(active <= N);
        assert_eq!(s.created, self.created);
        assert_eq!(s.created, s.held as u64 + s.ended.total(), "{s:?}");
        for cause in HoldEnd::ALL {
            assert_eq!(
                s.ended.get(cause),
                self.ended.get(&cause).copied().unwrap_or(0),
                "{cause}"
            );
        }
        for key in self.held.keys() {
            assert!(self.holds.contains(key.0, &key.1), "{key:?}");
        }
        for scope in SCOPES {
            for n in 1..=self.next_id {
                let id = format!("task-{n}");
                let key = (scope, id);
                assert_eq!(
                    self.holds.contains(scope, &key.1),
                    self.held.contains_key(&key),
                    "{key:?}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn task_holds_match_the_model(
        cap in 1..=4usize,
        ops in prop::collection::vec(op(), 1..=40),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut model = Model::new(cap);
            for op in &ops {
                if let Op::Expire(ms) | Op::Due(ms) = op {
                    tokio::time::advance(Duration::from_millis(*ms)).await;
                }
                model.run(op);
                model.check();
            }
            // Finishing everything gives every slot back.
            model.plain.clear();
            let ended = model.holds.end_all();
            assert_eq!(ended, model.held.len());
            let s = model.holds.snapshot();
            assert_eq!(s.held, 0);
            assert_eq!(s.created, s.ended.total());
            assert_eq!(model.limiter.snapshot().active, 0);
        });
    }
}
