//! Online operations on a stack of this test's own: `trident-ctl add-node`
//! moves to a fourth node exactly the series the ring now gives it (and
//! drops them from the nodes that lost them), `remove-node` moves them
//! back; a wiped node is refilled by `recover`; `check` finds and repairs
//! differences. After each step every node holds exactly the series the
//! topology gives it, each with every point, and queries through a gateway
//! on the new topology equal the oracle's answers.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use trident_cluster::{Placement, Topology};
use trident_e2e::{
    PrivateStack, StackEnv, binary, http, influx_query, influx_query_with, unique_name,
};

const T0: i64 = 1_699_999_980 * 1_000_000_000;

/// 24 cpu series (strategy series), 3 http_requests apps (measurement+tags)
/// and one mem measurement, 40 points each, every field type.
fn corpus() -> String {
    let mut out = String::new();
    for i in 0..40i64 {
        let t = T0 + i * 15_000_000_000;
        for h in 0..24 {
            out.push_str(&format!(
                "cpu,host=h{h},rack=r{} usage={}.25,procs={}i,up={},note=\"n {i}\" {t}\n",
                h % 4,
                h * 100 + i,
                h + i,
                i % 2 == 0
            ));
        }
        for app in ["shop", "search", "auth"] {
            out.push_str(&format!(
                "http_requests,app={app},endpoint=/x latency_ms={}.5 {t}\n",
                i * 3
            ));
        }
        out.push_str(&format!("mem,host=h1 used={}i {t}\n", i * 1000));
    }
    out
}

fn topology(urls: &[String]) -> Topology {
    trident_e2e::topology_of(1, urls, 2)
}

/// A private stack with its spare fourth node started: the stack, its
/// three nodes' URLs, and those four.
fn three_and_a_spare() -> (PrivateStack, Vec<String>, Vec<String>) {
    let stack = PrivateStack::up(&[]).expect("a private stack");
    stack.start("influx4").expect("the spare node");
    let three: Vec<String> = stack.env.influx_urls.clone();
    let mut four = three.clone();
    four.push(stack.influx_url(4));
    (stack, three, four)
}

/// A topology file of [`topology`] over `urls`, in a work dir of its own.
fn topology_file(name: &str, urls: &[String]) -> std::path::PathBuf {
    let work = std::env::temp_dir().join(unique_name(name));
    std::fs::create_dir_all(&work).expect("work dir");
    let file = work.join("topology.json");
    std::fs::write(&file, serde_json::to_string(&topology(urls)).expect("json"))
        .expect("topology file");
    file
}

fn ctl(topology: &Path, args: &[&str]) -> (bool, Value) {
    ctl_with(topology, args, &BTreeMap::new())
}

