//! The parser: one pass over each line that validates everything InfluxDB
//! 1.x validates and records where the measurement, tag set and field set
//! are. Tokens are handed out as borrowed slices; unescaping happens only on
//! request and only for tokens that contain a backslash.
//!
//! Escaping follows InfluxDB 1.x exactly: in measurements, tag keys, tag
//! values and field keys a byte preceded by `\` is never a delimiter, and
//! unescaping turns `\,` `\ ` (and `\=` outside measurements) into the bare
//! byte while leaving every other backslash as it is (so `\\` stays two
//! backslashes). In string field values `\"` and `\\` are the escapes.

use std::borrow::Cow;
use std::ops::Range;

use crate::error::{ErrorKind, KeyRole, ParseError};
use crate::precision::Precision;

/// InfluxDB's limit on measurement + tags + field key, in bytes.
pub const MAX_KEY_LEN: usize = 65_535;
/// Length of `#!~#`, which InfluxDB puts between a series key and a field.
const SERIES_FIELD_SEPARATOR: usize = 4;
/// The smallest timestamp InfluxDB 1.x stores, in nanoseconds.
pub const MIN_NANOS: i64 = i64::MIN + 2;
/// The largest timestamp InfluxDB 1.x stores, in nanoseconds.
pub const MAX_NANOS: i64 = i64::MAX - 1;

/// How to parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseOptions {
    /// Unit of the timestamps in the body.
    pub precision: Precision,
    /// Timestamp (ns) given to lines without one; `None` leaves them without.
    pub default_time: Option<i64>,
    /// Accept `u` integers. InfluxDB 1.x refuses them unless built with
    /// uint support; 2.x accepts them.
    pub allow_unsigned: bool,
    /// Longest accepted line, in bytes (never more than 4 GiB).
    pub max_line_len: usize,
    /// Longest accepted string field value, in bytes (InfluxDB: 64 KiB).
    pub max_string_len: usize,
}

impl Default for ParseOptions {
    fn default() -> Self {
        Self {
            precision: Precision::Nanoseconds,
            default_time: None,
            allow_unsigned: false,
            max_line_len: 1 << 20,
            max_string_len: 64 * 1024,
        }
    }
}

/// Parses `buf` with default options: one result per line that is neither
/// blank nor a `#` comment.
pub fn parse_lines(buf: &[u8]) -> Lines<'_> {
    Lines::new(buf, ParseOptions::default())
}

/// Iterator over the lines of a body; see [`parse_lines`].
#[derive(Debug, Clone)]
pub struct Lines<'a> {
    buf: &'a [u8],
    /// The longest prefix of `buf` that is UTF-8, checked once up front:
    /// lines inside it need no check of their own.
    utf8: &'a str,
    pos: usize,
    line_no: usize,
    opts: ParseOptions,
}

impl<'a> Lines<'a> {
    /// Parses `buf` with `opts`.
    pub fn new(buf: &'a [u8], opts: ParseOptions) -> Self {
        // One pass over the whole body is cheaper than one per line.
        let utf8 = match simdutf8::compat::from_utf8(buf) {
            Ok(text) => text,
            Err(e) => std::str::from_utf8(&buf[..e.valid_up_to()]).unwrap_or_default(),
        };
        Self {
            buf,
            utf8,
            pos: 0,
            line_no: 0,
            opts,
        }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = Result<Line<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.buf;
        loop {
            if self.pos >= b.len() {
                return None;
            }
            self.line_no += 1;
            let line_start = self.pos;
            // Leading whitespace (as InfluxDB: space, tab, NUL) is skipped.
            let mut i = line_start;
            while i < b.len() && matches!(b[i], b' ' | b'\t' | 0) {
                i += 1;
            }
            if i >= b.len() {
                self.pos = b.len();
                return None;
            }
            match b[i] {
                b'\n' => {
                    self.pos = i + 1;
                    continue;
                }
                b'\r' if is_terminator(b, i) => {
                    self.pos = (i + 2).min(b.len());
                    continue;
                }
                b'#' => {
                    self.pos = memchr_newline(b, i).map_or(b.len(), |nl| nl + 1);
                    continue;
                }
                _ => {}
            }
            let mut scanner = Scanner {
                b,
                newlines: 0,
                opts: &self.opts,
            };
            let line_no = self.line_no;
            return Some(match scanner.line(i) {
                Ok((parsed, end)) => {
                    self.pos = next_line_start(b, end);
                    self.line_no += scanner.newlines;
                    finish(b, self.utf8, line_start, end, parsed, line_no, &self.opts)
                }
                Err((at, kind)) => {
                    let end = scan_line_end(b, line_start);
                    self.pos = next_line_start(b, end);
                    self.line_no += b[line_start..end].iter().filter(|&&c| c == b'\n').count();
                    Err(ParseError {
                        line: line_no,
                        column: at.saturating_sub(line_start) + 1,
                        kind,
                        span: line_start..trim_cr(b, line_start, end),
                    })
                }
            });
        }
    }
}

/// One valid line: borrowed views of its parts.
///
/// Kept small (56 bytes on 64-bit targets): a write of thousands of lines
/// holds one per line, so the parts are offsets into `text` rather than
/// slices of their own. Lines are at most 4 GiB, whatever
/// [`ParseOptions::max_line_len`] allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    text: &'a str,
    /// In nanoseconds; meaningful with [`Line::HAS_TIMESTAMP`].
    timestamp: i64,
    /// From 1, saturating at `u32::MAX`.
    number: u32,
    /// The measurement is `text[..measurement_end]`.
    measurement_end: u32,
    /// `k=v,k=v` is `text[measurement_end + 1..tags_end]`; no tags when
    /// `tags_end == measurement_end`.
    tags_end: u32,
    fields_start: u32,
    fields_end: u32,
    tag_count: u32,
    field_count: u32,
    flags: u8,
}

