//! Loom models of the synchronization the limiter owns: the hand-over of a
//! released slot to a queued waiter, racing against the waiter's cancellation
//! and its timeout.
//!
//! Tokio's timers do not run under loom, so the models drive the pieces
//! `Limiter::acquire` is made of — `admit`, `Waiter`, `Waiter::time_out`,
//! `Permit` — directly. Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test --lib --release --no-default-features \
//!     --target-dir target/loom loom
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll, Waker};

use loom::sync::atomic::{AtomicBool, Ordering::SeqCst};
use loom::thread;
use tokio::time::Instant;

use super::admission::{Limiter, Shared};
use super::permit::Permit;
use super::queue::Grant;
use super::request::Request;
use super::state::{Admission, LazyNow, WakeList};
use super::waiter::Waiter;
use crate::config::LimiterConfig;
use crate::metrics::MetricsSnapshot;
use crate::overload::{Overload, OverloadReason, Scope};
use crate::sync::Arc;

/// Runs a model with at most 4 preemptions per execution (unless
/// `LOOM_MAX_PREEMPTIONS` says otherwise): the 3-thread models are exhaustive
/// in seconds at that bound, but do not finish in minutes without one.
fn model<F>(f: F)
where
    F: Fn() + Send + Sync + 'static,
{
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound.get_or_insert(4);
    builder.check(f);
}

fn limiter(max_concurrent: usize, queue_size: usize) -> Limiter {
    Limiter::new(LimiterConfig::new(max_concurrent).with_queue_size(queue_size))
        .expect("valid configuration")
}

/// Admits `request` the way `acquire_with` does, waking whom it evicted.
fn admit(shared: &Shared, request: Request<'_>) -> Admission {
    let mut wake = WakeList::default();
    let admission = shared
        .lock()
        .admit(&request, &mut LazyNow::at(Instant::now()), &mut wake);
    wake.wake_all();
    admission
}

/// Takes a slot, which must be free.
fn hold(shared: &Arc<Shared>) -> Permit {
    match admit(shared, Request::new()) {
        Admission::Admitted(grant) => Permit::new(shared.clone(), grant),
        _ => panic!("expected a free slot"),
    }
}

/// Queues a request, which must find every slot busy; returns its key.
fn enqueue(shared: &Shared) -> usize {
    enqueue_as(shared, Request::new())
}

fn enqueue_as(shared: &Shared, request: Request<'_>) -> usize {
    match admit(shared, request) {
        Admission::Enqueued { key, .. } => key,
        _ => panic!("expected to be queued"),
    }
}

/// Polls a waiter once with a waker that does nothing, as an executor would
/// before the waiter's timer fires.
fn poll_once(waiter: &mut Waiter<'_>) -> Poll<Result<Grant, Box<Overload>>> {
    Pin::new(waiter).poll(&mut Context::from_waker(Waker::noop()))
}

/// The permit `acquire` turns a grant into; a rejection is a bug here.
fn permit(shared: &Arc<Shared>, grant: Result<Grant, Box<Overload>>) -> Permit {
    Permit::new(shared.clone(), grant.expect("granted, not rejected"))
}

/// Nothing held, nothing queued, every admission given back.
fn assert_drained(limiter: &Limiter) -> MetricsSnapshot {
    let s = limiter.snapshot();
    assert_eq!((s.active, s.queued), (0, 0), "{s:?}");
    assert_eq!(s.admitted, s.completed, "{s:?}");
    s
}

/// (a) A holder releases while the head of the queue blocks on its waiter:
/// the slot is handed over and the waiter is woken.
#[test]
fn loom_release_hands_the_slot_to_a_blocked_waiter() {
    model(|| {
        let limiter = limiter(1, 1);
        let shared = limiter.shared().clone();
        let holder = hold(&shared);
        let key = enqueue(&shared);

        let releaser = thread::spawn(move || drop(holder));
        let grant = loom::future::block_on(Waiter::new(&shared, key));
        assert_eq!(grant.as_ref().unwrap().inflight, 1);
        let permit = permit(&shared, grant);
        // The holder's release is what granted the slot.
        let s = limiter.snapshot();
        assert_eq!((s.active, s.queued, s.admitted, s.completed), (1, 0, 2, 1));
        drop(permit);
        releaser.join().unwrap();

        let s = assert_drained(&limiter);
        assert_eq!((s.admitted, s.cancelled_in_queue), (2, 0));
    });
}

