//! One JSON-RPC message as the proxy understands it, and the exact bytes it
//! forwards for it.
//!
//! The proxy must never let two parsers disagree: whatever it decided about a
//! message (a `tools/call` to admit, a notification to pass, a response that
//! frees a slot) must be what the peer behind it sees. So:
//!
//! - a message is read strictly: valid UTF-8, valid JSON, a top-level object
//!   (or an array, a batch) with no key twice among `jsonrpc`, `id`, `method`,
//!   `params`, `result`, `error`;
//! - only the top level is *interpreted* (the routing fields); the rest is
//!   checked for syntax, at any depth, without recursion;
//! - what is forwarded is a **re-framing** of the bytes parsed: white space
//!   outside strings removed (so no CR, LF or other separator can stand
//!   between tokens), and the three characters some line readers split on
//!   even inside a string — U+0085, U+2028, U+2029 — written as `\u` escapes.
//!   The value is the same to any JSON parser; the framing is unambiguous to
//!   every line reader (Python's `splitlines`, Node's readline, Go's Scanner).
//!
//! Client messages are held to a few more rules, so that the upstream can
//! parse everything it is sent (a request it cannot parse would never be
//! answered, and its slot would never come back): nesting at most
//! [`MAX_CLIENT_DEPTH`] deep, no lone UTF-16 surrogate in a `\u` escape, no
//! number outside the range of a double. And a request id must be what MCP
//! says it is: a string, or an integer that every SDK represents exactly
//! (|n| <= 2^53 - 1). Ids are compared by value, as the upstream compares them
//! after parsing: `1`, `1.0` and `1e0` are the same id, `"1"` another.

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

/// The deepest nesting accepted from a client: below serde_json's default
/// recursion limit (128, rmcp's parser), and far below Python's and
/// JavaScript's.
pub const MAX_CLIENT_DEPTH: usize = 100;

/// The largest integer id: 2^53 - 1, the largest integer a JavaScript (and
/// so a TypeScript SDK) number holds exactly.
pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// The method of a cancellation.
pub const CANCELLED: &str = "notifications/cancelled";

/// A request id as MCP defines it. Compared, hashed and ordered by value, as
/// the upstream compares ids after parsing (`1`, `1.0` and `1e0` are one id);
/// it also keeps the text its sender wrote, which every answer of the proxy's
/// own carries back byte for byte ([`RequestId::written`]).
#[derive(Clone, Debug)]
pub struct RequestId {
    value: IdValue,
    /// The JSON text as its sender wrote it, when that is not the canonical
    /// form (`1.0`, `1e0`, `-0`, `"\u0041"`).
    written: Option<Arc<str>>,
}

/// The value of a [`RequestId`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdValue {
    /// An integer id, |n| <= [`MAX_SAFE_INTEGER`].
    Int(i64),
    /// A string id (its decoded value).
    Str(Arc<str>),
}

impl PartialEq for RequestId {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl Eq for RequestId {}

impl std::hash::Hash for RequestId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.value.hash(state);
    }
}

impl PartialOrd for RequestId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for RequestId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.value.cmp(&other.value)
    }
}

impl RequestId {
    /// The integer id `n`, written canonically.
    pub fn int(n: i64) -> Self {
        Self {
            value: IdValue::Int(n),
            written: None,
        }
    }

    /// The string id `s`, written canonically.
    pub fn string(s: impl Into<Arc<str>>) -> Self {
        Self {
            value: IdValue::Str(s.into()),
            written: None,
        }
    }

    /// Its value.
    pub fn value(&self) -> &IdValue {
        &self.value
    }

    /// Reads an id from its JSON text. `None` for anything that is not a
    /// string or an integer in range (null, a fraction, an object, 2^53, …).
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        let value = IdValue::parse(raw)?;
        let canonical = match &value {
            // `i64` reads `+1` too, which JSON has not; `-0` is 0.
            IdValue::Int(_) => raw.parse::<i64>().is_ok() && raw != "-0",
            // Every escape is longer than what it stands for.
            IdValue::Str(s) => raw.len() == s.len() + 2,
        };
        Some(Self {
            value,
            written: (!canonical).then(|| Arc::from(raw)),
        })
    }

    /// The id's JSON text as its sender wrote it.
    pub fn written(&self) -> std::borrow::Cow<'_, str> {
        match (&self.written, &self.value) {
            (Some(text), _) => std::borrow::Cow::Borrowed(text),
            (None, IdValue::Int(i)) => std::borrow::Cow::Owned(i.to_string()),
            (None, IdValue::Str(s)) => std::borrow::Cow::Owned(
                serde_json::to_string(&**s).expect("a string always serializes"),
            ),
        }
    }

    /// The id as JSON (its value, written canonically), for the proxy's own
    /// messages to the upstream.
    pub fn to_value(&self) -> Value {
        match &self.value {
            IdValue::Int(i) => Value::from(*i),
            IdValue::Str(s) => Value::from(&**s),
        }
    }
}

