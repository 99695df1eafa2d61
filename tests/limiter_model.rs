//! Randomized model test of the limiter.
//!
//! Proptest generates a configuration and a sequence of steps: requests
//! arrive, permits are given back (with an outcome or not), queued requests
//! are abandoned, time moves on. Every `acquire` future is driven by hand
//! (`tokio_test::task::spawn`) on a current-thread runtime whose clock is
//! paused, so a case is fully deterministic. After every step every pending
//! future is polled, then the limiter's snapshot is checked against its own
//! invariants and against a model of what the test holds and has seen.
#![cfg(not(loom))]

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use mcp_backpressure::{
    Limiter, LimiterConfig, MetricsSnapshot, Outcome, Overload, OverloadReason, Permit,
};
use proptest::prelude::*;
use proptest::sample::Index;
use tokio::time::Instant;
use tokio_test::task::{self, Spawn};

/// The bounds of the advertised retry delay (the configuration's defaults).
const RETRY_AFTER_MIN: Duration = Duration::from_millis(10);
const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
struct Config {
    max_concurrent: usize,
    queue_size: usize,
    queue_timeout: Duration,
}

#[derive(Clone, Debug)]
enum Op {
    /// A request arrives: a new `acquire` future, polled once right away.
    Arrive,
    /// A held permit is dropped, after `set_outcome` when `outcome` is set.
    Complete {
        which: Index,
        outcome: Option<Outcome>,
    },
    /// A pending `acquire` future is dropped (its caller went away).
    CancelWaiting { which: Index },
    /// The paused clock moves on.
    Advance { ms: u64 },
}

/// Operations run back to back; then every pending future is polled.
///
/// Most steps are one operation. A step of several leaves the futures unpolled
/// in between, so a slot can be handed to a waiter that is cancelled, times
/// out or is handed over again before its owner collects it.
type Step = Vec<Op>;

fn config() -> impl Strategy<Value = Config> {
    (1..=4usize, 0..=5usize, 1..=50u64).prop_map(|(max_concurrent, queue_size, ms)| Config {
        max_concurrent,
        queue_size,
        queue_timeout: Duration::from_millis(ms),
    })
}

fn op() -> impl Strategy<Value = Op> {
    let outcome = prop_oneof![
        Just(None),
        Just(Some(Outcome::Success)),
        Just(Some(Outcome::Ignore)),
        Just(Some(Outcome::Dropped)),
    ];
    prop_oneof![
        4 => Just(Op::Arrive),
        3 => (any::<Index>(), outcome).prop_map(|(which, outcome)| Op::Complete { which, outcome }),
        1 => any::<Index>().prop_map(|which| Op::CancelWaiting { which }),
        2 => (0..=40u64).prop_map(|ms| Op::Advance { ms }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => op().prop_map(|op| vec![op]),
        1 => prop::collection::vec(op(), 2..=4),
    ]
}

type Acquire<'l> = Spawn<Pin<Box<dyn Future<Output = Result<Permit, Overload>> + 'l>>>;

/// A request still waiting, as far as the test has seen.
struct Pending<'l> {
    future: Acquire<'l>,
    /// Arrival number, for messages.
    seq: u64,
    arrived: Instant,
}

/// The test's side: what it holds, and what it has seen happen.
struct Harness<'l> {
    limiter: &'l Limiter,
    config: Config,
    held: Vec<Permit>,
    /// Pending `acquire` futures, oldest first.
    pending: Vec<Pending<'l>>,
    arrivals: u64,
    /// Permits received, immediately or from the queue.
    granted: u64,
    /// Permits dropped.
    released: u64,
    /// Pending futures dropped.
    abandoned: u64,
    /// Rejections received, by reason.
    rejected: [u64; 4],
}

fn reason_index(reason: OverloadReason) -> usize {
    OverloadReason::ALL
        .iter()
        .position(|r| *r == reason)
        .expect("a known reason")
}

