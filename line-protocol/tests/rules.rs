//! Every parsing rule, table-driven: what is accepted and what it means,
//! what is refused and what the user is told.

use std::borrow::Cow;

use trident_line_protocol::test_helpers::one;
use trident_line_protocol::{
    ErrorKind, FieldValue, KeyRole, Line, ParseError, ParseOptions, Precision, parse_lines,
};

fn err(input: &str) -> ParseError {
    err_with(input, ParseOptions::default())
}

fn err_with(input: &str, opts: ParseOptions) -> ParseError {
    trident_line_protocol::Lines::new(input.as_bytes(), opts)
        .next()
        .expect("one line")
        .expect_err(input)
}

fn fields(line: &Line<'_>) -> Vec<(String, FieldValue<'static>)> {
    line.fields()
        .map(|(k, v)| {
            let v = match v {
                FieldValue::String(s) => FieldValue::String(Cow::Owned(s.into_owned())),
                FieldValue::Float(f) => FieldValue::Float(f),
                FieldValue::Integer(i) => FieldValue::Integer(i),
                FieldValue::UInteger(u) => FieldValue::UInteger(u),
                FieldValue::Boolean(b) => FieldValue::Boolean(b),
            };
            (k.as_str().into_owned(), v)
        })
        .collect()
}

fn tags(line: &Line<'_>) -> Vec<(String, String)> {
    line.tags()
        .map(|(k, v)| (k.as_str().into_owned(), v.as_str().into_owned()))
        .collect()
}

fn s(v: &str) -> FieldValue<'static> {
    FieldValue::String(Cow::Owned(v.to_owned()))
}

#[test]
fn a_full_line() {
    let l = one(
        "cpu,host=server01,region=us-west usage=0.64,count=3i,up=true,msg=\"ok\" 1434055562000000000",
    );
    assert_eq!(l.measurement().as_str(), "cpu");
    assert_eq!(
        tags(&l),
        [
            ("host".into(), "server01".into()),
            ("region".into(), "us-west".into())
        ]
    );
    assert_eq!(
        fields(&l),
        [
            ("usage".into(), FieldValue::Float(0.64)),
            ("count".into(), FieldValue::Integer(3)),
            ("up".into(), FieldValue::Boolean(true)),
            ("msg".into(), s("ok")),
        ]
    );
    assert_eq!(l.timestamp(), Some(1_434_055_562_000_000_000));
    assert_eq!(l.tag_count(), 2);
    assert_eq!(l.field_count(), 4);
    assert!(l.tags_sorted());
}

