//! SIGHUP: the limiter's settings reloaded live.
//!
//! On SIGHUP the proxy reads `--config` again and merges it with the same
//! command-line flags as at startup (a flag still overrides the file), with
//! every check of startup. Then:
//!
//! - if anything is invalid, the new settings are refused as a whole (a
//!   warning says why) and the ones in force stay;
//! - otherwise every setting of the limiter (limits, queue, timeouts, retry
//!   bounds, tools, clients, algorithm, discipline) changes at once with
//!   `Limiter::reconfigure` — calls running keep their slots, waiters their
//!   place — and so does the overload dialect (`overload_response`,
//!   `http_overload_status`: every refusal from then on); each change is
//!   logged, `old -> new`, at info;
//! - the proxy's own settings (`client_key`, `error_code`, `guarded`, the
//!   byte and connection bounds, the read timeouts, `cancel_grace`, the
//!   shared limit's settings — `shared_limit`, `shared_key`, `lease`,
//!   `shared_fail`, `shared_replicas`, `shared_timeout` — and of course the
//!   listen address and the upstream) are fixed at startup: a change is
//!   logged as needing a restart and the old value stays. With a shared
//!   limit, the limits still reload (each replica must be given the same).
//!
//! One more refusal: `max_concurrent + queue_size` may not outgrow the
//! `max_in_flight` in force, which only a restart changes (every queued call
//! must fit in the in-flight table).

use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::Arc;

use anyhow::bail;
use mcp_backpressure::LimiterConfig;

use super::gate::Gate;
use super::limits::{LimitArgs, Settings};

/// Listens for SIGHUP from now on (a SIGHUP before this would end the
/// process), reloading on a task of its own.
pub fn listen(gate: Arc<Gate>, args: LimitArgs) {
    #[cfg(unix)]
    {
        // Registered here, synchronously, before the proxy serves anything.
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hangup) => {
                let args = Arc::new(args);
                tokio::spawn(async move {
                    while hangup.recv().await.is_some() {
                        // The file is read off the event loop.
                        let (gate, args) = (gate.clone(), args.clone());
                        let _ = tokio::task::spawn_blocking(move || reload(&gate, &args)).await;
                    }
                });
            }
            Err(error) => tracing::warn!(%error, "cannot listen for SIGHUP; no live reload"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (gate, args);
    }
}

/// One reload: logs what changed, what needs a restart, or why the new
/// settings were refused.
pub fn reload(gate: &Gate, args: &LimitArgs) {
    let Some(path) = &args.config else {
        tracing::info!("SIGHUP: no --config file to reload; nothing changes");
        return;
    };
    let file = path.display();
    let dialect = gate.dialect.get();
    let in_force = Settings {
        config: gate.limiter.config(),
        overload_response: dialect.response,
        http_overload_status: dialect.http_status,
        ..gate.settings.clone()
    };
    let loaded = Settings::load(args).and_then(|new| {
        check(&in_force, &new)?;
        Ok(new)
    });
    let new = match loaded {
        Ok(new) => new,
        Err(error) => {
            tracing::warn!("reload of {file} refused, the settings in force stay: {error:#}");
            return;
        }
    };
    if let Err(error) = gate.limiter.reconfigure(new.config.clone()) {
        tracing::warn!("reload of {file} refused, the settings in force stay: {error}");
        return;
    }
    gate.dialect.set(new.dialect());
    let changes = changes(&in_force, &new);
    for change in &changes {
        let Change {
            setting, old, new, ..
        } = change;
        if change.live {
            tracing::info!("reload: {setting}: {old} -> {new}");
        } else {
            tracing::warn!(
                "reload: {setting}: {old} -> {new} needs a restart; {old} stays in force"
            );
        }
    }
    let live = changes.iter().filter(|c| c.live).count();
    tracing::info!("reloaded {file}: {live} setting(s) changed");
}

/// What a reload cannot do without a restart.
fn check(in_force: &Settings, new: &Settings) -> anyhow::Result<()> {
    let needed = new.config.max_concurrent as u128 + new.config.queue_size as u128;
    if needed > in_force.max_in_flight as u128 {
        bail!(
            "max_concurrent + queue_size ({} + {} = {needed}) would exceed the max_in_flight \
             in force ({}), which needs a restart",
            new.config.max_concurrent,
            new.config.queue_size,
            in_force.max_in_flight
        );
    }
    let limit = new.config.effective_max_limit();
    if limit > in_force.max_task_holds {
        bail!(
            "the limit ({limit}) would exceed the max_task_holds in force ({}), which needs \
             a restart",
            in_force.max_task_holds
        );
    }
    Ok(())
}

