//! Open loop: calls start on a fixed schedule, `1/rate` apart, whatever the
//! server answers and however long it takes. A slow server cannot slow the
//! load down and so hide its own latency (no coordinated omission): calls
//! pile up instead, as they would with real independent clients.
//!
//! A timer that fires late (tokio's timer has millisecond granularity) sends
//! every call that is due at once, so the offered rate holds over the run;
//! how late each call left is recorded as its schedule lag.

use std::sync::Arc;
use std::time::Duration;

use rmcp::RoleClient;
use rmcp::service::Peer;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::args::{Plan, Stream};
use super::call::call;
use super::report::{Record, Sink};

/// What a driver leaves behind: the calls sent, when the sending window
/// closed, and the calls still in flight.
pub struct Sent {
    pub sent: u64,
    pub window_end: Instant,
    pub in_flight: JoinSet<()>,
}

/// `peers`: one session per target URL, called in turn.
pub async fn drive(
    peers: &[Peer<RoleClient>],
    plan: &Plan,
    stream: &Stream,
    rate: f64,
    started: Instant,
    records: Sink,
) -> Sent {
    let end = started + plan.duration;
    let tool: Arc<str> = stream.tool.as_str().into();
    let arguments = Arc::new(stream.arguments.clone());
    let mut in_flight = JoinSet::new();
    let mut sent: u64 = 0;
    let due_at = |i: u64| started + Duration::from_secs_f64(i as f64 / rate);
    loop {
        if stream.count.is_some_and(|count| sent >= count) {
            break;
        }
        let due = due_at(sent);
        if due >= end {
            break;
        }
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        let (peer, tool, arguments, records) = (
            peers[(sent % peers.len() as u64) as usize].clone(),
            tool.clone(),
            arguments.clone(),
            records.clone(),
        );
        let timeout = plan.call_timeout;
        in_flight.spawn(async move {
            let sent_at = Instant::now();
            let outcome = call(&peer, &tool, &arguments, timeout).await;
            let _ = records.send(Record {
                outcome,
                sent_at,
                lag: sent_at.saturating_duration_since(due),
                latency: sent_at.elapsed(),
            });
        });
        sent += 1;
        while in_flight.try_join_next().is_some() {}
    }
    Sent {
        sent,
        window_end: due_at(sent).min(end),
        in_flight,
    }
}
