//! The proxy's settings: the library's [`LimiterConfig`] plus the few options
//! of the proxy itself, from flags and from a TOML file (`--config`), with the
//! same names. A flag overrides the file. Every invalid value is an error that
//! names the setting; nothing panics.
//!
//! ```toml
//! max_concurrent = 5          # required (here or as --max-concurrent)
//! queue_size = 10
//! queue_timeout = 30          # seconds, fractions allowed
//! retry_after_min = 0.01
//! retry_after_max = 60
//! initial_service_time = 1
//! error_code = -31429         # -32001 for clients of the Python package
//! guarded = ["tools/call"]
//! max_message_bytes = 16777216
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use mcp_backpressure::config::seconds;
use mcp_backpressure::{Limiter, LimiterConfig, jsonrpc};
use serde::Deserialize;

/// The default bound on one JSON-RPC message (one stdio line, one HTTP body).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// The limits as flags. Every flag has the name of its TOML key, with dashes.
#[derive(Debug, Default, clap::Args)]
pub struct LimitArgs {
    /// A TOML file with any of the settings below (same names, with underscores).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Guarded requests allowed to run at once (>= 1). Required, here or in the file.
    #[arg(long, value_name = "N")]
    pub max_concurrent: Option<usize>,
    /// Guarded requests allowed to wait for a slot (0 = reject at once) [default: 0].
    #[arg(long, value_name = "N")]
    pub queue_size: Option<usize>,
    /// Longest wait in the queue, in seconds (> 0) [default: 30].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub queue_timeout: Option<f64>,
    /// Lower bound of the advertised retry delay, in seconds [default: 0.01].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub retry_after_min: Option<f64>,
    /// Upper bound of the advertised retry delay, in seconds [default: 60].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub retry_after_max: Option<f64>,
    /// Service time assumed until the first request completes, in seconds [default: 1].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub initial_service_time: Option<f64>,
    /// JSON-RPC code of the overload error [default: -31429; -32001 is the Python package's].
    #[arg(long, value_name = "CODE", allow_negative_numbers = true)]
    pub error_code: Option<i32>,
    /// A request method admitted through the limiter; repeat for several
    /// [default: tools/call].
    #[arg(long = "guard", value_name = "METHOD")]
    pub guarded: Vec<String>,
    /// Largest JSON-RPC message accepted in either direction, in bytes [default: 16 MiB].
    #[arg(long, value_name = "BYTES")]
    pub max_message_bytes: Option<usize>,
}

/// The same settings in a TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    max_concurrent: Option<usize>,
    queue_size: Option<usize>,
    queue_timeout: Option<Number>,
    retry_after_min: Option<Number>,
    retry_after_max: Option<Number>,
    initial_service_time: Option<Number>,
    error_code: Option<i32>,
    guarded: Option<Vec<String>>,
    max_message_bytes: Option<usize>,
}

/// Seconds may be written `30` or `0.5`.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(untagged)]
enum Number {
    Int(i64),
    Float(f64),
}

impl Number {
    fn as_f64(self) -> f64 {
        match self {
            // Precision loss above 2^53 s is irrelevant: such values are rejected anyway.
            #[allow(clippy::cast_precision_loss)]
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        }
    }
}

/// Everything the proxy needs to admit requests, validated.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The limiter's configuration (validated by [`Settings::limiter`]).
    pub config: LimiterConfig,
    /// The overload error's code.
    pub error_code: i32,
    /// The request methods admitted through the limiter.
    pub guarded: Vec<String>,
    /// Largest message accepted, in bytes.
    pub max_message_bytes: usize,
}