impl IdValue {
    fn parse(raw: &str) -> Option<Self> {
        if raw.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) {
            // Numbers from their text, correctly rounded (serde_json's fast
            // float parsing is not), as Python and JavaScript read them.
            serde_json::from_str::<serde_json::Number>(raw).ok()?;
            if let Ok(i) = raw.parse::<i64>() {
                return (i.abs() <= MAX_SAFE_INTEGER).then_some(Self::Int(i));
            }
            let f: f64 = raw.parse().ok()?;
            return Self::from_float(f);
        }
        // Only a JSON string: never through `Value`, which (with serde_json's
        // `raw_value` feature) reads `{"$serde_json::private::RawValue": "5"}`
        // as the number 5 where every peer sees an object.
        if raw.starts_with('"') {
            return serde_json::from_str::<String>(raw)
                .ok()
                .map(|s| Self::Str(Arc::from(s)));
        }
        None
    }

    fn from_float(f: f64) -> Option<Self> {
        // Any |f| <= 2^53 - 1 with no fraction is exact.
        #[allow(clippy::cast_precision_loss)]
        let exact = f.is_finite() && f.fract() == 0.0 && f.abs() <= MAX_SAFE_INTEGER as f64;
        #[allow(clippy::cast_possible_truncation)]
        exact.then_some(Self::Int(f as i64))
    }
}

/// For log lines: a string id is quoted and escaped, and cut after
/// [`LOGGED_ID_CHARS`] characters (a client may send ids of megabytes, and
/// a refusal is logged each time).
impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            IdValue::Int(i) => write!(f, "{i}"),
            IdValue::Str(s) if s.chars().count() > LOGGED_ID_CHARS => {
                let head: String = s.chars().take(LOGGED_ID_CHARS).collect();
                write!(f, "{head:?}… ({} bytes)", s.len())
            }
            IdValue::Str(s) => write!(f, "{:?}", &**s),
        }
    }
}

/// The most characters of a string id a log line shows.
pub const LOGGED_ID_CHARS: usize = 64;

/// Whether `raw` is the JSON text of a number or a string: an id the proxy
/// can answer under, as written, even when it refuses it as an id (`1.5`,
/// `1e400`, 2^53). Anything else (null, true, an object, an array) is
/// answered with id null.
pub fn answerable_id(raw: &str) -> bool {
    if raw.starts_with('"') {
        return serde_json::from_str::<&RawValue>(raw).is_ok();
    }
    json_number(raw)
}

/// `raw` follows JSON's number grammar (whatever its magnitude).
fn json_number(raw: &str) -> bool {
    let b = raw.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Why a message was refused. The edge turns it into a JSON-RPC error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Malformed {
    /// Not UTF-8, or not JSON.
    #[error("parse error: {0}")]
    NotJson(String),
    /// JSON, but not a JSON-RPC 2.0 message the proxy can forward.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A request with a valid id, but not one the proxy forwards (its
    /// `params`): answered under its id.
    #[error("invalid request: {why}")]
    Request {
        /// The request's id.
        id: RequestId,
        /// What is wrong.
        why: String,
    },
    /// A request whose id is not a string or an integer within range: the
    /// id as written. Answered under it when it is a number or a string
    /// ([`answerable_id`]), else with id null.
    #[error("invalid request: the id must be a string or an integer within +/-(2^53 - 1), got {}", truncate(.0))]
    BadId(String),
}

/// The routing fields of one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A request: a method and an id.
    Request {
        /// The id, by value.
        id: RequestId,
        /// The method.
        method: String,
        /// From the client only: `params.name` when it is a string (the tool
        /// of a `tools/call`, the prompt of a `prompts/get`).
        name: Option<String>,
        /// From the client only: the other routing fields of `params`.
        params: RequestParams,
    },
    /// A notification: a method, no id.
    Notification {
        /// The method.
        method: String,
        /// For `notifications/cancelled`: the id it cancels, if valid.
        cancels: Option<RequestId>,
        /// From the upstream only: the task a task status notification
        /// (`notifications/tasks/status`, `notifications/tasks`) is about.
        task: Option<TaskState>,
    },
    /// A response: an id (`None` when null or not a valid id) and a result or
    /// an error.
    Response {
        /// The id of the request it answers.
        id: Option<RequestId>,
        /// What it says: a result or an error.
        answer: Answer,
        /// From the upstream only: the task its result describes — a task
        /// handle (the answer to a `tools/call` run as a task) or a task's
        /// state (the answer to `tasks/get` or `tasks/cancel`).
        task: Option<TaskState>,
    },
    /// From the upstream only: valid JSON that is none of the above (no
    /// `jsonrpc`, an odd id…). Forwarded as it is, routed nowhere.
    Other,
}

