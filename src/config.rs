//! Validated limiter configuration.
//!
//! [`LimiterConfig`] is plain data: build it with [`LimiterConfig::new`] and the
//! `with_*` methods, then hand it to [`Limiter::new`](crate::Limiter::new) or
//! [`Limiter::builder`](crate::Limiter::builder), which validate it. Every
//! invalid value is a [`ConfigError`] that names the setting; nothing panics.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::limit::LimitAlgorithm;

/// Configuration of a [`Limiter`](crate::Limiter).
///
/// | setting | meaning | default |
/// |---|---|---|
/// | `max_concurrent` | slots: requests allowed to run at once (a call of weight `w` takes `w`), `>= 1`; the initial limit of an adaptive algorithm | required |
/// | `queue_size` | requests allowed to wait for a slot, `0` = reject at once | `0` |
/// | `queue_timeout` | longest wait in the queue, `> 0` | 30 s |
/// | `retry_after_min` / `retry_after_max` | bounds of the advertised `retry_after_ms` | 10 ms / 60 s |
/// | `initial_service_time` | service time assumed before the first request completes | 1 s |
/// | `limit` | the global limit's algorithm: fixed, AIMD, Gradient2, Vegas | fixed |
/// | `min_limit` / `max_limit` | bounds of an adaptive global limit | 1 / `max_concurrent` |
/// | `tools` | per-tool limits and weights, by tool name | none |
/// | `default_tool_limit` | the limit of every tool not in `tools` (each tool on its own) | none |
/// | `client_limit` | slots one client key may hold at once; queued calls are served round-robin across client keys | none |
/// | `max_tracked_keys` | client keys (and unconfigured tool names) tracked at once; more share one entry | 10 000 |
/// | `discipline` | the order the queue is served in: FIFO, CoDel, adaptive LIFO | FIFO |
/// | `max_continuations` | continuations of multi-round-trip calls waiting at once ahead of the queue, beyond `queue_size`; `0` = no priority | 64 |
///
/// Unless `max_limit` is set, an adaptive limit never goes above
/// `max_concurrent`: the configured number stays a hard ceiling, and the
/// algorithm only finds a lower one when the upstream is struggling.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimiterConfig {
    /// Slots: requests allowed to run at once (a call of weight `w` takes `w`
    /// of them). Must be at least 1. With an adaptive `limit`, its starting point.
    pub max_concurrent: usize,
    /// Requests allowed to wait for a slot; `0` rejects at once when every slot is busy.
    pub queue_size: usize,
    /// Longest time a request may wait in the queue before it is rejected with
    /// `queue_timeout`. Must be greater than zero.
    pub queue_timeout: Duration,
    /// Lower bound of the advertised retry delay.
    pub retry_after_min: Duration,
    /// Upper bound of the advertised retry delay. Must be `>= retry_after_min`.
    pub retry_after_max: Duration,
    /// Service time assumed by the retry estimate until the first request completes.
    /// Must be greater than zero.
    pub initial_service_time: Duration,
    /// The algorithm of the global limit.
    pub limit: LimitAlgorithm,
    /// Lower bound of an adaptive global limit, `>= 1`.
    pub min_limit: usize,
    /// Upper bound of an adaptive global limit; `None` = `max_concurrent`.
    pub max_limit: Option<usize>,
    /// Per-tool limits and weights, by tool name.
    pub tools: BTreeMap<String, ToolConfig>,
    /// The limit of each tool not named in `tools`, each on its own; `None` =
    /// such tools are bounded by the global limit only.
    pub default_tool_limit: Option<usize>,
    /// Slots one client key may hold at once; `None` = no per-client cap.
    /// Queued calls are served round-robin across client keys whether or not
    /// this is set.
    pub client_limit: Option<usize>,
    /// Client keys (and unconfigured tool names) tracked at once, `>= 1`. A key
    /// is tracked while it has a call running or queued; keys beyond this many
    /// share one overflow entry (and so one per-client cap and one turn).
    /// Keys are told apart by their first [`MAX_KEY_BYTES`] bytes.
    pub max_tracked_keys: usize,
    /// The order in which the queue is served.
    pub discipline: QueueDiscipline,
    /// Continuations of multi-round-trip calls ([`Request::continuation`](crate::Request::continuation))
    /// allowed to wait at the head of the queue at once, beyond `queue_size`;
    /// past it, a continuation queues like any other call. `0` gives
    /// continuations no priority.
    pub max_continuations: usize,
}