/// (b) A holder releases while the only waiter is cancelled: the slot goes to
/// the waiter and straight back, or the waiter leaves first and the slot is
/// simply freed. Nothing leaks either way.
#[test]
fn loom_release_racing_a_cancel_leaks_nothing() {
    static HANDED_OVER: AtomicUsize = AtomicUsize::new(0);
    static LEFT_FIRST: AtomicUsize = AtomicUsize::new(0);
    model(|| {
        let limiter = limiter(1, 1);
        let shared = limiter.shared().clone();
        let holder = hold(&shared);
        let key = enqueue(&shared);

        let releaser = thread::spawn(move || drop(holder));
        let mut waiter = Waiter::new(&shared, key);
        match poll_once(&mut waiter) {
            // Granted before the caller went away: `acquire` returned a
            // permit, which its caller drops.
            Poll::Ready(grant) => drop(permit(&shared, grant)),
            Poll::Pending => drop(waiter),
        }
        releaser.join().unwrap();

        let s = assert_drained(&limiter);
        match (s.admitted, s.cancelled_in_queue) {
            (2, 0) => HANDED_OVER.fetch_add(1, Relaxed),
            (1, 1) => LEFT_FIRST.fetch_add(1, Relaxed),
            _ => panic!("unexpected counts: {s:?}"),
        };
    });
    assert!(HANDED_OVER.load(Relaxed) > 0 && LEFT_FIRST.load(Relaxed) > 0);
}

/// (b') As (b), with a second waiter behind the cancelled one: whichever way
/// the race goes, the slot ends with the second waiter, which is woken.
#[test]
fn loom_a_cancelled_waiter_passes_the_slot_on() {
    model(|| {
        let limiter = limiter(1, 2);
        let shared = limiter.shared().clone();
        let holder = hold(&shared);
        let first = enqueue(&shared);
        let second = enqueue(&shared);

        let releaser = thread::spawn(move || drop(holder));
        let canceller = thread::spawn({
            let shared = shared.clone();
            move || {
                let mut waiter = Waiter::new(&shared, first);
                match poll_once(&mut waiter) {
                    Poll::Ready(grant) => drop(permit(&shared, grant)),
                    Poll::Pending => drop(waiter),
                }
            }
        });
        let grant = loom::future::block_on(Waiter::new(&shared, second));
        drop(permit(&shared, grant));
        releaser.join().unwrap();
        canceller.join().unwrap();

        let s = assert_drained(&limiter);
        assert!(
            matches!((s.admitted, s.cancelled_in_queue), (3, 0) | (2, 1)),
            "{s:?}"
        );
    });
}

/// (c) A holder releases while the waiter's deadline passes: the waiter is
/// either granted (and keeps the slot) or timed out (and the slot is freed),
/// never both, never neither.
#[test]
fn loom_release_racing_a_timeout_decides_once() {
    static GRANTED: AtomicUsize = AtomicUsize::new(0);
    static TIMED_OUT: AtomicUsize = AtomicUsize::new(0);
    model(|| {
        let limiter = limiter(1, 1);
        let shared = limiter.shared().clone();
        let holder = hold(&shared);
        let key = enqueue(&shared);

        let releaser = thread::spawn(move || drop(holder));
        // `acquire` polls the waiter, then finds its deadline passed.
        let mut waiter = Waiter::new(&shared, key);
        let result = match poll_once(&mut waiter) {
            Poll::Ready(decided) => decided,
            Poll::Pending => waiter.time_out(),
        };
        match result {
            Ok(grant) => {
                assert_eq!(grant.inflight, 1);
                let permit = permit(&shared, Ok(grant));
                let s = limiter.snapshot();
                assert_eq!((s.active, s.admitted, s.rejected_queue_timeout), (1, 2, 0));
                drop(permit);
                GRANTED.fetch_add(1, Relaxed);
            }
            Err(overload) => {
                assert_eq!(overload.reason, OverloadReason::QueueTimeout);
                assert_eq!(overload.snapshot.queued, 0);
                assert_eq!(overload.snapshot.rejected_queue_timeout, 1);
                TIMED_OUT.fetch_add(1, Relaxed);
            }
        }
        releaser.join().unwrap();

        let s = assert_drained(&limiter);
        assert_eq!(s.admitted + s.rejected_queue_timeout, 2, "{s:?}");
        assert_eq!(s.cancelled_in_queue, 0);
    });
    assert!(GRANTED.load(Relaxed) > 0 && TIMED_OUT.load(Relaxed) > 0);
}