impl Line<'_> {
    const HAS_TIMESTAMP: u8 = 1;
    const MEASUREMENT_ESCAPED: u8 = 1 << 1;
    const TAGS_SORTED: u8 = 1 << 2;
    const ANY_ESCAPES: u8 = 1 << 3;
    const DUPLICATE_FIELDS: u8 = 1 << 4;
    const STAMPED_IN_NANOS: u8 = 1 << 5;

    fn flag(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// What the scanner learned about a valid line, as offsets into the line.
#[derive(Debug, Clone)]
struct Parsed {
    measurement: Range<usize>,
    measurement_escaped: bool,
    tags: Range<usize>,
    fields: Range<usize>,
    tag_count: u32,
    field_count: u32,
    tags_sorted: bool,
    any_escapes: bool,
    duplicate_fields: bool,
    timestamp: Option<i64>,
    /// The line ends in ` <timestamp>`, written in nanoseconds as Rust
    /// formats an `i64` (no sign but `-`, no leading zeros).
    stamped_in_nanos: bool,
}

fn finish<'a>(
    b: &'a [u8],
    utf8: &'a str,
    line_start: usize,
    end: usize,
    p: Parsed,
    number: usize,
    opts: &ParseOptions,
) -> Result<Line<'a>, ParseError> {
    let start = p.measurement.start;
    let err = |at: usize, kind| ParseError {
        line: number,
        column: at - line_start + 1,
        kind,
        span: line_start..end,
    };
    // A line's parts are u32 offsets into it (`Line`).
    let max_line_len = opts.max_line_len.min(u32::MAX as usize);
    if end - start > max_line_len {
        return Err(err(
            start,
            ErrorKind::LineTooLong {
                len: end - start,
                max: max_line_len,
            },
        ));
    }
    // Lines start and end at ASCII bytes, so inside the checked prefix
    // `get` always succeeds; lines after it are checked here.
    let text = match utf8.get(start..end) {
        Some(text) => text,
        None => std::str::from_utf8(&b[start..end])
            .map_err(|e| err(start + e.valid_up_to(), ErrorKind::InvalidUtf8))?,
    };
    // Offsets into `text`. Every range ends on an ASCII delimiter, so
    // slices at them are on char boundaries; the accessors `get` them, which
    // keeps that a checked fact rather than a promise.
    let offset = |at: usize| u32::try_from(at - start).unwrap_or(u32::MAX);
    let timestamp = p.timestamp.or(opts.default_time);
    let flag = |set: bool, flag: u8| if set { flag } else { 0 };
    let flags = flag(timestamp.is_some(), Line::HAS_TIMESTAMP)
        | flag(p.measurement_escaped, Line::MEASUREMENT_ESCAPED)
        | flag(p.tags_sorted, Line::TAGS_SORTED)
        | flag(p.any_escapes, Line::ANY_ESCAPES)
        | flag(p.duplicate_fields, Line::DUPLICATE_FIELDS)
        | flag(p.stamped_in_nanos, Line::STAMPED_IN_NANOS);
    Ok(Line {
        text,
        timestamp: timestamp.unwrap_or_default(),
        number: u32::try_from(number).unwrap_or(u32::MAX),
        measurement_end: offset(p.measurement.end),
        tags_end: offset(p.tags.end),
        fields_start: offset(p.fields.start),
        fields_end: offset(p.fields.end),
        tag_count: p.tag_count,
        field_count: p.field_count,
        flags,
    })
}

impl<'a> Line<'a> {
    /// The line as it was sent (without its line break).
    pub fn text(&self) -> &'a str {
        self.text
    }

    /// Line number in the body, from 1.
    pub fn number(&self) -> usize {
        self.number as usize
    }

    /// The measurement.
    pub fn measurement(&self) -> Token<'a> {
        Token {
            raw: self
                .text
                .get(..self.measurement_end as usize)
                .unwrap_or_default(),
            escaped: self.flag(Self::MEASUREMENT_ESCAPED),
            set: EscapeSet::Measurement,
        }
    }

    /// `k=v,k=v` of the tags, without the leading comma; empty without tags.
    fn tag_text(&self) -> &'a str {
        if self.tags_end > self.measurement_end {
            self.text
                .get(self.measurement_end as usize + 1..self.tags_end as usize)
                .unwrap_or_default()
        } else {
            ""
        }
    }

    /// `k=v,k=v` of the fields.
    fn field_text(&self) -> &'a str {
        self.text
            .get(self.fields_start as usize..self.fields_end as usize)
            .unwrap_or_default()
    }

    /// The tags in the order they were written.
    pub fn tags(&self) -> Tags<'a> {
        let text = self.tag_text();
        Tags {
            rest: text.as_bytes(),
            text,
            pos: 0,
        }
    }

    /// The value of tag `key` (unescaped comparison).
    pub fn tag(&self, key: &str) -> Option<Token<'a>> {
        self.tags().find(|(k, _)| k.eq_str(key)).map(|(_, v)| v)
    }

    /// How many tags.
    pub fn tag_count(&self) -> usize {
        self.tag_count as usize
    }

    /// Whether the tags were written sorted by key (Telegraf sorts them).
    pub fn tags_sorted(&self) -> bool {
        self.flag(Self::TAGS_SORTED)
    }

    /// Whether any measurement, tag or field key contains a backslash.
    pub fn has_escapes(&self) -> bool {
        self.flag(Self::ANY_ESCAPES)
    }

    /// The fields. A key written twice yields only its last value, in the
    /// position of its last occurrence (InfluxDB 1.x keeps the last).
    pub fn fields(&self) -> Fields<'a> {
        let text = self.field_text();
        Fields {
            text,
            pos: 0,
            shadowed: if self.flag(Self::DUPLICATE_FIELDS) {
                shadowed_fields(text)
            } else {
                Vec::new()
            },
        }
    }

    /// Whether the line has a field `key`. Reads only the keys: no value
    /// is decoded, which makes this much cheaper than searching
    /// [`Line::fields`] on a line of many floats.
    pub fn has_field(&self, key: &str) -> bool {
        let mut fields = Fields {
            text: self.field_text(),
            pos: 0,
            shadowed: Vec::new(),
        };
        while let Some((k, _)) = fields.next_raw() {
            if k.eq_str(key) {
                return true;
            }
        }
        false
    }

    /// Whether the line has the field `key`, as [`Line::has_field`], with
    /// the search for `key=` prepared once for many lines. A line without
    /// escapes is searched for `key=` after a comma or at the start of its
    /// fields (no value but a string can hold either); a line with escapes,
    /// or whose first match comes after a string value begins, has its
    /// keys read one by one.
    pub fn has_field_key(&self, key: &FieldKey) -> bool {
        let Some(finder) = key.finder.as_ref().filter(|_| !self.has_escapes()) else {
            return self.has_field(&key.key);
        };
        let text = self.field_text().as_bytes();
        let mut quote = None;
        for at in finder.find_iter(text) {
            let first_quote =
                *quote.get_or_insert_with(|| memchr::memchr(b'"', text).unwrap_or(text.len()));
            if at > first_quote {
                return self.has_field(&key.key);
            }
            if at == 0 || text.get(at - 1) == Some(&b',') {
                return true;
            }
        }
        false
    }

    /// How many distinct field keys.
    pub fn field_count(&self) -> usize {
        self.field_count as usize
    }

    /// The timestamp in nanoseconds, or the default time given in the
    /// options, or `None`.
    pub fn timestamp(&self) -> Option<i64> {
        self.flag(Self::HAS_TIMESTAMP).then_some(self.timestamp)
    }

    /// Whether [`Line::text`] is exactly [`Line::without_timestamp`], a
    /// space and [`Line::timestamp`] as Rust formats an `i64`: a forwarder
    /// that writes nanoseconds can send the line as it came.
    pub fn stamped_in_nanos(&self) -> bool {
        self.flag(Self::STAMPED_IN_NANOS)
    }

    /// The raw `measurement[,tags]` part as sent.
    pub(crate) fn raw_key(&self) -> &'a str {
        self.text
            .get(..self.tags_end.max(self.measurement_end) as usize)
            .unwrap_or_default()
    }

    /// The line as sent up to the end of its fields, without the timestamp:
    /// what a forwarder writes before a timestamp of its own choosing.
    pub fn without_timestamp(&self) -> &'a str {
        self.text
            .get(..self.fields_end as usize)
            .unwrap_or(self.text)
    }
}

/// A field key looked for in many lines ([`Line::has_field_key`]).
#[derive(Debug, Clone)]
pub struct FieldKey {
    key: String,
    /// `key=`, when the key is written in a line as it is (nothing in it
    /// to escape).
    finder: Option<memchr::memmem::Finder<'static>>,
}