/// Limits and weight of one tool (see [`LimiterConfig::tools`]).
///
/// ```
/// use mcp_backpressure::LimiterConfig;
/// use mcp_backpressure::config::ToolConfig;
///
/// // 8 slots; the report tool takes 4 of them per call and runs 2 at most.
/// let config = LimiterConfig::new(8)
///     .with_queue_size(20)
///     .with_tool("report", ToolConfig::new().with_max_concurrent(2).with_weight(4));
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ToolConfig {
    /// Calls of this tool allowed to run at once; `None` = the global limit
    /// only. With an adaptive `limit`, its starting point.
    pub max_concurrent: Option<usize>,
    /// Slots of the global limit (and of the caller's `client_limit`) one
    /// call of this tool takes, `>= 1`. A weight above the limit in force
    /// takes the whole limit.
    pub weight: usize,
    /// The algorithm of this tool's limit (needs `max_concurrent`).
    pub limit: LimitAlgorithm,
    /// Lower bound of an adaptive tool limit, `>= 1`.
    pub min_limit: usize,
    /// Upper bound of an adaptive tool limit; `None` = `max_concurrent`.
    pub max_limit: Option<usize>,
}

impl Default for ToolConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl ToolConfig {
    /// No limit of its own, weight 1.
    pub fn new() -> Self {
        Self {
            max_concurrent: None,
            weight: 1,
            limit: LimitAlgorithm::Fixed,
            min_limit: 1,
            max_limit: None,
        }
    }

    /// Sets how many calls of this tool may run at once.
    pub fn with_max_concurrent(mut self, max_concurrent: usize) -> Self {
        self.max_concurrent = Some(max_concurrent);
        self
    }

    /// Sets how many slots one call takes.
    pub fn with_weight(mut self, weight: usize) -> Self {
        self.weight = weight;
        self
    }

    /// Makes this tool's limit adaptive, between `min_limit` and `max_limit`.
    pub fn with_limit(
        mut self,
        limit: LimitAlgorithm,
        min_limit: usize,
        max_limit: Option<usize>,
    ) -> Self {
        self.limit = limit;
        self.min_limit = min_limit;
        self.max_limit = max_limit;
        self
    }
}

/// The order in which waiting requests are served (within one client key;
/// across client keys the queue is always round-robin).
///
/// Deadlines are unaffected: whatever the discipline, a request leaves the
/// queue with `queue_timeout` exactly `queue_timeout` after it arrived (on
/// tokio's clock).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueDiscipline {
    /// First in, first out.
    #[default]
    Fifo,
    /// FIFO, shedding waiters while the queue stands (CoDel, Nichols and
    /// Jacobson, "Controlling Queue Delay", ACM Queue 2012): when the time the
    /// served requests waited has stayed above `target` for a whole
    /// `interval`, the request about to be served is rejected with
    /// `queue_shed` instead, and again after `interval / sqrt(n)` for the
    /// `n`-th shed in a row, until a request is served that waited less than
    /// `target`.
    CoDel {
        /// Acceptable standing queue delay.
        target: Duration,
        /// How long the delay must stay above `target` before shedding starts.
        interval: Duration,
    },
    /// FIFO while the queue drains; newest first once it has been non-empty
    /// for `interval` (adaptive LIFO, Maurer, "Fail at Scale", ACM Queue
    /// 2015): under a standing queue the newest requests, whose callers are
    /// most likely still waiting, are served first, and the oldest time out.
    AdaptiveLifo {
        /// How long the queue must stay non-empty before it is served LIFO.
        interval: Duration,
    },
}

impl QueueDiscipline {
    /// CoDel with target 100 ms and interval 1 s: tool calls last from
    /// milliseconds to seconds, so the network defaults (5 ms / 100 ms) would
    /// shed calls that only waited for one ordinary call to finish.
    pub const CODEL: QueueDiscipline = QueueDiscipline::CoDel {
        target: Duration::from_millis(100),
        interval: Duration::from_secs(1),
    };

    /// Adaptive LIFO with interval 100 ms (the figure "Fail at Scale" gives).
    pub const ADAPTIVE_LIFO: QueueDiscipline = QueueDiscipline::AdaptiveLifo {
        interval: Duration::from_millis(100),
    };

    /// Its name in flags and config files: `fifo`, `codel`, `adaptive-lifo`.
    pub const fn as_str(self) -> &'static str {
        match self {
            QueueDiscipline::Fifo => "fifo",
            QueueDiscipline::CoDel { .. } => "codel",
            QueueDiscipline::AdaptiveLifo { .. } => "adaptive-lifo",
        }
    }
}

