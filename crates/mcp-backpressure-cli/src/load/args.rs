//! The command line of `mcp-backpressure load`, checked into a [`Plan`].
//!
//! Every invalid value is an error that names its flag; nothing panics.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Map, Value};

/// Arguments of `mcp-backpressure load`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  # open loop: 1000 calls/s for 10 s against a stdio server (its command after --)
  mcp-backpressure load --tool sleep --args '{\"ms\": 50}' --rate 1000 --duration 10 \\
      -- ./target/release/examples/simple_server --max-concurrent 5 --queue-size 50
  # closed loop: 16 callers back to back against a Streamable HTTP server
  mcp-backpressure load --url http://127.0.0.1:8000/mcp --tool echo \\
      --args '{\"message\": \"hi\"}' --concurrency 16 --duration 5 --json")]
pub struct LoadArgs {
    /// The Streamable HTTP endpoint of the server (instead of a stdio command).
    #[arg(long, value_name = "URL", conflicts_with = "command")]
    pub url: Option<String>,
    /// The stdio server's command and its arguments, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
    /// The tool to call.
    #[arg(long, value_name = "NAME")]
    pub tool: String,
    /// The tool's arguments, a JSON object.
    #[arg(long = "args", value_name = "JSON", default_value = "{}")]
    pub arguments: String,
    /// Open loop: start this many calls per second, whatever the answers.
    #[arg(
        long,
        value_name = "CALLS_PER_S",
        conflicts_with = "concurrency",
        allow_negative_numbers = true
    )]
    pub rate: Option<f64>,
    /// Closed loop: this many callers, each sending its next call when the last is answered.
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// How long to send calls, in seconds.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 10.0,
        allow_negative_numbers = true
    )]
    pub duration: f64,
    /// Stop after this many calls (whichever of --duration and --count comes first).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Longest wait for one answer, in seconds; later ones count as `timeout` errors.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 60.0,
        allow_negative_numbers = true
    )]
    pub call_timeout: f64,
    /// After the last call was sent, how long to wait for the answers still due.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 30.0,
        allow_negative_numbers = true
    )]
    pub drain_timeout: f64,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The process id of an HTTP server, to report its peak RSS (stdio servers are our child).
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Where the stdio server's stderr goes (default: discarded).
    #[arg(long, value_name = "FILE")]
    pub server_log: Option<PathBuf>,
    /// How many HTTP requests the client keeps in flight at once (Streamable HTTP only).
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub http_max_requests: usize,
    /// Never draw the progress bar (it is drawn only when stderr is a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

/// Where the server is.
#[derive(Clone, Debug)]
pub enum Target {
    /// A child process speaking MCP over its stdin/stdout.
    Stdio {
        program: String,
        args: Vec<String>,
        log: Option<PathBuf>,
    },
    /// A Streamable HTTP endpoint.
    Http { url: String, max_requests: usize },
}

/// How calls arrive.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// A fixed rate, independent of the answers.
    Open { rate: f64 },
    /// A fixed number of callers.
    Closed { concurrency: usize },
}

/// A checked run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub target: Target,
    pub tool: String,
    pub arguments: Map<String, Value>,
    pub mode: Mode,
    pub duration: Duration,
    pub count: Option<u64>,
    pub call_timeout: Duration,
    pub drain_timeout: Duration,
    pub json: bool,
    pub server_pid: Option<u32>,
    pub progress: bool,
}

fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    if !(value.is_finite() && value > 0.0) {
        bail!("invalid {flag}: must be a positive number of seconds, got {value}");
    }
    Duration::try_from_secs_f64(value)
        .map_err(|_| anyhow::anyhow!("invalid {flag}: {value} seconds is out of range"))
}

