//! One limit across proxy replicas (`--shared-limit`), end to end: a real
//! `redis-server` on a free loopback port (started and killed by each test),
//! proxy replicas as real processes, and one in-test HTTP upstream
//! ([`Recorder`]) shared by all of them, which counts the calls it runs at
//! once and records the order they reach it.
//!
//! Every wait is bounded (metrics and conditions polled with deadlines);
//! each test prints what it measured (`--nocapture` shows it).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::process::Child;
use tokio::task::JoinSet;

use crate::recorder::{Recorder, call, joined, post_as, spawn_post, text};
use crate::redis::{RedisServer, free_port};
use crate::support::{
    PATIENCE, Stderr, assert_overload, http_proxy, metric, metrics_url, wait_metric,
};

const QUEUED: &str = "mcp_backpressure_queued";

const LEASES: &str = "mcp_backpressure_shared_leases";
const FALLBACK: &str = "mcp_backpressure_shared_fallback";
const ADMITTED: &str = "mcp_backpressure_admitted_total";

/// One proxy replica joined to a shared limit, with its metrics endpoint.
struct Replica {
    child: Child,
    log: Stderr,
    url: String,
    metrics: String,
}

impl Replica {
    /// A replica in front of `upstream`, sharing `key` at `redis`.
    async fn start(redis: &str, key: &str, upstream: &str, args: &[&str]) -> Self {
        let mut all = vec![
            "--shared-limit",
            redis,
            "--shared-key",
            key,
            "--metrics",
            "127.0.0.1:0",
        ];
        all.extend_from_slice(args);
        let (child, mut log, url) = http_proxy(&all, upstream).await;
        let metrics = metrics_url(&mut log).await;
        Self {
            child,
            log,
            url,
            metrics,
        }
    }

    async fn metric(&self, sample: &str) -> f64 {
        metric(&self.metrics, sample).await
    }

    async fn wait(&self, sample: &str, value: f64) {
        wait_metric(&self.metrics, sample, value).await;
    }

    /// kill -9.
    async fn kill(&mut self) {
        self.child.start_kill().expect("SIGKILL");
        let _ = tokio::time::timeout(PATIENCE, self.child.wait()).await;
    }
}

/// How a call was answered.
#[derive(Clone, Debug, PartialEq)]
enum Answer {
    Done(String),
    Overloaded(String),
}

/// The one answer of call `id`: its result's text, or the overload error's
/// reason (checked in full by [`assert_overload`]); anything else fails.
fn answer(id: u64, status: u16, response: &Value) -> Answer {
    assert_eq!(status, 200, "call {id}: {response}");
    assert_eq!(response["id"], id, "call {id}: {response}");
    if response.get("error").is_some() {
        let reason = response["error"]["data"]["reason"]
            .as_str()
            .unwrap_or_else(|| panic!("call {id}: not an overload error: {response}"))
            .to_owned();
        assert_overload(response, id, -31429, &reason);
        Answer::Overloaded(reason)
    } else {
        Answer::Done(text(response).to_owned())
    }
}

fn sleep_call(id: u64, tag: &str, ms: u64) -> String {
    call(id, "sleep", json!({"tag": tag, "ms": ms}))
}

/// POSTs `body` to a proxy that will be killed: the transport's error, not a panic.
fn spawn_unanswered(
    url: &str,
    body: String,
) -> tokio::task::JoinHandle<Result<String, reqwest::Error>> {
    let request = crate::http_client::client()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body);
    tokio::spawn(async move { request.send().await?.text().await })
}

