//! `--metrics ADDR`: Prometheus text at `/metrics`.
//!
//! The gauges and counters are read from the limiter's snapshot at scrape time
//! (consistent with each other: `admitted == completed + active`); the two
//! histograms are observed by the proxy around each guarded request: the time
//! it waited for a slot and the time it held one.
//!
//! | metric | type |
//! |---|---|
//! | `mcp_backpressure_active`, `mcp_backpressure_queued`, `mcp_backpressure_limit` | gauge |
//! | `mcp_backpressure_admitted_total`, `mcp_backpressure_completed_total`, `mcp_backpressure_cancelled_in_queue_total` | counter |
//! | `mcp_backpressure_rejected_total{reason}` | counter |
//! | `mcp_backpressure_queue_wait_seconds`, `mcp_backpressure_service_time_seconds` | histogram |
//! | `mcp_backpressure_in_flight` (requests forwarded, not yet answered), `mcp_backpressure_held_after_cancel` (cancelled or abandoned calls still holding their slot while the upstream finishes) | gauge |
//! | `mcp_backpressure_cancel_grace_expired_total` (slots freed because the cancel grace passed) | counter |

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::http::header;
use axum::response::IntoResponse;
use mcp_backpressure::metrics::names;
use mcp_backpressure::{Limiter, OverloadReason};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

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

    /// A request held its slot for `d` and completed (cancelled ones are not counted).
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

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.snapshot();
        let gauge = |value: usize| ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
        for (name, help, value) in [
            (names::ACTIVE, "Guarded requests holding a slot", s.active),
            (
                names::QUEUED,
                "Guarded requests waiting for a slot",
                s.queued,
            ),
            (
                names::LIMIT,
                "The concurrency limit in force",
                s.max_concurrent,
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
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for reason in OverloadReason::ALL {
            let labels = [(names::REASON_LABEL, reason.as_str())];
            ConstCounter::new(s.rejected(reason)).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The registry served at `/metrics`.
pub fn registry(limiter: &Limiter, metrics: &ProxyMetrics) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector(limiter.clone())));
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
) -> anyhow::Result<(
    SocketAddr,
    impl Future<Output = std::io::Result<()>> + use<>,
)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind the metrics address {addr}"))?;
    let bound = listener.local_addr()?;
    let registry = Arc::new(registry(limiter, metrics));
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
    use mcp_backpressure::LimiterConfig;

    use super::*;

    #[tokio::test]
    async fn the_text_has_every_metric() {
        let limiter = Limiter::new(LimiterConfig::new(1)).unwrap();
        let _permit = limiter.acquire().await.unwrap();
        let _ = limiter.acquire().await.unwrap_err();
        let metrics = ProxyMetrics::default();
        metrics.observe_queue_wait(Duration::from_millis(3));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry(&limiter, &metrics))
            .unwrap();
        for line in [
            "mcp_backpressure_active 1",
            "mcp_backpressure_queued 0",
            "mcp_backpressure_limit 1",
            "mcp_backpressure_admitted_total 1",
            "mcp_backpressure_completed_total 0",
            "mcp_backpressure_rejected_total{reason=\"concurrency_limit\"} 1",
            "mcp_backpressure_rejected_total{reason=\"queue_full\"} 0",
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
    }
}
