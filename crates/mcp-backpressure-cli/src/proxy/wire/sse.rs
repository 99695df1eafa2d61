//! An incremental `text/event-stream` parser, as the WHATWG HTML standard
//! interprets an event stream ("9.2.6 Interpreting an event stream"), with
//! bounded memory.
//!
//! [`SseParser`] is fed the bytes of a stream in chunks of any size and calls
//! back with every event it dispatches; chunking never changes the events.
//! What it follows from the standard:
//!
//! - lines end with CRLF, LF or a lone CR; a CR ending one chunk and an LF
//!   starting the next are one line end;
//! - one UTF-8 byte order mark at the very start of the stream is skipped;
//! - `name:value` fields, with one space after the colon dropped; a line
//!   without a colon is a field with an empty value; a line starting with a
//!   colon is a comment; field names are compared exactly (`dataX` is not
//!   `data`);
//! - `data` lines are joined with LF; `id` sets the last event id (kept across
//!   events; ignored when it contains NUL); `event` sets the event type;
//!   `retry` and any other field are ignored;
//! - an empty line dispatches the event, unless it had no `data` line at all
//!   (a single `data:` line makes an event whose data is empty);
//! - at the end of the stream ([`SseParser::finish`]) an unterminated event
//!   is discarded.
//!
//! The parser works on bytes and does not decode UTF-8: the data is handed
//! over exactly as sent (a browser would replace invalid UTF-8 with U+FFFD).
//!
//! # Strict peers
//!
//! rmcp's client (through the `sse-stream` crate) is stricter than the
//! standard: it fails the stream at a line without a colon, a field other
//! than `data`, `event`, `id` and `retry`, a second `event`, `id` or `retry`
//! in one event, a value that is not UTF-8, or a `retry` that is not an
//! integer; it then never reads the rest of that stream. The parser follows
//! the standard but flags such a stream ([`SseEvent::lenient`],
//! [`SseParser::lenient`]) so the proxy can tell that an rmcp client would
//! not see an event.
//!
//! # Bounded memory
//!
//! An event's data is held up to `max_event_bytes`. When it grows past that,
//! the held bytes and everything after them until the end of the event are
//! fed to a [`TopLevelScanner`] instead, and the event is dispatched as
//! [`SseData::Scanned`]: the routing facts of the JSON it carries, learned in
//! O(1) memory. `id` and `event` values are held up to [`MAX_FIELD_BYTES`].
//! No line is ever buffered whole. So the parser holds at most about
//! `max_event_bytes + 3 * MAX_FIELD_BYTES` bytes (see
//! [`SseParser::held_bytes`]), plus a scanner's fixed size.

#![forbid(unsafe_code)]

use bytes::Bytes;

use super::scan::{ScanResult, TopLevelScanner};

/// The longest `id` or `event` value held; longer values are cut to this.
/// A cut event type never reads as `message`, so whether an event is a
/// message is still exact; a cut id is flagged ([`SseEvent::id_truncated`]).
pub const MAX_FIELD_BYTES: usize = 1024;

/// The UTF-8 byte order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The data of a dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseData {
    /// The whole data (lines joined with LF), at most `max_event_bytes`.
    Held(Bytes),
    /// The data was longer than `max_event_bytes`: it was not held but
    /// scanned as one JSON text.
    Scanned {
        /// The length of the data, in bytes.
        len: u64,
        /// What the scan of the data found.
        scan: ScanResult,
    },
}

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The event type from an `event` field, if the event had a non-empty
    /// one; `None` is the default type, `message`.
    pub event: Option<Bytes>,
    /// The data.
    pub data: SseData,
    /// The value of this event's own `id` field (the last one, if several),
    /// if it had one; `Some("")` resets the last event id.
    pub id: Option<Bytes>,
    /// The last event id as of this event: the latest `id` seen on the
    /// stream, in this event or an earlier one (what a client sends as
    /// `Last-Event-ID` when it reconnects after this event).
    pub last_event_id: Bytes,
    /// `id` or `last_event_id` is only the first [`MAX_FIELD_BYTES`] of a
    /// longer id.
    pub id_truncated: bool,
    /// This event, or an earlier line of the stream, has a line that a
    /// strict parser refuses (see the module docs): an rmcp client never
    /// gets this event.
    pub lenient: bool,
}

impl SseEvent {
    /// Whether the event has the default type, `message`: the only events
    /// MCP clients (TypeScript, Python, rmcp) read as JSON-RPC messages.
    pub fn is_message(&self) -> bool {
        self.event
            .as_deref()
            .is_none_or(|event| event == b"message")
    }

    /// Whether the data was too long to hold (and was scanned instead).
    pub fn overflow(&self) -> bool {
        matches!(self.data, SseData::Scanned { .. })
    }
}