/// Invariants every snapshot satisfies on its own.
fn assert_snapshot_consistent(s: &MetricsSnapshot, config: &Config) {
    assert_eq!(s.max_concurrent, config.max_concurrent, "{s:?}");
    assert_eq!(s.queue_size, config.queue_size, "{s:?}");
    assert!(s.active <= s.max_concurrent, "active over the limit: {s:?}");
    assert!(s.queued <= s.queue_size, "queued over the bound: {s:?}");
    // A slot handed to a waiter counts as admitted once its caller takes it.
    assert_eq!(
        s.admitted + s.handed_over as u64,
        s.completed + s.active as u64,
        "{s:?}"
    );
    assert_eq!(
        s.total_rejected,
        s.rejected_concurrency_limit
            + s.rejected_queue_full
            + s.rejected_queue_timeout
            + s.rejected_queue_shed,
        "{s:?}"
    );
    if s.queued > 0 {
        assert_eq!(
            s.active, s.max_concurrent,
            "someone waits beside a free slot: {s:?}"
        );
    }
}

impl<'l> Harness<'l> {
    fn new(limiter: &'l Limiter, config: Config) -> Self {
        Self {
            limiter,
            config,
            held: Vec::new(),
            pending: Vec::new(),
            arrivals: 0,
            granted: 0,
            released: 0,
            abandoned: 0,
            rejected: [0; 4],
        }
    }

    async fn run(&mut self, op: &Op) {
        match op {
            Op::Arrive => self.arrive(),
            Op::Complete { which, outcome } => {
                if !self.held.is_empty() {
                    let mut permit = self.held.remove(which.index(self.held.len()));
                    if let Some(outcome) = outcome {
                        permit.set_outcome(*outcome);
                    }
                    drop(permit);
                    self.released += 1;
                }
            }
            Op::CancelWaiting { which } => {
                if !self.pending.is_empty() {
                    drop(self.pending.remove(which.index(self.pending.len())));
                    self.abandoned += 1;
                }
            }
            Op::Advance { ms } => tokio::time::advance(Duration::from_millis(*ms)).await,
        }
    }

    /// A new request, polled once: admitted at once, queued or rejected,
    /// exactly as the state before it dictates.
    fn arrive(&mut self) {
        let before = self.limiter.snapshot();
        let now = Instant::now();
        let seq = self.arrivals;
        self.arrivals += 1;
        let admissible = before.active < self.config.max_concurrent && before.queued == 0;
        let future: Pin<Box<dyn Future<Output = _> + 'l>> = Box::pin(self.limiter.acquire());
        let mut future = task::spawn(future);
        match future.poll() {
            Poll::Ready(Ok(permit)) => {
                assert!(
                    admissible,
                    "#{seq} admitted past busy slots or a queue: {before:?}"
                );
                // Timed or not, never stamped with another time.
                assert!(permit.admitted_at().is_none_or(|at| at == now));
                self.granted += 1;
                self.held.push(permit);
            }
            Poll::Ready(Err(overload)) => {
                assert!(
                    !admissible,
                    "#{seq} rejected beside a free slot: {before:?}"
                );
                assert_eq!(
                    before.queued, self.config.queue_size,
                    "#{seq} rejected with room in the queue: {overload:?}"
                );
                let expected = if self.config.queue_size == 0 {
                    OverloadReason::ConcurrencyLimit
                } else {
                    OverloadReason::QueueFull
                };
                assert_eq!(overload.reason, expected, "#{seq}: {before:?}");
                self.rejection(overload);
            }
            Poll::Pending => {
                assert!(!admissible, "#{seq} queued beside a free slot: {before:?}");
                assert!(
                    before.queued < self.config.queue_size,
                    "#{seq} queued past the bound: {before:?}"
                );
                self.pending.push(Pending {
                    future,
                    seq,
                    arrived: now,
                });
            }
        }
    }

    fn rejection(&mut self, overload: Overload) {
        let i = reason_index(overload.reason);
        self.rejected[i] += 1;
        // The error's snapshot was taken right after this rejection was counted.
        let s = &overload.snapshot;
        assert_snapshot_consistent(s, &self.config);
        assert_eq!(
            s.rejected(overload.reason),
            self.rejected[i],
            "{overload:?}"
        );
        assert_eq!(
            s.total_rejected,
            self.rejected.iter().sum::<u64>(),
            "{overload:?}"
        );
        assert_eq!(overload.queue_timeout, self.config.queue_timeout);
        assert!(
            (RETRY_AFTER_MIN..=RETRY_AFTER_MAX).contains(&overload.retry_after),
            "{overload:?}"
        );
    }

