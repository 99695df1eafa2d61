//! Validated limiter configuration.
//!
//! [`LimiterConfig`] is plain data: build it with [`LimiterConfig::new`] and the
//! `with_*` methods, then hand it to [`Limiter::new`](crate::Limiter::new) or
//! [`Limiter::builder`](crate::Limiter::builder), which validate it. Every
//! invalid value is a [`ConfigError`] that names the setting; nothing panics.

use std::time::Duration;

/// Configuration of a [`Limiter`](crate::Limiter).
///
/// | setting | meaning | default |
/// |---|---|---|
/// | `max_concurrent` | requests allowed to run at once, `>= 1` | required |
/// | `queue_size` | requests allowed to wait for a slot, `0` = reject at once | `0` |
/// | `queue_timeout` | longest wait in the queue, `> 0` | 30 s |
/// | `retry_after_min` / `retry_after_max` | bounds of the advertised `retry_after_ms` | 10 ms / 60 s |
/// | `initial_service_time` | service time assumed before the first request completes | 1 s |
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimiterConfig {
    /// Requests allowed to run at once. Must be at least 1.
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
}

/// The default queue timeout, as in the Python package: 30 seconds.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

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
        }
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
        Ok(())
    }
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
    pub fn setting(&self) -> &'static str {
        match self {
            ConfigError::MaxConcurrent { .. } => "max_concurrent",
            ConfigError::Duration { setting, .. } => setting,
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
