//! `--metrics ADDR`: Prometheus text at `/metrics`.
//!
//! The gauges and counters are read from the limiter's snapshots at scrape
//! time (consistent with each other: `admitted == completed + running`); the
//! two histograms are observed by the proxy around each guarded request: the
//! time it waited for a slot and the time it held one (answered calls only).
//!
//! | metric | type |
//! |---|---|
//! | `mcp_backpressure_active` (slots in use: weights summed), `mcp_backpressure_running` (calls holding slots), `mcp_backpressure_queued`, `mcp_backpressure_limit` (the global limit in force: an adaptive limit's current value) | gauge |
//! | `mcp_backpressure_admitted_total`, `mcp_backpressure_completed_total`, `mcp_backpressure_cancelled_in_queue_total` | counter |
//! | `mcp_backpressure_rejected_total{reason}` (`concurrency_limit`, `queue_full`, `queue_timeout`, `queue_shed`, `shared_unavailable`) | counter |
//! | `mcp_backpressure_tracked_keys` (client keys and names of tools without a limit of their own, tracked now) | gauge |
//! | `mcp_backpressure_tool_running{tool}`, `mcp_backpressure_tool_queued{tool}`, `mcp_backpressure_tool_limit{tool}` (tools with a limit only) | gauge |
//! | `mcp_backpressure_tool_admitted_total{tool}`, `mcp_backpressure_tool_rejected_total{tool}` | counter |
//! | `mcp_backpressure_queue_wait_seconds`, `mcp_backpressure_service_time_seconds` | histogram |
//! | `mcp_backpressure_in_flight` (requests forwarded, not yet answered), `mcp_backpressure_held_after_cancel` (cancelled or abandoned calls still holding their slot while the upstream finishes) | gauge |
//! | `mcp_backpressure_cancel_grace_expired_total` (slots freed because the cancel grace passed) | counter |
//! | `mcp_backpressure_task_holds` (background tasks whose calls keep their slots), `mcp_backpressure_task_hold_slots` (the slots they hold) | gauge |
//! | `mcp_backpressure_continuations_waiting` (multi-round-trip retries waiting at the head of the queue) | gauge |
//! | `mcp_backpressure_continuations_ahead_total` (multi-round-trip retries admitted ahead of the queue) | counter |
//! | `mcp_backpressure_task_holds_ended_total{cause}` (`terminal`, `cancel`, `ttl`, `own_poll`, `unknown_task`, `cap`, `closed`) | counter |
//!
//! The `tool` label is bounded whatever names clients send: one series per
//! configured tool, and `*` for every other tool together.
//!
//! With `--shared-limit`, the shared limit's series are added (see
//! [`shared`]: Redis latency, commands, errors, renewals, fallback), and the
//! gauges above are this process's view: `queued` counts its calls in the
//! shared queue too, `limit` is the shared limit (the local share while in
//! fail-open fallback).

mod shared;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::http::header;
use axum::response::IntoResponse;
use mcp_backpressure::metrics::names;
use mcp_backpressure::task_holds::HoldEnd;
use mcp_backpressure::{Limiter, OverloadReason, ToolSnapshot};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use super::tasks::Tasks;

/// The histogram of queue waits.
pub const QUEUE_WAIT: &str = "mcp_backpressure_queue_wait_seconds";
/// The histogram of service times.
pub const SERVICE_TIME: &str = "mcp_backpressure_service_time_seconds";

/// The gauge of requests in the table.
pub const IN_FLIGHT: &str = "mcp_backpressure_in_flight";
/// The gauge of calls cancelled (or abandoned) but still holding a slot.
pub const HELD_AFTER_CANCEL: &str = "mcp_backpressure_held_after_cancel";
/// The counter of slots freed by the end of the cancel grace.
pub const CANCEL_GRACE_EXPIRED: &str = "mcp_backpressure_cancel_grace_expired";

