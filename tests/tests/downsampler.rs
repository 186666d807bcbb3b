//! The downsampler against the real stack: points written through the
//! gateway, rolled up by two downsampler instances that split the raw
//! topic's partitions, equal InfluxDB's own `GROUP BY time(1m),*` over the
//! raw points, value for value — and neither instance emitted a window the
//! other did. A downsampler killed with SIGKILL mid-stream and restarted
//! ends with the same rollups, and never wrote a window from partial
//! state: every line it ever wrote (its emit log) equals the oracle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use trident_e2e::{InfluxDb, KafkaTopic, StackEnv, influx_query_with, unique_name};
use trident_service::config::{Config, Service};
use trident_service::shutdown::Shutdown;

const MINUTE: i64 = 60_000_000_000;
const PARTITIONS: i32 = 4;

fn config(env: &StackEnv, extra: &[(&str, String)]) -> Config {
    let mut vars: Vec<(String, String)> = env.vars.clone().into_iter().collect();
    vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    Config::load_with_env(None, vars).expect("config")
}

/// Rows of a `GROUP BY *` answer from every node, keyed by (tags, time).
async fn rows(
    env: &StackEnv,
    q: &str,
    db: &str,
) -> BTreeMap<(String, i64), BTreeMap<String, serde_json::Value>> {
    let mut out = BTreeMap::new();
    for node in &env.influx_urls {
        let json = influx_query_with(node, q, Some(db), &[("epoch", "ns")])
            .await
            .expect("query");
        for series in json["results"][0]["series"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let tags = series["tags"].to_string();
            let columns: Vec<String> = series["columns"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|c| c.as_str().unwrap_or_default().to_owned())
                .collect();
            for row in series["values"].as_array().cloned().unwrap_or_default() {
                let row = row.as_array().cloned().unwrap_or_default();
                let time = row.first().and_then(serde_json::Value::as_i64).unwrap_or(0);
                let values: BTreeMap<String, serde_json::Value> = columns
                    .iter()
                    .cloned()
                    .zip(row.iter().cloned())
                    .skip(1)
                    .collect();
                // GROUP BY time() lists empty windows too: only real ones.
                if values.values().all(serde_json::Value::is_null) {
                    continue;
                }
                out.insert((tags.clone(), time), values);
            }
        }
    }
    out
}

fn close(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y || ((x - y).abs() <= 1e-9 * x.abs().max(y.abs())),
        _ => a == b,
    }
}

