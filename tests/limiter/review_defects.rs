//! Defects found in review, each pinned by a test that failed before its fix.

use std::time::Duration;

use mcp_backpressure::config::ToolConfig;
use mcp_backpressure::{Limiter, LimiterConfig, OverloadReason, Request, Scope};
use tokio_test::{assert_pending, task};

/// Evicting the waiter the queue was stalled on (held back by the global
/// limit alone) leaves the limiter "stalled": newcomers that fit are queued,
/// and then refused with `queue_full`, beside idle slots, until some running
/// call ends.
#[tokio::test(start_paused = true)]
async fn evicting_the_stalled_waiter_leaves_idle_slots_unused() {
    let limiter = Limiter::new(
        LimiterConfig::new(4)
            .with_queue_size(2)
            .with_queue_timeout(Duration::from_secs(60))
            .with_tool("slow", ToolConfig::new().with_max_concurrent(1))
            .with_tool("big", ToolConfig::new().with_weight(4)),
    )
    .unwrap();
    // A runs one `slow` call: 1 of 4 slots in use.
    let _a = limiter
        .acquire_with(Request::new().tool("slow").client("a"))
        .await
        .unwrap();
    // B queues a `slow` call (held by the tool's cap) and a `big` one (held
    // by the global limit alone: the queue is now stalled on it).
    let mut b1 = task::spawn(limiter.acquire_with(Request::new().tool("slow").client("b")));
    assert_pending!(b1.poll());
    let mut b2 = task::spawn(limiter.acquire_with(Request::new().tool("big").client("b")));
    assert_pending!(b2.poll());
    // C arrives with a light call: the queue is full, so B's newest waiter
    // (the big call everyone was stalled on) is evicted for it.
    let mut c = task::spawn(limiter.acquire_with(Request::new().tool("fast").client("c")));
    let c_ready = c.poll();
    match b2.poll() {
        std::task::Poll::Ready(Err(o)) => {
            assert_eq!(
                (o.reason, o.scope),
                (OverloadReason::QueueFull, Scope::Client)
            )
        }
        other => panic!("b2 should have been evicted: {other:?}"),
    }
    let s = limiter.snapshot();
    // And D, a fresh client with a light call.
    let d = limiter
        .acquire_with(Request::new().tool("fast").client("d"))
        .await;
    // Nothing holds C or D back: 1 of 4 slots is in use and no waiter is
    // held by the global limit. Both should run at once.
    assert!(
        c_ready.is_ready() && d.is_ok(),
        "C admitted: {}, D: {:?}; active {} of {}, queued {}",
        c_ready.is_ready(),
        d.map(|_| ()).map_err(|o| (o.reason, o.scope)),
        s.active,
        s.max_concurrent,
        s.queued
    );
}

/// A reload that lowers `retry_after_max` bounds global and client
/// rejections, but a configured tool's rejections keep the bounds the tool
/// was first configured with.
#[tokio::test(start_paused = true)]
async fn reconfigured_retry_bounds_reach_configured_tools() {
    let config = |max: Duration| {
        LimiterConfig::new(8)
            .with_initial_service_time(Duration::from_secs(10))
            .with_retry_after_bounds(Duration::from_millis(10), max)
            .with_tool("report", ToolConfig::new().with_max_concurrent(1))
    };
    let limiter = Limiter::new(config(Duration::from_secs(60))).unwrap();
    let _running = limiter
        .acquire_with(Request::new().tool("report"))
        .await
        .unwrap();
    limiter.reconfigure(config(Duration::from_secs(2))).unwrap();
    // A second report is refused by the report tool's limit (no queue). Its
    // retry hint must respect the retry_after_max now in force, 2 s.
    let refused = limiter
        .acquire_with(Request::new().tool("report"))
        .await
        .unwrap_err();
    assert_eq!(refused.data().scope, "tool:report");
    assert!(
        refused.retry_after <= Duration::from_secs(2),
        "retry_after {:?} above the retry_after_max in force (2 s)",
        refused.retry_after,
    );
}

