//! `mcp-backpressure load`: not implemented yet (issue: benchmarks).

use std::process::ExitCode;

/// Arguments of `mcp-backpressure load`.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {}

pub fn run(_args: LoadArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("the load generator is not implemented yet")
}