/// The gauge of calls holding slots (whatever their weight).
pub const RUNNING: &str = "mcp_backpressure_running";
/// The gauge of client keys and tool names tracked.
pub const TRACKED_KEYS: &str = "mcp_backpressure_tracked_keys";
/// Per tool: calls holding a slot.
pub const TOOL_RUNNING: &str = "mcp_backpressure_tool_running";
/// Per tool: calls waiting.
pub const TOOL_QUEUED: &str = "mcp_backpressure_tool_queued";
/// Per tool: the tool's limit in force.
pub const TOOL_LIMIT: &str = "mcp_backpressure_tool_limit";
/// Per tool: calls given a slot.
pub const TOOL_ADMITTED: &str = "mcp_backpressure_tool_admitted_total";
/// Per tool: calls turned away.
pub const TOOL_REJECTED: &str = "mcp_backpressure_tool_rejected_total";
/// The label of the per-tool series.
pub const TOOL_LABEL: &str = "tool";

/// What the proxy observes itself. Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct ProxyMetrics {
    queue_wait: Histogram,
    service_time: Histogram,
    /// Requests forwarded (or waiting for a slot) and not yet answered.
    pub in_flight: Gauge,
    /// Calls cancelled or abandoned by their client that still hold their
    /// slot while the upstream may be working on them.
    pub held_after_cancel: Gauge,
    /// Slots freed because the cancel grace passed before the upstream was done.
    pub cancel_grace_expired: Counter,
}

fn buckets() -> impl Iterator<Item = f64> {
    [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        120.0,
    ]
    .into_iter()
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self {
            queue_wait: Histogram::new(buckets()),
            service_time: Histogram::new(buckets()),
            in_flight: Gauge::default(),
            held_after_cancel: Gauge::default(),
            cancel_grace_expired: Counter::default(),
        }
    }
}

impl ProxyMetrics {
    /// An admitted request waited `d` for its slot (zero when admitted at once).
    pub fn observe_queue_wait(&self, d: Duration) {
        self.queue_wait.observe(d.as_secs_f64());
    }

    /// A request held its slot for `d` and was answered by the upstream
    /// (cancelled ones, and ones whose stream ended without an answer, are
    /// not counted).
    pub fn observe_service_time(&self, d: Duration) {
        self.service_time.observe(d.as_secs_f64());
    }
}

/// The limiter's snapshot as gauges and counters, read at scrape time.
#[derive(Debug)]
struct SnapshotCollector(Limiter);

/// prometheus-client appends `_total` to counters itself.
fn counter_name(name: &str) -> &str {
    name.strip_suffix("_total").unwrap_or(name)
}

fn gauge(value: usize) -> ConstGauge {
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.snapshot();
        for (name, help, value) in [
            (
                names::ACTIVE,
                "Slots in use by guarded requests (a call of weight w holds w)",
                s.active,
            ),
            (RUNNING, "Guarded requests holding slots", s.running),
            (
                names::QUEUED,
                "Guarded requests waiting for a slot",
                s.queued,
            ),
            (
                names::LIMIT,
                "The concurrency limit in force (an adaptive limit's current value)",
                s.max_concurrent,
            ),
            (
                TRACKED_KEYS,
                "Client keys and names of tools without a limit of their own, tracked now",
                s.tracked_keys,
            ),
            (
                names::CONTINUATIONS_WAITING,
                "Continuations of multi-round-trip calls waiting at the head of the queue",
                s.continuations_waiting,
            ),
        ] {
            let metric = gauge(value);
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
        }
        for (name, help, value) in [
            (names::ADMITTED, "Guarded requests given a slot", s.admitted),
            (names::COMPLETED, "Slots given back", s.completed),
            (
                names::CANCELLED_IN_QUEUE,
                "Guarded requests cancelled while waiting for a slot",
                s.cancelled_in_queue,
            ),
            (
                names::CONTINUATIONS_AHEAD,
                "Continuations of multi-round-trip calls admitted ahead of the queue",
                s.continuations_ahead,
            ),
        ] {
            let metric = ConstCounter::new(value);
            metric.encode(encoder.encode_descriptor(
                counter_name(name),
                help,
                None,
                metric.metric_type(),
            )?)?;
        }
        let mut family = encoder.encode_descriptor(
            counter_name(names::REJECTED),
            "Guarded requests turned away, by reason",
            None,
            MetricType::Counter,
        )?;
        for reason in OverloadReason::ALL {
            let labels = [(names::REASON_LABEL, reason.as_str())];
            ConstCounter::new(s.rejected(reason)).encode(family.encode_family(&labels)?)?;
        }
        encode_tools(&self.0.tool_snapshots(), &mut encoder)
    }
}