/// The routing fields of a client request's `params` besides `name`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestParams {
    /// `params.uri` when it is a string (`resources/read`, …).
    pub uri: Option<String>,
    /// `params.taskId` when it is a string (`tasks/get`, `tasks/result`,
    /// `tasks/update`, `tasks/cancel`).
    pub task_id: Option<String>,
    /// `params.inputResponses` or `params.requestState` is present: the
    /// request continues a multi-round-trip call (SEP-2322).
    pub continuation: bool,
    /// `params.task` is present: the request asks to run as a task
    /// (2025-11-25).
    pub wants_task: bool,
    /// `tools/call` only: `params._meta` as sent (2026-07-28 requests carry
    /// the protocol version and the client's capabilities there, and the
    /// proxy's own task polls must carry them too).
    pub meta: Option<Box<str>>,
}

/// A task's status, as a task handle, a `tasks/get` answer or a status
/// notification says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskStatus {
    /// `working`.
    Working,
    /// `input_required`: the task waits for its client (it stays alive).
    InputRequired,
    /// `completed`.
    Completed,
    /// `failed`.
    Failed,
    /// `cancelled`.
    Cancelled,
    /// Any other value: not terminal.
    Other,
}

impl TaskStatus {
    fn parse(status: &str) -> Self {
        match status {
            "working" => Self::Working,
            "input_required" => Self::InputRequired,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => Self::Other,
        }
    }

    /// `completed`, `failed` or `cancelled`: the task is over.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

/// A task as one upstream message describes it (both protocol
/// generations: 2025-11-25's `result.task` and `ttl`/`pollInterval`,
/// 2026-07-28's flattened `resultType: "task"` and `ttlMs`/`pollIntervalMs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskState {
    /// `taskId`.
    pub task_id: String,
    /// `status`.
    pub status: TaskStatus,
    /// The TTL in milliseconds (`ttl` or `ttlMs`), when a number.
    pub ttl_ms: Option<u64>,
    /// The poll interval in milliseconds (`pollInterval` or
    /// `pollIntervalMs`), when a number.
    pub poll_interval_ms: Option<u64>,
    /// A task handle: the result says a task was created (2025-11-25:
    /// `result.task`; 2026-07-28: `resultType: "task"`).
    pub handle: bool,
    /// The 2026-07-28 handle (`resultType: "task"`), which a server sends
    /// whether or not the client asked; a 2025-11-25 handle answers a
    /// request that asked for a task.
    pub flattened: bool,
}

/// What a response says, as far as the proxy judges load by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A `result`; `is_error` when it is an object whose top-level
    /// `isError` is `true` (a tool's own failure).
    Result {
        /// `result.isError` is `true`.
        is_error: bool,
    },
    /// A `result` that is an overload refusal in the tool-result dialect:
    /// `isError: true` and `_meta["io.modelcontextprotocol/toolFailure"]`
    /// of `class` `overload` (a guarded server or proxy further down, run
    /// with `tool-result`, refused the call).
    Refused,
    /// An `error` (also when a response carries both); `code` when
    /// `error.code` is an integer.
    Error {
        /// `error.code`.
        code: Option<i64>,
        /// The error says a task is not known: code -32602 (invalid params)
        /// and a message naming it so — "not found" (FastMCP), "unknown
        /// task" (rmcp). Other invalid params (a malformed request) say
        /// nothing about a task.
        not_found: bool,
    },
}

/// A parsed message: what it is, and the bytes to forward for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// One message, or the elements of a batch.
    pub kinds: Shape,
    /// The re-framed bytes (no newline).
    pub bytes: Vec<u8>,
}

/// One message or a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shape {
    /// A single message.
    One(Kind),
    /// A batch (a JSON array) of messages, in order.
    Batch(Vec<Kind>),
}

/// Who sent the message: client messages are held to stricter rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum From {
    /// The client (what goes upstream).
    Client,
    /// The upstream server (what goes back to the client).
    Upstream,
}

#[derive(Deserialize)]
struct CancelParams<'a> {
    #[serde(borrow, rename = "requestId", default, deserialize_with = "present")]
    request_id: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    jsonrpc: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    method: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    params: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    error: Option<&'a RawValue>,
}