impl std::str::FromStr for QueueDiscipline {
    type Err = String;

    /// `fifo`, `codel` or `adaptive-lifo`, with their default parameters.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fifo" => Ok(QueueDiscipline::Fifo),
            "codel" => Ok(QueueDiscipline::CODEL),
            "adaptive-lifo" | "adaptive_lifo" => Ok(QueueDiscipline::ADAPTIVE_LIFO),
            other => Err(format!(
                "unknown queue discipline {other:?}: expected fifo, codel or adaptive-lifo"
            )),
        }
    }
}

/// The default queue timeout, as in the Python package: 30 seconds.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

/// Client keys and tool names are told apart by their first this many bytes
/// (longer ones are cut on a character boundary), so a caller cannot make one
/// tracked entry cost more than that; configured tool names may not be longer.
pub const MAX_KEY_BYTES: usize = 256;

/// The largest number of slots (`max_concurrent`, `max_limit`) and the
/// largest weight: 2^32 − 1, far above any real limit, low enough that no
/// count of slots can overflow.
pub const MAX_SLOTS: usize = u32::MAX as usize;

/// The default of [`LimiterConfig::max_continuations`].
pub const DEFAULT_MAX_CONTINUATIONS: usize = 64;

/// The default of [`LimiterConfig::max_tracked_keys`].
pub const DEFAULT_MAX_TRACKED_KEYS: usize = 10_000;

impl LimiterConfig {
    /// A configuration allowing `max_concurrent` requests at once, with no queue.
    pub fn new(max_concurrent: usize) -> Self {
        Self {
            max_concurrent,
            queue_size: 0,
            queue_timeout: DEFAULT_QUEUE_TIMEOUT,
            retry_after_min: Duration::from_millis(10),
            retry_after_max: Duration::from_secs(60),
            initial_service_time: Duration::from_secs(1),
            limit: LimitAlgorithm::Fixed,
            min_limit: 1,
            max_limit: None,
            tools: BTreeMap::new(),
            default_tool_limit: None,
            client_limit: None,
            max_tracked_keys: DEFAULT_MAX_TRACKED_KEYS,
            discipline: QueueDiscipline::Fifo,
            max_continuations: DEFAULT_MAX_CONTINUATIONS,
        }
    }

    /// Sets how many continuations of multi-round-trip calls may wait at the
    /// head of the queue at once (`0` = no priority for them).
    pub fn with_max_continuations(mut self, max: usize) -> Self {
        self.max_continuations = max;
        self
    }

    /// Sets how many requests may wait for a slot (`0` = none).
    pub fn with_queue_size(mut self, queue_size: usize) -> Self {
        self.queue_size = queue_size;
        self
    }

    /// Sets the longest wait in the queue.
    pub fn with_queue_timeout(mut self, queue_timeout: Duration) -> Self {
        self.queue_timeout = queue_timeout;
        self
    }

    /// Sets the bounds of the advertised retry delay.
    pub fn with_retry_after_bounds(mut self, min: Duration, max: Duration) -> Self {
        self.retry_after_min = min;
        self.retry_after_max = max;
        self
    }

    /// Sets the service time assumed before the first request completes.
    pub fn with_initial_service_time(mut self, service_time: Duration) -> Self {
        self.initial_service_time = service_time;
        self
    }

    /// Makes the global limit adaptive: it starts at `max_concurrent` and
    /// stays within `min_limit..=max_limit` (`None` = `max_concurrent`).
    pub fn with_limit(
        mut self,
        limit: LimitAlgorithm,
        min_limit: usize,
        max_limit: Option<usize>,
    ) -> Self {
        self.limit = limit;
        self.min_limit = min_limit;
        self.max_limit = max_limit;
        self
    }

    /// Sets the limits and weight of one tool.
    pub fn with_tool(mut self, name: impl Into<String>, tool: ToolConfig) -> Self {
        self.tools.insert(name.into(), tool);
        self
    }

    /// Sets the limit of every tool not configured with [`with_tool`](Self::with_tool).
    pub fn with_default_tool_limit(mut self, limit: usize) -> Self {
        self.default_tool_limit = Some(limit);
        self
    }

    /// Caps the slots one client key may hold at once.
    pub fn with_client_limit(mut self, limit: usize) -> Self {
        self.client_limit = Some(limit);
        self
    }

    /// Sets how many client keys (and unconfigured tool names) are tracked at once.
    pub fn with_max_tracked_keys(mut self, keys: usize) -> Self {
        self.max_tracked_keys = keys;
        self
    }

