//! The cluster's read path against a query oracle: one plain InfluxDB
//! database that holds every point. The same corpus is written through the
//! gateway (three nodes, two replicas, one measurement per strategy) and
//! straight into the oracle database; every query then gets the same answer
//! from both — raw selects, each mergeable aggregate, group-bys, fills,
//! limits, SHOW statements — and what cannot be merged is refused in words.
//! A second test kills nodes of a stack of its own: with one of three down
//! answers stay complete; with two down they say they may be partial.

use serde_json::{Value, json};
use trident_e2e::{InfluxDb, PrivateStack, StackEnv, http, influx_query_with, unique_name};

/// Minute-aligned start of the corpus (2023-11-14T22:13:00Z).
const T0: i64 = 1_699_999_980 * 1_000_000_000;
const SECOND: i64 = 1_000_000_000;

/// The corpus: `cpu` (strategy series) at distinct times per host, `mem`
/// (measurement) and `http_requests` (measurement+tags(app)) with many
/// points sharing a time.
fn corpus() -> String {
    let mut out = String::new();
    let mut x: u64 = 0x5eed;
    let mut next = move |m: u64| {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (x >> 33) % m
    };
    for i in 0..60 {
        for h in 0..8 {
            let t = T0 + i * 10 * SECOND + h * 1_000_000;
            let dc = if h % 2 == 0 {
                format!(",dc=d{}", h % 3)
            } else {
                String::new()
            };
            out.push_str(&format!(
                "cpu,host=h{h},region=r{}{dc} usage_user={}.{},usage_idle={},procs={}i,up={} {t}\n",
                h % 2,
                next(100),
                next(1000),
                next(100),
                next(500),
                if next(2) == 0 { "true" } else { "false" },
            ));
        }
        for h in 0..4 {
            let t = T0 + i * 10 * SECOND;
            out.push_str(&format!(
                "mem,host=h{h} used={}i,free={}.5 {t}\n",
                next(1 << 20),
                next(4096)
            ));
        }
        for app in ["shop", "search", "auth"] {
            for e in 0..3 {
                let t = T0 + i * 10 * SECOND + e * 7 * 1_000_000;
                let status = [200, 200, 200, 404, 500][next(5) as usize];
                out.push_str(&format!(
                    "http_requests,app={app},endpoint=/e{e},status={status} latency_ms={}.{},bytes={}i,path=\"/e{e}?q={}\" {t}\n",
                    next(400),
                    next(10),
                    next(10_000),
                    next(50),
                ));
            }
        }
    }
    out
}