/// (d) Two holders release at once while two waiters queue: the slots go in
/// FIFO order, so once the second waiter has one the first has one too.
#[test]
fn loom_concurrent_releases_hand_over_in_fifo_order() {
    model(|| {
        let limiter = limiter(2, 2);
        let shared = limiter.shared().clone();
        let holders = [hold(&shared), hold(&shared)];
        let first = enqueue(&shared);
        let second = enqueue(&shared);

        let releasers = holders.map(|holder| thread::spawn(move || drop(holder)));
        let mut first = Waiter::new(&shared, first);
        let second = loom::future::block_on(Waiter::new(&shared, second));
        let Poll::Ready(first) = poll_once(&mut first) else {
            panic!("the second waiter got a slot before the first");
        };
        let permits = [permit(&shared, first), permit(&shared, second)];
        let s = limiter.snapshot();
        assert_eq!((s.active, s.queued, s.admitted), (2, 0, 4), "{s:?}");
        drop(permits);
        for releaser in releasers {
            releaser.join().unwrap();
        }

        assert_eq!(assert_drained(&limiter).admitted, 4);
    });
}

/// (e) One slot, two waiters on their own threads: the slot passes from the
/// holder to the first waiter, then to the second; each runs alone.
#[test]
fn loom_the_slot_passes_down_the_queue_in_order() {
    model(|| {
        let limiter = limiter(1, 2);
        let shared = limiter.shared().clone();
        let holder = hold(&shared);
        let keys = [enqueue(&shared), enqueue(&shared)];
        let first_ran = Arc::new(AtomicBool::new(false));
        let running = Arc::new(AtomicBool::new(false));

        let waiters = keys.map(|key| {
            let (shared, first_ran, running) = (shared.clone(), first_ran.clone(), running.clone());
            thread::spawn(move || {
                let grant = loom::future::block_on(Waiter::new(&shared, key));
                let permit = permit(&shared, grant);
                assert!(!running.swap(true, SeqCst), "two requests in one slot");
                if key == keys[0] {
                    first_ran.store(true, SeqCst);
                } else {
                    assert!(
                        first_ran.load(SeqCst),
                        "the second waiter overtook the first"
                    );
                }
                running.store(false, SeqCst);
                drop(permit);
            })
        });
        drop(holder);
        for waiter in waiters {
            waiter.join().unwrap();
        }

        assert_eq!(assert_drained(&limiter).admitted, 3);
    });
}

/// (f) A reload raises the limit while a holder releases: both waiters end
/// up with a slot, each counted once, whichever comes first.
#[test]
fn loom_a_reload_racing_a_release_counts_every_slot_once() {
    model(|| {
        let limiter = limiter(1, 2);
        let shared = limiter.shared().clone();
        let holder = hold(&shared);
        let keys = [enqueue(&shared), enqueue(&shared)];

        let releaser = thread::spawn(move || drop(holder));
        let reloader = thread::spawn({
            let limiter = limiter.clone();
            move || {
                limiter
                    .reconfigure(LimiterConfig::new(2).with_queue_size(2))
                    .expect("valid");
            }
        });
        let permits =
            keys.map(|key| permit(&shared, loom::future::block_on(Waiter::new(&shared, key))));
        let s = limiter.snapshot();
        assert!(s.active <= 2 && s.admitted <= 3, "{s:?}");
        drop(permits);
        releaser.join().unwrap();
        reloader.join().unwrap();

        let s = assert_drained(&limiter);
        assert_eq!((s.admitted, s.max_concurrent), (3, 2), "{s:?}");
    });
}

/// (g) The queue is full of client A's waiters; client B's newcomer takes the
/// place of A's newest while that waiter's caller goes away: the evicted
/// waiter is rejected or cancelled, never both, and nothing leaks.
#[test]
fn loom_an_eviction_racing_a_cancel_decides_once() {
    model(|| {
        let limiter = limiter(1, 2);
        let shared = limiter.shared().clone();
        let holder = hold(&shared);
        let _older = enqueue_as(&shared, Request::new().client("a"));
        let newest = enqueue_as(&shared, Request::new().client("a"));

        let canceller = thread::spawn({
            let shared = shared.clone();
            move || {
                let mut waiter = Waiter::new(&shared, newest);
                match poll_once(&mut waiter) {
                    Poll::Ready(Err(overload)) => {
                        assert_eq!(overload.reason, OverloadReason::QueueFull);
                        assert_eq!(overload.scope, Scope::Client);
                    }
                    Poll::Ready(Ok(_)) => panic!("no slot was free"),
                    Poll::Pending => drop(waiter),
                }
            }
        });
        let b = match admit(&shared, Request::new().client("b")) {
            // A left first: room without evicting anyone.
            Admission::Enqueued { key, .. } => key,
            _ => panic!("b must get a place"),
        };
        canceller.join().unwrap();
        let s = limiter.snapshot();
        assert_eq!(s.queued, 2, "{s:?}");
        assert_eq!(s.cancelled_in_queue + s.rejected_queue_full, 1, "{s:?}");
        drop(Waiter::new(&shared, b));
        drop(holder);
        // A's older waiter got the slot (still uncollected): cancel it too.
        drop(Waiter::new(&shared, _older));
        assert_drained(&limiter);
    });
}
