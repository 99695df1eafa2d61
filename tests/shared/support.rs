use std::time::{Duration, Instant};

use mcp_backpressure::shared::{SharedLimit, SharedSnapshot};
use mcp_backpressure::{Limiter, LimiterConfig};

use crate::redis::RedisServer;

/// A replica joined to `key` with a lease of `lease`.
pub fn replica_with(
    server: &RedisServer,
    key: &str,
    config: LimiterConfig,
    lease: Duration,
) -> Limiter {
    Limiter::builder(config)
        .shared(
            SharedLimit::new(server.url(), key)
                .with_lease(lease)
                .with_timeout((lease / 4).min(Duration::from_secs(1))),
        )
        .build()
        .unwrap()
}

/// A replica with a long lease (no sweep runs during a test but the first).
pub fn replica(server: &RedisServer, key: &str, config: LimiterConfig) -> Limiter {
    replica_with(server, key, config, Duration::from_secs(60))
}

pub fn shared(limiter: &Limiter) -> SharedSnapshot {
    limiter.shared_snapshot().unwrap()
}

/// Waits (at most `within`) until `condition` holds; panics naming `what`.
pub async fn eventually(what: &str, within: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
