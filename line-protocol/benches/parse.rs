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
    // crate always does), for a like-for-like comparison. Both loops fold
    // what they read with integer operations: a chain of float additions
    // (four cycles each) would time the accumulator, not the parser.
    group.bench_function("trident/decode", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for line in parse_lines(black_box(&corpus)) {
                let Ok(line) = line else { continue };
                for (k, v) in line.tags() {
                    acc = acc.wrapping_add((k.as_str().len() + v.as_str().len()) as u64);
                }
                for (k, v) in line.fields() {
                    acc = acc.wrapping_add(k.as_str().len() as u64);
                    acc ^= match v {
                        FieldValue::Float(f) => f.to_bits(),
                        FieldValue::Integer(i) => i as u64,
                        FieldValue::UInteger(u) => u,
                        FieldValue::String(s) => s.len() as u64,
                        FieldValue::Boolean(b) => u64::from(b),
                    };
                }
            }
            acc
        })
    });

    group.bench_function("influxdb-line-protocol/parse_lines", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for line in influxdb_line_protocol::parse_lines(black_box(text)) {
                let Ok(line) = line else { continue };
                for (k, v) in line.series.tag_set.iter().flatten() {
                    acc = acc.wrapping_add((k.as_str().len() + v.as_str().len()) as u64);
                }
                for (k, v) in &line.field_set {
                    acc = acc.wrapping_add(k.as_str().len() as u64);
                    acc ^= match v {
                        influxdb_line_protocol::FieldValue::F64(f) => f.to_bits(),
                        influxdb_line_protocol::FieldValue::I64(i) => *i as u64,
                        influxdb_line_protocol::FieldValue::U64(u) => *u,
                        influxdb_line_protocol::FieldValue::String(s) => s.as_str().len() as u64,
                        influxdb_line_protocol::FieldValue::Boolean(b) => u64::from(*b),
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

    // One line of 2 000 fields, the last repeating the first key: how the
    // repeated-key check scales with a line's width (the parser takes lines
    // of up to a mebibyte, about 100 000 fields).
    let mut wide = String::from("m ");
    for i in 0..2_000 {
        wide.push_str(&format!("f{i}=1i,"));
    }
    wide.push_str("f0=2i\n");
    let mut group = c.benchmark_group("wide");
    group.throughput(Throughput::Bytes(wide.len() as u64));
    group.sample_size(20);
    group.bench_function("trident/validate+decode", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for line in parse_lines(black_box(wide.as_bytes())).flatten() {
                for (k, _) in line.fields() {
                    acc = acc.wrapping_add(k.as_str().len() as u64);
                }
            }
            acc
        })
    });
    group.bench_function("influxdb-line-protocol/parse_lines", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for line in influxdb_line_protocol::parse_lines(black_box(&wide)).flatten() {
                for (k, _) in &line.field_set {
                    acc = acc.wrapping_add(k.as_str().len() as u64);
                }
            }
            acc
        })
    });
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
