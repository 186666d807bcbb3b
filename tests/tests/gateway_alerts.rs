//! The gateway's alert path against the real broker: the alert topic gets
//! exactly the points the rules file's selectors match (keyed by
//! measurement), follows edits of the file, keeps the previous rules when
//! an edit is invalid, and `gateway.alerts = "all"` sends everything; a
//! dead alert broker costs points, never writes; SIGTERM flushes what is
//! still queued.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::BaseConsumer;
use trident_e2e::{InfluxDb, KafkaTopic, ServiceProcess, StackEnv, unique_name};
use trident_service::config::{Config, Service};
use trident_service::shutdown::Shutdown;

struct Gateway {
    url: String,
    shutdown: Shutdown,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

fn config(env: &StackEnv, extra: &[(&str, &str)]) -> Config {
    let config = env.config(extra);
    config.validate(Service::Gateway).expect("valid config");
    config
}

async fn start(config: Config) -> Gateway {
    let (url, shutdown) = trident_e2e::spawn_gateway(config).await;
    Gateway { url, shutdown }
}

const RULES: &str = r#"
[[rules]]
name = "WebCpu"
measurement = "cpu"
field = "usage_user"
where = [{ tag = "host", op = "=~", value = "^web-" }]
op = ">"
threshold = 90

[[rules]]
name = "Slow"
measurement = "http"
field = "latency_ms"
aggregate = "p95"
window = "1m"
op = ">"
threshold = 250
"#;

/// Reads lines from the topic until `want` of them arrived and nothing
/// more for 2 s (or 60 s in all), so that a stray or repeated line shows,
/// checking that each measurement stays on one partition and is the key.
fn read_lines(consumer: &BaseConsumer, want: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut partition_of: BTreeMap<String, i32> = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut last = std::time::Instant::now();
    while std::time::Instant::now() < deadline
        && (lines.len() < want || last.elapsed() < Duration::from_secs(2))
    {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        last = std::time::Instant::now();
        let message = message.expect("message");
        let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
        let p = *partition_of
            .entry(key.clone())
            .or_insert(message.partition());
        assert_eq!(p, message.partition(), "{key} moved partitions");
        let payload = String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
        for line in payload.lines() {
            let measurement = trident_line_protocol::parse_lines(line.as_bytes())
                .next()
                .and_then(Result::ok)
                .map(|l| l.measurement().as_str().into_owned());
            assert_eq!(
                measurement.as_deref(),
                Some(key.as_str()),
                "the key is the measurement"
            );
            lines.push(line.to_owned());
        }
    }
    lines
}

async fn write_rules(path: &Path, text: &str) {
    // A different modification time than the last write, on any filesystem.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(path, text).expect("write rules");
}

async fn health(url: &str) -> serde_json::Value {
    trident_e2e::wait_for_json(&format!("{url}/health"), Duration::ZERO, |_| true).await
}

#[tokio::test]
async fn the_alert_topic_gets_exactly_the_points_the_rules_match() {
    let env = StackEnv::load().expect("stack env (scripts/stack up)");
    let topic = KafkaTopic::create(&env, 3).await.expect("topic");
    let dir = std::env::temp_dir().join(unique_name("rules"));
    std::fs::create_dir_all(&dir).expect("dir");
    let rules = dir.join("rules.toml");
    std::fs::write(&rules, RULES).expect("rules");
    let gw = start(config(
        &env,
        &[
            ("TRIDENT_KAFKA_ALERT_TOPIC", &topic.name),
            ("TRIDENT_ALERTER_RULES", &rules.to_string_lossy()),
        ],
    ))
    .await;
    let db = InfluxDb::create(&env).await.expect("database");
    let write = format!("{}/write?db={}", gw.url, db.name);
    let consumer = env.assigned_consumer(&topic.name, 3).expect("consumer");

    let body = [
        "cpu,host=web-1 usage_user=95,usage_system=1 1",
        "cpu,host=db-1 usage_user=95 2",
        "cpu,host=web-2 usage_system=3 3",
        "http,app=shop latency_ms=300i 4",
        "http,app=shop status=200i 5",
        "mem,host=web-1 used=1i 6",
        "cpu,host=web-3 usage_user=1 7",
    ];
    let answer = trident_e2e::post_any(&write, body.join("\n"))
        .await
        .expect("write");
    assert_eq!(answer.status, 204, "{}", answer.body);
    let mut got = read_lines(&consumer, 3);
    got.sort();
    assert_eq!(
        got,
        [
            "cpu,host=web-1 usage_user=95,usage_system=1 1",
            "cpu,host=web-3 usage_user=1 7",
            "http,app=shop latency_ms=300i 4",
        ],
        "exactly the points a rule looks at"
    );
    assert_eq!(
        health(&gw.url).await["components"]["sink:alerts"]["detail"],
        "points matching 2 rules"
    );

    // An edit adds a rule: followed without a restart.
    let more = format!(
        "{RULES}\n[[rules]]\nname = \"Mem\"\nmeasurement = \"mem\"\nfield = \"used\"\nabsent_for = \"1m\"\n"
    );
    write_rules(&rules, &more).await;
    let report = trident_e2e::wait_for_json(
        &format!("{}/health", gw.url),
        Duration::from_secs(10),
        |h| h["components"]["sink:alerts"]["detail"] == "points matching 3 rules",
    )
    .await;
    assert_eq!(
        report["components"]["sink:alerts"]["detail"], "points matching 3 rules",
        "{report}"
    );
    let answer = trident_e2e::post_any(&write, "mem,host=a used=2i 8\ndisk,host=a free=1i 9")
        .await
        .expect("write");
    assert_eq!(answer.status, 204, "{}", answer.body);
    assert_eq!(read_lines(&consumer, 1), ["mem,host=a used=2i 8"]);

    // An invalid edit: reported with its position, the three rules stay.
    write_rules(&rules, &format!("{more}\n[[rules]]\nname = \"Bad\"\n")).await;
    let report = trident_e2e::wait_for_json(
        &format!("{}/health", gw.url),
        Duration::from_secs(10),
        |h| h["components"]["sink:alerts"]["status"] == "degraded",
    )
    .await;
    let detail = report["components"]["sink:alerts"]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        detail.contains("rules.toml:") && detail.contains("keeping 3 rules"),
        "{report}"
    );
    let answer = trident_e2e::post_any(&write, "mem,host=b used=3i 10")
        .await
        .expect("write");
    assert_eq!(answer.status, 204, "{}", answer.body);
    assert_eq!(read_lines(&consumer, 1), ["mem,host=b used=3i 10"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn all_sends_every_point_and_an_invalid_rules_file_stops_the_start() {
    let env = StackEnv::load().expect("stack env (scripts/stack up)");
    let topic = KafkaTopic::create(&env, 2).await.expect("topic");
    let gw = start(config(
        &env,
        &[
            ("TRIDENT_KAFKA_ALERT_TOPIC", &topic.name),
            ("TRIDENT_GATEWAY_ALERTS", "all"),
        ],
    ))
    .await;
    let db = InfluxDb::create(&env).await.expect("database");
    let consumer = env.assigned_consumer(&topic.name, 2).expect("consumer");
    let body = "a,t=1 v=1 1\nb v=2 2\na,t=2 v=3 3";
    let answer = trident_e2e::post_any(&format!("{}/write?db={}", gw.url, db.name), body)
        .await
        .expect("write");
    assert_eq!(answer.status, 204, "{}", answer.body);
    let mut got = read_lines(&consumer, 3);
    got.sort();
    assert_eq!(got, ["a,t=1 v=1 1", "a,t=2 v=3 3", "b v=2 2"]);

    let dir = std::env::temp_dir().join(unique_name("rules"));
    std::fs::create_dir_all(&dir).expect("dir");
    let rules = dir.join("rules.toml");
    std::fs::write(
        &rules,
        "[[rules]]\nname = \"x\"\nmeasurement = \"m\"\nfield = \"f\"\nop = \"=>\"\nthreshold = 1\n",
    )
    .expect("rules");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let result = ingest_gateway::run(
        config(&env, &[("TRIDENT_ALERTER_RULES", &rules.to_string_lossy())]),
        listener,
        Shutdown::new(),
    )
    .await;
    let error = result
        .expect_err("an invalid rules file stops the gateway")
        .to_string();
    assert!(
        error.contains("rules.toml:5:6") && error.contains("unknown op"),
        "{error}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Alert brokers that are down: writes are answered as fast as ever and
/// the points the alert path cannot hold are dropped and counted.
#[tokio::test]
async fn a_dead_alert_broker_drops_and_counts_without_slowing_writes() {
    let env = StackEnv::load().expect("stack env (scripts/stack up)");
    let gw = start(config(
        &env,
        &[
            ("TRIDENT_KAFKA_ALERT_BROKERS", "127.0.0.1:9"),
            ("TRIDENT_GATEWAY_ALERTS", "all"),
            ("TRIDENT_GATEWAY_ALERT_QUEUE_RECORDS", "10"),
        ],
    ))
    .await;
    let db = InfluxDb::create(&env).await.expect("database");
    let write = format!("{}/write?db={}", gw.url, db.name);
    for i in 0..30 {
        let body: Vec<String> = (0..5)
            .map(|j| format!("m{j},i={i} v=1 {}", i + 1))
            .collect();
        let answer = trident_e2e::post_any(&write, body.join("\n"))
            .await
            .expect("write");
        assert_eq!(answer.status, 204, "{}", answer.body);
    }
    let metrics = trident_e2e::get_text(&format!("{}/metrics", gw.url)).await;
    let dropped: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("trident_gateway_alert_dropped_total{reason=\"queue_full\"} ")?
                .parse()
                .ok()
        })
        .unwrap_or(0.0);
    assert!(
        dropped >= 100.0,
        "150 points offered, 10 records held: {dropped} dropped\n{metrics}"
    );
    // The records held show as the alert sink's queue depth (sampled each
    // second). The other sinks' depths are there too; their values are not
    // checked: the gateways of this file's other tests share the process's
    // metrics and write meanwhile.
    let depth = |metrics: &str, sink: &str| -> Option<f64> {
        let prefix = format!("trident_gateway_queue_depth{{sink=\"{sink}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str())?.parse().ok())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let metrics = loop {
        let metrics = trident_e2e::get_text(&format!("{}/metrics", gw.url)).await;
        if depth(&metrics, "alerts") == Some(10.0) || std::time::Instant::now() > deadline {
            break metrics;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(depth(&metrics, "alerts"), Some(10.0), "{metrics}");
    assert!(depth(&metrics, "influx").is_some(), "{metrics}");
    assert!(depth(&metrics, "kafka").is_some(), "{metrics}");
}

/// A TCP forwarder to `target` that accepts no connection until the
/// returned sender is used (or dropped): until then the kernel completes
/// the handshakes and the client's requests wait unanswered in the
/// backlog — an alert broker that is slow to answer, for as long as a
/// test wants.
fn gated_forwarder(target: String) -> (String, std::sync::mpsc::Sender<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address").to_string();
    let (open, opened) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let _ = opened.recv();
        for client in listener.incoming().flatten() {
            let Ok(server) = std::net::TcpStream::connect(&target) else {
                continue;
            };
            let (Ok(mut client_r), Ok(mut server_w)) = (client.try_clone(), server.try_clone())
            else {
                continue;
            };
            std::thread::spawn(move || std::io::copy(&mut client_r, &mut server_w));
            let (mut server_r, mut client_w) = (server, client);
            std::thread::spawn(move || std::io::copy(&mut server_r, &mut client_w));
        }
    });
    (addr, open)
}

/// What the gateway still holds for the alert topic when it is told to
/// stop is delivered before it exits: here the alert broker answers only
/// a second after SIGTERM, and every point offered before reaches the
/// topic. (A process that exits without flushing loses them: the test
/// runs the gateway binary, not the library in this process.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_still_queued_at_sigterm_reach_the_alert_topic() {
    let env = StackEnv::load().expect("stack env (scripts/stack up)");
    let topic = KafkaTopic::create(&env, 2).await.expect("topic");
    let broker = env
        .kafka_brokers
        .split(',')
        .next()
        .expect("a broker")
        .to_owned();
    let (gated, gate) = gated_forwarder(broker);
    let work = std::env::temp_dir().join(unique_name("alertflush"));
    std::fs::create_dir_all(&work).expect("work dir");
    let port = trident_e2e::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut vars = env.vars.clone();
    for (k, v) in [
        ("TRIDENT_GATEWAY_LISTEN", format!("127.0.0.1:{port}")),
        (
            "TRIDENT_GATEWAY_SPOOL_DIR",
            work.join("spool").to_string_lossy().into_owned(),
        ),
        ("TRIDENT_GATEWAY_ALERTS", "all".to_owned()),
        ("TRIDENT_KAFKA_ALERT_TOPIC", topic.name.clone()),
        ("TRIDENT_KAFKA_ALERT_BROKERS", gated),
    ] {
        vars.insert(k.to_owned(), v);
    }
    let mut gateway = ServiceProcess::gateway(&vars, &work, &url)
        .await
        .expect("gateway");
    let db = InfluxDb::create(&env).await.expect("database");
    let mut lines: Vec<String> = (0..20)
        .map(|i| format!("flush,i={i} v={i} {}", i + 1))
        .collect();
    let answer = trident_e2e::post_any(&format!("{url}/write?db={}", db.name), lines.join("\n"))
        .await
        .expect("write");
    assert_eq!(answer.status, 204, "{}", answer.body);

    // Held at the gate: nothing has reached the topic yet.
    let consumer = env.assigned_consumer(&topic.name, 2).expect("consumer");
    let early = consumer.poll(Duration::from_secs(1));
    assert!(early.is_none(), "the alert broker was not reachable yet");

    let opener = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        let _ = gate.send(());
    });
    let log = gateway.log.clone();
    tokio::task::spawn_blocking(move || gateway.terminate())
        .await
        .expect("terminate");
    let _ = opener.join();
    let mut got = read_lines(&consumer, lines.len());
    got.sort();
    lines.sort();
    assert_eq!(
        got,
        lines,
        "every point offered before SIGTERM\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let _ = std::fs::remove_dir_all(&work);
}