impl FieldKey {
    /// Prepares the search for `key`.
    pub fn new(key: &str) -> Self {
        let plain = !key.is_empty()
            && !key
                .bytes()
                .any(|b| matches!(b, b',' | b'=' | b' ' | b'\\' | b'"' | b'\n'));
        let finder =
            plain.then(|| memchr::memmem::Finder::new(format!("{key}=").as_bytes()).into_owned());
        Self {
            key: key.to_owned(),
            finder,
        }
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.key
    }
}

/// Which escapes a token uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EscapeSet {
    /// Measurements: `\,` and `\ `.
    Measurement,
    /// Tag keys, tag values, field keys: `\,`, `\=` and `\ `.
    Key,
}

/// A measurement, tag key, tag value or field key as written, with its
/// unescaped form computed only on request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token<'a> {
    raw: &'a str,
    escaped: bool,
    set: EscapeSet,
}

impl<'a> Token<'a> {
    /// The bytes as written, escapes included.
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// Whether the token contains a backslash.
    pub fn is_escaped(&self) -> bool {
        self.escaped
    }

    /// The token with its escapes removed; borrows unless it has escapes.
    #[inline]
    pub fn as_str(&self) -> Cow<'a, str> {
        if self.escaped {
            Cow::Owned(unescape(self.raw, self.set))
        } else {
            Cow::Borrowed(self.raw)
        }
    }

    /// Compares the unescaped token with `s` without allocating.
    pub fn eq_str(&self, s: &str) -> bool {
        if self.escaped {
            UnescapedBytes::new(self.raw, self.set).eq(s.bytes())
        } else {
            self.raw == s
        }
    }

    /// Iterates the unescaped bytes (no allocation).
    pub(crate) fn unescaped_bytes(&self) -> UnescapedBytes<'a> {
        UnescapedBytes::new(
            self.raw,
            if self.escaped {
                self.set
            } else {
                EscapeSet::Key
            },
        )
    }
}

impl std::fmt::Display for Token<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_str())
    }
}

fn is_special(set: EscapeSet, c: u8) -> bool {
    match set {
        EscapeSet::Measurement => c == b',' || c == b' ',
        EscapeSet::Key => c == b',' || c == b' ' || c == b'=',
    }
}

fn unescape(raw: &str, set: EscapeSet) -> String {
    let bytes: Vec<u8> = UnescapedBytes::new(raw, set).collect();
    // Only ASCII bytes are dropped (a backslash before an ASCII delimiter),
    // so the result is still UTF-8.
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The unescaped bytes of a token, left to right.
#[derive(Debug, Clone)]
pub(crate) struct UnescapedBytes<'a> {
    b: &'a [u8],
    i: usize,
    set: EscapeSet,
}

impl<'a> UnescapedBytes<'a> {
    fn new(raw: &'a str, set: EscapeSet) -> Self {
        Self {
            b: raw.as_bytes(),
            i: 0,
            set,
        }
    }
}

impl Iterator for UnescapedBytes<'_> {
    type Item = u8;

    #[inline]
    fn next(&mut self) -> Option<u8> {
        let c = *self.b.get(self.i)?;
        if let (b'\\', Some(&n)) = (c, self.b.get(self.i + 1))
            && is_special(self.set, n)
        {
            self.i += 2;
            return Some(n);
        }
        self.i += 1;
        Some(c)
    }
}

/// Iterator over `(key, value)` tags.
#[derive(Debug, Clone)]
pub struct Tags<'a> {
    text: &'a str,
    rest: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Tags<'a> {
    type Item = (Token<'a>, Token<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.rest;
        if self.pos >= b.len() {
            return None;
        }
        let (key_end, key_esc) = scan_valid(b, self.pos);
        let (val_end, val_esc) = scan_valid(b, key_end + 1);
        let key = Token {
            raw: self.text.get(self.pos..key_end).unwrap_or_default(),
            escaped: key_esc,
            set: EscapeSet::Key,
        };
        let value = Token {
            raw: self.text.get(key_end + 1..val_end).unwrap_or_default(),
            escaped: val_esc,
            set: EscapeSet::Key,
        };
        self.pos = val_end + 1;
        Some((key, value))
    }
}

/// The end of a tag key, tag value or field key that starts at `i` in a
/// section the scanner already validated, a block at a time: there the
/// first unescaped `=`, `,` or space is the one that ends it, and a `\r`
/// is never a delimiter. Returns its index (or `b.len()`) and whether the
/// token has escapes.
#[inline(always)]
fn scan_valid(b: &[u8], mut i: usize) -> (usize, bool) {
    let mut escaped = false;
    loop {
        i = find_stop(b, i, &TOKEN_STOP);
        match b.get(i) {
            Some(b'\\') => {
                escaped = true;
                i = skip_escape(b, i);
            }
            Some(b'\r') => i += 1,
            _ => return (i, escaped),
        }
    }
}

/// A field value.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue<'a> {
    /// A float (no suffix).
    Float(f64),
    /// A signed integer (`i`).
    Integer(i64),
    /// An unsigned integer (`u`).
    UInteger(u64),
    /// A string (`"..."`), unescaped.
    String(Cow<'a, str>),
    /// A boolean.
    Boolean(bool),
}

/// Iterator over `(key, value)` fields.
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    text: &'a str,
    pos: usize,
    /// Where the fields that a later field of the same key shadows start,
    /// the last one first; empty unless the line repeats a key.
    shadowed: Vec<usize>,
}

/// Where the fields of `text` start that a later field with the same key
/// shadows, in descending order. Sorting keeps this n log n on a wide line
/// (the scanner accepts up to a mebibyte of `k=v` pairs).
fn shadowed_fields(text: &str) -> Vec<usize> {
    let mut fields = Vec::new();
    let mut rest = Fields {
        text,
        pos: 0,
        shadowed: Vec::new(),
    };
    loop {
        let at = rest.pos;
        let Some((key, _)) = rest.next_raw() else {
            break;
        };
        fields.push((key, at));
    }
    let key_cmp = |a: &Token<'_>, b: &Token<'_>| {
        if a.escaped || b.escaped {
            a.unescaped_bytes().cmp(b.unescaped_bytes())
        } else {
            a.raw.cmp(b.raw)
        }
    };
    // Equal keys end up in the order they were written.
    fields.sort_unstable_by(|a, b| key_cmp(&a.0, &b.0).then(a.1.cmp(&b.1)));
    let mut shadowed: Vec<usize> = fields
        .windows(2)
        .filter(|w| key_cmp(&w[0].0, &w[1].0).is_eq())
        .map(|w| w[0].1)
        .collect();
    shadowed.sort_unstable_by(|a, b| b.cmp(a));
    shadowed
}

impl<'a> Fields<'a> {
    /// The next field as raw tokens: key and the value's text as written.
    fn next_raw(&mut self) -> Option<(Token<'a>, &'a str)> {
        let b = self.text.as_bytes();
        if self.pos >= b.len() {
            return None;
        }
        let f = next_field(b, self.pos, b.len());
        let key = Token {
            raw: self.text.get(self.pos..f.key_end).unwrap_or_default(),
            escaped: f.key_escaped,
            set: EscapeSet::Key,
        };
        let value = self
            .text
            .get(f.key_end + 1..f.value_end)
            .unwrap_or_default();
        self.pos = f.value_end + 1;
        Some((key, value))
    }
}

