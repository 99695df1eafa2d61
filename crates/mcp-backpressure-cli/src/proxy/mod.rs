//! `mcp-backpressure proxy`: not implemented yet (issue: the proxy).

use std::process::ExitCode;

/// Arguments of `mcp-backpressure proxy`.
#[derive(Debug, clap::Args)]
pub struct ProxyArgs {}

pub fn run(_args: ProxyArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("the proxy is not implemented yet")
}