/// `Some` for a key that is present, even with the value `null`.
fn present<'de, D>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// Parses one message (a stdio line without its newline, or an HTTP body).
///
/// # Errors
///
/// [`Malformed`] says why the message cannot be forwarded.
pub fn parse(bytes: &[u8], from: From) -> Result<Parsed, Malformed> {
    // One UTF-8 byte order mark before a message is not part of it (RFC 8259
    // lets a parser ignore it; rmcp drops it at the start of every line, and
    // Codex CLI on Windows writes one). It is not forwarded.
    let bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
    let text = std::str::from_utf8(bytes)
        .map_err(|e| Malformed::NotJson(format!("the message is not UTF-8: {e}")))?;
    let mut bytes = reframe(text, from).map_err(|malformed| match malformed {
        // JSON that breaks a rule of the proxy's (depth, a lone surrogate, a
        // number out of range): a request is answered under its id.
        Malformed::Invalid(why) => with_request_id(text, why),
        other => other,
    })?;
    // Re-framing removed nothing but white space: parse what is forwarded.
    let text = std::str::from_utf8(&bytes).expect("re-framing keeps UTF-8");
    let mut splices = Vec::new();
    let kinds = match text.as_bytes().first() {
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(text)
                .map_err(|e| Malformed::Invalid(format!("batch: {e}")))?;
            if items.is_empty() {
                return Err(Malformed::Invalid("empty batch".into()));
            }
            Shape::Batch(
                items
                    .into_iter()
                    .map(|raw| classify(raw.get(), from, text, &mut splices))
                    .collect::<Result<_, _>>()?,
            )
        }
        _ => Shape::One(classify(text, from, text, &mut splices)?),
    };
    // Ids written in another form than the integer they are (`1.0`, `1e0`,
    // `-0`) go upstream as that integer: peers disagree on such forms (the
    // Python SDK reads a request with id `1.0` as a notification).
    splices.sort_by_key(|s: &Splice| std::cmp::Reverse(s.at));
    for splice in splices {
        bytes.splice(splice.at..splice.at + splice.len, splice.with.into_bytes());
    }
    Ok(Parsed { kinds, bytes })
}

/// The UTF-8 byte order mark.
pub const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A client message refused for `why` before it was classified: if it is a
/// request whose id can be read, the refusal names the id (and the answer
/// carries it), else the id is unknown.
fn with_request_id(text: &str, why: String) -> Malformed {
    // The envelope's values are only delimited, not read: any depth, any
    // number, any escape.
    let envelope = text
        .starts_with('{')
        .then(|| serde_json::from_str::<Envelope<'_>>(text).ok())
        .flatten();
    match envelope {
        Some(Envelope {
            id: Some(raw),
            method: Some(_),
            result: None,
            error: None,
            ..
        }) => match RequestId::parse(raw.get()) {
            Some(id) => Malformed::Request { id, why },
            None => Malformed::BadId(raw.get().to_owned()),
        },
        _ => Malformed::Invalid(why),
    }
}

/// Writes the ids of the responses in `bytes` (a message as [`parse`]
/// forwards it) as `written` says: `Some(text)` replaces the id's text with
/// `text` (the JSON text of the same id, as the client wrote it). Returns
/// `None` if nothing changed.
pub fn respell_ids(
    bytes: &[u8],
    mut written: impl FnMut(&RequestId) -> Option<String>,
) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let items: Vec<&RawValue> = if text.starts_with('[') {
        serde_json::from_str(text).ok()?
    } else {
        vec![serde_json::from_str(text).ok()?]
    };
    let mut splices = Vec::new();
    for item in items {
        if !item.get().starts_with('{') {
            continue;
        }
        let Ok(envelope) = serde_json::from_str::<Envelope<'_>>(item.get()) else {
            continue;
        };
        let Some(raw) = envelope.id else { continue };
        if envelope.method.is_some() {
            continue;
        }
        if let Some(id) = RequestId::parse(raw.get())
            && let Some(with) = written(&id)
            && with != raw.get()
        {
            splices.push(Splice {
                at: raw.get().as_ptr() as usize - text.as_ptr() as usize,
                len: raw.get().len(),
                with,
            });
        }
    }
    if splices.is_empty() {
        return None;
    }
    let mut bytes = bytes.to_vec();
    splices.sort_by_key(|s: &Splice| std::cmp::Reverse(s.at));
    for splice in splices {
        bytes.splice(splice.at..splice.at + splice.len, splice.with.into_bytes());
    }
    Some(bytes)
}

/// A number id to write in its canonical form.
struct Splice {
    at: usize,
    len: usize,
    with: String,
}