/// A field the parser keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Data,
    Id,
    Event,
    /// `retry`, read but unused.
    Retry,
}

/// Where the parser is in the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// At the start of a line.
    Start,
    /// Reading a field name; its first bytes (a longer name is no field the
    /// parser keeps).
    Name([u8; 5], u8),
    /// In a comment or a field that is ignored: skipping to the line end.
    Skip,
    /// In a field's value; `fresh` while the optional space may come.
    Value { field: Field, fresh: bool },
}

/// An incremental UTF-8 check of one field value.
#[derive(Debug, Clone, Copy, Default)]
struct Utf8 {
    /// Continuation bytes still expected, and the range of the next one.
    need: u8,
    low: u8,
    high: u8,
    bad: bool,
}

impl Utf8 {
    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.bad {
                return;
            }
            if self.need > 0 {
                self.bad = !(self.low..=self.high).contains(&b);
                (self.need, self.low, self.high) = (self.need - 1, 0x80, 0xbf);
                continue;
            }
            (self.need, self.low, self.high) = match b {
                0x00..=0x7f => continue,
                0xc2..=0xdf => (1, 0x80, 0xbf),
                0xe0 => (2, 0xa0, 0xbf),
                0xe1..=0xec | 0xee..=0xef => (2, 0x80, 0xbf),
                0xed => (2, 0x80, 0x9f),
                0xf0 => (3, 0x90, 0xbf),
                0xf1..=0xf3 => (3, 0x80, 0xbf),
                0xf4 => (3, 0x80, 0x8f),
                _ => {
                    self.bad = true;
                    return;
                }
            };
        }
    }

    fn valid(self) -> bool {
        !self.bad && self.need == 0
    }
}

/// A `retry` value as Rust's `str::trim_ascii().parse::<u64>()` reads it
/// (rmcp's parser).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Retry {
    #[default]
    Leading,
    Plus,
    Digits(u64),
    Trailing,
    Bad,
}

impl Retry {
    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            let space = matches!(b, b' ' | b'\t' | b'\x0c');
            *self = match (*self, b) {
                (Retry::Leading, _) if space => Retry::Leading,
                (Retry::Leading, b'+') => Retry::Plus,
                (Retry::Leading | Retry::Plus, b'0'..=b'9') => Retry::Digits(u64::from(b - b'0')),
                (Retry::Digits(n), b'0'..=b'9') => n
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(b - b'0')))
                    .map_or(Retry::Bad, Retry::Digits),
                (Retry::Digits(_) | Retry::Trailing, _) if space => Retry::Trailing,
                _ => Retry::Bad,
            };
        }
    }

    fn valid(self) -> bool {
        matches!(self, Retry::Digits(_) | Retry::Trailing)
    }
}

/// An event's data, held or scanned.
#[derive(Debug)]
struct Data {
    held: Vec<u8>,
    len: u64,
    scanner: Option<Box<TopLevelScanner>>,
}

/// A bounded `id` or `event` value being read.
#[derive(Debug, Default)]
struct Value {
    bytes: Vec<u8>,
    truncated: bool,
    nul: bool,
}

impl Value {
    fn clear(&mut self) {
        self.bytes.clear();
        self.truncated = false;
        self.nul = false;
    }

    fn extend(&mut self, bytes: &[u8]) {
        self.nul |= bytes.contains(&0);
        let room = MAX_FIELD_BYTES - self.bytes.len();
        if bytes.len() > room {
            self.truncated = true;
        }
        self.bytes
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

/// An incremental `text/event-stream` parser; see the module docs.
#[derive(Debug)]
pub struct SseParser {
    max_event_bytes: usize,
    /// How many bytes of a byte order mark were seen at the start of the
    /// stream; `None` once past the start.
    bom: Option<u8>,
    /// The last byte was a CR ending a line: an LF now is part of that end.
    after_cr: bool,
    line: Line,
    /// The `id` or `event` value of the current line.
    value: Value,
    // The event being built.
    data: Data,
    /// Whether the event has a data line (the standard's "data buffer is not
    /// empty": it holds at least the LF ending that line).
    has_data: bool,
    event: Option<Bytes>,
    id: Option<Bytes>,
    // Across events.
    /// The last event ID buffer (set by `id` lines).
    id_buffer: Bytes,
    id_buffer_truncated: bool,
    /// The last event ID string (set from the buffer at each dispatch).
    last_event_id: Bytes,
    // What a strict parser checks.
    /// The current value's UTF-8 check.
    utf8: Utf8,
    /// The current `retry` value.
    retry: Retry,
    /// The `event`, `id` and `retry` fields seen in the current event
    /// (bits 1, 2 and 4).
    fields: u8,
    /// The stream had a line a strict parser refuses.
    lenient: bool,
}

impl SseParser {
    /// A parser at the start of a stream, holding at most `max_event_bytes`
    /// of an event's data.
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            max_event_bytes,
            bom: Some(0),
            after_cr: false,
            line: Line::Start,
            value: Value::default(),
            data: Data {
                held: Vec::new(),
                len: 0,
                scanner: None,
            },
            has_data: false,
            event: None,
            id: None,
            id_buffer: Bytes::new(),
            id_buffer_truncated: false,
            last_event_id: Bytes::new(),
            utf8: Utf8::default(),
            retry: Retry::default(),
            fields: 0,
            lenient: false,
        }
    }

