//! Lines with many fields: repeated keys are found however many fields a
//! line has, the last value of each key wins, and a line of a mebibyte of
//! `k=v` pairs is parsed in n log n (it was n², minutes a line).

use proptest::prelude::*;
use trident_line_protocol::test_helpers::one;
use trident_line_protocol::{FieldKey, FieldValue, Line};

/// Key and integer value of every field, as the parser yields them.
fn decoded(line: &Line<'_>) -> Vec<(String, i64)> {
    line.fields()
        .map(|(k, v)| match v {
            FieldValue::Integer(i) => (k.as_str().into_owned(), i),
            other => panic!("{other:?}: the test writes integers"),
        })
        .collect()
}

/// What InfluxDB keeps of `fields`: each key's last value, in the order of
/// the last occurrences.
fn model(fields: &[(&str, i64)]) -> Vec<(String, i64)> {
    fields
        .iter()
        .enumerate()
        .filter(|(i, (k, _))| !fields[i + 1..].iter().any(|(later, _)| later == k))
        .map(|(_, (k, v))| ((*k).to_owned(), *v))
        .collect()
}

/// Spelling of a key as written: `a b` needs its space escaped.
fn written(key: &str) -> String {
    key.replace(' ', r"\ ")
}

// Few keys, so that lines of up to sixty fields repeat some, some escaped,
// some sharing a first byte, a length and a last byte (what the scanner's
// quick signature looks at).
const KEYS: &[&str] = &["a", "b", "ab", "ba", "a b", "axb", "ayb", "usage_idle", "x"];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn repeated_keys_keep_their_last_value_at_any_width(
        picks in proptest::collection::vec((0..KEYS.len(), any::<i64>()), 1..60),
    ) {
        let fields: Vec<(&str, i64)> = picks.iter().map(|&(k, v)| (KEYS[k], v)).collect();
        let text = format!(
            "m {}",
            fields
                .iter()
                .map(|(k, v)| format!("{}={v}i", written(k)))
                .collect::<Vec<_>>()
                .join(",")
        );
        let line = one(&text);
        let want = model(&fields);
        prop_assert_eq!(line.field_count(), want.len());
        prop_assert_eq!(decoded(&line), want);
        for key in KEYS {
            prop_assert_eq!(line.has_field(key), fields.iter().any(|(k, _)| k == key), "{}", key);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The alert path's prepared key search agrees with the walk over keys
    /// whatever the values: strings that hold `key=` and commas, before or
    /// after the key, escaped keys, floats, booleans.
    #[test]
    fn the_prepared_key_search_agrees_with_the_walk(
        picks in proptest::collection::vec((0..KEYS.len(), 0..4usize, 0..KEYS.len()), 1..12),
    ) {
        let fields: Vec<String> = picks
            .iter()
            .map(|&(k, kind, inner)| {
                let value = match kind {
                    0 => "1i".to_owned(),
                    1 => "2.5".to_owned(),
                    2 => "true".to_owned(),
                    _ => format!("\"q,{}=1,x\"", written(KEYS[inner])),
                };
                format!("{}={value}", written(KEYS[k]))
            })
            .collect();
        let text = format!("m,a=1 {}", fields.join(","));
        let line = one(&text);
        for key in KEYS {
            prop_assert_eq!(line.has_field_key(&FieldKey::new(key)), line.has_field(key), "{}", key);
        }
    }
}

#[test]
fn a_mebibyte_of_fields_is_one_line_and_every_key_counts() {
    // 100 000 distinct keys and one repeated at the end: under the default
    // line limit of 1 MiB.
    let n = 100_000;
    let mut text = String::from("m ");
    for i in 0..n {
        text.push_str(&format!("f{i}=1i,"));
    }
    text.push_str("f17=2i");
    assert!(text.len() < 1 << 20, "{} bytes", text.len());
    let line = one(&text);
    assert_eq!(line.field_count(), n);
    let fields = decoded(&line);
    assert_eq!(fields.len(), n);
    assert_eq!(fields.last(), Some(&("f17".to_owned(), 2)));
    assert!(!fields.iter().any(|(k, v)| k == "f17" && *v == 1));
}