/// Records a splice if the raw id `raw` (a slice of `full`) is a number not
/// written canonically.
fn canonical(raw: &RawValue, id: &RequestId, full: &str, splices: &mut Vec<Splice>) {
    let IdValue::Int(n) = id.value() else {
        return;
    };
    let text = raw.get();
    let with = n.to_string();
    if text != with {
        let at = text.as_ptr() as usize - full.as_ptr() as usize;
        splices.push(Splice {
            at,
            len: text.len(),
            with,
        });
    }
}

fn invalid(why: impl Into<String>) -> Malformed {
    Malformed::Invalid(why.into())
}

/// A client message refused for `why`: under its id when the id (`raw`)
/// can be read, as JSON-RPC asks; else with id null.
fn about(raw: Option<&RawValue>, why: impl Into<String>) -> Malformed {
    match raw.and_then(|raw| RequestId::parse(raw.get())) {
        Some(id) => Malformed::Request {
            id,
            why: why.into(),
        },
        None => invalid(why),
    }
}

/// The top-level `id` of a message the envelope could not be read from
/// (a routing key twice, say), if it is there once.
fn probe_id(text: &str) -> Option<&RawValue> {
    #[derive(Deserialize)]
    struct IdProbe<'a> {
        #[serde(borrow, default, deserialize_with = "present")]
        id: Option<&'a RawValue>,
    }
    serde_json::from_str::<IdProbe<'_>>(text).ok()?.id
}

fn classify(
    text: &str,
    from: From,
    full: &str,
    splices: &mut Vec<Splice>,
) -> Result<Kind, Malformed> {
    // The client's messages must be JSON-RPC the proxy fully understands;
    // the upstream's are forwarded whatever they are (the client judges
    // them), and only routed when they clearly answer a request.
    let strict = from == From::Client;
    let other = |why: &str| {
        if strict {
            Err(invalid(why))
        } else {
            Ok(Kind::Other)
        }
    };
    if !text.starts_with('{') {
        return other("a message must be a JSON object");
    }
    // A key twice among the routing keys is refused either way: peers
    // disagree on which one counts. The refusal still carries the id when
    // it can be read (once, a string or a number), so that the client can
    // match it.
    let envelope: Envelope<'_> = serde_json::from_str(text)
        .map_err(|e| about(strict.then(|| probe_id(text)).flatten(), e.to_string()))?;
    // The same for the other ways a client's message is not one the proxy
    // forwards.
    let refuse = |why: &str| {
        if strict {
            Err(about(envelope.id, why))
        } else {
            Ok(Kind::Other)
        }
    };
    if strict && envelope.jsonrpc.map(RawValue::get) != Some("\"2.0\"") {
        return Err(about(envelope.id, "\"jsonrpc\" must be \"2.0\""));
    }
    let method = match envelope.method {
        None => None,
        Some(raw) => match serde_json::from_str::<String>(raw.get()) {
            Ok(method) => Some(method),
            Err(_) => return refuse("\"method\" must be a string"),
        },
    };
    let answers = envelope.result.is_some() || envelope.error.is_some();
    match (method, envelope.id) {
        (Some(_), _) if answers => {
            refuse("a message with a \"method\" cannot carry \"result\" or \"error\"")
        }
        (Some(method), Some(raw)) => match RequestId::parse(raw.get()) {
            Some(id) => {
                let mut name = None;
                let mut params = RequestParams::default();
                if strict {
                    let keep_meta = method == "tools/call";
                    match check_params(envelope.params, keep_meta) {
                        Ok(found) => (name, params) = found,
                        Err(Malformed::Invalid(why)) => {
                            return Err(Malformed::Request { id, why });
                        }
                        Err(other) => return Err(other),
                    }
                    canonical(raw, &id, full, splices);
                }
                Ok(Kind::Request {
                    id,
                    method,
                    name,
                    params,
                })
            }
            None if strict => Err(Malformed::BadId(raw.get().to_owned())),
            None => Ok(Kind::Other),
        },
        (Some(method), None) => {
            if strict {
                check_params(envelope.params, false)?;
            }
            // A cancellation is forwarded only if the proxy knows what it
            // cancels: the upstream must not stop a call whose slot the proxy
            // still counts as running normally, or the other way round.
            let cancels = if method == CANCELLED && strict {
                let params = envelope
                    .params
                    .and_then(|p| serde_json::from_str::<CancelParams<'_>>(p.get()).ok())
                    .and_then(|p| p.request_id)
                    .ok_or_else(|| invalid("a cancellation needs params.requestId, once"))?;
                // Not the notification's own id: a bad one is answered with
                // id null (a notification has none to answer under).
                let id = RequestId::parse(params.get()).ok_or_else(|| {
                    invalid(format!(
                        "a cancellation's params.requestId must be a string or an integer \
                         within +/-(2^53 - 1), got {}",
                        truncate(params.get())
                    ))
                })?;
                canonical(params, &id, full, splices);
                Some(id)
            } else {
                None
            };
            let task = if strict {
                None
            } else {
                task_notification(&method, envelope.params)
            };
            Ok(Kind::Notification {
                method,
                cancels,
                task,
            })
        }
        (None, Some(raw)) if answers => {
            if strict && envelope.result.is_some() && envelope.error.is_some() {
                return Err(invalid(
                    "a response has a \"result\" or an \"error\", not both",
                ));
            }
            if strict && envelope.params.is_some() {
                return Err(invalid("a response has no \"params\""));
            }
            let task = if strict {
                None
            } else {
                envelope.result.and_then(task_result)
            };
            Ok(Kind::Response {
                id: RequestId::parse(raw.get()),
                answer: answer(envelope.result, envelope.error),
                task,
            })
        }
        _ => other("neither a request, a notification nor a response"),
    }
}

#[derive(Deserialize)]
struct Params<'a> {
    #[serde(borrow, rename = "_meta", default, deserialize_with = "present")]
    meta: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    name: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    uri: Option<&'a RawValue>,
    #[serde(borrow, rename = "taskId", default, deserialize_with = "present")]
    task_id: Option<&'a RawValue>,
    #[serde(
        borrow,
        rename = "inputResponses",
        default,
        deserialize_with = "present"
    )]
    input_responses: Option<&'a RawValue>,
    #[serde(borrow, rename = "requestState", default, deserialize_with = "present")]
    request_state: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    task: Option<&'a RawValue>,
}

