//! Writing line protocol: owned [`Point`]s and parsed [`Line`]s serialised
//! in canonical form (tags sorted by key, minimal escaping, floats in their
//! shortest exact form, integers with `i`/`u`, timestamps in nanoseconds),
//! appended into one reusable buffer.
//!
//! Canonical output parses back to the same point: `parse(write(p)) == p`.
//! Values line protocol cannot carry (NaN, a token ending in `\`, a line
//! break in a key) are refused rather than written wrongly.

use std::borrow::Cow;

use crate::error::{Error, Result};
use crate::parse::{EscapeSet, FieldValue, Line};

/// A point with owned parts, e.g. a rollup the downsampler builds.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The measurement.
    pub measurement: String,
    /// Tags; the writer sorts them.
    pub tags: Vec<(String, String)>,
    /// Fields, written in this order.
    pub fields: Vec<(String, Value)>,
    /// Nanoseconds since the epoch, or none (the server's time).
    pub timestamp: Option<i64>,
}

impl Point {
    /// Equality that tells `-0.0` from `0.0` (floats compare by bits), as a
    /// round trip must preserve them.
    pub fn same_bits(&self, other: &Point) -> bool {
        self.measurement == other.measurement
            && self.tags == other.tags
            && self.timestamp == other.timestamp
            && self.fields.len() == other.fields.len()
            && self
                .fields
                .iter()
                .zip(&other.fields)
                .all(|((ka, va), (kb, vb))| {
                    ka == kb
                        && match (va, vb) {
                            (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
                            _ => va == vb,
                        }
                })
    }
}

/// An owned field value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A float.
    Float(f64),
    /// A signed integer.
    Integer(i64),
    /// An unsigned integer.
    UInteger(u64),
    /// A string.
    String(String),
    /// A boolean.
    Boolean(bool),
}

impl Value {
    /// A borrowed view, as the parser yields it.
    pub fn as_field_value(&self) -> FieldValue<'_> {
        match self {
            Value::Float(v) => FieldValue::Float(*v),
            Value::Integer(v) => FieldValue::Integer(*v),
            Value::UInteger(v) => FieldValue::UInteger(*v),
            Value::String(v) => FieldValue::String(Cow::Borrowed(v)),
            Value::Boolean(v) => FieldValue::Boolean(*v),
        }
    }
}

impl From<FieldValue<'_>> for Value {
    fn from(v: FieldValue<'_>) -> Self {
        match v {
            FieldValue::Float(v) => Value::Float(v),
            FieldValue::Integer(v) => Value::Integer(v),
            FieldValue::UInteger(v) => Value::UInteger(v),
            FieldValue::String(v) => Value::String(v.into_owned()),
            FieldValue::Boolean(v) => Value::Boolean(v),
        }
    }
}

impl Line<'_> {
    /// An owned copy, unescaped, fields as [`Line::fields`] yields them.
    pub fn to_point(&self) -> Point {
        Point {
            measurement: self.measurement().as_str().into_owned(),
            tags: self
                .tags()
                .map(|(k, v)| (k.as_str().into_owned(), v.as_str().into_owned()))
                .collect(),
            fields: self
                .fields()
                .map(|(k, v)| (k.as_str().into_owned(), Value::from(v)))
                .collect(),
            timestamp: self.timestamp(),
        }
    }
}

/// Appends lines to one reusable buffer.
#[derive(Debug, Clone, Default)]
pub struct LineWriter {
    buf: Vec<u8>,
}

impl LineWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty writer with room for `bytes`.
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            buf: Vec::with_capacity(bytes),
        }
    }

    /// Appends `point` as one canonical line (ending in `\n`). On error
    /// nothing is appended.
    pub fn write_point(&mut self, point: &Point) -> Result<()> {
        let mut tags: Vec<(&str, &str)> = point
            .tags
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        tags.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        self.transaction(|buf| {
            write_parts(
                buf,
                &point.measurement,
                tags.into_iter(),
                point
                    .fields
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_field_value())),
                point.timestamp,
            )
        })
    }

    /// Appends a parsed line in canonical form.
    pub fn write_line(&mut self, line: &Line<'_>) -> Result<()> {
        let measurement = line.measurement().as_str();
        let mut tags: Vec<(Cow<'_, str>, Cow<'_, str>)> =
            line.tags().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        if !line.tags_sorted() {
            tags.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        }
        let fields: Vec<(Cow<'_, str>, FieldValue<'_>)> =
            line.fields().map(|(k, v)| (k.as_str(), v)).collect();
        self.transaction(|buf| {
            write_parts(
                buf,
                &measurement,
                tags.iter().map(|(k, v)| (k.as_ref(), v.as_ref())),
                fields.iter().map(|(k, v)| (k.as_ref(), v.clone())),
                line.timestamp(),
            )
        })
    }

    /// Appends raw bytes (e.g. a line forwarded as sent) and a newline.
    pub fn write_raw_line(&mut self, line: &str) {
        self.buf.extend_from_slice(line.as_bytes());
        self.buf.push(b'\n');
    }

    fn transaction(&mut self, f: impl FnOnce(&mut Vec<u8>) -> Result<()>) -> Result<()> {
        let mark = self.buf.len();
        let result = f(&mut self.buf);
        if result.is_err() {
            self.buf.truncate(mark);
        }
        result
    }

    /// What was written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Empties the buffer, keeping its capacity.
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// The buffer.
    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }
}

