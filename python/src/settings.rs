//! The Python keyword arguments, turned into a validated [`LimiterConfig`].
//!
//! Every invalid value is a `ValueError` whose message names the setting, as
//! the core's `ConfigError` does (`invalid client_limit: must be at least 1,
//! got 0`).

use std::time::Duration;

use mcp_backpressure::config::{ToolConfig, seconds};
use mcp_backpressure::limit::LimitAlgorithm;
use mcp_backpressure::{ConfigError, LimiterConfig, QueueDiscipline};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

/// The settings of one limiter, as Python passed them.
pub(crate) struct Settings<'py> {
    pub max_concurrent: usize,
    pub queue_size: usize,
    pub queue_timeout: f64,
    pub retry_after_min: Option<f64>,
    pub retry_after_max: Option<f64>,
    pub initial_service_time: Option<f64>,
    pub limit: &'py str,
    pub min_limit: Option<usize>,
    pub max_limit: Option<usize>,
    pub tools: Option<Bound<'py, PyDict>>,
    pub default_tool_limit: Option<usize>,
    pub client_limit: Option<usize>,
    pub max_tracked_keys: Option<usize>,
    pub queue_discipline: &'py str,
    pub codel_target: Option<f64>,
    pub codel_interval: Option<f64>,
    pub lifo_interval: Option<f64>,
}

fn value_error(err: impl ToString) -> PyErr {
    PyValueError::new_err(err.to_string())
}

fn duration(setting: &'static str, value: f64) -> PyResult<Duration> {
    seconds(setting, value).map_err(value_error)
}

fn algorithm(setting: &str, name: &str) -> PyResult<LimitAlgorithm> {
    name.parse()
        .map_err(|err| value_error(format!("invalid {setting}: {err}")))
}

impl Settings<'_> {
    /// The validated configuration.
    pub(crate) fn config(&self) -> PyResult<LimiterConfig> {
        let mut config = LimiterConfig::new(self.max_concurrent)
            .with_queue_size(self.queue_size)
            .with_queue_timeout(duration("queue_timeout", self.queue_timeout)?);
        if self.retry_after_min.is_some() || self.retry_after_max.is_some() {
            let min = match self.retry_after_min {
                Some(v) => duration("retry_after_min", v)?,
                None => config.retry_after_min,
            };
            let max = match self.retry_after_max {
                Some(v) => duration("retry_after_max", v)?,
                None => config.retry_after_max,
            };
            config = config.with_retry_after_bounds(min, max);
        }
        if let Some(v) = self.initial_service_time {
            config = config.with_initial_service_time(duration("initial_service_time", v)?);
        }
        let limit = algorithm("limit", self.limit)?;
        if limit != LimitAlgorithm::Fixed || self.min_limit.is_some() || self.max_limit.is_some() {
            config = config.with_limit(limit, self.min_limit.unwrap_or(1), self.max_limit);
        }
        if let Some(tools) = &self.tools {
            for (name, spec) in tools.iter() {
                let name: String = name.extract().map_err(|_| {
                    value_error("invalid tools: every key must be a tool name (str)")
                })?;
                let tool = tool_config(&name, &spec)?;
                config = config.with_tool(name, tool);
            }
        }
        if let Some(v) = self.default_tool_limit {
            config = config.with_default_tool_limit(v);
        }
        if let Some(v) = self.client_limit {
            config = config.with_client_limit(v);
        }
        if let Some(v) = self.max_tracked_keys {
            config = config.with_max_tracked_keys(v);
        }
        config = config.with_discipline(self.discipline()?);
        config
            .validate()
            .map_err(|err: ConfigError| value_error(err))?;
        Ok(config)
    }

    fn discipline(&self) -> PyResult<QueueDiscipline> {
        let discipline: QueueDiscipline = self
            .queue_discipline
            .parse()
            .map_err(|err| value_error(format!("invalid queue_discipline: {err}")))?;
        let misplaced = |setting: &str| {
            value_error(format!(
                "invalid {setting}: only applies to queue_discipline={:?}",
                if setting == "lifo_interval" {
                    "adaptive-lifo"
                } else {
                    "codel"
                }
            ))
        };
        Ok(match discipline {
            QueueDiscipline::CoDel { target, interval } => {
                if self.lifo_interval.is_some() {
                    return Err(misplaced("lifo_interval"));
                }
                QueueDiscipline::CoDel {
                    target: match self.codel_target {
                        Some(v) => duration("codel_target", v)?,
                        None => target,
                    },
                    interval: match self.codel_interval {
                        Some(v) => duration("codel_interval", v)?,
                        None => interval,
                    },
                }
            }
            QueueDiscipline::AdaptiveLifo { interval } => {
                if self.codel_target.is_some() {
                    return Err(misplaced("codel_target"));
                }
                if self.codel_interval.is_some() {
                    return Err(misplaced("codel_interval"));
                }
                QueueDiscipline::AdaptiveLifo {
                    interval: match self.lifo_interval {
                        Some(v) => duration("lifo_interval", v)?,
                        None => interval,
                    },
                }
            }
            other => {
                for (setting, value) in [
                    ("codel_target", self.codel_target),
                    ("codel_interval", self.codel_interval),
                    ("lifo_interval", self.lifo_interval),
                ] {
                    if value.is_some() {
                        return Err(misplaced(setting));
                    }
                }
                other
            }
        })
    }
}

