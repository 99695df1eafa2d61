//! The command line of `mcp-backpressure load`, checked into a [`Plan`].
//!
//! Every invalid value is an error `invalid --<flag>: <why>, got <value>`;
//! nothing panics. Numeric flags are read as text (negative numbers included)
//! so that this check, not the argument parser, refuses a bad value.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::{Map, Value};

/// Arguments of `mcp-backpressure load`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Streams (--stream, Streamable HTTP only):
  Several streams run side by side in one run, each on its own MCP session
  with its own load, tool, arguments and client identity, and each is reported
  on its own. A stream is NAME[:KEY=VALUE,...] with the keys
    rate=CALLS_PER_S    open loop (default: --rate)
    concurrency=N       closed loop (default: --concurrency)
    tool=NAME           the tool to call (default: --tool)
    args=JSON           its arguments, a JSON object, commas allowed (default: --args)
    client=ID           sent as the header --client-header on every request of
                        the stream's session (default: NAME)
    count=N             stop the stream after N calls (default: --count)
  NAME is letters, digits, `_`, `-` and `.`. --duration, --call-timeout,
  --drain-timeout and --http-max-requests apply to every stream. The report
  (table, or --json: {\"streams\": [...]}) gives each stream's offered rate,
  goodput, success rate, rejections by `data.reason` and by `data.scope`, and
  latency percentiles.

Examples:
  # open loop: 1000 calls/s for 10 s against a stdio server (its command after --)
  mcp-backpressure load --tool sleep --args '{\"ms\": 50}' --rate 1000 --duration 10 \\
      -- ./target/release/examples/simple_server --max-concurrent 5 --queue-size 50
  # closed loop: 16 callers back to back against a Streamable HTTP server
  mcp-backpressure load --url http://127.0.0.1:8000/mcp --tool echo \\
      --args '{\"message\": \"hi\"}' --concurrency 16 --duration 5 --json
  # a greedy and a polite client side by side, told apart by the x-client-id header
  mcp-backpressure load --url http://127.0.0.1:9000/mcp --duration 20 \\
      --stream 'greedy:rate=500,tool=sleep,args={\"ms\":100}' \\
      --stream 'polite:rate=5,tool=sleep,args={\"ms\":100}'")]
pub struct LoadArgs {
    /// The Streamable HTTP endpoint of the server (instead of a stdio
    /// command). Repeat it to spread the calls over several endpoints (e.g.
    /// the replicas of a shared limit): each stream opens one session per URL
    /// and sends its calls to them in turn (round-robin).
    #[arg(long, value_name = "URL", conflicts_with = "command")]
    pub url: Vec<String>,
    /// The stdio server's command and its arguments, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
    /// The tool to call (with --stream: the default of the streams' `tool=`).
    #[arg(long, value_name = "NAME")]
    pub tool: Option<String>,
    /// The tool's arguments, a JSON object (with --stream: the default of `args=`).
    #[arg(long = "args", value_name = "JSON", default_value = "{}")]
    pub arguments: String,
    /// Open loop: start this many calls per second, whatever the answers
    /// (0.001 to 1000000; with --stream: the default of `rate=`).
    #[arg(
        long,
        value_name = "CALLS_PER_S",
        conflicts_with = "concurrency",
        allow_negative_numbers = true
    )]
    pub rate: Option<String>,
    /// Closed loop: this many callers, each sending its next call when the last
    /// is answered (1 to 1000000; with --stream: the default of `concurrency=`).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub concurrency: Option<String>,
    /// One stream of calls on its own MCP session, `NAME[:KEY=VALUE,...]` (see
    /// below); repeat for streams side by side. Streamable HTTP only.
    #[arg(long = "stream", value_name = "SPEC")]
    pub streams: Vec<String>,
    /// The HTTP header carrying each stream's `client=` identity, on every
    /// request of its session [default: x-client-id]. Only with --stream.
    #[arg(long, value_name = "NAME")]
    pub client_header: Option<String>,
    /// How long to send calls, in seconds (> 0).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value = "10",
        allow_negative_numbers = true
    )]
    pub duration: String,
    /// Stop after this many calls (>= 1; whichever of --duration and --count
    /// comes first; with --stream: the default of each stream's `count=`).
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
    /// How many HTTP requests the client keeps in flight at once, per session
    /// (>= 1; Streamable HTTP only).
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
    /// Streamable HTTP endpoints (one or more: calls go to each in turn).
    Http {
        urls: Vec<String>,
        max_requests: usize,
    },
}