/// One setting a reload changes.
#[derive(Debug, PartialEq, Eq)]
pub struct Change {
    /// Its name, as in the file (`tools."report".weight` for a tool's).
    pub setting: String,
    /// The value in force, as written in a file (`unset` when it has none).
    pub old: String,
    /// The value loaded.
    pub new: String,
    /// Whether it changes live (a setting of the limiter).
    pub live: bool,
}

/// Every setting whose value differs, in the order of [`describe`].
pub fn changes(old: &Settings, new: &Settings) -> Vec<Change> {
    let before: BTreeMap<String, (String, bool)> = describe(old)
        .into_iter()
        .map(|(name, value, live)| (name, (value, live)))
        .collect();
    let after: BTreeMap<String, (String, bool)> = describe(new)
        .into_iter()
        .map(|(name, value, live)| (name, (value, live)))
        .collect();
    let mut names: Vec<&String> = before.keys().chain(after.keys()).collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            let (old, old_live) = before.get(name).cloned().unwrap_or_else(unset);
            let (new, new_live) = after.get(name).cloned().unwrap_or_else(unset);
            (old != new).then(|| Change {
                setting: name.clone(),
                old,
                new,
                live: old_live || new_live,
            })
        })
        .collect()
}

fn unset() -> (String, bool) {
    // A tool's setting that exists on one side only: tools are live.
    ("unset".to_owned(), true)
}

/// Every setting as `(name, value, live)`.
fn describe(settings: &Settings) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    let mut live = |name: &str, value: String| out.push((name.to_owned(), value, true));
    describe_limiter(&settings.config, &mut live);
    live(
        "overload_response",
        settings.overload_response.as_str().to_owned(),
    );
    live(
        "http_overload_status",
        settings.http_overload_status.code().to_string(),
    );
    let restart = [
        ("client_key", settings.client_key.to_string()),
        ("error_code", settings.error_code.to_string()),
        ("guarded", format!("{:?}", settings.guarded)),
        ("max_message_bytes", settings.max_message_bytes.to_string()),
        ("cancel_grace", secs(settings.cancel_grace)),
        ("max_in_flight", settings.max_in_flight.to_string()),
        ("buffer_bytes", settings.buffer_bytes.to_string()),
        ("max_connections", settings.max_connections.to_string()),
        ("header_read_timeout", secs(settings.header_read_timeout)),
        ("body_read_timeout", secs(settings.body_read_timeout)),
        ("body_stall_timeout", secs(settings.body_stall_timeout)),
        ("body_min_rate", settings.body_min_rate.to_string()),
        ("small_body_bytes", settings.small_body_bytes.to_string()),
        ("max_task_holds", settings.max_task_holds.to_string()),
    ];
    out.extend(
        restart
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value, false)),
    );
    let shared = settings.shared.as_ref();
    let shared = [
        (
            "shared_limit",
            optional(shared.map(|s| super::limits::shared::redacted(&s.url))),
        ),
        ("shared_key", optional(shared.map(|s| s.key.clone()))),
        ("lease", optional(shared.map(|s| secs(s.lease)))),
        ("shared_fail", optional(shared.map(|s| s.fail.as_str()))),
        ("shared_replicas", optional(shared.and_then(|s| s.replicas))),
        ("shared_timeout", optional(shared.map(|s| secs(s.timeout)))),
    ];
    out.extend(
        shared
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value, false)),
    );
    out
}

fn describe_limiter(config: &LimiterConfig, out: &mut impl FnMut(&str, String)) {
    out("max_concurrent", config.max_concurrent.to_string());
    out("queue_size", config.queue_size.to_string());
    out("queue_timeout", secs(config.queue_timeout));
    out("retry_after_min", secs(config.retry_after_min));
    out("retry_after_max", secs(config.retry_after_max));
    out("initial_service_time", secs(config.initial_service_time));
    out("limit", config.limit.to_string());
    out("min_limit", config.min_limit.to_string());
    out("max_limit", optional(config.max_limit));
    out("queue_discipline", config.discipline.as_str().to_owned());
    out("default_tool_limit", optional(config.default_tool_limit));
    out("client_limit", optional(config.client_limit));
    out("max_tracked_keys", config.max_tracked_keys.to_string());
    out("max_continuations", config.max_continuations.to_string());
    for (name, tool) in &config.tools {
        let prefix = format!("tools.{name:?}.");
        out(
            &format!("{prefix}max_concurrent"),
            optional(tool.max_concurrent),
        );
        out(&format!("{prefix}weight"), tool.weight.to_string());
        out(&format!("{prefix}limit"), tool.limit.to_string());
        out(&format!("{prefix}min_limit"), tool.min_limit.to_string());
        out(&format!("{prefix}max_limit"), optional(tool.max_limit));
    }
}

