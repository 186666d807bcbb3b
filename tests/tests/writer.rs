//! The ClickHouse writer against the real broker and ClickHouse: request
//! data with a known distribution, written through the gateway, lands in
//! the raw table row for row; the materialized views' counts and success
//! rates are exact and their P95/P99 within 1% of `quantileExact` over the
//! raw rows; unmapped and malformed points are skipped, never stop it.

use std::collections::BTreeMap;
use std::time::Duration;

use trident_e2e::{
    ClickHouseDb, KafkaTopic, StackEnv, clickhouse_rows as ch, json_number as num, unique_name,
};
use trident_service::config::{Config, MappingConfig, Service, SuccessConfig};
use trident_service::shutdown::Shutdown;

/// Rows of `sql` (JSONCompact) from ClickHouse.
/// `http` points: latency per app, every request a success.
fn latency_by_app() -> MappingConfig {
    MappingConfig {
        measurement: "http".into(),
        table: String::new(),
        dimensions: vec!["app".into()],
        values: vec!["latency_ms".into()],
        success: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_in_clickhouse_match_the_raw_rows() {
    let env = StackEnv::load().expect("stack env (scripts/stack up)");
    let topic = KafkaTopic::create(&env, 4).await.expect("topic");
    let db = ClickHouseDb::create(&env)
        .await
        .expect("ClickHouse database");
    let work = std::env::temp_dir().join(unique_name("writer"));

    let group = unique_name("group");
    let mut config = env.config(&[
        ("TRIDENT_KAFKA_RAW_TOPIC", &topic.name),
        ("TRIDENT_CLICKHOUSE_DATABASE", &db.name),
        ("TRIDENT_WRITER_GROUP_ID", &group),
        ("TRIDENT_WRITER_INTERVALS", "1m"),
    ]);
    config.writer.mappings = vec![MappingConfig {
        measurement: "http".into(),
        table: String::new(),
        dimensions: vec!["app".into(), "endpoint".into()],
        values: vec!["latency_ms".into()],
        success: Some(SuccessConfig {
            field: "status".into(),
            op: "<".into(),
            value: 400.0,
        }),
    }];
    config.validate(Service::Writer).expect("writer config");
    config.validate(Service::Gateway).expect("gateway config");

    let (gateway, gw_shutdown) = trident_e2e::spawn_gateway(config.clone()).await;
    let gateway = format!("{gateway}/write?db=biz");
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let admin_url = format!("http://{}", admin.local_addr().expect("addr"));
    let writer_shutdown = Shutdown::new();
    tokio::spawn(writer::run(config.clone(), admin, writer_shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Two minutes an hour ago; 3 apps × 2 endpoints; latencies from a
    // skewed distribution; every 7th request fails.
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let start = (now_s / 60 - 60) * 60;
    let mut lines = Vec::new();
    let mut expected: BTreeMap<(i64, String, String), (u64, u64)> = BTreeMap::new();
    let mut seed: u64 = 42;
    for i in 0..24_000i64 {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let u = (seed >> 11) as f64 / (1u64 << 53) as f64;
        let latency = 5.0 + 200.0 * (-(1.0 - u).ln()).powf(1.5);
        let app = format!("app{}", i % 3);
        let endpoint = if i % 2 == 0 { "/pay" } else { "/list" };
        let status = if i % 7 == 0 { 503 } else { 200 };
        let ts = start * 1_000_000_000 + i * 5_000_000;
        lines.push(format!(
            "http,app={app},endpoint={endpoint},host=h{} latency_ms={latency},status={status}i {ts}",
            i % 5
        ));
        let bucket = ts / 1_000_000_000 / 60 * 60;
        let e = expected
            .entry((bucket, app, endpoint.to_owned()))
            .or_default();
        e.0 += 1;
        e.1 += u64::from(status < 400);
    }
    // Skipped, and counted: an unmapped measurement, a point without values.
    lines.push(format!("mem,host=a used=1i {}", start * 1_000_000_000));
    lines.push(format!("http,app=x status=200i {}", start * 1_000_000_000));
    for chunk in lines.chunks(4000) {
        let answer = trident_e2e::post_any(&gateway, chunk.join("\n"))
            .await
            .expect("write");
        assert_eq!(answer.status, 204, "{}", answer.body);
    }

    // Every mapped point becomes one raw row.
    let raw = format!("{}.http_raw", db.name);
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let mut rows = 0.0;
    while std::time::Instant::now() < deadline {
        rows = ch(&env, &format!("SELECT count() FROM {raw}"))
            .await
            .first()
            .map_or(0.0, |r| num(&r[0]));
        if rows >= 24_000.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(rows, 24_000.0, "one raw row per mapped point");

    // The views against the raw rows and the generated truth. (A CI run
    // once found no aggregate rows here although every raw row was in:
    // unexplained, not reproduced in 30 runs; asked again for a while, and
    // the tables are listed if it happens again.)
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let stats = loop {
        let stats = writer::query(&config, "http", Duration::from_secs(60), "latency_ms", 0)
            .await
            .expect("query");
        if stats.len() >= expected.len() || std::time::Instant::now() >= deadline {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    if stats.len() != expected.len() {
        let tables = ch(
            &env,
            &format!(
                "SELECT name, engine FROM system.tables WHERE database = '{}'",
                db.name
            ),
        )
        .await;
        let aggregated = ch(&env, &format!("SELECT count() FROM {}.http_1m", db.name)).await;
        println!("tables: {tables:?}; rows in http_1m: {aggregated:?}");
    }
    let exact = ch(
        &env,
        &format!(
            "SELECT toUInt32(intDiv(toUInt32(ts), 60) * 60) AS b, dims[1] AS a, dims[2] AS e, \
             quantileExact(0.95)(vals[1]), quantileExact(0.99)(vals[1]) \
             FROM {raw} GROUP BY b, a, e"
        ),
    )
    .await;
    let exact: BTreeMap<(i64, String, String), (f64, f64)> = exact
        .iter()
        .map(|r| {
            (
                (
                    num(&r[0]) as i64,
                    r[1].as_str().unwrap_or_default().to_owned(),
                    r[2].as_str().unwrap_or_default().to_owned(),
                ),
                (num(&r[3]), num(&r[4])),
            )
        })
        .collect();
    assert_eq!(
        stats.len(),
        expected.len(),
        "one row per bucket and dimension pair"
    );
    let mut worst: f64 = 0.0;
    for s in &stats {
        let key = (
            i64::from(s.bucket),
            s.dimensions[0].clone(),
            s.dimensions[1].clone(),
        );
        let (count, ok) = expected[&key];
        assert_eq!(s.count, count, "{key:?} count");
        assert_eq!(
            s.success_rate,
            ok as f64 / count as f64,
            "{key:?} success rate"
        );
        let (p95, p99) = exact[&key];
        for (ours, theirs, name) in [(s.quantiles[2], p95, "P95"), (s.quantiles[3], p99, "P99")] {
            let error = (ours - theirs).abs() / theirs;
            worst = worst.max(error);
            assert!(
                error <= 0.01,
                "{key:?} {name}: views {ours}, quantileExact {theirs}"
            );
        }
    }
    println!(
        "{} buckets; worst P95/P99 error vs quantileExact: {:.4}%",
        stats.len(),
        worst * 100.0
    );

    // Skips are counted, the HTTP endpoint answers the same numbers.
    let metrics = trident_e2e::get_text(&format!("{admin_url}/metrics")).await;
    assert!(
        metrics.contains("trident_writer_points_skipped_total{reason=\"unmapped\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("trident_writer_points_skipped_total{reason=\"no_values\"}"),
        "{metrics}"
    );
    let over_http: serde_json::Value = trident_e2e::http()
        .get(format!(
            "{admin_url}/query?measurement=http&value=latency_ms&interval=1m"
        ))
        .send()
        .await
        .expect("query")
        .json()
        .await
        .expect("JSON");
    assert_eq!(over_http.as_array().map(Vec::len), Some(stats.len()));

    writer_shutdown.trigger();
    gw_shutdown.trigger();
    let _ = std::fs::remove_dir_all(&work);
}

/// The writer binary SIGKILLed mid-stream and started again: every
/// produced point is in ClickHouse (positions are stored only after the
/// rows), at most the batch in flight twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_killed_mid_stream_loses_nothing() {
    let env = StackEnv::load().expect("stack env (scripts/stack up)");
    let topic = KafkaTopic::create(&env, 4).await.expect("topic");
    let db = ClickHouseDb::create(&env)
        .await
        .expect("ClickHouse database");
    let work = std::env::temp_dir().join(unique_name("writerkill"));
    std::fs::create_dir_all(&work).expect("work dir");
    let config_file = work.join("writer.toml");
    std::fs::write(
        &config_file,
        "[writer]\nbatch_rows = 2000\nbatch_period = \"200ms\"\nintervals = [\"1m\"]\n\
         [[writer.mappings]]\nmeasurement = \"http\"\ndimensions = [\"app\"]\nvalues = [\"latency_ms\"]\n",
    )
    .expect("config");
    let admin = trident_e2e::free_port();
    let mut vars = env.vars.clone();
    for (k, v) in [
        ("TRIDENT_CONFIG", config_file.to_string_lossy().into_owned()),
        ("TRIDENT_KAFKA_RAW_TOPIC", topic.name.clone()),
        ("TRIDENT_CLICKHOUSE_DATABASE", db.name.clone()),
        ("TRIDENT_WRITER_ADMIN_LISTEN", format!("127.0.0.1:{admin}")),
    ] {
        vars.insert(k.to_owned(), v);
    }
    let gw_config = Config::load_with_env(
        None,
        vars.clone()
            .into_iter()
            .filter(|(k, _)| k != "TRIDENT_CONFIG")
            .chain([(
                "TRIDENT_GATEWAY_SPOOL_DIR".to_owned(),
                work.join("spool").to_string_lossy().into_owned(),
            )]),
    )
    .expect("gateway config");
    let (gateway, gw_shutdown) = trident_e2e::spawn_gateway(gw_config).await;
    let gateway = format!("{gateway}/write?db=biz");

    let health = format!("http://127.0.0.1:{admin}/health");
    let mut writer =
        trident_e2e::ServiceProcess::start("trident-writer", &vars, work.join("writer.log"))
            .expect("start");
    if let Err(e) = writer.wait_ready(&health, Duration::from_secs(30)).await {
        panic!("the writer did not come up: {e}");
    }
    let total = 20_000i64;
    let lines = trident_e2e::http_latency_lines(total as usize, 4, 300);
    let raw = format!("{}.http_raw", db.name);
    let count = |q: String| {
        let env = env.clone();
        async move { ch(&env, &q).await.first().map_or(0.0, |r| num(&r[0])) }
    };
    let (first, second) = lines.split_at(lines.len() / 2);
    for chunk in first.chunks(1000) {
        let answer = trident_e2e::post_any(&gateway, chunk.join("\n"))
            .await
            .expect("write");
        assert_eq!(answer.status, 204, "{}", answer.body);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while count(format!("SELECT count() FROM {raw}")).await == 0.0
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    writer.kill();
    let at_kill = count(format!("SELECT count() FROM {raw}")).await;
    assert!(at_kill > 0.0, "rows were inserted before the kill");
    for chunk in second.chunks(1000) {
        let answer = trident_e2e::post_any(&gateway, chunk.join("\n"))
            .await
            .expect("write");
        assert_eq!(answer.status, 204, "{}", answer.body);
    }
    let mut writer =
        trident_e2e::ServiceProcess::start("trident-writer", &vars, work.join("writer.log"))
            .expect("restart");
    if let Err(e) = writer.wait_ready(&health, Duration::from_secs(30)).await {
        panic!("the writer did not come back: {e}");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let mut distinct = 0.0;
    while std::time::Instant::now() < deadline {
        distinct = count(format!("SELECT uniqExact(ts_ns) FROM {raw}")).await;
        if distinct >= total as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let rows = count(format!("SELECT count() FROM {raw}")).await;
    writer.kill();
    gw_shutdown.trigger();
    println!(
        "{total} points produced; {at_kill} rows at the kill; after the restart {distinct} distinct, {rows} rows ({} inserted twice)",
        rows - distinct
    );
    assert_eq!(
        distinct, total as f64,
        "every produced point is in ClickHouse"
    );
    let _ = std::fs::remove_dir_all(&work);
}

/// ClickHouse SIGKILLed and restarted while points keep coming (a stack of
/// this test's own): the writer waits, retries, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_restarted_mid_stream_loses_nothing() {
    let stack = trident_e2e::PrivateStack::up(&[]).expect("a private stack");
    let env = stack.env.clone();
    let work = std::env::temp_dir().join(unique_name("writerch"));
    let database = unique_name("w");
    let mut config = env.config(&[
        ("TRIDENT_CLICKHOUSE_DATABASE", &database),
        ("TRIDENT_WRITER_INTERVALS", "1m"),
        ("TRIDENT_WRITER_BATCH_PERIOD", "200ms"),
    ]);
    config.writer.mappings = vec![latency_by_app()];
    let (gateway, gw_shutdown) = trident_e2e::spawn_gateway(config.clone()).await;
    let gateway = format!("{gateway}/write?db=biz");
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let writer_shutdown = Shutdown::new();
    tokio::spawn(writer::run(config.clone(), admin, writer_shutdown.clone()));

    let total = 12_000i64;
    let lines = trident_e2e::http_latency_lines(total as usize, 3, 200);
    let raw = format!("{database}.http_raw");
    let distinct = |env: StackEnv, raw: String| async move {
        let text = trident_e2e::post_text(
            &env.clickhouse_url,
            &[],
            format!("SELECT uniqExact(ts_ns) FROM {raw} FORMAT JSONCompact"),
        )
        .await
        .unwrap_or_default();
        serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .map_or(0.0, |j| num(&j["data"][0][0]))
    };
    let (first, second) = lines.split_at(lines.len() / 2);
    for chunk in first.chunks(1000) {
        let answer = trident_e2e::post_any(&gateway, chunk.join("\n"))
            .await
            .expect("write");
        assert_eq!(answer.status, 204, "{}", answer.body);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while distinct(env.clone(), raw.clone()).await == 0.0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stack.kill("clickhouse").expect("kill ClickHouse");
    for chunk in second.chunks(1000) {
        let answer = trident_e2e::post_any(&gateway, chunk.join("\n"))
            .await
            .expect("write");
        assert_eq!(answer.status, 204, "{}", answer.body);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack.start("clickhouse").expect("start ClickHouse");
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let mut got = 0.0;
    while std::time::Instant::now() < deadline {
        got = distinct(env.clone(), raw.clone()).await;
        if got >= total as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    writer_shutdown.trigger();
    gw_shutdown.trigger();
    assert_eq!(
        got, total as f64,
        "every produced point is in ClickHouse after its restart"
    );
    let _ = std::fs::remove_dir_all(&work);
}

/// A mapping that gains a value: the writer adds its columns to the
/// aggregate table and replaces the view at start; old buckets keep their
/// states. A mapping whose dimensions change is refused with what to do.
#[tokio::test]
async fn a_changed_mapping_migrates_the_tables() {
    let env = StackEnv::load().expect("stack env (scripts/stack up)");
    let db = ClickHouseDb::create(&env)
        .await
        .expect("ClickHouse database");
    let mut config = env.config(&[
        ("TRIDENT_CLICKHOUSE_DATABASE", &db.name),
        ("TRIDENT_WRITER_INTERVALS", "1m"),
    ]);
    config.writer.mappings = vec![latency_by_app()];
    let insert = |vals: &str| {
        let (env, sql) = (
            env.clone(),
            format!(
                "INSERT INTO {}.http_raw (ts, ts_ns, dims, vals, success) \
                 VALUES (now(), 1, ['a'], [{vals}], 1)",
                db.name
            ),
        );
        async move {
            trident_e2e::post_text(&env.clickhouse_url, &[], sql)
                .await
                .expect("insert");
        }
    };
    writer::ensure_schema(&config).await.expect("first schema");
    insert("10").await;

    config.writer.mappings[0].values.push("bytes".into());
    writer::ensure_schema(&config).await.expect("a value added");
    writer::ensure_schema(&config)
        .await
        .expect("and again: nothing to do");
    insert("20, 300").await;

    let views = ch(
        &env,
        &format!(
            "SELECT name FROM system.tables WHERE database = '{}' AND engine = 'MaterializedView'",
            db.name
        ),
    )
    .await;
    let wanted = writer::schema::view_name(&config.writer.mappings[0], Duration::from_secs(60));
    assert_eq!(
        views,
        vec![serde_json::json!([wanted])],
        "one view, of the new shape"
    );
    let totals = ch(
        &env,
        &format!(
            "SELECT countMerge(requests), sumMerge(latency_ms_sum), sumMerge(bytes_sum) \
             FROM {}.http_1m",
            db.name
        ),
    )
    .await;
    let totals: Vec<f64> = totals[0]
        .as_array()
        .expect("a row")
        .iter()
        .map(num)
        .collect();
    assert_eq!(
        totals,
        vec![2.0, 30.0, 300.0],
        "old states kept, the new value aggregated"
    );

    config.writer.mappings[0].dimensions.push("region".into());
    let err = writer::ensure_schema(&config)
        .await
        .expect_err("dimensions cannot change")
        .to_string();
    assert!(
        err.contains("sorting key") && err.contains(&format!("{}.http_1m", db.name)),
        "{err}"
    );
}
