//! Latency histograms (HDR, microsecond resolution, 3 significant digits)
//! and the report: a table for people, JSON for scripts.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

use super::call::Outcome;

/// One answered call.
#[derive(Debug)]
pub struct Record {
    pub outcome: Outcome,
    /// When the call was sent.
    pub sent_at: Instant,
    /// How late the call was sent against its schedule (open loop only).
    pub lag: Duration,
    /// Sent to answered.
    pub latency: Duration,
}

/// Where one stream's driver sends its records: a channel shared by every
/// stream, each record tagged with its stream's index.
#[derive(Clone, Debug)]
pub struct Sink {
    stream: usize,
    tx: UnboundedSender<(usize, Record)>,
}

impl Sink {
    pub fn new(stream: usize, tx: UnboundedSender<(usize, Record)>) -> Self {
        Self { stream, tx }
    }

    /// Sends `record`; false once the collector is gone.
    pub fn send(&self, record: Record) -> bool {
        self.tx.send((self.stream, record)).is_ok()
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 1 hour, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, 3_600_000_000)
}

/// Collects records as they arrive.
pub struct Recorder {
    started: Instant,
    ok: Histogram<u64>,
    /// When each success was answered, for goodput within the window.
    ok_answers: Vec<Instant>,
    rejected: BTreeMap<String, Histogram<u64>>,
    /// Rejections by `data.scope`, when the server names it.
    rejected_by_scope: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    error_examples: Vec<String>,
    lag: Histogram<u64>,
    last_answer: Instant,
    pub answered: u64,
}

