//! The writer's SQL on a current ClickHouse engine. The end-to-end writer
//! tests run against the local server, ClickHouse 18.16; this one runs the
//! schema the writer creates and every query it asks on ClickHouse 26.9
//! (chDB, the engine as a Python module: no current server can run on this
//! machine) through `scripts/clickhouse-current`, which checks counts and
//! success rates exactly and P50–P99 against `quantileExact` over the raw
//! rows.

#[test]
fn the_writers_schema_and_queries_run_on_clickhouse_26() {
    let root = trident_e2e::repo_root();
    let out = std::process::Command::new(root.join("scripts/clickhouse-current"))
        .env("WRITER_BIN", trident_e2e::binary("trident-writer"))
        .output()
        .expect("run scripts/clickhouse-current");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}{stderr}");
    assert!(
        out.status.success(),
        "scripts/clickhouse-current failed:\n{stderr}"
    );
    assert!(
        stdout.contains("ClickHouse 26.9") && stdout.contains("counts and success rates exact"),
        "{stdout}"
    );
}
