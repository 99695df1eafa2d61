//! A streaming scan of one JSON-RPC message for the few top-level facts the
//! proxy routes on, in O(1) memory whatever the size or depth of the message.
//!
//! [`TopLevelScanner`] is fed the bytes of one JSON text in chunks of any size
//! and reports, in a [`ScanResult`]: whether the value is an object (or an
//! array: a batch), whether it has the top-level keys `"method"`, `"result"`,
//! `"error"` and `"id"`, the exact bytes of the `id` and `method` values when
//! they are short, and whether the text is well formed.
//!
//! # Agreement with `serde_json`
//!
//! The scanner is a full JSON validator built to agree with
//! `serde_json::from_slice::<serde_json::Value>` (what the proxy and rmcp
//! parse with) on every input, with these documented exceptions:
//!
//! - Depth. `serde_json` refuses nesting deeper than
//!   [`SERDE_JSON_MAX_DEPTH`]; the scanner does not refuse anything for depth,
//!   it reports [`ScanResult::max_depth`] and [`ScanResult::is_well_formed`]
//!   applies serde's limit. Containers nested deeper than [`CHECKED_DEPTH`]
//!   are only tracked lexically (strings and brackets are followed, so the
//!   end of the message is still found), their inner syntax is not checked.
//! - Float range. Like `serde_json`, a number whose value overflows `f64`
//!   (`1e400`) is an error. The check is exact for numbers of at most
//!   [`MAX_NUMBER_BYTES`] bytes; a longer number within a factor of ten of
//!   `f64::MAX` is taken as valid.
//!
//! Keys are compared after JSON unescaping, like every JSON parser does:
//! `"\u0069d"` is the key `id`. Duplicate top-level keys are valid JSON (the
//! last one wins in `serde_json`, `JSON.parse` and Python's `json`, while a
//! typed deserializer such as rmcp's refuses them): they are reported in
//! [`ScanResult::duplicate_keys`] so the caller can refuse the message.

#![forbid(unsafe_code)]

/// The longest `id` (or `method`) value, in bytes as sent, that is captured.
pub const MAX_RAW_VALUE_BYTES: usize = 256;

/// The longest top-level key, in bytes as sent (escapes included), that is
/// decoded; a longer key cannot spell any of the keys the scanner looks for
/// (`"method"` fully escaped is 36 bytes).
pub const MAX_KEY_BYTES: usize = 64;

/// Containers nested deeper than this are followed only lexically.
pub const CHECKED_DEPTH: u64 = 1024;

/// The deepest nesting `serde_json` accepts (its recursion limit is 128: the
/// 128th nested container is refused).
pub const SERDE_JSON_MAX_DEPTH: u64 = 127;

/// Numbers up to this many bytes are range-checked exactly.
pub const MAX_NUMBER_BYTES: usize = 1024;

/// What the scan saw of a top-level value (`id` or `method`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdScan {
    /// The key is absent (or its value did not end before the input did).
    Absent,
    /// The exact bytes of the value as sent, e.g. `5`, `"abc"` or `null`.
    /// Whitespace inside a container value is kept; around it, dropped.
    Raw(Vec<u8>),
    /// The value is longer than [`MAX_RAW_VALUE_BYTES`].
    TooLong,
}

/// The facts [`TopLevelScanner`] learned from a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanResult {
    /// The top-level value is an object.
    pub is_object: bool,
    /// The top-level value is an array (a JSON-RPC batch).
    pub is_array: bool,
    /// The end of the top-level value was seen.
    pub complete: bool,
    /// No syntax error was seen (see the module docs for what is checked).
    pub valid: bool,
    /// The deepest nesting seen: 1 for `{}` or `[]`, 0 for a scalar.
    pub max_depth: u64,
    /// The top-level object has the key `"method"`.
    pub has_method: bool,
    /// The top-level object has the key `"result"`.
    pub has_result: bool,
    /// The top-level object has the key `"error"`.
    pub has_error: bool,
    /// The top-level object has the key `"id"`.
    pub has_id: bool,
    /// One of `id`, `method`, `result` or `error` appears more than once at
    /// the top level.
    pub duplicate_keys: bool,
    /// The `id` value (the last one if duplicated).
    pub id: IdScan,
    /// The `method` value (the last one if duplicated); any JSON value, the
    /// caller checks that it is a string.
    pub method: IdScan,
    /// How many bytes were scanned.
    pub len: u64,
}

impl ScanResult {
    /// Whether `serde_json::from_slice::<serde_json::Value>` accepts the
    /// scanned bytes (up to the exceptions in the module docs): complete,
    /// valid, and within serde's depth limit.
    pub fn is_well_formed(&self) -> bool {
        self.complete && self.valid && self.max_depth <= SERDE_JSON_MAX_DEPTH
    }
}

/// A top-level key the scanner cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Id,
    Method,
    Result,
    Error,
    Other,
}

/// Where the scanner is inside a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Str {
    /// Plain characters.
    Plain,
    /// After a backslash.
    Escape,
    /// Inside `\uXXXX`: hex digits still to come, the value so far.
    Hex(u8, u16),
    /// After a leading surrogate escape: `\` must follow.
    LowBackslash,
    /// Then `u`.
    LowU,
    /// Then the trailing surrogate's hex digits.
    LowHex(u8, u16),
    /// Inside a multi-byte UTF-8 sequence: continuation bytes still to come,
    /// and the range of the next one.
    Utf8(u8, u8, u8),
}

