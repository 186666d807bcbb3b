//! `scripts/run`, the README's run command, on a stack of its own: it
//! starts the gateway, downsampler, alerter and writer with
//! `config/local.toml`, sends the sample traffic, and the sample reaches
//! every path: the cluster, ClickHouse (through the writer), the rollups
//! (through the downsampler) and the alerter's rules.

use std::process::Command;
use std::time::{Duration, Instant};

use trident_e2e::{PrivateStack, clickhouse_rows, http, influx_query, json_number, repo_root};
use trident_line_protocol::test_helpers::telegraf_corpus;

/// What `scripts/run` sends by default; the test asks for it explicitly.
const LINES: usize = 20_000;

/// `scripts/run`'s own seed for the sample (the load generator's default).
const SEED: u64 = 42;

/// A counter's value in a Prometheus text page (summed over labels).
fn counter(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_run_command_starts_every_service_and_the_sample_reaches_every_path() {
    let stack = PrivateStack::up(&["etcd", "alertmanager"]).expect("a stack of its own");
    let base = stack.base();
    let out = Command::new(repo_root().join("scripts/run"))
        .env("TRIDENT_STACK_DIR", stack.dir())
        .env("TRIDENT_STACK_PORT_BASE", base.to_string())
        .env("TRIDENT_RUN_PROFILE", "debug")
        .env("TRIDENT_RUN_LINES", LINES.to_string())
        .output()
        .expect("run scripts/run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("\"lines_ok\": {LINES}")),
        "every sample line acknowledged: {stdout}"
    );

    // Every service answers its health check as up, where the script says.
    let health = |port: u16| format!("http://127.0.0.1:{port}/health");
    for (offset, service) in [
        (80, "trident-gateway"),
        (81, "trident-downsampler"),
        (82, "trident-alerter"),
        (83, "trident-writer"),
    ] {
        let url = health(base + offset);
        assert!(stdout.contains(&url), "{url} printed: {stdout}");
        let report: serde_json::Value = http()
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("health answers 200")
            .json()
            .await
            .expect("JSON");
        assert_eq!(report["service"], service, "{report}");
        assert_eq!(report["status"], "up", "{report}");
    }

    // The sample's request metrics: every one in the cluster and a row
    // each in ClickHouse.
    let requests = telegraf_corpus(LINES, SEED)
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"http_requests,"))
        .count();
    assert!(
        requests > 1000,
        "the sample has request metrics: {requests}"
    );
    let gateway = format!("http://127.0.0.1:{}", base + 80);
    let answer = influx_query(
        &gateway,
        "SELECT count(latency_ms) FROM http_requests",
        Some("telegraf"),
    )
    .await
    .expect("the gateway's /query");
    let stored = json_number(&answer["results"][0]["series"][0]["values"][0][1]);
    assert_eq!(stored, requests as f64, "{answer}");

    let deadline = Instant::now() + Duration::from_secs(60);
    let rows = loop {
        let rows =
            clickhouse_rows(&stack.env, "SELECT count() FROM trident.http_requests_raw").await;
        let rows = rows.first().map_or(0.0, |r| json_number(&r[0]));
        if rows >= requests as f64 || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        rows, requests as f64,
        "every request metric once in ClickHouse"
    );

    // The downsampler rolls the sample up (its 200 s close the first
    // minutes) and the alerter evaluates it.
    let admin = |port: u16| format!("http://127.0.0.1:{port}/metrics");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let downsampler = trident_e2e::get_text(&admin(base + 81)).await;
        let alerter = trident_e2e::get_text(&admin(base + 82)).await;
        let rolled = counter(&downsampler, "trident_downsampler_rollup_lines_total");
        let evaluated = counter(&alerter, "trident_alerter_evaluations_total");
        if rolled > 0.0 && evaluated > 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rollup lines {rolled}, alert evaluations {evaluated}\n{downsampler}\n{alerter}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // `stack` going out of scope runs `scripts/stack down`, which stops
    // the four services too.
}
