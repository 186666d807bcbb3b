//! No query text makes the parser or the planner panic: random bytes, and
//! random soups of InfluxQL's own words and symbols (which reach far deeper
//! than random bytes do).

use proptest::prelude::*;
use trident_cluster::{Placement, Topology};

fn placement() -> Placement {
    serde_json::from_value::<Topology>(serde_json::json!({
        "nodes": [{"id": "a", "url": "http://x:1"}, {"id": "b", "url": "http://x:2"}],
        "replication": 2,
        "rules": [{"measurement": "m", "strategy": "measurement+tags(app)"}]
    }))
    .expect("topology")
    .validate()
    .expect("valid")
}

const WORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP",
    "BY",
    "time",
    "(",
    ")",
    ",",
    ";",
    "*",
    "/",
    "/x/",
    "'s'",
    "\"q\"",
    "=",
    "=~",
    "AND",
    "OR",
    "fill",
    "none",
    "previous",
    "LIMIT",
    "OFFSET",
    "SLIMIT",
    "SOFFSET",
    "ORDER",
    "DESC",
    "tz",
    "INTO",
    "AS",
    "mean",
    "count",
    "first",
    "percentile",
    "m",
    "cpu",
    "app",
    "1m",
    "5",
    "-",
    "::",
    "field",
    "tag",
    "SHOW",
    "TAG",
    "VALUES",
    "KEYS",
    "MEASUREMENTS",
    "DATABASES",
    "SERIES",
    "CREATE",
    "DROP",
    "DATABASE",
    "$p",
    ".",
    "/*",
    "--",
    "\n",
    "µ",
    "1h30m",
    "0.5",
    "CARDINALITY",
    "WITH",
    "KEY",
];

fn check(q: &str) {
    if let Ok(statements) = trident_influxql::parse(q) {
        let p = placement();
        for s in &statements {
            let _ = trident_influxql::plan(s, &p, Some("db"));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn random_text_never_panics(q in "\\PC{0,80}") {
        check(&q);
    }

    #[test]
    fn word_soups_never_panic(words in proptest::collection::vec(0..WORDS.len(), 0..40)) {
        let q: Vec<&str> = words.iter().map(|&i| WORDS[i]).collect();
        check(&q.join(" "));
        check(&q.join(""));
    }
}