impl LoadArgs {
    /// Checks every flag; the error names the first one that is wrong.
    pub fn plan(self) -> anyhow::Result<Plan> {
        let target = match (self.url, self.command.split_first()) {
            (Some(_), Some(_)) => bail!("give either --url or a command after --, not both"),
            (None, None) => {
                bail!("no server: give --url <URL> (Streamable HTTP) or a stdio command after --")
            }
            (Some(url), None) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    bail!("invalid --url: expected http://… or https://…, got {url:?}");
                }
                if self.http_max_requests == 0 {
                    bail!("invalid --http-max-requests: must be at least 1");
                }
                Target::Http {
                    url,
                    max_requests: self.http_max_requests,
                }
            }
            (None, Some((program, args))) => Target::Stdio {
                program: program.clone(),
                args: args.to_vec(),
                log: self.server_log,
            },
        };
        if self.tool.trim().is_empty() {
            bail!("invalid --tool: the tool name is empty");
        }
        let arguments = match serde_json::from_str::<Value>(&self.arguments)
            .with_context(|| format!("invalid --args: not JSON: {}", self.arguments))?
        {
            Value::Object(map) => map,
            other => bail!("invalid --args: must be a JSON object, got {other}"),
        };
        let mode = match (self.rate, self.concurrency) {
            (Some(rate), None) => {
                if !(rate.is_finite() && rate > 0.0 && rate <= 1_000_000.0) {
                    bail!(
                        "invalid --rate: must be between 0 and 1000000 calls per second, got {rate}"
                    );
                }
                Mode::Open { rate }
            }
            (None, Some(0)) => bail!("invalid --concurrency: must be at least 1"),
            (None, Some(concurrency)) => Mode::Closed { concurrency },
            (None, None) => {
                bail!(
                    "no load: give --rate <CALLS_PER_S> (open loop) or --concurrency <N> (closed loop)"
                )
            }
            (Some(_), Some(_)) => bail!("give either --rate or --concurrency, not both"),
        };
        if self.count == Some(0) {
            bail!("invalid --count: must be at least 1");
        }
        if self.server_pid.is_some() && matches!(target, Target::Stdio { .. }) {
            bail!(
                "--server-pid is for --url servers: a stdio server is our child, its pid is known"
            );
        }
        if let Some(pid) = self.server_pid
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            bail!("invalid --server-pid: no process {pid}");
        }
        Ok(Plan {
            target,
            tool: self.tool,
            arguments,
            mode,
            duration: seconds("--duration", self.duration)?,
            count: self.count,
            call_timeout: seconds("--call-timeout", self.call_timeout)?,
            drain_timeout: seconds("--drain-timeout", self.drain_timeout)?,
            json: self.json,
            server_pid: self.server_pid,
            progress: !self.no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: LoadArgs,
    }

    fn plan(argv: &[&str]) -> anyhow::Result<Plan> {
        let cli = Cli::try_parse_from(std::iter::once("load").chain(argv.iter().copied()))?;
        cli.args.plan()
    }

    fn error(argv: &[&str]) -> String {
        format!("{:#}", plan(argv).expect_err("invalid"))
    }

    #[test]
    fn a_stdio_open_loop_plan() {
        let plan = plan(&[
            "--tool",
            "echo",
            "--args",
            r#"{"message":"x"}"#,
            "--rate",
            "100",
            "--",
            "srv",
            "-v",
        ])
        .expect("valid");
        assert!(matches!(plan.mode, Mode::Open { rate } if rate == 100.0));
        assert!(
            matches!(plan.target, Target::Stdio { ref program, ref args, .. } if program == "srv" && args == &["-v"])
        );
        assert_eq!(plan.arguments["message"], "x");
    }

    #[test]
    fn every_bad_flag_is_named() {
        let srv = ["--", "srv"];
        let with = |extra: &[&str]| -> Vec<String> {
            extra
                .iter()
                .chain(srv.iter())
                .map(|s| s.to_string())
                .collect()
        };
        for (argv, flag) in [
            (with(&["--tool", "t", "--rate", "0"]), "--rate"),
            (with(&["--tool", "t", "--rate", "NaN"]), "--rate"),
            (
                with(&["--tool", "t", "--concurrency", "0"]),
                "--concurrency",
            ),
            (
                with(&["--tool", "t", "--rate", "1", "--args", "[1]"]),
                "--args",
            ),
            (
                with(&["--tool", "t", "--rate", "1", "--args", "{"]),
                "--args",
            ),
            (
                with(&["--tool", "t", "--rate", "1", "--duration", "-1"]),
                "--duration",
            ),
            (
                with(&["--tool", "t", "--rate", "1", "--count", "0"]),
                "--count",
            ),
            (
                with(&["--tool", "t", "--rate", "1", "--call-timeout", "0"]),
                "--call-timeout",
            ),
            (with(&["--tool", "", "--rate", "1"]), "--tool"),
            (with(&["--tool", "t"]), "--rate"),
        ] {
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            let message = error(&argv);
            assert!(message.contains(flag), "{argv:?}: {message}");
        }
        assert!(error(&["--tool", "t", "--rate", "1"]).contains("--url"));
        assert!(error(&["--tool", "t", "--rate", "1", "--url", "ftp://x"]).contains("--url"));
    }
}
