//! Differential test: on generated valid input, this parser and the
//! `influxdb-line-protocol` crate (InfluxData's 2.x/3.x parser) agree on
//! every measurement, tag, field value and timestamp.
//!
//! The two differ, by design, on inputs the generator avoids: `\\` in names
//! (1.x keeps both backslashes, the reference unescapes them), line breaks
//! inside string values (1.x accepts them), and the 1.x-only `time` rules.

use influxdb_line_protocol as reference;
use proptest::prelude::*;
use trident_line_protocol::{FieldValue, LineWriter, Lines, ParseOptions, Point, Value};

/// Tokens without backslashes (see the module comment) and without the
/// reserved keys; delimiters that need escaping are included.
fn token() -> impl Strategy<Value = String> {
    "[a-zA-Z_][a-zA-Z0-9_.:/ ,=é日-]{0,12}"
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::Float),
        (-1e9f64..1e9).prop_map(Value::Float),
        any::<i64>().prop_map(Value::Integer),
        any::<u64>().prop_map(Value::UInteger),
        "[ -~é]{0,16}".prop_map(Value::String),
        any::<bool>().prop_map(Value::Boolean),
    ]
}

fn point() -> impl Strategy<Value = Point> {
    (
        token(),
        proptest::collection::btree_map(token(), token(), 0..6),
        proptest::collection::btree_map(token(), value(), 1..8),
        proptest::option::of(any::<i64>().prop_filter("in range", |t| {
            (trident_line_protocol::parse::MIN_NANOS..=trident_line_protocol::parse::MAX_NANOS)
                .contains(t)
        })),
    )
        .prop_filter("no reserved keys", |(_, tags, fields, _)| {
            tags.keys().chain(fields.keys()).all(|k| k != "time")
        })
        .prop_map(|(measurement, tags, fields, timestamp)| Point {
            measurement,
            tags: tags.into_iter().collect(),
            fields: fields.into_iter().collect(),
            timestamp,
        })
}

fn values_agree(ours: &FieldValue<'_>, theirs: &reference::FieldValue<'_>) -> bool {
    match (ours, theirs) {
        (FieldValue::Float(a), reference::FieldValue::F64(b)) => a.to_bits() == b.to_bits(),
        (FieldValue::Integer(a), reference::FieldValue::I64(b)) => a == b,
        (FieldValue::UInteger(a), reference::FieldValue::U64(b)) => a == b,
        (FieldValue::Boolean(a), reference::FieldValue::Boolean(b)) => a == b,
        (FieldValue::String(a), reference::FieldValue::String(b)) => a.as_ref() == b.as_str(),
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn both_parsers_agree(points in proptest::collection::vec(point(), 1..6)) {
        let mut writer = LineWriter::new();
        for p in &points {
            writer.write_point(p).unwrap();
        }
        let text = std::str::from_utf8(writer.as_bytes()).unwrap();
        let opts = ParseOptions { allow_unsigned: true, ..ParseOptions::default() };
        let ours: Vec<_> = Lines::new(text.as_bytes(), opts).collect::<Result<_, _>>().unwrap();
        let theirs: Vec<_> = reference::parse_lines(text).collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(ours.len(), theirs.len());
        for (o, t) in ours.iter().zip(&theirs) {
            prop_assert_eq!(o.measurement().as_str().into_owned(), t.series.measurement.to_string());
            let their_tags: Vec<(String, String)> = t
                .series
                .tag_set
                .iter()
                .flatten()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let our_tags: Vec<(String, String)> = o
                .tags()
                .map(|(k, v)| (k.as_str().into_owned(), v.as_str().into_owned()))
                .collect();
            prop_assert_eq!(our_tags, their_tags);
            let our_fields: Vec<_> = o.fields().collect();
            prop_assert_eq!(our_fields.len(), t.field_set.len());
            for ((ok, ov), (tk, tv)) in our_fields.iter().zip(&t.field_set) {
                prop_assert_eq!(ok.as_str().into_owned(), tk.to_string());
                prop_assert!(values_agree(ov, tv), "{:?} vs {:?} in {}", ov, tv, text);
            }
            prop_assert_eq!(o.timestamp(), t.timestamp);
        }
    }
}

/// Hand-picked lines both accept, beyond what the generator writes
/// (non-canonical spellings of the same values). The reference refuses
/// `1.` and `.5`, which InfluxDB 1.x (Go's ParseFloat) and Trident accept.
#[test]
fn both_parsers_agree_on_non_canonical_spellings() {
    let text = "m,b=2,a=1 f=1.0,g=0.5,h=1E3,i=-0i,t=T,u=False,s=\"x\" 0\n\
                m f=0.000001e+6 -9\n";
    let ours: Vec<_> = Lines::new(
        text.as_bytes(),
        ParseOptions {
            allow_unsigned: true,
            ..ParseOptions::default()
        },
    )
    .collect::<Result<_, _>>()
    .unwrap();
    let theirs: Vec<_> = reference::parse_lines(text)
        .collect::<Result<_, _>>()
        .unwrap();
    for (o, t) in ours.iter().zip(&theirs) {
        for ((_, ov), (_, tv)) in o.fields().zip(&t.field_set) {
            assert!(values_agree(&ov, tv), "{ov:?} vs {tv:?}");
        }
        assert_eq!(o.timestamp(), t.timestamp);
    }
}
