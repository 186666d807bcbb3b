//! The load generator delivers every line it reports as accepted: a run
//! against a real InfluxDB node leaves exactly that many points there, and
//! the node's CPU time is read from /proc, in all and by thread name.

use trident_e2e::{InfluxDb, StackEnv, influx_query};

#[tokio::test]
async fn every_reported_line_is_stored_and_cpu_is_measured() {
    let env = StackEnv::load().expect("stack env (scripts/stack up)");
    let db = InfluxDb::create(&env).await.expect("database");
    let pid: u32 =
        std::fs::read_to_string(format!("{}/influx1/pid", env.vars["TRIDENT_STACK_DIR"]))
            .expect("influx1 pid file")
            .trim()
            .parse()
            .expect("pid");
    let plan = trident_loadgen::Plan {
        url: format!("{}/write?db={}", env.influx_urls[0], db.name),
        lines: 20_000,
        batch: 1_500,
        connections: 3,
        seed: 9,
        start_ns: None,
        target_pids: vec![pid],
    };
    let report = trident_loadgen::run(&plan).await.expect("run");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(report.lines_ok, 20_000);
    assert!(
        report.target_cpu.is_some_and(|cpu| !cpu.is_zero()),
        "{report:?}"
    );
    // influxd's threads all carry its name.
    assert!(
        report
            .target_threads
            .first()
            .is_some_and(|(name, cpu)| name == "influxd" && !cpu.is_zero()),
        "{report:?}"
    );

    // Every line has its own timestamp, so every line is one stored point.
    let mut stored = 0;
    for (measurement, field) in [
        ("cpu", "usage_idle"),
        ("mem", "total"),
        ("diskio", "reads"),
        ("http_requests", "count"),
    ] {
        let json = influx_query(
            &env.influx_urls[0],
            &format!("SELECT count({field}) FROM {measurement}"),
            Some(&db.name),
        )
        .await
        .expect("count");
        stored += json["results"][0]["series"][0]["values"][0][1]
            .as_i64()
            .unwrap_or(0);
    }
    assert_eq!(stored, 20_000);
}
