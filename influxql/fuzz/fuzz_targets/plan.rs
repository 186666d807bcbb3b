//! Any query text: parsing and planning never panic, and a fan-out's merge
//! of arbitrary node answers never panics either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trident_influxql::plan::Plan;
use trident_influxql::time::Epoch;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The query, then optionally a node's answer after a NUL.
    let (q, answer) = text.split_once('\0').unwrap_or((text, ""));
    let Ok(statements) = trident_influxql::parse(q) else {
        return;
    };
    let Ok(placement) = serde_json::from_str::<trident_cluster::Topology>(
        r#"{"nodes": [{"id": "a", "url": "http://a:1"}, {"id": "b", "url": "http://b:1"}],
            "replication": 2,
            "rules": [{"measurement": "m", "strategy": "measurement+tags(app)"}]}"#,
    )
    .map(|t| t.validate()) else {
        return;
    };
    let Ok(placement) = placement else {
        return;
    };
    let answer: serde_json::Value = serde_json::from_str(answer).unwrap_or_default();
    for s in &statements {
        if let Ok(Plan::Fanout { merge, .. }) = trident_influxql::plan(s, &placement, Some("db")) {
            let _ = trident_influxql::merge(&merge, &[answer.clone(), answer.clone()], &[answer.clone()], Epoch::Rfc3339, &|i, _, _| i == 0);
        }
    }
});
