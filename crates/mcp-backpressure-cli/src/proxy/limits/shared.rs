//! The shared limit's settings: one concurrency limit for every proxy (or
//! server) naming the same Redis URL and key.
//!
//! | flag | TOML key | |
//! |---|---|---|
//! | `--shared-limit URL` | `shared_limit` | `redis://[user:password@]HOST:PORT/DB` (`rediss://` with the `redis-tls` feature, `redis+unix:///path`) |
//! | `--shared-key NAME` | `shared_key` | required with `shared_limit`: processes naming the same key share one limit |
//! | `--lease SECS` | `lease` | how long a dead process's slots stay taken (>= 0.2, and >= 4 x the shared timeout) [default: 10] |
//! | `--shared-fail open\|closed` | `shared_fail` | while Redis is unreachable: admit against `max_concurrent / replicas`, or reject with `shared_unavailable` [default: open] |
//! | `--shared-replicas N` | `shared_replicas` | the `replicas` of the fail-open share [default: the processes last seen joined] |
//! | `--shared-timeout SECS` | `shared_timeout` | longest Redis command before Redis counts as unreachable [default: 1] |
//!
//! Any of the others without `shared_limit` is an error (it would silently
//! do nothing). The values are checked here and then by the library
//! ([`SharedLimit::validate`]), whose refusal is worded as ours: `invalid
//! <what the user wrote>: <why>`.

use anyhow::bail;
use mcp_backpressure::ConfigError;
use mcp_backpressure::shared::{FailMode, SharedLimit};

use super::{Count, FileSettings, Input, LimitArgs, Seconds, choice};

const LEASE: Seconds = Seconds::positive("lease");
const SHARED_TIMEOUT: Seconds = Seconds::positive("shared_timeout");
const SHARED_REPLICAS: Count = Count::new("shared_replicas", 1);

/// The shared limit of the file and the flags, checked; `None` without
/// `shared_limit`.
pub(super) fn merge<'a>(
    args: &'a LimitArgs,
    file: &'a FileSettings,
) -> anyhow::Result<Option<SharedLimit>> {
    let pick = |key, flag: &'a Option<String>, value| file.pick(key, flag, value);
    let url = pick("shared_limit", &args.shared_limit, &file.shared_limit);
    let key = pick("shared_key", &args.shared_key, &file.shared_key);
    let lease = pick("lease", &args.lease, &file.lease);
    let fail = pick("shared_fail", &args.shared_fail, &file.shared_fail);
    let replicas = pick(
        "shared_replicas",
        &args.shared_replicas,
        &file.shared_replicas,
    );
    let timeout = pick("shared_timeout", &args.shared_timeout, &file.shared_timeout);
    let Some(url) = url else {
        if let Some(input) = [key, lease, fail, replicas, timeout]
            .into_iter()
            .flatten()
            .next()
        {
            bail!(
                "invalid {input}: only with a shared limit (--shared-limit URL or \
                 shared_limit in the file)"
            );
        }
        return Ok(None);
    };
    let url_text = text("a redis:// URL", url)?;
    let Some(key) = key else {
        bail!(
            "invalid shared_key: required with shared_limit; pass --shared-key NAME or set \
             shared_key in the --config file (processes naming the same key share one limit)"
        );
    };
    let key_text = text("a name", key)?;
    let mut shared = SharedLimit::new(url_text, key_text);
    if let Some(lease) = LEASE.get(lease)? {
        shared = shared.with_lease(lease);
    }
    if let Some(input) = fail {
        shared = shared.with_fail(choice("open or closed", input, |text| {
            text.parse::<FailMode>().ok()
        })?);
    }
    if let Some(n) = SHARED_REPLICAS.get(replicas)? {
        shared = shared.with_replicas(n);
    }
    if let Some(timeout) = SHARED_TIMEOUT.get(timeout)? {
        shared = shared.with_timeout(timeout);
    }
    if let Err(error) = shared.validate() {
        let setting = error.setting().to_owned();
        let why = match &error {
            ConfigError::Invalid { reason, .. } | ConfigError::Duration { reason, .. } => {
                reason.clone()
            }
            other => other.to_string(),
        };
        let input = match setting.as_str() {
            "shared_limit" => Some(url),
            "shared_key" => Some(key),
            "lease" => lease,
            "shared_timeout" => timeout,
            "shared_replicas" => replicas,
            _ => None,
        };
        match input {
            Some(input) => bail!("invalid {input}: {why}"),
            None => bail!("invalid {setting} (the default): {why}"),
        }
    }
    Ok(Some(shared))
}

/// A setting whose value is text (a flag, or a TOML string).
fn text<'a>(expected: &str, input: Input<'a>) -> anyhow::Result<&'a str> {
    match input.text() {
        Some(text) => Ok(text),
        None => bail!("invalid {input}: must be {expected}"),
    }
}

