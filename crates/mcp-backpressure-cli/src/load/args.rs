//! The command line of `mcp-backpressure load`, checked into a [`Plan`].
//!
//! Every invalid value is an error `invalid --<flag>: <why>, got <value>`;
//! nothing panics. Numeric flags are read as text (negative numbers included)
//! so that this check, not the argument parser, refuses a bad value.

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
    /// Open loop: start this many calls per second, whatever the answers
    /// (0.001 to 1000000).
    #[arg(
        long,
        value_name = "CALLS_PER_S",
        conflicts_with = "concurrency",
        allow_negative_numbers = true
    )]
    pub rate: Option<String>,
    /// Closed loop: this many callers, each sending its next call when the last
    /// is answered (1 to 1000000).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub concurrency: Option<String>,
    /// How long to send calls, in seconds (> 0).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value = "10",
        allow_negative_numbers = true
    )]
    pub duration: String,
    /// Stop after this many calls (>= 1; whichever of --duration and --count comes first).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub count: Option<String>,
    /// Longest wait for one answer, in seconds (> 0); later ones count as `timeout` errors.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value = "60",
        allow_negative_numbers = true
    )]
    pub call_timeout: String,
    /// After the last call was sent, how long to wait for the answers still due,
    /// in seconds (> 0).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value = "30",
        allow_negative_numbers = true
    )]
    pub drain_timeout: String,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The process id of an HTTP server, to report its peak RSS (stdio servers are our child).
    #[arg(long, value_name = "PID", allow_negative_numbers = true)]
    pub server_pid: Option<String>,
    /// Where the stdio server's stderr goes (default: discarded).
    #[arg(long, value_name = "FILE")]
    pub server_log: Option<PathBuf>,
    /// How many HTTP requests the client keeps in flight at once (>= 1; Streamable HTTP only).
    #[arg(
        long,
        value_name = "N",
        default_value = "4096",
        allow_negative_numbers = true
    )]
    pub http_max_requests: String,
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

/// The longest duration a flag accepts: 365 days, in seconds. Longer ones are
/// mistakes, and much longer ones overflow a `Duration` or an `Instant`.
const MAX_SECONDS: u64 = 365 * 24 * 3600;
/// The most calls per second, and the most callers.
const MAX_LOAD: u64 = 1_000_000;
/// The fewest calls per second: one every 1000 s.
const MIN_RATE: f64 = 0.001;

/// `text` for an error's `got ...`: a number as is, anything else quoted (so
/// that an empty value shows as `""`).
fn shown(text: &str) -> String {
    if text.parse::<f64>().is_ok() || text.parse::<i128>().is_ok() {
        text.to_owned()
    } else {
        format!("{text:?}")
    }
}

/// A whole number in `min..=max`.
fn whole(flag: &str, text: &str, min: u64, max: u64) -> anyhow::Result<u64> {
    let why = match text.parse::<i128>() {
        Ok(n) => match u64::try_from(n) {
            Ok(n) if (min..=max).contains(&n) => return Ok(n),
            Ok(n) if n > max => format!("must be at most {max}"),
            Err(_) if n > 0 => format!("must be at most {max}"),
            _ => format!("must be at least {min}"),
        },
        Err(e) => match e.kind() {
            std::num::IntErrorKind::PosOverflow => format!("must be at most {max}"),
            std::num::IntErrorKind::NegOverflow => format!("must be at least {min}"),
            _ => "must be a whole number".to_owned(),
        },
    };
    bail!("invalid {flag}: {why}, got {}", shown(text))
}

/// A duration in seconds (fractions allowed), greater than zero.
fn seconds(flag: &str, text: &str) -> anyhow::Result<Duration> {
    let why = match text.parse::<f64>() {
        Err(_) => "must be a number of seconds".to_owned(),
        Ok(value) if value.is_nan() => "must be a number of seconds".to_owned(),
        Ok(value) if value <= 0.0 => "must be greater than 0".to_owned(),
        #[allow(clippy::cast_precision_loss)]
        Ok(value) if value > MAX_SECONDS as f64 => {
            format!("must be at most {MAX_SECONDS} seconds (365 days)")
        }
        Ok(value) => match Duration::try_from_secs_f64(value) {
            Ok(duration) if duration.is_zero() => "must be at least 1 nanosecond".to_owned(),
            Ok(duration) => return Ok(duration),
            Err(e) => e.to_string(),
        },
    };
    bail!("invalid {flag}: {why}, got {}", shown(text))
}

