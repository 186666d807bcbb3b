//! The gateway against the real stack: every point on exactly the RF nodes
//! the ring chooses, InfluxDB's answers for bad input, and a node or broker
//! that is down turned into spooled writes (or 503 + Retry-After when the
//! client's consistency asks for more) rather than a lost point.

use std::collections::BTreeSet;

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::message::{Headers, Message};
use trident_e2e::{InfluxDb, KafkaTopic, StackEnv, influx_query};
use trident_service::config::{Config, Service};
use trident_service::shutdown::Shutdown;

struct Gateway {
    url: String,
    config: Config,
    shutdown: Shutdown,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// Starts a gateway in this process on a free port, configured by the
/// stack's environment plus `extra`.
async fn start(env: &StackEnv, extra: &[(&str, &str)]) -> Gateway {
    start_with(env.config(extra)).await
}

/// Starts a gateway in this process on a free port with `config`.
async fn start_with(config: Config) -> Gateway {
    config.validate(Service::Gateway).expect("valid config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let shutdown = Shutdown::new();
    tokio::spawn(ingest_gateway::run(
        config.clone(),
        listener,
        shutdown.clone(),
    ));
    Gateway {
        url,
        config,
        shutdown,
    }
}

/// The URLs of the nodes that own `line` of database `db` under `config`.
fn owners(config: &Config, db: &str, line: &str) -> BTreeSet<String> {
    let placement = config.influx.topology().validate().expect("topology");
    let parsed = trident_line_protocol::parse_lines(line.as_bytes())
        .next()
        .expect("a line")
        .expect("valid");
    let strategy = placement.strategy_for(db, &parsed.measurement().as_str());
    let hash = parsed.shard_hash(strategy, &mut Vec::new());
    placement.owners(hash).map(|n| n.url.clone()).collect()
}

/// The first number `q` answers on each node, summed over the nodes.
async fn count_on_nodes(env: &StackEnv, db: &str, q: &str) -> u64 {
    let mut total = 0;
    for node in &env.influx_urls {
        let json = influx_query(node, q, Some(db)).await.expect("query");
        total += json["results"][0]["series"][0]["values"][0][1]
            .as_u64()
            .unwrap_or(0);
    }
    total
}

async fn post(
    url: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, String, reqwest::header::HeaderMap) {
    let a = trident_e2e::post_any(url, body).await.expect("request");
    (a.status, a.body, a.headers)
}

/// Posts `body` gzip'd, as `Content-Encoding: gzip`.
async fn post_gzip(url: &str, body: &[u8]) -> (u16, String, reqwest::header::HeaderMap) {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut enc, body).expect("compress");
    let packed = enc.finish().expect("compress");
    let resp = trident_e2e::http()
        .post(url)
        .header("content-encoding", "gzip")
        .body(packed)
        .send()
        .await
        .expect("request");
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    (status, resp.text().await.unwrap_or_default(), headers)
}

/// Posts a write that must be accepted whole (204).
async fn write_ok(url: &str, body: impl Into<reqwest::Body>) {
    let (status, text, _) = post(url, body).await;
    assert_eq!(status, 204, "{text}");
}

/// A node where nothing listens: every request to it fails at once.
const DEAD: &str = "http://127.0.0.1:9";

/// A gateway over the stack's nodes and a fourth, [`DEAD`], with a short
/// node timeout, configured further by `extra`.
async fn start_with_dead_node(env: &StackEnv, extra: &[(&str, &str)]) -> Gateway {
    let urls = format!("{},{DEAD}", env.influx_urls.join(","));
    let mut vars = vec![
        ("TRIDENT_INFLUX_URLS", urls.as_str()),
        ("TRIDENT_INFLUX_TIMEOUT", "2s"),
    ];
    vars.extend_from_slice(extra);
    start(env, &vars).await
}

/// The URL of a node that accepts connections and never answers.
async fn hole_node() -> String {
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", hole.local_addr().expect("addr"));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hole.accept().await {
            held.push(socket);
        }
    });
    url
}

/// A gateway whose only node is a [`hole_node`] with a 6 s timeout
/// (long enough that a slow write still holds its share of the limits
/// when the next one arrives, on a busy machine too), configured further
/// by `extra`; and its write URL.
async fn start_on_hole_node(env: &StackEnv, extra: &[(&str, &str)]) -> (Gateway, String) {
    let hole_url = hole_node().await;
    let mut vars = vec![
        ("TRIDENT_INFLUX_URLS", hole_url.as_str()),
        ("TRIDENT_INFLUX_TIMEOUT", "6s"),
    ];
    vars.extend_from_slice(extra);
    let gw = start(env, &vars).await;
    let write = format!("{}/write?db=overload", gw.url);
    (gw, write)
}

/// A 503 with `Retry-After` whose message names `setting` (the limit or
/// the request parameter that turned the write away).
fn assert_told_to_retry(response: &(u16, String, reqwest::header::HeaderMap), setting: &str) {
    let (status, text, headers) = response;
    assert_eq!(*status, 503, "{text}");
    assert!(headers.contains_key("retry-after"));
    assert!(text.contains(setting), "{text}");
}