/// Every case of the oracle: (query, extra parameters).
const CASES: &[&str] = &[
    // Raw selects.
    "SELECT * FROM cpu WHERE time >= {T0} AND time < {T1}",
    "SELECT usage_user, host FROM cpu WHERE host = 'h3'",
    "SELECT usage_user, procs FROM cpu WHERE region = 'r0' AND time >= {T0} LIMIT 7 OFFSET 3",
    "SELECT usage_user FROM cpu GROUP BY host LIMIT 3 OFFSET 2",
    "SELECT usage_user FROM cpu GROUP BY region ORDER BY time DESC LIMIT 5",
    "SELECT * FROM cpu WHERE time < {T0} + 30s GROUP BY *",
    "SELECT * FROM cpu WHERE time < {T0} + 30s GROUP BY dc",
    "SELECT usage_idle * 2, up FROM cpu WHERE usage_idle > 90",
    "SELECT latency_ms, path FROM http_requests WHERE status = '500' AND time < {T0} + 2m",
    "SELECT * FROM mem WHERE time < {T0} + 1m",
    "SELECT * FROM cpu, mem WHERE time < {T0} + 20s",
    "SELECT * FROM /^(cpu|mem)$/ WHERE time < {T0} + 20s GROUP BY host",
    // Aggregates.
    "SELECT count(usage_user), sum(procs), min(usage_user), max(usage_user), mean(usage_idle), spread(procs) FROM cpu WHERE time >= {T0} AND time < {T1} GROUP BY time(1m)",
    "SELECT count(usage_user), sum(procs), mean(usage_idle) FROM cpu WHERE time >= {T0} AND time < {T1} GROUP BY time(1m), region",
    "SELECT mean(usage_user) AS avg, max(usage_user) FROM cpu WHERE time >= {T0} - 2m AND time < {T1} + 2m GROUP BY time(1m) fill(none)",
    "SELECT mean(usage_user) FROM cpu WHERE time >= {T0} - 2m AND time < {T1} + 2m GROUP BY time(1m) fill(0)",
    "SELECT count(usage_user) FROM cpu WHERE time >= {T0} - 2m AND time < {T1} + 2m GROUP BY time(1m), dc fill(previous)",
    "SELECT sum(procs) FROM cpu WHERE time >= {T0} AND time < {T1} GROUP BY time(1m), host ORDER BY time DESC LIMIT 4",
    "SELECT max(usage_user) FROM cpu",
    "SELECT min(procs) FROM cpu WHERE region = 'r1'",
    "SELECT first(usage_user) FROM cpu",
    "SELECT last(procs) FROM cpu GROUP BY region",
    "SELECT first(usage_user), last(usage_user) FROM cpu WHERE time >= {T0} AND time < {T1} GROUP BY time(2m), *",
    "SELECT first(usage_user), last(usage_user), count(usage_user) FROM cpu WHERE time >= {T0} - 2m AND time < {T1} GROUP BY time(2m)",
    "SELECT first(latency_ms), last(path) FROM http_requests WHERE time >= {T0} AND time < {T1} GROUP BY time(1m, 20s), status fill(previous)",
    "SELECT last(procs), max(procs) FROM cpu GROUP BY region",
    "SELECT first(used) FROM mem, cpu WHERE time >= {T0} AND time < {T1} GROUP BY time(5m)",
    "SELECT count(usage_user), mean(usage_user), mean(procs) FROM cpu WHERE time >= {T0}",
    "SELECT mean(usage_user), mean(procs), count(usage_user) AS mean, max(procs) AS max_1, max(usage_idle) FROM cpu",
    "SELECT count(bytes), sum(bytes), mean(latency_ms) FROM http_requests WHERE time >= {T0} AND time < {T1} GROUP BY time(5m), status",
    "SELECT count(latency_ms) FROM http_requests WHERE time >= {T0} AND time < {T1} GROUP BY app",
    "SELECT max(usage_user) FROM cpu GROUP BY host",
    "SELECT first(usage_user) FROM cpu GROUP BY region",
    "SELECT spread(usage_user) FROM cpu GROUP BY region",
    "SELECT count(usage_user) FROM cpu WHERE time >= {T0} AND time < {T1} GROUP BY time(1m, 15s)",
    "SELECT mean(usage_user) FROM cpu WHERE time >= {T0} - 2m AND time < {T1} + 2m GROUP BY time(1m) fill(linear)",
    "SELECT sum(usage_user) FROM cpu WHERE host =~ /h[12]/ AND time >= {T0} AND time < {T1} GROUP BY time(2m)",
    "SELECT count(usage_user) FROM cpu WHERE time >= {T0} AND time < {T1} GROUP BY time(1m) LIMIT 3 OFFSET 2",
    "SELECT mean(latency_ms) FROM http_requests WHERE time >= {T0} AND time < {T1} GROUP BY time(1m), app fill(none) ORDER BY time DESC LIMIT 2",
    "SELECT * FROM cpu WHERE host = 'h1' ORDER BY time DESC LIMIT 3",
    "SELECT usage_user FROM cpu WHERE time >= {T0} AND time < {T1} GROUP BY /reg/ LIMIT 2",
    // One owner: forwarded as sent, so anything goes.
    "SELECT percentile(latency_ms, 95), median(bytes) FROM http_requests WHERE app = 'shop' AND time >= {T0} AND time < {T1} GROUP BY time(5m), endpoint",
    "SELECT percentile(used, 99), stddev(free) FROM mem GROUP BY host",
    "SELECT derivative(mean(used), 1m) FROM mem WHERE time >= {T0} AND time < {T1} GROUP BY time(1m)",
    // SHOW.
    "SHOW MEASUREMENTS",
    "SHOW MEASUREMENTS LIMIT 2 OFFSET 1",
    "SHOW TAG KEYS",
    "SHOW TAG KEYS FROM cpu",
    "SHOW TAG VALUES FROM cpu WITH KEY = \"host\"",
    "SHOW TAG VALUES WITH KEY IN (\"app\", \"status\")",
    "SHOW FIELD KEYS",
    "SHOW SERIES FROM cpu",
    "SHOW SERIES WHERE app = 'auth' LIMIT 4",
    // Several statements at once.
    "SELECT count(used) FROM mem; SELECT count(usage_user) FROM cpu GROUP BY host; SHOW MEASUREMENTS",
];

