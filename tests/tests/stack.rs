//! The stack is real: each server that `scripts/stack up` started stores and
//! returns data through the protocol and client Trident uses.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use trident_e2e::{
    ClickHouseDb, InfluxDb, KafkaTopic, StackEnv, influx_query, post_json, post_text,
};

fn env() -> StackEnv {
    StackEnv::load().expect("the stack env file (scripts/stack up)")
}

#[tokio::test]
async fn every_influx_node_stores_and_returns_its_own_points() {
    let env = env();
    assert_eq!(env.influx_urls.len(), 3, "scripts/stack starts 3 nodes");
    let db = InfluxDb::create(&env).await.expect("create database");
    for (i, url) in env.influx_urls.iter().enumerate() {
        let body = format!(
            "cpu,host=node{i},region=eu usage={}.5,count={i}i 1700000000000000000\n\
             cpu,host=node{i},region=us usage=2.25,count=7i 1700000001000000000\n",
            i + 1
        );
        post_text(&format!("{url}/write"), &[("db", &db.name)], body)
            .await
            .expect("write");
    }
    for (i, url) in env.influx_urls.iter().enumerate() {
        let json = influx_query(
            url,
            "SELECT usage, count, host FROM cpu ORDER BY time",
            Some(&db.name),
        )
        .await
        .expect("query");
        let series = &json["results"][0]["series"][0];
        let values = series["values"].as_array().expect("rows");
        assert_eq!(values.len(), 2, "node {url}: {json}");
        assert_eq!(values[0][0], "2023-11-14T22:13:20Z");
        assert_eq!(values[0][1].as_f64(), Some(i as f64 + 1.5));
        assert_eq!(values[0][2].as_i64(), Some(i as i64));
        // Each node holds only what was written to it: they are separate servers.
        assert_eq!(values[0][3], format!("node{i}"));
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
struct Request {
    app: String,
    latency_ms: f64,
    ok: u8,
}

#[tokio::test]
async fn clickhouse_inserts_and_selects_with_the_clickhouse_crate() {
    let env = env();
    let db = ClickHouseDb::create(&env).await.expect("create database");
    db.client
        .query(
            "CREATE TABLE requests (app String, latency_ms Float64, ok UInt8) \
             ENGINE = MergeTree ORDER BY app",
        )
        .execute()
        .await
        .expect("create table");

    let rows: Vec<Request> = (0..1000)
        .map(|i| Request {
            app: format!("app{}", i % 3),
            latency_ms: f64::from(i),
            ok: u8::from(i % 10 != 0),
        })
        .collect();
    let mut insert = db
        .client
        .insert::<Request>("requests")
        .await
        .expect("insert");
    for row in &rows {
        insert.write(row).await.expect("write row");
    }
    insert.end().await.expect("end insert");

    #[derive(Debug, Deserialize, clickhouse::Row)]
    struct Summary {
        app: String,
        n: u64,
        ok: u64,
        p50: f64,
    }
    let summary = db
        .client
        .query(
            "SELECT app, count() AS n, sum(ok) AS ok, quantileExact(0.5)(latency_ms) AS p50 \
             FROM requests GROUP BY app ORDER BY app",
        )
        .fetch_all::<Summary>()
        .await
        .expect("select");
    assert_eq!(summary.len(), 3);
    let expected: BTreeMap<String, (u64, u64)> = rows.iter().fold(BTreeMap::new(), |mut m, r| {
        let e = m.entry(r.app.clone()).or_insert((0, 0));
        e.0 += 1;
        e.1 += u64::from(r.ok);
        m
    });
    for s in &summary {
        assert_eq!((s.n, s.ok), expected[&s.app], "{s:?}");
    }
    assert_eq!(summary[0].app, "app0");
    assert!(
        summary[0].p50 > 400.0 && summary[0].p50 < 600.0,
        "{summary:?}"
    );
}

fn producer(env: &StackEnv) -> FutureProducer {
    env.kafka_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .create()
        .expect("producer")
}

fn assigned_consumer(env: &StackEnv, topic: &str, partitions: i32) -> BaseConsumer {
    env.assigned_consumer(topic, partitions)
        .expect("assigned consumer")
}

#[tokio::test]
async fn kafka_idempotent_lz4_produce_and_assigned_consume_round_trip() {
    let env = env();
    let topic = KafkaTopic::create(&env, 3).await.expect("create topic");
    let producer = producer(&env);

    // Keys pin records to partitions, as the gateway's shard keys will.
    let mut sent: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    let mut deliveries = Vec::new();
    for i in 0..300 {
        let partition = i % 3;
        let payload = format!(
            "cpu,host=h{i} usage={i} {}\n",
            1_700_000_000_000_000_000i64 + i64::from(i)
        );
        sent.entry(partition).or_default().push(payload.clone());
        let record = FutureRecord::to(&topic.name)
            .partition(partition)
            .key("k")
            .payload(&payload)
            .headers(OwnedHeaders::new().insert(Header {
                key: "db",
                value: Some("telegraf"),
            }));
        deliveries.push(producer.send_result(record).expect("enqueue"));
    }
    for d in deliveries {
        d.await.expect("delivery future").expect("delivered");
    }

    let consumer = assigned_consumer(&env, &topic.name, 3);
    let mut received: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while received.values().map(Vec::len).sum::<usize>() < 300 {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out: got {received:?}"
        );
        let Some(msg) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let msg = msg.expect("message");
        let header = msg.headers().expect("headers").get(0);
        assert_eq!(header.key, "db");
        assert_eq!(header.value, Some(&b"telegraf"[..]));
        received
            .entry(msg.partition())
            .or_default()
            .push(String::from_utf8(msg.payload().expect("payload").to_vec()).expect("utf8"));
    }
    assert_eq!(
        received, sent,
        "every record, in order within its partition"
    );
}

#[tokio::test]
async fn offsets_for_times_lands_on_the_first_record_at_or_after_the_time() {
    let env = env();
    let topic = KafkaTopic::create(&env, 1).await.expect("create topic");
    let producer = producer(&env);
    let now_ms = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis(),
    )
    .expect("fits");
    // Ten records one second apart, ending a minute ago.
    let t0 = now_ms - 70_000;
    for i in 0..10i64 {
        producer
            .send(
                FutureRecord::to(&topic.name)
                    .partition(0)
                    .key("k")
                    .payload(&format!("record {i}"))
                    .timestamp(t0 + i * 1000),
                Duration::from_secs(10),
            )
            .await
            .expect("delivered");
    }

    let consumer = assigned_consumer(&env, &topic.name, 1);
    let offset_for_time = |ms: i64| {
        let mut query = TopicPartitionList::new();
        query
            .add_partition_offset(&topic.name, 0, Offset::Offset(ms))
            .expect("add");
        consumer
            .offsets_for_times(query, Duration::from_secs(10))
            .expect("offsets_for_times")
            .find_partition(&topic.name, 0)
            .expect("partition in answer")
            .offset()
    };
    assert_eq!(
        offset_for_time(t0 + 5500),
        Offset::Offset(6),
        "record 6 is the first at or after t0+5.5s"
    );

    // A time after the last record: Kafka answers the end of the partition
    // (-1, or the high watermark 10); tansu 0.6 answers 0. Consumers of a
    // lookback seek must therefore still filter records by timestamp.
    let offset = offset_for_time(now_ms);
    assert!(
        matches!(offset, Offset::End | Offset::Offset(10) | Offset::Offset(0)),
        "after the last record: {offset:?}"
    );
}

