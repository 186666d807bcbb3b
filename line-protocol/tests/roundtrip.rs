//! parse → write → parse is the identity, on generated points.

use proptest::prelude::*;
use trident_line_protocol::test_helpers::{point, token};
use trident_line_protocol::{LineWriter, Lines, ParseOptions, Point, Value};

fn parse_all(bytes: &[u8], unsigned: bool) -> Vec<Point> {
    let opts = ParseOptions {
        allow_unsigned: unsigned,
        ..ParseOptions::default()
    };
    Lines::new(bytes, opts)
        .map(|r| r.map(|l| l.to_point()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(bytes)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn written_points_parse_back_exactly(points in proptest::collection::vec(point(true), 1..5)) {
        let mut writer = LineWriter::new();
        for p in &points {
            writer.write_point(p).unwrap();
        }
        let parsed = parse_all(writer.as_bytes(), true);
        prop_assert_eq!(parsed.len(), points.len());
        for (a, b) in points.iter().zip(&parsed) {
            prop_assert!(a.same_bits(b), "{:?}\n!=\n{:?}\n{}", a, b, String::from_utf8_lossy(writer.as_bytes()));
        }
    }

    #[test]
    fn a_parsed_line_rewritten_canonically_parses_to_the_same_point(p in point(true)) {
        let mut writer = LineWriter::new();
        writer.write_point(&p).unwrap();
        let first = parse_all(writer.as_bytes(), true);
        let bytes = writer.as_bytes().to_vec();
        let opts = ParseOptions { allow_unsigned: true, ..ParseOptions::default() };
        let line = Lines::new(&bytes, opts).next().unwrap().unwrap();
        let mut again = LineWriter::new();
        again.write_line(&line).unwrap();
        prop_assert_eq!(again.as_bytes(), &bytes[..], "canonical output is a fixed point");
        prop_assert!(first[0].same_bits(&p));
    }

    #[test]
    fn series_key_ignores_tag_order(
        p in point(false),
        tags in proptest::collection::btree_map(token(), token(), 2..6),
    ) {
        let p = Point { tags: tags.into_iter().collect(), ..p };
        let mut sorted = LineWriter::new();
        sorted.write_point(&p).unwrap();
        // The same line with its tags reversed: splice them in by hand
        // after the measurement (the writer would sort them).
        let mut bare = LineWriter::new();
        bare.write_point(&Point { tags: vec![], ..p.clone() }).unwrap();
        let bare = String::from_utf8(bare.into_inner()).unwrap();
        let m_len = trident_line_protocol::parse_lines(bare.as_bytes())
            .next().unwrap().unwrap().measurement().raw().len();
        let mut manual = bare[..m_len].to_owned();
        for (k, v) in p.tags.iter().rev() {
            manual.push(',');
            manual.push_str(&escape_key(k));
            manual.push('=');
            manual.push_str(&escape_key(v));
        }
        manual.push_str(&bare[m_len..]);
        let a = trident_line_protocol::parse_lines(sorted.as_bytes()).next().unwrap().unwrap();
        let b = trident_line_protocol::parse_lines(manual.as_bytes()).next().unwrap().unwrap();
        prop_assert!(a.tags_sorted());
        prop_assert!(!b.tags_sorted());
        prop_assert_eq!(a.series_key(), b.series_key());
        let b_with_sorted_tags = Point { tags: p.tags.clone(), ..b.to_point() };
        prop_assert!(a.to_point().same_bits(&b_with_sorted_tags));
    }
}

fn escape_key(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if matches!(c, ',' | '=' | ' ') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[test]
fn unrepresentable_points_are_refused_not_mangled() {
    let base = Point {
        measurement: "m".into(),
        tags: vec![],
        fields: vec![("v".into(), Value::Float(1.0))],
        timestamp: None,
    };
    let cases = [
        Point {
            measurement: String::new(),
            ..base.clone()
        },
        Point {
            measurement: "#m".into(),
            ..base.clone()
        },
        Point {
            measurement: "m\\".into(),
            ..base.clone()
        },
        Point {
            tags: vec![("k".into(), String::new())],
            ..base.clone()
        },
        Point {
            tags: vec![("k".into(), "a\nb".into())],
            ..base.clone()
        },
        Point {
            fields: vec![],
            ..base.clone()
        },
        Point {
            fields: vec![("v".into(), Value::Float(f64::NAN))],
            ..base.clone()
        },
        Point {
            fields: vec![("v".into(), Value::Float(f64::INFINITY))],
            ..base.clone()
        },
    ];
    for p in cases {
        let mut w = LineWriter::new();
        w.write_point(&base).unwrap();
        let before = w.len();
        let err = w.write_point(&p).unwrap_err();
        assert_eq!(w.len(), before, "nothing appended on error: {err}");
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn canonical_form_examples() {
    let p = Point {
        measurement: "cpu load".into(),
        tags: vec![("z".into(), "1".into()), ("a,b".into(), "x=y".into())],
        fields: vec![
            ("f".into(), Value::Float(1.0)),
            ("i".into(), Value::Integer(-3)),
            ("u".into(), Value::UInteger(3)),
            ("s".into(), Value::String("say \"hi\" \\o/".into())),
            ("b".into(), Value::Boolean(false)),
        ],
        timestamp: Some(-5),
    };
    let mut w = LineWriter::new();
    w.write_point(&p).unwrap();
    assert_eq!(
        String::from_utf8(w.into_inner()).unwrap(),
        "cpu\\ load,a\\,b=x\\=y,z=1 f=1.0,i=-3i,u=3u,s=\"say \\\"hi\\\" \\\\o/\",b=false -5\n"
    );
}
