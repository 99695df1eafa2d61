//! The shared limit's series (`--shared-limit` only), read from
//! [`Limiter::shared_snapshot`] at scrape time:
//!
//! | metric | type |
//! |---|---|
//! | `mcp_backpressure_redis_latency_seconds` (Redis command latency) | histogram |
//! | `mcp_backpressure_redis_commands_total`, `mcp_backpressure_redis_errors_total` (failed: connection, timeout, script), `mcp_backpressure_lease_renewals_total` (renewal rounds that reached Redis), `mcp_backpressure_leases_lost_total` (found lost at a renewal, counted again) | counter |
//! | `mcp_backpressure_shared_fallback` (1 while Redis is unreachable: the fail mode decides), `mcp_backpressure_shared_leases` (slots this process holds in Redis), `mcp_backpressure_shared_waiting` (this process's calls in the shared queue), `mcp_backpressure_shared_in_use`, `mcp_backpressure_shared_queued` (across all replicas, at the last command), `mcp_backpressure_shared_replicas` (replicas joined to the key, at the last renewal) | gauge |
//!
//! Calls refused because Redis is unreachable under `shared_fail = "closed"`
//! are `mcp_backpressure_rejected_total{reason="shared_unavailable"}`.

use std::collections::HashMap;

use mcp_backpressure::Limiter;
use mcp_backpressure::shared::{LATENCY_BUCKETS_MS, SharedSnapshot};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::exemplar::Exemplar;

use super::{counter_name, gauge};

/// The histogram of Redis command latencies.
pub const REDIS_LATENCY: &str = "mcp_backpressure_redis_latency_seconds";
/// The counter of Redis commands sent.
pub const REDIS_COMMANDS: &str = "mcp_backpressure_redis_commands_total";
/// The counter of Redis commands that failed.
pub const REDIS_ERRORS: &str = "mcp_backpressure_redis_errors_total";
/// The counter of lease renewal rounds.
pub const LEASE_RENEWALS: &str = "mcp_backpressure_lease_renewals_total";
/// The counter of leases found lost.
pub const LEASES_LOST: &str = "mcp_backpressure_leases_lost_total";
/// The gauge: 1 while in fallback.
pub const FALLBACK: &str = "mcp_backpressure_shared_fallback";
/// The gauge of leases held by this process.
pub const LEASES: &str = "mcp_backpressure_shared_leases";
/// The gauge of this process's calls in the shared queue.
pub const WAITING: &str = "mcp_backpressure_shared_waiting";
/// The gauge of slots in use across all replicas.
pub const IN_USE: &str = "mcp_backpressure_shared_in_use";
/// The gauge of calls queued across all replicas.
pub const QUEUED: &str = "mcp_backpressure_shared_queued";
/// The gauge of replicas joined to the key.
pub const REPLICAS: &str = "mcp_backpressure_shared_replicas";

/// The shared limit's figures as series, read at scrape time.
#[derive(Debug)]
pub(super) struct SharedCollector(pub(super) Limiter);

impl Collector for SharedCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(s) = self.0.shared_snapshot() else {
            return Ok(());
        };
        encode(&s, &mut encoder)
    }
}

fn encode(s: &SharedSnapshot, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    for (name, help, value) in [
        (
            FALLBACK,
            "1 while Redis is unreachable (admission follows shared_fail), else 0",
            usize::from(s.fallback),
        ),
        (LEASES, "Slots this process holds in Redis", s.leases),
        (
            WAITING,
            "Calls of this process waiting in the shared queue",
            s.waiting,
        ),
        (
            IN_USE,
            "Slots in use across all replicas, at this process's last Redis command",
            s.global_in_use,
        ),
        (
            QUEUED,
            "Calls queued across all replicas, at this process's last Redis command",
            s.global_queued,
        ),
        (
            REPLICAS,
            "Replicas joined to the shared key, at the last renewal",
            s.replicas,
        ),
    ] {
        let metric = gauge(value);
        metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
    }
    for (name, help, value) in [
        (REDIS_COMMANDS, "Redis commands sent", s.commands),
        (
            REDIS_ERRORS,
            "Redis commands that failed (connection errors, timeouts, script errors)",
            s.errors,
        ),
        (
            LEASE_RENEWALS,
            "Lease renewal rounds that reached Redis",
            s.renewals,
        ),
        (
            LEASES_LOST,
            "Leases found lost at a renewal (and counted again)",
            s.leases_lost,
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
    let buckets = latency_buckets(&s.latency_buckets);
    let count = buckets.iter().map(|(_, n)| n).sum();
    #[allow(clippy::cast_precision_loss)] // microseconds: exact far beyond any uptime
    let sum = s.latency_sum_us as f64 / 1e6;
    encoder
        .encode_descriptor(
            REDIS_LATENCY,
            "Redis command latency, in seconds",
            None,
            MetricType::Histogram,
        )?
        .encode_histogram::<NoLabelSet>(
            sum,
            count,
            &buckets,
            None::<&HashMap<usize, Exemplar<NoLabelSet, f64>>>,
        )
}

/// The snapshot's per-bucket counts (bounds [`LATENCY_BUCKETS_MS`], then the
/// slower ones) as `(upper bound in seconds, count)`, the last `+Inf`.
fn latency_buckets(counts: &[u64]) -> Vec<(f64, u64)> {
    LATENCY_BUCKETS_MS
        .iter()
        .map(|ms| ms / 1000.0)
        .chain(std::iter::once(f64::INFINITY))
        .enumerate()
        .map(|(i, bound)| (bound, counts.get(i).copied().unwrap_or(0)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latency_buckets_are_in_seconds_and_end_at_infinity() {
        let mut counts = vec![0; LATENCY_BUCKETS_MS.len() + 1];
        counts[0] = 2;
        counts[2] = 1;
        counts[LATENCY_BUCKETS_MS.len()] = 4;
        let buckets = latency_buckets(&counts);
        assert_eq!(buckets.len(), LATENCY_BUCKETS_MS.len() + 1);
        assert_eq!(buckets[0], (0.00025, 2));
        assert_eq!(buckets[2], (0.001, 1));
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 4)));
    }

    #[test]
    fn the_text_has_every_shared_series() {
        let mut snapshot = SharedSnapshot::default();
        snapshot.fallback = true;
        snapshot.leases = 2;
        snapshot.commands = 10;
        snapshot.errors = 1;
        snapshot.latency_buckets = vec![0; LATENCY_BUCKETS_MS.len() + 1];
        snapshot.latency_buckets[1] = 3;
        snapshot.latency_sum_us = 1200;
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(Fixed(snapshot)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "mcp_backpressure_shared_fallback 1",
            "mcp_backpressure_shared_leases 2",
            "mcp_backpressure_shared_waiting 0",
            "mcp_backpressure_shared_replicas 0",
            "mcp_backpressure_redis_commands_total 10",
            "mcp_backpressure_redis_errors_total 1",
            "mcp_backpressure_lease_renewals_total 0",
            "mcp_backpressure_leases_lost_total 0",
            "mcp_backpressure_redis_latency_seconds_count 3",
            "mcp_backpressure_redis_latency_seconds_sum 0.0012",
            "mcp_backpressure_redis_latency_seconds_bucket{le=\"0.00025\"} 0",
            "mcp_backpressure_redis_latency_seconds_bucket{le=\"0.0005\"} 3",
            "mcp_backpressure_redis_latency_seconds_bucket{le=\"+Inf\"} 3",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[derive(Debug)]
    struct Fixed(SharedSnapshot);

    impl Collector for Fixed {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            encode(&self.0, &mut encoder)
        }
    }
}
