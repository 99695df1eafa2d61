//! Queue disciplines: FIFO, CoDel shedding, adaptive LIFO — each with exact
//! deadlines on tokio's clock.

use std::time::Duration;

use mcp_backpressure::{Limiter, LimiterConfig, OverloadReason, QueueDiscipline};
use tokio::sync::mpsc;

use crate::support::{assert_consistent, settle};

/// `n` calls arriving 1 ms apart behind one running call; each holds its slot
/// for `hold`. Returns the arrival numbers in the order they were served and
/// the rejections by arrival number.
async fn run(
    discipline: QueueDiscipline,
    n: usize,
    hold: Duration,
    timeout: Duration,
) -> (Vec<usize>, Vec<(usize, OverloadReason, Duration)>) {
    let limiter = Limiter::new(
        LimiterConfig::new(1)
            .with_queue_size(n)
            .with_queue_timeout(timeout)
            .with_discipline(discipline),
    )
    .unwrap();
    let first = limiter.acquire().await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    for i in 0..n {
        let (limiter, tx) = (limiter.clone(), tx.clone());
        tokio::spawn(async move {
            let arrived = tokio::time::Instant::now();
            let result = limiter.acquire().await;
            let _ = tx.send((
                i,
                result.as_ref().err().map(|o| o.reason),
                arrived.elapsed(),
            ));
            if let Ok(permit) = result {
                tokio::time::sleep(hold).await;
                drop(permit);
            }
        });
        settle().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    drop(tx);
    drop(first);
    let (mut served, mut rejected) = (Vec::new(), Vec::new());
    while let Some((i, reason, waited)) = rx.recv().await {
        match reason {
            None => served.push(i),
            Some(reason) => rejected.push((i, reason, waited)),
        }
    }
    assert_consistent(&limiter);
    (served, rejected)
}

#[tokio::test(start_paused = true)]
async fn fifo_serves_in_arrival_order() {
    let (served, rejected) = run(
        QueueDiscipline::Fifo,
        10,
        Duration::from_millis(10),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(served, (0..10).collect::<Vec<_>>());
    assert!(rejected.is_empty());
}

/// Once the queue has stood for the interval, the newest is served first.
#[tokio::test(start_paused = true)]
async fn adaptive_lifo_serves_newest_first_once_the_queue_stands() {
    let (served, rejected) = run(
        QueueDiscipline::AdaptiveLifo {
            interval: Duration::from_millis(5),
        },
        10,
        Duration::from_millis(10),
        Duration::from_secs(60),
    )
    .await;
    assert!(rejected.is_empty());
    // The queue has been non-empty for ~10 ms when the first slot frees.
    assert_eq!(served[0], 9, "{served:?}");
    assert_eq!(served.len(), 10);
}

/// Deadlines stay exact whatever the order: under adaptive LIFO the oldest
/// waiters time out, each after exactly `queue_timeout`.
#[tokio::test(start_paused = true)]
async fn adaptive_lifo_keeps_exact_deadlines() {
    let timeout = Duration::from_millis(50);
    let (served, rejected) = run(
        QueueDiscipline::AdaptiveLifo {
            interval: Duration::from_millis(5),
        },
        20,
        Duration::from_millis(20),
        timeout,
    )
    .await;
    assert!(!rejected.is_empty());
    for (i, reason, waited) in &rejected {
        assert_eq!(*reason, OverloadReason::QueueTimeout, "#{i}");
        assert_eq!(*waited, timeout, "#{i}");
    }
    // The oldest are the ones left to time out.
    let oldest_served = served.iter().min().unwrap();
    assert!(
        rejected.iter().any(|(i, ..)| i < oldest_served),
        "{served:?} {rejected:?}"
    );
}

/// CoDel sheds once served calls have waited above target for an interval,
/// long before their queue timeout; FIFO with the same load sheds none.
#[tokio::test(start_paused = true)]
async fn codel_sheds_a_standing_queue_before_the_timeout() {
    let codel = QueueDiscipline::CoDel {
        target: Duration::from_millis(20),
        interval: Duration::from_millis(100),
    };
    let (served, rejected) = run(
        codel,
        60,
        Duration::from_millis(10),
        Duration::from_secs(60),
    )
    .await;
    assert!(!rejected.is_empty(), "nothing shed");
    for (i, reason, waited) in &rejected {
        assert_eq!(*reason, OverloadReason::QueueShed, "#{i}");
        assert!(*waited < Duration::from_secs(60));
    }
    assert_eq!(served.len() + rejected.len(), 60);
    let (_, fifo_rejected) = run(
        QueueDiscipline::Fifo,
        60,
        Duration::from_millis(10),
        Duration::from_secs(60),
    )
    .await;
    assert!(fifo_rejected.is_empty());
}

/// CoDel never sheds a queue that drains fast enough.
#[tokio::test(start_paused = true)]
async fn codel_leaves_a_short_queue_alone() {
    let codel = QueueDiscipline::CoDel {
        target: Duration::from_millis(50),
        interval: Duration::from_millis(100),
    };
    let (served, rejected) = run(codel, 4, Duration::from_millis(2), Duration::from_secs(60)).await;
    assert!(rejected.is_empty(), "{rejected:?}");
    assert_eq!(served.len(), 4);
}