    /// Sets the queue discipline.
    pub fn with_discipline(mut self, discipline: QueueDiscipline) -> Self {
        self.discipline = discipline;
        self
    }

    /// The upper bound of the global limit: `max_limit`, or `max_concurrent`.
    pub fn effective_max_limit(&self) -> usize {
        self.max_limit.unwrap_or(self.max_concurrent)
    }

    /// Checks every setting; the error names the first one that is invalid.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_concurrent == 0 {
            return Err(ConfigError::MaxConcurrent {
                value: self.max_concurrent,
            });
        }
        if self.queue_timeout.is_zero() {
            return Err(ConfigError::Duration {
                setting: "queue_timeout",
                reason: "must be greater than zero".into(),
            });
        }
        if self.initial_service_time.is_zero() {
            return Err(ConfigError::Duration {
                setting: "initial_service_time",
                reason: "must be greater than zero".into(),
            });
        }
        if self.retry_after_max < self.retry_after_min {
            return Err(ConfigError::Duration {
                setting: "retry_after_max",
                reason: format!(
                    "must not be below retry_after_min ({:?} < {:?})",
                    self.retry_after_max, self.retry_after_min
                ),
            });
        }
        check_bounds("", self.max_concurrent, self.min_limit, self.max_limit)?;
        if self.queue_size > MAX_SLOTS {
            return Err(ConfigError::Invalid {
                setting: "queue_size".into(),
                reason: format!("must be at most {MAX_SLOTS}, got {}", self.queue_size),
            });
        }
        if self.max_tracked_keys == 0 {
            return Err(ConfigError::invalid(
                "max_tracked_keys",
                "must be at least 1",
            ));
        }
        if self.default_tool_limit == Some(0) {
            return Err(ConfigError::invalid(
                "default_tool_limit",
                "must be at least 1",
            ));
        }
        if self.client_limit == Some(0) {
            return Err(ConfigError::invalid("client_limit", "must be at least 1"));
        }
        match self.discipline {
            QueueDiscipline::Fifo => {}
            QueueDiscipline::CoDel { target, interval } => {
                if target.is_zero() {
                    return Err(ConfigError::invalid(
                        "codel_target",
                        "must be greater than zero",
                    ));
                }
                if interval.is_zero() {
                    return Err(ConfigError::invalid(
                        "codel_interval",
                        "must be greater than zero",
                    ));
                }
            }
            QueueDiscipline::AdaptiveLifo { interval } => {
                if interval.is_zero() {
                    return Err(ConfigError::invalid(
                        "lifo_interval",
                        "must be greater than zero",
                    ));
                }
            }
        }
        for (name, tool) in &self.tools {
            if name.len() > MAX_KEY_BYTES {
                return Err(ConfigError::Invalid {
                    setting: "tools".into(),
                    reason: format!(
                        "a tool name is {} bytes long, more than {MAX_KEY_BYTES}",
                        name.len()
                    ),
                });
            }
            let prefix = format!("tools.{name:?}.");
            if tool.weight == 0 || tool.weight > MAX_SLOTS {
                return Err(ConfigError::Invalid {
                    setting: format!("{prefix}weight"),
                    reason: format!("must be between 1 and {MAX_SLOTS}, got {}", tool.weight),
                });
            }
            match tool.max_concurrent {
                Some(max) => check_bounds(&prefix, max, tool.min_limit, tool.max_limit)?,
                None if tool.limit != LimitAlgorithm::Fixed => {
                    return Err(ConfigError::Invalid {
                        setting: format!("{prefix}max_concurrent"),
                        reason: format!(
                            "an adaptive limit ({}) needs a starting max_concurrent",
                            tool.limit
                        ),
                    });
                }
                None => {}
            }
        }
        Ok(())
    }
}

/// `1 <= min_limit <= max_concurrent <= max_limit`, named with `prefix`.
fn check_bounds(
    prefix: &str,
    max_concurrent: usize,
    min_limit: usize,
    max_limit: Option<usize>,
) -> Result<(), ConfigError> {
    let invalid = |setting: &str, reason: String| ConfigError::Invalid {
        setting: format!("{prefix}{setting}"),
        reason,
    };
    if max_concurrent == 0 {
        return Err(invalid("max_concurrent", "must be at least 1".into()));
    }
    if max_concurrent > MAX_SLOTS || max_limit.is_some_and(|max| max > MAX_SLOTS) {
        let setting = if max_concurrent > MAX_SLOTS {
            "max_concurrent"
        } else {
            "max_limit"
        };
        return Err(invalid(setting, format!("must be at most {MAX_SLOTS}")));
    }
    if min_limit == 0 {
        return Err(invalid("min_limit", "must be at least 1".into()));
    }
    if min_limit > max_concurrent {
        return Err(invalid(
            "min_limit",
            format!("must not be above max_concurrent ({min_limit} > {max_concurrent})"),
        ));
    }
    if let Some(max_limit) = max_limit
        && max_limit < max_concurrent
    {
        return Err(invalid(
            "max_limit",
            format!("must not be below max_concurrent ({max_limit} < {max_concurrent})"),
        ));
    }
    Ok(())
}