/// Waits until `n` calls wait in the shared queue of `key`, as Redis itself
/// counts them (bounded by [`PATIENCE`]).
async fn wait_queue(redis: &RedisServer, key: &str, n: usize) {
    let queue = format!("{{{key}}}:queue");
    let expected = format!(":{n}");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let now = redis.command(&["ZCARD", &queue]);
        if now == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{queue} holds {now}, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `condition` every 20 ms until it holds (bounded by [`PATIENCE`]).
async fn until(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition().await {
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Three replicas share a limit of 5 in front of one upstream; 300 calls at
/// once, spread over them: the upstream never runs more than 5, every call
/// is answered once, and the replicas' admissions add up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_hold_one_limit_of_5_at_the_upstream() {
    let redis = RedisServer::start();
    let (upstream, upstream_url) = Recorder::start().await;
    let args = [
        "--max-concurrent",
        "5",
        "--queue-size",
        "300",
        "--queue-timeout",
        "60",
    ];
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Replica::start(&redis.url(), "three", &upstream_url, &args).await);
    }
    let started = Instant::now();
    let mut calls = JoinSet::new();
    for id in 0..300u64 {
        let url = replicas[id as usize % 3].url.clone();
        calls.spawn(async move {
            let (status, response) =
                post_as(&url, None, sleep_call(id, &format!("c{id}"), 20)).await;
            (id, answer(id, status, &response))
        });
    }
    let mut answered = vec![None; 300];
    while let Some(done) = tokio::time::timeout(PATIENCE, calls.join_next())
        .await
        .expect("every call answered in time")
    {
        let (id, answer) = done.unwrap();
        assert!(answered[id as usize].is_none(), "call {id} answered twice");
        answered[id as usize] = Some(answer);
    }
    let elapsed = started.elapsed();
    let done = answered
        .iter()
        .enumerate()
        .filter(|(id, a)| **a == Some(Answer::Done(format!("c{id}"))))
        .count();
    let max = upstream.max_running();
    eprintln!(
        "300 calls over 3 replicas, shared limit 5: {done} done in {elapsed:?}, \
         upstream max concurrency {max}"
    );
    assert_eq!(done, 300, "{answered:?}");
    assert_eq!(upstream.started().len(), 300, "each call ran once");
    assert!(max <= 5, "the upstream saw {max} calls at once");
    assert_eq!(max, 5, "the limit was used in full");
    let mut admitted = 0.0;
    for replica in &replicas {
        admitted += replica.metric(ADMITTED).await;
        replica.wait(LEASES, 0.0).await;
    }
    assert_eq!(admitted, 300.0);
    assert_eq!(redis.command(&["ZCARD", "{three}:leases"]), ":0");
}

/// kill -9 a replica holding every slot: a call queued on the other one is
/// admitted once the dead replica's leases expire (within the lease, plus a
/// sweep), and then the whole limit is available again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_replicas_slots_come_back_within_the_lease() {
    const LEASE: Duration = Duration::from_secs(1);
    let redis = RedisServer::start();
    let (upstream, upstream_url) = Recorder::start().await;
    let args = [
        "--max-concurrent",
        "5",
        "--queue-size",
        "10",
        "--queue-timeout",
        "30",
        "--lease",
        "1",
        "--shared-timeout",
        "0.25",
    ];
    let mut a = Replica::start(&redis.url(), "kill", &upstream_url, &args).await;
    let b = Replica::start(&redis.url(), "kill", &upstream_url, &args).await;
    let held: Vec<_> = (0..5)
        .map(|i| spawn_unanswered(&a.url, call(i, "hold", json!({"tag": format!("a{i}")}))))
        .collect();
    upstream.wait_started(5).await;
    a.wait(LEASES, 5.0).await;
    let waiting = spawn_post(&b.url, None, call(10, "echo", json!({"tag": "b"})));
    wait_queue(&redis, "kill", 1).await;

    a.kill().await;
    let killed = Instant::now();
    let (status, response) = tokio::time::timeout(PATIENCE, waiting)
        .await
        .expect("the waiter admitted in time")
        .unwrap();
    let recovered = killed.elapsed();
    eprintln!("slots back {recovered:?} after kill -9 (lease {LEASE:?}, sweep every lease/4)");
    assert_eq!(answer(10, status, &response), Answer::Done("b".into()));
    assert!(
        recovered <= LEASE + LEASE / 4 + Duration::from_millis(500),
        "the slot came back after {recovered:?}"
    );
    assert!(
        recovered >= LEASE / 2,
        "the slot came back after {recovered:?}, before the lease could expire"
    );
    for task in held {
        // The killed replica's clients lost their connection: no answer.
        let result = tokio::time::timeout(PATIENCE, task).await.expect("ended");
        assert!(result.unwrap().is_err());
    }
    // All 5 slots are free again: 5 calls on B run at once, a 6th waits.
    let again: Vec<_> = (20..26)
        .map(|i| {
            spawn_post(
                &b.url,
                None,
                call(i, "hold", json!({"tag": format!("b{i}")})),
            )
        })
        .collect();
    upstream.wait_started(11).await;
    b.wait(LEASES, 5.0).await;
    wait_queue(&redis, "kill", 1).await;
    upstream.release(20);
    for (i, task) in (20..).zip(again) {
        assert_eq!(joined(task).await["id"], i);
    }
    b.wait(LEASES, 0.0).await;
}

