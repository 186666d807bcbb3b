//! InfluxDB 1.x's own words for a write: what a 1.x server answers for the
//! same body, so that the gateway can be indistinguishable from one.
//!
//! Trident's [`ParseError`] explains each problem at length (line, column,
//! how to fix it); InfluxDB clients and the people who grep their logs know
//! 1.x's short reasons (`unable to parse 'cpu v=oops': invalid boolean`).
//! [`write_outcome`] turns the parse results of a body into 1.x's status and
//! error text, rule for rule, as observed on a real 1.x server:
//!
//! - nothing to write and no error (empty body, only comments) → 204;
//! - only bad lines → 400, each `unable to parse '<line>': <reason>`, one
//!   per line (joined by `\n`);
//! - some good lines and some points the storage refuses (a `time` key) →
//!   400 `partial write: <reason of the last refusal> dropped=<refused>`;
//!   the parse errors of the same body are not reported (1.x drops them);
//! - some good lines and bad lines → 400 `partial write: <parse errors>
//!   dropped=0` (1.x counts in `dropped` only what its storage refused).
//!
//! Where Trident is stricter than 1.x (non-UTF-8, `_field` and
//! `_measurement` keys, over-long strings or lines), the reason is
//! Trident's own message.

use crate::error::{ErrorKind, KeyRole, ParseError};
use crate::parse::{Line, MAX_NANOS, MIN_NANOS, leading_measurement};

/// What a 1.x server answers for a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    /// HTTP status: 204 or 400.
    pub status: u16,
    /// The `error` member of the JSON body (none for 204).
    pub error: Option<String>,
    /// Lines that are stored.
    pub written: usize,
}

/// 1.x's answer for a body whose lines parsed to `results` (in order).
pub fn write_outcome(body: &[u8], results: &[Result<Line<'_>, ParseError>]) -> WriteOutcome {
    let written = results.iter().filter(|r| r.is_ok()).count();
    let errors: Vec<&ParseError> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    outcome_of(body, written, errors)
}

/// 1.x's answer for a body of which `written` lines parsed and `errors`
/// did not (in order): [`write_outcome`] for a caller that kept the two
/// apart.
pub fn outcome_of<'e>(
    body: &[u8],
    written: usize,
    errors: impl IntoIterator<Item = &'e ParseError>,
) -> WriteOutcome {
    let mut parse_errors = Vec::new();
    let mut refused = 0usize;
    let mut last_refusal = None;
    for e in errors {
        match storage_refusal(body, e) {
            Some(reason) => {
                refused += 1;
                last_refusal = Some(reason);
            }
            None => parse_errors.push(unparsable(body, e)),
        }
    }
    let parsed_points = written + refused;
    let error = if parsed_points == 0 {
        (!parse_errors.is_empty()).then(|| parse_errors.join("\n"))
    } else if let Some(reason) = last_refusal {
        Some(format!("partial write: {reason} dropped={refused}"))
    } else if !parse_errors.is_empty() {
        Some(format!(
            "partial write: {} dropped=0",
            parse_errors.join("\n")
        ))
    } else {
        None
    };
    WriteOutcome {
        status: if error.is_some() { 400 } else { 204 },
        error,
        written,
    }
}

/// `unable to parse '<line>': <reason>`, as 1.x (and 2.x) word a line
/// they cannot parse.
pub fn unparsable(body: &[u8], e: &ParseError) -> String {
    format!(
        "unable to parse '{}': {}",
        String::from_utf8_lossy(line_text(body, e)),
        reason(body, e)
    )
}

/// The line as 1.x quotes it: leading blanks and a trailing `\r` removed.
fn line_text<'b>(body: &'b [u8], e: &ParseError) -> &'b [u8] {
    let line = body.get(e.span.clone()).unwrap_or_default();
    let start = line
        .iter()
        .position(|c| !matches!(c, b' ' | b'\t' | 0))
        .unwrap_or(line.len());
    line.get(start..).unwrap_or_default()
}

/// The bytes of the value (or timestamp) the error points at, up to the
/// next delimiter.
fn token_at(body: &[u8], e: &ParseError) -> String {
    let line = body.get(e.span.clone()).unwrap_or_default();
    let from = line.get(e.column.saturating_sub(1)..).unwrap_or_default();
    let end = from
        .iter()
        .position(|c| matches!(c, b',' | b' ' | b'\n' | b'\r'))
        .unwrap_or(from.len());
    String::from_utf8_lossy(&from[..end]).into_owned()
}

