//! Parser throughput on a Telegraf-like corpus, next to the
//! `influxdb-line-protocol` crate on the same bytes.
//!
//! `cargo bench -p trident-line-protocol --bench parse`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use trident_line_protocol::test_helpers::telegraf_corpus;
use trident_line_protocol::{FieldValue, LineWriter, Strategy, parse_lines};

fn parse(c: &mut Criterion) {
    let corpus = telegraf_corpus(10_000, 42);
    let text = std::str::from_utf8(&corpus).expect("the corpus is UTF-8");
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Bytes(corpus.len() as u64));
    group.sample_size(30);

    // Validate every line and locate its parts (what the gateway needs to
    // accept or reject a line and forward it).
    group.bench_function("trident/validate", |b| {
        b.iter(|| {
            let mut ok = 0usize;
            for line in parse_lines(black_box(&corpus)) {
                ok += usize::from(line.is_ok());
            }
            ok
        })
    });

    // Validate and decode every tag and field value (what the reference
    // crate always does), for a like-for-like comparison.
    group.bench_function("trident/decode", |b| {
        b.iter(|| {
            let mut acc = 0.0f64;
            for line in parse_lines(black_box(&corpus)) {
                let Ok(line) = line else { continue };
                for (k, v) in line.tags() {
                    acc += (k.as_str().len() + v.as_str().len()) as f64;
                }
                for (k, v) in line.fields() {
                    acc += k.as_str().len() as f64;
                    acc += match v {
                        FieldValue::Float(f) => f,
                        FieldValue::Integer(i) => i as f64,
                        FieldValue::UInteger(u) => u as f64,
                        FieldValue::String(s) => s.len() as f64,
                        FieldValue::Boolean(b) => f64::from(u8::from(b)),
                    };
                }
            }
            acc
        })
    });

    group.bench_function("influxdb-line-protocol/parse_lines", |b| {
        b.iter(|| {
            let mut acc = 0.0f64;
            for line in influxdb_line_protocol::parse_lines(black_box(text)) {
                let Ok(line) = line else { continue };
                for (k, v) in line.series.tag_set.iter().flatten() {
                    acc += (k.as_str().len() + v.as_str().len()) as f64;
                }
                for (k, v) in &line.field_set {
                    acc += k.as_str().len() as f64;
                    acc += match v {
                        influxdb_line_protocol::FieldValue::F64(f) => *f,
                        influxdb_line_protocol::FieldValue::I64(i) => *i as f64,
                        influxdb_line_protocol::FieldValue::U64(u) => *u as f64,
                        influxdb_line_protocol::FieldValue::String(s) => s.as_str().len() as f64,
                        influxdb_line_protocol::FieldValue::Boolean(b) => f64::from(u8::from(*b)),
                    };
                }
            }
            acc
        })
    });
    group.finish();

    let mut keys = c.benchmark_group("keys");
    keys.throughput(Throughput::Bytes(corpus.len() as u64));
    keys.sample_size(30);
    keys.bench_function("trident/validate+shard_hash(series)", |b| {
        let mut scratch = Vec::with_capacity(256);
        b.iter(|| {
            let mut h = 0u64;
            for line in parse_lines(black_box(&corpus)).flatten() {
                h ^= line.shard_hash(&Strategy::Series, &mut scratch);
            }
            h
        })
    });
    keys.bench_function("trident/parse+write_line", |b| {
        let mut writer = LineWriter::with_capacity(corpus.len() * 2);
        b.iter(|| {
            writer.clear();
            for line in parse_lines(black_box(&corpus)).flatten() {
                let _ = writer.write_line(&line);
            }
            writer.len()
        })
    });
    keys.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