/// Redis is killed and started again (empty) on the same port while calls
/// flow through two replicas (fail open): every call is answered, the
/// replicas go into fallback and come back, and the upstream never sees
/// more than the limit once they are back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_keep_being_answered_across_a_redis_restart() {
    let mut redis = RedisServer::start();
    let (upstream, upstream_url) = Recorder::start().await;
    let args = [
        "--max-concurrent",
        "4",
        "--queue-size",
        "50",
        "--queue-timeout",
        "3",
        "--lease",
        "1",
        "--shared-timeout",
        "0.2",
        "--shared-fail",
        "open",
    ];
    let replicas = [
        Replica::start(&redis.url(), "restart", &upstream_url, &args).await,
        Replica::start(&redis.url(), "restart", &upstream_url, &args).await,
    ];
    let urls: Vec<String> = replicas.iter().map(|r| r.url.clone()).collect();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let answers = std::sync::Arc::new(tally::Answers::default());
    let mut workers = JoinSet::new();
    for worker in 0..8u64 {
        let (urls, stopped, answers) = (urls.clone(), stopped.clone(), answers.clone());
        workers.spawn(async move {
            let mut n = 0u64;
            while !*stopped.borrow() {
                let id = worker * 1_000_000 + n;
                let url = &urls[(worker + n) as usize % urls.len()];
                let (status, response) = post_as(url, None, sleep_call(id, "r", 10)).await;
                answers.push(answer(id, status, &response));
                n += 1;
            }
        });
    }
    let done = |answers: &tally::Answers| answers.done();
    let before = done(&answers);
    until("calls done before the restart", async || {
        done(&answers) >= before + 20
    })
    .await;

    redis.kill();
    for replica in &replicas {
        replica.wait(FALLBACK, 1.0).await;
    }
    let in_fallback = done(&answers);
    until("calls done in fallback", async || {
        done(&answers) >= in_fallback + 20
    })
    .await;

    let restarting = Instant::now();
    redis.restart();
    for replica in &replicas {
        replica.wait(FALLBACK, 0.0).await;
    }
    let back = restarting.elapsed();
    // Calls admitted in fallback may still run: count from the next ones.
    until("fallback calls drained", async || upstream.running() <= 4).await;
    upstream.reset_max_running();
    let recovered = done(&answers);
    until("calls done after the restart", async || {
        done(&answers) >= recovered + 40
    })
    .await;
    let max_after = upstream.max_running();

    stop.send_replace(true);
    while let Some(worker) = tokio::time::timeout(PATIENCE, workers.join_next())
        .await
        .expect("the workers stopped")
    {
        worker.unwrap();
    }
    let (total, done, overloaded) = answers.counts();
    let lost: f64 = {
        let mut sum = 0.0;
        for replica in &replicas {
            sum += replica.metric("mcp_backpressure_leases_lost_total").await;
        }
        sum
    };
    eprintln!(
        "Redis restart: {total} calls answered ({done} done, {overloaded:?} overloaded), \
         replicas out of fallback {back:?} after Redis started again, upstream max {max_after} \
         after recovery, leases lost and counted again {lost}"
    );
    assert_eq!(total, done + overloaded.len());
    // A waiter Redis lost asks again (see
    // `a_waiter_queued_when_redis_restarts_is_served`): nothing times out.
    assert!(overloaded.is_empty(), "{overloaded:?}");
    // Calls admitted in fallback are counted in Redis again (ADOPT) before
    // any process admits through Redis again.
    assert!(max_after <= 4, "the upstream saw {max_after} calls at once");
    for replica in &replicas {
        let log = replica.log.all();
        assert!(
            log.contains("admission falls back"),
            "the fallback is logged:\n{log}"
        );
        assert!(
            log.contains("admission is shared again"),
            "the recovery is logged:\n{log}"
        );
    }
}

/// A tiny thread-safe tally of answers.
mod tally {
    use std::sync::Mutex;

    use super::Answer;

    #[derive(Default)]
    pub struct Answers(Mutex<Vec<Answer>>);

    impl Answers {
        pub fn push(&self, answer: Answer) {
            self.0.lock().unwrap().push(answer);
        }

        pub fn done(&self) -> usize {
            let answers = self.0.lock().unwrap();
            answers
                .iter()
                .filter(|a| matches!(a, Answer::Done(_)))
                .count()
        }

        /// All, done, and the overload reasons.
        pub fn counts(&self) -> (usize, usize, Vec<String>) {
            let answers = self.0.lock().unwrap();
            let mut overloaded = Vec::new();
            let mut done = 0;
            for answer in answers.iter() {
                match answer {
                    Answer::Done(_) => done += 1,
                    Answer::Overloaded(reason) => overloaded.push(reason.clone()),
                }
            }
            (answers.len(), done, overloaded)
        }
    }
}