fn emitted(path: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// 20 minutes of data starting 40 minutes ago: 6 series, a float and an
/// integer field, irregular times, no two points of a series at once; in
/// time order across series, as collectors send (a partition's watermark
/// follows its newest point, whatever the series). Then a point in every
/// partition a little before now, which moves every watermark past the data.
fn generate(now: i64) -> (i64, Vec<String>) {
    let base = (now / MINUTE - 40) * MINUTE;
    let mut lines = Vec::new();
    for series in 0..6 {
        let mut t = base + series * 7_000_000_000;
        let mut i: i64 = 0;
        while t < base + 20 * MINUTE {
            let v = ((i * 37 + series * 11) % 101) as f64 / 7.0 - 3.0;
            lines.push(format!(
                "load,host=h{series},dc=d{} v={v},n={}i {t}",
                series % 2,
                (i * 13 + series) % 50 - 10
            ));
            i += 1;
            t += 3_000_000_000 + (i * 1_234_567_891) % 9_000_000_000;
        }
    }
    lines.sort_by_key(|l| {
        l.rsplit(' ')
            .next()
            .and_then(|t| t.parse::<i64>().ok())
            .unwrap_or(0)
    });
    for k in 0..40 {
        lines.push(format!("tick,k={k} v=1 {}", now - 1_000_000_000));
    }
    (base, lines)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// InfluxDB's column for each rollup field.
const COLUMNS: [(&str, &str); 14] = [
    ("count", "v_count"),
    ("sum", "v_sum"),
    ("min", "v_min"),
    ("max", "v_max"),
    ("mean", "v_mean"),
    ("first", "v_first"),
    ("last", "v_last"),
    ("count_1", "n_count"),
    ("sum_1", "n_sum"),
    ("min_1", "n_min"),
    ("max_1", "n_max"),
    ("mean_1", "n_mean"),
    ("first_1", "n_first"),
    ("last_1", "n_last"),
];

type Rows = BTreeMap<(String, i64), BTreeMap<String, serde_json::Value>>;

/// InfluxDB's own GROUP BY time(1m) over the raw points.
async fn oracle(env: &StackEnv, db: &str, base: i64) -> Rows {
    let q = format!(
        "SELECT count(v),sum(v),min(v),max(v),mean(v),first(v),last(v),\
         count(n),sum(n),min(n),max(n),mean(n),first(n),last(n) FROM load \
         WHERE time >= {base} AND time < {} GROUP BY time(1m),*",
        base + 20 * MINUTE
    );
    rows(env, &q, db).await
}

/// The rollups, once there are as many windows as `want` (or 60 s).
async fn rollups(env: &StackEnv, db: &str, base: i64, want: usize) -> Rows {
    let q = format!(
        "SELECT v_count,v_sum,v_min,v_max,v_mean,v_first,v_last,\
         n_count,n_sum,n_min,n_max,n_mean,n_first,n_last FROM \"rollup_1m\".load \
         WHERE time >= {base} AND time < {} GROUP BY *",
        base + 20 * MINUTE
    );
    // As long as windows keep arriving, at most a minute without one.
    let mut got = rows(env, &q, db).await;
    let (mut seen, mut since) = (got.len(), std::time::Instant::now());
    while got.len() < want && since.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        got = rows(env, &q, db).await;
        if got.len() > seen {
            (seen, since) = (got.len(), std::time::Instant::now());
        }
    }
    got
}

/// Every window of `expected` in `got` with equal values, and no other.
fn assert_equal(expected: &Rows, got: &Rows) {
    let missing: Vec<_> = expected.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<_> = got.keys().filter(|k| !expected.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "windows missing from the rollups: {missing:?}; rollups InfluxDB does not have: {extra:?}"
    );
    for (key, want) in expected {
        for (column, ours) in COLUMNS {
            let (value, have) = (&want[column], &got[key][ours]);
            assert!(
                close(value, have),
                "{key:?} {column}: InfluxDB {value}, rollup {have}"
            );
        }
    }
}

/// The emit log's lines as rows keyed like InfluxDB's answers.
fn logged(path: &Path) -> Vec<((String, i64), BTreeMap<String, serde_json::Value>)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    for entry in text.lines() {
        let Some(line) = entry.split('\t').nth(2) else {
            continue;
        };
        let Some(Ok(parsed)) = trident_line_protocol::parse_lines(line.as_bytes()).next() else {
            continue;
        };
        if !parsed.measurement().eq_str("load") {
            continue;
        }
        let tags: serde_json::Map<String, serde_json::Value> = parsed
            .tags()
            .map(|(k, v)| {
                (
                    k.as_str().into_owned(),
                    serde_json::Value::from(v.as_str().into_owned()),
                )
            })
            .collect();
        let fields = parsed
            .fields()
            .map(|(k, v)| {
                let value = match v {
                    trident_line_protocol::FieldValue::Float(f) => serde_json::json!(f),
                    trident_line_protocol::FieldValue::Integer(i) => serde_json::json!(i),
                    other => serde_json::json!(format!("{other:?}")),
                };
                (k.as_str().into_owned(), value)
            })
            .collect();
        out.push((
            (
                serde_json::Value::Object(tags).to_string(),
                parsed.timestamp().unwrap_or(0),
            ),
            fields,
        ));
    }
    out
}

async fn start_gateway(env: &StackEnv, topic: &str, work: &Path) -> (String, Shutdown) {
    let gw_config = config(
        env,
        &[
            ("TRIDENT_KAFKA_RAW_TOPIC", topic.to_owned()),
            (
                "TRIDENT_GATEWAY_SPOOL_DIR",
                work.join("spool").to_string_lossy().into_owned(),
            ),
        ],
    );
    gw_config.validate(Service::Gateway).expect("valid");
    trident_e2e::spawn_gateway(gw_config).await
}

