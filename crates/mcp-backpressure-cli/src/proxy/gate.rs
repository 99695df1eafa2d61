//! Admission control shared by every session of one proxy: the limiter, the
//! validated settings, the overload dialect in force and the proxy's own
//! metrics.

use mcp_backpressure::Limiter;

use super::limits::Settings;
use super::metrics::ProxyMetrics;
use super::refusal::LiveDialect;
use super::tasks::Tasks;

/// Admission control shared by every session of one proxy.
#[derive(Debug)]
pub struct Gate {
    /// The limiter every guarded request goes through.
    pub limiter: Limiter,
    /// The validated settings, as loaded at startup (the limiter's config
    /// and the dialect in force may have been reloaded since).
    pub settings: Settings,
    /// How refusals are answered now (reloaded on SIGHUP).
    pub dialect: LiveDialect,
    /// The proxy's own metrics (queue waits, service times, the table).
    pub metrics: ProxyMetrics,
    /// The slots held by background tasks.
    pub tasks: Tasks,
}

impl Gate {
    /// Admission control through `limiter` with `settings`.
    pub fn new(limiter: Limiter, settings: Settings) -> Self {
        let tasks = Tasks::new(settings.max_task_holds);
        Self {
            limiter,
            dialect: LiveDialect::new(settings.dialect()),
            settings,
            metrics: ProxyMetrics::default(),
            tasks,
        }
    }
}