/// Redis unreachable from the start, `--shared-fail closed`: every call is
/// refused with reason `shared_unavailable` on the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_fail_closed_refuses_with_shared_unavailable() {
    let nowhere = format!("redis://127.0.0.1:{}/0", free_port());
    let (upstream, upstream_url) = Recorder::start().await;
    let replica = Replica::start(
        &nowhere,
        "closed",
        &upstream_url,
        &[
            "--max-concurrent",
            "4",
            "--shared-fail",
            "closed",
            "--shared-timeout",
            "0.2",
        ],
    )
    .await;
    for id in 1..=3 {
        let (status, response) =
            post_as(&replica.url, None, call(id, "echo", json!({"tag": "x"}))).await;
        assert_eq!(status, 200);
        let data = assert_overload(&response, id, -31429, "shared_unavailable");
        assert_eq!(data["scope"], "global", "{response}");
    }
    assert!(upstream.started().is_empty());
    assert_eq!(
        replica
            .metric("mcp_backpressure_rejected_total{reason=\"shared_unavailable\"}")
            .await,
        3.0
    );
    assert_eq!(replica.metric(FALLBACK).await, 1.0);
    assert!(replica.metric("mcp_backpressure_redis_errors_total").await >= 1.0);
}

/// Redis unreachable from the start, `--shared-fail open`: the replica
/// admits against its local share, max_concurrent / shared_replicas = 6 / 3
/// = 2, measured at the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_fail_open_admits_the_local_share() {
    let nowhere = format!("redis://127.0.0.1:{}/0", free_port());
    let (upstream, upstream_url) = Recorder::start().await;
    let replica = Replica::start(
        &nowhere,
        "open",
        &upstream_url,
        &[
            "--max-concurrent",
            "6",
            "--queue-size",
            "10",
            "--shared-fail",
            "open",
            "--shared-replicas",
            "3",
            "--shared-timeout",
            "0.2",
        ],
    )
    .await;
    let calls: Vec<_> = (0..6)
        .map(|i| {
            spawn_post(
                &replica.url,
                None,
                call(i, "hold", json!({"tag": format!("h{i}")})),
            )
        })
        .collect();
    upstream.wait_started(2).await;
    replica.wait(QUEUED, 4.0).await;
    assert_eq!(replica.metric(FALLBACK).await, 1.0);
    assert_eq!(replica.metric("mcp_backpressure_limit").await, 2.0);
    assert_eq!(upstream.max_running(), 2);
    upstream.release(6);
    for (i, task) in (0..).zip(calls) {
        let response = joined(task).await;
        assert_eq!(answer(i, 200, &response), Answer::Done(format!("h{i}")));
    }
    eprintln!(
        "fail open, Redis unreachable: upstream max {} (share 6 / 3)",
        upstream.max_running()
    );
    assert_eq!(upstream.max_running(), 2);
}

/// In the shared queue: a call times out (`queue_timeout`), another's client
/// goes away (its connection closed) and leaves the queue; the next waiter,
/// on the other replica, gets the freed slot, and the gone one never
/// reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_timeout_and_a_client_gone_free_their_place_in_the_shared_queue() {
    let redis = RedisServer::start();
    let (upstream, upstream_url) = Recorder::start().await;
    let args = [
        "--max-concurrent",
        "1",
        "--queue-size",
        "10",
        "--queue-timeout",
        "1.5",
    ];
    let a = Replica::start(&redis.url(), "cancel", &upstream_url, &args).await;
    let b = Replica::start(&redis.url(), "cancel", &upstream_url, &args).await;
    let held = spawn_post(&a.url, None, call(1, "hold", json!({"tag": "held"})));
    upstream.wait_started(1).await;

    let asked = Instant::now();
    let (status, response) = post_as(&b.url, None, call(2, "echo", json!({"tag": "late"}))).await;
    let waited = asked.elapsed();
    assert_eq!(
        answer(2, status, &response),
        Answer::Overloaded("queue_timeout".into())
    );
    eprintln!("queue_timeout 1.5 s in the shared queue: answered after {waited:?}");
    assert!(waited >= Duration::from_millis(1400), "{waited:?}");
    assert_eq!(
        b.metric("mcp_backpressure_rejected_total{reason=\"queue_timeout\"}")
            .await,
        1.0
    );
    b.wait(QUEUED, 0.0).await;

    let gone = spawn_post(&b.url, None, call(3, "echo", json!({"tag": "gone"})));
    wait_queue(&redis, "cancel", 1).await;
    b.wait(QUEUED, 1.0).await;
    gone.abort();
    let _ = gone.await;
    // Its place is freed in Redis, and counted as a cancel in the queue.
    wait_queue(&redis, "cancel", 0).await;
    b.wait("mcp_backpressure_cancelled_in_queue_total", 1.0)
        .await;
    b.wait(QUEUED, 0.0).await;

    let next = spawn_post(&a.url, None, call(4, "echo", json!({"tag": "next"})));
    // Only "next" is in the shared queue now.
    wait_queue(&redis, "cancel", 1).await;
    upstream.release(1);
    assert_eq!(text(&joined(held).await), "held");
    assert_eq!(text(&joined(next).await), "next");
    assert_eq!(upstream.started(), ["held", "next"]);
    assert_eq!(
        b.metric("mcp_backpressure_rejected_total{reason=\"queue_timeout\"}")
            .await,
        1.0
    );
    for replica in [&a, &b] {
        replica.wait(LEASES, 0.0).await;
        replica.wait(QUEUED, 0.0).await;
    }
    assert_eq!(a.metric(ADMITTED).await + b.metric(ADMITTED).await, 2.0);
}