/// `--rate`: calls per second in `MIN_RATE..=MAX_LOAD`.
fn rate(text: &str) -> anyhow::Result<f64> {
    #[allow(clippy::cast_precision_loss)]
    match text.parse::<f64>() {
        Ok(rate) if (MIN_RATE..=MAX_LOAD as f64).contains(&rate) => Ok(rate),
        _ => bail!(
            "invalid --rate: must be a number of calls per second from {MIN_RATE} to {MAX_LOAD}, \
             got {}",
            shown(text)
        ),
    }
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
                let max_requests = whole(
                    "--http-max-requests",
                    &self.http_max_requests,
                    1,
                    usize::MAX as u64,
                )?;
                Target::Http {
                    url,
                    max_requests: usize::try_from(max_requests)?,
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
            (Some(text), None) => Mode::Open { rate: rate(&text)? },
            (None, Some(text)) => Mode::Closed {
                concurrency: usize::try_from(whole("--concurrency", &text, 1, MAX_LOAD)?)?,
            },
            (None, None) => {
                bail!(
                    "no load: give --rate <CALLS_PER_S> (open loop) or --concurrency <N> (closed loop)"
                )
            }
            (Some(_), Some(_)) => bail!("give either --rate or --concurrency, not both"),
        };
        let count = self
            .count
            .map(|text| whole("--count", &text, 1, u64::MAX))
            .transpose()?;
        let server_pid = self
            .server_pid
            .map(|text| whole("--server-pid", &text, 1, u32::MAX.into()))
            .transpose()?;
        if server_pid.is_some() && matches!(target, Target::Stdio { .. }) {
            bail!(
                "--server-pid is for --url servers: a stdio server is our child, its pid is known"
            );
        }
        let server_pid = server_pid.map(u32::try_from).transpose()?;
        if let Some(pid) = server_pid
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            bail!("invalid --server-pid: no process {pid}");
        }
        Ok(Plan {
            target,
            tool: self.tool,
            arguments,
            mode,
            duration: seconds("--duration", &self.duration)?,
            count,
            call_timeout: seconds("--call-timeout", &self.call_timeout)?,
            drain_timeout: seconds("--drain-timeout", &self.drain_timeout)?,
            json: self.json,
            server_pid,
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

    /// Every numeric flag takes a negative or malformed value and refuses it
    /// with `invalid --<flag>: <why>, got <value>`.
    #[test]
    fn every_bad_number_is_refused_with_the_flag_named() {
        let base = ["--tool", "t", "--rate", "1"];
        let at_least_1 = "must be at least 1";
        let whole = "must be a whole number";
        let seconds = "must be a number of seconds";
        let positive = "must be greater than 0";
        let huge = "must be at most 31536000 seconds (365 days)";
        let rate = "must be a number of calls per second from 0.001 to 1000000";
        let mut cases: Vec<(&str, &str, String)> = vec![
            ("--concurrency", "-1", at_least_1.into()),
            ("--concurrency", "0", at_least_1.into()),
            ("--concurrency", "1000001", "must be at most 1000000".into()),
            (
                "--concurrency",
                "99999999999999999999999999999999999999999",
                "must be at most 1000000".into(),
            ),
            ("--concurrency", "1.5", whole.into()),
            ("--concurrency", "", whole.into()),
            ("--concurrency", "NaN", whole.into()),
            ("--count", "-1", at_least_1.into()),
            ("--count", "0", at_least_1.into()),
            (
                "--count",
                "18446744073709551616",
                "must be at most 18446744073709551615".into(),
            ),
            ("--count", "inf", whole.into()),
            ("--server-pid", "-1", at_least_1.into()),
            (
                "--server-pid",
                "4294967296",
                "must be at most 4294967295".into(),
            ),
            ("--server-pid", "x", whole.into()),
        ];
        for flag in ["--duration", "--call-timeout", "--drain-timeout"] {
            for (value, why) in [
                ("-1", positive),
                ("0", positive),
                ("-1e400", positive),
                ("NaN", seconds),
                ("", seconds),
                ("10s", seconds),
                ("inf", huge),
                ("1e400", huge),
                ("1e30", huge),
                ("1e-12", "must be at least 1 nanosecond"),
            ] {
                cases.push((flag, value, why.into()));
            }
        }
        for value in ["-5", "0", "0.0001", "1000001", "NaN", "inf", "1e400", ""] {
            cases.push(("--rate", value, rate.into()));
        }
        for (flag, value, why) in cases {
            let mut argv: Vec<&str> = if matches!(flag, "--concurrency" | "--rate") {
                vec!["--tool", "t"]
            } else {
                base.to_vec()
            };
            argv.extend([flag, value]);
            if flag == "--server-pid" {
                argv.extend(["--url", "http://127.0.0.1:1/mcp"]);
            } else {
                argv.extend(["--", "srv"]);
            }
            let shown = if value.parse::<f64>().is_ok() {
                value.to_owned()
            } else {
                format!("{value:?}")
            };
            assert_eq!(
                error(&argv),
                format!("invalid {flag}: {why}, got {shown}"),
                "{argv:?}"
            );
        }
        let http = [
            "--tool",
            "t",
            "--rate",
            "1",
            "--url",
            "http://127.0.0.1:1/mcp",
            "--http-max-requests",
        ];
        for (value, expected) in [
            ("-1", "must be at least 1, got -1"),
            ("0", "must be at least 1, got 0"),
            ("", "must be a whole number, got \"\""),
        ] {
            let mut argv = http.to_vec();
            argv.push(value);
            assert_eq!(
                error(&argv),
                format!("invalid --http-max-requests: {expected}")
            );
        }
    }

    #[test]
    fn the_defaults_are_valid() {
        let plan = plan(&["--tool", "t", "--concurrency", "2", "--", "srv"]).expect("valid");
        assert_eq!(plan.duration, Duration::from_secs(10));
        assert_eq!(plan.call_timeout, Duration::from_secs(60));
        assert_eq!(plan.drain_timeout, Duration::from_secs(30));
        assert!(matches!(plan.mode, Mode::Closed { concurrency: 2 }));
        assert_eq!(plan.count, None);
    }
}
