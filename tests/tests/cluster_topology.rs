//! The topology in etcd: `trident-ctl publish` sets it, gateways follow it
//! without a restart, and two gateways end on the same version and place
//! every point alike. Then a node is added and removed again while a
//! client keeps writing and another keeps counting through the gateway:
//! every count is between what was acknowledged and what was sent, and at
//! the end every acknowledged point is on exactly the owners the topology
//! gives it, nothing lost, nothing left behind on a node that lost it.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use trident_cluster::{Placement, Topology};
use trident_e2e::{
    PrivateStack, StackEnv, WriteLoad, binary, get_text, http, influx_query, load_line,
    topology_of, unique_name,
};

/// Runs trident-ctl with the stack's environment plus the topology key.
fn ctl(vars: &BTreeMap<String, String>, args: &[&str]) -> (bool, String) {
    let out = Command::new(binary("trident-ctl"))
        .envs(vars)
        .args(args)
        .output()
        .expect("run trident-ctl (cargo build --bins)");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!(
        "trident-ctl {args:?}: {stderr}{}",
        String::from_utf8_lossy(&out.stdout)
    );
    (out.status.success(), stderr)
}

fn publish(vars: &BTreeMap<String, String>, dir: &std::path::Path, t: &Topology) -> (bool, String) {
    let file = dir.join(format!("v{}.json", t.version));
    std::fs::write(&file, serde_json::to_string(t).expect("json")).expect("topology file");
    ctl(
        vars,
        &["publish", "--file", file.to_str().unwrap_or_default()],
    )
}