impl Recorder {
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            ok: histogram(),
            ok_answers: Vec::new(),
            rejected: BTreeMap::new(),
            rejected_by_scope: BTreeMap::new(),
            errors: BTreeMap::new(),
            error_examples: Vec::new(),
            lag: histogram(),
            last_answer: started,
            answered: 0,
        }
    }

    pub fn record(&mut self, record: Record) {
        let answered_at = record.sent_at + record.latency;
        self.last_answer = self.last_answer.max(answered_at);
        self.answered += 1;
        let _ = self.lag.record(micros(record.lag));
        match record.outcome {
            Outcome::Ok => {
                let _ = self.ok.record(micros(record.latency));
                self.ok_answers.push(answered_at);
            }
            Outcome::Rejected { reason, scope } => {
                if let Some(scope) = scope {
                    *self.rejected_by_scope.entry(scope).or_default() += 1;
                }
                let _ = self
                    .rejected
                    .entry(reason)
                    .or_insert_with(histogram)
                    .record(micros(record.latency));
            }
            Outcome::Error { kind, message } => {
                *self.errors.entry(kind.clone()).or_default() += 1;
                if self.error_examples.len() < 3 {
                    self.error_examples.push(format!("{kind}: {message}"));
                }
            }
        }
    }

    pub fn ok(&self) -> u64 {
        self.ok.len()
    }

    pub fn rejected(&self) -> u64 {
        self.rejected.values().map(Histogram::len).sum()
    }

    pub fn errors(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The report; `window_end` closes the sending window (successes
    /// answered after it do not count towards goodput).
    pub fn finish(
        self,
        header: Header,
        sent: u64,
        window_end: Instant,
        server: Option<ServerMemory>,
    ) -> Report {
        let window_s = window_end
            .saturating_duration_since(self.started)
            .as_secs_f64()
            .max(1e-9);
        let ok_in_window = self
            .ok_answers
            .iter()
            .filter(|&&at| at <= window_end)
            .count();
        let wall_s = self
            .last_answer
            .saturating_duration_since(self.started)
            .as_secs_f64()
            .max(window_s);
        let mut all_rejected = histogram();
        for h in self.rejected.values() {
            let _ = all_rejected.add(h);
        }
        let ok = self.ok.len();
        Report {
            header,
            sent,
            answered: self.answered,
            unfinished: sent.saturating_sub(self.answered),
            ok,
            rejected_total: all_rejected.len(),
            rejected: self
                .rejected
                .iter()
                .map(|(r, h)| (r.clone(), h.len()))
                .collect(),
            rejected_by_scope: self.rejected_by_scope,
            errors_total: self.errors.values().sum(),
            errors: self.errors,
            error_examples: self.error_examples,
            window_s,
            wall_s,
            offered_rate: sent as f64 / window_s,
            success_rate: (sent > 0).then(|| ok as f64 / sent as f64),
            goodput: ok_in_window as f64 / window_s,
            ok_per_s: ok as f64 / wall_s,
            latency_ms: Latencies {
                ok: Summary::of(&self.ok),
                rejected: Summary::of(&all_rejected),
                rejected_by_reason: self
                    .rejected
                    .iter()
                    .map(|(r, h)| (r.clone(), Summary::of(h)))
                    .collect(),
            },
            schedule_lag_ms: Summary::of(&self.lag),
            server,
        }
    }
}

/// What was run, echoed in the report.
#[derive(Debug, Serialize)]
pub struct Header {
    /// The stream's name (`--stream NAME:…`), in a run of several streams.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// The client identity the stream sent (`client=`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    pub target: String,
    pub tool: String,
    pub mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    pub duration_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

/// Percentiles of one histogram, in milliseconds.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub count: u64,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
}

impl Summary {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| Some(us as f64 / 1000.0);
        if h.is_empty() {
            return Self {
                count: 0,
                p50: None,
                p90: None,
                p99: None,
                max: None,
                mean: None,
            };
        }
        Self {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
            mean: Some(h.mean() / 1000.0),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Latencies {
    /// Successful calls.
    pub ok: Summary,
    /// Rejections of every reason (time to reject).
    pub rejected: Summary,
    pub rejected_by_reason: BTreeMap<String, Summary>,
}

/// The server's memory, when its pid is known (Linux /proc).
#[derive(Debug, Serialize)]
pub struct ServerMemory {
    pub pid: u32,
    /// VmHWM at the end of the run: the peak resident set.
    pub peak_rss_kb: Option<u64>,
    /// VmRSS sampled during the run.
    pub rss_kb_samples: Vec<u64>,
    pub sample_interval_s: f64,
}

/// The whole report. `--json` prints exactly this.
#[derive(Debug, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub header: Header,
    /// Calls sent.
    pub sent: u64,
    /// Calls answered (ok + rejected + errors).
    pub answered: u64,
    /// Calls still unanswered when the drain timeout ran out.
    pub unfinished: u64,
    pub ok: u64,
    pub rejected_total: u64,
    /// Rejections by `data.reason`.
    pub rejected: BTreeMap<String, u64>,
    /// Rejections by `data.scope` (the limit that turned the call away), for
    /// servers that name it; rejections without a scope are not counted here.
    pub rejected_by_scope: BTreeMap<String, u64>,
    pub errors_total: u64,
    pub errors: BTreeMap<String, u64>,
    pub error_examples: Vec<String>,
    /// The sending window, seconds.
    pub window_s: f64,
    /// First call sent to last answer, seconds.
    pub wall_s: f64,
    /// Calls sent per second of the window.
    pub offered_rate: f64,
    /// Successes among the calls sent (`ok / sent`; none sent: null).
    pub success_rate: Option<f64>,
    /// Successes answered within the window, per second of the window.
    pub goodput: f64,
    /// All successes per second of wall time.
    pub ok_per_s: f64,
    pub latency_ms: Latencies,
    /// How late calls were sent against the open-loop schedule.
    pub schedule_lag_ms: Summary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerMemory>,
}

fn cell(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2}"))
}

fn percent(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{:.1}%", v * 100.0))
}

impl Header {
    /// `open loop, 500 calls/s` or `closed loop, 4 callers`.
    fn load(&self) -> String {
        match (self.rate, self.concurrency) {
            (Some(rate), _) => format!("open loop, {rate} calls/s"),
            (_, Some(n)) => format!("closed loop, {n} callers"),
            _ => String::new(),
        }
    }
}

impl Report {
    /// The human-readable table.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let h = &self.header;
        let mut out = String::new();
        let load = h.load();
        match &h.stream {
            Some(name) => {
                let _ = writeln!(
                    out,
                    "stream {name} (client {}): {load} of `{}`",
                    h.client.as_deref().unwrap_or("-"),
                    h.tool
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "mcp-backpressure load: {} of `{}` against {}",
                    load, h.tool, h.target
                );
            }
        }
        let _ = writeln!(
            out,
            "  sent {} in {:.2} s (offered {:.1}/s), answered {} in {:.2} s, unfinished {}",
            self.sent,
            self.window_s,
            self.offered_rate,
            self.answered,
            self.wall_s,
            self.unfinished
        );
        let _ = writeln!(
            out,
            "  goodput {:.1}/s (successes within the window), ok {:.1}/s overall, \
             success rate {}\n",
            self.goodput,
            self.ok_per_s,
            percent(self.success_rate)
        );
        let _ = writeln!(
            out,
            "  {:<28} {:>8} {:>10} {:>10} {:>10} {:>10}",
            "outcome", "calls", "p50 ms", "p90 ms", "p99 ms", "max ms"
        );
        let _ = writeln!(
            out,
            "  {:-<28} {:->8} {:->10} {:->10} {:->10} {:->10}",
            "", "", "", "", "", ""
        );
        let mut row = |label: &str, s: &Summary| {
            let _ = writeln!(
                out,
                "  {label:<28} {:>8} {:>10} {:>10} {:>10} {:>10}",
                s.count,
                cell(s.p50),
                cell(s.p90),
                cell(s.p99),
                cell(s.max)
            );
        };
        row("ok", &self.latency_ms.ok);
        for (reason, s) in &self.latency_ms.rejected_by_reason {
            row(&format!("rejected: {reason}"), s);
        }
        if self.latency_ms.rejected_by_reason.len() > 1 {
            row("rejected: all", &self.latency_ms.rejected);
        }
        for (scope, n) in &self.rejected_by_scope {
            let _ = writeln!(out, "  {:<28} {n:>8}", format!("rejected in scope {scope}"));
        }
        let _ = writeln!(out, "  {:<28} {:>8}", "other errors", self.errors_total);
        for (kind, n) in &self.errors {
            let _ = writeln!(out, "    {kind:<26} {n:>8}");
        }
        for example in &self.error_examples {
            let _ = writeln!(out, "    e.g. {example}");
        }
        if let Some(s) = &self.schedule_lag_ms.p99.filter(|_| h.rate.is_some()) {
            let _ = writeln!(
                out,
                "\n  schedule lag p99 {s:.2} ms (how late calls left against the open-loop schedule)"
            );
        }
        if let Some(server) = &self.server {
            let fmt_mb = |kb: u64| format!("{:.1} MB", kb as f64 / 1024.0);
            let samples: Vec<String> = server
                .rss_kb_samples
                .iter()
                .map(|kb| format!("{:.1}", *kb as f64 / 1024.0))
                .collect();
            let _ = writeln!(
                out,
                "\n  server pid {}: peak RSS {}; RSS every {:.1} s (MB): {}",
                server.pid,
                server.peak_rss_kb.map_or_else(|| "-".into(), fmt_mb),
                server.sample_interval_s,
                samples.join(" ")
            );
        }
        out
    }
}

