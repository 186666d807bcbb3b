//! Writers as a Kafka consumer group (`writer.positions = "kafka"`), on the
//! stack's group broker (`scripts/stack up --with groups`: tansu, the main
//! broker, has no group coordinator): the broker splits the partitions
//! between two writers, offsets are committed after ClickHouse took the
//! rows, and when one writer stops the other takes its partitions over
//! from their last commits and nothing is lost.
//!
//! Stopped with SIGTERM, not SIGKILL: this broker (noida-db 0.2.3) never
//! evicts a member whose session expired, so a killed writer's partitions
//! would stay assigned to it; a Kafka broker hands them over after
//! `session.timeout.ms` (10 s). Losing nothing across a SIGKILL rests on
//! the same order — insert, then store the position — which
//! `tests/writer.rs` shows with positions in ClickHouse.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use trident_e2e::{ClickHouseDb, KafkaTopic, ServiceProcess, StackEnv, unique_name};

async fn ch_number(env: &StackEnv, sql: &str) -> f64 {
    trident_e2e::clickhouse_rows(env, sql)
        .await
        .first()
        .map_or(f64::NAN, |row| trident_e2e::json_number(&row[0]))
}

/// `trident_writer_rows_total` of the writer whose admin port is `port`.
async fn rows_inserted(port: u16) -> f64 {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find(|l| l.starts_with("trident_writer_rows_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Sends `lines` to `topic`, 500 a record, keyed by their series.
async fn produce(producer: &FutureProducer, topic: &str, lines: &[String]) {
    for chunk in lines.chunks(500) {
        let key = chunk[0].split(' ').next().unwrap_or_default().to_owned();
        let payload = chunk.join("\n");
        producer
            .send(
                FutureRecord::to(topic).key(&key).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_share_the_partitions_and_one_stopped_loses_nothing() {
    let env = StackEnv::load().expect("stack env (scripts/stack up --with groups)");
    let brokers = env
        .vars
        .get("TRIDENT_GROUP_BROKERS")
        .cloned()
        .expect("the group broker (scripts/stack up --with groups)");
    let mut genv = env.clone();
    genv.kafka_brokers = brokers.clone();
    let topic = KafkaTopic::create(&genv, 4)
        .await
        .expect("topic on the group broker");
    let db = ClickHouseDb::create(&env)
        .await
        .expect("ClickHouse database");
    let group = unique_name("writers");
    let work = std::env::temp_dir().join(unique_name("writergroup"));
    std::fs::create_dir_all(&work).expect("work dir");
    let config_file = work.join("writer.toml");
    std::fs::write(
        &config_file,
        format!(
            "[writer]\npositions = \"kafka\"\ngroup_id = \"{group}\"\nbatch_rows = 2000\nbatch_bytes = 30000\n\
             batch_period = \"200ms\"\nintervals = [\"1m\"]\n[[writer.mappings]]\n\
             measurement = \"http\"\ndimensions = [\"app\"]\nvalues = [\"latency_ms\"]\n"
        ),
    )
    .expect("config");
    let start = |name: &str, port: u16| {
        let mut vars = env.vars.clone();
        for (k, v) in [
            ("TRIDENT_CONFIG", config_file.to_string_lossy().into_owned()),
            ("TRIDENT_KAFKA_BROKERS", brokers.clone()),
            ("TRIDENT_KAFKA_RAW_TOPIC", topic.name.clone()),
            ("TRIDENT_CLICKHOUSE_DATABASE", db.name.clone()),
            ("TRIDENT_WRITER_ADMIN_LISTEN", format!("127.0.0.1:{port}")),
        ] {
            vars.insert(k.to_owned(), v);
        }
        ServiceProcess::start("trident-writer", &vars, work.join(format!("{name}.log")))
            .expect("start a writer")
    };
    let (port_a, port_b) = (trident_e2e::free_port(), trident_e2e::free_port());
    let mut a = start("a", port_a);
    let mut b = start("b", port_b);
    for (w, port) in [(&mut a, port_a), (&mut b, port_b)] {
        if let Err(e) = w
            .wait_ready(
                &format!("http://127.0.0.1:{port}/health"),
                Duration::from_secs(30),
            )
            .await
        {
            panic!("a writer did not come up: {e}");
        }
    }
    // Both members of a settled group before any data, so each gets some.
    let probe: BaseConsumer = genv
        .kafka_config()
        .set("group.id", unique_name("probe"))
        .create()
        .expect("probe");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let settled = probe
            .fetch_group_list(Some(&group), Duration::from_secs(5))
            .ok()
            .and_then(|list| {
                list.groups()
                    .first()
                    .map(|g| g.members().len() == 2 && g.state() == "Stable")
            })
            .unwrap_or(false);
        if settled {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the two writers did not form a stable group"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let producer: FutureProducer = genv.kafka_config().create().expect("producer");
    let total = 20_000usize;
    let lines = trident_e2e::http_latency_lines(total, 16, 300);
    let raw = format!("{}.http_raw", db.name);
    let distinct = format!("SELECT uniqExact(ts_ns) FROM {raw}");
    let wait_for_rows = |want: f64| {
        let (env, distinct) = (env.clone(), distinct.clone());
        async move {
            // As long as rows keep coming (the broker and a rebalance set
            // the pace), at most a minute without progress.
            let (mut last, mut since) = (-1.0, std::time::Instant::now());
            loop {
                let n = ch_number(&env, &distinct).await;
                if n >= want || since.elapsed() > Duration::from_secs(60) {
                    return n;
                }
                if n > last {
                    (last, since) = (n, std::time::Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let (first, second) = lines.split_at(total / 2);
    produce(&producer, &topic.name, first).await;
    assert_eq!(
        wait_for_rows(first.len() as f64).await,
        first.len() as f64,
        "first half"
    );
    let (by_a, by_b) = (rows_inserted(port_a).await, rows_inserted(port_b).await);
    println!("rows inserted by writer a: {by_a}, by writer b: {by_b}");
    assert!(
        by_a > 0.0 && by_b > 0.0,
        "both writers had partitions: {by_a} / {by_b}"
    );

    // One writer stops; the other takes its partitions from their last
    // commits.
    b.terminate();
    produce(&producer, &topic.name, second).await;
    assert_eq!(
        wait_for_rows(total as f64).await,
        total as f64,
        "every line after the stop"
    );
    let all = ch_number(&env, &format!("SELECT count() FROM {raw}")).await;
    println!(
        "{total} lines: {all} rows, {} inserted twice (re-read after the stop)",
        all - total as f64
    );

    // The group's committed offsets reach the end of every partition.
    let mut wanted = TopicPartitionList::new();
    for p in 0..4 {
        wanted.add_partition(&topic.name, p);
    }
    let checker: BaseConsumer = genv
        .kafka_config()
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("checker");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let committed = checker
            .committed_offsets(wanted.clone(), Duration::from_secs(5))
            .expect("committed offsets");
        let behind: Vec<String> = committed
            .elements()
            .iter()
            .filter_map(|e| {
                let (_, high) = checker
                    .fetch_watermarks(&topic.name, e.partition(), Duration::from_secs(5))
                    .expect("watermarks");
                (e.offset() != Offset::Offset(high))
                    .then(|| format!("partition {}: {:?} of {high}", e.partition(), e.offset()))
            })
            .collect();
        if behind.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "offsets not committed to the end: {behind:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    a.kill();
    let _ = std::fs::remove_dir_all(&work);
}
