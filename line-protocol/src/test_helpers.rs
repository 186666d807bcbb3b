//! Proptest strategies for points that line protocol can carry, shared with
//! other crates' tests (feature `test_helpers`).

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;

use crate::write::{Point, Value};

/// Characters tokens are drawn from: plain, delimiters that need escapes,
/// a backslash, and multi-byte UTF-8.
const TOKEN_CHARS: &str = "[a-zA-Z0-9_.:/ ,=\\\\\"é日-]";

/// A measurement, tag or field-key token the writer accepts: non-empty, not
/// ending in a backslash, not starting with `#` or whitespace the parser
/// skips.
pub fn token() -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[a-zA-Z_é]{TOKEN_CHARS}{{0,12}}"))
        .unwrap_or_else(|_| unreachable!("the pattern is a constant"))
        .prop_filter("must not end in a backslash", |s| !s.ends_with('\\'))
        .prop_filter("reserved keys", |s| {
            !matches!(s.as_str(), "time" | "_field" | "_measurement")
        })
}

/// Any field value line protocol carries (finite floats; unsigned only when
/// `unsigned`).
pub fn value(unsigned: bool) -> impl Strategy<Value = Value> {
    let float = prop_oneof![
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
        (-1e6f64..1e6),
        Just(0.0),
        Just(-0.0),
    ]
    .prop_map(Value::Float);
    let string = proptest::string::string_regex("[ -~é日\n\\\\\"]{0,20}")
        .unwrap_or_else(|_| unreachable!("the pattern is a constant"))
        .prop_map(Value::String);
    let uint = any::<u64>().prop_map(Value::UInteger);
    let int = any::<i64>().prop_map(Value::Integer);
    let boolean = any::<bool>().prop_map(Value::Boolean);
    if unsigned {
        prop_oneof![float, int, uint, string, boolean].boxed()
    } else {
        prop_oneof![float, int, string, boolean].boxed()
    }
}

/// A point with 0–6 tags and 1–8 fields, unique keys, tags sorted (as the
/// writer sorts them), timestamp within InfluxDB's range or none.
pub fn point(unsigned: bool) -> impl Strategy<Value = Point> {
    (
        token(),
        btree_map(token(), token(), 0..6),
        vec((token(), value(unsigned)), 1..8),
        prop_oneof![
            Just(None),
            (crate::parse::MIN_NANOS..=crate::parse::MAX_NANOS).prop_map(Some)
        ],
    )
        .prop_map(|(measurement, tags, fields, timestamp)| {
            let mut seen = std::collections::HashSet::new();
            let fields = fields
                .into_iter()
                .filter(|(k, _)| seen.insert(k.clone()))
                .collect();
            let mut tags: Vec<(String, String)> = tags.into_iter().collect();
            tags.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            Point {
                measurement,
                tags,
                fields,
                timestamp,
            }
        })
}

/// Where [`telegraf_corpus`]'s timestamps start (2023-11-14T22:13:20Z).
pub const CORPUS_START_NS: i64 = 1_700_000_000_000_000_000;

/// The corpus's lines are this many nanoseconds apart (10 ms).
pub const CORPUS_STEP_NS: i64 = 10_000_000;

/// A deterministic corpus of Telegraf-like lines (`cpu`, `mem`, `diskio`,
/// `http_requests`: 5–6 tags, 5–9 fields, about 200 bytes a line), for
/// benchmarks and fuzz seeds. The same `seed` gives the same bytes.
pub fn telegraf_corpus(lines: usize, seed: u64) -> Vec<u8> {
    telegraf_corpus_from(lines, seed, CORPUS_START_NS)
}

/// [`telegraf_corpus`] with line `n` stamped `start_ns + (n + 1) ×`
/// [`CORPUS_STEP_NS`] (the same lines otherwise).
pub fn telegraf_corpus_from(lines: usize, seed: u64, start_ns: i64) -> Vec<u8> {
    let mut rng = SplitMix64(seed);
    let mut out = Vec::with_capacity(lines * 210);
    let hosts = [
        "web-01",
        "web-02",
        "db-primary",
        "cache-7",
        "batch-worker-12",
    ];
    let regions = ["eu-west-1", "us-east-2", "ap-south-1"];
    let mut ts = start_ns;
    for n in 0..lines {
        ts = ts.saturating_add(CORPUS_STEP_NS);
        let host = hosts[rng.below(hosts.len())];
        let region = regions[rng.below(regions.len())];
        let line = match n % 4 {
            0 => format!(
                "cpu,cpu=cpu{},datacenter=dc{},host={host},rack=r{},region={region} usage_guest=0,usage_idle={:.6},usage_iowait={:.6},usage_system={:.6},usage_user={:.6},usage_steal=0 {ts}\n",
                rng.below(16),
                rng.below(4),
                rng.below(40),
                rng.float(100.0),
                rng.float(5.0),
                rng.float(20.0),
                rng.float(60.0),
            ),
            1 => format!(
                "mem,datacenter=dc{},host={host},os=linux,rack=r{},region={region} active={}i,available={}i,available_percent={:.6},buffered={}i,cached={}i,free={}i,total=17179869184i,used={}i {ts}\n",
                rng.below(4),
                rng.below(40),
                rng.below(1 << 33),
                rng.below(1 << 34),
                rng.float(100.0),
                rng.below(1 << 28),
                rng.below(1 << 32),
                rng.below(1 << 33),
                rng.below(1 << 34),
            ),
            2 => format!(
                "diskio,datacenter=dc{},host={host},name=nvme0n{},rack=r{},region={region},serial=S4EWNX0R{} io_time={}i,read_bytes={}i,read_time={}i,reads={}i,write_bytes={}i,writes={}i {ts}\n",
                rng.below(4),
                rng.below(4),
                rng.below(40),
                rng.below(100_000),
                rng.below(1 << 30),
                rng.below(1 << 40),
                rng.below(1 << 30),
                rng.below(1 << 30),
                rng.below(1 << 40),
                rng.below(1 << 30),
            ),
            _ => format!(
                "http_requests,app=shop,endpoint=/api/v1/orders/{},host={host},method={},region={region},status={} bytes={}i,count=1i,latency_ms={:.3},success={},upstream=\"payments\" {ts}\n",
                rng.below(20),
                ["GET", "POST", "PUT"][rng.below(3)],
                [200, 201, 404, 500][rng.below(4)],
                rng.below(100_000),
                rng.float(2000.0),
                ["true", "false"][rng.below(2)],
            ),
        };
        out.extend_from_slice(line.as_bytes());
    }
    out
}

/// SplitMix64: a tiny, well-known PRNG, so the corpus needs no dependency
/// and is identical on every machine.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn float(&mut self, max: f64) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 * max
    }
}

/// The one line `input` holds, parsed with the default options; panics
/// (naming the input) if it is not exactly one valid line.
pub fn one(input: &str) -> crate::Line<'_> {
    let mut lines = crate::parse_lines(input.as_bytes());
    let line = lines
        .next()
        .expect("one line")
        .unwrap_or_else(|e| panic!("{input:?}: {e}"));
    assert!(lines.next().is_none(), "{input:?}: more than one line");
    line
}
