use std::collections::HashMap;

use mcp_backpressure::LimiterConfig;
use proptest::prelude::*;

use super::*;
use crate::proxy::limits::Settings;

fn inflight_with(max: usize, queue: usize, max_in_flight: usize) -> InFlight {
    let mut settings = Settings::with_defaults(LimiterConfig::new(max).with_queue_size(queue));
    settings.max_in_flight = max_in_flight;
    let limiter = settings.limiter().unwrap();
    InFlight::new(Arc::new(Gate::new(limiter, settings)))
}

fn inflight(max: usize, queue: usize) -> InFlight {
    inflight_with(max, queue, 1000)
}

fn key(scope: &Scope, id: i64) -> Key {
    Key {
        scope: scope.clone(),
        id: RequestId::int(id),
    }
}

/// What an anonymous call of the tool `t` asks.
fn ask() -> Option<Ask> {
    Some(Ask {
        continuation: false,
        tool: "t".into(),
        client: None,
    })
}

/// `guarded` as what [`InFlight::begin`] takes.
fn asked(guarded: bool) -> Option<Ask> {
    if guarded { ask() } else { None }
}

fn queued(table: &InFlight, key: Key) -> Queued {
    match table.begin(key, ask(), Purpose::Plain) {
        Ok(Begun::Queued(q)) => q,
        other => panic!("expected a queued request, got {other:?}"),
    }
}

fn admitted(admission: Admission) -> Ticket {
    match admission {
        Admission::Admitted(ticket) => ticket,
        other => panic!("expected admission, got {other:?}"),
    }
}

fn active(table: &InFlight) -> usize {
    table.gate().limiter.snapshot().active
}