fn optional(value: Option<impl Display>) -> String {
    value.map_or_else(|| "unset".to_owned(), |v| v.to_string())
}

fn secs(duration: std::time::Duration) -> String {
    duration.as_secs_f64().to_string()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mcp_backpressure::ToolConfig;
    use mcp_backpressure::limit::LimitAlgorithm;

    use super::*;
    use crate::proxy::client_key::ClientKey;

    fn change(setting: &str, old: &str, new: &str, live: bool) -> Change {
        Change {
            setting: setting.into(),
            old: old.into(),
            new: new.into(),
            live,
        }
    }

    #[test]
    fn nothing_changed_is_no_change() {
        let settings = Settings::with_defaults(LimiterConfig::new(3));
        assert_eq!(changes(&settings, &settings.clone()), []);
    }

    #[test]
    fn each_change_is_named_with_both_values() {
        let old = Settings::with_defaults(
            LimiterConfig::new(3)
                .with_tool("report", ToolConfig::new().with_max_concurrent(1))
                .with_tool("gone", ToolConfig::new().with_weight(2)),
        );
        let mut new = Settings::with_defaults(
            LimiterConfig::new(5)
                .with_queue_timeout(Duration::from_millis(2500))
                .with_limit(LimitAlgorithm::Aimd, 2, Some(10))
                .with_client_limit(2)
                .with_tool(
                    "report",
                    ToolConfig::new().with_max_concurrent(2).with_weight(4),
                ),
        );
        new.client_key = ClientKey::Session;
        new.cancel_grace = Duration::ZERO;
        assert_eq!(
            changes(&old, &new),
            [
                change("cancel_grace", "5", "0", false),
                change("client_key", "none", "session", false),
                change("client_limit", "unset", "2", true),
                change("limit", "fixed", "aimd", true),
                change("max_concurrent", "3", "5", true),
                change("max_limit", "unset", "10", true),
                change("min_limit", "1", "2", true),
                change("queue_timeout", "30", "2.5", true),
                change("tools.\"gone\".limit", "fixed", "unset", true),
                change("tools.\"gone\".min_limit", "1", "unset", true),
                change("tools.\"gone\".weight", "2", "unset", true),
                change("tools.\"report\".max_concurrent", "1", "2", true),
                change("tools.\"report\".weight", "1", "4", true),
            ]
        );
    }

    #[test]
    fn the_shared_settings_need_a_restart() {
        let old = Settings::with_defaults(LimiterConfig::new(3));
        let mut new = Settings::with_defaults(LimiterConfig::new(4));
        new.shared = Some(
            mcp_backpressure::shared::SharedLimit::new("redis://u:pw@h:1/0", "k")
                .with_lease(Duration::from_secs(2)),
        );
        assert_eq!(
            changes(&old, &new),
            [
                change("lease", "unset", "2", false),
                change("max_concurrent", "3", "4", true),
                change("shared_fail", "unset", "open", false),
                change("shared_key", "unset", "k", false),
                change("shared_limit", "unset", "redis://u:***@h:1/0", false),
                change("shared_timeout", "unset", "1", false),
            ]
        );
    }

    #[test]
    fn the_queue_may_not_outgrow_the_in_flight_table() {
        let mut in_force = Settings::with_defaults(LimiterConfig::new(3));
        in_force.max_in_flight = 10;
        let fits = Settings::with_defaults(LimiterConfig::new(4).with_queue_size(6));
        assert!(check(&in_force, &fits).is_ok());
        let too_big = Settings::with_defaults(LimiterConfig::new(4).with_queue_size(7));
        let message = check(&in_force, &too_big).unwrap_err().to_string();
        assert!(message.contains("(4 + 7 = 11)"), "{message}");
        assert!(message.contains("max_in_flight in force (10)"), "{message}");
    }

    #[test]
    fn the_overload_dialect_changes_live() {
        let old = Settings::with_defaults(LimiterConfig::new(3));
        let mut new = old.clone();
        new.overload_response = crate::proxy::refusal::OverloadResponse::ToolResult;
        new.http_overload_status = crate::proxy::refusal::OverloadStatus::ServiceUnavailable;
        assert_eq!(
            changes(&old, &new),
            [
                change("http_overload_status", "200", "503", true),
                change("overload_response", "error", "tool-result", true),
            ]
        );
    }
}