/// `trident-ctl --topology FILE ARGS` with environment `vars`: its success
/// and its JSON report.
fn ctl_with(topology: &Path, args: &[&str], vars: &BTreeMap<String, String>) -> (bool, Value) {
    let out = Command::new(binary("trident-ctl"))
        .envs(vars)
        .arg("--topology")
        .arg(topology)
        .args(args)
        .output()
        .expect("run trident-ctl (cargo build --bins)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "trident-ctl {args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    (out.status.success(), report)
}

/// Per node: series key → per-field counts, of database `db`.
async fn holdings(urls: &[String], db: &str) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for url in urls {
        let mut series = BTreeMap::new();
        let v = influx_query(url, "SELECT count(*) FROM /.*/ GROUP BY *", Some(db))
            .await
            .expect("count");
        for s in v["results"][0]["series"].as_array().into_iter().flatten() {
            let mut key = s["name"].as_str().unwrap_or_default().to_owned();
            for (k, v) in s["tags"].as_object().into_iter().flatten() {
                if let Some(v) = v.as_str().filter(|v| !v.is_empty()) {
                    key.push_str(&format!(",{k}={v}"));
                }
            }
            let n: u64 = s["values"][0]
                .as_array()
                .into_iter()
                .flatten()
                .skip(1)
                .filter_map(Value::as_u64)
                .sum();
            if n > 0 {
                series.insert(key, n);
            }
        }
        out.insert(url.clone(), series);
    }
    out
}

/// What every node must hold under `placement`: each series of the corpus
/// on its owners, with all of its field values.
fn expected(placement: &Placement, db: &str) -> BTreeMap<String, BTreeMap<String, u64>> {
    let body = corpus();
    trident_e2e::expected_holdings(placement, db, [body.as_str()], |line| {
        line.fields().count() as u64
    })
}

async fn write(url: &str, db: &str, body: &str) {
    let resp = http()
        .post(format!("{url}/write"))
        .query(&[("db", db), ("precision", "ns")])
        .body(body.to_owned())
        .send()
        .await
        .expect("write");
    assert_eq!(resp.status().as_u16(), 204, "{:?}", resp.text().await);
}

/// A gateway on `topology`; the oracle's answers to a few queries equal its.
async fn queries_match(
    env: &StackEnv,
    topology: &Topology,
    db: &str,
    oracle_url: &str,
    oracle: &str,
) {
    let mut config = env.config(&[]);
    config.influx.urls = topology.nodes.iter().map(|n| n.url.clone()).collect();
    config.influx.replication = topology.replication;
    config.influx.rules = topology.rules.clone();
    let (gateway, shutdown) = trident_e2e::spawn_gateway(config).await;
    for q in [
        "SELECT * FROM cpu WHERE rack = 'r1'",
        "SELECT count(usage), sum(procs), mean(usage) FROM cpu WHERE time >= 1699999980000000000 AND time < 1700000600000000000 GROUP BY time(1m), rack",
        "SELECT percentile(latency_ms, 90) FROM http_requests WHERE app = 'shop'",
        "SELECT max(used) FROM mem",
        "SHOW SERIES",
    ] {
        let want = influx_query_with(oracle_url, q, Some(oracle), &[])
            .await
            .expect("oracle");
        let got = influx_query_with(&gateway, q, Some(db), &[])
            .await
            .expect("gateway");
        let (want, got) = (
            trident_e2e::normalize_answer(&want),
            trident_e2e::normalize_answer(&got),
        );
        assert!(
            trident_e2e::same_answer(&want, &got),
            "{q}\n oracle: {want}\ngateway: {got}"
        );
    }
    shutdown.trigger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_remove_recover_and_check_keep_every_point_in_place() {
    let (stack, three, four) = three_and_a_spare();
    let env = &stack.env;
    let db = unique_name("ops");
    let oracle = unique_name("ops_oracle");
    let file = topology_file("ctl", &three);
    let before = topology(&three);

    // Data in through a gateway on three nodes.
    let mut config = env.config(&[]);
    config.influx.replication = 2;
    config.influx.rules = before.rules.clone();
    let (gateway, shutdown) = trident_e2e::spawn_gateway(config).await;
    write(&gateway, &db, &corpus()).await;
    shutdown.trigger();
    // The oracle: a database on the shared stack, outside this cluster.
    let shared = StackEnv::load().expect("the shared stack is up (scripts/stack up)");
    let oracle_url = shared.influx_urls[0].clone();
    influx_query(&oracle_url, &format!("CREATE DATABASE \"{oracle}\""), None)
        .await
        .expect("oracle db");
    write(&oracle_url, &oracle, &corpus()).await;
    let three_p = before.clone().validate().expect("valid");
    assert_eq!(holdings(&three, &db).await, expected(&three_p, &db));

    // Add the fourth node: it gets exactly what the ring gives it now.
    let (ok, report) = ctl(
        &file,
        &[
            "add-node", "--id", &four[3], "--url", &four[3], "--grace", "0s",
        ],
    );
    assert!(ok, "{report}");
    let after: Topology =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("read")).expect("topology");
    assert_eq!(after.version, 3, "a move version, then the new one");
    assert_eq!(after.nodes.len(), 4);
    let four_p = after.clone().validate().expect("valid");
    let mut held = holdings(&four, &db).await;
    assert_eq!(held, expected(&four_p, &db), "after add-node");
    assert!(
        report["copies"].as_u64().unwrap_or(0) > 0 && report["dropped"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );
    queries_match(env, &after, &db, &oracle_url, &oracle).await;

    // Running it again finds nothing to do: each step is idempotent.
    let again = file.with_file_name("again.json");
    std::fs::write(&again, serde_json::to_string(&after).expect("json")).expect("file");
    let (ok, report) = ctl(
        &again,
        &[
            "rebalance",
            "--from",
            again.to_str().unwrap_or_default(),
            "--to",
            again.to_str().unwrap_or_default(),
        ],
    );
    assert!(ok);
    assert_eq!(
        (report["copies"].clone(), report["dropped"].clone()),
        (json!(0), json!(0)),
        "{report}"
    );

    // Wipe node 2 and recover it from its replicas.
    stack.wipe("influx2").expect("wipe influx2");
    held = holdings(&four, &db).await;
    assert!(held[&four[1]].is_empty());
    let (ok, report) = ctl(&file, &["check"]);
    assert!(
        !ok && !report["differences"].as_array().is_none_or(Vec::is_empty),
        "check must see the wiped node: {report}"
    );
    let (ok, report) = ctl(&file, &["recover", "--node", &four[1]]);
    assert!(ok, "{report}");
    assert_eq!(
        holdings(&four, &db).await,
        expected(&four_p, &db),
        "after recover"
    );
    let (ok, report) = ctl(&file, &["check"]);
    assert!(ok, "after recover, check finds nothing: {report}");

    // A point missing on one replica: check reports it, --repair fixes it.
    let victim = expected(&four_p, &db);
    let (node, series) = victim
        .iter()
        .find_map(|(n, s)| {
            s.keys()
                .find(|k| k.starts_with("cpu,"))
                .map(|k| (n.clone(), k.clone()))
        })
        .expect("a cpu series");
    let host = series
        .split("host=")
        .nth(1)
        .and_then(|h| h.split(',').next())
        .unwrap_or_default()
        .to_owned();
    influx_query(
        &node,
        &format!("DELETE FROM cpu WHERE host = '{host}' AND time = {T0}"),
        Some(&db),
    )
    .await
    .expect("delete one point");
    let (ok, report) = ctl(&file, &["check"]);
    assert!(
        !ok && report["differences"].to_string().contains(&series),
        "{report}"
    );
    let (ok, _) = ctl(&file, &["check", "--repair"]);
    assert!(ok);
    let (ok, report) = ctl(&file, &["check"]);
    assert!(ok, "{report}");

    // Remove the fourth node again: back to the three-node placement.
    let (ok, report) = ctl(&file, &["remove-node", "--id", &four[3], "--grace", "0s"]);
    assert!(ok, "{report}");
    let back: Topology =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("read")).expect("topology");
    assert_eq!((back.version, back.nodes.len()), (5, 3));
    let held = holdings(&four, &db).await;
    assert!(
        held[&four[3]].is_empty(),
        "the removed node keeps nothing of {db}"
    );
    let three_held: BTreeMap<_, _> = held
        .into_iter()
        .filter(|(u, _)| three.contains(u))
        .collect();
    assert_eq!(three_held, expected(&three_p, &db), "after remove-node");
    queries_match(env, &back, &db, &oracle_url, &oracle).await;
    influx_query(&oracle_url, &format!("DROP DATABASE \"{oracle}\""), None)
        .await
        .expect("drop oracle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_refilled_from_the_raw_topic() {
    let env = StackEnv::load().expect("the stack is up (scripts/stack up)");
    let topic = trident_e2e::KafkaTopic::create(&env, 4)
        .await
        .expect("a raw topic of its own");
    let db = unique_name("kafkarec");
    let mut config = env.config(&[("TRIDENT_KAFKA_RAW_TOPIC", topic.name.as_str())]);
    config.influx.replication = 2;
    config.influx.rules = trident_e2e::one_rule_per_strategy();
    let (gateway, shutdown) = trident_e2e::spawn_gateway(config).await;
    write(&gateway, &db, &corpus()).await;
    shutdown.trigger();
    let urls = env.influx_urls.clone();
    let placement = topology(&urls).validate().expect("valid");
    assert_eq!(holdings(&urls, &db).await, expected(&placement, &db));

    // Node 2 loses this database; its replicas are not asked.
    influx_query(&urls[1], &format!("DROP DATABASE \"{db}\""), None)
        .await
        .expect("drop on node 2");
    let file = topology_file("ctlk", &urls);
    let mut vars = env.vars.clone();
    vars.insert("TRIDENT_KAFKA_RAW_TOPIC".into(), topic.name.clone());
    let (ok, report) = ctl_with(
        &file,
        &[
            "recover",
            "--node",
            &urls[1],
            "--from-kafka",
            "--since",
            "1h",
        ],
        &vars,
    );
    assert!(ok, "{report}");
    let held = holdings(&urls, &db).await;
    assert_eq!(
        held[&urls[1]],
        expected(&placement, &db)[&urls[1]],
        "node 2 refilled from the topic"
    );
    assert_eq!(held, expected(&placement, &db));
    for url in &urls {
        influx_query(url, &format!("DROP DATABASE \"{db}\""), None)
            .await
            .expect("cleanup");
    }
}

/// A private stack with its spare node, the corpus written through a
/// gateway on its three nodes, and their topology in a file: the stack,
/// the four node URLs, the database and the file.
async fn placed_on_three(name: &str) -> (PrivateStack, Vec<String>, String, std::path::PathBuf) {
    let (stack, three, four) = three_and_a_spare();
    let env = &stack.env;
    let db = unique_name(name);
    let file = topology_file(name, &three);
    let mut config = env.config(&[]);
    config.influx.replication = 2;
    config.influx.rules = trident_e2e::one_rule_per_strategy();
    let (gateway, shutdown) = trident_e2e::spawn_gateway(config).await;
    write(&gateway, &db, &corpus()).await;
    shutdown.trigger();
    (stack, four, db, file)
}

/// Waits (up to 30 s) until the topology file holds move version 2: the
/// moment to interrupt trident-ctl, whatever the machine's pace.
async fn wait_for_move(file: &std::path::Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let topology: Option<Topology> = std::fs::read_to_string(file)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok());
        if topology.is_some_and(|t| t.moving.is_some() && t.version == 2) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "trident-ctl did not publish the move version"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_add_node_killed_midway_is_finished_by_finish_move() {
    let (_stack, four, db, file) = placed_on_three("resume").await;

    // Killed (SIGKILL) while it waits for services to follow the move version.
    let mut child = Command::new(binary("trident-ctl"))
        .arg("--topology")
        .arg(&file)
        .args([
            "add-node", "--id", &four[3], "--url", &four[3], "--grace", "30s",
        ])
        .spawn()
        .expect("start trident-ctl");
    wait_for_move(&file).await;
    child.kill().expect("kill trident-ctl");
    let _ = child.wait();
    let midway: Topology =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("read")).expect("topology");
    assert!(
        midway.moving.is_some() && midway.version == 2,
        "killed during the move: {midway:?}"
    );
    let (ok, _) = ctl(
        &file,
        &["add-node", "--id", "x", "--url", "http://127.0.0.1:9"],
    );
    assert!(!ok, "a new move is refused while one is unfinished");

    let (ok, report) = ctl(&file, &["finish-move", "--grace", "0s"]);
    assert!(ok, "{report}");
    let done: Topology =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("read")).expect("topology");
    assert!(
        done.moving.is_none() && done.version == 3 && done.nodes.len() == 4,
        "{done:?}"
    );
    let placement = done.validate().expect("valid");
    assert_eq!(
        holdings(&four, &db).await,
        expected(&placement, &db),
        "finished as if never killed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_interrupted_by_a_dead_node_is_finished_once_it_is_back() {
    let (stack, four, db, file) = placed_on_three("nodedown").await;

    // Node 2 dies (SIGKILL) while add-node waits on the move version; the
    // copy that follows cannot read it, and the command stops.
    let mut command = Command::new(binary("trident-ctl"));
    command.arg("--topology").arg(&file).args([
        "--timeout",
        "5s",
        "add-node",
        "--id",
        &four[3],
        "--url",
        &four[3],
        "--grace",
        "10s",
    ]);
    let kill = async {
        wait_for_move(&file).await;
        stack.kill("influx2").expect("kill influx2");
    };
    let (out, ()) = tokio::join!(tokio::task::spawn_blocking(move || command.output()), kill);
    let out = out.expect("join").expect("run trident-ctl");
    assert!(
        !out.status.success(),
        "the move cannot finish with a node down"
    );
    let midway: Topology =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("read")).expect("topology");
    assert!(midway.moving.is_some(), "stopped mid-move: {midway:?}");

    stack.start("influx2").expect("node 2 back");
    let (ok, report) = ctl(&file, &["finish-move", "--grace", "0s"]);
    assert!(ok, "{report}");
    let done: Topology =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("read")).expect("topology");
    assert!(done.moving.is_none() && done.nodes.len() == 4, "{done:?}");
    let placement = done.validate().expect("valid");
    assert_eq!(
        holdings(&four, &db).await,
        expected(&placement, &db),
        "finished once the node was back"
    );
}