    /// Polls every pending future, oldest first, and collects the resolved ones.
    fn poll_all(&mut self) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.pending.len() {
            let woken = self.pending[i].future.is_woken();
            let Poll::Ready(result) = self.pending[i].future.poll() else {
                i += 1;
                continue;
            };
            let Pending { seq, arrived, .. } = self.pending.remove(i);
            // A waiter is woken when its slot or its deadline comes: a
            // future that resolves without a wake-up would have hung on a
            // real executor.
            assert!(woken, "#{seq} resolved without having been woken");
            match result {
                Ok(permit) => {
                    assert_eq!(
                        i, 0,
                        "FIFO: #{seq} got a slot while #{} still waits",
                        self.pending[0].seq
                    );
                    // From the queue, always timed.
                    let at = permit.admitted_at().expect("a waiter's permit is timed");
                    assert!(arrived <= at && at <= now);
                    self.granted += 1;
                    self.held.push(permit);
                }
                Err(overload) => {
                    assert_eq!(overload.reason, OverloadReason::QueueTimeout, "#{seq}");
                    let waited = now - arrived;
                    assert!(
                        waited >= self.config.queue_timeout,
                        "#{seq} timed out after {waited:?} only"
                    );
                    self.rejection(overload);
                }
            }
        }
    }

    /// Checks that hold at any time, polled or not.
    fn check_anytime(&self) -> MetricsSnapshot {
        let s = self.limiter.snapshot();
        assert_snapshot_consistent(&s, &self.config);
        // Every pending future waits in the queue or was handed a slot it has
        // not collected yet; every permit the test holds counts as active.
        assert_eq!(
            s.active + s.queued,
            self.held.len() + self.pending.len(),
            "{s:?}"
        );
        assert!(s.active >= self.held.len(), "{s:?}");
        for (reason, seen) in OverloadReason::ALL.into_iter().zip(self.rejected) {
            assert_eq!(s.rejected(reason), seen, "{s:?}");
        }
        s
    }

    /// Checks after every pending future was polled.
    fn check_settled(&self) {
        let s = self.check_anytime();
        let now = Instant::now();
        assert_eq!(
            s.active,
            self.held.len(),
            "a granted waiter was not told: {s:?}"
        );
        assert_eq!(s.queued, self.pending.len(), "{s:?}");
        // A pending future dropped left the queue (`cancelled_in_queue`), even
        // when a slot had been handed to it: it never ran, so it was never
        // admitted, and the slot went on to the next in line.
        assert_eq!(s.cancelled_in_queue, self.abandoned, "{s:?}");
        assert_eq!(s.admitted, self.granted, "{s:?}");
        assert_eq!(s.completed, self.released, "{s:?}");
        for p in &self.pending {
            let waited = now - p.arrived;
            assert!(
                waited < self.config.queue_timeout,
                "#{} still waits after {waited:?}",
                p.seq
            );
        }
    }

    /// Drops everything the test holds; the limiter must end empty.
    fn finish(mut self) {
        self.released += self.held.len() as u64;
        self.held.clear();
        self.check_anytime();
        self.abandoned += self.pending.len() as u64;
        self.pending.clear();
        let s = self.check_anytime();
        assert_eq!((s.active, s.queued), (0, 0), "{s:?}");
        assert_eq!(s.admitted, s.completed, "{s:?}");
        assert_eq!(s.cancelled_in_queue, self.abandoned, "{s:?}");
        assert_eq!(s.admitted, self.granted, "{s:?}");
        assert_eq!(s.completed, self.released, "{s:?}");
    }
}

fn run_case(config: Config, steps: Vec<Step>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let limiter = Limiter::new(
            LimiterConfig::new(config.max_concurrent)
                .with_queue_size(config.queue_size)
                .with_queue_timeout(config.queue_timeout)
                .with_retry_after_bounds(RETRY_AFTER_MIN, RETRY_AFTER_MAX),
        )
        .expect("a valid configuration");
        let mut harness = Harness::new(&limiter, config);
        for step in &steps {
            for op in step {
                harness.run(op).await;
                harness.check_anytime();
            }
            harness.poll_all();
            harness.check_settled();
        }
        harness.finish();
    });
}

proptest! {
    // 256 cases by default; `PROPTEST_CASES=n` for a longer hunt.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn limiter_agrees_with_the_model(
        config in config(),
        steps in prop::collection::vec(step(), 1..=60),
    ) {
        run_case(config, steps);
    }
}