/// The task fields of an upstream result or notification's params.
#[derive(Deserialize)]
struct TaskProbe<'a> {
    #[serde(borrow, rename = "resultType", default, deserialize_with = "present")]
    result_type: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    task: Option<&'a RawValue>,
    #[serde(borrow, rename = "taskId", default, deserialize_with = "present")]
    task_id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    status: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    ttl: Option<&'a RawValue>,
    #[serde(borrow, rename = "ttlMs", default, deserialize_with = "present")]
    ttl_ms: Option<&'a RawValue>,
    #[serde(borrow, rename = "pollInterval", default, deserialize_with = "present")]
    poll_interval: Option<&'a RawValue>,
    #[serde(
        borrow,
        rename = "pollIntervalMs",
        default,
        deserialize_with = "present"
    )]
    poll_interval_ms: Option<&'a RawValue>,
}

/// The methods of task status notifications (2025-11-25, 2026-07-28).
pub const TASK_NOTIFICATIONS: [&str; 2] = ["notifications/tasks/status", "notifications/tasks"];

fn string(raw: Option<&RawValue>) -> Option<String> {
    raw.and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
}

fn millis(raw: Option<&RawValue>) -> Option<u64> {
    let raw = raw?.get();
    raw.parse::<u64>().ok().or_else(|| {
        // A whole number written as a float (`1000.0`) is still a number.
        let f: f64 = raw.parse().ok()?;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        (f.is_finite() && (0.0..1.8e19).contains(&f)).then_some(f as u64)
    })
}

/// A task's state from an object holding `taskId` and `status` (and maybe
/// its TTL and poll interval).
fn task_fields(probe: &TaskProbe<'_>, handle: bool, flattened: bool) -> Option<TaskState> {
    let task_id = string(probe.task_id)?;
    let status = TaskStatus::parse(&string(probe.status)?);
    Some(TaskState {
        task_id,
        status,
        ttl_ms: millis(probe.ttl_ms).or_else(|| millis(probe.ttl)),
        poll_interval_ms: millis(probe.poll_interval_ms).or_else(|| millis(probe.poll_interval)),
        handle,
        flattened,
    })
}

fn probe(raw: &RawValue) -> Option<TaskProbe<'_>> {
    raw.get()
        .starts_with('{')
        .then(|| serde_json::from_str::<TaskProbe<'_>>(raw.get()).ok())
        .flatten()
}

/// The task an upstream result describes: a handle (2026-07-28
/// `resultType: "task"` with the task's fields beside it; 2025-11-25 a
/// `task` object), or a task's state (`taskId` and `status` at the top).
fn task_result(result: &RawValue) -> Option<TaskState> {
    let top = probe(result)?;
    if top.result_type.map(RawValue::get) == Some("\"task\"") {
        return task_fields(&top, true, true);
    }
    if let Some(task) = top.task.and_then(probe)
        && let Some(state) = task_fields(&task, true, false)
    {
        return Some(state);
    }
    task_fields(&top, false, false)
}

