//! Per-tool settings: `--tool-limit NAME=N` and `--tool-weight NAME=W`, and
//! the file's `[tools."NAME"]` tables (`max_concurrent`, `weight`, `limit`,
//! `min_limit`, `max_limit`). A flag overrides the same tool's key in the
//! file; the other keys of that tool stay.
//!
//! A value's error names it as the file does, `tools."NAME".weight`, from a
//! flag too; a flag that is not `NAME=N` names the flag.

use std::collections::BTreeMap;

use anyhow::bail;
use mcp_backpressure::ToolConfig;
use serde::Deserialize;
use toml::Spanned;

use super::{FileSettings, Input, LimitArgs, algorithm, bounds, count};
use crate::proxy::router::MAX_NAME_BYTES;

/// One `[tools."NAME"]` table, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ToolFile {
    max_concurrent: Option<Spanned<toml::Value>>,
    weight: Option<Spanned<toml::Value>>,
    limit: Option<Spanned<toml::Value>>,
    min_limit: Option<Spanned<toml::Value>>,
    max_limit: Option<Spanned<toml::Value>>,
}

/// The tools of the file and of the flags, checked.
pub(super) fn merge(
    args: &LimitArgs,
    file: &FileSettings,
) -> anyhow::Result<BTreeMap<String, ToolConfig>> {
    let limits = flags("--tool-limit", "N", &args.tool_limits)?;
    let weights = flags("--tool-weight", "W", &args.tool_weights)?;
    let empty = ToolFile::default();
    let mut names: Vec<&str> = file.tools.keys().map(String::as_str).collect();
    names.extend(limits.keys().chain(weights.keys()).copied());
    names.sort_unstable();
    names.dedup();
    let mut tools = BTreeMap::new();
    for name in names {
        check_name(name, &format!("tools.{name:?}"))?;
        let table = file.tools.get(name).unwrap_or(&empty);
        let prefix = format!("tools.{name:?}.");
        let max_concurrent = limits
            .get(name)
            .copied()
            .or_else(|| file.written(&table.max_concurrent))
            .map(|input| count(&format!("{prefix}max_concurrent"), 1, input))
            .transpose()?;
        let weight = weights
            .get(name)
            .copied()
            .or_else(|| file.written(&table.weight))
            .map(|input| count(&format!("{prefix}weight"), 1, input))
            .transpose()?
            .unwrap_or(1);
        let algorithm = file
            .written(&table.limit)
            .map(|input| algorithm(&format!("{prefix}limit"), input))
            .transpose()?
            .unwrap_or_default();
        let mut tool = ToolConfig::new().with_weight(weight);
        let min_input = file.written(&table.min_limit);
        let max_input = file.written(&table.max_limit);
        match max_concurrent {
            Some(max) => {
                let (min_limit, max_limit) = bounds(&prefix, algorithm, max, min_input, max_input)?;
                tool = tool.with_max_concurrent(max).with_limit(
                    algorithm,
                    min_limit.unwrap_or(1),
                    max_limit,
                );
            }
            None if algorithm.is_adaptive() || min_input.is_some() || max_input.is_some() => {
                bail!(
                    "invalid {prefix}max_concurrent: required by {prefix}limit, min_limit or \
                     max_limit (the limit starts there); set it, or --tool-limit {name}=N"
                );
            }
            None => {}
        }
        tools.insert(name.to_owned(), tool);
    }
    Ok(tools)
}

/// `NAME=VALUE` flags by tool name (each tool once).
fn flags<'a>(
    flag: &str,
    value: &str,
    given: &'a [String],
) -> anyhow::Result<BTreeMap<&'a str, Input<'a>>> {
    let mut by_name = BTreeMap::new();
    for text in given {
        let Some((name, number)) = text.rsplit_once('=') else {
            bail!("invalid {flag}: expected NAME={value} (e.g. report=2), got {text:?}");
        };
        check_name(name, flag)?;
        if by_name.insert(name, Input::Text(number)).is_some() {
            bail!("invalid {flag}: the tool {name:?} is given twice, got {text:?}");
        }
    }
    Ok(by_name)
}

/// A tool name the limiter can key on: not empty, at most
/// [`MAX_NAME_BYTES`] (longer names are refused on the wire), and not `*`,
/// the metrics' name for every other tool.
fn check_name(name: &str, setting: &str) -> anyhow::Result<()> {
    if name.is_empty() {
        bail!("invalid {setting}: a tool name must not be empty");
    }
    if name.len() > MAX_NAME_BYTES {
        bail!(
            "invalid {setting}: a tool name is at most {MAX_NAME_BYTES} bytes, got {} bytes",
            name.len()
        );
    }
    if name == "*" {
        bail!(
            "invalid {setting}: \"*\" stands for every tool without a limit of its own; \
             use default_tool_limit"
        );
    }
    Ok(())
}
