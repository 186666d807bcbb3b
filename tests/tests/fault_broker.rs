//! The broker killed under continuous load, on a stack of this test's own:
//! writes answer 204 while the Kafka spool has room, then 503 with
//! `Retry-After` once it is full — never a silent loss —, the gateway
//! killed with `kill -9` meanwhile keeps its spool, and when the broker is
//! back every acknowledged line reaches the raw topic.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::Consumer;
use trident_e2e::{PrivateStack, ServiceProcess, WriteLoad, unique_name};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_broker_fills_the_spool_then_503_and_everything_acknowledged_arrives() {
    let stack = PrivateStack::up(&[]).expect("a private stack");
    let work = std::env::temp_dir().join(unique_name("faultkafka"));
    std::fs::create_dir_all(&work).expect("work dir");
    let port = trident_e2e::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut vars = stack.env.vars.clone();
    for (k, v) in [
        ("TRIDENT_GATEWAY_LISTEN", format!("127.0.0.1:{port}")),
        (
            "TRIDENT_GATEWAY_SPOOL_DIR",
            work.join("spool").to_string_lossy().into_owned(),
        ),
        // The smallest spool allowed, so that the test fills it.
        ("TRIDENT_GATEWAY_SPOOL_MAX_BYTES", "1048576".to_owned()),
        ("TRIDENT_GATEWAY_REPLAY_MAX_BACKOFF", "500ms".to_owned()),
        ("TRIDENT_KAFKA_DELIVERY_TIMEOUT", "2s".to_owned()),
    ] {
        vars.insert(k.to_owned(), v);
    }
    let mut gateway = ServiceProcess::gateway(&vars, &work, &url)
        .await
        .unwrap_or_else(|e| panic!("the gateway did not come up: {e}"));
    let db = unique_name("faults");
    let write_url = format!("{url}/write?db={db}");

    let load = WriteLoad::start(write_url.clone(), "net", 200, Duration::from_millis(5));
    tokio::time::sleep(Duration::from_secs(1)).await;
    stack.kill("kafka").expect("kill the broker");

    // Until the spool is full: 204s, then 503 + Retry-After.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while load.snapshot().first_refusal.is_none() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let full = load.snapshot();
    let refusal = full
        .first_refusal
        .clone()
        .expect("a 503 once the spool is full");
    assert!(
        refusal.starts_with("503") && refusal.contains("full"),
        "{refusal}"
    );
    let first_503 = full.statuses.iter().position(|&s| s == 503).expect("a 503");
    assert!(
        full.statuses[..first_503].iter().all(|&s| s == 204),
        "204 until the spool was full: {:?}",
        &full.statuses[..first_503]
    );
    // As large as the load's requests (a small one may still fit).
    let body: Vec<String> = (0..200)
        .map(|i| trident_e2e::load_line("net", (1 << 40) + i))
        .collect();
    let answer = trident_e2e::post_any(&write_url, body.join("\n"))
        .await
        .expect("a request");
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(
        answer.headers.get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );

    // The gateway is killed with acknowledged lines only in its full
    // spool, and restarted: the spool is read back whole.
    let entries = |text: &str| -> f64 {
        text.lines()
            .find_map(|l| {
                l.strip_prefix("trident_gateway_spool_entries{spool=\"kafka:raw\"} ")?
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0)
    };
    let before_kill = entries(&trident_e2e::get_text(&format!("{url}/metrics")).await);
    gateway.kill();
    let _gateway = ServiceProcess::gateway(&vars, &work, &url)
        .await
        .unwrap_or_else(|e| panic!("the gateway did not come back: {e}"));
    let metrics = trident_e2e::get_text(&format!("{url}/metrics")).await;
    let after_restart = entries(&metrics);
    assert!(
        before_kill > 0.0 && after_restart >= before_kill,
        "the Kafka spool survived kill -9: {before_kill} entries before, {after_restart} after\n{metrics}"
    );

    // The broker returns: the spool drains, writes are acknowledged again.
    stack.start("kafka").expect("start the broker");
    let back = std::time::Instant::now();
    let health =
        trident_e2e::wait_for_json(&format!("{url}/health"), Duration::from_secs(120), |h| {
            h["components"]["sink:kafka"]["status"] == "up"
        })
        .await;
    assert_eq!(
        health["components"]["sink:kafka"]["status"], "up",
        "the spool drained: {health}"
    );
    let drained = back.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let log = load.stop().await;
    assert_eq!(
        log.statuses.last(),
        Some(&204),
        "acknowledged again after the broker returned"
    );

    // Every acknowledged line is in the raw topic, in its key's partition.
    let partitions: i32 = stack.env.vars["TRIDENT_RAW_PARTITIONS"]
        .parse()
        .expect("partitions");
    let consumer = stack
        .env
        .assigned_consumer(&stack.env.raw_topic, partitions)
        .expect("consumer");
    let wanted: BTreeSet<u64> = log.acked.iter().copied().collect();
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    let mut partition_of: BTreeMap<Vec<u8>, i32> = BTreeMap::new();
    let mut last_offset: BTreeMap<i32, i64> = BTreeMap::new();
    // The broker serves about a thousand records a second here (tansu on
    // SQLite), and how many there are depends on how long the spool took
    // to drain under the load: read for as long as records keep coming.
    let mut last_record = std::time::Instant::now();
    while !wanted.iter().all(|s| seen.contains_key(s))
        && last_record.elapsed() < Duration::from_secs(60)
    {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        last_record = std::time::Instant::now();
        let message = message.expect("message");
        let key = message.key().unwrap_or_default().to_vec();
        let p = *partition_of
            .entry(key.clone())
            .or_insert(message.partition());
        assert_eq!(p, message.partition(), "a series moved partitions");
        last_offset.insert(message.partition(), message.offset());
        let payload = String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
        for line in payload.lines() {
            let seq = line
                .split_once("seq=")
                .and_then(|(_, rest)| rest.split_once('i'))
                .and_then(|(n, _)| n.parse::<u64>().ok())
                .expect("a load line");
            *seen.entry(seq).or_default() += 1;
        }
    }
    let missing = wanted.iter().filter(|s| !seen.contains_key(s)).count();
    let duplicated = seen.values().filter(|&&n| n > 1).count();
    println!(
        "acknowledged {} lines ({} requests, first 503 at request {first_503}); \
         the spool drained {drained:.1?} after the broker was started; \
         in the raw topic: {} distinct, {duplicated} more than once; missing: {missing}",
        log.acked.len(),
        log.statuses.len(),
        seen.len()
    );
    if missing > 0 {
        // Whether the broker lacks them or the consumer did not get there.
        for p in 0..partitions {
            let marks = consumer.fetch_watermarks(&stack.env.raw_topic, p, Duration::from_secs(5));
            println!(
                "partition {p}: last offset read {:?}, watermarks {marks:?}",
                last_offset.get(&p)
            );
        }
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for &s in wanted.iter().filter(|s| !seen.contains_key(s)) {
            match ranges.last_mut() {
                Some((_, end)) if *end + 1 == s => *end = s,
                _ => ranges.push((s, s)),
            }
        }
        let first_refused = first_503 * 200;
        println!(
            "missing seq ranges ({} of them, the first 503 at seq {first_refused}): {:?}",
            ranges.len(),
            &ranges[..ranges.len().min(40)]
        );
    }
    assert_eq!(missing, 0, "acknowledged lines missing from the raw topic");
    let _ = std::fs::remove_dir_all(&work);
}