/// The task a status notification from the upstream is about.
fn task_notification(method: &str, params: Option<&RawValue>) -> Option<TaskState> {
    if !TASK_NOTIFICATIONS.contains(&method) {
        return None;
    }
    task_fields(&probe(params?)?, false, false)
}

#[derive(Deserialize)]
struct ResultProbe<'a> {
    #[serde(borrow, rename = "isError", default, deserialize_with = "present")]
    is_error: Option<&'a RawValue>,
    #[serde(borrow, rename = "_meta", default, deserialize_with = "present")]
    meta: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct MetaProbe<'a> {
    #[serde(
        borrow,
        rename = "io.modelcontextprotocol/toolFailure",
        default,
        deserialize_with = "present"
    )]
    tool_failure: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ToolFailureProbe<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    class: Option<&'a RawValue>,
}

/// `_meta` (raw) classifies the failure as an overload (SEP-3313's
/// `toolFailure.class`).
fn classified_overload(meta: &RawValue) -> bool {
    serde_json::from_str::<MetaProbe<'_>>(meta.get())
        .ok()
        .and_then(|m| m.tool_failure)
        .and_then(|f| serde_json::from_str::<ToolFailureProbe<'_>>(f.get()).ok())
        .and_then(|f| string(f.class))
        .is_some_and(|class| class == mcp_backpressure::tool_failure::OVERLOAD_CLASS)
}

#[derive(Deserialize)]
struct ErrorProbe<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    code: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    message: Option<&'a RawValue>,
}

/// JSON-RPC's invalid params, which the SDKs answer an unknown task with.
const INVALID_PARAMS: i64 = -32602;

/// What a response's `result` or `error` says (see [`Answer`]). Lenient, as
/// everything read from the upstream: a shape it does not recognise is a
/// plain result, or an error without a code.
fn answer(result: Option<&RawValue>, error: Option<&RawValue>) -> Answer {
    if let Some(error) = error {
        let probe = serde_json::from_str::<ErrorProbe<'_>>(error.get()).ok();
        let code = probe
            .as_ref()
            .and_then(|e| e.code)
            .and_then(|code| code.get().parse::<i64>().ok());
        let not_found = code == Some(INVALID_PARAMS)
            && string(probe.and_then(|e| e.message)).is_some_and(|message| {
                let message = message.to_ascii_lowercase();
                message.contains("not found") || message.contains("unknown task")
            });
        return Answer::Error { code, not_found };
    }
    let probe = result
        .filter(|r| r.get().starts_with('{'))
        .and_then(|r| serde_json::from_str::<ResultProbe<'_>>(r.get()).ok());
    let is_error = probe
        .as_ref()
        .and_then(|r| r.is_error)
        .is_some_and(|flag| flag.get() == "true");
    if is_error && probe.and_then(|r| r.meta).is_some_and(classified_overload) {
        return Answer::Refused;
    }
    Answer::Result { is_error }
}

/// MCP's rules for `params` (stricter than JSON-RPC's, and what the SDKs
/// parse): an object, whose `_meta`, if any, is an object too. A request the
/// upstream cannot read is never answered, so the proxy refuses it instead.
/// Returns `params.name` when it is a string, and the other routing fields.
fn check_params(
    params: Option<&RawValue>,
    keep_meta: bool,
) -> Result<(Option<String>, RequestParams), Malformed> {
    let Some(params) = params else {
        return Ok((None, RequestParams::default()));
    };
    if !params.get().starts_with('{') {
        return Err(invalid("\"params\" must be an object"));
    }
    let params: Params<'_> = serde_json::from_str(params.get()).map_err(|_| {
        invalid(
            "\"params\" holds one of \"_meta\", \"name\", \"uri\", \"taskId\", \
             \"inputResponses\", \"requestState\", \"task\" twice",
        )
    })?;
    match params.meta {
        Some(meta) if !meta.get().starts_with('{') => {
            Err(invalid("\"params._meta\" must be an object"))
        }
        _ => Ok((
            string(params.name),
            RequestParams {
                uri: string(params.uri),
                task_id: string(params.task_id),
                continuation: params.input_responses.is_some() || params.request_state.is_some(),
                wants_task: params.task.is_some(),
                meta: params
                    .meta
                    .filter(|_| keep_meta)
                    .map(|meta| meta.get().into()),
            },
        )),
    }
}