fn write_parts<'v, 'k>(
    buf: &mut Vec<u8>,
    measurement: &str,
    tags: impl Iterator<Item = (&'k str, &'k str)>,
    fields: impl Iterator<Item = (&'k str, FieldValue<'v>)>,
    timestamp: Option<i64>,
) -> Result<()> {
    check_token(measurement, "measurement", EscapeSet::Measurement)?;
    escape_unchecked(buf, measurement, EscapeSet::Measurement);
    for (k, v) in tags {
        check_token(k, "tag key", EscapeSet::Key)?;
        check_token(v, "tag value", EscapeSet::Key)?;
        buf.push(b',');
        escape_unchecked(buf, k, EscapeSet::Key);
        buf.push(b'=');
        escape_unchecked(buf, v, EscapeSet::Key);
    }
    let mut sep = b' ';
    for (k, v) in fields {
        check_token(k, "field key", EscapeSet::Key)?;
        if k.starts_with(['\t', '\0']) {
            return Err(unrepresentable(
                "field key",
                k,
                "starts with a tab or NUL, which the parser skips",
            ));
        }
        buf.push(sep);
        sep = b',';
        escape_unchecked(buf, k, EscapeSet::Key);
        buf.push(b'=');
        write_value(buf, k, &v)?;
    }
    if sep == b' ' {
        return Err(Error::NoFields);
    }
    if let Some(ts) = timestamp {
        buf.push(b' ');
        buf.extend_from_slice(itoa::Buffer::new().format(ts).as_bytes());
    }
    buf.push(b'\n');
    Ok(())
}

fn write_value(buf: &mut Vec<u8>, key: &str, v: &FieldValue<'_>) -> Result<()> {
    match v {
        FieldValue::Float(f) => {
            if !f.is_finite() {
                return Err(Error::NonFiniteFloat(key.to_owned()));
            }
            buf.extend_from_slice(ryu::Buffer::new().format_finite(*f).as_bytes());
        }
        FieldValue::Integer(i) => {
            buf.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes());
            buf.push(b'i');
        }
        FieldValue::UInteger(u) => {
            buf.extend_from_slice(itoa::Buffer::new().format(*u).as_bytes());
            buf.push(b'u');
        }
        FieldValue::Boolean(b) => buf.extend_from_slice(if *b { b"true" } else { b"false" }),
        FieldValue::String(s) => {
            buf.push(b'"');
            for &c in s.as_bytes() {
                if c == b'"' || c == b'\\' {
                    buf.push(b'\\');
                }
                buf.push(c);
            }
            buf.push(b'"');
        }
    }
    Ok(())
}

fn unrepresentable(what: &'static str, token: &str, why: &'static str) -> Error {
    Error::Unrepresentable {
        what,
        token: token.to_owned(),
        why,
    }
}

fn check_token(s: &str, what: &'static str, set: EscapeSet) -> Result<()> {
    if s.is_empty() {
        return Err(Error::Empty(what));
    }
    if s.ends_with('\\') {
        return Err(unrepresentable(
            what,
            s,
            "ends with a backslash, which would escape the next delimiter",
        ));
    }
    if s.contains('\n') {
        return Err(unrepresentable(what, s, "contains a line break"));
    }
    if set == EscapeSet::Measurement {
        if s.starts_with('#') {
            return Err(unrepresentable(
                what,
                s,
                "starts with `#`, which makes the line a comment",
            ));
        }
        if s.starts_with(['\t', '\0']) {
            return Err(unrepresentable(
                what,
                s,
                "starts with a tab or NUL, which the parser skips",
            ));
        }
    }
    Ok(())
}

/// Appends `s` with the escapes of `set`, without checking that the result
/// can be parsed back (keys use this; the writer checks first).
pub(crate) fn escape_unchecked(out: &mut Vec<u8>, s: &str, set: EscapeSet) {
    let bytes = s.as_bytes();
    let needs = match set {
        EscapeSet::Measurement => |c: &u8| *c == b',' || *c == b' ',
        EscapeSet::Key => |c: &u8| *c == b',' || *c == b' ' || *c == b'=',
    };
    if !bytes.iter().any(needs) {
        out.extend_from_slice(bytes);
        return;
    }
    for c in bytes {
        if needs(c) {
            out.push(b'\\');
        }
        out.push(*c);
    }
}