/// Calls queued one after the other on three replicas (no client keys) are
/// admitted in that order: FIFO across replicas, as Redis received them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_queued_on_different_replicas_are_admitted_in_arrival_order() {
    let redis = RedisServer::start();
    let (upstream, upstream_url) = Recorder::start().await;
    let args = [
        "--max-concurrent",
        "1",
        "--queue-size",
        "20",
        "--queue-timeout",
        "30",
    ];
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Replica::start(&redis.url(), "order", &upstream_url, &args).await);
    }
    let held = spawn_post(
        &replicas[0].url,
        None,
        call(0, "hold", json!({"tag": "first"})),
    );
    upstream.wait_started(1).await;
    let mut queued = Vec::new();
    let mut expected = vec!["first".to_owned()];
    for i in 1..=12u64 {
        // B, C, A, B, C, A, ... with an uneven start so that no replica's
        // calls are contiguous.
        let replica = &replicas[[1, 2, 0, 2, 1, 0][i as usize % 6]];
        let tag = format!("q{i}");
        queued.push((
            i,
            spawn_post(&replica.url, None, call(i, "echo", json!({"tag": tag}))),
            tag.clone(),
        ));
        expected.push(tag);
        // In Redis's queue before the next one is sent.
        wait_queue(&redis, "order", i as usize).await;
    }
    upstream.release(1);
    assert_eq!(text(&joined(held).await), "first");
    for (i, task, tag) in queued {
        let response = joined(task).await;
        assert_eq!(answer(i, 200, &response), Answer::Done(tag));
    }
    assert_eq!(upstream.started(), expected);
    eprintln!("order across 3 replicas: {:?}", upstream.started());
}

/// A call waiting in the shared queue when Redis restarts (empty): once a
/// slot is free it should be served (queued again, or admitted by the
/// fallback), not left to its queue timeout.
///
/// Failed before the fix: the sweep's `POLL` answered -1 (unknown) for a
/// waiter Redis lost, and the waiter was left waiting for a wake-up that
/// never came, until `queue_timeout` (here 5 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiter_queued_when_redis_restarts_is_served() {
    let mut redis = RedisServer::start();
    let (upstream, upstream_url) = Recorder::start().await;
    let args = [
        "--max-concurrent",
        "1",
        "--queue-size",
        "10",
        "--queue-timeout",
        "5",
        "--lease",
        "1",
        "--shared-timeout",
        "0.2",
    ];
    let a = Replica::start(&redis.url(), "lost", &upstream_url, &args).await;
    let b = Replica::start(&redis.url(), "lost", &upstream_url, &args).await;
    let held = spawn_post(&a.url, None, call(1, "hold", json!({"tag": "held"})));
    upstream.wait_started(1).await;
    let waiting = spawn_post(&b.url, None, call(2, "echo", json!({"tag": "waiter"})));
    wait_queue(&redis, "lost", 1).await;
    redis.restart();
    b.wait(FALLBACK, 0.0).await;
    upstream.release(1);
    assert_eq!(text(&joined(held).await), "held");
    let asked = Instant::now();
    let response = joined(waiting).await;
    eprintln!(
        "the waiter Redis lost was answered {:?} after the slot was freed: {response}",
        asked.elapsed()
    );
    assert_eq!(answer(2, 200, &response), Answer::Done("waiter".into()));
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
}