/// How calls arrive.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// A fixed rate, independent of the answers.
    Open { rate: f64 },
    /// A fixed number of callers.
    Closed { concurrency: usize },
}

/// One stream of calls: one session, one tool, one load.
#[derive(Clone, Debug)]
pub struct Stream {
    /// The stream's name (`--stream NAME:…`); `None` for the single stream of
    /// a run without --stream.
    pub name: Option<String>,
    /// The client identity header sent on the stream's session.
    pub client: Option<(HeaderName, HeaderValue)>,
    pub tool: String,
    pub arguments: Map<String, Value>,
    pub mode: Mode,
    pub count: Option<u64>,
}

impl Stream {
    /// The client identity, as text.
    pub fn client_id(&self) -> Option<String> {
        self.client
            .as_ref()
            .map(|(_, value)| String::from_utf8_lossy(value.as_bytes()).into_owned())
    }
}

/// A checked run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub target: Target,
    /// One stream without --stream; one per --stream otherwise.
    pub streams: Vec<Stream>,
    /// Whether the streams were given with --stream (the report is per stream).
    pub named_streams: bool,
    pub duration: Duration,
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
/// The default of --client-header.
pub const DEFAULT_CLIENT_HEADER: &str = "x-client-id";
/// Headers the MCP client sets itself (or HTTP does): not a client identity.
const RESERVED_HEADERS: &[&str] = &[
    "accept",
    "connection",
    "content-length",
    "content-type",
    "host",
    "last-event-id",
    "mcp-protocol-version",
    "mcp-session-id",
    "transfer-encoding",
];

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

/// A rate in calls per second, `MIN_RATE..=MAX_LOAD`.
fn rate(flag: &str, text: &str) -> anyhow::Result<f64> {
    #[allow(clippy::cast_precision_loss)]
    match text.parse::<f64>() {
        Ok(rate) if (MIN_RATE..=MAX_LOAD as f64).contains(&rate) => Ok(rate),
        _ => bail!(
            "invalid {flag}: must be a number of calls per second from {MIN_RATE} to {MAX_LOAD}, \
             got {}",
            shown(text)
        ),
    }
}

/// Tool arguments: a JSON object.
fn json_object(flag: &str, text: &str) -> anyhow::Result<Map<String, Value>> {
    match serde_json::from_str::<Value>(text)
        .with_context(|| format!("invalid {flag}: not JSON: {text}"))?
    {
        Value::Object(map) => Ok(map),
        other => bail!("invalid {flag}: must be a JSON object, got {other}"),
    }
}

/// The load of a stream: a rate or a number of callers, not both.
fn mode(
    rate_flag: &str,
    rate_text: Option<&str>,
    concurrency_flag: &str,
    concurrency_text: Option<&str>,
) -> anyhow::Result<Option<Mode>> {
    Ok(match (rate_text, concurrency_text) {
        (Some(text), None) => Some(Mode::Open {
            rate: rate(rate_flag, text)?,
        }),
        (None, Some(text)) => Some(Mode::Closed {
            concurrency: usize::try_from(whole(concurrency_flag, text, 1, MAX_LOAD)?)?,
        }),
        (None, None) => None,
        (Some(_), Some(_)) => {
            bail!("give either {rate_flag} or {concurrency_flag}, not both")
        }
    })
}

