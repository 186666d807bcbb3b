//! Faults under continuous load, on a stack of this test's own: an
//! InfluxDB node killed with SIGKILL, then the gateway itself killed with
//! SIGKILL while the node's hinted handoff still holds acknowledged points.
//! Writes keep answering 204, the spool survives the gateway's crash, and
//! once the node is back every node holds exactly what the ring gives it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use trident_e2e::{PrivateStack, ServiceProcess, WriteLoad, influx_query, unique_name};
use trident_service::config::Config;

/// The gateway binary on `port`, spooling to `spool_dir`.
fn gateway_vars(stack: &PrivateStack, port: u16, spool_dir: &str) -> BTreeMap<String, String> {
    let mut vars = stack.env.vars.clone();
    for (k, v) in [
        ("TRIDENT_GATEWAY_LISTEN", format!("127.0.0.1:{port}")),
        ("TRIDENT_GATEWAY_SPOOL_DIR", spool_dir.to_owned()),
        ("TRIDENT_GATEWAY_REPLAY_MAX_BACKOFF", "500ms".to_owned()),
        ("TRIDENT_INFLUX_REPLICATION", "2".to_owned()),
        ("TRIDENT_INFLUX_TIMEOUT", "2s".to_owned()),
    ] {
        vars.insert(k.to_owned(), v);
    }
    vars
}

fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn scrape(url: &str) -> String {
    match trident_e2e::http()
        .get(format!("{url}/metrics"))
        .send()
        .await
    {
        Ok(resp) => resp.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_and_a_killed_gateway_lose_no_acknowledged_point() {
    let stack = PrivateStack::up(&[]).expect("a private stack");
    let work = std::env::temp_dir().join(unique_name("faultnode"));
    std::fs::create_dir_all(&work).expect("work dir");
    let spool_dir = work.join("spool").to_string_lossy().into_owned();
    let port = trident_e2e::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let vars = gateway_vars(&stack, port, &spool_dir);
    let config = Config::load_with_env(None, vars.clone()).expect("config");
    let placement = config.influx.topology().validate().expect("topology");

    let mut gateway = ServiceProcess::gateway(&vars, &work, &url)
        .await
        .expect("the gateway comes up");
    let db = unique_name("faults");
    let load = WriteLoad::start(
        format!("{url}/write?db={db}"),
        "load",
        100,
        Duration::from_millis(10),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 1. A node dies: writes go on, its spool grows.
    let victim = stack.env.influx_urls[1].clone();
    stack.kill("influx2").expect("kill influx2");
    let spool_metric = format!("trident_gateway_spool_entries{{spool=\"influx:{victim}\"}}");
    // The first write to the dead node waits for its connection to fail;
    // then the spool grows.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut spooled = 0.0;
    while spooled == 0.0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        spooled = metric(&scrape(&url).await, &spool_metric);
    }
    assert!(spooled > 0.0, "the dead node's spool has entries");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later = metric(&scrape(&url).await, &spool_metric);
    assert!(
        later > spooled,
        "the dead node's spool grows under the load: {spooled}, then {later}"
    );
    spooled = later;
    let seen = load.snapshot();
    assert!(
        seen.statuses.iter().all(|&s| s == 204),
        "every write answered 204 while a node was down: {:?}",
        seen.first_refusal
    );

    // 2. The gateway dies with acknowledged points only in that spool.
    gateway.kill();
    let before_restart = load.snapshot().acked.len();
    let _gateway = ServiceProcess::gateway(&vars, &work, &url)
        .await
        .expect("the gateway comes up");
    let kept = metric(&scrape(&url).await, &spool_metric);
    assert!(
        kept >= spooled,
        "the spool survived kill -9: {kept} entries after, {spooled} before"
    );
    // The health checks see the dead node, and the cluster sink degraded.
    let ping = format!("ping:{victim}");
    let health =
        trident_e2e::wait_for_json(&format!("{url}/health"), Duration::from_secs(30), |h| {
            h["components"][&ping]["status"] == "degraded"
        })
        .await;
    // Degraded, not down: the gateway still takes writes (and /health
    // stays 200 for load balancers).
    assert_eq!(
        health["components"][&ping]["status"], "degraded",
        "{health}"
    );
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(
        health["components"]["sink:influx"]["status"], "degraded",
        "{health}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 3. The node returns: its spool drains while the load goes on.
    stack.start("influx2").expect("start influx2");
    let health =
        trident_e2e::wait_for_json(&format!("{url}/health"), Duration::from_secs(90), |h| {
            h["components"][format!("node:{victim}")]["status"] == "up"
        })
        .await;
    assert_eq!(
        health["components"][format!("node:{victim}")]["status"],
        "up",
        "the spool drained: {health}"
    );
    let page = scrape(&url).await;
    let log = load.stop().await;
    assert!(
        page.contains(&spool_metric),
        "{spool_metric} reported: {page}"
    );
    assert_eq!(
        metric(&page, &spool_metric),
        0.0,
        "nothing left in the node's spool, under load"
    );
    let health =
        trident_e2e::wait_for_json(&format!("{url}/health"), Duration::from_secs(30), |h| {
            h["components"][&ping]["status"] == "up"
        })
        .await;
    assert_eq!(
        health["components"]["sink:influx"]["status"], "up",
        "{health}"
    );
    assert!(
        log.acked.len() > before_restart,
        "writes acknowledged after the restart"
    );
    let lost_answers = log.statuses.iter().filter(|&&s| s == 0).count();
    assert!(
        log.statuses.iter().all(|&s| s == 204 || s == 0),
        "only 204s, and no answer while the gateway was dead: {:?}",
        log.first_refusal
    );

    // 4. Every node holds exactly what it owns: every acknowledged point
    // on all of its owners, and nothing on a node that does not own it.
    let mut held: Vec<BTreeSet<u64>> = Vec::new();
    for node in &stack.env.influx_urls {
        let json = influx_query(node, "SELECT seq FROM \"load\"", Some(&db))
            .await
            .expect("query");
        let values = json["results"][0]["series"][0]["values"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        held.push(values.iter().filter_map(|r| r[1].as_u64()).collect());
    }
    let node_index = |u: &str| stack.env.influx_urls.iter().position(|n| n == u);
    let owners_of = |seq: u64| -> BTreeSet<usize> {
        let line = trident_e2e::load_line("load", seq);
        let parsed = trident_line_protocol::parse_lines(line.as_bytes())
            .next()
            .and_then(Result::ok)
            .expect("a valid line");
        let strategy = placement.strategy_for(&db, "load");
        let hash = parsed.shard_hash(strategy, &mut Vec::new());
        placement
            .owners(hash)
            .filter_map(|n| node_index(&n.url))
            .collect()
    };
    let mut lost = 0;
    for &seq in &log.acked {
        for owner in owners_of(seq) {
            if !held[owner].contains(&seq) {
                lost += 1;
            }
        }
    }
    let mut misplaced = 0;
    for (index, seqs) in held.iter().enumerate() {
        misplaced += seqs
            .iter()
            .filter(|&&s| !owners_of(s).contains(&index))
            .count();
    }
    println!(
        "acknowledged {} lines in {} requests ({lost_answers} unanswered while the gateway was dead); \
         spooled for the dead node: {spooled} writes; lost copies: {lost}; misplaced: {misplaced}",
        log.acked.len(),
        log.statuses.len()
    );
    assert_eq!(lost, 0, "acknowledged copies missing from their owners");
    assert_eq!(misplaced, 0, "points on nodes that do not own them");
    let _ = std::fs::remove_dir_all(&work);
}