#[tokio::test]
async fn the_stack_created_the_raw_and_alert_topics() {
    let env = env();
    let consumer: BaseConsumer = env.kafka_config().create().expect("client");
    let partitions = |name: &str| {
        let metadata = consumer
            .fetch_metadata(Some(name), Duration::from_secs(10))
            .expect("metadata");
        metadata
            .topics()
            .iter()
            .find(|t| t.name() == name && t.error().is_none())
            .map(|t| t.partitions().len())
    };
    let raw: usize = env.vars["TRIDENT_RAW_PARTITIONS"].parse().expect("number");
    assert_eq!(partitions(&env.raw_topic), Some(raw));
    assert!(partitions(&env.alert_topic).is_some_and(|n| n > 0));
}

/// etcd (the cluster topology store) answers through its v3 HTTP gateway.
#[tokio::test]
async fn etcd_stores_and_returns_a_key() {
    let env = env();
    let url = env
        .vars
        .get("TRIDENT_ETCD_ENDPOINTS")
        .expect("etcd in the stack: scripts/stack up --with etcd");
    let key = trident_e2e::unique_name("key");
    // etcd's JSON gateway wants keys and values in base64.
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    post_json(
        &format!("{url}/v3/kv/put"),
        &serde_json::json!({ "key": b64(&key), "value": b64("v1") }),
    )
    .await
    .expect("put");
    let got = post_json(
        &format!("{url}/v3/kv/range"),
        &serde_json::json!({ "key": b64(&key) }),
    )
    .await
    .expect("range");
    let got: serde_json::Value = serde_json::from_str(&got).expect("JSON");
    assert_eq!(got["kvs"][0]["value"], b64("v1"), "{got}");
}

/// Alertmanager accepts an alert through its API and lists it back.
#[tokio::test]
async fn alertmanager_accepts_and_lists_an_alert() {
    let env = env();
    let url = env
        .vars
        .get("TRIDENT_ALERTMANAGER_URL")
        .expect("Alertmanager in the stack: scripts/stack up --with alertmanager");
    let name = trident_e2e::unique_name("alert");
    post_json(
        &format!("{url}/api/v2/alerts"),
        &serde_json::json!([{ "labels": { "alertname": name, "severity": "test" } }]),
    )
    .await
    .expect("post alert");
    let listed = trident_e2e::http()
        .get(format!("{url}/api/v2/alerts"))
        .query(&[("filter", format!("alertname=\"{name}\""))])
        .send()
        .await
        .expect("list alerts")
        .text()
        .await
        .expect("body");
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("JSON");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["labels"]["alertname"], name.as_str());
}
