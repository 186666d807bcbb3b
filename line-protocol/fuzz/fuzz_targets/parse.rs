//! Any bytes, any options: the parser never panics, every accepted line can
//! be read through every accessor (field and tag lookups agree with the
//! iterators), errors point inside the body, and every accepted line
//! written canonically parses back to the same point.
//!
//! cargo fuzz run parse -s none

#![no_main]

use libfuzzer_sys::fuzz_target;
use trident_line_protocol::{FieldKey, LineWriter, Lines, ParseOptions, Precision, Strategy};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let precision = [
        Precision::Nanoseconds,
        Precision::Microseconds,
        Precision::Milliseconds,
        Precision::Seconds,
        Precision::Minutes,
        Precision::Hours,
    ][usize::from(flags % 6)];
    let opts = ParseOptions {
        precision,
        allow_unsigned: flags & 0x10 != 0,
        default_time: (flags & 0x20 != 0).then_some(1_700_000_000_000_000_000),
        max_line_len: if flags & 0x40 != 0 { 64 } else { 1 << 20 },
        ..ParseOptions::default()
    };
    let strategies = [
        Strategy::Series,
        Strategy::Measurement,
        Strategy::MeasurementTags(vec!["host".into(), "a b".into()]),
    ];
    let mut scratch = Vec::new();
    let mut last_line = 0;
    // InfluxDB 1.x's wording of the whole body's outcome never panics.
    let results: Vec<_> = Lines::new(body, opts).collect();
    let outcome = trident_line_protocol::compat::write_outcome(body, &results);
    assert_eq!(outcome.status == 204, outcome.error.is_none());
    for result in results {
        match result {
            Err(e) => {
                assert!(e.span.start <= e.span.end && e.span.end <= body.len());
                assert!(e.line > last_line, "line numbers increase");
                assert!(e.column >= 1);
                last_line = e.line;
                let _ = e.to_string();
            }
            Ok(line) => {
                assert!(line.number() > last_line, "line numbers increase");
                last_line = line.number();
                let _ = line.measurement().as_str();
                assert_eq!(line.tags().count(), line.tag_count());
                // What the gateway forwards: the line up to its fields, which
                // parses to the same point once a timestamp is appended.
                let head = line.without_timestamp();
                assert!(line.text().starts_with(head));
                let forwarded = format!("{head} {}", line.timestamp().unwrap_or(0));
                // Sent as it came exactly when it already reads so, in nanoseconds.
                assert_eq!(
                    line.stamped_in_nanos(),
                    precision == Precision::Nanoseconds
                        && line.timestamp().is_some()
                        && line.text() == forwarded,
                    "{:?}",
                    line.text()
                );
                let again: Vec<_> = Lines::new(
                    forwarded.as_bytes(),
                    ParseOptions {
                        precision: Precision::Nanoseconds,
                        max_line_len: usize::MAX,
                        ..opts
                    },
                )
                .collect();
                match again.as_slice() {
                    [Ok(l)] => {
                        let mut expected = line.to_point();
                        expected.timestamp = Some(line.timestamp().unwrap_or(0));
                        assert!(l.to_point().same_bits(&expected), "forwarded {forwarded:?}");
                    }
                    other => panic!("forwarded line {forwarded:?} does not parse: {other:?}"),
                }
                assert_eq!(line.fields().count(), line.field_count());
                // A repeated key yields once (its last value).
                let mut keys: Vec<_> = line.fields().map(|(k, _)| k.as_str()).collect();
                keys.sort();
                keys.dedup();
                assert_eq!(keys.len(), line.field_count(), "a key yielded twice");
                // The alert rules' key search agrees with the fields, and
                // tag lookups with the tags.
                for key in &keys {
                    assert!(line.has_field(key), "has_field({key:?})");
                    assert!(
                        line.has_field_key(&FieldKey::new(key)),
                        "has_field_key({key:?})"
                    );
                }
                for key in ["a", "b", "ab", "x", "usage_user"] {
                    assert_eq!(
                        line.has_field_key(&FieldKey::new(key)),
                        line.has_field(key),
                        "has_field_key({key:?})"
                    );
                }
                for (key, _) in line.tags() {
                    let found = line.tag(&key.as_str()).map(|v| v.as_str().into_owned());
                    let first = line
                        .tags()
                        .find(|(k, _)| k.as_str() == key.as_str())
                        .map(|(_, v)| v.as_str().into_owned());
                    assert_eq!(found, first, "tag({key})");
                }
                for s in &strategies {
                    let _ = line.shard_hash(s, &mut scratch);
                }
                // The canonical form sorts tags by key.
                let mut point = line.to_point();
                point
                    .tags
                    .sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                let mut writer = LineWriter::new();
                // Only tokens line protocol cannot carry (e.g. ending in `\`,
                // which a parsed token never does at a delimiter) may fail.
                if writer.write_line(&line).is_err() {
                    continue;
                }
                let reparse_opts = ParseOptions {
                    precision: Precision::Nanoseconds,
                    default_time: None,
                    max_line_len: usize::MAX,
                    ..opts
                };
                let again: Vec<_> = Lines::new(writer.as_bytes(), reparse_opts).collect();
                assert_eq!(
                    again.len(),
                    1,
                    "{:?}",
                    String::from_utf8_lossy(writer.as_bytes())
                );
                let reparsed = match &again[0] {
                    Ok(l) => l.to_point(),
                    Err(e) => panic!(
                        "canonical output does not parse: {e}\ninput: {:?}\noutput: {:?}",
                        line.text(),
                        String::from_utf8_lossy(writer.as_bytes())
                    ),
                };
                assert!(
                    point.same_bits(&reparsed),
                    "round trip changed the point\ninput: {:?}\n{point:?}\n{reparsed:?}",
                    line.text()
                );
                let mut again_writer = LineWriter::new();
                if let Ok(l) = &again[0] {
                    again_writer
                        .write_line(l)
                        .expect("canonical text writes again");
                }
                assert_eq!(
                    again_writer.as_bytes(),
                    writer.as_bytes(),
                    "canonical form is a fixed point"
                );
            }
        }
    }
});