fn fill_in(q: &str) -> String {
    q.replace("{T0}", &T0.to_string())
        .replace("{T1}", &(T0 + 10 * 60 * SECOND).to_string())
}

/// The gateway's configuration: RF 2, one measurement per strategy.
fn config(env: &StackEnv) -> trident_service::config::Config {
    let mut config = env.config(&[
        ("TRIDENT_INFLUX_REPLICATION", "2"),
        ("TRIDENT_INFLUX_TIMEOUT", "3s"),
    ]);
    config.influx.rules = trident_e2e::one_rule_per_strategy();
    config
}

async fn write(url: &str, db: &str, body: &str) {
    for chunk in body.lines().collect::<Vec<_>>().chunks(500) {
        let resp = http()
            .post(format!("{url}/write"))
            .query(&[("db", db), ("precision", "ns")])
            .body(chunk.join("\n"))
            .send()
            .await
            .expect("write");
        assert_eq!(resp.status().as_u16(), 204, "{:?}", resp.text().await);
    }
}

async fn ask(url: &str, q: &str, db: &str, epoch: Option<&str>) -> Value {
    let mut params = Vec::new();
    if let Some(e) = epoch {
        params.push(("epoch", e));
    }
    influx_query_with(url, q, Some(db), &params)
        .await
        .unwrap_or_else(|e| panic!("{q}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_answers_as_one_node_holding_all_the_data() {
    let env = StackEnv::load().expect("the stack is up (scripts/stack up)");
    let oracle = InfluxDb::create(&env).await.expect("oracle database");
    let oracle_url = &env.influx_urls[0];
    let db = unique_name("clusterq");
    let (gateway, shutdown) = trident_e2e::spawn_gateway(config(&env)).await;
    let body = corpus();
    write(&gateway, &db, &body).await;
    write(oracle_url, &oracle.name, &body).await;

    let mut compared = 0;
    for case in CASES {
        let q = fill_in(case);
        for epoch in [None, Some("ms")] {
            let want =
                trident_e2e::normalize_answer(&ask(oracle_url, &q, &oracle.name, epoch).await);
            let got = trident_e2e::normalize_answer(&ask(&gateway, &q, &db, epoch).await);
            assert!(
                want["results"][0].get("error").is_none(),
                "the oracle refused {q}: {want}"
            );
            assert!(
                trident_e2e::same_answer(&want, &got),
                "{q} (epoch {epoch:?})\n oracle: {want}\ngateway: {got}"
            );
            compared += 1;
        }
    }
    // The data really is spread: no node holds all of cpu.
    let per_node: Vec<u64> = futures_counts(&env, &db).await;
    assert!(per_node.iter().all(|&n| n > 0 && n < 480), "{per_node:?}");
    assert_eq!(
        per_node.iter().sum::<u64>(),
        960,
        "two replicas of 480 points"
    );

    // Chunked answers carry one statement per line.
    let text = http()
        .get(format!("{gateway}/query"))
        .query(&[
            ("db", db.as_str()),
            ("chunked", "true"),
            ("q", "SELECT count(used) FROM mem; SHOW MEASUREMENTS"),
        ])
        .send()
        .await
        .expect("chunked")
        .text()
        .await
        .expect("text");
    let chunks: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(chunks.len(), 2, "{text}");
    assert_eq!(chunks[1]["results"][0]["statement_id"], json!(1));

    // What cannot be merged is refused, saying why.
    for (q, words) in [
        (
            "SELECT percentile(usage_user, 95) FROM cpu",
            "cannot be merged exactly",
        ),
        (
            "SELECT median(latency_ms) FROM http_requests",
            "cannot be merged exactly",
        ),
        (
            "SELECT first(usage_user) FROM cpu GROUP BY time(1m) tz('Europe/Paris')",
            "tz()",
        ),
        ("SELECT usage_user INTO x FROM cpu", "INTO"),
        ("SHOW SERIES CARDINALITY", "cardinality"),
    ] {
        let answer = ask(&gateway, q, &db, None).await;
        let error = answer["results"][0]["error"].as_str().unwrap_or_default();
        assert!(error.contains(words), "{q}: {answer}");
    }
    let resp = http()
        .get(format!("{gateway}/query"))
        .query(&[("q", "SELEC 1")])
        .send()
        .await
        .expect("query");
    assert_eq!(resp.status().as_u16(), 400);
    assert!(
        resp.text()
            .await
            .unwrap_or_default()
            .contains("error parsing query")
    );

    // DDL reaches every node.
    ask(&gateway, "DROP MEASUREMENT mem", &db, None).await;
    for url in &env.influx_urls {
        let left = ask(url, "SHOW MEASUREMENTS", &db, None).await;
        assert!(!left.to_string().contains("\"mem\""), "{url}: {left}");
    }
    ask(&gateway, &format!("DROP DATABASE \"{db}\""), &db, None).await;
    shutdown.trigger();
    println!("{compared} answers equal to the oracle's");
}

/// Points of `cpu` on each node of the stack.
async fn futures_counts(env: &StackEnv, db: &str) -> Vec<u64> {
    let mut out = Vec::new();
    for url in &env.influx_urls {
        let v = ask(url, "SELECT count(usage_user) FROM cpu", db, None).await;
        out.push(
            v["results"][0]["series"][0]["values"][0][1]
                .as_u64()
                .unwrap_or(0),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replica_is_skipped_and_two_make_a_partial_answer() {
    let stack = PrivateStack::up(&[]).expect("a private stack");
    let env = &stack.env;
    let db = unique_name("deadq");
    let oracle = unique_name("deadq_oracle");
    let (gateway, shutdown) = trident_e2e::spawn_gateway(config(env)).await;
    let body = corpus();
    write(&gateway, &db, &body).await;
    trident_e2e::influx_query(
        &env.influx_urls[0],
        &format!("CREATE DATABASE \"{oracle}\""),
        None,
    )
    .await
    .expect("oracle database");
    write(&env.influx_urls[0], &oracle, &body).await;
    let queries = [
        "SELECT * FROM cpu WHERE time >= {T0} AND time < {T1}",
        "SELECT count(usage_user), mean(usage_idle) FROM cpu WHERE time >= {T0} AND time < {T1} GROUP BY time(1m), region",
        "SELECT max(latency_ms) FROM http_requests WHERE app = 'search'",
        "SELECT percentile(used, 50) FROM mem",
        "SHOW TAG VALUES FROM cpu WITH KEY = \"host\"",
    ];
    stack.kill("influx2").expect("kill influx2");
    for q in queries.map(fill_in) {
        let want =
            trident_e2e::normalize_answer(&ask(&env.influx_urls[0], &q, &oracle, None).await);
        let got = trident_e2e::normalize_answer(&ask(&gateway, &q, &db, None).await);
        assert!(
            trident_e2e::same_answer(&want, &got),
            "one node down: {q}\n oracle: {want}\ngateway: {got}"
        );
        assert!(got["results"][0].get("partial").is_none(), "{got}");
    }
    stack.kill("influx3").expect("kill influx3");
    let got = ask(&gateway, &fill_in(queries[0]), &db, None).await;
    assert_eq!(got["results"][0]["partial"], json!(true), "{got}");
    let warning = got["results"][0]["messages"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(
        warning.contains("may be partial") && warning.contains("2 of 3 nodes"),
        "{got}"
    );
    shutdown.trigger();
}