#[test]
fn field_types() {
    let cases: &[(&str, FieldValue<'static>)] = &[
        ("1", FieldValue::Float(1.0)),
        ("-1.5", FieldValue::Float(-1.5)),
        (".5", FieldValue::Float(0.5)),
        ("1.", FieldValue::Float(1.0)),
        ("1e3", FieldValue::Float(1000.0)),
        ("1E+3", FieldValue::Float(1000.0)),
        ("-2.5e-3", FieldValue::Float(-0.0025)),
        ("1.7976931348623157e308", FieldValue::Float(f64::MAX)),
        ("0i", FieldValue::Integer(0)),
        ("-42i", FieldValue::Integer(-42)),
        ("9223372036854775807i", FieldValue::Integer(i64::MAX)),
        ("-9223372036854775808i", FieldValue::Integer(i64::MIN)),
        ("\"\"", s("")),
        ("\"a b,c=d\"", s("a b,c=d")),
        (r#""say \"hi\"""#, s("say \"hi\"")),
        (r#""back\\slash""#, s("back\\slash")),
        (r#""keep\nas is""#, s("keep\\nas is")),
        ("\"multi\nline\"", s("multi\nline")),
    ];
    for (text, expected) in cases {
        let input = format!("m v={text}");
        let l = one(&input);
        assert_eq!(
            fields(&l),
            [("v".to_owned(), expected.clone())],
            "{input:?}"
        );
    }
    for (text, expected) in [
        ("t", true),
        ("T", true),
        ("true", true),
        ("True", true),
        ("TRUE", true),
        ("f", false),
        ("F", false),
        ("false", false),
        ("False", false),
        ("FALSE", false),
    ] {
        let input = format!("m v={text}");
        assert_eq!(
            fields(&one(&input)),
            [("v".to_owned(), FieldValue::Boolean(expected))]
        );
    }
}

#[test]
fn unsigned_is_refused_unless_enabled() {
    let e = err("m v=1u");
    assert_eq!(e.kind, ErrorKind::UnsignedDisabled("v".into()));
    assert!(e.to_string().contains("suffix `i`"), "{e}");
    let opts = ParseOptions {
        allow_unsigned: true,
        ..ParseOptions::default()
    };
    let mut lines = trident_line_protocol::Lines::new(b"m v=18446744073709551615u", opts);
    let l = lines.next().unwrap().unwrap();
    assert_eq!(fields(&l), [("v".into(), FieldValue::UInteger(u64::MAX))]);
    assert_eq!(
        err_with("m v=18446744073709551616u", opts).kind,
        ErrorKind::UnsignedOutOfRange("v".into())
    );
    assert_eq!(
        err_with("m v=-1u", opts).kind,
        ErrorKind::UnsignedOutOfRange("v".into())
    );
}

#[test]
fn escapes_in_names_follow_influxdb_1x() {
    let l = one(r"wea\,ther\ now,lo\ c\=a=x\,y\ z\=w fi\,e\=ld\ =1");
    assert_eq!(l.measurement().as_str(), "wea,ther now");
    assert!(l.measurement().is_escaped());
    assert_eq!(tags(&l), [("lo c=a".into(), "x,y z=w".into())]);
    assert_eq!(fields(&l)[0].0, "fi,e=ld ");
    // A measurement may hold a bare `=`; `\=` there is not an escape (1.x).
    assert_eq!(one("a=b v=1").measurement().as_str(), "a=b");
    assert_eq!(one(r"a\=b v=1").measurement().as_str(), r"a\=b");
    // Other backslashes are kept; a delimiter after any backslash is literal.
    assert_eq!(tags(&one(r"m,k=a\b v=1")), [("k".into(), r"a\b".into())]);
    assert_eq!(tags(&one(r"m,a\\,b=1 v=1")), [(r"a\,b".into(), "1".into())]);
    assert!(!one("cpu,host=a v=1").has_escapes());
}

#[test]
fn comments_blank_lines_whitespace_and_crlf() {
    let input = b"# a comment\n\n   \ncpu v=1 1\r\n\t cpu v=2 2\r\n  # indented comment\ncpu v=3 3   \ncpu v=4";
    let lines: Vec<_> = parse_lines(input).map(|r| r.unwrap()).collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0].timestamp(), Some(1));
    assert_eq!(lines[0].text(), "cpu v=1 1");
    assert_eq!(lines[0].number(), 4);
    assert_eq!(lines[1].timestamp(), Some(2));
    assert_eq!(lines[1].text(), "cpu v=2 2");
    assert_eq!(lines[2].timestamp(), Some(3));
    assert_eq!(lines[3].timestamp(), None);
    assert_eq!(lines[3].number(), 8);
    // Several spaces between sections, as 1.x allows.
    assert_eq!(one("cpu   v=1    5").timestamp(), Some(5));
}

#[test]
fn timestamps_and_precision() {
    assert_eq!(one("m v=1 -1").timestamp(), Some(-1));
    assert_eq!(
        one("m v=1 9223372036854775806").timestamp(),
        Some(9_223_372_036_854_775_806)
    );
    assert_eq!(
        err("m v=1 9223372036854775807").kind,
        ErrorKind::TimestampOutOfRange
    );
    assert_eq!(
        err("m v=1 99999999999999999999").kind,
        ErrorKind::TimestampOutOfRange
    );
    for (precision, ts, nanos) in [
        (Precision::Seconds, 2, 2_000_000_000),
        (Precision::Milliseconds, 2, 2_000_000),
        (Precision::Microseconds, 2, 2_000),
        (Precision::Minutes, 2, 120_000_000_000),
        (Precision::Hours, -1, -3_600_000_000_000),
    ] {
        let input = format!("m v=1 {ts}");
        let opts = ParseOptions {
            precision,
            ..ParseOptions::default()
        };
        let l = trident_line_protocol::Lines::new(input.as_bytes(), opts)
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(l.timestamp(), Some(nanos), "{precision}");
    }
    let opts = ParseOptions {
        precision: Precision::Seconds,
        ..ParseOptions::default()
    };
    assert_eq!(
        err_with("m v=1 9223372037", opts).kind,
        ErrorKind::TimestampOutOfRange
    );
    // A missing timestamp takes the caller's "now".
    let opts = ParseOptions {
        default_time: Some(77),
        ..ParseOptions::default()
    };
    let l = trident_line_protocol::Lines::new(b"m v=1", opts)
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(l.timestamp(), Some(77));
}

#[test]
fn duplicate_fields_keep_the_last_value_like_influxdb() {
    let l = one("m a=1,b=2,a=3");
    assert_eq!(
        fields(&l),
        [
            ("b".into(), FieldValue::Float(2.0)),
            ("a".into(), FieldValue::Float(3.0))
        ]
    );
    assert_eq!(l.field_count(), 2);
    // Escaped and plain spellings of one key are the same key.
    let l = one(r"m a\ b=1,a\ b=2i");
    assert_eq!(fields(&l), [("a b".into(), FieldValue::Integer(2))]);
}

#[test]
fn unsorted_tags_are_accepted_and_reported() {
    let l = one("m,b=1,a=2 v=1");
    assert!(!l.tags_sorted());
    assert_eq!(
        l.tag("a").map(|t| t.as_str().into_owned()),
        Some("2".into())
    );
    assert_eq!(l.tag("c"), None);
}

/// Each error: where it is reported and what the user reads.
#[test]
fn every_error_names_line_column_and_reason() {
    let cases: &[(&str, usize, ErrorKind, &str)] = &[
        (
            ",tag=a v=1",
            1,
            ErrorKind::MissingMeasurement,
            "measurement",
        ),
        ("cpu", 4, ErrorKind::MissingFields, "at least one field"),
        ("cpu ", 5, ErrorKind::MissingFields, "at least one field"),
        (
            "cpu,host=a",
            11,
            ErrorKind::MissingFields,
            "at least one field",
        ),
        ("cpu, v=1", 5, ErrorKind::MissingTagKey, "tag key"),
        ("cpu,=a v=1", 5, ErrorKind::MissingTagKey, "tag key"),
        ("cpu,host v=1", 9, ErrorKind::MissingTagValue, "tag value"),
        (
            "cpu,host= v=1",
            10,
            ErrorKind::MissingTagValue,
            "leave the tag out",
        ),
        ("cpu,host=a=b v=1", 11, ErrorKind::InvalidTagFormat, "\\="),
        (
            "cpu,a=1,a=2 v=1",
            9,
            ErrorKind::DuplicateTag("a".into()),
            "duplicate tag key `a`",
        ),
        (
            "cpu,b=1,a=2,b=3 v=1",
            13,
            ErrorKind::DuplicateTag("b".into()),
            "duplicate tag key `b`",
        ),
        ("cpu =1", 5, ErrorKind::MissingFieldKey, "field key"),
        ("cpu a=1,=2", 9, ErrorKind::MissingFieldKey, "field key"),
        ("cpu a=1,", 9, ErrorKind::MissingFieldKey, "field key"),
        (
            "cpu a=",
            7,
            ErrorKind::MissingFieldValue("a".into()),
            "value for field `a`",
        ),
        (
            "cpu a=,b=1",
            7,
            ErrorKind::MissingFieldValue("a".into()),
            "value for field `a`",
        ),
        (
            "cpu a=1,b",
            9,
            ErrorKind::InvalidFieldFormat("b".into()),
            "`b`: expected `key=value`",
        ),
        (
            "cpu a",
            5,
            ErrorKind::InvalidFieldFormat("a".into()),
            "expected `key=value`",
        ),
        (
            "cpu a=1.2.3",
            7,
            ErrorKind::InvalidNumber("a".into()),
            "integers as 42i",
        ),
        (
            "cpu a=1x",
            7,
            ErrorKind::InvalidNumber("a".into()),
            "invalid number",
        ),
        (
            "cpu a=-",
            7,
            ErrorKind::InvalidNumber("a".into()),
            "invalid number",
        ),
        (
            "cpu a=1e",
            7,
            ErrorKind::InvalidNumber("a".into()),
            "invalid number",
        ),
        (
            "cpu a=1.5i",
            7,
            ErrorKind::InvalidNumber("a".into()),
            "invalid number",
        ),
        (
            "cpu a=1i5",
            7,
            ErrorKind::InvalidNumber("a".into()),
            "invalid number",
        ),
        (
            "cpu a=NaN",
            7,
            ErrorKind::InvalidNumber("a".into()),
            "invalid number",
        ),
        (
            "cpu a=+1",
            7,
            ErrorKind::InvalidNumber("a".into()),
            "invalid number",
        ),
        (
            "cpu a=9223372036854775808i",
            7,
            ErrorKind::IntegerOutOfRange("a".into()),
            "64 bits",
        ),
        (
            "cpu a=-9223372036854775809i",
            7,
            ErrorKind::IntegerOutOfRange("a".into()),
            "64 bits",
        ),
        (
            "cpu a=1e400",
            7,
            ErrorKind::FloatOutOfRange("a".into()),
            "out of range",
        ),
        (
            "cpu a=yes",
            7,
            ErrorKind::InvalidBoolean("a".into()),
            "strings need double quotes",
        ),
        (
            "cpu a=tru",
            7,
            ErrorKind::InvalidBoolean("a".into()),
            "booleans are",
        ),
        (
            "cpu a=truex",
            7,
            ErrorKind::InvalidBoolean("a".into()),
            "booleans are",
        ),
        (
            "cpu a=\"open",
            7,
            ErrorKind::UnbalancedQuotes("a".into()),
            "unbalanced quotes",
        ),
        (
            "cpu a=\"x\"y",
            10,
            ErrorKind::InvalidFieldFormat("a".into()),
            "expected `key=value`",
        ),
        (
            "cpu time=1",
            5,
            ErrorKind::ReservedKey {
                role: KeyRole::Field,
                key: "time".into(),
            },
            "`time` cannot be a field key",
        ),
        (
            "cpu,time=x v=1",
            5,
            ErrorKind::ReservedKey {
                role: KeyRole::Tag,
                key: "time".into(),
            },
            "cannot be a tag key",
        ),
        (
            "cpu,_field=x v=1",
            5,
            ErrorKind::ReservedKey {
                role: KeyRole::Tag,
                key: "_field".into(),
            },
            "reserves",
        ),
        (
            "cpu _measurement=1",
            5,
            ErrorKind::ReservedKey {
                role: KeyRole::Field,
                key: "_measurement".into(),
            },
            "reserves",
        ),
        (
            "cpu v=1 12a",
            11,
            ErrorKind::BadTimestamp,
            "invalid timestamp",
        ),
        (
            "cpu v=1 -",
            10,
            ErrorKind::BadTimestamp,
            "invalid timestamp",
        ),
        (
            "cpu v=1 1.5",
            10,
            ErrorKind::BadTimestamp,
            "invalid timestamp",
        ),
        (
            "cpu v=1 1 x",
            11,
            ErrorKind::TrailingData,
            "after the timestamp",
        ),
    ];
    for (input, column, kind, words) in cases {
        let e = err(input);
        assert_eq!((&e.kind, e.column), (kind, *column), "{input:?}: {e}");
        assert_eq!(e.line, 1);
        let message = e.to_string();
        assert!(
            message.starts_with(&format!("line 1, column {column}: ")),
            "{message}"
        );
        assert!(message.contains(words), "{input:?}: {message}");
        assert_eq!(
            &input.as_bytes()[e.span.clone()],
            input.as_bytes(),
            "span quotes the line"
        );
    }
}

#[test]
fn limits() {
    let long = format!("cpu s=\"{}\"", "x".repeat(64 * 1024 + 1));
    let e = err(&long);
    assert!(
        matches!(
            e.kind,
            ErrorKind::StringTooLong {
                len: 65537,
                max: 65536,
                ..
            }
        ),
        "{e}"
    );
    assert!(one(&format!("cpu s=\"{}\"", "x".repeat(64 * 1024))).field_count() == 1);

    let key = format!("cpu,t={} v=1", "k".repeat(65_530));
    assert!(
        matches!(err(&key).kind, ErrorKind::KeyTooLong { .. }),
        "{}",
        err(&key)
    );

    let opts = ParseOptions {
        max_line_len: 10,
        ..ParseOptions::default()
    };
    let e = err_with("cpu value=12345", opts);
    assert_eq!(e.kind, ErrorKind::LineTooLong { len: 15, max: 10 });
}

#[test]
fn invalid_utf8_is_refused_at_its_column() {
    let e = trident_line_protocol::parse_lines(b"cpu,host=a\xff v=1")
        .next()
        .unwrap()
        .unwrap_err();
    assert_eq!(
        (e.kind.clone(), e.column),
        (ErrorKind::InvalidUtf8, 11),
        "{e}"
    );
}

/// The body is checked for UTF-8 once: lines before and after a bad byte
/// (multi-byte characters included) are still read, each on its own.
#[test]
fn invalid_utf8_fails_only_its_line() {
    let mut body = "cpu,host=é v=1 1\n".as_bytes().to_vec();
    body.extend_from_slice(b"cpu,host=a\xff v=2 2\n");
    body.extend_from_slice("cpu,host=é€ v=3 3\n".as_bytes());
    let results: Vec<_> = parse_lines(&body).collect();
    assert_eq!(results.len(), 3);
    let first = results[0].as_ref().unwrap();
    assert_eq!(first.tag("host").unwrap().as_str(), "é");
    let e = results[1].as_ref().unwrap_err();
    assert_eq!(
        (e.kind.clone(), e.line, e.column),
        (ErrorKind::InvalidUtf8, 2, 11),
        "{e}"
    );
    let third = results[2].as_ref().unwrap();
    assert_eq!(third.tag("host").unwrap().as_str(), "é€");
    assert_eq!(third.timestamp(), Some(3));
}

#[test]
fn bad_lines_fail_alone_and_good_lines_survive() {
    let body = "cpu v=1 1\ncpu,host v=2 2\ncpu s=\"a\nb\" 3\n\ncpu v=oops 4\ncpu v=5 5\n";
    let results: Vec<_> = parse_lines(body.as_bytes()).collect();
    let summary: Vec<Result<Option<i64>, (usize, usize)>> = results
        .iter()
        .map(|r| match r {
            Ok(l) => Ok(l.timestamp()),
            Err(e) => Err((e.line, e.column)),
        })
        .collect();
    assert_eq!(
        summary,
        [
            Ok(Some(1)),
            Err((2, 9)),
            Ok(Some(3)),
            Err((6, 7)),
            Ok(Some(5))
        ]
    );
    let e = results[1].as_ref().unwrap_err();
    assert_eq!(&body[e.span.clone()], "cpu,host v=2 2");
}

#[test]
fn a_bad_line_with_a_quoted_newline_is_skipped_whole() {
    let body = "cpu s=\"a\nb\",x=bad 1\ncpu v=1 2\n";
    let results: Vec<_> = parse_lines(body.as_bytes()).collect();
    assert_eq!(results.len(), 2);
    assert!(results[0].is_err());
    assert_eq!(results[1].as_ref().unwrap().timestamp(), Some(2));
}

#[test]
fn without_timestamp_keeps_the_line_as_sent_up_to_its_fields() {
    assert_eq!(
        one("cpu,b=1,a=2 v=1,s=\"x y\" 123").without_timestamp(),
        "cpu,b=1,a=2 v=1,s=\"x y\""
    );
    assert_eq!(one("  cpu   v=1").without_timestamp(), "cpu   v=1");
    assert_eq!(one("cpu v=1 5\r\n").without_timestamp(), "cpu v=1");
}