/// Where one already-validated field that starts at `pos` ends.
#[derive(Debug, Clone, Copy)]
struct FieldSpan {
    key_end: usize,
    key_escaped: bool,
    value_end: usize,
}

fn next_field(b: &[u8], pos: usize, limit: usize) -> FieldSpan {
    let b = &b[..limit.min(b.len())];
    let (key_end, key_escaped) = scan_valid(b, pos);
    let vstart = key_end + 1;
    let value_end = if b.get(vstart) == Some(&b'"') {
        let mut i = vstart + 1;
        while i < b.len() && b[i] != b'"' {
            i += if b[i] == b'\\' { 2 } else { 1 };
        }
        (i + 1).min(b.len())
    } else {
        // Numbers and booleans hold no delimiter but the `,` after them.
        find_stop(b, vstart, &TOKEN_STOP)
    };
    FieldSpan {
        key_end,
        key_escaped,
        value_end,
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = (Token<'a>, FieldValue<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let at = self.pos;
            let (key, raw) = self.next_raw()?;
            if self.shadowed.last() == Some(&at) {
                self.shadowed.pop();
                continue;
            }
            return Some((key, decode_value(raw)));
        }
    }
}

/// Decodes a value the scanner already validated.
fn decode_value(raw: &str) -> FieldValue<'_> {
    let b = raw.as_bytes();
    match b.first() {
        Some(b'"') => {
            let inner = raw.get(1..raw.len().saturating_sub(1)).unwrap_or_default();
            if inner.contains('\\') {
                FieldValue::String(Cow::Owned(unescape_string(inner)))
            } else {
                FieldValue::String(Cow::Borrowed(inner))
            }
        }
        Some(b't' | b'T') => FieldValue::Boolean(true),
        Some(b'f' | b'F') => FieldValue::Boolean(false),
        _ => match b.last() {
            // The scanner checked the digits and the range.
            Some(b'i') => {
                let value = match &b[..b.len() - 1] {
                    [b'-', digits @ ..] => parse_i64(digits, true),
                    digits => parse_i64(digits, false),
                };
                FieldValue::Integer(value.unwrap_or_default())
            }
            Some(b'u') => FieldValue::UInteger(parse_u64(&b[..b.len() - 1]).unwrap_or_default()),
            _ => FieldValue::Float(raw.parse().unwrap_or_default()),
        },
    }
}