async fn write(gateway: &str, db: &str, lines: &[String]) {
    for chunk in lines.chunks(500) {
        let answer = trident_e2e::post_any(&format!("{gateway}/write?db={db}"), chunk.join("\n"))
            .await
            .expect("write");
        assert_eq!(answer.status, 204, "{}", answer.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downsampler_killed_mid_stream_never_writes_a_partial_window() {
    let env = StackEnv::load().expect("stack env (scripts/stack up)");
    let topic = KafkaTopic::create(&env, PARTITIONS).await.expect("topic");
    let db = InfluxDb::create(&env).await.expect("database");
    let work = std::env::temp_dir().join(unique_name("downsampler"));
    std::fs::create_dir_all(&work).expect("work dir");
    let (gateway, gw_shutdown) = start_gateway(&env, &topic.name, &work).await;
    let (base, lines) = generate(now());
    let log = work.join("emit.log");
    let admin = trident_e2e::free_port();
    let mut vars = env.vars.clone();
    for (k, v) in [
        ("TRIDENT_KAFKA_RAW_TOPIC", topic.name.clone()),
        ("TRIDENT_DOWNSAMPLER_WINDOWS", "1m".into()),
        ("TRIDENT_DOWNSAMPLER_LATENESS", "5s".into()),
        (
            "TRIDENT_DOWNSAMPLER_ADMIN_LISTEN",
            format!("127.0.0.1:{admin}"),
        ),
        (
            "TRIDENT_DOWNSAMPLER_EMIT_LOG",
            log.to_string_lossy().into_owned(),
        ),
    ] {
        vars.insert(k.to_owned(), v);
    }
    let health = format!("http://127.0.0.1:{admin}/health");
    let mut process = trident_e2e::ServiceProcess::start(
        "trident-downsampler",
        &vars,
        work.join("downsampler.log"),
    )
    .expect("start");
    if let Err(e) = process.wait_ready(&health, Duration::from_secs(20)).await {
        panic!("the downsampler did not come up: {e}");
    }

    // The first half, then SIGKILL while windows are open.
    let (first, second) = lines.split_at(lines.len() / 2);
    write(&gateway, &db.name, first).await;
    let emitted_before = || logged(&log).len();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while emitted_before() == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    process.kill();
    let before = emitted_before();
    assert!(before > 0, "windows were written before the kill");

    // Restart, then the second half.
    let mut process = trident_e2e::ServiceProcess::start(
        "trident-downsampler",
        &vars,
        work.join("downsampler.log"),
    )
    .expect("restart");
    if let Err(e) = process.wait_ready(&health, Duration::from_secs(20)).await {
        panic!("the downsampler did not come back: {e}");
    }
    write(&gateway, &db.name, second).await;

    let expected = oracle(&env, &db.name, base).await;
    let got = rollups(&env, &db.name, base, expected.len()).await;
    process.kill();
    gw_shutdown.trigger();
    assert_equal(&expected, &got);

    // Every line ever written, before and after the kill, is complete.
    let all = logged(&log);
    let mut rewritten = 0;
    let mut seen = BTreeSet::new();
    for (key, fields) in &all {
        let want = expected
            .get(key)
            .unwrap_or_else(|| panic!("a window InfluxDB does not have: {key:?}"));
        for (column, ours) in COLUMNS {
            assert!(
                close(&want[column], &fields[ours]),
                "{key:?} {ours} written as {}, InfluxDB says {}: a partial window",
                fields[ours],
                want[column]
            );
        }
        if !seen.insert(key.clone()) {
            rewritten += 1;
        }
    }
    println!(
        "{} rollup lines written ({before} before the kill, {rewritten} rewritten after it), all complete",
        all.len()
    );
    let _ = std::fs::remove_dir_all(&work);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_roll_up_exactly_what_influxdb_groups_by_time() {
    let env = StackEnv::load().expect("stack env (scripts/stack up)");
    let topic = KafkaTopic::create(&env, PARTITIONS).await.expect("topic");
    let db = InfluxDb::create(&env).await.expect("database");
    let work = std::env::temp_dir().join(unique_name("downsampler"));
    std::fs::create_dir_all(&work).expect("work dir");

    let (gateway, gw_shutdown) = start_gateway(&env, &topic.name, &work).await;
    let (base, lines) = generate(now());
    write(&gateway, &db.name, &lines).await;

    // Two instances split the partitions.
    let mut shutdowns = Vec::new();
    let logs = [work.join("emit0.log"), work.join("emit1.log")];
    for (instance, log) in logs.iter().enumerate() {
        let config = config(
            &env,
            &[
                ("TRIDENT_KAFKA_RAW_TOPIC", topic.name.clone()),
                ("TRIDENT_DOWNSAMPLER_INSTANCE", instance.to_string()),
                ("TRIDENT_DOWNSAMPLER_INSTANCES", "2".into()),
                ("TRIDENT_DOWNSAMPLER_WINDOWS", "1m".into()),
                ("TRIDENT_DOWNSAMPLER_LATENESS", "5s".into()),
                (
                    "TRIDENT_DOWNSAMPLER_EMIT_LOG",
                    log.to_string_lossy().into_owned(),
                ),
            ],
        );
        config.validate(Service::Downsampler).expect("valid");
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let shutdown = Shutdown::new();
        tokio::spawn(downsampler::run(config, admin, shutdown.clone()));
        shutdowns.push(shutdown);
    }

    let expected = oracle(&env, &db.name, base).await;
    assert!(expected.len() > 100, "{} windows", expected.len());
    let got = rollups(&env, &db.name, base, expected.len()).await;
    for s in &shutdowns {
        s.trigger();
    }
    gw_shutdown.trigger();
    assert_equal(&expected, &got);

    // No window emitted by both instances, and both emitted some.
    let (a, b) = (emitted(&logs[0]), emitted(&logs[1]));
    let series = |set: &BTreeSet<String>| -> BTreeSet<String> {
        set.iter()
            .filter_map(|l| l.split('\t').nth(2)?.split(' ').next().map(str::to_owned))
            .collect()
    };
    let (sa, sb) = (series(&a), series(&b));
    assert!(!sa.is_empty() && !sb.is_empty(), "both instances own data");
    assert!(
        sa.is_disjoint(&sb),
        "a series rolled up by both: {:?}",
        sa.intersection(&sb)
    );
    let _ = std::fs::remove_dir_all(&work);
}
