//! Closed loop: a fixed number of callers, each sending its next call as soon
//! as its last one is answered. The offered load follows the server's speed:
//! this measures throughput, not behaviour under a load the server does not
//! control (see the open loop for that).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rmcp::RoleClient;
use rmcp::service::Peer;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::args::{Plan, Stream};
use super::call::call;
use super::open_loop::Sent;
use super::report::{Record, Sink};

/// `peers`: one session per target URL, called in turn.
pub async fn drive(
    peers: &[Peer<RoleClient>],
    plan: &Plan,
    stream: &Stream,
    concurrency: usize,
    started: Instant,
    records: Sink,
) -> Sent {
    let end = started + plan.duration;
    let tool: Arc<str> = stream.tool.as_str().into();
    let arguments = Arc::new(stream.arguments.clone());
    let sent = Arc::new(AtomicU64::new(0));
    let mut callers = JoinSet::new();
    for caller in 0..concurrency {
        let (peers, tool, arguments, records, sent) = (
            peers.to_vec(),
            tool.clone(),
            arguments.clone(),
            records.clone(),
            sent.clone(),
        );
        let (count, timeout) = (stream.count, plan.call_timeout);
        callers.spawn(async move {
            let mut next = caller;
            while Instant::now() < end {
                let peer = &peers[next % peers.len()];
                next += 1;
                let ticket = sent.fetch_add(1, Ordering::Relaxed);
                if count.is_some_and(|count| ticket >= count) {
                    sent.fetch_sub(1, Ordering::Relaxed);
                    break;
                }
                let sent_at = Instant::now();
                let outcome = call(peer, &tool, &arguments, timeout).await;
                let latency = sent_at.elapsed();
                if !records.send(Record {
                    outcome,
                    sent_at,
                    lag: Default::default(),
                    latency,
                }) {
                    break;
                }
            }
        });
    }
    // The window closes at the deadline, or earlier when --count ran out and
    // every caller stopped.
    let window_end = tokio::select! {
        () = tokio::time::sleep_until(end) => end,
        () = async { while callers.join_next().await.is_some() {} } => Instant::now(),
    };
    Sent {
        sent: sent.load(Ordering::Relaxed),
        window_end,
        in_flight: callers,
    }
}