/// Converts a number of seconds (fractions allowed) into a [`Duration`],
/// rejecting negative, NaN, infinite and too large values with an error that
/// names `setting`.
///
/// Zero is accepted here; whether zero is valid is decided by
/// [`LimiterConfig::validate`].
///
/// ```
/// use mcp_backpressure::config::seconds;
/// assert_eq!(seconds("queue_timeout", 0.25).unwrap().as_millis(), 250);
/// assert!(seconds("queue_timeout", f64::NAN).unwrap_err().to_string().contains("queue_timeout"));
/// ```
pub fn seconds(setting: &'static str, value: f64) -> Result<Duration, ConfigError> {
    Duration::try_from_secs_f64(value).map_err(|_| ConfigError::Duration {
        setting,
        reason: format!("must be a finite, non-negative number of seconds, got {value}"),
    })
}

/// An invalid configuration value. The message names the setting.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `max_concurrent` was 0.
    #[error("invalid max_concurrent: must be at least 1, got {value}")]
    MaxConcurrent {
        /// The rejected value.
        value: usize,
    },
    /// Another setting was out of range.
    #[error("invalid {setting}: {reason}")]
    Invalid {
        /// The setting's name, as in [`LimiterConfig`] (`tools."NAME".weight`
        /// for a tool's own settings).
        setting: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A duration setting was out of range.
    #[error("invalid {setting}: {reason}")]
    Duration {
        /// The setting's name, as in [`LimiterConfig`].
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl ConfigError {
    /// The name of the offending setting, as in [`LimiterConfig`].
    pub fn setting(&self) -> &str {
        match self {
            ConfigError::MaxConcurrent { .. } => "max_concurrent",
            ConfigError::Invalid { setting, .. } => setting,
            ConfigError::Duration { setting, .. } => setting,
        }
    }

    fn invalid(setting: &str, reason: &str) -> Self {
        ConfigError::Invalid {
            setting: setting.into(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_python_package() {
        let config = LimiterConfig::new(5);
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.queue_size, 0);
        assert_eq!(config.queue_timeout, Duration::from_secs(30));
    }

    #[test]
    fn zero_max_concurrent_names_the_setting() {
        let err = LimiterConfig::new(0).validate().unwrap_err();
        assert_eq!(err.setting(), "max_concurrent");
        assert!(err.to_string().contains("max_concurrent"), "{err}");
    }

    #[test]
    fn zero_queue_timeout_names_the_setting() {
        let err = LimiterConfig::new(1)
            .with_queue_timeout(Duration::ZERO)
            .validate()
            .unwrap_err();
        assert_eq!(err.setting(), "queue_timeout");
        assert!(
            err.to_string().starts_with("invalid queue_timeout"),
            "{err}"
        );
    }

    #[test]
    fn queue_size_zero_is_valid() {
        assert_eq!(LimiterConfig::new(1).with_queue_size(0).validate(), Ok(()));
    }

    #[test]
    fn inverted_retry_bounds_are_rejected() {
        let err = LimiterConfig::new(1)
            .with_retry_after_bounds(Duration::from_secs(2), Duration::from_secs(1))
            .validate()
            .unwrap_err();
        assert_eq!(err.setting(), "retry_after_max");
    }

    #[test]
    fn zero_initial_service_time_is_rejected() {
        let err = LimiterConfig::new(1)
            .with_initial_service_time(Duration::ZERO)
            .validate()
            .unwrap_err();
        assert_eq!(err.setting(), "initial_service_time");
    }

    #[test]
    fn seconds_rejects_nonsense() {
        for bad in [-1.0, f64::NAN, f64::INFINITY, -0.5, 1e30] {
            let err = seconds("queue_timeout", bad).unwrap_err();
            assert_eq!(err.setting(), "queue_timeout", "{bad}");
        }
        assert_eq!(
            seconds("queue_timeout", 1.5).unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(seconds("queue_timeout", 0.0).unwrap(), Duration::ZERO);
    }
}