/// The per-tool series, labelled `tool`: configured tools by name, `*` for
/// the rest.
fn encode_tools(
    tools: &[ToolSnapshot],
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    type Read = fn(&ToolSnapshot) -> Option<usize>;
    let gauges: [(&str, &str, Read); 3] = [
        (TOOL_RUNNING, "Calls of the tool holding a slot", |t| {
            Some(t.running)
        }),
        (TOOL_QUEUED, "Calls of the tool waiting for a slot", |t| {
            Some(t.queued)
        }),
        (
            TOOL_LIMIT,
            "The tool's limit in force (an adaptive limit's current value)",
            |t| t.limit,
        ),
    ];
    for (name, help, read) in gauges {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for tool in tools {
            if let Some(value) = read(tool) {
                let labels = [(TOOL_LABEL, tool.tool.as_str())];
                gauge(value).encode(family.encode_family(&labels)?)?;
            }
        }
    }
    type Count = fn(&ToolSnapshot) -> u64;
    let counters: [(&str, &str, Count); 2] = [
        (TOOL_ADMITTED, "Calls of the tool given a slot", |t| {
            t.admitted
        }),
        (
            TOOL_REJECTED,
            "Calls of the tool turned away, for any reason and by any limit",
            |t| t.rejected,
        ),
    ];
    for (name, help, read) in counters {
        let mut family =
            encoder.encode_descriptor(counter_name(name), help, None, MetricType::Counter)?;
        for tool in tools {
            let labels = [(TOOL_LABEL, tool.tool.as_str())];
            ConstCounter::new(read(tool)).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// The task holds' snapshot as gauges and counters, read at scrape time.
#[derive(Debug)]
struct TasksCollector(Tasks);

impl Collector for TasksCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.snapshot();
        for (name, help, value) in [
            (
                names::TASK_HOLDS,
                "Background tasks whose calls keep their slots until the task ends",
                s.held,
            ),
            (
                names::TASK_HOLD_SLOTS,
                "Slots of the global limit held by background tasks",
                s.slots,
            ),
        ] {
            let metric = gauge(value);
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
        }
        let mut family = encoder.encode_descriptor(
            counter_name(names::TASK_HOLDS_ENDED),
            "Task holds ended, by cause",
            None,
            MetricType::Counter,
        )?;
        for cause in HoldEnd::ALL {
            let labels = [(names::CAUSE_LABEL, cause.as_str())];
            ConstCounter::new(s.ended.get(cause)).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The registry served at `/metrics`.
pub fn registry(limiter: &Limiter, metrics: &ProxyMetrics, tasks: &Tasks) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector(limiter.clone())));
    registry.register_collector(Box::new(TasksCollector(tasks.clone())));
    registry.register_collector(Box::new(shared::SharedCollector(limiter.clone())));
    registry.register(
        QUEUE_WAIT,
        "Time admitted guarded requests waited for a slot, in seconds",
        metrics.queue_wait.clone(),
    );
    registry.register(
        SERVICE_TIME,
        "Time completed guarded requests held their slot, in seconds",
        metrics.service_time.clone(),
    );
    registry.register(
        IN_FLIGHT,
        "Requests forwarded (or waiting for a slot) and not yet answered",
        metrics.in_flight.clone(),
    );
    registry.register(
        HELD_AFTER_CANCEL,
        "Calls cancelled or abandoned by their client that still hold their slot while the upstream may be working on them",
        metrics.held_after_cancel.clone(),
    );
    registry.register(
        CANCEL_GRACE_EXPIRED,
        "Slots freed because the cancel grace passed before the upstream was done",
        metrics.cancel_grace_expired.clone(),
    );
    registry
}

/// Binds `addr` for the metrics endpoint. Returns the bound address and the
/// server future.
///
/// # Cancel safety
///
/// The returned future serves until dropped; dropping it closes the listener.
pub async fn bind(
    addr: SocketAddr,
    limiter: &Limiter,
    metrics: &ProxyMetrics,
    tasks: &Tasks,
) -> anyhow::Result<(
    SocketAddr,
    impl Future<Output = std::io::Result<()>> + use<>,
)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind the metrics address {addr}"))?;
    let bound = listener.local_addr()?;
    let registry = Arc::new(registry(limiter, metrics, tasks));
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move {
                let mut text = String::new();
                match prometheus_client::encoding::text::encode(&mut text, &registry) {
                    Ok(()) => (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                        .into_response(),
                    Err(_) => (
                        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                        "cannot encode the metrics".to_owned(),
                    )
                        .into_response(),
                }
            }
        }),
    );
    Ok((bound, async move { axum::serve(listener, app).await }))
}