/// One entry of `tools={"name": {"max_concurrent": 2, "weight": 4, ...}}`.
fn tool_config(name: &str, spec: &Bound<'_, PyAny>) -> PyResult<ToolConfig> {
    let spec = spec.cast::<PyDict>().map_err(|_| {
        value_error(format!(
            "invalid tools.{name:?}: expected a dict of max_concurrent, weight, limit, min_limit, max_limit"
        ))
    })?;
    let mut tool = ToolConfig::new();
    let mut limit = None;
    let mut min_limit = None;
    let mut max_limit = None;
    for (key, value) in spec.iter() {
        let key = key
            .cast::<PyString>()
            .map_err(|_| value_error(format!("invalid tools.{name:?}: keys must be str")))?
            .to_string();
        let setting = format!("tools.{name:?}.{key}");
        let count = |value: &Bound<'_, PyAny>| -> PyResult<usize> {
            value.extract::<usize>().map_err(|_| {
                value_error(format!(
                    "invalid {setting}: expected a non-negative int, got {value}"
                ))
            })
        };
        match key.as_str() {
            "max_concurrent" => tool = tool.with_max_concurrent(count(&value)?),
            "weight" => tool = tool.with_weight(count(&value)?),
            "limit" => {
                let text: String = value
                    .extract()
                    .map_err(|_| value_error(format!("invalid {setting}: expected a str")))?;
                limit = Some(algorithm(&setting, &text)?);
            }
            "min_limit" => min_limit = Some(count(&value)?),
            "max_limit" => max_limit = Some(count(&value)?),
            other => {
                return Err(value_error(format!(
                    "invalid tools.{name:?}: unknown setting {other:?} (expected max_concurrent, weight, limit, min_limit, max_limit)"
                )));
            }
        }
    }
    if limit.is_some() || min_limit.is_some() || max_limit.is_some() {
        tool = tool.with_limit(
            limit.unwrap_or(LimitAlgorithm::Fixed),
            min_limit.unwrap_or(1),
            max_limit,
        );
    }
    Ok(tool)
}

/// The shared limit's settings (`None` without `shared_limit`); a
/// `ValueError` names the first invalid one.
pub(crate) fn shared(
    url: Option<String>,
    key: Option<String>,
    lease: Option<f64>,
    fail: &str,
    replicas: Option<usize>,
    timeout: Option<f64>,
) -> PyResult<Option<mcp_backpressure::shared::SharedLimit>> {
    use mcp_backpressure::shared::{FailMode, SharedLimit};
    let Some(url) = url else {
        if key.is_some()
            || lease.is_some()
            || replicas.is_some()
            || timeout.is_some()
            || fail != "open"
        {
            return Err(value_error(
                "shared_key, lease, shared_fail, shared_replicas and shared_timeout need shared_limit",
            ));
        }
        return Ok(None);
    };
    let Some(key) = key else {
        return Err(value_error(
            "shared_limit needs shared_key (the limit's name)",
        ));
    };
    let fail: FailMode = fail
        .parse()
        .map_err(|e: String| value_error(format!("invalid shared_fail: {e}")))?;
    let mut shared = SharedLimit::new(url, key).with_fail(fail);
    if let Some(lease) = lease {
        shared = shared.with_lease(duration("lease", lease)?);
    }
    if let Some(timeout) = timeout {
        shared = shared.with_timeout(duration("shared_timeout", timeout)?);
    }
    if let Some(replicas) = replicas {
        shared = shared.with_replicas(replicas);
    }
    shared.validate().map_err(value_error)?;
    Ok(Some(shared))
}