#[tokio::test(start_paused = true)]
async fn a_response_frees_the_slot_for_the_next_in_line() {
    let table = inflight(1, 1);
    let s = Scope::Stdio;
    admitted(queued(&table, key(&s, 1)).admit().await);
    let waiting = tokio::spawn(queued(&table, key(&s, 2)).admit());
    tokio::task::yield_now().await;
    assert_eq!(table.gate().limiter.snapshot().queued, 1);
    let Admission::Rejected(overload) = queued(&table, key(&s, 3)).admit().await else {
        panic!("expected a rejection");
    };
    assert_eq!(overload.reason, mcp_backpressure::OverloadReason::QueueFull);
    assert!(
        table
            .answered(&key(&s, 1), Outcome::Success, None)
            .was_waiting()
    );
    admitted(waiting.await.unwrap());
    assert!(
        !table
            .answered(&key(&s, 1), Outcome::Success, None)
            .was_waiting(),
        "answered twice"
    );
    assert!(
        table
            .answered(&key(&s, 2), Outcome::Success, None)
            .was_waiting()
    );
    let snapshot = table.gate().limiter.snapshot();
    assert_eq!((snapshot.active, snapshot.completed), (0, 2));
    assert_eq!(table.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn ids_in_flight_are_unique_per_scope_and_the_table_is_bounded() {
    let table = inflight_with(4, 0, 3);
    let a = Scope::Session("a".into());
    let b = Scope::Session("b".into());
    admitted(queued(&table, key(&a, 1)).admit().await);
    // A ping reusing the id of a running call is refused, not forwarded.
    assert_eq!(
        table.begin(key(&a, 1), None, Purpose::Plain).unwrap_err(),
        Refused::Duplicate(RequestId::int(1))
    );
    assert!(matches!(
        table.begin(key(&b, 1), None, Purpose::Plain),
        Ok(Begun::Tracked(_))
    ));
    assert!(matches!(
        table.begin(key(&a, 2), None, Purpose::Plain),
        Ok(Begun::Tracked(_))
    ));
    assert_eq!(
        table.begin(key(&a, 3), None, Purpose::Plain).unwrap_err(),
        Refused::Full { max: 3 }
    );
    assert_eq!(active(&table), 1, "the refused requests took no slot");
    // An answered request leaves no trace: its id can be used again.
    assert!(
        table
            .answered(&key(&a, 2), Outcome::Success, None)
            .was_waiting()
    );
    assert!(matches!(
        table.begin(key(&a, 2), None, Purpose::Plain),
        Ok(Begun::Tracked(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_call_keeps_its_slot_until_the_upstream_answers_or_the_grace_passes() {
    let table = inflight(1, 0);
    let s = Scope::Stdio;
    let ticket = admitted(queued(&table, key(&s, 1)).admit().await);
    let Cancel::Forwarded(t) = table.cancel(&key(&s, 1)) else {
        panic!("1 was forwarded");
    };
    assert_eq!(t, ticket);
    assert_eq!(active(&table), 1, "the upstream may still be working");
    assert_eq!(table.gate().metrics.held_after_cancel.get(), 1);
    // Still reserved: the id cannot be reused while the upstream may answer it.
    assert!(table.begin(key(&s, 1), None, Purpose::Plain).is_err());
    // A second cancellation finds nothing more to do.
    assert!(matches!(table.cancel(&key(&s, 1)), Cancel::Unknown));
    table.expire_after(key(&s, 1), ticket, Duration::from_secs(2), |_| {});
    tokio::time::sleep(Duration::from_millis(1999)).await;
    assert_eq!(active(&table), 1);
    tokio::time::sleep(Duration::from_millis(2)).await;
    assert_eq!(active(&table), 0, "the grace passed");
    assert_eq!(table.gate().metrics.held_after_cancel.get(), 0);
    assert_eq!(table.gate().metrics.cancel_grace_expired.get(), 1);

    // The upstream answering first frees it at once; the timer then does nothing.
    let ticket = admitted(queued(&table, key(&s, 2)).admit().await);
    assert!(matches!(table.cancel(&key(&s, 2)), Cancel::Forwarded(_)));
    table.expire_after(key(&s, 2), ticket, Duration::from_secs(2), |_| {
        panic!("nothing expires")
    });
    assert!(
        table
            .answered(&key(&s, 2), Outcome::Success, None)
            .was_waiting()
    );
    assert_eq!(active(&table), 0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(table.gate().metrics.cancel_grace_expired.get(), 1);

    // Zero grace frees at once.
    let ticket = admitted(queued(&table, key(&s, 3)).admit().await);
    assert!(matches!(table.cancel(&key(&s, 3)), Cancel::Forwarded(_)));
    table.expire_after(key(&s, 3), ticket, Duration::ZERO, |_| {});
    assert_eq!(active(&table), 0);
}

#[tokio::test(start_paused = true)]
async fn a_detached_call_waits_for_its_answer_then_asks_for_an_upstream_cancel() {
    let table = inflight(1, 0);
    let s = Scope::Session("s".into());
    let ticket = admitted(queued(&table, key(&s, 1)).admit().await);
    assert!(table.abandon(&key(&s, 1), ticket, true));
    assert!(!table.abandon(&key(&s, 1), ticket, true), "once");
    let (tx, rx) = oneshot::channel();
    table.expire_after(key(&s, 1), ticket, Duration::from_secs(1), move |e| {
        let _ = tx.send(e);
    });
    assert_eq!(active(&table), 1);
    assert_eq!(rx.await.unwrap(), Expired::Detached);
    assert_eq!(active(&table), 0);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_waiter_leaves_the_queue_and_another_scope_is_untouched() {
    let table = inflight(1, 4);
    let s = Scope::Session("s".into());
    let t = Scope::Exchange(7);
    admitted(queued(&table, key(&s, 1)).admit().await);
    let waiting = tokio::spawn(queued(&table, key(&t, 2)).admit());
    tokio::task::yield_now().await;
    // Another scope's id 2 is another request.
    assert!(matches!(table.cancel(&key(&s, 2)), Cancel::Unknown));
    let Cancel::Queued(left) = table.cancel(&key(&t, 2)) else {
        panic!("2 was queued");
    };
    left.wait().await;
    assert_eq!(table.gate().limiter.snapshot().queued, 0);
    assert!(matches!(waiting.await.unwrap(), Admission::Cancelled));
    let s = table.gate().limiter.snapshot();
    assert_eq!((s.admitted, s.cancelled_in_queue), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_admit_future_leaves_nothing_behind() {
    let table = inflight(1, 4);
    admitted(queued(&table, key(&Scope::Stdio, 1)).admit().await);
    let waiting = tokio::spawn(queued(&table, key(&Scope::Stdio, 2)).admit());
    tokio::task::yield_now().await;
    waiting.abort();
    let _ = waiting.await;
    assert_eq!(table.len(), 1);
    assert_eq!(table.gate().limiter.snapshot().queued, 0);
    drop(queued(&table, key(&Scope::Stdio, 3)));
    assert_eq!(table.len(), 1);
    assert_eq!(table.gate().metrics.in_flight.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn drain_counts_queued_calls_as_cancelled_never_as_admitted() {
    let table = inflight(1, 5);
    let s = Scope::Stdio;
    admitted(queued(&table, key(&s, 1)).admit().await);
    let mut waiting = Vec::new();
    for id in 2..7 {
        waiting.push(tokio::spawn(queued(&table, key(&s, id)).admit()));
    }
    tokio::task::yield_now().await;
    assert_eq!(table.gate().limiter.snapshot().queued, 5);
    let pending = table.drain(None).await;
    let forwarded: Vec<bool> = pending.iter().map(|p| p.forwarded).collect();
    assert_eq!(forwarded, [true, false, false, false, false, false]);
    for w in waiting {
        assert!(matches!(w.await.unwrap(), Admission::Cancelled));
    }
    let snap = table.gate().limiter.snapshot();
    assert_eq!(
        (
            snap.admitted,
            snap.cancelled_in_queue,
            snap.active,
            snap.queued
        ),
        (1, 5, 0, 0)
    );
    assert_eq!(table.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_finished_ticket_frees_its_slot_once_and_never_a_newer_request() {
    let table = inflight(1, 0);
    let k = key(&Scope::Stdio, 1);
    let ticket = admitted(queued(&table, k.clone()).admit().await);
    assert!(table.finish(&k, ticket, Outcome::Success));
    assert!(!table.finish(&k, ticket, Outcome::Success));
    let newer = admitted(queued(&table, k.clone()).admit().await);
    assert!(
        !table.finish(&k, ticket, Outcome::Success),
        "a stale ticket"
    );
    assert_eq!(active(&table), 1);
    assert!(table.finish(&k, newer, Outcome::Success));
    let snapshot = table.gate().limiter.snapshot();
    assert_eq!((snapshot.active, snapshot.completed), (0, 2));
}

// === the table against a reference model ===

#[derive(Clone, Debug)]
enum Step {
    Begin { scope: u8, id: u8, guarded: bool },
    Answer { scope: u8, id: u8 },
    Cancel { scope: u8, id: u8 },
    Abandon { scope: u8, id: u8, resumable: bool },
    Expire { scope: u8, id: u8 },
    Finish { scope: u8, id: u8 },
    Drain { scope: Option<u8> },
}

fn step() -> impl Strategy<Value = Step> {
    let s = 0u8..2;
    let id = 0u8..4;
    prop_oneof![
        3 => (s.clone(), id.clone(), any::<bool>()).prop_map(|(scope, id, guarded)| Step::Begin { scope, id, guarded }),
        2 => (s.clone(), id.clone()).prop_map(|(scope, id)| Step::Answer { scope, id }),
        1 => (s.clone(), id.clone()).prop_map(|(scope, id)| Step::Cancel { scope, id }),
        1 => (s.clone(), id.clone(), any::<bool>()).prop_map(|(scope, id, resumable)| Step::Abandon { scope, id, resumable }),
        1 => (s.clone(), id.clone()).prop_map(|(scope, id)| Step::Expire { scope, id }),
        1 => (s.clone(), id.clone()).prop_map(|(scope, id)| Step::Finish { scope, id }),
        1 => prop::option::of(s).prop_map(|scope| Step::Drain { scope }),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Model {
    Queued,
    Forwarded,
    /// Cancelled (`false`) or detached (`true`), holding its slot.
    Held(bool),
}

struct Reference {
    /// Every entry: its state, whether it is guarded, its arrival.
    entries: HashMap<Key, (Model, bool, u64)>,
    arrivals: u64,
}

const MAX: usize = 2;
const MAX_IN_FLIGHT: usize = 6;

impl Reference {
    fn running(&self) -> usize {
        self.entries
            .values()
            .filter(|(m, g, _)| *g && *m != Model::Queued)
            .count()
    }

    /// Slots go to the queued guarded requests in arrival order.
    fn promote(&mut self) {
        while self.running() < MAX {
            let next = self
                .entries
                .iter()
                .filter(|(_, (m, _, _))| *m == Model::Queued)
                .min_by_key(|(_, (_, _, at))| *at)
                .map(|(k, _)| k.clone());
            let Some(k) = next else { break };
            self.entries.get_mut(&k).unwrap().0 = Model::Forwarded;
        }
    }
}

fn scope_of(n: u8) -> Scope {
    if n == 0 {
        Scope::Stdio
    } else {
        Scope::Session("s".into())
    }
}

async fn run_model(steps: Vec<Step>) {
    let table = inflight_with(MAX, 100, MAX_IN_FLIGHT);
    let mut model = Reference {
        entries: HashMap::new(),
        arrivals: 0,
    };
    let mut tickets: HashMap<Key, Ticket> = HashMap::new();
    let mut admissions: HashMap<Key, tokio::task::JoinHandle<Admission>> = HashMap::new();
    for step in steps {
        match step {
            Step::Begin { scope, id, guarded } => {
                let k = key(&scope_of(scope), i64::from(id));
                let result = table.begin(k.clone(), asked(guarded), Purpose::Plain);
                if model.entries.contains_key(&k) {
                    assert_eq!(result.unwrap_err(), Refused::Duplicate(k.id.clone()));
                } else if model.entries.len() >= MAX_IN_FLIGHT {
                    assert_eq!(result.unwrap_err(), Refused::Full { max: MAX_IN_FLIGHT });
                } else {
                    model.arrivals += 1;
                    match result.unwrap() {
                        Begun::Queued(q) => {
                            assert!(guarded);
                            model
                                .entries
                                .insert(k.clone(), (Model::Queued, true, model.arrivals));
                            admissions.insert(k, tokio::spawn(q.admit()));
                        }
                        Begun::Tracked(t) => {
                            assert!(!guarded);
                            model
                                .entries
                                .insert(k.clone(), (Model::Forwarded, false, model.arrivals));
                            tickets.insert(k, t);
                        }
                    }
                }
            }
            Step::Answer { scope, id } => {
                let k = key(&scope_of(scope), i64::from(id));
                let expect =
                    matches!(model.entries.get(&k), Some((m, _, _)) if *m != Model::Queued);
                assert_eq!(
                    table.answered(&k, Outcome::Success, None).was_waiting(),
                    expect,
                    "{k:?}"
                );
                if expect {
                    model.entries.remove(&k);
                }
            }
            Step::Cancel { scope, id } => {
                let k = key(&scope_of(scope), i64::from(id));
                let outcome = table.cancel(&k);
                match model.entries.get(&k).map(|e| e.0) {
                    Some(Model::Queued) => {
                        let Cancel::Queued(left) = outcome else {
                            panic!("{outcome:?}")
                        };
                        left.wait().await;
                        model.entries.remove(&k);
                    }
                    Some(Model::Forwarded | Model::Held(true)) => {
                        assert!(matches!(outcome, Cancel::Forwarded(_)), "{outcome:?}");
                        model.entries.get_mut(&k).unwrap().0 = Model::Held(false);
                    }
                    Some(Model::Held(false)) | None => {
                        assert!(matches!(outcome, Cancel::Unknown), "{outcome:?}")
                    }
                }
            }
            Step::Abandon {
                scope,
                id,
                resumable,
            } => {
                let k = key(&scope_of(scope), i64::from(id));
                if let Some(&t) = tickets.get(&k) {
                    let expect = matches!(model.entries.get(&k), Some((Model::Forwarded, _, _)));
                    assert_eq!(table.abandon(&k, t, resumable), expect);
                    if expect {
                        if model.entries[&k].1 {
                            model.entries.get_mut(&k).unwrap().0 = Model::Held(resumable);
                        } else {
                            // No slot to protect: an abandoned request is over.
                            model.entries.remove(&k);
                        }
                    }
                }
            }
            Step::Expire { scope, id } => {
                let k = key(&scope_of(scope), i64::from(id));
                if let Some(&t) = tickets.get(&k) {
                    let expect = matches!(model.entries.get(&k), Some((Model::Held(_), _, _)));
                    assert_eq!(table.expire(&k, t).is_some(), expect);
                    if expect {
                        model.entries.remove(&k);
                    }
                }
            }
            Step::Finish { scope, id } => {
                let k = key(&scope_of(scope), i64::from(id));
                if let Some(&t) = tickets.get(&k) {
                    let expect =
                        matches!(model.entries.get(&k), Some((m, _, _)) if *m != Model::Queued);
                    assert_eq!(table.finish(&k, t, Outcome::Success), expect);
                    if expect {
                        model.entries.remove(&k);
                    }
                }
            }
            Step::Drain { scope } => {
                let s = scope.map(scope_of);
                let pending = table.drain(s.as_ref()).await;
                let mut expect: Vec<(Key, bool)> = model
                    .entries
                    .iter()
                    .filter(|(k, _)| s.as_ref().is_none_or(|s| &k.scope == s))
                    .map(|(k, (m, _, _))| (k.clone(), *m != Model::Queued))
                    .collect();
                expect.sort_by_key(|(k, _)| model.entries[k].2);
                let got: Vec<(Key, bool)> =
                    pending.into_iter().map(|p| (p.key, p.forwarded)).collect();
                assert_eq!(got, expect);
                model
                    .entries
                    .retain(|k, _| !s.as_ref().is_none_or(|s| &k.scope == s));
            }
        }
        model.promote();
        // Let the admissions that were handed a slot claim it.
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        let done: Vec<Key> = admissions
            .iter()
            .filter(|(_, h)| h.is_finished())
            .map(|(k, _)| k.clone())
            .collect();
        for k in done {
            match admissions.remove(&k).unwrap().await.unwrap() {
                Admission::Admitted(t) => {
                    tickets.insert(k, t);
                }
                Admission::Cancelled => {}
                Admission::Rejected(o) => panic!("nothing is rejected: {o:?}"),
            }
        }
        // Every cap and count, after every step.
        let snapshot = table.gate().limiter.snapshot();
        let metrics = &table.gate().metrics;
        assert!(snapshot.active <= MAX, "{snapshot:?}");
        assert_eq!(snapshot.active, model.running(), "{snapshot:?}");
        let queued = model
            .entries
            .values()
            .filter(|e| e.0 == Model::Queued)
            .count();
        assert_eq!(snapshot.queued, queued, "{snapshot:?}");
        assert_eq!(table.len(), model.entries.len());
        assert!(table.len() <= MAX_IN_FLIGHT);
        assert_eq!(metrics.in_flight.get(), model.entries.len() as i64);
        let held = model
            .entries
            .values()
            .filter(|e| e.1 && matches!(e.0, Model::Held(_)))
            .count();
        assert_eq!(metrics.held_after_cancel.get(), held as i64);
        assert_eq!(
            snapshot.admitted,
            snapshot.completed + snapshot.active as u64
        );
    }
    table.drain(None).await;
    let snapshot = table.gate().limiter.snapshot();
    assert_eq!((snapshot.active, snapshot.queued), (0, 0));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The table agrees with a plain reference model after every step: ids
    /// unique per scope, the bound, FIFO slots, held slots after a cancel,
    /// and the gauges.
    #[test]
    fn the_table_matches_its_model(steps in prop::collection::vec(step(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(run_model(steps));
    }
}