/// The report of a run of several streams (--stream). `--json` prints
/// exactly this: every stream's [`Report`] (with its `stream` and `client`),
/// in the order given.
#[derive(Debug, Serialize)]
pub struct StreamsReport {
    pub target: String,
    /// The header that carried each stream's client identity.
    pub client_header: String,
    pub duration_s: f64,
    pub streams: Vec<Report>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerMemory>,
}

impl StreamsReport {
    /// A summary line per stream, then each stream's own table.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "mcp-backpressure load: {} streams against {} for {} s (client header {})\n",
            self.streams.len(),
            self.target,
            self.duration_s,
            self.client_header
        );
        let width = |column: &dyn Fn(&Header) -> &str, title: &str| {
            self.streams
                .iter()
                .map(|r| column(&r.header).chars().count())
                .chain([title.len()])
                .max()
                .unwrap_or(0)
        };
        let (ws, wc, wt) = (
            width(&|h| h.stream.as_deref().unwrap_or("-"), "stream"),
            width(&|h| h.client.as_deref().unwrap_or("-"), "client"),
            width(&|h| &h.tool, "tool"),
        );
        let _ = writeln!(
            out,
            "  {:<ws$} {:<wc$} {:<wt$} {:>10} {:>10} {:>8} {:>9} {:>10} {:>10} {:>11}",
            "stream",
            "client",
            "tool",
            "offered/s",
            "goodput/s",
            "success",
            "rejected",
            "ok p50 ms",
            "ok p99 ms",
            "rej p99 ms"
        );
        let _ = writeln!(
            out,
            "  {:-<ws$} {:-<wc$} {:-<wt$} {:->10} {:->10} {:->8} {:->9} {:->10} {:->10} {:->11}",
            "", "", "", "", "", "", "", "", "", ""
        );
        for r in &self.streams {
            let h = &r.header;
            let _ = writeln!(
                out,
                "  {:<ws$} {:<wc$} {:<wt$} {:>10.1} {:>10.1} {:>8} {:>9} {:>10} {:>10} {:>11}",
                h.stream.as_deref().unwrap_or("-"),
                h.client.as_deref().unwrap_or("-"),
                h.tool,
                r.offered_rate,
                r.goodput,
                percent(r.success_rate),
                r.rejected_total,
                cell(r.latency_ms.ok.p50),
                cell(r.latency_ms.ok.p99),
                cell(r.latency_ms.rejected.p99)
            );
        }
        for r in &self.streams {
            let _ = writeln!(out);
            out.push_str(&r.table());
        }
        if let Some(server) = &self.server {
            let _ = writeln!(
                out,
                "\n  server pid {}: peak RSS {}",
                server.pid,
                server
                    .peak_rss_kb
                    .map_or_else(|| "-".into(), |kb| format!("{:.1} MB", kb as f64 / 1024.0))
            );
        }
        out
    }
}