/// The topology version a gateway's /health reports.
async fn version_of(gateway: &str) -> String {
    let health: Value =
        serde_json::from_str(&get_text(&format!("{gateway}/health")).await).unwrap_or_default();
    health["components"]["topology"]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn wait_for_version(gateway: &str, version: u64) {
    let want = format!("version {version} ");
    for _ in 0..100 {
        if version_of(gateway).await.starts_with(&want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{gateway} did not switch to version {version}: {}",
        version_of(gateway).await
    );
}

/// Per node: series key → points of measurement `m` in `db`.
async fn counts(urls: &[String], db: &str, m: &str) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for url in urls {
        let v = influx_query(
            url,
            &format!("SELECT count(seq) FROM {m} GROUP BY *"),
            Some(db),
        )
        .await
        .expect("count");
        let mut per = BTreeMap::new();
        for s in v["results"][0]["series"].as_array().into_iter().flatten() {
            let k = s["tags"]["k"].as_str().unwrap_or_default().to_owned();
            per.insert(
                format!("{m},k={k}"),
                s["values"][0][1].as_u64().unwrap_or(0),
            );
        }
        out.insert(url.clone(), per);
    }
    out
}

/// What each node must hold of `seqs` (lines of `m`) under `placement`.
fn expected(
    placement: &Placement,
    db: &str,
    m: &str,
    seqs: impl Iterator<Item = u64>,
) -> BTreeMap<String, BTreeMap<String, u64>> {
    let lines: Vec<String> = seqs.map(|seq| load_line(m, seq)).collect();
    trident_e2e::expected_holdings(placement, db, lines.iter().map(String::as_str), |_| 1)
}

async fn write(gateway: &str, db: &str, lines: &[String]) {
    let resp = http()
        .post(format!("{gateway}/write"))
        .query(&[("db", db)])
        .body(lines.join("\n"))
        .send()
        .await
        .expect("write");
    assert_eq!(resp.status().as_u16(), 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_follow_the_topology_in_etcd() {
    let env = StackEnv::load().expect("the stack is up (scripts/stack up --with etcd)");
    assert!(
        env.vars.contains_key("TRIDENT_ETCD_ENDPOINTS"),
        "etcd in the stack: scripts/stack up --with etcd"
    );
    let key = format!("/trident/test/{}", unique_name("topology"));
    let mut vars = env.vars.clone();
    vars.insert("TRIDENT_INFLUX_TOPOLOGY_KEY".into(), key.clone());
    let dir = std::env::temp_dir().join(unique_name("topo"));
    std::fs::create_dir_all(&dir).expect("dir");
    let urls = env.influx_urls.clone();
    let v1 = topology_of(1, &urls, 1);
    assert!(publish(&vars, &dir, &v1).0);

    let config = || {
        env.config(&[
            ("TRIDENT_INFLUX_TOPOLOGY_KEY", key.as_str()),
            ("TRIDENT_INFLUX_TOPOLOGY_POLL", "200ms"),
        ])
    };
    let (a, stop_a) = trident_e2e::spawn_gateway(config()).await;
    let (b, stop_b) = trident_e2e::spawn_gateway(config()).await;
    wait_for_version(&a, 1).await;
    wait_for_version(&b, 1).await;
    let db = unique_name("topodb");
    let m = "topo";
    let lines = |seqs: std::ops::Range<u64>| seqs.map(|s| load_line(m, s)).collect::<Vec<_>>();
    write(&a, &db, &lines(0..100)).await;
    write(&b, &db, &lines(100..200)).await;
    let p1 = v1.clone().validate().expect("valid");
    assert_eq!(
        counts(&urls, &db, m).await,
        expected(&p1, &db, m, 0..200),
        "version 1: one copy, by the ring"
    );

    // Version 2: two replicas. Both gateways switch, without a restart.
    let v2 = topology_of(2, &urls, 2);
    assert!(publish(&vars, &dir, &v2).0);
    wait_for_version(&a, 2).await;
    wait_for_version(&b, 2).await;
    write(&a, &db, &lines(200..300)).await;
    write(&b, &db, &lines(300..400)).await;
    let p2 = v2.clone().validate().expect("valid");
    let mut want = expected(&p1, &db, m, 0..200);
    for (node, series) in expected(&p2, &db, m, 200..400) {
        for (k, n) in series {
            *want.entry(node.clone()).or_default().entry(k).or_default() += n;
        }
    }
    assert_eq!(
        counts(&urls, &db, m).await,
        want,
        "version 2: both gateways place alike"
    );

    // Versions only go up.
    let (ok, why) = publish(&vars, &dir, &v2);
    assert!(!ok && why.contains("not higher"), "{why}");
    stop_a.trigger();
    stop_b.trigger();
    for url in &urls {
        influx_query(url, &format!("DROP DATABASE \"{db}\""), None)
            .await
            .expect("cleanup");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_added_and_removed_under_load_loses_nothing() {
    let stack = PrivateStack::up(&["etcd"]).expect("a private stack with etcd");
    stack.start("influx4").expect("the spare node");
    let env = &stack.env;
    let key = "/trident/topology".to_owned();
    let mut vars = env.vars.clone();
    vars.insert("TRIDENT_INFLUX_TOPOLOGY_KEY".into(), key.clone());
    let dir = std::env::temp_dir().join(unique_name("grow"));
    std::fs::create_dir_all(&dir).expect("dir");
    let three = env.influx_urls.clone();
    let mut four = three.clone();
    four.push(stack.influx_url(4));
    assert!(publish(&vars, &dir, &topology_of(1, &three, 2)).0);

    // A slow poll: for up to a second after the publish the gateway still
    // writes by version 1; trident-ctl waits until it reports version 2.
    let config = env.config(&[
        ("TRIDENT_INFLUX_TOPOLOGY_KEY", key.as_str()),
        ("TRIDENT_INFLUX_TOPOLOGY_POLL", "1s"),
    ]);
    let (gateway, stop) = trident_e2e::spawn_gateway(config).await;
    wait_for_version(&gateway, 1).await;
    let db = unique_name("grow");
    let m = "grow";
    let load = WriteLoad::start(
        format!("{gateway}/write?db={db}"),
        m,
        40,
        Duration::from_millis(20),
    );
    // Reads throughout: a count through the gateway is never below what
    // was acknowledged before it was asked, nor above what was sent.
    let reading = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let reader = {
        let (gateway, db, reading) = (gateway.clone(), db.clone(), reading.clone());
        let nodes = four.clone();
        let snapshot = load.snapshot_handle();
        tokio::spawn(async move {
            let mut checked = 0u64;
            while reading.load(std::sync::atomic::Ordering::Acquire) {
                let acked = snapshot().acked.len() as u64;
                let v =
                    trident_e2e::influx_query(&gateway, "SELECT count(seq) FROM grow", Some(&db))
                        .await
                        .expect("query through the gateway");
                // The request in flight may be stored already.
                let sent = (snapshot().statuses.len() as u64 + 1) * 40;
                let n = v["results"][0]["series"][0]["values"][0][1]
                    .as_u64()
                    .unwrap_or(0);
                if !(acked <= n && n <= sent) {
                    let mut per_node = Vec::new();
                    for url in &nodes {
                        let c = trident_e2e::influx_query(
                            url,
                            "SELECT count(seq) FROM grow GROUP BY *",
                            Some(&db),
                        )
                        .await;
                        per_node.push(format!(
                            "{url}: {:?}",
                            c.map(|c| c["results"][0]["series"].clone())
                        ));
                    }
                    let health = trident_e2e::get_text(&format!("{gateway}/health")).await;
                    let statuses: Vec<u16> = snapshot()
                        .statuses
                        .iter()
                        .copied()
                        .filter(|s| *s != 204)
                        .collect();
                    panic!(
                        "count {n}: acknowledged {acked}, sent {sent}: {v}\nnot 204: {statuses:?}\nnodes: {per_node:?}\nhealth: {health}"
                    );
                }
                checked += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            checked
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let run = |args: Vec<String>| {
        let vars = vars.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ctl(&vars, &args)
        })
    };
    let grow = [
        "add-node", "--id", &four[3], "--url", &four[3], "--grace", "20s",
    ];
    let (ok, said) = run(grow.iter().map(|a| (*a).to_owned()).collect())
        .await
        .expect("ctl");
    assert!(ok, "add-node");
    // Version 2 moves (writes to both sides), version 3 is the new one.
    assert!(said.contains("1 instance(s) follow version 2"), "{said}");
    assert!(said.contains("1 instance(s) follow version 3"), "{said}");
    wait_for_version(&gateway, 3).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let shrink = ["remove-node", "--id", &four[3], "--grace", "20s"];
    let (ok, said) = run(shrink.iter().map(|a| (*a).to_owned()).collect())
        .await
        .expect("ctl");
    assert!(ok, "remove-node under load: {said}");
    wait_for_version(&gateway, 5).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let log = load.stop().await;
    reading.store(false, std::sync::atomic::Ordering::Release);
    let checked = reader.await.expect("the reader's checks held");
    assert!(checked > 20, "reads ran throughout: {checked}");
    assert!(
        log.acked.len() > 1000,
        "the load kept writing: {} acknowledged",
        log.acked.len()
    );
    assert!(log.first_refusal.is_none(), "{:?}", log.first_refusal);
    // After: with every request answered, the count is exactly what was
    // acknowledged — nothing missing, nothing counted twice.
    if log.statuses.iter().all(|s| (200..300).contains(s)) {
        let v = trident_e2e::influx_query(&gateway, "SELECT count(seq) FROM grow", Some(&db))
            .await
            .expect("count");
        assert_eq!(
            v["results"][0]["series"][0]["values"][0][1].as_u64(),
            Some(log.acked.len() as u64),
            "{v}"
        );
    }

    let after: Topology = {
        let client = reqwest::Client::new();
        let source = trident_service::topology::Source::Etcd {
            endpoints: vec![env.vars["TRIDENT_ETCD_ENDPOINTS"].clone()],
            key: key.clone(),
        };
        source.load(&client).await.expect("topology from etcd")
    };
    assert_eq!((after.version, after.nodes.len()), (5, 3));
    let placement = after.validate().expect("valid");
    let mut want = expected(&placement, &db, m, log.acked.iter().copied());
    want.insert(four[3].clone(), BTreeMap::new());
    assert_eq!(
        counts(&four, &db, m).await,
        want,
        "every acknowledged point on exactly its owners after adding and removing a node"
    );

    // An instance that has not followed: nothing is dropped, and the
    // operator is told which one.
    let client = reqwest::Client::new();
    let endpoints = vec![env.vars["TRIDENT_ETCD_ENDPOINTS"].clone()];
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    trident_service::topology::etcd_put(
        &client,
        &endpoints,
        &trident_service::topology::instance_key(&key, "stuck-gateway"),
        &format!("{{\"version\": 2, \"at_ms\": {now_ms}}}"),
    )
    .await
    .expect("a stuck instance");
    let before = counts(&four, &db, m).await;
    let grow = [
        "add-node", "--id", &four[3], "--url", &four[3], "--grace", "2s",
    ];
    let (ok, said) = ctl(&vars, &grow);
    assert!(!ok && said.contains("stuck-gateway (version 2)"), "{said}");
    assert!(said.contains("finish-move"), "{said}");
    // Copies to the new owners were made, nothing was dropped.
    let after = counts(&four, &db, m).await;
    for (node, series) in &before {
        for (k, n) in series {
            assert!(
                after[node].get(k).is_some_and(|a| a >= n),
                "{node} lost points of {k}"
            );
        }
    }
    stop.trigger();
}