/// Checks the syntax of `text` and writes it again with no white space
/// outside strings and U+0085/U+2028/U+2029 escaped. For client messages, also
/// enforces the depth, surrogate and number rules of the module docs.
fn reframe(text: &str, from: From) -> Result<Vec<u8>, Malformed> {
    // serde_json checks the whole syntax without recursion (`IgnoredAny`).
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map_err(|e| Malformed::NotJson(e.to_string()))?;
    let strict = from == From::Client;
    let input = text.as_bytes();
    let mut out = Vec::with_capacity(input.len());
    let mut depth = 0usize;
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        match b {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'"' => i = copy_string(input, i, &mut out, strict)?,
            b'{' | b'[' => {
                depth += 1;
                if strict && depth > MAX_CLIENT_DEPTH {
                    return Err(invalid(format!(
                        "nested deeper than {MAX_CLIENT_DEPTH} levels"
                    )));
                }
                out.push(b);
                i += 1;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                out.push(b);
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let end = input[i..]
                    .iter()
                    .position(|c| !matches!(c, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                    .map_or(input.len(), |n| i + n);
                let number = &text[i..end];
                if strict && !number.parse::<f64>().is_ok_and(f64::is_finite) {
                    return Err(invalid(format!(
                        "the number {} is out of range",
                        truncate(number)
                    )));
                }
                out.extend_from_slice(number.as_bytes());
                i = end;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(32) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

/// Copies the string starting at `input[start] == '"'`; returns the index
/// after its closing quote.
fn copy_string(
    input: &[u8],
    start: usize,
    out: &mut Vec<u8>,
    strict: bool,
) -> Result<usize, Malformed> {
    out.push(b'"');
    let mut i = start + 1;
    // A high surrogate escape waiting for its low half.
    let mut high_pending = false;
    while i < input.len() {
        let b = input[i];
        let low_next = |at: usize| -> Option<u16> {
            (input.get(at) == Some(&b'\\') && input.get(at + 1) == Some(&b'u'))
                .then(|| hex4(&input[at + 2..at + 6]))
                .flatten()
        };
        match b {
            b'"' => {
                if high_pending && strict {
                    return Err(lone_surrogate());
                }
                out.push(b'"');
                return Ok(i + 1);
            }
            b'\\' => {
                let next = input[i + 1];
                if next == b'u' {
                    let unit = hex4(&input[i + 2..i + 6]).unwrap_or(0);
                    if (0xD800..0xDC00).contains(&unit) {
                        if high_pending && strict {
                            return Err(lone_surrogate());
                        }
                        high_pending = true;
                        if strict && !low_next(i + 6).is_some_and(|u| (0xDC00..0xE000).contains(&u))
                        {
                            return Err(lone_surrogate());
                        }
                    } else if (0xDC00..0xE000).contains(&unit) {
                        if !high_pending && strict {
                            return Err(lone_surrogate());
                        }
                        high_pending = false;
                    } else {
                        high_pending = false;
                    }
                    out.extend_from_slice(&input[i..i + 6]);
                    i += 6;
                } else {
                    high_pending = false;
                    out.extend_from_slice(&input[i..i + 2]);
                    i += 2;
                }
            }
            0xC2 if input.get(i + 1) == Some(&0x85) => {
                out.extend_from_slice(b"\\u0085");
                i += 2;
            }
            0xE2 if input.get(i + 1) == Some(&0x80)
                && matches!(input.get(i + 2), Some(0xA8 | 0xA9)) =>
            {
                out.extend_from_slice(if input[i + 2] == 0xA8 {
                    b"\\u2028"
                } else {
                    b"\\u2029"
                });
                i += 3;
            }
            _ => {
                high_pending = false;
                out.push(b);
                i += 1;
            }
        }
    }
    // Unreachable on input serde_json accepted.
    Err(invalid("unterminated string"))
}

/// Escapes U+0085, U+2028 and U+2029 in serialized JSON (where they can only
/// stand inside strings), for the proxy's own messages.
pub fn escape_separators(json: Vec<u8>) -> Vec<u8> {
    let has = |w: &[u8]| w == [0xC2, 0x85] || w == [0xE2, 0x80];
    if !json.windows(2).any(has) {
        return json;
    }
    let mut out = Vec::with_capacity(json.len() + 12);
    let mut i = 0;
    while i < json.len() {
        match json[i..] {
            [0xC2, 0x85, ..] => {
                out.extend_from_slice(b"\\u0085");
                i += 2;
            }
            [0xE2, 0x80, c @ (0xA8 | 0xA9), ..] => {
                out.extend_from_slice(if c == 0xA8 { b"\\u2028" } else { b"\\u2029" });
                i += 3;
            }
            _ => {
                out.push(json[i]);
                i += 1;
            }
        }
    }
    out
}

fn lone_surrogate() -> Malformed {
    invalid("a string holds a lone UTF-16 surrogate escape")
}

fn hex4(digits: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(digits.get(..4)?).ok()?;
    u16::from_str_radix(text, 16).ok()
}

#[cfg(test)]
mod tests;