/// One `--stream` as given: its name and its `KEY=VALUE` settings (none
/// checked yet but the syntax).
#[derive(Debug, Default, PartialEq)]
struct StreamSpec {
    name: String,
    settings: Vec<(String, String)>,
}

/// The keys a `--stream` takes.
const STREAM_KEYS: &[&str] = &["rate", "concurrency", "tool", "args", "client", "count"];

impl StreamSpec {
    /// `NAME[:KEY=VALUE,...]`; the value of `args` is a JSON value (commas
    /// inside it are its own), every other value runs to the next comma.
    fn parse(text: &str) -> anyhow::Result<Self> {
        let invalid = |why: String| anyhow::anyhow!("invalid --stream: {why}, got {text:?}");
        let (name, mut rest) = text.split_once(':').unwrap_or((text, ""));
        let name = name.trim();
        if name.is_empty() {
            return Err(invalid(
                "the stream has no NAME (NAME[:KEY=VALUE,...])".into(),
            ));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(invalid(format!(
                "the name {name:?} may hold only letters, digits, `_`, `-` and `.`"
            )));
        }
        let mut settings: Vec<(String, String)> = Vec::new();
        while !rest.trim().is_empty() {
            let Some((key, after)) = rest.split_once('=') else {
                return Err(invalid(format!(
                    "expected KEY=VALUE, got {:?}",
                    rest.trim()
                )));
            };
            let key = key.trim();
            if !STREAM_KEYS.contains(&key) {
                return Err(invalid(format!(
                    "unknown key {key:?} (the keys: {})",
                    STREAM_KEYS.join(", ")
                )));
            }
            if settings.iter().any(|(k, _)| k == key) {
                return Err(invalid(format!("{key} is given twice")));
            }
            let (value, next) = if key == "args" {
                let mut values = serde_json::Deserializer::from_str(after).into_iter::<Value>();
                if let Some(Err(e)) = values.next() {
                    return Err(invalid(format!("args is not JSON ({e})")));
                }
                let end = values.byte_offset();
                let next = after[end..].trim_start();
                if !(next.is_empty() || next.starts_with(',')) {
                    return Err(invalid(format!(
                        "expected `,` after the args' JSON, got {next:?}"
                    )));
                }
                (after[..end].trim(), next)
            } else {
                match after.find(',') {
                    Some(comma) => (after[..comma].trim(), &after[comma..]),
                    None => (after.trim(), ""),
                }
            };
            settings.push((key.to_owned(), value.to_owned()));
            rest = next.strip_prefix(',').unwrap_or(next);
        }
        Ok(Self {
            name: name.to_owned(),
            settings,
        })
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// `--client-header`: a header name that is not one the client sets itself.
fn client_header(text: Option<&str>) -> anyhow::Result<HeaderName> {
    let text = text.unwrap_or(DEFAULT_CLIENT_HEADER);
    let name = HeaderName::from_bytes(text.trim().as_bytes()).map_err(|_| {
        anyhow::anyhow!("invalid --client-header: not an HTTP header name, got {text:?}")
    })?;
    if RESERVED_HEADERS.contains(&name.as_str()) {
        bail!(
            "invalid --client-header: {} is set by the MCP client or HTTP itself, got {text:?}",
            name.as_str()
        );
    }
    Ok(name)
}

/// The defaults a stream falls back on: the single-stream flags.
struct Defaults<'a> {
    tool: Option<&'a str>,
    arguments: &'a Map<String, Value>,
    mode: Option<Mode>,
    count: Option<u64>,
}

impl Defaults<'_> {
    /// The checked stream; errors name the stream and its key.
    fn stream(&self, spec: &StreamSpec, header: &HeaderName) -> anyhow::Result<Stream> {
        let name = &spec.name;
        // As written: the stream's name and the setting's `key=value`.
        let flag = |key: &str| {
            format!(
                "--stream {name}:{key}={}",
                spec.get(key).unwrap_or_default()
            )
        };
        let tool = match spec.get("tool").or(self.tool) {
            Some(tool) if !tool.trim().is_empty() => tool.to_owned(),
            Some(_) if spec.get("tool").is_some() => {
                bail!("invalid {}: the tool name is empty", flag("tool"))
            }
            Some(tool) => bail!("invalid --tool {tool:?}: the tool name is empty"),
            None => bail!("invalid --stream {name}: no tool: give tool=NAME, or --tool"),
        };
        let arguments = match spec.get("args") {
            Some(text) => json_object(&flag("args"), text)?,
            None => self.arguments.clone(),
        };
        let mode = mode(
            &flag("rate"),
            spec.get("rate"),
            &flag("concurrency"),
            spec.get("concurrency"),
        )?
        .or(self.mode)
        .with_context(|| {
            format!(
                "invalid --stream {name}: no load: give rate=CALLS_PER_S or concurrency=N, \
                 or --rate or --concurrency"
            )
        })?;
        let count = match spec.get("count") {
            Some(text) => Some(whole(&flag("count"), text, 1, u64::MAX)?),
            None => self.count,
        };
        let client = spec.get("client").unwrap_or(name);
        let visible = !client.is_empty() && client.bytes().all(|b| matches!(b, b' '..=b'~'));
        let value = HeaderValue::from_str(client)
            .ok()
            .filter(|_| visible)
            .with_context(|| {
                format!(
                    "invalid {}: must be a non-empty HTTP header value (visible ASCII), \
                     got {client:?}",
                    flag("client")
                )
            })?;
        Ok(Stream {
            name: Some(name.clone()),
            client: Some((header.clone(), value)),
            tool,
            arguments,
            mode,
            count,
        })
    }
}