/// The URL as it may be logged: its password replaced by `***`.
pub fn redacted(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        return "(not a URL)".to_owned();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    // redis+unix URLs carry credentials in the query (`?user=…&pass=…`):
    // every value but the database number is masked.
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let keep = k == "db" || k == "protocol";
                (
                    k.into_owned(),
                    if keep { v.into_owned() } else { "***".into() },
                )
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use clap::Parser;

    use super::*;
    use crate::proxy::limits::{Settings, parse_file};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        limits: LimitArgs,
    }

    fn load(argv: &[&str], toml: &str) -> anyhow::Result<Settings> {
        let args = Cli::try_parse_from(
            ["proxy", "--max-concurrent", "5"]
                .into_iter()
                .chain(argv.iter().copied()),
        )
        .unwrap()
        .limits;
        let file = parse_file(toml, Path::new("test.toml")).unwrap();
        Settings::merge(&args, &file)
    }

    fn error(argv: &[&str], toml: &str) -> String {
        format!("{:#}", load(argv, toml).unwrap_err())
    }

    #[test]
    fn flags_and_file_set_the_shared_limit() {
        let settings = load(
            &[
                "--shared-limit",
                "redis://127.0.0.1:6379/2",
                "--shared-key",
                "search",
                "--lease",
                "2.5",
                "--shared-fail",
                "closed",
                "--shared-replicas",
                "3",
                "--shared-timeout",
                "0.25",
            ],
            "",
        )
        .unwrap();
        let shared = settings.shared.unwrap();
        assert_eq!(shared.url, "redis://127.0.0.1:6379/2");
        assert_eq!(shared.key, "search");
        assert_eq!(shared.lease, Duration::from_millis(2500));
        assert_eq!(shared.fail, FailMode::Closed);
        assert_eq!(shared.replicas, Some(3));
        assert_eq!(shared.timeout, Duration::from_millis(250));

        let toml = "shared_limit = \"redis://h:1/0\"\nshared_key = \"k\"\nlease = 8\n\
                    shared_fail = \"open\"\nshared_replicas = 2\nshared_timeout = 2\n";
        let shared = load(&[], toml).unwrap().shared.unwrap();
        assert_eq!(
            shared,
            SharedLimit::new("redis://h:1/0", "k")
                .with_lease(Duration::from_secs(8))
                .with_fail(FailMode::Open)
                .with_replicas(2)
                .with_timeout(Duration::from_secs(2))
        );
        // A flag overrides the file.
        let shared = load(&["--shared-key", "other"], toml)
            .unwrap()
            .shared
            .unwrap();
        assert_eq!(shared.key, "other");
        // Defaults.
        let shared = load(
            &["--shared-limit", "redis://h:1/0", "--shared-key", "k"],
            "",
        )
        .unwrap()
        .shared
        .unwrap();
        assert_eq!(shared, SharedLimit::new("redis://h:1/0", "k"));
        assert!(load(&[], "").unwrap().shared.is_none());
    }

    #[test]
    fn bad_shared_settings_are_named() {
        let url = ["--shared-limit", "redis://127.0.0.1:6379/0"];
        let with = |more: &[&'static str]| -> Vec<&'static str> {
            url.iter().chain(more).copied().collect()
        };
        for (argv, toml, expected) in [
            (
                vec!["--shared-key", "k"],
                "",
                "invalid --shared-key k: only with a shared limit",
            ),
            (
                vec![],
                "lease = 3",
                "invalid lease = 3 in test.toml, line 1: only with a shared limit",
            ),
            (
                vec!["--shared-fail", "closed"],
                "",
                "invalid --shared-fail closed: only with a shared limit",
            ),
            (
                with(&[]),
                "",
                "invalid shared_key: required with shared_limit",
            ),
            (
                vec!["--shared-limit", "http://x/", "--shared-key", "k"],
                "",
                "invalid --shared-limit http://x/: not a redis://, rediss:// or redis+unix:// URL",
            ),
            (
                vec!["--shared-limit", "nonsense", "--shared-key", "k"],
                "",
                "invalid --shared-limit nonsense:",
            ),
            (
                with(&["--shared-key", "a{b}"]),
                "",
                "invalid --shared-key a{b}: 1 to 128 bytes, without `{` or `}`",
            ),
            (
                with(&["--shared-key", "k", "--lease", "0.1"]),
                "",
                "invalid --lease 0.1: between 0.2 s and 24 h",
            ),
            (
                with(&["--shared-key", "k", "--lease", "-1"]),
                "",
                "invalid --lease -1: must be greater than 0",
            ),
            (
                with(&["--shared-key", "k", "--shared-fail", "maybe"]),
                "",
                "invalid --shared-fail maybe: must be open or closed",
            ),
            (
                with(&["--shared-key", "k", "--shared-replicas", "0"]),
                "",
                "invalid --shared-replicas 0: must be at least 1",
            ),
            (
                with(&["--shared-key", "k", "--shared-timeout", "61"]),
                "",
                "invalid --shared-timeout 61: above 0 and at most 60 s",
            ),
            (
                vec![],
                "shared_limit = 5\nshared_key = \"k\"",
                "invalid shared_limit = 5 in test.toml, line 1: must be a redis:// URL",
            ),
            (
                with(&["--shared-key", "k", "--limit", "aimd"]),
                "",
                "invalid --limit aimd: a shared limit is fixed",
            ),
        ] {
            let message = error(&argv, toml);
            assert!(
                message.contains(expected),
                "{argv:?} {toml:?}: {message}\nexpected {expected}"
            );
        }
    }

    #[test]
    fn a_password_is_not_logged() {
        assert_eq!(
            redacted("redis://user:secret@10.0.0.1:6379/0"),
            "redis://user:***@10.0.0.1:6379/0"
        );
        assert_eq!(redacted("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(redacted("not a url"), "(not a URL)");
    }
}