fn unescape_string(inner: &str) -> String {
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.clone().next() {
                Some(n @ ('"' | '\\')) => {
                    out.push(n);
                    chars.next();
                }
                _ => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------- scanning

/// Whether the byte at `i` ends a line: `\n`, or `\r` before `\n` or at the
/// end of the buffer.
#[inline(always)]
fn is_terminator(b: &[u8], i: usize) -> bool {
    match b.get(i) {
        None | Some(b'\n') => true,
        Some(b'\r') => matches!(b.get(i + 1), None | Some(b'\n')),
        _ => false,
    }
}

/// `b[i]` is a backslash: the byte after the run of backslashes is
/// literal (InfluxDB 1.x looks only at the byte before a delimiter).
/// A newline is never escaped: it always ends the line.
#[inline(always)]
fn skip_escape(b: &[u8], mut i: usize) -> usize {
    i += 1;
    while i < b.len() && b[i] == b'\\' {
        i += 1;
    }
    if i < b.len() && b[i] != b'\n' {
        i += 1;
    }
    i
}

fn memchr_newline(b: &[u8], from: usize) -> Option<usize> {
    b.get(from..)?
        .iter()
        .position(|&c| c == b'\n')
        .map(|p| p + from)
}

fn next_line_start(b: &[u8], end: usize) -> usize {
    match memchr_newline(b, end) {
        Some(nl) => nl + 1,
        None => b.len(),
    }
}

fn trim_cr(b: &[u8], start: usize, end: usize) -> usize {
    if end > start && b.get(end - 1) == Some(&b'\r') {
        end - 1
    } else {
        end
    }
}

/// The end of the line that starts at `i`, as InfluxDB 1.x splits lines
/// (a newline inside a quoted field value does not end it). Used to skip a
/// bad line.
fn scan_line_end(b: &[u8], mut i: usize) -> usize {
    let (mut quoted, mut fields) = (false, false);
    let (mut equals, mut commas) = (0usize, 0usize);
    while i < b.len() {
        let c = b[i];
        if c == b'\\' {
            i += 2;
            continue;
        }
        if c == b' ' {
            fields = true;
        }
        if fields {
            if !quoted && c == b'=' {
                equals += 1;
            } else if !quoted && c == b',' {
                commas += 1;
            } else if c == b'"' && equals > commas {
                quoted = !quoted;
            }
        }
        if c == b'\n' && !quoted {
            return i;
        }
        i += 1;
    }
    b.len()
}

/// Bytes that end a run of plain token bytes.
const TOKEN_STOP: [bool; 256] = {
    let mut t = [false; 256];
    t[b'\\' as usize] = true;
    t[b',' as usize] = true;
    t[b' ' as usize] = true;
    t[b'=' as usize] = true;
    t[b'\n' as usize] = true;
    t[b'\r' as usize] = true;
    t
};

/// The same without `=` (a measurement may contain a bare `=`).
const MEASUREMENT_STOP: [bool; 256] = {
    let mut t = TOKEN_STOP;
    t[b'=' as usize] = false;
    t
};

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Eight bytes at `i`, if there are eight.
#[inline(always)]
fn word_at(b: &[u8], i: usize) -> Option<u64> {
    let bytes: [u8; 8] = b.get(i..i + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// High bit set in every byte of `v` below `n` (`n` ≤ 128); the lowest
/// flagged byte is exact, higher ones may be false positives.
#[inline(always)]
fn bytes_below(v: u64, n: u8) -> u64 {
    v.wrapping_sub(LO * u64::from(n)) & !v & HI
}

/// High bit set in every byte of `v` equal to `c` (lowest flag exact).
#[inline(always)]
fn bytes_equal(v: u64, c: u8) -> u64 {
    let x = v ^ (LO * u64::from(c));
    x.wrapping_sub(LO) & !x & HI
}

/// The first byte at or after `i` that is in `stop`: sixteen bytes at a time
/// with SSE2, then eight at a time near the end of the buffer. A block is
/// skipped whole when it holds no control byte, space, `,`, `\\` (nor `=`
/// when `stop` has it). Token bytes are mostly plain, so most blocks are
/// skipped.
#[inline(always)]
fn find_stop(b: &[u8], mut i: usize, stop: &[bool; 256]) -> usize {
    let with_eq = stop[usize::from(b'=')];
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    while let Some(chunk) = b.get(i..i + 16).and_then(|s| <&[u8; 16]>::try_from(s).ok()) {
        let mut m = simd::stop_candidates(chunk, with_eq);
        while m != 0 {
            let k = m.trailing_zeros() as usize;
            let c = chunk[k];
            if c >= b' ' || c == b'\n' || c == b'\r' {
                return i + k;
            }
            m &= m - 1;
        }
        i += 16;
    }
    while let Some(w) = word_at(b, i) {
        let mut m = bytes_below(w, 0x21) | bytes_equal(w, b',') | bytes_equal(w, b'\\');
        if with_eq {
            m |= bytes_equal(w, b'=');
        }
        if m == 0 {
            i += 8;
            continue;
        }
        i += (m.trailing_zeros() / 8) as usize;
        // Candidates are control bytes, space, `,`, `\\` and (when it is a
        // stop) `=`: every one is a stop except control bytes other than
        // `\n` and `\r`. Deciding by comparison avoids a dependent load.
        let c = b[i];
        if c >= b' ' || c == b'\n' || c == b'\r' {
            return i;
        }
        i += 1;
    }
    while i < b.len() && !stop[usize::from(b[i])] {
        i += 1;
    }
    i
}

/// Sixteen bytes at a time where the CPU has SSE2 (every x86-64), through
/// `safe_arch`'s safe wrappers of the intrinsics.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod simd {
    use safe_arch::{
        cmp_eq_mask_i8_m128i, load_unaligned_m128i, max_u8_m128i, move_mask_i8_m128i,
        set_splat_i8_m128i,
    };

    /// One bit per byte of `chunk` that is a control byte, space, `,`,
    /// `\\` or (with `with_eq`) `=`. Control bytes other than `\n` and `\r`
    /// are no stop but rare; one comparison finds every byte up to space.
    #[inline(always)]
    pub(super) fn stop_candidates(chunk: &[u8; 16], with_eq: bool) -> u32 {
        let v = load_unaligned_m128i(chunk);
        let is = |c: u8| cmp_eq_mask_i8_m128i(v, set_splat_i8_m128i(c as i8));
        let space = set_splat_i8_m128i(0x20);
        // max(v, 0x20) == 0x20 exactly when v <= 0x20 (unsigned).
        let mut m = cmp_eq_mask_i8_m128i(max_u8_m128i(v, space), space) | is(b',') | is(b'\\');
        if with_eq {
            m |= is(b'=');
        }
        // The mask has one bit per byte in its low sixteen bits.
        move_mask_i8_m128i(m) as u32
    }
}

/// The first byte at or after `i` that is not an ASCII digit, eight bytes at
/// a time (timestamps have 19 digits).
#[inline(always)]
fn skip_digits(b: &[u8], mut i: usize) -> usize {
    while let Some(w) = word_at(b, i) {
        let t = w ^ (LO * u64::from(b'0'));
        // Per byte: (t & 0x7f) + 0x76 sets the high bit when t & 0x7f >= 10,
        // and cannot carry into the next byte; t's own high bit marks bytes
        // at or above 0x80. Either way: not a digit.
        let non_digit = (((t & !HI).wrapping_add(LO * 0x76)) | t) & HI;
        if non_digit != 0 {
            return i + (non_digit.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    i
}

/// Scans a token from `i` to its first unescaped delimiter in `stop`
/// (escapes and a `\r` that ends no line are part of the token). Returns
/// the delimiter's index (or `b.len()`) and whether the token has escapes.
#[inline(always)]
fn scan_token(b: &[u8], mut i: usize, stop: &[bool; 256]) -> (usize, bool) {
    let mut escaped = false;
    loop {
        i = find_stop(b, i, stop);
        match b.get(i) {
            Some(b'\\') => {
                escaped = true;
                i = skip_escape(b, i);
            }
            Some(b'\r') if !is_terminator(b, i) => i += 1,
            _ => return (i, escaped),
        }
    }
}

/// The unescaped measurement at the start of `line`, which need not parse
/// (error messages name it).
pub(crate) fn leading_measurement(line: &[u8]) -> String {
    let (end, _) = scan_token(line, 0, &MEASUREMENT_STOP);
    unescape(
        &String::from_utf8_lossy(&line[..end]),
        EscapeSet::Measurement,
    )
}

type ScanResult<T> = Result<T, (usize, ErrorKind)>;

/// A key recorded for duplicate checks: range and whether it has escapes.
#[derive(Debug, Clone, Copy, Default)]
struct KeyRef {
    start: u32,
    end: u32,
    escaped: bool,
}

struct Scanner<'s, 'a> {
    b: &'a [u8],
    /// Line breaks inside quoted values of this line.
    newlines: usize,
    opts: &'s ParseOptions,
}

impl Scanner<'_, '_> {
    fn key_bytes(&self, k: KeyRef, set: EscapeSet) -> UnescapedBytes<'_> {
        let raw = &self.b[k.start as usize..k.end as usize];
        UnescapedBytes {
            b: raw,
            i: 0,
            set: if k.escaped { set } else { EscapeSet::Key },
        }
    }

    fn key_eq(&self, a: KeyRef, b: KeyRef) -> bool {
        if !a.escaped && !b.escaped {
            self.b[a.start as usize..a.end as usize] == self.b[b.start as usize..b.end as usize]
        } else {
            self.key_bytes(a, EscapeSet::Key)
                .eq(self.key_bytes(b, EscapeSet::Key))
        }
    }

    #[inline]
    fn key_cmp(&self, a: KeyRef, b: KeyRef) -> std::cmp::Ordering {
        if !a.escaped && !b.escaped {
            let (x, y) = (
                &self.b[a.start as usize..a.end as usize],
                &self.b[b.start as usize..b.end as usize],
            );
            // Neighbouring keys usually differ in their first byte; decide
            // that without a call into memcmp.
            match x[0].cmp(&y[0]) {
                std::cmp::Ordering::Equal => x.cmp(y),
                decided => decided,
            }
        } else {
            self.key_bytes(a, EscapeSet::Key)
                .cmp(self.key_bytes(b, EscapeSet::Key))
        }
    }

    #[inline(always)]
    fn is_reserved(&self, k: KeyRef) -> bool {
        let raw = &self.b[k.start as usize..k.end as usize];
        if !k.escaped {
            // Reserved keys start with `t` or `_`: most keys leave here.
            return matches!(raw.first(), Some(b't' | b'_'))
                && matches!(raw, b"time" | b"_field" | b"_measurement");
        }
        let bytes = self.key_bytes(k, EscapeSet::Key);
        [&b"time"[..], b"_field", b"_measurement"]
            .iter()
            .any(|r| bytes.clone().eq(r.iter().copied()))
    }

    /// Scans one line starting at its first non-blank byte `i`; returns what
    /// it found and the index just past the line's last byte.
    fn line(&mut self, mut i: usize) -> ScanResult<(Parsed, usize)> {
        let b = self.b;
        let mut any_escapes = false;

        // Measurement.
        let m_start = i;
        if b[i] == b',' {
            return Err((i, ErrorKind::MissingMeasurement));
        }
        let m_escaped;
        (i, m_escaped) = scan_token(b, i, &MEASUREMENT_STOP);
        let has_tags = match b.get(i) {
            Some(b',') => true,
            Some(b' ') => false,
            _ => return Err((i, ErrorKind::MissingFields)),
        };
        let m_end = i;
        any_escapes |= m_escaped;

        // Tags.
        let mut tags_sorted = true;
        let mut tag_count = 0u32;
        let tags_start = i + 1;
        let mut tags_end = tags_start;
        let mut prev_key: Option<KeyRef> = None;
        if has_tags {
            i += 1;
            loop {
                // Key.
                let k_start = i;
                if is_terminator(b, i) || matches!(b[i], b' ' | b',' | b'=') {
                    return Err((i, ErrorKind::MissingTagKey));
                }
                let k_escaped;
                (i, k_escaped) = scan_token(b, i, &TOKEN_STOP);
                if b.get(i) != Some(&b'=') {
                    return Err((i, ErrorKind::MissingTagValue));
                }
                let key = KeyRef {
                    start: k_start as u32,
                    end: i as u32,
                    escaped: k_escaped,
                };
                i += 1;
                // Value.
                if is_terminator(b, i) || matches!(b[i], b' ' | b',') {
                    return Err((i, ErrorKind::MissingTagValue));
                }
                let v_escaped;
                (i, v_escaped) = scan_token(b, i, &TOKEN_STOP);
                let more = match b.get(i) {
                    Some(b',') => true,
                    Some(b' ') => false,
                    Some(b'=') => return Err((i, ErrorKind::InvalidTagFormat)),
                    _ => return Err((i, ErrorKind::MissingFields)),
                };
                any_escapes |= k_escaped || v_escaped;
                if self.is_reserved(key) {
                    return Err((
                        k_start,
                        ErrorKind::ReservedKey {
                            role: KeyRole::Tag,
                            key: key_string(self.b, k_start, key.end as usize),
                        },
                    ));
                }
                if let Some(prev) = prev_key {
                    match self.key_cmp(prev, key) {
                        std::cmp::Ordering::Less => {}
                        std::cmp::Ordering::Equal => {
                            return Err((
                                k_start,
                                ErrorKind::DuplicateTag(key_string(
                                    self.b,
                                    k_start,
                                    key.end as usize,
                                )),
                            ));
                        }
                        std::cmp::Ordering::Greater => tags_sorted = false,
                    }
                }
                prev_key = Some(key);
                tag_count += 1;
                if !more {
                    tags_end = i;
                    break;
                }
                i += 1;
            }
            if !tags_sorted {
                self.check_duplicate_tags(tags_start, tags_end)?;
            }
        }
        let key_len = if has_tags { tags_end } else { m_end } - m_start;
        if key_len > MAX_KEY_LEN {
            return Err((
                m_start,
                ErrorKind::KeyTooLong {
                    len: key_len,
                    max: MAX_KEY_LEN,
                },
            ));
        }

        // Fields.
        while i < b.len() && matches!(b[i], b' ' | b'\t' | 0) {
            i += 1;
        }
        if is_terminator(b, i) {
            return Err((i, ErrorKind::MissingFields));
        }
        let f_start = i;
        // Signatures (length, first, second and last byte) of the first
        // sixteen keys: a full comparison runs only when two signatures are
        // equal. A line with more fields is counted by sorting its keys
        // afterwards, so a wide line costs n log n, not n²: its keys are
        // collected as the loop passes them (the first sixteen once, when
        // the seventeenth arrives).
        let mut sigs = [0u32; 16];
        let mut wide_keys: Vec<KeyRef> = Vec::new();
        let mut n_sigs = 0usize;
        let mut seen_filter = 0u64;
        let mut duplicate_fields = false;
        let mut unique_fields = 0u32;
        let f_end = loop {
            let k_start = i;
            if b[i] == b'=' || b[i] == b',' {
                return Err((i, ErrorKind::MissingFieldKey));
            }
            let k_escaped;
            (i, k_escaped) = scan_token(b, i, &TOKEN_STOP);
            if b.get(i) != Some(&b'=') {
                return Err((
                    k_start,
                    ErrorKind::InvalidFieldFormat(key_string(self.b, k_start, i)),
                ));
            }
            any_escapes |= k_escaped;
            let key = KeyRef {
                start: k_start as u32,
                end: i as u32,
                escaped: k_escaped,
            };
            // InfluxDB stores a field under `key#!~#field`: that is what the
            // limit applies to.
            let stored_len = key_len + SERIES_FIELD_SEPARATOR + (i - k_start);
            if stored_len > MAX_KEY_LEN {
                return Err((
                    k_start,
                    ErrorKind::KeyTooLong {
                        len: stored_len,
                        max: MAX_KEY_LEN,
                    },
                ));
            }
            if self.is_reserved(key) {
                return Err((
                    k_start,
                    ErrorKind::ReservedKey {
                        role: KeyRole::Field,
                        key: key_string(self.b, k_start, i),
                    },
                ));
            }
            if n_sigs < sigs.len() {
                let len = i - k_start;
                let sig = ((len as u32 & 0xff) << 24)
                    | (u32::from(b[k_start]) << 16)
                    | (u32::from(b[k_start + usize::from(len > 1)]) << 8)
                    | u32::from(b[i - 1]);
                // One bit per signature in a 64-bit filter settles most keys
                // without looking through the list.
                let bit = 1u64 << (sig.wrapping_mul(0x9E37_79B1) >> 26);
                let maybe_seen = seen_filter & bit != 0 && sigs[..n_sigs].contains(&sig);
                seen_filter |= bit;
                if maybe_seen && self.field_seen_before(f_start, key) {
                    duplicate_fields = true;
                } else {
                    unique_fields += 1;
                }
                sigs[n_sigs] = sig;
            } else {
                if wide_keys.is_empty() {
                    wide_keys = self.field_keys(f_start, k_start).collect();
                }
                wide_keys.push(key);
            }
            n_sigs += 1;
            i += 1;
            i = self.value(i, key)?;
            if i < b.len() && b[i] == b',' {
                i += 1;
                if is_terminator(b, i) || b[i] == b' ' {
                    return Err((i, ErrorKind::MissingFieldKey));
                }
                continue;
            }
            break i;
        };
        if !wide_keys.is_empty() {
            unique_fields = self.distinct_keys(wide_keys);
            duplicate_fields = unique_fields as usize != n_sigs;
        }

        // Timestamp.
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        let mut timestamp = None;
        let mut stamped_in_nanos = false;
        if !is_terminator(b, i) {
            let t_start = i;
            let negative = b[i] == b'-';
            if negative {
                i += 1;
            }
            let d_start = i;
            i = skip_digits(b, i);
            let parsed = parse_i64(&b[d_start..i], negative);
            if i == d_start || !(is_terminator(b, i) || b[i] == b' ') {
                return Err((i, ErrorKind::BadTimestamp));
            }
            let Some(value) = parsed else {
                return Err((t_start, ErrorKind::TimestampOutOfRange));
            };
            let nanos = self
                .opts
                .precision
                .to_nanos(value)
                .filter(|n| (MIN_NANOS..=MAX_NANOS).contains(n))
                .ok_or((t_start, ErrorKind::TimestampOutOfRange))?;
            timestamp = Some(nanos);
            let digits = &b[d_start..i];
            stamped_in_nanos = t_start == f_end + 1
                && self.opts.precision == Precision::Nanoseconds
                && (digits[0] != b'0' || (digits.len() == 1 && !negative))
                && is_terminator(b, i);
            while i < b.len() && b[i] == b' ' {
                i += 1;
            }
            if !is_terminator(b, i) {
                return Err((i, ErrorKind::TrailingData));
            }
        }
        let end = i;
        Ok((
            Parsed {
                measurement: m_start..m_end,
                measurement_escaped: m_escaped,
                tags: if has_tags {
                    tags_start..tags_end
                } else {
                    m_end..m_end
                },
                fields: f_start..f_end,
                tag_count,
                field_count: unique_fields,
                tags_sorted,
                any_escapes,
                duplicate_fields,
                timestamp,
                stamped_in_nanos,
            },
            end,
        ))
    }

    /// The slow path for tags written out of order: collect, sort, compare.
    fn check_duplicate_tags(&self, start: usize, end: usize) -> ScanResult<()> {
        let section = &self.b[start..end];
        let mut keys = Vec::new();
        let mut pos = 0;
        while pos < section.len() {
            let (k_end, escaped) = scan_valid(section, pos);
            keys.push(KeyRef {
                start: (start + pos) as u32,
                end: (start + k_end) as u32,
                escaped,
            });
            pos = scan_valid(section, k_end + 1).0 + 1;
        }
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_by(|&x, &y| self.key_cmp(keys[x], keys[y]));
        for w in order.windows(2) {
            let (a, b) = (keys[w[0]], keys[w[1]]);
            if self.key_eq(a, b) {
                let later = if a.start > b.start { a } else { b };
                return Err((
                    later.start as usize,
                    ErrorKind::DuplicateTag(key_string(
                        self.b,
                        later.start as usize,
                        later.end as usize,
                    )),
                ));
            }
        }
        Ok(())
    }

    /// The keys of the (already validated) fields in `start..end`, in order.
    fn field_keys(&self, start: usize, end: usize) -> impl Iterator<Item = KeyRef> + '_ {
        let mut pos = start;
        std::iter::from_fn(move || {
            (pos < end).then(|| {
                let f = next_field(self.b, pos, end);
                let key = KeyRef {
                    start: pos as u32,
                    end: f.key_end as u32,
                    escaped: f.key_escaped,
                };
                pos = f.value_end + 1;
                key
            })
        })
    }

    /// How many distinct `keys` there are: sorted, so equal keys are
    /// neighbours.
    fn distinct_keys(&self, mut keys: Vec<KeyRef>) -> u32 {
        keys.sort_unstable_by(|&x, &y| self.key_cmp(x, y));
        let repeats = keys.windows(2).filter(|w| self.key_eq(w[0], w[1])).count();
        (keys.len() - repeats) as u32
    }

    /// Whether a field before `key` (in the section from `f_start`) has the
    /// same key.
    fn field_seen_before(&self, f_start: usize, key: KeyRef) -> bool {
        self.field_keys(f_start, key.start as usize)
            .any(|earlier| self.key_eq(earlier, key))
    }

    /// Validates the value starting at `i`; returns the index after it,
    /// which holds `,`, ` `, or a line terminator.
    fn value(&mut self, mut i: usize, key: KeyRef) -> ScanResult<usize> {
        let b = self.b;
        let name = || key_string(b, key.start as usize, key.end as usize);
        let start = i;
        let ends_value = |i: usize| is_terminator(b, i) || b[i] == b',' || b[i] == b' ';
        // The first byte tells the type; numbers come first, as they are
        // most values.
        let Some(&first) = b.get(i) else {
            return Err((i, ErrorKind::MissingFieldValue(name())));
        };
        match first {
            b'0'..=b'9' | b'-' | b'.' => self.number(i, &name),
            b',' | b' ' | b'\n' => Err((i, ErrorKind::MissingFieldValue(name()))),
            b'\r' if is_terminator(b, i) => Err((i, ErrorKind::MissingFieldValue(name()))),
            b'"' => {
                i += 1;
                loop {
                    while i < b.len() && !matches!(b[i], b'"' | b'\\' | b'\n') {
                        i += 1;
                    }
                    if i >= b.len() {
                        return Err((start, ErrorKind::UnbalancedQuotes(name())));
                    }
                    match b[i] {
                        b'\\' => i += 2,
                        b'\n' => {
                            self.newlines += 1;
                            i += 1;
                        }
                        _ => break,
                    }
                }
                let len = i - start - 1;
                if len > self.opts.max_string_len {
                    return Err((
                        start,
                        ErrorKind::StringTooLong {
                            key: name(),
                            len,
                            max: self.opts.max_string_len,
                        },
                    ));
                }
                i += 1;
                if !ends_value(i) {
                    return Err((i, ErrorKind::InvalidFieldFormat(name())));
                }
                Ok(i)
            }
            b't' | b'T' | b'f' | b'F' => {
                while !ends_value(i) {
                    i += 1;
                }
                match &b[start..i] {
                    b"t" | b"T" | b"true" | b"True" | b"TRUE" | b"f" | b"F" | b"false"
                    | b"False" | b"FALSE" => Ok(i),
                    _ => Err((start, ErrorKind::InvalidBoolean(name()))),
                }
            }
            b'+' | b'n' | b'N' | b'i' | b'I' => Err((start, ErrorKind::InvalidNumber(name()))),
            _ => Err((start, ErrorKind::InvalidBoolean(name()))),
        }
    }

    fn number(&self, mut i: usize, name: &dyn Fn() -> String) -> ScanResult<usize> {
        let b = self.b;
        let start = i;
        let invalid = |at: usize| (at, ErrorKind::InvalidNumber(name()));
        let ends_value = |i: usize| is_terminator(b, i) || b[i] == b',' || b[i] == b' ';
        let negative = b[i] == b'-';
        if negative {
            i += 1;
        }
        let int_start = i;
        i = skip_digits(b, i);
        let int_digits = i - int_start;
        if i < b.len() && (b[i] == b'i' || b[i] == b'u') {
            let suffix = b[i];
            if int_digits == 0 || !ends_value(i + 1) {
                return Err(invalid(start));
            }
            let digits = &b[int_start..i];
            if suffix == b'i' {
                if digits.len() >= 19 && parse_i64(digits, negative).is_none() {
                    return Err((start, ErrorKind::IntegerOutOfRange(name())));
                }
            } else {
                if !self.opts.allow_unsigned {
                    return Err((start, ErrorKind::UnsignedDisabled(name())));
                }
                if negative {
                    return Err((start, ErrorKind::UnsignedOutOfRange(name())));
                }
                if digits.len() >= 20 && !fits_u64(digits) {
                    return Err((start, ErrorKind::UnsignedOutOfRange(name())));
                }
            }
            return Ok(i + 1);
        }
        // Float: digits [. digits] [e [+-] digits]
        let mut frac_digits = 0;
        if i < b.len() && b[i] == b'.' {
            i += 1;
            let f = i;
            i = skip_digits(b, i);
            frac_digits = i - f;
        }
        if int_digits + frac_digits == 0 {
            return Err(invalid(start));
        }
        let mut exponent = false;
        if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
            exponent = true;
            i += 1;
            if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
                i += 1;
            }
            let e = i;
            i = skip_digits(b, i);
            if i == e {
                return Err(invalid(start));
            }
        }
        if !ends_value(i) {
            return Err(invalid(start));
        }
        // Only a long mantissa or an exponent can overflow; parse those.
        if exponent || i - start >= 25 {
            let text = std::str::from_utf8(&b[start..i]).map_err(|_| invalid(start))?;
            match text.parse::<f64>() {
                Ok(v) if v.is_finite() => {}
                Ok(_) => return Err((start, ErrorKind::FloatOutOfRange(name()))),
                Err(_) => return Err(invalid(start)),
            }
        }
        Ok(i)
    }
}

/// A key for an error message, unescaped.
fn key_string(b: &[u8], start: usize, end: usize) -> String {
    let raw = String::from_utf8_lossy(&b[start..end]);
    unescape(&raw, EscapeSet::Key)
}

/// `digits` (ASCII, no sign) as an i64 of the given sign, if it fits.
fn parse_i64(digits: &[u8], negative: bool) -> Option<i64> {
    let magnitude = parse_u64(digits)?;
    if negative {
        (magnitude <= i64::MIN.unsigned_abs()).then(|| 0i64.wrapping_sub_unsigned(magnitude))
    } else {
        i64::try_from(magnitude).ok()
    }
}

fn fits_u64(digits: &[u8]) -> bool {
    parse_u64(digits).is_some()
}

fn parse_u64(digits: &[u8]) -> Option<u64> {
    // Eight digits at a time: a timestamp has 19, so this is three steps
    // instead of nineteen dependent multiply-adds. Only the accumulation is
    // checked; leading zeros make long inputs legal.
    let mut acc = 0u64;
    let mut rest = digits;
    while let Some((chunk, tail)) = rest.split_first_chunk::<8>() {
        acc = acc
            .checked_mul(100_000_000)?
            .checked_add(eight_digits(u64::from_le_bytes(*chunk)))?;
        rest = tail;
    }
    rest.iter().try_fold(acc, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// The value of eight ASCII digits read little-endian (the first, most
/// significant digit in the lowest byte). Lanes never carry: 10·9 + 9 fits
/// a byte and 100·99 + 99 sixteen bits.
#[inline(always)]
fn eight_digits(w: u64) -> u64 {
    let d = w.wrapping_sub(LO * u64::from(b'0'));
    // Even bytes: 10·d[k] + d[k+1].
    let pairs = (d.wrapping_mul(10) + (d >> 8)) & 0x00FF_00FF_00FF_00FF;
    // Bits 0..16 and 32..48: 100·pair + next pair.
    let quads = (pairs.wrapping_mul(100) + (pairs >> 16)) & 0x0000_FFFF_0000_FFFF;
    (quads & 0xFFFF_FFFF) * 10_000 + (quads >> 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write of 5 000 lines holds 5 000 of these.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_line_is_56_bytes() {
        assert_eq!(std::mem::size_of::<Line<'_>>(), 56);
    }

    /// A line reads as ` <nanoseconds>` after its fields only when that is
    /// exactly what a forwarder would write there.
    #[test]
    fn a_line_is_stamped_in_nanos_only_as_an_i64_is_formatted() {
        let stamped = |body: &str, precision| {
            let opts = ParseOptions {
                precision,
                default_time: Some(9),
                ..Default::default()
            };
            Lines::new(body.as_bytes(), opts)
                .map(|l| l.map(|l| l.stamped_in_nanos()))
                .collect::<Result<Vec<_>, _>>()
                .expect("valid lines")
        };
        let ns = Precision::Nanoseconds;
        assert_eq!(
            stamped("a v=1 5\nb v=1 -5\nc v=1 0\nd v=1 5\r\n", ns),
            [true, true, true, true]
        );
        assert_eq!(
            stamped("a v=1\nb v=1 05\nc v=1 -0\nd v=1  5\ne v=1 5 \n", ns),
            [false, false, false, false, false],
            "no timestamp, leading zero, -0, two spaces, a trailing space"
        );
        assert_eq!(stamped("a v=1 5\n", Precision::Seconds), [false]);
        let line = parse_lines(b"m,t=1 f=2 3")
            .next()
            .expect("a line")
            .expect("valid");
        assert_eq!(line.text(), "m,t=1 f=2 3");
        assert_eq!(line.without_timestamp(), "m,t=1 f=2");
        assert_eq!(line.raw_key(), "m,t=1");
        let bare = parse_lines(b"m f=2")
            .next()
            .expect("a line")
            .expect("valid");
        assert_eq!((bare.raw_key(), bare.tags().count()), ("m", 0));
    }

    /// Eight digits at a time gives what one digit at a time gives, for
    /// every length, leading zeros and the edge of overflow.
    #[test]
    fn parse_u64_agrees_with_std() {
        let mut cases: Vec<String> = vec![
            "0".into(),
            "18446744073709551615".into(),
            "18446744073709551616".into(),
            "99999999999999999999".into(),
            "000000000000000000000000000042".into(),
            "1700000000000000000".into(),
        ];
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for len in 1..=24 {
            for _ in 0..200 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let s: String = (0..len)
                    .map(|k| char::from(b'0' + ((x >> (k % 60)) % 10) as u8))
                    .collect();
                cases.push(s);
            }
        }
        for s in cases {
            assert_eq!(parse_u64(s.as_bytes()), s.parse::<u64>().ok(), "{s}");
        }
    }

    /// Only keys count: text inside a string value that looks like a field,
    /// and tags, do not; escaped keys compare unescaped.
    #[test]
    fn has_field_reads_keys_not_values() {
        let line = crate::test_helpers::one(
            r#"cpu,usage_user=t usage\ idle=1,s="usage_user=2,x=3",usage_system=4i"#,
        );
        assert!(line.has_field("usage idle"));
        assert!(line.has_field("s"));
        assert!(line.has_field("usage_system"));
        assert!(!line.has_field("usage_user"));
        assert!(!line.has_field("x"));
        assert!(!line.has_field("usage"));
    }

    /// The prepared search answers as the walk over keys does: a key at
    /// the start, after a comma, a key that ends another key, `key=` in a
    /// string before or after the real key, escapes in the line.
    #[test]
    fn has_field_key_agrees_with_has_field() {
        let lines = [
            r#"cpu,usage_user=t usage\ idle=1,s="usage_user=2,x=3",usage_system=4i"#,
            "cpu usage_user=1,xusage_user=2",
            "cpu xusage_user=2,usage_user=1",
            "cpu xusage_user=2",
            r#"cpu s="a,usage_user=1",usage_user=3"#,
            r#"cpu s="a,usage_user=1""#,
            r#"cpu usage_user=1,s="a,usage_user=1""#,
            "cpu,usage_user=x v=1",
            "cpu a=1,b=2,c=3",
            "cpu c=1,b=2,a=3",
        ];
        let keys = [
            "usage_user",
            "usage idle",
            "s",
            "x",
            "a",
            "b",
            "c",
            "usage",
            "user",
            "",
        ];
        for text in lines {
            let line = crate::test_helpers::one(text);
            for key in keys {
                assert_eq!(
                    line.has_field_key(&FieldKey::new(key)),
                    line.has_field(key),
                    "{key:?} in {text:?}"
                );
            }
        }
    }

    /// The word-at-a-time scanners agree with a byte loop for every byte
    /// value at every position of a word and of the tail.
    #[test]
    fn word_scanners_agree_with_byte_loops() {
        for c in 0..=255u8 {
            for len in [5usize, 16, 19, 40] {
                for pos in 0..len {
                    let mut digits = vec![b'7'; len];
                    digits[pos] = c;
                    let expected = if c.is_ascii_digit() { len } else { pos };
                    assert_eq!(skip_digits(&digits, 0), expected, "byte {c:#x} at {pos}");

                    for table in [&TOKEN_STOP, &MEASUREMENT_STOP] {
                        let mut token = vec![b'a'; len];
                        token[pos] = c;
                        let expected = if table[usize::from(c)] { pos } else { len };
                        assert_eq!(
                            find_stop(&token, 0, table),
                            expected,
                            "byte {c:#x} at {pos}"
                        );
                    }
                }
            }
        }
    }
}