/// 1.x's reason for a line it cannot parse.
pub fn reason(body: &[u8], e: &ParseError) -> String {
    let out_of_range = |digits: &str, func: &str| {
        format!("strconv.{func}: parsing \"{digits}\": value out of range")
    };
    match &e.kind {
        ErrorKind::MissingMeasurement => "missing measurement".into(),
        ErrorKind::MissingTagKey => "missing tag key".into(),
        ErrorKind::MissingTagValue => "missing tag value".into(),
        ErrorKind::InvalidTagFormat => "invalid tag format".into(),
        ErrorKind::DuplicateTag(_) => "duplicate tags".into(),
        ErrorKind::MissingFields => "missing fields".into(),
        // `cpu a=1,` (nothing after the comma) is a format error to 1.x.
        ErrorKind::MissingFieldKey if token_at(body, e).is_empty() => "invalid field format".into(),
        ErrorKind::MissingFieldKey => "missing field key".into(),
        ErrorKind::MissingFieldValue(_) => "missing field value".into(),
        ErrorKind::InvalidFieldFormat(_) => "invalid field format".into(),
        ErrorKind::InvalidNumber(_) | ErrorKind::UnsignedDisabled(_) => "invalid number".into(),
        ErrorKind::IntegerOutOfRange(_) => {
            let value = token_at(body, e);
            let digits = value.strip_suffix('i').unwrap_or(&value);
            format!(
                "unable to parse integer {digits}: {}",
                out_of_range(digits, "ParseInt")
            )
        }
        ErrorKind::UnsignedOutOfRange(_) => {
            let value = token_at(body, e);
            let digits = value.strip_suffix('u').unwrap_or(&value);
            if digits.starts_with('-') {
                "invalid number".into()
            } else {
                format!(
                    "unable to parse unsigned {digits}: {}",
                    out_of_range(digits, "ParseUint")
                )
            }
        }
        ErrorKind::FloatOutOfRange(_) => "invalid float".into(),
        ErrorKind::InvalidBoolean(_) => "invalid boolean".into(),
        ErrorKind::UnbalancedQuotes(_) => "unbalanced quotes".into(),
        ErrorKind::BadTimestamp => "bad timestamp".into(),
        ErrorKind::TimestampOutOfRange => {
            let digits = token_at(body, e);
            if digits.parse::<i64>().is_err() {
                out_of_range(&digits, "ParseInt")
            } else {
                format!("time outside range {MIN_NANOS} - {MAX_NANOS}")
            }
        }
        ErrorKind::TrailingData => "point is invalid".into(),
        ErrorKind::KeyTooLong { len, max } => format!("max key length exceeded: {len} > {max}"),
        // Stricter than 1.x, or refused by storage rather than the parser:
        // Trident's own words.
        other => other.to_string(),
    }
}

/// 1.x parses a line with a `time` tag or field key, then its storage
/// refuses the point; this is that refusal's reason (`None` for a line
/// that does not parse at all).
pub fn storage_refusal(body: &[u8], e: &ParseError) -> Option<String> {
    let ErrorKind::ReservedKey { role, key } = &e.kind else {
        return None;
    };
    // 1.6 refuses only `time`; `_field` and `_measurement` are Trident's
    // (and 1.8's) rule, reported in Trident's words.
    if key != "time" {
        return None;
    }
    let measurement = leading_measurement(line_text(body, e));
    Some(match role {
        KeyRole::Field => format!(
            "invalid field name: input field \"{key}\" on measurement \"{measurement}\" is invalid"
        ),
        KeyRole::Tag => format!(
            "invalid tag key: input tag \"{key}\" on measurement \"{measurement}\" is invalid"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_lines;

    fn outcome(body: &str) -> WriteOutcome {
        let results: Vec<_> = parse_lines(body.as_bytes()).collect();
        write_outcome(body.as_bytes(), &results)
    }

    #[test]
    fn the_four_shapes_of_a_1x_answer() {
        assert_eq!(
            outcome(""),
            WriteOutcome {
                status: 204,
                error: None,
                written: 0
            }
        );
        assert_eq!(outcome("cpu v=1\n").status, 204);
        assert_eq!(
            outcome("cpu v=oops 2\ncpu,host v=1 3\n").error.as_deref(),
            Some(
                "unable to parse 'cpu v=oops 2': invalid boolean\nunable to parse 'cpu,host v=1 3': missing tag value"
            )
        );
        assert_eq!(
            outcome("cpu v=1 1\ncpu v=oops 2\n").error.as_deref(),
            Some("partial write: unable to parse 'cpu v=oops 2': invalid boolean dropped=0")
        );
        let mixed = outcome("cpu v=1 1\ncpu v=oops 2\ncpu time=2 2\n");
        assert_eq!(
            mixed.error.as_deref(),
            Some(
                "partial write: invalid field name: input field \"time\" on measurement \"cpu\" is invalid dropped=1"
            )
        );
        assert_eq!(mixed.written, 1);
    }
}