#[cfg(test)]
mod tests {
    use mcp_backpressure::{LimiterConfig, Request, ToolConfig};

    use super::*;

    #[tokio::test]
    async fn the_text_has_every_metric() {
        let limiter = Limiter::new(LimiterConfig::new(1)).unwrap();
        let _permit = limiter.acquire().await.unwrap();
        let _ = limiter.acquire().await.unwrap_err();
        let metrics = ProxyMetrics::default();
        metrics.observe_queue_wait(Duration::from_millis(3));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(
            &mut text,
            &registry(&limiter, &metrics, &Tasks::new(1)),
        )
        .unwrap();
        for line in [
            "mcp_backpressure_active 1",
            "mcp_backpressure_queued 0",
            "mcp_backpressure_limit 1",
            "mcp_backpressure_admitted_total 1",
            "mcp_backpressure_completed_total 0",
            "mcp_backpressure_rejected_total{reason=\"concurrency_limit\"} 1",
            "mcp_backpressure_rejected_total{reason=\"queue_full\"} 0",
            "mcp_backpressure_rejected_total{reason=\"queue_shed\"} 0",
            "mcp_backpressure_running 1",
            "mcp_backpressure_tracked_keys 0",
            "mcp_backpressure_tool_running{tool=\"*\"} 1",
            "mcp_backpressure_tool_queued{tool=\"*\"} 0",
            "mcp_backpressure_tool_admitted_total{tool=\"*\"} 1",
            "mcp_backpressure_tool_rejected_total{tool=\"*\"} 1",
            "mcp_backpressure_queue_wait_seconds_count 1",
            "mcp_backpressure_service_time_seconds_count 0",
            "mcp_backpressure_in_flight 0",
            "mcp_backpressure_held_after_cancel 0",
            "mcp_backpressure_cancel_grace_expired_total 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // No tool has a limit: no tool_limit sample.
        assert!(!text.contains("mcp_backpressure_tool_limit{"), "{text}");
    }

    #[tokio::test]
    async fn each_configured_tool_has_its_series_and_the_rest_share_one() {
        let limiter = Limiter::new(
            LimiterConfig::new(8)
                .with_tool(
                    "report",
                    ToolConfig::new().with_max_concurrent(1).with_weight(3),
                )
                .with_tool("say \"hi\"", ToolConfig::new().with_weight(2))
                .with_default_tool_limit(2),
        )
        .unwrap();
        let _report = limiter
            .acquire_with(Request::new().tool("report").client("alice"))
            .await
            .unwrap();
        let refused = limiter.acquire_with(Request::new().tool("report")).await;
        assert!(refused.is_err());
        let mut others = Vec::new();
        for name in ["a", "b", "c"] {
            others.push(
                limiter
                    .acquire_with(Request::new().tool(name).client(name))
                    .await
                    .unwrap(),
            );
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(
            &mut text,
            &registry(&limiter, &ProxyMetrics::default(), &Tasks::new(1)),
        )
        .unwrap();
        for line in [
            "mcp_backpressure_active 6",
            "mcp_backpressure_running 4",
            "mcp_backpressure_limit 8",
            // alice, a, b, c as clients; a, b, c as tools.
            "mcp_backpressure_tracked_keys 7",
            "mcp_backpressure_tool_running{tool=\"report\"} 1",
            "mcp_backpressure_tool_limit{tool=\"report\"} 1",
            "mcp_backpressure_tool_admitted_total{tool=\"report\"} 1",
            "mcp_backpressure_tool_rejected_total{tool=\"report\"} 1",
            "mcp_backpressure_tool_running{tool=\"say \\\"hi\\\"\"} 0",
            // A tool with a weight but no limit of its own has the default.
            "mcp_backpressure_tool_limit{tool=\"say \\\"hi\\\"\"} 2",
            "mcp_backpressure_tool_running{tool=\"*\"} 3",
            "mcp_backpressure_tool_limit{tool=\"*\"} 2",
            "mcp_backpressure_tool_admitted_total{tool=\"*\"} 3",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        drop(others);
    }
}