#[tokio::test]
async fn every_point_is_on_exactly_the_nodes_the_ring_chooses() {
    let env = StackEnv::load().expect("stack env (scripts/stack up)");
    let gw = start(&env, &[("TRIDENT_INFLUX_REPLICATION", "2")]).await;
    let db = InfluxDb::create(&env).await.expect("database");
    let lines: Vec<String> = (0..120)
        .map(|i| {
            format!(
                "cpu,host=h{i},dc=d{} usage={i}.5 {}",
                i % 3,
                1_700_000_000_000_000_000i64 + i
            )
        })
        .collect();
    write_ok(
        &format!("{}/write?db={}", gw.url, db.name),
        lines.join("\n"),
    )
    .await;

    let mut copies = 0;
    for node in &env.influx_urls {
        let json = influx_query(node, "SELECT usage, host FROM cpu", Some(&db.name))
            .await
            .expect("query");
        let stored: BTreeSet<String> = json["results"][0]["series"][0]["values"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter_map(|r| r[2].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        for (i, line) in lines.iter().enumerate() {
            let host = format!("h{i}");
            let owned = owners(&gw.config, &db.name, line).contains(node.trim_end_matches('/'));
            assert_eq!(stored.contains(&host), owned, "{host} on {node}");
        }
        copies += stored.len();
    }
    assert_eq!(copies, 2 * lines.len(), "each point on exactly two nodes");
}

#[tokio::test]
async fn bad_input_gets_influxdbs_answers() {
    let env = StackEnv::load().expect("stack env (scripts/stack up)");
    let gw = start(&env, &[]).await;
    let db = InfluxDb::create(&env).await.expect("database");
    let write = format!("{}/write?db={}", gw.url, db.name);

    // Partial write: the good line is stored, the answer is 1.x's.
    let (status, text, _) = post(&write, "cpu v=1 1\ncpu v=oops 2\n").await;
    assert_eq!(status, 400);
    let json: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(
        json["error"],
        "partial write: unable to parse 'cpu v=oops 2': invalid boolean dropped=0"
    );
    let found = count_on_nodes(&env, &db.name, "SELECT count(v) FROM cpu").await;
    assert_eq!(found, 1, "the good line, once (replication 1)");

    // A line that is not UTF-8: refused by itself as a partial write, in
    // Trident's words (1.x would store the bytes; the topics carry text,
    // docs/decisions.md); the line before it is stored.
    let (status, text, _) = post(&write, b"cpu v=5 5\ncpu,host=\xff v=6 6\n".to_vec()).await;
    assert_eq!(status, 400, "{text}");
    let json: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let error = json["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("partial write: unable to parse 'cpu,host=")
            && error.ends_with("the line is not valid UTF-8 dropped=0"),
        "{text}"
    );
    let found = count_on_nodes(&env, &db.name, "SELECT count(v) FROM cpu").await;
    assert_eq!(found, 2, "the good line of each partial write");

    let (status, text, _) = post(&format!("{}/write", gw.url), "cpu v=1").await;
    assert_eq!(
        (status, text.as_str()),
        (400, "{\"error\":\"database is required\"}\n")
    );

    // A gzip bomb: small on the wire, over the limit inflated. (The
    // stack's 1.6 node inflates it whole and answers 400 for the 30 MB
    // line: it has no limit after inflation, which the gateway must.)
    let bomb = vec![b'x'; 30 << 20];
    let (bomb_status, bomb_text, _) = post_gzip(&write, &bomb).await;

    // One byte over the limit that the gateway and a plain node share
    // (25 000 000 by default): the same status and body from both.
    let oversized = vec![b'#'; 25_000_001];
    let node = &env.influx_urls[0];
    let mut answers = Vec::new();
    for base in [node.trim_end_matches('/'), gw.url.as_str()] {
        let (status, text, _) =
            post(&format!("{base}/write?db={}", db.name), oversized.clone()).await;
        answers.push((status, text));
    }
    assert_eq!(answers[0].0, 413, "{:?}", answers[0]);
    assert_eq!(answers[1], answers[0], "gateway, then node");
    assert_eq!(
        (bomb_status, &bomb_text),
        (answers[0].0, &answers[0].1),
        "the bomb gets the node's answer to a body over the limit"
    );

    // /ping as 1.x answers it: HEAD and GET alike, 204 ...
    for (method, query) in [
        (reqwest::Method::GET, ""),
        (reqwest::Method::HEAD, ""),
        (reqwest::Method::GET, "?verbose=0"),
        (reqwest::Method::GET, "?verbose=false"),
    ] {
        let mut statuses = Vec::new();
        for base in [node.trim_end_matches('/'), gw.url.as_str()] {
            let ping = trident_e2e::http()
                .request(method.clone(), format!("{base}/ping{query}"))
                .send()
                .await
                .expect("ping");
            if base == gw.url {
                assert!(ping.headers().contains_key("x-influxdb-version"));
                assert!(ping.headers().contains_key("x-influxdb-build"));
            }
            statuses.push(ping.status().as_u16());
        }
        assert_eq!(
            statuses[1], statuses[0],
            "{method} /ping{query}: node, gateway"
        );
    }
    // ... and 200 with the version for any other `verbose`: what 1.7 and
    // later answer (the stack's 1.6 node predates `verbose`; the gateway
    // presents itself as 1.8).
    for query in ["?verbose=true", "?verbose=1"] {
        let ping = trident_e2e::http()
            .get(format!("{}/ping{query}", gw.url))
            .send()
            .await
            .expect("ping");
        assert_eq!(ping.status().as_u16(), 200, "{query}");
        let json: serde_json::Value =
            serde_json::from_str(&ping.text().await.expect("body")).expect("JSON");
        assert!(json["version"].is_string(), "{query}: {json}");
    }

    // After all of it the gateway is whole: a write is stored, and every
    // sink and node is up.
    let (status, text, _) = post(&write, "cpu v=7 7\n").await;
    assert_eq!(status, 204, "{text}");
    let found = count_on_nodes(&env, &db.name, "SELECT count(v) FROM cpu").await;
    assert_eq!(found, 3, "the two good lines before, and this one");
    let health = trident_e2e::http()
        .get(format!("{}/health", gw.url))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status().as_u16(), 200);
    let health: serde_json::Value =
        serde_json::from_str(&health.text().await.expect("body")).expect("JSON");
    assert_eq!(health["status"], "up", "{health}");
    for (name, component) in health["components"].as_object().expect("components") {
        assert_eq!(component["status"], "up", "{name}: {health}");
    }

    let metrics = trident_e2e::get_text(&format!("{}/metrics", gw.url)).await;
    assert!(
        metrics.contains("trident_gateway_rejected_lines_total{reason=\"invalid_boolean\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("trident_gateway_delivery_seconds"),
        "{metrics}"
    );
    for reason in ["missing_database", "body_too_large"] {
        assert!(
            metrics.contains(&format!(
                "trident_gateway_refused_requests_total{{reason=\"{reason}\"}}"
            )),
            "{reason}: {metrics}"
        );
    }
}

async fn health(url: &str) -> serde_json::Value {
    let text = trident_e2e::get_text(&format!("{url}/health")).await;
    serde_json::from_str(&text).expect("JSON")
}

/// A node that is down: its lines are spooled (204, hinted handoff) unless
/// the client's `consistency` asks for stored replicas, which is a 503.
/// (Spool replay into a node that returns: `tests/fault_node.rs`.)
#[tokio::test]
async fn a_down_owner_is_spooled_and_stronger_consistency_is_a_503() {
    let env = StackEnv::load().expect("stack env (scripts/stack up)");
    let gw = start_with_dead_node(&env, &[]).await;
    let dead = DEAD;
    let db = InfluxDb::create(&env).await.expect("database");
    let write = format!("{}/write?db={}", gw.url, db.name);

    let lines: Vec<String> = (0..200)
        .map(|i| format!("mem,host=h{i} used={i}i {}", i + 1))
        .collect();
    let (on_dead, on_live): (Vec<&String>, Vec<&String>) = lines
        .iter()
        .partition(|l| owners(&gw.config, &db.name, l).contains(dead));
    assert!(!on_dead.is_empty() && !on_live.is_empty());
    let body = |ls: &[&String]| ls.iter().map(|l| l.as_str()).collect::<Vec<_>>().join("\n");

    assert_told_to_retry(
        &post(&format!("{write}&consistency=one"), body(&on_dead)).await,
        "consistency",
    );

    let (status, text, _) = post(&write, body(&on_dead)).await;
    assert_eq!(status, 204, "spooled for the dead node: {text}");
    let report = health(&gw.url).await;
    let node = &report["components"][format!("node:{dead}")];
    assert_eq!(node["status"], "degraded", "{report}");
    assert!(
        node["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("spooled"),
        "{report}"
    );

    let (status, text, _) = post(&format!("{write}&consistency=all"), body(&on_live)).await;
    assert_eq!(
        status, 204,
        "lines the dead node does not own are stored at any level: {text}"
    );
    let stored = count_on_nodes(&env, &db.name, "SELECT count(used) FROM mem").await;
    assert_eq!(
        stored as usize,
        on_live.len(),
        "the live nodes' share, once"
    );
}

#[tokio::test]
async fn every_accepted_line_is_in_the_raw_topic_once_in_its_shard_keys_partition() {
    let env = StackEnv::load().expect("stack env (scripts/stack up)");
    let topic = KafkaTopic::create(&env, 4).await.expect("topic");
    let gw = start(&env, &[("TRIDENT_KAFKA_RAW_TOPIC", &topic.name)]).await;
    let db = InfluxDb::create(&env).await.expect("database");
    let write = format!("{}/write?db={}&rp=autogen", gw.url, db.name);

    // Two requests; every series appears in both, one bad line is dropped.
    let mut sent = Vec::new();
    for round in 0..2 {
        let mut body: Vec<String> = (0..40)
            .map(|i| {
                format!(
                    "disk,host=h{i} free={round}{i}i {}",
                    1_000 + round * 100 + i
                )
            })
            .collect();
        sent.extend(body.clone());
        body.push("disk,host=bad free=oops 1".to_owned());
        let (status, text, _) = post(&write, body.join("\n")).await;
        assert_eq!(status, 400, "{text}");
        assert!(text.contains("partial write"), "{text}");
    }

    let consumer = env
        .assigned_consumer(&topic.name, 4)
        .expect("assigned consumer");
    let mut received: Vec<String> = Vec::new();
    let mut partition_of: BTreeMap<String, i32> = BTreeMap::new();
    // Read until every line is in and nothing more came for 2 s: a line
    // produced twice would arrive after the count is reached.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut last = std::time::Instant::now();
    while std::time::Instant::now() < deadline
        && (received.len() < sent.len() || last.elapsed() < Duration::from_secs(2))
    {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        last = std::time::Instant::now();
        let message = message.expect("message");
        let key = String::from_utf8(message.key().expect("key").to_vec()).expect("utf8 key");
        let headers = message.headers().expect("headers");
        let header = |name: &str| {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(header("db").as_deref(), Some(db.name.as_str()));
        assert_eq!(header("rp").as_deref(), Some("autogen"));
        let payload = std::str::from_utf8(message.payload().expect("payload")).expect("utf8");
        let partition_of_key = |key: &[u8]| (trident_line_protocol::shard_hash(key) % 4) as i32;
        assert_eq!(
            partition_of_key(key.as_bytes()),
            message.partition(),
            "the record key's partition"
        );
        for line in payload.lines() {
            let parsed = trident_line_protocol::parse_lines(line.as_bytes())
                .next()
                .expect("a line")
                .expect("valid");
            let series = parsed.series_key();
            assert_eq!(
                partition_of_key(series.as_bytes()),
                message.partition(),
                "every line in the partition of its shard key"
            );
            // One series, one partition.
            let p = *partition_of
                .entry(series.clone())
                .or_insert(message.partition());
            assert_eq!(p, message.partition(), "{series} moved partitions");
            received.push(line.to_owned());
        }
    }
    received.sort();
    let mut expected = sent.clone();
    expected.sort();
    assert_eq!(received, expected, "every accepted line exactly once");
    assert!(
        partition_of.values().collect::<BTreeSet<_>>().len() > 1,
        "series spread over partitions"
    );
}

/// The gateway writes its own record batches: under each codec it
/// offers, librdkafka (the consumers' client) reads back every line with
/// its key, headers and an ingest-time timestamp; one it does not offer
/// stops the start with the setting's name.
#[tokio::test]
async fn raw_records_read_back_under_every_codec() {
    let env = StackEnv::load().expect("stack env (scripts/stack up)");
    for codec in ["none", "gzip", "lz4"] {
        let topic = KafkaTopic::create(&env, 2).await.expect("topic");
        let gw = start(
            &env,
            &[
                ("TRIDENT_KAFKA_RAW_TOPIC", &topic.name),
                ("TRIDENT_KAFKA_COMPRESSION", codec),
            ],
        )
        .await;
        let db = InfluxDb::create(&env).await.expect("database");
        let before_ms = chrono_ms();
        // Enough lines (over 4 KiB a partition) that values are sent as
        // pieces of their own when not compressed.
        let sent: Vec<String> = (0..300)
            .map(|i| {
                format!(
                    "codec,host=h{} n={i}i,pad=\"{}\" {}",
                    i % 7,
                    "x".repeat(40),
                    1_000 + i
                )
            })
            .collect();
        write_ok(&format!("{}/write?db={}", gw.url, db.name), sent.join("\n")).await;
        let consumer = env.assigned_consumer(&topic.name, 2).expect("consumer");
        let mut received = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while received.len() < sent.len() && std::time::Instant::now() < deadline {
            let Some(message) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let message = message.expect("message");
            let headers = message.headers().expect("headers");
            let db_header = headers.iter().find(|h| h.key == "db").and_then(|h| h.value);
            assert_eq!(db_header, Some(db.name.as_bytes()), "{codec}");
            let ts = message.timestamp().to_millis().expect("a timestamp");
            assert!(
                ts >= before_ms - 1_000 && ts <= chrono_ms() + 1_000,
                "{codec}: record time {ts} is the ingest time"
            );
            assert!(
                message.key().is_some_and(|k| k.starts_with(b"codec")),
                "{codec}"
            );
            let payload = std::str::from_utf8(message.payload().expect("payload")).expect("utf8");
            received.extend(payload.lines().map(str::to_owned));
        }
        received.sort();
        let mut expected = sent.clone();
        expected.sort();
        assert_eq!(received, expected, "{codec}: every line once");
    }
    let config = env.config(&[("TRIDENT_KAFKA_COMPRESSION", "zstd")]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let e = ingest_gateway::run(config, listener, Shutdown::new())
        .await
        .expect_err("zstd is not written by the gateway");
    assert!(e.to_string().contains("kafka.compression"), "{e}");
}

fn chrono_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// A broker that does not answer: after the delivery timeout the write is
/// spooled and answered 204, later writes are spooled at once. (The broker
/// killed and restarted under load: `tests/fault_broker.rs`.)
#[tokio::test]
async fn a_broker_that_is_down_gets_the_write_spooled() {
    let env = StackEnv::load().expect("stack env (scripts/stack up)");
    let gw = start(
        &env,
        &[
            ("TRIDENT_KAFKA_BROKERS", "127.0.0.1:9"),
            ("TRIDENT_KAFKA_DELIVERY_TIMEOUT", "6s"),
        ],
    )
    .await;
    let db = InfluxDb::create(&env).await.expect("database");
    let write = format!("{}/write?db={}", gw.url, db.name);
    write_ok(&write, "net,host=a bytes=1i 1").await;
    let started = std::time::Instant::now();
    write_ok(&write, "net,host=a bytes=2i 2").await;
    // Well under the 6 s a write that waited for the broker would take.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "once spooling, writes do not wait for the broker"
    );
    let report = health(&gw.url).await;
    assert_eq!(
        report["components"]["sink:kafka"]["status"], "degraded",
        "{report}"
    );
    assert!(
        report["components"]["sink:kafka"]["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("2 writes"),
        "{report}"
    );
}

/// The same bodies sent to a plain InfluxDB node and through the gateway
/// (replication 1, databases not created on the fly) get the same status
/// and body, and the gateway's three nodes together hold exactly what the
/// plain node holds.
#[tokio::test]
async fn the_gateway_is_indistinguishable_from_a_plain_node() {
    let env = StackEnv::load().expect("stack env (scripts/stack up)");
    let topic = KafkaTopic::create(&env, 4).await.expect("topic");
    let gw = start(
        &env,
        &[
            ("TRIDENT_GATEWAY_CREATE_DATABASES", "false"),
            ("TRIDENT_KAFKA_RAW_TOPIC", &topic.name),
        ],
    )
    .await;
    let plain = InfluxDb::create(&env)
        .await
        .expect("database for the plain node");
    let cluster = InfluxDb::create(&env)
        .await
        .expect("database for the gateway");
    let node = &env.influx_urls[0];

    let cases: &[(&str, &str)] = &[
        (
            "",
            "cpu,host=a,region=eu usage=1.5,count=3i,up=true,msg=\"ok\" 1700000000000000000\n",
        ),
        ("", "c\\ pu,t\\,k=v\\ x f\\=1=1,s=\"a\\\"b\" 5\n"),
        (
            "",
            "# comment\n\nmem,host=a used=1i,free=2i 10\nmem,host=b used=3i 10\n",
        ),
        (
            "",
            "disk,host=a v=1 1\ndisk,host=a v=oops 2\ndisk,host=b v=3 3\n",
        ),
        ("", "disk,host=c v=oops 4\n"),
        ("", "dup,host=a a=1,a=2 7\n"),
        ("", "txt,host=a s=\"two\nlines\" 8\n"),
        ("&precision=s", "prec,host=s v=1 1700000000\n"),
        ("&precision=ms", "prec,host=ms v=2 1700000000123\n"),
        ("&precision=u", "prec,host=u v=3 1700000000123456\n"),
        ("&precision=n", "prec,host=n v=4 1700000000123456789\n"),
        ("&precision=ns", "prec,host=ns v=5 1700000000123456780\n"),
        ("&precision=m", "prec,host=m v=6 28333333\n"),
        ("&precision=h", "prec,host=h v=7 472222\n"),
        // 1.x reads any other precision as nanoseconds.
        ("&precision=x", "prec,host=x v=8 1700000000123456700\n"),
        // The same point twice: the last one stays.
        ("", "twice,host=a v=1 10\ntwice,host=a v=2 10\n"),
        ("", "cpu time=1 9\n"),
        // Unsigned integers: whatever this node makes of them.
        ("", "uns,host=a v=5u 11\n"),
        ("", ""),
    ];
    for (params, body) in cases {
        let ours = post(
            &format!("{}/write?db={}{params}", gw.url, cluster.name),
            body.to_string(),
        )
        .await;
        let theirs = post(
            &format!("{node}/write?db={}{params}", plain.name),
            body.to_string(),
        )
        .await;
        assert_eq!((ours.0, &ours.1), (theirs.0, &theirs.1), "{body:?}");
    }
    for path in ["/write", "/write?db=nosuchdb"] {
        let ours = post(&format!("{}{path}", gw.url), "cpu v=1").await;
        let theirs = post(&format!("{node}{path}"), "cpu v=1").await;
        assert_eq!((ours.0, &ours.1), (theirs.0, &theirs.1), "{path}");
    }

    // Stored data: every row of every measurement, from the plain node and
    // from the union of the gateway's nodes. `SELECT *` over several
    // measurements returns the union of their columns, which differs from
    // node to node: compare the non-null values only.
    let rows = |json: serde_json::Value| -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let all_series = json["results"][0]["series"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for series in all_series {
            let columns: Vec<String> = series["columns"]
                .as_array()
                .map(|c| {
                    c.iter()
                        .map(|v| v.as_str().unwrap_or_default().to_owned())
                        .collect()
                })
                .unwrap_or_default();
            for row in series["values"].as_array().cloned().unwrap_or_default() {
                let values: Vec<String> = columns
                    .iter()
                    .zip(row.as_array().cloned().unwrap_or_default())
                    .filter(|(_, v)| !v.is_null())
                    .map(|(c, v)| format!("{c}={v}"))
                    .collect();
                out.insert(format!("{} {}", series["name"], values.join(" ")));
            }
        }
        out
    };
    // Every point once in the cluster (replication 1): the nodes' rows
    // together, duplicates kept, are the plain node's.
    let expected: Vec<String> = rows(
        influx_query(node, "SELECT * FROM /.*/", Some(&plain.name))
            .await
            .expect("query"),
    )
    .into_iter()
    .collect();
    let mut stored = Vec::new();
    for url in &env.influx_urls {
        stored.extend(rows(
            influx_query(url, "SELECT * FROM /.*/", Some(&cluster.name))
                .await
                .expect("query"),
        ));
    }
    stored.sort();
    assert!(expected.len() >= 10, "{expected:?}");
    assert_eq!(stored, expected);

    // And stored with the same types: JSON shows 3i and 3.0 alike, the
    // field keys do not.
    let field_types = |json: serde_json::Value| -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for series in json["results"][0]["series"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            for row in series["values"].as_array().cloned().unwrap_or_default() {
                out.insert(format!("{} {} {}", series["name"], row[0], row[1]));
            }
        }
        out
    };
    let expected_types = field_types(
        influx_query(node, "SHOW FIELD KEYS", Some(&plain.name))
            .await
            .expect("query"),
    );
    let mut stored_types = BTreeSet::new();
    for url in &env.influx_urls {
        stored_types.extend(field_types(
            influx_query(url, "SHOW FIELD KEYS", Some(&cluster.name))
                .await
                .expect("query"),
        ));
    }
    for kind in ["float", "integer", "boolean", "string"] {
        assert!(
            expected_types
                .iter()
                .any(|t| t.ends_with(&format!("\"{kind}\""))),
            "the corpus stores a {kind} field: {expected_types:?}"
        );
    }
    assert_eq!(stored_types, expected_types);

    // A write InfluxDB answers 404 was not taken anywhere: the raw topic
    // holds the database's lines only.
    let consumer = env
        .assigned_consumer(&topic.name, 4)
        .expect("assigned consumer");
    let mut databases = BTreeSet::new();
    let mut last = std::time::Instant::now();
    while last.elapsed() < Duration::from_secs(3) {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        last = std::time::Instant::now();
        let message = message.expect("message");
        let headers = message.headers().expect("headers");
        let db = headers
            .iter()
            .find(|h| h.key == "db")
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned());
        databases.insert(db.unwrap_or_default());
    }
    assert_eq!(databases, BTreeSet::from([cluster.name.clone()]));
}

/// Overload: with one write allowed at a time, a write that waits on a
/// node that never answers makes the next one a 503 with `Retry-After`;
/// once it is done (spooled after the timeout), writes are taken again.
#[tokio::test]
async fn writes_beyond_the_inflight_limit_are_told_to_retry() {
    let env = StackEnv::load().expect("stack env (scripts/stack up)");
    let (_gw, write) =
        start_on_hole_node(&env, &[("TRIDENT_GATEWAY_MAX_INFLIGHT_WRITES", "1")]).await;
    let slow = tokio::spawn({
        let write = write.clone();
        async move { post(&write, "cpu v=1 1").await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_told_to_retry(&post(&write, "cpu v=2 2").await, "max_inflight_writes");
    let (status, text, _) = slow.await.expect("slow write");
    assert_eq!(status, 204, "spooled once the node timed out: {text}");
    write_ok(&write, "cpu v=3 3").await;
}

/// The `writeReq` counter of each node's `/debug/vars`, summed.
async fn node_write_requests(env: &StackEnv) -> u64 {
    let mut total = 0;
    for node in &env.influx_urls {
        let vars: serde_json::Value = reqwest::get(format!("{node}/debug/vars"))
            .await
            .expect("debug/vars")
            .json()
            .await
            .expect("json");
        // Keyed "httpd:<bind address>".
        let httpd = vars
            .as_object()
            .and_then(|o| o.values().find(|v| v["name"] == "httpd"))
            .expect("httpd statistics");
        total += httpd["values"]["writeReq"].as_u64().expect("writeReq");
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_small_writes_share_node_requests_and_keep_their_own_answers() {
    let env = StackEnv::load().expect("stack env (scripts/stack up)");
    // One request at a time per node, lingering, so writes that arrive
    // together are sure to share one.
    let topic = KafkaTopic::create(&env, 2).await.expect("topic");
    let gw = start(
        &env,
        &[
            ("TRIDENT_INFLUX_NODE_REQUESTS", "1"),
            ("TRIDENT_INFLUX_BATCH_LINGER", "50ms"),
            ("TRIDENT_KAFKA_RAW_TOPIC", &topic.name),
        ],
    )
    .await;
    let db = InfluxDb::create(&env).await.expect("database");
    let url = format!("{}/write?db={}", gw.url, db.name);
    // `v` of `m` is an integer from now on: a float is a type conflict.
    write_ok(&url, "m,k=x v=1i 1").await;
    let before = node_write_requests(&env).await;

    let writes: u64 = 120;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writes {
        let url = url.clone();
        tasks.spawn(async move {
            let body: Vec<String> = (0..5)
                .map(|i| format!("cpu,w=w{w},i=i{i} usage={w}.{i} {}", 1_000 + w * 10 + i))
                .collect();
            (w, post(&url, body.join("\n")).await)
        });
    }
    // One write among them that storage refuses in part.
    let conflict = {
        let url = url.clone();
        tokio::spawn(async move { post(&url, "m,k=x v=2i 2\nm,k=x v=2.5 3").await })
    };
    while let Some(joined) = tasks.join_next().await {
        let (w, (status, text, _)) = joined.expect("task");
        assert_eq!(status, 204, "write {w}: {text}");
    }
    let (status, text, _) = conflict.await.expect("task");
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("partial write: field type conflict") && text.contains("dropped=1"),
        "{text}"
    );
    let requests = node_write_requests(&env).await - before;

    let stored = count_on_nodes(&env, &db.name, "SELECT count(usage) FROM cpu").await;
    let rf = gw.config.influx.replication as u64;
    assert_eq!(stored, 5 * writes * rf, "every point stored RF times");
    // Without batching each write is a request to every node it touches
    // (5 series over 3 nodes: nearly always all three).
    println!("{writes} writes (+1) became {requests} node requests");
    assert!(
        requests < writes,
        "{requests} node requests for {writes} writes"
    );

    // The raw topic: every line once, in fewer records than writes (each
    // write alone would be at least one record).
    let consumer = env.assigned_consumer(&topic.name, 2).expect("consumer");
    let mut lines: BTreeMap<String, usize> = BTreeMap::new();
    let mut records = 0u64;
    let mut last_record = std::time::Instant::now();
    while lines.len() < 5 * writes as usize + 3 && last_record.elapsed() < Duration::from_secs(60) {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        last_record = std::time::Instant::now();
        records += 1;
        let message = message.expect("message");
        let payload = std::str::from_utf8(message.payload().expect("payload")).expect("utf8");
        for line in payload.lines() {
            *lines.entry(line.to_owned()).or_default() += 1;
        }
    }
    println!("{} raw-topic records for {} writes", records, writes + 2);
    assert_eq!(
        lines.len(),
        5 * writes as usize + 3,
        "every line in the topic"
    );
    assert!(lines.values().all(|&n| n == 1), "no line twice");
    assert!(records < writes, "{records} records for {writes} writes");
}

/// A write larger than a broker takes in one record (librdkafka's
/// `message.max.bytes`, 1 MB) with every line in one partition: it must
/// reach the raw topic, in order, not sit in the spool for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_larger_than_a_record_reaches_the_raw_topic_in_order() {
    let env = StackEnv::load().expect("stack env (scripts/stack up)");
    let topic = KafkaTopic::create(&env, 2).await.expect("topic");
    let gw = start(&env, &[("TRIDENT_KAFKA_RAW_TOPIC", &topic.name)]).await;
    let db = InfluxDb::create(&env).await.expect("database");
    // One series: one shard key, one partition; about 2.5 MB.
    let lines: Vec<String> = (0..40_000)
        .map(|i| {
            format!(
                "big,host=one,pad=xxxxxxxxxxxxxxxxxxxx seq={i}i {}",
                1_000 + i
            )
        })
        .collect();
    write_ok(
        &format!("{}/write?db={}", gw.url, db.name),
        lines.join("\n"),
    )
    .await;

    let consumer = env.assigned_consumer(&topic.name, 2).expect("consumer");
    let mut seqs: Vec<u64> = Vec::new();
    let mut records = 0;
    let mut last_record = std::time::Instant::now();
    while seqs.len() < lines.len() && last_record.elapsed() < Duration::from_secs(60) {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        last_record = std::time::Instant::now();
        let message = message.expect("message");
        records += 1;
        let payload = std::str::from_utf8(message.payload().expect("payload")).expect("utf8");
        assert!(
            payload.len() <= 1_000_000,
            "a record of {} bytes",
            payload.len()
        );
        for line in payload.lines() {
            let seq = line
                .split_once("seq=")
                .and_then(|(_, rest)| rest.split_once('i'))
                .and_then(|(n, _)| n.parse::<u64>().ok())
                .expect("a big line");
            seqs.push(seq);
        }
    }
    let expected: Vec<u64> = (0..40_000).collect();
    assert_eq!(
        seqs.len(),
        expected.len(),
        "lines in the topic ({records} records)"
    );
    assert_eq!(seqs, expected, "in the order written");
    let health = health(&gw.url).await;
    assert_eq!(
        health["components"]["sink:kafka"]["status"], "up",
        "nothing left in the spool: {health}"
    );
}

/// Whether `db` is listed by `SHOW DATABASES` on the node at `url`.
async fn has_database(url: &str, db: &str) -> bool {
    let json = influx_query(url, "SHOW DATABASES", None)
        .await
        .expect("query");
    json["results"][0]["series"][0]["values"]
        .as_array()
        .is_some_and(|rows| rows.iter().any(|r| r[0].as_str() == Some(db)))
}

/// A database's first write creates it on every node, owners or not; a
/// node that loses it (comes back with empty storage, or an operator drops
/// it there) gets it again and the write is stored, not refused.
#[tokio::test]
async fn a_database_is_made_on_every_node_and_again_where_it_was_lost() {
    let env = StackEnv::load().expect("stack env (scripts/stack up)");
    // Replication 1: one line has one owner, the other nodes none.
    let gw = start(&env, &[("TRIDENT_INFLUX_REPLICATION", "1")]).await;
    // Not created beforehand; dropped everywhere at the end.
    let db = InfluxDb {
        name: trident_e2e::unique_name("db"),
        urls: env.influx_urls.clone(),
    };
    let write = format!("{}/write?db={}", gw.url, db.name);
    let line = "cpu,host=first v=1 1700000000000000000";
    write_ok(&write, line).await;
    let owner = owners(&gw.config, &db.name, line)
        .into_iter()
        .next()
        .expect("an owner");
    on_every_node(
        &env.influx_urls,
        &db.name,
        &format!("first write; owner {owner}"),
    )
    .await;

    // The owner loses the database; the next write to it is stored there.
    influx_query(&owner, &format!("DROP DATABASE \"{}\"", db.name), None)
        .await
        .expect("drop");
    let again = "cpu,host=first v=2 1700000000000000001";
    write_ok(&write, again).await;
    let json = influx_query(&owner, "SELECT count(v) FROM cpu", Some(&db.name))
        .await
        .expect("query");
    assert_eq!(
        json["results"][0]["series"][0]["values"][0][1], 1,
        "the line after the loss, on its owner {owner}: {json}"
    );

    // Dropped through the gateway (on every node) while its batchers are
    // busy: the next write makes it on every node again, not only on the
    // owner of its line.
    influx_query(&gw.url, &format!("DROP DATABASE \"{}\"", db.name), None)
        .await
        .expect("drop through the gateway");
    write_ok(&write, "cpu,host=first v=3 1700000000000000002").await;
    on_every_node(
        &env.influx_urls,
        &db.name,
        &format!("after DROP DATABASE through the gateway; owner {owner}"),
    )
    .await;
}

/// Waits up to 30 s for `db` on every node of `nodes`; `when` says which
/// step of the test expected it.
async fn on_every_node(nodes: &[String], db: &str, when: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for node in nodes {
        while !has_database(node, db).await {
            assert!(
                std::time::Instant::now() < deadline,
                "{db} not on {node} within 30 s ({when})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `gateway.required`: with the raw topic's spool full, writes are 503 by
/// default; with only `influx` required they are 204, stored on the nodes,
/// and the raw topic's failures are counted.
#[tokio::test]
async fn a_sink_left_out_of_required_does_not_fail_writes() {
    let env = StackEnv::load().expect("stack env (scripts/stack up)");
    let db = InfluxDb::create(&env).await.expect("database");
    // A broker nobody listens on and the smallest spool (1 MiB): a few
    // writes of 300 KB fill it.
    let dead_broker = [
        ("TRIDENT_KAFKA_BROKERS", "127.0.0.1:9"),
        ("TRIDENT_KAFKA_DELIVERY_TIMEOUT", "1s"),
        ("TRIDENT_GATEWAY_SPOOL_MAX_BYTES", "1048576"),
    ];
    let body = |round: usize, n: usize| -> String {
        (0..3_000)
            .map(|i| {
                format!(
                    "req,round=r{round},n=n{n},seq=s{i} payload=\"{}\" {}",
                    "x".repeat(60),
                    1_700_000_000_000_000_000i64 + i as i64
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut rounds = Vec::new();
    for (round, required) in [(0, None), (1, Some("influx"))] {
        let mut extra = dead_broker.to_vec();
        if let Some(required) = required {
            extra.push(("TRIDENT_GATEWAY_REQUIRED", required));
        }
        let gw = start(&env, &extra).await;
        let write = format!("{}/write?db={}", gw.url, db.name);
        let mut statuses = Vec::new();
        for n in 0..6 {
            let (status, text, _) = post(&write, body(round, n)).await;
            assert!(status == 204 || status == 503, "{status}: {text}");
            statuses.push(status);
        }
        rounds.push((gw, statuses));
    }
    let (_, by_default) = &rounds[0];
    assert!(
        by_default.contains(&503),
        "with both sinks required, a full raw-topic spool is a 503: {by_default:?}"
    );
    let (gw, influx_only) = &rounds[1];
    assert!(
        influx_only.iter().all(|&s| s == 204),
        "with only influx required, every write is 204: {influx_only:?}"
    );
    let stored = count_on_nodes(
        &env,
        &db.name,
        "SELECT count(payload) FROM req WHERE round = 'r1'",
    )
    .await;
    assert_eq!(stored, 6 * 3_000, "every line on its node (replication 1)");
    let metrics = trident_e2e::get_text(&format!("{}/metrics", gw.url)).await;
    assert!(
        metrics.contains("trident_gateway_sink_failures_total{sink=\"kafka\"}"),
        "{metrics}"
    );
    // The lines of the 503'd writes are not counted as accepted.
    assert!(
        metrics.contains("trident_gateway_lines_total{outcome=\"unavailable\"}"),
        "{metrics}"
    );
}

/// Strategy rules: the lines of a measurement placed by
/// `measurement+tags(app)` land together, on the nodes the ring gives
/// that key; another measurement of the same write by the default
/// `series`, spread over the nodes.
#[tokio::test]
async fn strategy_rules_place_lines_by_their_measurement() {
    let env = StackEnv::load().expect("stack env (scripts/stack up)");
    let mut config = env.config(&[("TRIDENT_INFLUX_REPLICATION", "2")]);
    config.influx.rules = vec![trident_cluster::StrategyRule {
        database: None,
        measurement: Some("http_requests".into()),
        strategy: "measurement+tags(app)".into(),
    }];
    let gw = start_with(config).await;
    let db = InfluxDb::create(&env).await.expect("database");
    let mut lines = Vec::new();
    for i in 0..60 {
        lines.push(format!(
            "http_requests,app=a{},host=h{i} latency={i}i {}",
            i % 3,
            1_700_000_000_000_000_000i64 + i
        ));
        lines.push(format!(
            "cpu,host=h{i} usage={i}.5 {}",
            1_700_000_000_000_000_000i64 + i
        ));
    }
    write_ok(
        &format!("{}/write?db={}", gw.url, db.name),
        lines.join("\n"),
    )
    .await;

    // Which hosts of each measurement each node holds.
    let mut held: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for node in &env.influx_urls {
        for measurement in ["http_requests", "cpu"] {
            let json = influx_query(
                node,
                &format!("SELECT * FROM {measurement}"),
                Some(&db.name),
            )
            .await
            .expect("query");
            let columns = json["results"][0]["series"][0]["columns"].clone();
            let host = columns
                .as_array()
                .and_then(|c| c.iter().position(|v| v == "host"));
            let hosts = json["results"][0]["series"][0]["values"]
                .as_array()
                .map(|rows| {
                    rows.iter()
                        .filter_map(|r| r[host?].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            held.insert(
                (
                    node.trim_end_matches('/').to_owned(),
                    measurement.to_owned(),
                ),
                hosts,
            );
        }
    }
    let mut app_owners: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut cpu_owner_sets = BTreeSet::new();
    for line in &lines {
        let parsed = trident_line_protocol::parse_lines(line.as_bytes())
            .next()
            .expect("a line")
            .expect("valid");
        let measurement = parsed.measurement().as_str().into_owned();
        let host = parsed.tag("host").expect("host").as_str().into_owned();
        let want = owners(&gw.config, &db.name, line);
        assert_eq!(want.len(), 2);
        for node in &env.influx_urls {
            let node = node.trim_end_matches('/').to_owned();
            let has = held[&(node.clone(), measurement.clone())].contains(&host);
            assert_eq!(has, want.contains(&node), "{line} on {node}");
        }
        if measurement == "http_requests" {
            let app = parsed.tag("app").expect("app").as_str().into_owned();
            let seen = app_owners.entry(app).or_insert_with(|| want.clone());
            assert_eq!(seen, &want, "one app, one pair of nodes: {line}");
        } else {
            cpu_owner_sets.insert(want);
        }
    }
    assert_eq!(app_owners.len(), 3);
    assert!(
        cpu_owner_sets.len() > 1,
        "series placement spreads the cpu lines: {cpu_owner_sets:?}"
    );
}

/// Consistency levels with replication 2 and one owner down: `one` is met
/// by the live replica, `quorum` (2 of 2) and `all` are not (503, the
/// copy for the dead node still spooled), `any` takes the spool.
#[tokio::test]
async fn consistency_levels_count_stored_replicas() {
    let env = StackEnv::load().expect("stack env (scripts/stack up)");
    let gw = start_with_dead_node(&env, &[("TRIDENT_INFLUX_REPLICATION", "2")]).await;
    let dead = DEAD;
    let db = InfluxDb::create(&env).await.expect("database");
    let write = format!("{}/write?db={}", gw.url, db.name);
    let on_dead: Vec<String> = (0..200)
        .map(|i| format!("mem,host=h{i} used={i}i {}", i + 1))
        .filter(|l| owners(&gw.config, &db.name, l).contains(dead))
        .collect();
    assert!(!on_dead.is_empty());
    let body = on_dead.join("\n");
    for (level, want) in [("one", 204), ("quorum", 503), ("all", 503), ("any", 204)] {
        let (status, text, _) = post(&format!("{write}&consistency={level}"), body.clone()).await;
        assert_eq!(status, want, "consistency={level}: {text}");
    }
    // Every write stored its live replica (the 503s too: they say the
    // dead node's copies are queued, not that nothing was stored).
    let stored = count_on_nodes(&env, &db.name, "SELECT count(used) FROM mem").await;
    assert_eq!(stored as usize, on_dead.len(), "one live copy of each line");
}

/// A dead node's spool that is full turns its writes into 503 with
/// `Retry-After`; writes the live nodes own alone are still taken.
#[tokio::test]
async fn a_full_node_spool_is_a_503() {
    let env = StackEnv::load().expect("stack env (scripts/stack up)");
    let gw = start_with_dead_node(&env, &[("TRIDENT_GATEWAY_SPOOL_MAX_BYTES", "1048576")]).await;
    let dead = DEAD;
    let db = InfluxDb::create(&env).await.expect("database");
    let write = format!("{}/write?db={}", gw.url, db.name);
    let (on_dead, on_live): (Vec<String>, Vec<String>) = (0..8_000)
        .map(|i| format!("big,host=h{i} pad=\"{}\" {}", "y".repeat(1_000), i + 1))
        .partition(|l| owners(&gw.config, &db.name, l).contains(dead));
    // ~2 000 lines of ~1 KB for the dead node: 2 MB in 8 writes, twice
    // what its spool holds.
    let mut statuses = Vec::new();
    for chunk in on_dead.chunks(on_dead.len() / 8 + 1) {
        let (status, text, headers) = post(&write, chunk.join("\n")).await;
        if status == 503 {
            assert!(headers.contains_key("retry-after"), "{text}");
        }
        statuses.push(status);
    }
    assert_eq!(statuses.first(), Some(&204), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&503), "{statuses:?}");
    let (status, text, _) = post(&write, on_live[..100].join("\n")).await;
    assert_eq!(status, 204, "the live nodes' lines: {text}");
}

/// Overload in bytes: with room for two largest bodies, two large writes
/// waiting on a node that never answers make a third large one a 503 with
/// `Retry-After`, while a small one still fits; once they are done
/// (spooled after the timeout), large writes are taken again.
#[tokio::test]
async fn bytes_beyond_the_inflight_limit_are_told_to_retry() {
    let env = StackEnv::load().expect("stack env (scripts/stack up)");
    let (_gw, write) = start_on_hole_node(
        &env,
        &[
            ("TRIDENT_GATEWAY_MAX_BODY_BYTES", "1000000"),
            ("TRIDENT_GATEWAY_MAX_INFLIGHT_BYTES", "2000000"),
        ],
    )
    .await;
    // ~700 KB each, uncompressed (held once): two hold 1.4 of the 2 MB.
    let large = |n: usize| -> String {
        (0..7_000)
            .map(|i| format!("big,w=w{n} i={i}i,pad=\"{}\" {}", "z".repeat(70), i + 1))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let slow: Vec<_> = (1..=2)
        .map(|n| {
            let (write, body) = (write.clone(), large(n));
            tokio::spawn(async move { post(&write, body).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_told_to_retry(&post(&write, large(3)).await, "max_inflight_bytes");
    // Compressed, the same write is small on the wire (about 30 KB) and is
    // counted inflated: the same answer. (That it stops inflating once
    // refused is the unit tests' to show: the answer is the same.)
    assert_told_to_retry(
        &post_gzip(&write, large(3).as_bytes()).await,
        "max_inflight_bytes",
    );
    let small = tokio::spawn({
        let write = write.clone();
        async move { post(&write, "cpu v=1 1").await }
    });
    for slow in slow {
        let (status, text, _) = slow.await.expect("slow write");
        assert_eq!(status, 204, "spooled once the node timed out: {text}");
    }
    let (status, text, _) = small.await.expect("small write");
    assert_eq!(status, 204, "a small write fits beside large ones: {text}");
    write_ok(&write, large(4)).await;
}

/// The shared stack's spare node (`influx4`), started with InfluxDB
/// settings `vars` (e.g. `INFLUXDB_HTTP_MAX_BODY_SIZE`); killed on drop.
/// No other test of the shared stack uses it.
struct Spare {
    url: String,
}

impl Spare {
    fn start(env: &StackEnv, vars: &[(&str, &str)]) -> Self {
        let first = env.influx_urls.first().expect("a node");
        let port: u16 = first
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("the first node's port");
        let spare = Spare {
            url: format!("http://127.0.0.1:{}", port + 3),
        };
        spare.restart(vars);
        spare
    }

    /// Kills the node and starts it again with `vars`.
    fn restart(&self, vars: &[(&str, &str)]) {
        stack_script(&["kill", "influx4"], &[]);
        assert!(
            stack_script(&["start", "influx4"], vars),
            "scripts/stack start influx4 failed"
        );
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        stack_script(&["kill", "influx4"], &[]);
    }
}

/// Runs `scripts/stack args` on the shared stack; whether it succeeded.
fn stack_script(args: &[&str], vars: &[(&str, &str)]) -> bool {
    std::process::Command::new(trident_e2e::repo_root().join("scripts/stack"))
        .args(args)
        .envs(vars.iter().copied())
        .output()
        .is_ok_and(|out| out.status.success())
}

/// A node that refuses writes for its own set-up (a body limit below the
/// gateway's requests: 413) loses none of them: they are acknowledged, wait
/// in its spool while `/health` says so, and reach the node once it takes
/// them, also when it takes each write but not the replay's joined request.
/// Only a 400 (the data itself) is final.
#[tokio::test]
async fn points_a_node_refuses_for_its_setup_wait_in_its_spool() {
    let env = StackEnv::load().expect("stack env (scripts/stack up)");
    let spare = Spare::start(&env, &[("INFLUXDB_HTTP_MAX_BODY_SIZE", "2048")]);
    let gw = start(
        &env,
        &[
            ("TRIDENT_INFLUX_URLS", spare.url.as_str()),
            ("TRIDENT_INFLUX_REPLICATION", "1"),
            ("TRIDENT_GATEWAY_REPLAY_MAX_BACKOFF", "500ms"),
            // Compressed, the requests would fit under the limit.
            ("TRIDENT_INFLUX_GZIP", "false"),
            // One request at a time, lingering: concurrent writes join.
            ("TRIDENT_INFLUX_NODE_REQUESTS", "1"),
            ("TRIDENT_INFLUX_BATCH_LINGER", "50ms"),
        ],
    )
    .await;
    let db = InfluxDb {
        name: trident_e2e::unique_name("db"),
        urls: vec![spare.url.clone()],
    };
    let write = format!("{}/write?db={}", gw.url, db.name);
    // 100 lines, ~4 KB: over the first limit, under the second.
    let body = |w: usize| {
        let body = (0..100)
            .map(|i| format!("mem,host=h{i},w=w{w} used={i}i {}", 1_700_000_000 + i))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(body.len() > 2048 && body.len() < 8192);
        body
    };
    let stored = |json: serde_json::Value| json["results"][0]["series"][0]["values"][0][1].as_u64();
    let count = || async {
        influx_query(&spare.url, "SELECT count(used) FROM mem", Some(&db.name))
            .await
            .ok()
            .and_then(stored)
            .unwrap_or(0)
    };
    let gw_url = gw.url.clone();
    let all_arrive = |expected: u64, when: &'static str| {
        let (gw_url, count) = (gw_url.clone(), &count);
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                let n = count().await;
                if n == expected {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{n} of {expected} acknowledged points on the node {when}: {}",
                    health(&gw_url).await
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };

    for w in 0..5 {
        write_ok(&write, body(w)).await;
    }
    let report = health(&gw.url).await;
    let node = &report["components"][format!("node:{}", spare.url)];
    assert_eq!(node["status"], "degraded", "{report}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(count().await, 0, "the node took none of them yet");

    // The node's limit is raised above each write but below the five
    // together, which is what a replay joins: the spool drains one write
    // at a time and every point arrives.
    spare.restart(&[("INFLUXDB_HTTP_MAX_BODY_SIZE", "8192")]);
    all_arrive(500, "after its limit was raised").await;
    let report = health(&gw.url).await;
    assert_eq!(
        report["components"][format!("node:{}", spare.url)]["status"],
        "up",
        "{report}"
    );

    // Concurrent writes joined into one request over the limit: each goes
    // alone instead (spooled joined, it would be too large on every replay).
    let batched = || async {
        let metrics = trident_e2e::get_text(&format!("{}/metrics", gw.url)).await;
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix("trident_gateway_node_batched_writes_total ")?
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0)
    };
    let joined_before: f64 = batched().await;
    let writes: Vec<_> = (5..25)
        .map(|w| {
            let (write, body) = (write.clone(), body(w));
            tokio::spawn(async move { post(&write, body).await })
        })
        .collect();
    for w in writes {
        let (status, text, _) = w.await.expect("write");
        assert_eq!(status, 204, "{text}");
    }
    assert!(
        batched().await > joined_before,
        "no write was joined with another"
    );
    all_arrive(2_500, "after writes joined over its limit").await;
}