    /// Feeds the next bytes of the stream; `out` is called with every event
    /// they complete, in order.
    pub fn push(&mut self, mut chunk: &[u8], out: &mut impl FnMut(SseEvent)) {
        if let Some(seen) = self.bom {
            // Match the BOM byte by byte: it may be split across chunks.
            let mut seen = usize::from(seen);
            while seen < BOM.len() {
                match chunk.first() {
                    None => {
                        self.bom = Some(seen as u8);
                        return;
                    }
                    Some(&b) if b == BOM[seen] => {
                        seen += 1;
                        chunk = &chunk[1..];
                    }
                    Some(_) => break,
                }
            }
            self.bom = None;
            if seen < BOM.len() {
                // Not a BOM after all: its first bytes are stream content.
                self.bytes(&BOM[..seen], out);
            }
        }
        self.bytes(chunk, out);
    }

    /// Ends the stream: an event not yet terminated by an empty line is
    /// discarded (as the standard says). The parser is then ready for a new
    /// stream (a reconnection); the last event id is kept.
    pub fn finish(&mut self) {
        self.bom = Some(0);
        self.after_cr = false;
        self.line = Line::Start;
        self.value.clear();
        self.reset_event();
        self.lenient = false;
    }

    /// Whether the stream so far had a line that a strict parser (rmcp's)
    /// refuses; see the module docs. Reset by [`finish`](Self::finish).
    pub fn lenient(&self) -> bool {
        self.lenient
    }

    /// The last event ID string: the id as of the last dispatch, including
    /// the dispatch of an event without data (which calls no callback).
    pub fn last_event_id(&self) -> &[u8] {
        &self.last_event_id
    }

    /// How many bytes the parser holds now (buffer capacities included),
    /// beside its fixed size. Bounded by about
    /// `max_event_bytes + 3 * MAX_FIELD_BYTES`.
    pub fn held_bytes(&self) -> usize {
        self.data.held.capacity()
            + self.value.bytes.capacity()
            + self.event.as_ref().map_or(0, Bytes::len)
            + self.id.as_ref().map_or(0, Bytes::len)
            + self.id_buffer.len()
            + self.last_event_id.len()
            + self
                .data
                .scanner
                .as_ref()
                .map_or(0, |_| std::mem::size_of::<TopLevelScanner>())
    }

    fn bytes(&mut self, mut chunk: &[u8], out: &mut impl FnMut(SseEvent)) {
        while let Some((&b, rest)) = chunk.split_first() {
            if std::mem::take(&mut self.after_cr) && b == b'\n' {
                chunk = rest;
                continue;
            }
            if b == b'\r' || b == b'\n' {
                self.after_cr = b == b'\r';
                self.end_line(out);
                chunk = rest;
                continue;
            }
            match self.line {
                Line::Start | Line::Name(..) => {
                    let (name, len) = match self.line {
                        Line::Name(name, len) => (name, usize::from(len)),
                        _ => ([0; 5], 0),
                    };
                    if b == b':' {
                        self.start_value(&name[..len]);
                    } else if len < name.len() {
                        let mut name = name;
                        name[len] = b;
                        self.line = Line::Name(name, len as u8 + 1);
                    } else {
                        // No field has so long a name: with a colon or without,
                        // a strict parser refuses the line.
                        self.lenient = true;
                        self.line = Line::Skip;
                    }
                    chunk = rest;
                }
                Line::Skip => {
                    chunk = &chunk[line_run(chunk)..];
                }
                Line::Value { field, fresh } => {
                    if fresh {
                        self.line = Line::Value {
                            field,
                            fresh: false,
                        };
                        if b == b' ' {
                            chunk = rest;
                            continue;
                        }
                    }
                    let run = line_run(chunk);
                    if !self.lenient {
                        self.utf8.feed(&chunk[..run]);
                        if field == Field::Retry {
                            self.retry.feed(&chunk[..run]);
                        }
                    }
                    match field {
                        Field::Data => self.data_bytes(&chunk[..run]),
                        Field::Id | Field::Event => self.value.extend(&chunk[..run]),
                        Field::Retry => {}
                    }
                    chunk = &chunk[run..];
                }
            }
        }
    }