impl Settings {
    /// Merges the file (if any) and the flags; validates everything.
    pub fn load(args: &LimitArgs) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileSettings::default(),
        };
        Self::merge(args, file)
    }

    fn merge(args: &LimitArgs, file: FileSettings) -> anyhow::Result<Self> {
        let Some(max_concurrent) = args.max_concurrent.or(file.max_concurrent) else {
            bail!(
                "invalid max_concurrent: required; pass --max-concurrent N or set \
                 max_concurrent in the --config file"
            );
        };
        let mut config = LimiterConfig::new(max_concurrent);
        if let Some(queue_size) = args.queue_size.or(file.queue_size) {
            config = config.with_queue_size(queue_size);
        }
        let secs = |name: &'static str, flag: Option<f64>, file: Option<Number>| {
            flag.or(file.map(Number::as_f64))
                .map(|value| seconds(name, value))
                .transpose()
        };
        if let Some(timeout) = secs("queue_timeout", args.queue_timeout, file.queue_timeout)? {
            config = config.with_queue_timeout(timeout);
        }
        let min = secs(
            "retry_after_min",
            args.retry_after_min,
            file.retry_after_min,
        )?;
        let max = secs(
            "retry_after_max",
            args.retry_after_max,
            file.retry_after_max,
        )?;
        let (min, max) = (
            min.unwrap_or(config.retry_after_min),
            max.unwrap_or(config.retry_after_max),
        );
        config = config.with_retry_after_bounds(min, max);
        if let Some(initial) = secs(
            "initial_service_time",
            args.initial_service_time,
            file.initial_service_time,
        )? {
            config = config.with_initial_service_time(initial);
        }
        config.validate()?;
        let guarded = if !args.guarded.is_empty() {
            args.guarded.clone()
        } else {
            file.guarded
                .unwrap_or_else(|| vec!["tools/call".to_owned()])
        };
        if let Some(bad) = guarded.iter().find(|m| m.trim().is_empty()) {
            bail!("invalid guarded: a method name must not be empty, got {bad:?}");
        }
        let max_message_bytes = args
            .max_message_bytes
            .or(file.max_message_bytes)
            .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
        if max_message_bytes < 1024 {
            bail!("invalid max_message_bytes: must be at least 1024, got {max_message_bytes}");
        }
        Ok(Self {
            config,
            error_code: args
                .error_code
                .or(file.error_code)
                .unwrap_or(jsonrpc::DEFAULT_OVERLOAD_CODE),
            guarded,
            max_message_bytes,
        })
    }

    /// Builds the limiter; overloads are logged.
    pub fn limiter(&self) -> anyhow::Result<Limiter> {
        Ok(Limiter::builder(self.config.clone())
            .on_overload(|o| {
                tracing::warn!(
                    reason = %o.reason,
                    active = o.snapshot.active,
                    queued = o.snapshot.queued,
                    "overloaded: request rejected"
                );
            })
            .build()?)
    }

    /// Whether requests of `method` go through the limiter.
    pub fn is_guarded(&self, method: &str) -> bool {
        self.guarded.iter().any(|m| m == method)
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileSettings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn file(text: &str) -> FileSettings {
        toml::from_str(text).unwrap()
    }

    fn error(args: &LimitArgs, text: &str) -> String {
        format!("{:#}", Settings::merge(args, file(text)).unwrap_err())
    }

    #[test]
    fn the_file_sets_every_setting() {
        let settings = Settings::merge(
            &LimitArgs::default(),
            file(
                "max_concurrent = 3\nqueue_size = 7\nqueue_timeout = 0.5\nretry_after_min = 1\n\
                 retry_after_max = 2\ninitial_service_time = 0.25\nerror_code = -32001\n\
                 guarded = [\"tools/call\", \"resources/read\"]\nmax_message_bytes = 4096\n",
            ),
        )
        .unwrap();
        assert_eq!(settings.config.max_concurrent, 3);
        assert_eq!(settings.config.queue_size, 7);
        assert_eq!(settings.config.queue_timeout, Duration::from_millis(500));
        assert_eq!(settings.config.retry_after_min, Duration::from_secs(1));
        assert_eq!(settings.config.retry_after_max, Duration::from_secs(2));
        assert_eq!(
            settings.config.initial_service_time,
            Duration::from_millis(250)
        );
        assert_eq!(settings.error_code, -32001);
        assert!(settings.is_guarded("resources/read"));
        assert!(!settings.is_guarded("ping"));
        assert_eq!(settings.max_message_bytes, 4096);
    }

    #[test]
    fn flags_override_the_file() {
        let args = LimitArgs {
            max_concurrent: Some(9),
            queue_timeout: Some(2.0),
            guarded: vec!["prompts/get".into()],
            ..LimitArgs::default()
        };
        let settings =
            Settings::merge(&args, file("max_concurrent = 3\nqueue_timeout = 5")).unwrap();
        assert_eq!(settings.config.max_concurrent, 9);
        assert_eq!(settings.config.queue_timeout, Duration::from_secs(2));
        assert_eq!(settings.guarded, ["prompts/get"]);
    }

    #[test]
    fn defaults_are_the_librarys() {
        let settings = Settings::merge(&LimitArgs::default(), file("max_concurrent = 1")).unwrap();
        assert_eq!(settings.config, LimiterConfig::new(1));
        assert_eq!(settings.error_code, jsonrpc::DEFAULT_OVERLOAD_CODE);
        assert_eq!(settings.guarded, ["tools/call"]);
    }

    #[test]
    fn errors_name_the_setting() {
        let none = LimitArgs::default();
        assert!(error(&none, "").starts_with("invalid max_concurrent"));
        assert!(error(&none, "max_concurrent = 0").starts_with("invalid max_concurrent"));
        assert!(
            error(&none, "max_concurrent = 1\nqueue_timeout = 0")
                .starts_with("invalid queue_timeout")
        );
        assert!(
            error(&none, "max_concurrent = 1\nqueue_timeout = -1")
                .starts_with("invalid queue_timeout")
        );
        assert!(
            error(
                &none,
                "max_concurrent = 1\nretry_after_min = 5\nretry_after_max = 1"
            )
            .starts_with("invalid retry_after_max")
        );
        assert!(
            error(&none, "max_concurrent = 1\ninitial_service_time = 0")
                .starts_with("invalid initial_service_time")
        );
        assert!(
            error(&none, "max_concurrent = 1\nmax_message_bytes = 10")
                .starts_with("invalid max_message_bytes")
        );
    }

    #[test]
    fn unknown_keys_in_the_file_are_named() {
        let err = toml::from_str::<FileSettings>("max_concurent = 1").unwrap_err();
        assert!(err.to_string().contains("max_concurent"), "{err}");
    }
}