/// Where the scanner is inside a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    E,
    ESign,
    Exp,
}

impl Num {
    fn is_final(self) -> bool {
        matches!(self, Num::Zero | Num::Int | Num::Frac | Num::Exp)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A value is expected (the top-level one, or after `:` or `,`).
    Value,
    /// After `[`: a value or `]`.
    ValueOrEnd,
    /// After `{`: a key or `}`.
    KeyOrEnd,
    /// After `,` in an object: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// After a value in a container: `,` or the closing bracket.
    AfterValue,
    /// Inside a string.
    Str(Str),
    /// Inside a number.
    Num(Num),
    /// Inside `true`, `false` or `null`: the literal, bytes of it seen.
    Lit(&'static [u8], u8),
    /// Deeper than [`CHECKED_DEPTH`]: only strings and brackets are followed.
    Deep,
    /// The top-level value ended: only whitespace may follow.
    Done,
    /// A syntax error was seen; the rest is ignored.
    Failed,
}

/// The value of an interesting key being captured.
#[derive(Debug, Clone)]
struct Capture {
    key: Key,
    bytes: Vec<u8>,
    too_long: bool,
}

/// The magnitude of the number being scanned, for the `f64` range check.
#[derive(Debug, Clone, Default)]
struct NumInfo {
    /// Integer digits (0 when the integer part is `0`).
    int_digits: u64,
    /// Zeros right after the point before the first other digit, while the
    /// integer part is `0`.
    frac_zeros: u64,
    /// A digit other than 0 was seen after the point.
    frac_nonzero: bool,
    exp_negative: bool,
    exp: u64,
    /// The number's bytes while it is at most [`MAX_NUMBER_BYTES`] long.
    text: Vec<u8>,
    len: usize,
}

/// An incremental scanner of one JSON text; see the module docs.
///
/// Memory is bounded by a few hundred bytes plus [`MAX_NUMBER_BYTES`],
/// whatever the input.
#[derive(Debug, Clone)]
pub struct TopLevelScanner {
    state: State,
    /// The state strings return to when they end: a key (`Colon`) or a value.
    str_is_key: bool,
    depth: u64,
    max_depth: u64,
    /// Bit `d` is set when the container at depth `d + 1` is an object
    /// (for depths up to [`CHECKED_DEPTH`]).
    kinds: [u64; (CHECKED_DEPTH / 64) as usize],
    started: bool,
    is_object: bool,
    is_array: bool,
    complete: bool,
    /// The raw bytes of the top-level key being read.
    key: Vec<u8>,
    key_too_long: bool,
    /// The top-level key whose value comes next.
    pending: Key,
    capture: Option<Capture>,
    num: NumInfo,
    seen: [bool; 4],
    duplicate_keys: bool,
    id: IdScan,
    method: IdScan,
    len: u64,
}

impl Default for TopLevelScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl TopLevelScanner {
    /// A scanner at the start of a JSON text.
    pub fn new() -> Self {
        Self {
            state: State::Value,
            str_is_key: false,
            depth: 0,
            max_depth: 0,
            kinds: [0; (CHECKED_DEPTH / 64) as usize],
            started: false,
            is_object: false,
            is_array: false,
            complete: false,
            key: Vec::new(),
            key_too_long: false,
            pending: Key::Other,
            capture: None,
            num: NumInfo::default(),
            seen: [false; 4],
            duplicate_keys: false,
            id: IdScan::Absent,
            method: IdScan::Absent,
            len: 0,
        }
    }

    /// Feeds the next bytes of the text.
    pub fn push(&mut self, bytes: &[u8]) {
        self.len = self.len.saturating_add(bytes.len() as u64);
        let mut i = 0;
        while i < bytes.len() {
            match self.state {
                State::Failed => return,
                State::Str(Str::Plain) => {
                    // The bulk of a message: a run of plain ASCII in a string.
                    let run = plain_run(&bytes[i..]);
                    if run > 0 {
                        self.record(&bytes[i..i + run]);
                        if self.str_is_key && self.depth == 1 {
                            self.key_bytes(&bytes[i..i + run]);
                        }
                        i += run;
                        continue;
                    }
                }
                State::Deep => {
                    // Only quotes and brackets matter down there.
                    let run = bytes[i..]
                        .iter()
                        .position(|&b| matches!(b, b'"' | b'[' | b']' | b'{' | b'}'))
                        .unwrap_or(bytes.len() - i);
                    if run > 0 {
                        i += run;
                        continue;
                    }
                }
                _ => {}
            }
            if self.step(bytes[i]) {
                i += 1;
            }
        }
    }

    /// The facts so far, as if the text ended here.
    pub fn finish(&self) -> ScanResult {
        let mut complete = self.complete;
        let mut valid = self.state != State::Failed;
        if let State::Num(num) = self.state {
            // A number is the one value whose end is seen only at the next
            // byte: the end of the input ends a top-level number.
            if self.depth == 0 {
                complete = num.is_final() && self.number_in_range();
                valid = complete;
            }
        }
        let has = |key: Key| self.seen[key as usize];
        ScanResult {
            is_object: self.is_object,
            is_array: self.is_array,
            complete,
            valid,
            max_depth: self.max_depth,
            has_method: has(Key::Method),
            has_result: has(Key::Result),
            has_error: has(Key::Error),
            has_id: has(Key::Id),
            duplicate_keys: self.duplicate_keys,
            id: self.id.clone(),
            method: self.method.clone(),
            len: self.len,
        }
    }

    /// Handles one byte; false when the byte was not consumed (it ended a
    /// number and must be handled again in the next state).
    fn step(&mut self, b: u8) -> bool {
        if let State::Num(num) = self.state
            && !matches!(b, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
        {
            if num.is_final() && self.number_in_range() {
                self.value_ended();
            } else {
                self.fail();
            }
            return false;
        }
        self.record(&[b]);
        match self.state {
            State::Value => self.value(b),
            State::ValueOrEnd => {
                if b == b']' {
                    self.close(false);
                } else {
                    self.value(b);
                }
            }
            State::KeyOrEnd => match b {
                b'"' => self.start_key(),
                b'}' => self.close(true),
                _ if is_ws(b) => {}
                _ => self.fail(),
            },
            State::Key => match b {
                b'"' => self.start_key(),
                _ if is_ws(b) => {}
                _ => self.fail(),
            },
            State::Colon => match b {
                b':' => self.state = State::Value,
                _ if is_ws(b) => {}
                _ => self.fail(),
            },
            State::AfterValue => match b {
                b',' => {
                    self.state = if self.in_object() {
                        State::Key
                    } else {
                        State::Value
                    }
                }
                b'}' => self.close(true),
                b']' => self.close(false),
                _ if is_ws(b) => {}
                _ => self.fail(),
            },
            State::Str(s) => self.string(s, b),
            State::Num(num) => self.number(num, b),
            State::Lit(lit, seen) => {
                let seen = usize::from(seen);
                if lit.get(seen) != Some(&b) {
                    self.fail();
                } else if seen + 1 == lit.len() {
                    self.value_ended();
                } else {
                    self.state = State::Lit(lit, (seen + 1) as u8);
                }
            }
            State::Deep => match b {
                b'"' => {
                    self.str_is_key = false;
                    self.state = State::Str(Str::Plain);
                }
                b'[' | b'{' => self.open(b == b'{'),
                b']' | b'}' => {
                    self.depth -= 1;
                    if self.depth == CHECKED_DEPTH {
                        self.state = State::AfterValue;
                    }
                }
                _ => {}
            },
            State::Done => {
                if !is_ws(b) {
                    self.fail();
                }
            }
            State::Failed => {}
        }
        true
    }

    /// The first byte of a value.
    fn value(&mut self, b: u8) {
        if is_ws(b) {
            return;
        }
        if self.depth == 0 {
            if self.started {
                return self.fail();
            }
            self.started = true;
            self.is_object = b == b'{';
            self.is_array = b == b'[';
        } else if self.depth == 1 && self.is_object && matches!(self.pending, Key::Id | Key::Method)
        {
            self.capture = Some(Capture {
                key: self.pending,
                bytes: vec![b],
                too_long: false,
            });
        }
        match b {
            b'{' => self.open(true),
            b'[' => self.open(false),
            b'"' => {
                self.str_is_key = false;
                self.state = State::Str(Str::Plain);
            }
            b'-' => self.start_number(Num::Minus, b),
            b'0' => self.start_number(Num::Zero, b),
            b'1'..=b'9' => {
                self.start_number(Num::Int, b);
                self.num.int_digits = 1;
            }
            b't' => self.state = State::Lit(b"true", 1),
            b'f' => self.state = State::Lit(b"false", 1),
            b'n' => self.state = State::Lit(b"null", 1),
            _ => self.fail(),
        }
    }

    fn start_key(&mut self) {
        self.str_is_key = true;
        self.state = State::Str(Str::Plain);
        if self.depth == 1 {
            self.key.clear();
            self.key_too_long = false;
        }
    }

    fn open(&mut self, object: bool) {
        self.depth += 1;
        self.max_depth = self.max_depth.max(self.depth);
        if self.depth > CHECKED_DEPTH {
            self.state = State::Deep;
            return;
        }
        let bit = self.depth - 1;
        let word = &mut self.kinds[(bit / 64) as usize];
        if object {
            *word |= 1 << (bit % 64);
        } else {
            *word &= !(1 << (bit % 64));
        }
        self.state = if object {
            State::KeyOrEnd
        } else {
            State::ValueOrEnd
        };
    }

    fn close(&mut self, object: bool) {
        if self.depth == 0 || self.in_object() != object {
            return self.fail();
        }
        self.depth -= 1;
        self.value_ended();
    }

    /// Whether the innermost open container (checked depths only) is an object.
    fn in_object(&self) -> bool {
        let bit = self.depth.wrapping_sub(1);
        bit < CHECKED_DEPTH && self.kinds[(bit / 64) as usize] & (1 << (bit % 64)) != 0
    }

    /// A value (scalar or container) just ended at `self.depth`.
    fn value_ended(&mut self) {
        if self.depth == 1
            && let Some(capture) = self.capture.take()
        {
            let value = if capture.too_long {
                IdScan::TooLong
            } else {
                IdScan::Raw(capture.bytes)
            };
            match capture.key {
                Key::Method => self.method = value,
                _ => self.id = value,
            }
        }
        self.state = if self.depth == 0 {
            self.complete = true;
            State::Done
        } else if self.depth > CHECKED_DEPTH {
            State::Deep
        } else {
            State::AfterValue
        };
    }

    fn string(&mut self, s: Str, b: u8) {
        let top_key = self.str_is_key && self.depth == 1;
        let next = match s {
            Str::Plain => match b {
                b'"' => {
                    if self.depth > CHECKED_DEPTH {
                        self.state = State::Deep;
                    } else if self.str_is_key {
                        if top_key {
                            self.key_ended();
                        }
                        self.state = State::Colon;
                    } else {
                        self.value_ended();
                    }
                    return;
                }
                b'\\' => Str::Escape,
                0x00..=0x1f => return self.fail(),
                0x20..=0x7f => Str::Plain,
                0xc2..=0xdf => Str::Utf8(1, 0x80, 0xbf),
                0xe0 => Str::Utf8(2, 0xa0, 0xbf),
                0xe1..=0xec | 0xee..=0xef => Str::Utf8(2, 0x80, 0xbf),
                0xed => Str::Utf8(2, 0x80, 0x9f),
                0xf0 => Str::Utf8(3, 0x90, 0xbf),
                0xf1..=0xf3 => Str::Utf8(3, 0x80, 0xbf),
                0xf4 => Str::Utf8(3, 0x80, 0x8f),
                _ => return self.fail(),
            },
            Str::Utf8(need, low, high) => {
                if !(low..=high).contains(&b) {
                    return self.fail();
                }
                if need == 1 {
                    Str::Plain
                } else {
                    Str::Utf8(need - 1, 0x80, 0xbf)
                }
            }
            Str::Escape => match b {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Str::Plain,
                b'u' => Str::Hex(4, 0),
                _ => return self.fail(),
            },
            Str::Hex(left, acc) | Str::LowHex(left, acc) => {
                let Some(digit) = hex(b) else {
                    return self.fail();
                };
                let acc = (acc << 4) | u16::from(digit);
                let low = matches!(s, Str::LowHex(..));
                if left > 1 {
                    if low {
                        Str::LowHex(left - 1, acc)
                    } else {
                        Str::Hex(left - 1, acc)
                    }
                } else if low {
                    // serde_json: a leading surrogate needs a trailing one.
                    if !(0xdc00..=0xdfff).contains(&acc) {
                        return self.fail();
                    }
                    Str::Plain
                } else if (0xdc00..=0xdfff).contains(&acc) {
                    return self.fail();
                } else if (0xd800..=0xdbff).contains(&acc) {
                    Str::LowBackslash
                } else {
                    Str::Plain
                }
            }
            Str::LowBackslash => {
                if b != b'\\' {
                    return self.fail();
                }
                Str::LowU
            }
            Str::LowU => {
                if b != b'u' {
                    return self.fail();
                }
                Str::LowHex(4, 0)
            }
        };
        if top_key {
            self.key_bytes(&[b]);
        }
        self.state = State::Str(next);
    }

    fn key_bytes(&mut self, bytes: &[u8]) {
        if self.key_too_long {
            return;
        }
        if self.key.len() + bytes.len() > MAX_KEY_BYTES {
            self.key_too_long = true;
            self.key = Vec::new();
        } else {
            self.key.extend_from_slice(bytes);
        }
    }

    /// A top-level key ended: which one is it?
    fn key_ended(&mut self) {
        self.pending = Key::Other;
        if !self.key_too_long {
            let mut quoted = Vec::with_capacity(self.key.len() + 2);
            quoted.push(b'"');
            quoted.extend_from_slice(&self.key);
            quoted.push(b'"');
            self.pending = match serde_json::from_slice::<String>(&quoted).as_deref() {
                Ok("id") => Key::Id,
                Ok("method") => Key::Method,
                Ok("result") => Key::Result,
                Ok("error") => Key::Error,
                _ => Key::Other,
            };
        }
        if self.pending != Key::Other {
            let seen = &mut self.seen[self.pending as usize];
            self.duplicate_keys |= *seen;
            *seen = true;
        }
    }

    fn start_number(&mut self, num: Num, b: u8) {
        self.num.int_digits = 0;
        self.num.frac_zeros = 0;
        self.num.frac_nonzero = false;
        self.num.exp_negative = false;
        self.num.exp = 0;
        self.num.text.clear();
        self.num.text.push(b);
        self.num.len = 1;
        self.state = State::Num(num);
    }

    fn number(&mut self, num: Num, b: u8) {
        let info = &mut self.num;
        info.len = info.len.saturating_add(1);
        if info.len <= MAX_NUMBER_BYTES {
            info.text.push(b);
        }
        let digit = b.is_ascii_digit();
        let next = match (num, b) {
            (Num::Minus, b'0') => Num::Zero,
            (Num::Minus, b'1'..=b'9') | (Num::Int, b'0'..=b'9') => {
                info.int_digits = info.int_digits.saturating_add(1);
                Num::Int
            }
            (Num::Zero | Num::Int, b'.') => Num::Dot,
            (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Num::E,
            (Num::Dot | Num::Frac, _) if digit => {
                if info.int_digits == 0 && !info.frac_nonzero {
                    if b == b'0' {
                        info.frac_zeros = info.frac_zeros.saturating_add(1);
                    } else {
                        info.frac_nonzero = true;
                    }
                }
                Num::Frac
            }
            (Num::E, b'+' | b'-') => {
                info.exp_negative = b == b'-';
                Num::ESign
            }
            (Num::E | Num::ESign | Num::Exp, _) if digit => {
                info.exp = info
                    .exp
                    .saturating_mul(10)
                    .saturating_add(u64::from(b - b'0'))
                    .min(1 << 40);
                Num::Exp
            }
            _ => return self.fail(),
        };
        self.state = State::Num(next);
    }

    /// Whether the number just scanned fits an `f64` (serde_json refuses
    /// numbers that overflow to infinity; tiny ones become 0).
    fn number_in_range(&self) -> bool {
        let info = &self.num;
        if info.int_digits == 0 && !info.frac_nonzero {
            return true; // zero
        }
        let exp = if info.exp_negative {
            -i128::from(info.exp)
        } else {
            i128::from(info.exp)
        };
        // The value is below 10^upper and at least 10^(upper - 1).
        let upper = if info.int_digits > 0 {
            i128::from(info.int_digits) + exp
        } else {
            exp - i128::from(info.frac_zeros)
        };
        if upper <= 308 {
            true
        } else if upper >= 310 {
            false
        } else if info.len <= MAX_NUMBER_BYTES {
            serde_json::from_slice::<serde_json::Value>(&info.text).is_ok()
        } else {
            true
        }
    }

    /// Bytes consumed while the value of an interesting key is in progress.
    fn record(&mut self, bytes: &[u8]) {
        if let Some(capture) = &mut self.capture {
            if capture.too_long {
                return;
            }
            if capture.bytes.len() + bytes.len() > MAX_RAW_VALUE_BYTES {
                capture.too_long = true;
                capture.bytes = Vec::new();
            } else {
                capture.bytes.extend_from_slice(bytes);
            }
        }
    }

    fn fail(&mut self) {
        self.state = State::Failed;
        self.capture = None;
    }
}

/// JSON whitespace, as serde_json reads it.
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// How many bytes at the start of `bytes` need no tracking in a string:
/// printable ASCII other than `"` and `\`. A plain loop, fast even in
/// unoptimized (test) builds.
fn plain_run(bytes: &[u8]) -> usize {
    let mut run = 0;
    for &b in bytes {
        if !(0x20..0x80).contains(&b) || b == b'"' || b == b'\\' {
            break;
        }
        run += 1;
    }
    run
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    use super::*;

    fn scan(bytes: &[u8]) -> ScanResult {
        let mut scanner = TopLevelScanner::new();
        scanner.push(bytes);
        scanner.finish()
    }

    fn scan_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> ScanResult {
        let mut scanner = TopLevelScanner::new();
        for chunk in chunks {
            scanner.push(chunk);
        }
        scanner.finish()
    }

    fn raw(bytes: &[u8]) -> IdScan {
        IdScan::Raw(bytes.to_vec())
    }

    /// Any JSON value, read as `serde_json::Value` is (same string, number
    /// and depth checks) but without `Value`'s magic: with serde_json's
    /// `raw_value` feature on, `Value` reads an object whose first key is
    /// `$serde_json::private::RawValue` as the JSON text in its string.
    struct Any;

    impl<'de> serde::Deserialize<'de> for Any {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_any(AnyVisitor)
        }
    }

    struct AnyVisitor;

    impl<'de> serde::de::Visitor<'de> for AnyVisitor {
        type Value = Any;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E>(self, _: bool) -> Result<Any, E> {
            Ok(Any)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Any, E> {
            Ok(Any)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Any, E> {
            Ok(Any)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Any, E> {
            Ok(Any)
        }
        fn visit_str<E>(self, _: &str) -> Result<Any, E> {
            Ok(Any)
        }
        fn visit_unit<E>(self) -> Result<Any, E> {
            Ok(Any)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Any, A::Error> {
            while seq.next_element::<Any>()?.is_some() {}
            Ok(Any)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Any, A::Error> {
            while map.next_key::<String>()?.is_some() {
                map.next_value::<Any>()?;
            }
            Ok(Any)
        }
    }

    /// Whether serde_json accepts the bytes as JSON (see [`Any`]).
    fn serde_accepts(bytes: &[u8]) -> bool {
        serde_json::from_slice::<Any>(bytes).is_ok()
    }

    #[test]
    fn top_level_facts() {
        let r = scan(br#"{"jsonrpc":"2.0","id":5,"result":{"id":6,"method":"x"}}"#);
        assert!(r.is_well_formed() && r.is_object && r.has_result && r.has_id);
        assert!(!r.has_method && !r.has_error && !r.duplicate_keys && !r.is_array);
        assert_eq!(
            (r.id, r.method, r.max_depth),
            (raw(b"5"), IdScan::Absent, 2)
        );

        let r =
            scan(b" {\"method\" : \"tools/call\" ,\t\"id\"\r\n:\n\"a\\\"b\" , \"params\":{}}\n");
        assert!(r.is_well_formed() && r.has_method && r.has_id);
        assert_eq!(r.id, raw(br#""a\"b""#));
        assert_eq!(r.method, raw(br#""tools/call""#));

        let r = scan(br#"{"id":null,"error":{"code":-32600}}"#);
        assert_eq!((r.id, r.has_error), (raw(b"null"), true));
        let r = scan(br#"{"id":{"a" : [1, 2]},"id":-1.5e3}"#);
        assert_eq!((r.id, r.duplicate_keys), (raw(b"-1.5e3"), true));
        let r = scan(br#"{"id":{"a" : [1, 2]}}"#);
        assert_eq!(r.id, raw(br#"{"a" : [1, 2]}"#));
        let r = scan(br#"{"id":true}"#);
        assert_eq!(r.id, raw(b"true"));

        let r = scan(br#"[{"id":1,"result":{}}]"#);
        assert!(r.is_well_formed() && r.is_array && !r.is_object && !r.has_id);
        let r = scan(b"  42 ");
        assert!(r.is_well_formed() && !r.is_object && r.max_depth == 0);
        assert!(scan(b"42").complete);
        assert!(!scan(b"").complete && !scan(b"  ").complete);
        assert!(!scan(br#"{"id":1"#).complete && scan(br#"{"id":1"#).valid);
    }

    #[test]
    fn keys_are_compared_unescaped() {
        let r = scan(br#"{"\u0069d":7,"m\u0065thod":"x","\u0072\u0065sult":1,"err\u006Fr":2}"#);
        assert!(r.has_id && r.has_method && r.has_result && r.has_error);
        assert_eq!(r.id, raw(b"7"));
        let r = scan(br#"{"id":1,"\u0069\u0064":2}"#);
        assert!(r.duplicate_keys);
        assert_eq!(r.id, raw(b"2"));
        let r = scan(br#"{"id ":1,"Id":2,"i\\d":3,"ids":4,"\u0069":5}"#);
        assert!(!r.has_id && r.is_well_formed());
        // A long key is no key of interest, even if it is long only by escapes.
        let long = format!(r#"{{"{}":1}}"#, "\\u0069".repeat(20));
        assert!(!scan(long.as_bytes()).has_id);
    }

    #[test]
    fn long_values_are_flagged() {
        let long = format!(
            r#"{{"id":"{}","method":"{}"}}"#,
            "a".repeat(300),
            "b".repeat(254)
        );
        let r = scan(long.as_bytes());
        assert_eq!(r.id, IdScan::TooLong);
        assert_eq!(
            r.method,
            raw(format!(r#""{}""#, "b".repeat(254)).as_bytes())
        );
        let long = format!(r#"{{"id":"{}"}}"#, "b".repeat(255));
        assert_eq!(scan(long.as_bytes()).id, IdScan::TooLong);
    }

    #[test]
    fn validity_agrees_with_serde() {
        let samples: &[&[u8]] = &[
            b"{}",
            b"[]",
            b"{,}",
            b"[1,]",
            b"{\"a\":1,}",
            b"{\"a\" 1}",
            b"{\"a\":}",
            b"{1:1}",
            b"[1 2]",
            b"[1}",
            b"{\"a\":1]",
            b"{}}",
            b"{} {}",
            b"{}x",
            b"01",
            b"-",
            b"-0",
            b"1.",
            b".5",
            b"1e",
            b"1e+",
            b"1E-5",
            b"+1",
            b"1.5e308",
            b"1.8e308",
            b"1e400",
            b"-1e400",
            b"1e-400",
            b"0.0000000000000000000001e330",
            b"0.0000000000000000000001e331",
            b"1797693134862315807937289714053034150799341327100378269361737789804449682927647509466490179775872070963302864166928879109465555478519404026306574886715058206819089020007083836762738548458177115317644757302700698555713669596228429148198608349364752927190741684443655107043427115596995080930428801779041744977919999",
            b"tru",
            b"true",
            b"trUe",
            b"nul",
            b"null",
            b"nulll",
            b"\"\\u00e9\\uD83D\\uDE00\"",
            b"\"\\ud800\"",
            b"\"\\udc00\"",
            b"\"\\ud800\\u0041\"",
            b"\"\\ud800\\n\"",
            b"\"\\ud800\\ud800\\udc00\"",
            b"\"\\x\"",
            b"\"\\u12G4\"",
            b"\"a\tb\"",
            b"\"a\x7fb\"",
            b"\"\xc3\xa9\"",
            b"\"\xc3\"",
            b"\"\xc0\x80\"",
            b"\"\xed\xa0\x80\"",
            b"\"\xf4\x90\x80\x80\"",
            b"\"\xf0\x9f\x98\x80\"",
            b"\"\xe0\x9f\xbf\"",
            b"\"\xff\"",
            b"\xef\xbb\xbf{}",
            b"{\"a\"\x0c:1}",
            b"{\"a\":1}\x00",
            // serde_json's `Value` (with `raw_value`) reads this as `[1`, an
            // error; it is an object with one odd key to any other parser.
            br#"{"$serde_json::private::RawValue":"[1"}"#,
            br#"{"\u0024serde_json::private::RawValue":"{\"id\":1,\"result\":{}}"}"#,
        ];
        for sample in samples {
            let r = scan(sample);
            assert_eq!(
                r.is_well_formed(),
                serde_accepts(sample),
                "{:?}: {r:?}",
                String::from_utf8_lossy(sample)
            );
            for i in 0..=sample.len() {
                assert_eq!(scan_chunks([&sample[..i], &sample[i..]]), r);
            }
        }
    }

    #[test]
    fn serde_private_keys_are_plain_keys() {
        let text = br#"{"$serde_json::private::RawValue":"{\"id\":1,\"result\":{}}"}"#;
        let r = scan(text);
        assert!(r.is_well_formed() && r.is_object && !r.has_id && !r.has_result);
    }

    #[test]
    fn depth_is_counted_not_stacked() {
        const DEPTH: usize = 1_000_000;
        let mut message = br#"{"jsonrpc":"2.0","method":"tools/call","params":{"a":"#.to_vec();
        for i in 0..DEPTH {
            message.extend_from_slice(if i % 2 == 0 { b"[" } else { b"{\"k\":" });
        }
        message.extend_from_slice(b"\"]}{[\"");
        for i in (0..DEPTH).rev() {
            message.push(if i % 2 == 0 { b']' } else { b'}' });
        }
        message.extend_from_slice(br#"},"id":"after"}"#);
        let started = std::time::Instant::now();
        let r = scan_chunks(message.chunks(4096));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert!(r.complete && r.valid && r.has_method && !r.is_well_formed());
        assert_eq!(r.max_depth, DEPTH as u64 + 2);
        assert_eq!(r.id, raw(br#""after""#));
        assert_eq!(r.method, raw(br#""tools/call""#));
        // Within the checked depth, a bracket mismatch is an error.
        let mut deep = "[".repeat(CHECKED_DEPTH as usize - 1);
        deep.push('}');
        assert!(!scan(deep.as_bytes()).valid);
        // At serde's limit.
        let at = |depth: usize| {
            format!(
                "{{\"a\":{}{}}}",
                "[".repeat(depth - 1),
                "]".repeat(depth - 1)
            )
        };
        assert!(scan(at(127).as_bytes()).is_well_formed() && serde_accepts(at(127).as_bytes()));
        assert!(!scan(at(128).as_bytes()).is_well_formed() && !serde_accepts(at(128).as_bytes()));
    }

    /// A tiny deterministic generator for the serializer's choices.
    struct Choices(u64);

    impl Choices {
        fn next(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }

        fn ws(&mut self, out: &mut Vec<u8>) {
            while self.next(3) == 0 {
                out.push(b" \t\r\n"[self.next(4) as usize]);
            }
        }

        fn hex(&mut self, out: &mut Vec<u8>, unit: u32) {
            let text = if self.next(2) == 0 {
                format!("\\u{unit:04x}")
            } else {
                format!("\\u{unit:04X}")
            };
            out.extend_from_slice(text.as_bytes());
        }

        /// `s` as a JSON string, each character written raw or escaped.
        fn string(&mut self, out: &mut Vec<u8>, s: &str) {
            out.push(b'"');
            for c in s.chars() {
                let short = match c {
                    '"' => Some("\\\""),
                    '\\' => Some("\\\\"),
                    '\n' => Some("\\n"),
                    '\r' => Some("\\r"),
                    '\t' => Some("\\t"),
                    '\u{8}' => Some("\\b"),
                    '\u{c}' => Some("\\f"),
                    '/' => Some("\\/"),
                    _ => None,
                };
                let must = (c as u32) < 0x20 || c == '"' || c == '\\';
                match (short, must || self.next(4) == 0) {
                    (Some(short), true) if self.next(2) == 0 => {
                        out.extend_from_slice(short.as_bytes());
                    }
                    (_, true) => {
                        let mut units = [0; 2];
                        for unit in c.encode_utf16(&mut units) {
                            self.hex(out, u32::from(*unit));
                        }
                    }
                    (_, false) => {
                        out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                    }
                }
            }
            out.push(b'"');
        }

        fn value(&mut self, out: &mut Vec<u8>, value: &Value) {
            match value {
                Value::Object(map) => {
                    out.push(b'{');
                    for (i, (key, value)) in map.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        self.ws(out);
                        self.string(out, key);
                        self.ws(out);
                        out.push(b':');
                        self.ws(out);
                        self.value(out, value);
                        self.ws(out);
                    }
                    self.ws(out);
                    out.push(b'}');
                }
                Value::Array(items) => {
                    out.push(b'[');
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        self.ws(out);
                        self.value(out, item);
                        self.ws(out);
                    }
                    self.ws(out);
                    out.push(b']');
                }
                Value::String(s) => self.string(out, s),
                scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
            }
        }
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z]{0,6}",
            "\\PC{0,8}",
            Just("\"\\/\u{0}\u{1f}\n\u{7f}é😀\u{2028}".to_owned()),
        ]
    }

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            text().prop_map(Value::String),
        ];
        leaf.prop_recursive(5, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((text(), inner), 0..6)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    /// A top-level key: mostly the JSON-RPC ones and near misses.
    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::sample::select(vec![
                "jsonrpc", "id", "method", "params", "result", "error", "Id", "ids", "i", "",
                "id\u{0}", "methods",
            ])
            .prop_map(str::to_owned),
            1 => text(),
        ]
    }

    /// A JSON-RPC-like object with random keys (duplicates allowed), its
    /// text, and the raw text of the last `id` and `method` values.
    fn message() -> impl Strategy<Value = (Vec<u8>, Vec<String>, IdScan, IdScan)> {
        let long = "[a-z]{250,300}".prop_map(Value::String);
        let entry = (key(), prop_oneof![4 => json(), 1 => long]);
        (prop::collection::vec(entry, 0..8), any::<u64>()).prop_map(|(entries, seed)| {
            let mut choices = Choices(seed | 1);
            let mut out = Vec::new();
            let (mut id, mut method) = (IdScan::Absent, IdScan::Absent);
            choices.ws(&mut out);
            out.push(b'{');
            for (i, (key, value)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                choices.ws(&mut out);
                choices.string(&mut out, key);
                choices.ws(&mut out);
                out.push(b':');
                choices.ws(&mut out);
                let start = out.len();
                choices.value(&mut out, value);
                let raw = if out.len() - start > MAX_RAW_VALUE_BYTES {
                    IdScan::TooLong
                } else {
                    IdScan::Raw(out[start..].to_vec())
                };
                match key.as_str() {
                    "id" => id = raw,
                    "method" => method = raw,
                    _ => {}
                }
                choices.ws(&mut out);
            }
            out.push(b'}');
            choices.ws(&mut out);
            let keys = entries.into_iter().map(|(key, _)| key).collect();
            (out, keys, id, method)
        })
    }

    fn split<'a>(bytes: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut at = 0;
        for cut in cuts {
            chunks.push(&bytes[at..cut]);
            at = cut;
        }
        chunks.push(&bytes[at..]);
        chunks
    }

    /// The scan agrees with serde_json's parse of an object.
    fn agrees(r: &ScanResult, map: &Map<String, Value>) -> Result<(), TestCaseError> {
        prop_assert!(r.is_well_formed() && r.is_object && !r.is_array);
        prop_assert_eq!(r.has_id, map.contains_key("id"));
        prop_assert_eq!(r.has_method, map.contains_key("method"));
        prop_assert_eq!(r.has_result, map.contains_key("result"));
        prop_assert_eq!(r.has_error, map.contains_key("error"));
        for (field, key) in [(&r.id, "id"), (&r.method, "method")] {
            match field {
                IdScan::Raw(raw) => {
                    prop_assert!(raw.len() <= MAX_RAW_VALUE_BYTES);
                    let value: Value = serde_json::from_slice(raw).expect("a raw value parses");
                    prop_assert_eq!(Some(&value), map.get(key));
                }
                IdScan::TooLong => prop_assert!(map.contains_key(key)),
                IdScan::Absent => prop_assert!(!map.contains_key(key)),
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn scanner_agrees_with_serde_on_messages(
            (text, keys, id, method) in message(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let map: Map<String, Value> = serde_json::from_slice(&text).expect("valid JSON");
            let r = scan_chunks(split(&text, &cuts));
            agrees(&r, &map)?;
            prop_assert_eq!(&r.id, &id);
            prop_assert_eq!(&r.method, &method);
            let duplicated = ["id", "method", "result", "error"]
                .iter()
                .any(|k| keys.iter().filter(|key| key == k).count() > 1);
            prop_assert_eq!(r.duplicate_keys, duplicated);
            prop_assert_eq!(r.len, text.len() as u64);
        }

        #[test]
        fn validity_agrees_with_serde_on_mutations(
            (text, ..) in message(),
            edits in prop::collection::vec(
                (any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
        ) {
            let mut text = text;
            for (at, byte, kind) in edits {
                let at = at.index(text.len() + 1);
                match kind {
                    0 if at < text.len() => text[at] = byte,
                    1 if at < text.len() => { text.remove(at); }
                    _ => text.insert(at, byte),
                }
            }
            let r = scan(&text);
            prop_assert_eq!(r.is_well_formed(), serde_accepts(&text), "{:?}", String::from_utf8_lossy(&text));
            if let Ok(map) = serde_json::from_slice::<Map<String, Value>>(&text) {
                agrees(&r, &map)?;
            }
            prop_assert_eq!(scan_chunks(text.chunks(3)), r);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let r = scan(&bytes);
            prop_assert_eq!(r.is_well_formed(), serde_accepts(&bytes));
        }

        #[test]
        fn any_value_is_well_formed(value in json(), seed in any::<u64>()) {
            let mut text = Vec::new();
            Choices(seed | 1).value(&mut text, &value);
            let r = scan_chunks(text.chunks(5));
            prop_assert!(r.is_well_formed(), "{:?}", String::from_utf8_lossy(&text));
            prop_assert_eq!(r.is_object, value.is_object());
            prop_assert_eq!(r.is_array, value.is_array());
        }
    }
}
