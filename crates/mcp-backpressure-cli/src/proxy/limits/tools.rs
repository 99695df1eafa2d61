//! Per-tool settings: `--tool-limit NAME=N` and `--tool-weight NAME=W`, and
//! the file's `[tools."NAME"]` tables (`max_concurrent`, `weight`, `limit`,
//! `min_limit`, `max_limit`). A flag overrides the same tool's key in the
//! file; the other keys of that tool stay.
//!
//! An error names what the user wrote: the flag and its argument
//! (`--tool-weight sleep=heavy`), or the key with its value, the file and the
//! line (`tools.sleep.weight = "heavy" in proxy.toml, line 4`).

use std::collections::BTreeMap;

use anyhow::bail;
use mcp_backpressure::ToolConfig;
use serde::Deserialize;
use toml::Spanned;

use super::{
    FileKey, FileSettings, FlagName, Input, LimitArgs, Start, algorithm, bounds, count, shell_word,
    toml_key,
};
use crate::proxy::router::MAX_NAME_BYTES;

/// One `[tools."NAME"]` table, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ToolFile {
    max_concurrent: Option<Spanned<toml::Value>>,
    weight: Option<Spanned<toml::Value>>,
    pub(super) limit: Option<Spanned<toml::Value>>,
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
        let in_file = || format!("[tools.{}] in {}", toml_key(name), file.path.display());
        check_name(name, &in_file())?;
        let table = file.tools.get(name).unwrap_or(&empty);
        let key = |key| FileKey {
            tool: Some(name),
            key,
        };
        let max_input = limits
            .get(name)
            .copied()
            .or_else(|| file.located(key("max_concurrent"), &table.max_concurrent));
        let max_concurrent = max_input.map(|input| count(1, input)).transpose()?;
        let weight = weights
            .get(name)
            .copied()
            .or_else(|| file.located(key("weight"), &table.weight))
            .map(|input| count(1, input))
            .transpose()?
            .unwrap_or(1);
        let algorithm_input = file.located(key("limit"), &table.limit);
        let algorithm = algorithm_input
            .map(algorithm)
            .transpose()?
            .unwrap_or_default();
        let mut tool = ToolConfig::new().with_weight(weight);
        let min_input = file.located(key("min_limit"), &table.min_limit);
        let bound_input = file.located(key("max_limit"), &table.max_limit);
        match (max_concurrent, max_input) {
            (Some(max), Some(input)) => {
                let start = Start {
                    max_concurrent: max,
                    named: format!("{} ({max})", input.name()),
                    limit: key("limit").to_string(),
                };
                let (min_limit, max_limit) = bounds(&start, algorithm, min_input, bound_input)?;
                tool = tool.with_max_concurrent(max).with_limit(
                    algorithm,
                    min_limit.unwrap_or(1),
                    max_limit,
                );
            }
            _ => {
                let adaptive = algorithm_input.filter(|_| algorithm.is_adaptive());
                if let Some(input) = adaptive.or(min_input).or(bound_input) {
                    bail!(
                        "invalid {input}: needs {} (the limit starts there); set it, or \
                         --tool-limit {}=N",
                        key("max_concurrent"),
                        shell_word(name),
                    );
                }
            }
        }
        tools.insert(name.to_owned(), tool);
    }
    Ok(tools)
}

/// `NAME=VALUE` flags by tool name (each tool once).
fn flags<'a>(
    flag: &'static str,
    value: &str,
    given: &'a [String],
) -> anyhow::Result<BTreeMap<&'a str, Input<'a>>> {
    let mut by_name = BTreeMap::new();
    for arg in given {
        let written = format!("{flag} {}", shell_word(arg));
        let Some((name, number)) = arg.rsplit_once('=') else {
            bail!("invalid {written}: expected NAME={value} (e.g. report=2)");
        };
        check_name(name, &written)?;
        let input = Input::Flag {
            flag: FlagName::Is(flag),
            arg,
            text: number,
        };
        if by_name.insert(name, input).is_some() {
            bail!("invalid {written}: the tool {name:?} is given twice");
        }
    }
    Ok(by_name)
}

/// A tool name the limiter can key on: not empty, at most
/// [`MAX_NAME_BYTES`] (longer names are refused on the wire), and not `*`,
/// the metrics' name for every other tool. `written` is what the user wrote.
fn check_name(name: &str, written: &str) -> anyhow::Result<()> {
    if name.is_empty() {
        bail!("invalid {written}: a tool name must not be empty");
    }
    if name.len() > MAX_NAME_BYTES {
        bail!(
            "invalid {written}: a tool name is at most {MAX_NAME_BYTES} bytes, got {} bytes",
            name.len()
        );
    }
    if name == "*" {
        bail!(
            "invalid {written}: \"*\" stands for every tool without a limit of its own; \
             use default_tool_limit"
        );
    }
    Ok(())
}