impl LoadArgs {
    /// Checks every flag; the error names the first one that is wrong.
    pub fn plan(self) -> anyhow::Result<Plan> {
        let target = match (&self.url[..], self.command.split_first()) {
            ([_, ..], Some(_)) => bail!("give either --url or a command after --, not both"),
            ([], None) => {
                bail!("no server: give --url <URL> (Streamable HTTP) or a stdio command after --")
            }
            ([_, ..], None) => {
                for url in &self.url {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        bail!("invalid --url: expected http://… or https://…, got {url:?}");
                    }
                }
                let max_requests = whole(
                    "--http-max-requests",
                    &self.http_max_requests,
                    1,
                    usize::MAX as u64,
                )?;
                Target::Http {
                    urls: self.url.clone(),
                    max_requests: usize::try_from(max_requests)?,
                }
            }
            ([], Some((program, args))) => Target::Stdio {
                program: program.clone(),
                args: args.to_vec(),
                log: self.server_log,
            },
        };
        if self.tool.as_deref().is_some_and(|t| t.trim().is_empty()) {
            bail!("invalid --tool: the tool name is empty");
        }
        let arguments = json_object("--args", &self.arguments)?;
        let load = mode(
            "--rate",
            self.rate.as_deref(),
            "--concurrency",
            self.concurrency.as_deref(),
        )?;
        let count = self
            .count
            .map(|text| whole("--count", &text, 1, u64::MAX))
            .transpose()?;
        let named_streams = !self.streams.is_empty();
        let streams = if named_streams {
            if matches!(target, Target::Stdio { .. }) {
                bail!(
                    "--stream needs a Streamable HTTP server (--url): each stream is its own \
                     MCP session with its own client identity, and a stdio server has exactly \
                     one session (a second child process would be a second server, with its \
                     own limits)"
                );
            }
            let header = client_header(self.client_header.as_deref())?;
            let defaults = Defaults {
                tool: self.tool.as_deref(),
                arguments: &arguments,
                mode: load,
                count,
            };
            let mut names = BTreeSet::new();
            let mut streams = Vec::with_capacity(self.streams.len());
            for text in &self.streams {
                let spec = StreamSpec::parse(text)?;
                if !names.insert(spec.name.clone()) {
                    bail!(
                        "invalid --stream: two streams are named {:?}; names must differ",
                        spec.name
                    );
                }
                streams.push(defaults.stream(&spec, &header)?);
            }
            streams
        } else {
            if self.client_header.is_some() {
                bail!("--client-header is for --stream runs: each stream sends its client=");
            }
            let Some(tool) = self.tool else {
                bail!("no tool: give --tool <NAME> (or streams with --stream)");
            };
            let Some(mode) = load else {
                bail!(
                    "no load: give --rate <CALLS_PER_S> (open loop) or --concurrency <N> (closed loop)"
                );
            };
            vec![Stream {
                name: None,
                client: None,
                tool,
                arguments,
                mode,
                count,
            }]
        };
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
            streams,
            named_streams,
            duration: seconds("--duration", &self.duration)?,
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
        assert!(matches!(plan.streams[0].mode, Mode::Open { rate } if rate == 100.0));
        assert!(
            matches!(plan.target, Target::Stdio { ref program, ref args, .. } if program == "srv" && args == &["-v"])
        );
        assert_eq!(plan.streams[0].arguments["message"], "x");
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
        assert!(matches!(
            plan.streams[0].mode,
            Mode::Closed { concurrency: 2 }
        ));
        assert_eq!(plan.streams[0].count, None);
    }

    const URL: [&str; 2] = ["--url", "http://127.0.0.1:1/mcp"];

    fn streams(extra: &[&str]) -> anyhow::Result<Plan> {
        let mut argv = URL.to_vec();
        argv.extend_from_slice(extra);
        plan(&argv)
    }

    #[test]
    fn a_stream_spec_is_a_name_and_settings() {
        let spec =
            StreamSpec::parse(r#"greedy:rate=500,tool=db,args={"ms":20,"x":[1,2]},client=g-1"#)
                .expect("valid");
        assert_eq!(spec.name, "greedy");
        assert_eq!(spec.get("rate"), Some("500"));
        assert_eq!(spec.get("tool"), Some("db"));
        assert_eq!(spec.get("args"), Some(r#"{"ms":20,"x":[1,2]}"#));
        assert_eq!(spec.get("client"), Some("g-1"));
        // Spaces around the parts, args last, a bare name.
        let spec = StreamSpec::parse(r#" a : rate = 5 , args = {"ms": 1} "#).expect("valid");
        assert_eq!((spec.name.as_str(), spec.get("rate")), ("a", Some("5")));
        assert_eq!(spec.get("args"), Some(r#"{"ms": 1}"#));
        assert_eq!(StreamSpec::parse("b").expect("valid").settings, vec![]);
        for (text, why) in [
            (":rate=1", "no NAME"),
            ("a b:rate=1", "may hold only"),
            ("a:rate", "expected KEY=VALUE"),
            ("a:speed=1", "unknown key \"speed\""),
            ("a:rate=1,rate=2", "rate is given twice"),
            ("a:args={", "args is not JSON"),
            (r#"a:args={"ms":1}x"#, "expected `,` after"),
        ] {
            let message = format!("{:#}", StreamSpec::parse(text).expect_err(text));
            assert!(
                message.starts_with("invalid --stream: ") && message.contains(why),
                "{text}: {message}"
            );
        }
    }

    #[test]
    fn streams_take_their_settings_or_the_flags() {
        let plan = streams(&[
            "--tool",
            "sleep",
            "--args",
            r#"{"ms":100}"#,
            "--rate",
            "7",
            "--count",
            "3",
            "--stream",
            r#"greedy:rate=500,tool=db,args={"ms":20},client=G,count=9"#,
            "--stream",
            "polite",
            "--stream",
            "closed:concurrency=4",
        ])
        .expect("valid");
        assert!(plan.named_streams);
        let [greedy, polite, closed] = &plan.streams[..] else {
            panic!("three streams: {:?}", plan.streams)
        };
        assert_eq!(greedy.name.as_deref(), Some("greedy"));
        assert_eq!((greedy.tool.as_str(), greedy.count), ("db", Some(9)));
        assert_eq!(greedy.arguments["ms"], 20);
        assert!(matches!(greedy.mode, Mode::Open { rate } if rate == 500.0));
        assert_eq!(greedy.client_id().as_deref(), Some("G"));
        assert_eq!(greedy.client.as_ref().unwrap().0.as_str(), "x-client-id");
        assert_eq!((polite.tool.as_str(), polite.count), ("sleep", Some(3)));
        assert_eq!(polite.arguments["ms"], 100);
        assert!(matches!(polite.mode, Mode::Open { rate } if rate == 7.0));
        assert_eq!(polite.client_id().as_deref(), Some("polite"));
        assert!(matches!(closed.mode, Mode::Closed { concurrency: 4 }));

        let plan = streams(&["--client-header", "X-Tenant", "--stream", "a:rate=1,tool=t"])
            .expect("valid");
        assert_eq!(
            plan.streams[0].client.as_ref().unwrap().0.as_str(),
            "x-tenant"
        );
        // Without --stream: one unnamed stream, no client header.
        let plan = streams(&["--tool", "t", "--rate", "1"]).expect("valid");
        assert!(!plan.named_streams);
        assert!(plan.streams[0].name.is_none() && plan.streams[0].client.is_none());
    }

    #[test]
    fn bad_streams_are_refused_by_name() {
        let stdio = error(&["--stream", "a:rate=1,tool=t", "--", "srv"]);
        assert!(
            stdio.contains("--stream needs a Streamable HTTP server (--url)"),
            "{stdio}"
        );
        for (argv, expected) in [
            (
                vec!["--stream", "a:rate=0,tool=t"],
                "invalid --stream a:rate=0: must be a number of calls per second",
            ),
            (
                vec!["--stream", "a:concurrency=0,tool=t"],
                "invalid --stream a:concurrency=0: must be at least 1, got 0",
            ),
            (
                vec!["--stream", "a:rate=1,concurrency=2,tool=t"],
                "give either --stream a:rate=1 or --stream a:concurrency=2, not both",
            ),
            (vec!["--stream", "a:rate=1"], "invalid --stream a: no tool"),
            (vec!["--stream", "a:tool=t"], "invalid --stream a: no load"),
            (
                vec!["--stream", "a:rate=1,tool=t,args=[1]"],
                "invalid --stream a:args=[1]: must be a JSON object",
            ),
            (
                vec!["--stream", "a:rate=1,tool=t,count=0"],
                "invalid --stream a:count=0: must be at least 1",
            ),
            (
                vec!["--stream", "a:rate=1,tool=t,client=é"],
                "invalid --stream a:client=é: must be a non-empty HTTP header value",
            ),
            (
                vec!["--stream", "a:rate=1,tool=t", "--stream", "a:rate=2,tool=t"],
                "invalid --stream: two streams are named \"a\"",
            ),
            (
                vec!["--client-header", "accept", "--stream", "a:rate=1,tool=t"],
                "invalid --client-header: accept is set by the MCP client",
            ),
            (
                vec!["--client-header", "a b", "--stream", "a:rate=1,tool=t"],
                "invalid --client-header: not an HTTP header name",
            ),
            (
                vec!["--client-header", "x-id", "--tool", "t", "--rate", "1"],
                "--client-header is for --stream runs",
            ),
        ] {
            let message = format!("{:#}", streams(&argv).expect_err("invalid"));
            assert!(message.starts_with(expected), "{argv:?}: {message}");
        }
    }
}