    /// A colon ended the field name `name`.
    fn start_value(&mut self, name: &[u8]) {
        let field = match name {
            b"data" => Field::Data,
            b"id" => Field::Id,
            b"event" => Field::Event,
            b"retry" => Field::Retry,
            // A comment (empty name) or a field the standard ignores.
            _ => {
                self.lenient |= !name.is_empty();
                self.line = Line::Skip;
                return;
            }
        };
        self.start_field(field);
        self.line = Line::Value { field, fresh: true };
    }

    fn start_field(&mut self, field: Field) {
        self.utf8 = Utf8::default();
        self.retry = Retry::default();
        match field {
            Field::Data => {
                if self.has_data {
                    self.data_bytes(b"\n");
                }
                self.has_data = true;
            }
            Field::Id | Field::Event => self.value.clear(),
            Field::Retry => {}
        }
    }

    fn end_line(&mut self, out: &mut impl FnMut(SseEvent)) {
        let field = match std::mem::replace(&mut self.line, Line::Start) {
            Line::Start => return self.dispatch(out),
            Line::Skip => return,
            Line::Name(name, len) => {
                // No colon: the whole line is the name, the value is empty.
                self.lenient = true;
                let field = match &name[..usize::from(len)] {
                    b"data" => Field::Data,
                    b"id" => Field::Id,
                    b"event" => Field::Event,
                    _ => return,
                };
                self.start_field(field);
                field
            }
            Line::Value { field, .. } => field,
        };
        self.check_strictly(field);
        match field {
            Field::Id if !self.value.nul => {
                let id = Bytes::copy_from_slice(&self.value.bytes);
                self.id_buffer = id.clone();
                self.id_buffer_truncated = self.value.truncated;
                self.id = Some(id);
            }
            Field::Event => {
                self.event = (!self.value.bytes.is_empty())
                    .then(|| Bytes::copy_from_slice(&self.value.bytes));
            }
            _ => {}
        }
        self.value.clear();
        if self.value.bytes.capacity() > MAX_FIELD_BYTES {
            self.value.bytes = Vec::new();
        }
    }

    /// What a strict parser checks at the end of a field's line.
    fn check_strictly(&mut self, field: Field) {
        let bit = match field {
            // rmcp's parser ignores an id with NUL before any other check.
            Field::Id if self.value.nul => return,
            Field::Data => 0,
            Field::Event => 1,
            Field::Id => 2,
            Field::Retry => 4,
        };
        let valid = self.utf8.valid() && (field != Field::Retry || self.retry.valid());
        if !valid || self.fields & bit != 0 {
            self.lenient = true;
        }
        self.fields |= bit;
    }

    /// An empty line: dispatch the event.
    fn dispatch(&mut self, out: &mut impl FnMut(SseEvent)) {
        self.last_event_id = self.id_buffer.clone();
        if !self.has_data {
            self.reset_event();
            return;
        }
        let data = std::mem::replace(
            &mut self.data,
            Data {
                held: Vec::new(),
                len: 0,
                scanner: None,
            },
        );
        let data = match data.scanner {
            Some(scanner) => SseData::Scanned {
                len: data.len,
                scan: scanner.finish(),
            },
            None => SseData::Held(Bytes::from(data.held)),
        };
        let event = SseEvent {
            event: self.event.take(),
            data,
            id: self.id.take(),
            last_event_id: self.last_event_id.clone(),
            id_truncated: self.id_buffer_truncated,
            lenient: self.lenient,
        };
        self.reset_event();
        out(event);
    }

    fn reset_event(&mut self) {
        self.fields = 0;
        self.has_data = false;
        self.event = None;
        self.id = None;
        self.data.held = Vec::new();
        self.data.len = 0;
        self.data.scanner = None;
    }

    /// Appends to the event's data, switching to the scanner past the bound.
    fn data_bytes(&mut self, bytes: &[u8]) {
        let data = &mut self.data;
        data.len = data.len.saturating_add(bytes.len() as u64);
        if let Some(scanner) = &mut data.scanner {
            scanner.push(bytes);
            return;
        }
        let needed = data.held.len() + bytes.len();
        if needed > self.max_event_bytes {
            let mut scanner = Box::new(TopLevelScanner::new());
            scanner.push(&data.held);
            scanner.push(bytes);
            data.held = Vec::new();
            data.scanner = Some(scanner);
            return;
        }
        if needed > data.held.capacity() {
            // Grow by doubling, but never past the bound.
            let target = needed
                .max(data.held.capacity().saturating_mul(2))
                .min(self.max_event_bytes);
            data.held.reserve_exact(target - data.held.len());
        }
        data.held.extend_from_slice(bytes);
    }
}