/// With `limit = aimd`, a call that *succeeds* after more than 5 s (AIMD's
/// built-in timeout, which no setting of `LimiterConfig` or the proxy
/// reaches) is taken as an overload: the limit backs off on every slow
/// success. MCP tools routinely take longer (the README's "30 s report"),
/// so the global limit walks down to `min_limit` on healthy traffic.
#[tokio::test(start_paused = true)]
async fn aimd_does_not_back_off_on_slow_successes() {
    use mcp_backpressure::Outcome;
    use mcp_backpressure::limit::LimitAlgorithm;
    let limiter =
        Limiter::new(LimiterConfig::new(10).with_limit(LimitAlgorithm::Aimd, 1, None)).unwrap();
    for _ in 0..20 {
        // Ten 6-second calls at once, every one a success.
        let mut permits = Vec::new();
        while let Ok(p) = limiter.acquire().await {
            permits.push(p);
        }
        tokio::time::sleep(Duration::from_secs(6)).await;
        for mut p in permits {
            p.set_outcome(Outcome::Success);
        }
    }
    assert_eq!(
        limiter.snapshot().max_concurrent,
        10,
        "successful calls lowered the limit"
    );
}

/// Adaptive limits count slots, but the samples they get count calls
/// (`inflight` is the number of calls running, and "busy" timing compares
/// calls with slots): when the traffic is weighted, a limit that backed off
/// reads every later sample as "app-limited" and never recovers, although
/// at least half the slots are in use and every call succeeds.
#[tokio::test(start_paused = true)]
async fn an_adaptive_limit_recovers_under_weighted_traffic() {
    use mcp_backpressure::Outcome;
    use mcp_backpressure::limit::LimitAlgorithm;
    let limiter = Limiter::new(
        LimiterConfig::new(8)
            .with_limit(LimitAlgorithm::Aimd, 1, None)
            .with_tool("report", ToolConfig::new().with_weight(4)),
    )
    .unwrap();
    let report = Request::new().tool("report");
    // Phase 1: the upstream struggles; reports fail with an overload.
    let mut rounds = 0;
    while limiter.snapshot().max_concurrent == 8 && rounds < 1000 {
        let mut permits = Vec::new();
        while let Ok(p) = limiter.acquire_with(report).await {
            permits.push(p);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        for mut p in permits {
            p.set_outcome(Outcome::Dropped);
        }
        rounds += 1;
    }
    let backed_off = limiter.snapshot().max_concurrent;
    assert!(backed_off < 8);
    // Phase 2: healthy again; as many reports as fit run (at least half the
    // slots in use), and every one succeeds.
    for _ in 0..2000 {
        let mut permits = Vec::new();
        while let Ok(p) = limiter.acquire_with(report).await {
            permits.push(p);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        for mut p in permits {
            p.set_outcome(Outcome::Success);
        }
    }
    assert_eq!(
        limiter.snapshot().max_concurrent,
        8,
        "backed off to {backed_off}, never recovered under successful load"
    );
}

/// A tool's adaptive limit is fed samples whose `inflight` is the number of
/// calls running *globally*: while other tools keep the server busy, a tool
/// that never runs more than one call at once reads as "fully used" and its
/// limit creeps up to its `max_limit` without ever having been tested.
#[tokio::test(start_paused = true)]
async fn a_tool_limit_does_not_grow_while_the_tool_is_idle() {
    use mcp_backpressure::Outcome;
    use mcp_backpressure::limit::LimitAlgorithm;
    let limiter = Limiter::new(
        LimiterConfig::new(20).with_tool(
            "x",
            ToolConfig::new()
                .with_max_concurrent(2)
                .with_limit(LimitAlgorithm::Aimd, 1, Some(16)),
        ),
    )
    .unwrap();
    // Other tools keep 15 calls running.
    let mut others = Vec::new();
    for _ in 0..15 {
        others.push(
            limiter
                .acquire_with(Request::new().tool("other"))
                .await
                .unwrap(),
        );
    }
    // `x` runs one call at a time, each a success.
    for _ in 0..100 {
        let mut p = limiter
            .acquire_with(Request::new().tool("x"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        p.set_outcome(Outcome::Success);
    }
    let x = limiter
        .tool_snapshots()
        .into_iter()
        .find(|t| t.tool == "x")
        .unwrap();
    // AIMD grows a limit that is at least half used (1 of 2 is, as in
    // Netflix's AIMD): to 3, and no further — never towards its maximum of
    // 16, as it did when fed the global in-flight count.
    assert_eq!(
        x.limit,
        Some(3),
        "x never ran 2 calls at once, yet its limit grew past half use"
    );
}

/// `Outcome::Dropped` is documented to back an adaptive limit off ("a
/// sample marked dropped, so an adaptive limit backs off"), and the README's
/// AIMD example shows it. But only timed permits give samples, and below
/// half the limit only one admission in 32 is timed: the README example
/// passes only because it runs on a fresh limiter. One earlier call, and the
/// same drop teaches nothing.
#[tokio::test(start_paused = true)]
async fn a_dropped_outcome_backs_off_whatever_came_before() {
    use mcp_backpressure::Outcome;
    use mcp_backpressure::limit::LimitAlgorithm;
    let limiter =
        Limiter::new(LimiterConfig::new(10).with_limit(LimitAlgorithm::Aimd, 2, Some(50))).unwrap();
    drop(limiter.acquire().await.unwrap()); // one earlier call
    let mut permit = limiter.acquire().await.unwrap();
    permit.set_outcome(Outcome::Dropped); // the upstream timed out
    drop(permit);
    assert_eq!(limiter.snapshot().max_concurrent, 9, "the drop was ignored");
}

/// Within a lane, the next waiter is the oldest whose *tool* has room; if
/// that one does not fit its *client's* cap (a heavy call), the whole lane
/// is skipped — although a lighter call of the same client behind it fits.
/// That call then waits beside room it could use, and a newer call of the
/// same client and tool is admitted at once, ahead of it ("within a lane a
/// tool's calls are served in arrival order; nobody overtakes a waiter that
/// could run").
#[tokio::test(start_paused = true)]
async fn a_heavy_call_over_the_client_cap_does_not_block_its_lane() {
    let limiter = Limiter::new(
        LimiterConfig::new(100)
            .with_queue_size(10)
            .with_client_limit(4)
            .with_tool("heavy", ToolConfig::new().with_weight(4)),
    )
    .unwrap();
    let light = Request::new().tool("light").client("a");
    let mut running = Vec::new();
    for _ in 0..4 {
        running.push(limiter.acquire_with(light).await.unwrap());
    }
    // The client is at its cap: a heavy call, then a light one, queue.
    let mut heavy = task::spawn(limiter.acquire_with(Request::new().tool("heavy").client("a")));
    assert_pending!(heavy.poll());
    let mut first_light = task::spawn(limiter.acquire_with(light));
    assert_pending!(first_light.poll());
    // One light call ends: 3 of 4 client slots used; the queued light call fits.
    drop(running.pop());
    let first_ready = first_light.poll().is_ready();
    // A newer light call of the same client and tool.
    let mut second_light = task::spawn(limiter.acquire_with(light));
    let second_ready = second_light.poll().is_ready();
    assert!(
        first_ready || !second_ready,
        "the queued light call still waits (ready: {first_ready}) while a newer one ran at once \
         (ready: {second_ready})"
    );
    assert!(
        first_ready,
        "the queued light call waits beside room it fits in"
    );
}

/// After `queue_size` is lowered below the queue's length, "a lower queue
/// bound only stops new admissions until the figures are back under it" —
/// but a newcomer from a client with fewer places still enters, by evicting
/// a waiter of the longest lane: the queue stays above its bound, one in,
/// one out, for as long as such newcomers arrive.
#[tokio::test(start_paused = true)]
async fn a_lowered_queue_bound_admits_nobody_new_to_the_queue() {
    let config = |queue_size| {
        LimiterConfig::new(1)
            .with_queue_size(queue_size)
            .with_queue_timeout(Duration::from_secs(60))
    };
    let limiter = Limiter::new(config(10)).unwrap();
    let _running = limiter.acquire().await.unwrap();
    let greedy = Request::new().client("greedy");
    let mut waiting: Vec<_> = (0..10)
        .map(|_| task::spawn(limiter.acquire_with(greedy)))
        .collect();
    for w in &mut waiting {
        assert_pending!(w.poll());
    }
    limiter.reconfigure(config(2)).unwrap();
    let mut newcomer = task::spawn(limiter.acquire_with(Request::new().client("other")));
    let newcomer_ready = newcomer.poll().is_ready();
    let s = limiter.snapshot();
    assert!(
        newcomer_ready,
        "the newcomer joined a queue of {} over its bound of {} (by evicting a waiter)",
        s.queued, s.queue_size
    );
}

/// Counters exported as Prometheus counters must never go down. Two ways
/// they do: a tool that gets a configuration while a call of it runs takes
/// its `admitted` out of the `*` row; and a slot handed to a waiter whose
/// caller then leaves is taken back with `admitted -= 1` (a scrape between
/// the two sees the higher value).
#[tokio::test(start_paused = true)]
async fn admitted_counters_never_go_down() {
    let star = |l: &Limiter| {
        l.tool_snapshots()
            .into_iter()
            .find(|t| t.tool == "*")
            .unwrap()
            .admitted
    };
    // The `*` row.
    let limiter = Limiter::new(LimiterConfig::new(4).with_default_tool_limit(2)).unwrap();
    let _report = limiter
        .acquire_with(Request::new().tool("report"))
        .await
        .unwrap();
    let before = star(&limiter);
    limiter
        .reconfigure(
            LimiterConfig::new(4)
                .with_default_tool_limit(2)
                .with_tool("report", ToolConfig::new().with_max_concurrent(1)),
        )
        .unwrap();
    let star_after = star(&limiter);
    // The global counter.
    let limiter = Limiter::new(LimiterConfig::new(1).with_queue_size(1)).unwrap();
    let held = limiter.acquire().await.unwrap();
    let mut waiter = task::spawn(limiter.acquire());
    assert_pending!(waiter.poll());
    drop(held); // the slot is handed to the waiter
    let scraped = limiter.snapshot().admitted;
    drop(waiter); // its caller leaves before claiming it
    let global_after = limiter.snapshot().admitted;
    assert!(
        star_after >= before && global_after >= scraped,
        "tool_admitted_total{{tool=\"*\"}} {before} -> {star_after}; \
         admitted_total {scraped} -> {global_after}"
    );
}

/// `default_tool_limit` is "the limit of each tool not in `tools`" in the
/// library's table, but the proxy's README says `--default-tool-limit 3`
/// "gives every tool without a limit of its own a limit of 3". A tool
/// configured with only a weight (`--tool-weight report=4`) has no limit of
/// its own, yet gets no limit at all: it escapes the default that every
/// unnamed tool is held to.
#[tokio::test(start_paused = true)]
async fn a_weighted_tool_without_its_own_limit_gets_the_default_limit() {
    let limiter = Limiter::new(
        LimiterConfig::new(100)
            .with_default_tool_limit(3)
            .with_tool("report", ToolConfig::new().with_weight(4)),
    )
    .unwrap();
    let report = Request::new().tool("report");
    let mut running = Vec::new();
    while let Ok(p) = limiter.acquire_with(report).await {
        running.push(p);
    }
    assert_eq!(
        running.len(),
        3,
        "report, with no limit of its own, ran {} at once under --default-tool-limit 3",
        running.len()
    );
}