/// How many bytes at the start of `chunk` come before a CR or LF.
fn line_run(chunk: &[u8]) -> usize {
    // A plain loop: fast even in unoptimized (test) builds.
    let mut at = 0;
    for &b in chunk {
        if b == b'\r' || b == b'\n' {
            break;
        }
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Parses `chunks` in order, then ends the stream.
    fn parse_chunks<'a>(
        max: usize,
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> (Vec<SseEvent>, Vec<u8>) {
        let mut parser = SseParser::new(max);
        let mut events = Vec::new();
        for chunk in chunks {
            parser.push(chunk, &mut |event| events.push(event));
        }
        parser.finish();
        (events, parser.last_event_id().to_vec())
    }

    fn parse(max: usize, stream: &[u8]) -> Vec<SseEvent> {
        parse_chunks(max, [stream]).0
    }

    /// The standard's algorithm, written the plain way over a whole stream:
    /// the oracle for the incremental parser.
    fn reference(max: usize, stream: &[u8]) -> (Vec<SseEvent>, Vec<u8>) {
        let mut rest = stream.strip_prefix(BOM).unwrap_or(stream);
        let mut lines = Vec::new();
        while let Some(end) = rest.iter().position(|&b| b == b'\r' || b == b'\n') {
            lines.push(&rest[..end]);
            let skip = if rest[end..].starts_with(b"\r\n") {
                2
            } else {
                1
            };
            rest = &rest[end + skip..];
        }
        // `rest` is an unterminated line: discarded with its event.
        let (mut data, mut event_type, mut id_buffer) = (Vec::new(), Vec::new(), Vec::new());
        let mut own_id: Option<Vec<u8>> = None;
        let mut last_event_id = Vec::new();
        let mut events = Vec::new();
        // What rmcp's parser (sse-stream 0.2) refuses, written its way.
        let (mut lenient, mut fields) = (false, 0u8);
        let cut = |value: &[u8]| value[..value.len().min(MAX_FIELD_BYTES)].to_vec();
        for line in lines {
            if line.is_empty() {
                last_event_id.clone_from(&id_buffer);
                if !data.is_empty() {
                    data.pop(); // the last LF
                    let data = if data.len() <= max {
                        SseData::Held(Bytes::from(data.clone()))
                    } else {
                        let mut scanner = TopLevelScanner::new();
                        scanner.push(&data);
                        SseData::Scanned {
                            len: data.len() as u64,
                            scan: scanner.finish(),
                        }
                    };
                    events.push(SseEvent {
                        event: (!event_type.is_empty()).then(|| Bytes::from(cut(&event_type))),
                        data,
                        id: own_id.as_deref().map(|id| Bytes::from(cut(id))),
                        last_event_id: Bytes::from(cut(&last_event_id)),
                        id_truncated: last_event_id.len() > MAX_FIELD_BYTES,
                        lenient,
                    });
                }
                fields = 0;
                data.clear();
                event_type.clear();
                own_id = None;
                continue;
            }
            if line[0] == b':' {
                continue;
            }
            let (name, value) = match line.iter().position(|&b| b == b':') {
                Some(at) => {
                    let value = &line[at + 1..];
                    (&line[..at], value.strip_prefix(b" ").unwrap_or(value))
                }
                None => {
                    lenient = true;
                    (line, &b""[..])
                }
            };
            let text = std::str::from_utf8(value);
            let bit = match name {
                b"data" => Some(0),
                b"event" => Some(1),
                b"id" if value.contains(&0) => None,
                b"id" => Some(2),
                b"retry" => {
                    let retry = text.ok().and_then(|v| v.trim_ascii().parse::<u64>().ok());
                    lenient |= retry.is_none();
                    Some(4)
                }
                _ => {
                    lenient = true;
                    None
                }
            };
            if let Some(bit) = bit {
                lenient |= text.is_err() || fields & bit != 0;
                fields |= bit;
            }
            match name {
                b"data" => {
                    data.extend_from_slice(value);
                    data.push(b'\n');
                }
                b"event" => event_type = value.to_vec(),
                b"id" if !value.contains(&0) => {
                    id_buffer = value.to_vec();
                    own_id = Some(value.to_vec());
                }
                _ => {}
            }
        }
        (events, cut(&last_event_id))
    }

    fn held(data: &[u8]) -> SseData {
        SseData::Held(Bytes::copy_from_slice(data))
    }

    fn datas(events: &[SseEvent]) -> Vec<SseData> {
        events.iter().map(|event| event.data.clone()).collect()
    }

    #[test]
    fn every_line_ending() {
        for stream in [
            &b"data: a\n\n"[..],
            b"data: a\r\r",
            b"data: a\r\n\r\n",
            b"data: a\r\n\n",
            b"data: a\n\r\n",
            b"data: a\r\n\r",
        ] {
            assert_eq!(datas(&parse(64, stream)), [held(b"a")], "{stream:?}");
        }
        // A CRLF is one line end, an LFCR two.
        assert_eq!(
            datas(&parse(64, b"data: a\r\ndata: b\r\n\r\n")),
            [held(b"a\nb")]
        );
        assert_eq!(
            datas(&parse(64, b"data: a\n\rdata: b\n\n")),
            [held(b"a"), held(b"b")]
        );
        // A lone CR ends a line even when nothing follows yet.
        let mut parser = SseParser::new(64);
        let mut events = Vec::new();
        parser.push(b"data: a\r\r", &mut |event| events.push(event));
        assert_eq!(datas(&events), [held(b"a")]);
    }

    #[test]
    fn crlf_split_across_chunks_is_one_line_end() {
        let (events, _) = parse_chunks(64, [&b"data: a\r"[..], b"\ndata: b\r", b"\n\r", b"\n"]);
        assert_eq!(datas(&events), [held(b"a\nb")]);
    }

    #[test]
    fn every_split_of_a_stream_gives_the_same_events() {
        let stream: &[u8] = b"\xEF\xBB\xBF: hello\r\nid: 1\r\nevent: message\r\ndata: {\"a\":\r\n\
            data:1}\r\n\r\nretry: 10\rdata\r\rid\ndata: x\n\nid: a\0b\ndata:  y\n\nbogus: 1\n\
            dataX: no\ndata: last\r\n\r\n: tail\ndata: unterminated";
        let whole = parse_chunks(16, [stream]);
        assert_eq!(whole, reference(16, stream));
        assert_eq!(whole.0.len(), 5);
        for i in 0..=stream.len() {
            assert_eq!(
                parse_chunks(16, [&stream[..i], &stream[i..]]),
                whole,
                "split at {i}"
            );
            for j in i..=stream.len() {
                let chunks = [&stream[..i], &stream[i..j], &stream[j..]];
                assert_eq!(parse_chunks(16, chunks), whole, "split at {i}, {j}");
            }
        }
        let bytewise = parse_chunks(16, stream.chunks(1));
        assert_eq!(bytewise, whole);
    }

    #[test]
    fn byte_order_mark_only_at_the_start() {
        assert_eq!(datas(&parse(64, b"\xEF\xBB\xBFdata: a\n\n")), [held(b"a")]);
        // Split across chunks.
        let (events, _) = parse_chunks(64, [&b"\xEF"[..], b"\xBB", b"\xBFdata: a\n\n"]);
        assert_eq!(datas(&events), [held(b"a")]);
        // Only one is skipped; later, it is part of the field name.
        assert!(parse(64, b"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\n").is_empty());
        assert_eq!(
            datas(&parse(64, b"data: a\n\n\xEF\xBB\xBFdata: b\n\n")),
            [held(b"a")]
        );
        // A partial BOM is content: `\xEF\xBB` + `data` is no field.
        assert!(parse(64, b"\xEF\xBBdata: a\n\n").is_empty());
        let (events, _) = parse_chunks(64, [&b"\xEF"[..], b"data: a\n\n"]);
        assert!(events.is_empty());
    }

    #[test]
    fn comments_and_fields() {
        let events = parse(
            64,
            b": comment\n:\ndata\ndata:\ndata:x\ndata:  two spaces\ndataX: no\nDATA: no\n\
              data : no\nretry: 5\nfoo: bar\nevent\n\n",
        );
        assert_eq!(datas(&events), [held(b"\n\nx\n two spaces")]);
        assert!(events[0].is_message());
        // One `data:` line is an event with empty data; no data line is none.
        assert_eq!(datas(&parse(64, b"data:\n\n")), [held(b"")]);
        assert_eq!(datas(&parse(64, b"data\n\n")), [held(b"")]);
        assert!(parse(64, b"event: x\nid: 3\n\n: only a comment\n\n").is_empty());
        // Event types.
        let events = parse(
            64,
            b"event: ping\ndata: 1\n\nevent: message\ndata: 2\n\ndata: 3\n\n",
        );
        assert_eq!(events[0].event.as_deref(), Some(&b"ping"[..]));
        assert!(!events[0].is_message());
        assert!(events[1].is_message() && events[2].is_message());
        assert_eq!(events[2].event, None);
        // The event type does not carry over, even from an event without data.
        let events = parse(64, b"event: ping\n\ndata: 1\n\n");
        assert!(events[0].is_message());
    }

    #[test]
    fn ids_persist_and_nul_is_ignored() {
        let (events, last) = parse_chunks(
            64,
            [&b"id: 1\ndata: a\n\ndata: b\n\nid: 2\0\ndata: c\n\nid\ndata: d\n\nid: 9\n\nid: 10\n"[..]],
        );
        let ids: Vec<_> = events
            .iter()
            .map(|event| (event.id.clone(), event.last_event_id.clone()))
            .collect();
        assert_eq!(
            ids,
            [
                (Some(Bytes::from("1")), Bytes::from("1")),
                (None, Bytes::from("1")),
                (None, Bytes::from("1")),
                (Some(Bytes::new()), Bytes::new()),
            ]
        );
        // An event without data still commits its id; an unterminated one
        // does not.
        assert_eq!(last, b"9");
    }

    #[test]
    fn long_ids_are_cut_and_flagged() {
        let mut stream = b"id: ".to_vec();
        stream.extend(std::iter::repeat_n(b'7', MAX_FIELD_BYTES + 10));
        stream.extend_from_slice(b"\nevent: ");
        stream.extend(std::iter::repeat_n(b'e', MAX_FIELD_BYTES + 10));
        stream.extend_from_slice(b"\ndata: x\n\ndata: y\n\n");
        let events = parse(64, &stream);
        assert_eq!(events[0].id.as_ref().map(Bytes::len), Some(MAX_FIELD_BYTES));
        assert!(events[0].id_truncated && events[1].id_truncated);
        assert_eq!(
            events[0].event.as_ref().map(Bytes::len),
            Some(MAX_FIELD_BYTES)
        );
        assert!(!events[0].is_message());
        assert_eq!(
            (events.clone(), b"7".repeat(MAX_FIELD_BYTES)),
            reference(64, &stream)
        );
    }

    #[test]
    fn what_a_strict_parser_refuses_is_flagged() {
        let lenient = |stream: &[u8]| {
            let mut parser = SseParser::new(64);
            parser.push(stream, &mut |_| {});
            parser.lenient()
        };
        for fine in [
            &b": comment\n:\n\n"[..],
            b"data: \xC3\xA9\nid: 1\nevent: e\nretry: 10\n\nid: 2\nevent: f\nretry:  +7 \t\n\n",
            b"id: 1\nid: a\0b\n\n",
            b"data: a\ndata: b\n\n",
        ] {
            assert!(!lenient(fine), "{fine:?}");
        }
        for refused in [
            &b"data\n\n"[..],
            b"foo: 1\n\n",
            b"dataX: 1\n\n",
            b"averylongname\n",
            b"event: a\nevent: b\n\n",
            b"id: 1\nid: 2\n\n",
            b"retry: 1\nretry: 2\n\n",
            b"retry: x\n",
            b"retry:\n",
            b"retry: 18446744073709551616\n",
            b"data: \xC3\n",
            b"id: \xFF\n",
        ] {
            assert!(lenient(refused), "{refused:?}");
        }
        // Sticky: later events are flagged too, until the stream ends.
        let events = parse(64, b"data: 1\n\nfoo\ndata: 2\n\ndata: 3\n\n");
        let flags: Vec<_> = events.iter().map(|event| event.lenient).collect();
        assert_eq!(flags, [false, true, true]);
    }

    #[test]
    fn an_unterminated_event_is_discarded() {
        assert!(parse(64, b"data: a\n").is_empty());
        assert!(parse(64, b"data: a").is_empty());
        assert_eq!(datas(&parse(64, b"data: a\n\ndata: b\n")), [held(b"a")]);
        // After finish, a new stream starts (BOM allowed again).
        let mut parser = SseParser::new(64);
        let mut events = Vec::new();
        parser.push(b"id: 4\ndata: a\n\ndata: b", &mut |event| {
            events.push(event)
        });
        parser.finish();
        parser.push(b"\xEF\xBB\xBFdata: c\n\n", &mut |event| events.push(event));
        assert_eq!(datas(&events), [held(b"a"), held(b"c")]);
        assert_eq!(&events[1].last_event_id[..], b"4");
    }

    #[test]
    fn oversized_data_is_scanned_not_held() {
        let message = br#"{"jsonrpc":"2.0","id":"abc","result":{"content":"0123456789"}}"#;
        let mut stream = b"data: ".to_vec();
        stream.extend_from_slice(&message[..17]);
        stream.extend_from_slice(b"\ndata:");
        stream.extend_from_slice(&message[17..]);
        stream.extend_from_slice(b"\n\ndata: small\n\n");
        let events = parse(32, &stream);
        let SseData::Scanned { len, scan } = &events[0].data else {
            panic!("{events:?}");
        };
        assert_eq!(*len, message.len() as u64 + 1);
        assert!(scan.is_well_formed() && scan.is_object && scan.has_result && !scan.has_method);
        assert_eq!(
            scan.id,
            super::super::scan::IdScan::Raw(b"\"abc\"".to_vec())
        );
        assert!(events[0].overflow());
        assert_eq!(events[1].data, held(b"small"));
        // Exactly the bound is still held.
        assert_eq!(datas(&parse(5, b"data: 12345\n\n")), [held(b"12345")]);
        assert!(parse(4, b"data: 12345\n\n")[0].overflow());
        // Line joins count.
        assert!(parse(4, b"data: 12\ndata: 45\n\n")[0].overflow());
    }

    #[test]
    fn memory_stays_bounded_on_100_mb_without_a_line_end() {
        const MAX: usize = 64 * 1024;
        let bound = MAX + 3 * MAX_FIELD_BYTES + std::mem::size_of::<TopLevelScanner>();
        let mut chunk = vec![b'x'; 64 * 1024];
        let prefixes = [
            &b"data: {\"id\":1,\"result\":\""[..],
            b"data",
            b"id: ",
            b"event: ",
            b":",
            b"retry: ",
        ];
        for prefix in prefixes {
            let mut parser = SseParser::new(MAX);
            let mut events = Vec::new();
            chunk[..prefix.len()].copy_from_slice(prefix);
            parser.push(&chunk, &mut |event| events.push(event));
            chunk[..prefix.len()].fill(b'x');
            // 100 MB of JSON data (held, then scanned); 16 MB of the others
            // (skipped or cut), to keep the test quick in debug builds.
            let data = prefix.starts_with(b"data:");
            let total: usize = if data { 100 << 20 } else { 16 << 20 };
            for _ in 1..total / chunk.len() {
                parser.push(&chunk, &mut |event| events.push(event));
                assert!(parser.held_bytes() <= bound, "{}", parser.held_bytes());
            }
            parser.push(b"\n\n", &mut |event| events.push(event));
            assert!(parser.held_bytes() <= bound);
            if !data {
                // `dataxxx...` is no `data` field; the others have no data.
                assert!(events.is_empty(), "{prefix:?}");
                continue;
            }
            let [event] = &events[..] else {
                panic!("{events:?}");
            };
            let SseData::Scanned { len, scan } = &event.data else {
                panic!("{event:?}");
            };
            assert_eq!(*len, total as u64 - 6);
            assert!(scan.valid && !scan.complete && scan.has_result);
            assert_eq!(scan.id, super::super::scan::IdScan::Raw(b"1".to_vec()));
        }
    }

    /// Streams made of the pieces that matter to the grammar.
    fn stream() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(&b"data"[..]),
            Just(&b"data:"[..]),
            Just(&b"data: "[..]),
            Just(&b"id:"[..]),
            Just(&b"id"[..]),
            Just(&b"event:"[..]),
            Just(&b"retry: 1"[..]),
            Just(&b"dataX:"[..]),
            Just(&b":"[..]),
            Just(&b" "[..]),
            Just(&b"\r"[..]),
            Just(&b"\n"[..]),
            Just(&b"\r\n"[..]),
            Just(&b"\n\n"[..]),
            Just(&b"\0"[..]),
            Just(&b"\xEF\xBB\xBF"[..]),
            Just(&b"{\"id\":1,\"result\":{}}"[..]),
            Just(&b"message"[..]),
            Just(&b"x"[..]),
            Just(&b"\xC3\xA9"[..]),
            Just(&b"\xC3"[..]),
            Just(&b"\t"[..]),
            Just(&b"+"[..]),
            Just(&b"18446744073709551616"[..]),
            Just(&b"9"[..]),
        ];
        prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #[test]
        fn chunking_never_changes_the_events(
            stream in stream(),
            max in 0usize..48,
            splits in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let whole = parse_chunks(max, [&stream[..]]);
            prop_assert_eq!(&whole, &reference(max, &stream));
            let mut cuts: Vec<usize> = splits.iter().map(|i| i.index(stream.len() + 1)).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut at = 0;
            for cut in cuts {
                chunks.push(&stream[at..cut]);
                at = cut;
            }
            chunks.push(&stream[at..]);
            prop_assert_eq!(parse_chunks(max, chunks), whole);
        }

        #[test]
        fn arbitrary_bytes_match_the_reference(
            stream in prop::collection::vec(any::<u8>(), 0..200),
            max in 0usize..16,
        ) {
            prop_assert_eq!(parse_chunks(max, stream.chunks(7)), reference(max, &stream));
        }
    }
}
