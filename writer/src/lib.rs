//! # writer
//!
//! ClickHouse pre-aggregation of business metrics consumed from the raw
//! topic, at least once.
//!
//! ```text
//! raw topic (partitions p % instances == instance, from the stored offsets;
//!            or as assigned to this member of the consumer group)
//!   ──mappings──► rows::RawRow per mapped point
//!   ──batch (rows / period)──► INSERT <t>_raw ──► materialized views
//!   ──► <t>_<interval>: countState, sumState, quantilesExactState
//! offsets stored (in ClickHouse, or committed to the group) only after
//! ClickHouse acknowledged the rows
//! ```
//!
//! The schema ([`schema`]) is created at start, idempotently. ClickHouse
//! down: the insert is retried with backoff and consumption waits (memory
//! stays bounded by one batch); offsets of uninserted rows are never
//! committed, so a crash re-delivers them — duplicates, not losses (see
//! `docs/writer.md`). `/query` and `trident-writer query` answer count,
//! success rate and P50/P90/P95/P99 per dimension and interval.

pub mod rows;
pub mod schema;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::net::TcpListener;
use trident_service::config::{Config, MappingConfig, Positions, Service};
use trident_service::health::{Health, Status};
use trident_service::shutdown::Shutdown;

/// Which configuration sections this service validates.
pub const SERVICE: Service = Service::Writer;

/// Why the writer cannot run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// ClickHouse refused a statement or could not be reached.
    #[error("ClickHouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    /// The broker could not be joined.
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Serving, metrics or signals failed.
    #[error(transparent)]
    Service(#[from] trident_service::Error),
    /// A query asked for something the configuration does not map.
    #[error("{0}")]
    Query(String),
    /// The mappings ask for a change the existing tables cannot take.
    #[error("schema: {0}")]
    Schema(String),
}

/// A ClickHouse client for the configured server and database.
pub fn client(config: &Config) -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(&config.clickhouse.url)
        .with_user(&config.clickhouse.user)
        .with_password(&config.clickhouse.password)
        .with_validation(config.clickhouse.validation)
        .with_database(&config.clickhouse.database)
}

/// Creates the database, tables and views of every mapping.
pub async fn ensure_schema(config: &Config) -> Result<(), Error> {
    let server = client(config).with_database("default");
    let version: String = server
        .query("SELECT version()")
        .fetch_one()
        .await
        .unwrap_or_default();
    let ttl = schema::ttl_supported(&version).then_some(config.writer.raw_ttl_days);
    let db = &config.clickhouse.database;
    let statements = schema::setup(db, &config.writer.mappings, &config.writer.intervals, ttl);
    // The database first, from `default`; the rest from inside it.
    let mut statements = statements.iter();
    if let Some(create_database) = statements.next() {
        server.query(create_database).execute().await?;
    }
    let client = client(config);
    // Tables of earlier mappings first brought to these ones.
    let existing = existing(&server, db).await?;
    for mapping in &config.writer.mappings {
        for sql in schema::migrate(db, mapping, &config.writer.intervals, &existing)
            .map_err(Error::Schema)?
        {
            tracing::info!(%sql, "migrating the schema");
            client.query(&sql).execute().await?;
        }
    }
    for sql in statements {
        client.query(sql).execute().await?;
    }
    Ok(())
}

#[derive(Debug, serde::Deserialize, clickhouse::Row)]
struct ColumnRow {
    table: String,
    name: String,
    kind: String,
}

#[derive(Debug, serde::Deserialize, clickhouse::Row)]
struct ViewRow {
    name: String,
}

/// The columns of `db`'s tables and its materialized views.
async fn existing(server: &clickhouse::Client, db: &str) -> Result<schema::Existing, Error> {
    let columns: Vec<ColumnRow> = server
        .query("SELECT table, name, type AS kind FROM system.columns WHERE database = ?")
        .bind(db)
        .fetch_all()
        .await?;
    let views: Vec<ViewRow> = server
        .query("SELECT name FROM system.tables WHERE database = ? AND engine = 'MaterializedView'")
        .bind(db)
        .fetch_all()
        .await?;
    let mut out = schema::Existing::default();
    for c in columns {
        out.columns
            .entry(c.table)
            .or_default()
            .push((c.name, c.kind));
    }
    out.views = views.into_iter().map(|v| v.name).collect();
    Ok(out)
}

/// One stored position: the next offset to read.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, clickhouse::Row)]
struct OffsetRow {
    group: String,
    topic: String,
    partition: i32,
    offset: i64,
    at: u32,
}

#[derive(Debug, serde::Deserialize, clickhouse::Row)]
struct Stored {
    partition: i32,
    offset: i64,
}

/// The next offset to read per partition, as stored after the last insert.
async fn stored_offsets(
    client: &clickhouse::Client,
    db: &str,
    group: &str,
    topic: &str,
) -> Result<HashMap<i32, i64>, Error> {
    let rows: Vec<Stored> = client
        .query(&schema::stored_offsets(db))
        .bind(group)
        .bind(topic)
        .fetch_all()
        .await?;
    Ok(rows.into_iter().map(|r| (r.partition, r.offset)).collect())
}

/// One answer row of [`query`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Stat {
    /// Bucket start, unix seconds.
    pub bucket: u32,
    /// Dimension values, in the mapping's order.
    pub dimensions: Vec<String>,
    /// Requests.
    pub count: u64,
    /// Successful share, 0..1.
    pub success_rate: f64,
    /// P50, P90, P95, P99 of the value.
    pub quantiles: Vec<f64>,
}

/// Count, success rate and quantiles of `value` of `measurement` per
/// dimension and `interval` bucket since `since` (unix seconds).
pub async fn query(
    config: &Config,
    measurement: &str,
    interval: Duration,
    value: &str,
    since: u64,
) -> Result<Vec<Stat>, Error> {
    let mapping = mapping_of(config, measurement)?;
    if !mapping.values.iter().any(|v| v == value) {
        return Err(Error::Query(format!(
            "{measurement} has no value {value}: map one of {:?}",
            mapping.values
        )));
    }
    if !config.writer.intervals.contains(&interval) {
        return Err(Error::Query(format!(
            "no pre-aggregation every {}: the writer keeps {:?}",
            schema::label(interval),
            config
                .writer
                .intervals
                .iter()
                .map(|i| schema::label(*i))
                .collect::<Vec<_>>()
        )));
    }
    let sql = schema::query(&config.clickhouse.database, mapping, interval, value, since);
    let text = client(config)
        .query(&format!("{sql} FORMAT JSONCompact"))
        .fetch_bytes("JSONCompact")
        .map_err(Error::ClickHouse)?
        .collect()
        .await?;
    let json: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| Error::Query(format!("ClickHouse answered no JSON: {e}")))?;
    let dims = mapping.dimensions.len();
    let as_f64 = |v: &serde_json::Value| {
        v.as_f64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .unwrap_or(f64::NAN)
    };
    Ok(json["data"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|row| Stat {
            bucket: as_f64(&row[0]) as u32,
            dimensions: (1..=dims)
                .map(|i| row[i].as_str().unwrap_or_default().to_owned())
                .collect(),
            count: as_f64(&row[dims + 1]) as u64,
            success_rate: as_f64(&row[dims + 2]),
            quantiles: row[dims + 3]
                .as_array()
                .map(|q| q.iter().map(as_f64).collect())
                .unwrap_or_default(),
        })
        .collect())
}

fn mapping_of<'c>(config: &'c Config, measurement: &str) -> Result<&'c MappingConfig, Error> {
    config
        .writer
        .mappings
        .iter()
        .find(|m| m.measurement == measurement)
        .ok_or_else(|| {
            Error::Query(format!(
                "{measurement} is not a mapped measurement (writer.mappings)"
            ))
        })
}

#[derive(Debug, serde::Deserialize)]
struct QueryParams {
    measurement: String,
    value: String,
    interval: String,
    #[serde(default)]
    since: u64,
}

async fn query_endpoint(
    State(config): State<std::sync::Arc<Config>>,
    Query(params): Query<QueryParams>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let interval = match parse_interval(&params.interval) {
        Some(i) => i,
        None => {
            return (
                axum::http::StatusCode::BAD_REQUEST,
                format!("interval \"{}\": use e.g. 1m or 1h", params.interval),
            )
                .into_response();
        }
    };
    match query(
        &config,
        &params.measurement,
        interval,
        &params.value,
        params.since,
    )
    .await
    {
        Ok(stats) => axum::Json(stats).into_response(),
        Err(e) => (axum::http::StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

/// `1m`, `1h`, `30s` as a duration.
pub fn parse_interval(text: &str) -> Option<Duration> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = number.parse().ok()?;
    Some(Duration::from_secs(match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return None,
    }))
}

/// Why points are skipped, in the order of the local counters.
const SKIP_REASONS: [&str; 4] = ["unparsable", "unmapped", "bad_time", "no_values"];

/// Rows waiting for their insert, per mapping, and the offsets they end at.
#[derive(Default)]
struct Batch {
    rows: HashMap<usize, Vec<rows::RawRow>>,
    count: usize,
    /// Line protocol bytes of the rows.
    bytes: usize,
    offsets: HashMap<(String, i32), i64>,
}

/// Runs the writer until `shutdown`: schema, then consume, insert, commit.
pub async fn run(config: Config, admin: TcpListener, shutdown: Shutdown) -> Result<(), Error> {
    let health = Health::new("trident-writer", env!("CARGO_PKG_VERSION"));
    let shared = std::sync::Arc::new(config.clone());
    let app =
        trident_service::admin::router(health.clone(), trident_service::telemetry::metrics()?)
            .merge(
                Router::new()
                    .route("/query", get(query_endpoint))
                    .with_state(shared),
            );
    let stop_admin = shutdown.triggered();
    tokio::spawn(async move {
        if let Err(e) = trident_service::admin::serve(admin, app, stop_admin).await {
            tracing::error!(error = %e, "the admin endpoint stopped");
        }
    });
    // ClickHouse may still be starting: retry the schema until it answers.
    let mut wait = Duration::from_millis(200);
    loop {
        match ensure_schema(&config).await {
            Ok(()) => break,
            // The configuration must change; waiting will not help.
            Err(e @ Error::Schema(_)) => return Err(e),
            Err(e) if !shutdown.is_triggered() => {
                health.set("clickhouse", Status::Down, e.to_string());
                tracing::warn!(error = %e, ?wait, "cannot create the schema yet");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
    health.set("clickhouse", Status::Up, "");
    // Partitions split by instance, positioned where the last insert
    // ended (offsets live in ClickHouse, next to the rows they cover).
    let w = &config.writer;
    let (consumer, store) = if w.positions == Positions::Kafka {
        let consumer = group_consumer(&config)?;
        health.set(
            "partitions",
            Status::Up,
            format!("consumer group {}: the broker assigns them", w.group_id),
        );
        (consumer.clone(), Store::Kafka(consumer))
    } else {
        let consumer = pinned_consumer(&config, &health).await?;
        (consumer, Store::ClickHouse(w.group_id.clone()))
    };
    let client = client(&config);
    let mappings = &config.writer.mappings;
    let mut batch = Batch::default();
    let mut consuming = false;
    let mut skipped = [0u64; 4];
    let mut tick = tokio::time::interval(config.writer.batch_period);
    let stop = shutdown.triggered();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = tick.tick() => {
                flush(&client, &store, mappings, &mut batch, &health, &shutdown).await;
            }
            message = consumer.recv() => {
                let Some(message) = trident_service::pinned::received(message, &health, &mut consuming) else {
                    continue;
                };
                tracing::debug!(partition = message.partition(), offset = message.offset(), "record");
                for line in trident_line_protocol::parse_lines(message.payload().unwrap_or_default()) {
                    // Counted locally, published per record: a metrics
                    // lookup per point costs more than the point.
                    let Ok(line) = line else {
                        skipped[0] += 1;
                        continue;
                    };
                    let Some(index) = mappings.iter().position(|m| line.measurement().eq_str(&m.measurement)) else {
                        skipped[1] += 1;
                        continue;
                    };
                    match rows::row(&mappings[index], &line) {
                        Ok(row) => {
                            batch.rows.entry(index).or_default().push(row);
                            batch.count += 1;
                            batch.bytes += line.text().len();
                        }
                        Err(rows::Skip::BadTime) => skipped[2] += 1,
                        Err(rows::Skip::NoValues) => skipped[3] += 1,
                    }
                }
                for (reason, n) in SKIP_REASONS.iter().zip(&mut skipped) {
                    if *n > 0 {
                        metrics::counter!("trident_writer_points_skipped_total", "reason" => *reason).increment(*n);
                        *n = 0;
                    }
                }
                batch.offsets.insert((message.topic().to_owned(), message.partition()), message.offset() + 1);
                if batch.count >= config.writer.batch_rows || batch.bytes >= config.writer.batch_bytes {
                    flush(&client, &store, mappings, &mut batch, &health, &shutdown).await;
                }
            }
        }
    }
    flush(&client, &store, mappings, &mut batch, &health, &shutdown).await;
    Ok(())
}

/// Where a writer keeps the positions its inserted rows end at.
enum Store {
    /// In ClickHouse, under this group name.
    ClickHouse(String),
    /// Committed to the broker by this group consumer.
    Kafka(Arc<StreamConsumer>),
}

/// A member of the consumer group `writer.group_id` on the raw topic:
/// the broker assigns partitions among the running writers and holds the
/// committed offsets; a partition never committed starts at its earliest
/// record.
fn group_consumer(config: &Config) -> Result<Arc<StreamConsumer>, Error> {
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", config.kafka.brokers.join(","))
        .set("group.id", &config.writer.group_id)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        // A writer that dies gives its partitions to the others within
        // about ten seconds.
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .create()?;
    consumer.subscribe(&[config.kafka.raw_topic.as_str()])?;
    Ok(Arc::new(consumer))
}

/// A consumer of the partitions `writer.instance` owns, at the positions
/// stored in ClickHouse.
async fn pinned_consumer(config: &Config, health: &Health) -> Result<Arc<StreamConsumer>, Error> {
    let w = &config.writer;
    let stored = stored_offsets(
        &client(config),
        &config.clickhouse.database,
        &w.group_id,
        &config.kafka.raw_topic,
    )
    .await?;
    let pinned = trident_service::pinned::pin(trident_service::pinned::PinOptions {
        brokers: &config.kafka.brokers,
        topic: &config.kafka.raw_topic,
        instance: w.instance,
        instances: w.instances,
        partitions: &[],
        replay_from_ms: 0,
        resume: &stored,
        timeout: config.kafka.delivery_timeout,
    })
    .await?;
    pinned.report(health);
    Ok(pinned.consumer)
}

/// Inserts the batch (retrying while ClickHouse is away), then commits
/// the offsets it covers.
async fn flush(
    client: &clickhouse::Client,
    store: &Store,
    mappings: &[MappingConfig],
    batch: &mut Batch,
    health: &Health,
    shutdown: &Shutdown,
) {
    if batch.offsets.is_empty() {
        return;
    }
    for (index, rows) in &batch.rows {
        // The client's database is `db`; the crate quotes the name whole.
        let table = format!("{}_raw", schema::table(&mappings[*index]));
        let mut wait = Duration::from_millis(100);
        loop {
            match insert(client, &table, rows).await {
                Ok(()) => {
                    health.set("clickhouse", Status::Up, "");
                    metrics::counter!("trident_writer_rows_total").increment(rows.len() as u64);
                    break;
                }
                Err(e) => {
                    health.set("clickhouse", Status::Down, e.to_string());
                    tracing::warn!(%table, error = %e, ?wait, "insert failed; retrying (offsets not committed)");
                    if shutdown.is_triggered() {
                        // Not committed: the next start re-reads them.
                        *batch = Batch::default();
                        return;
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
    // The rows are in: store where they end. A crash before this line
    // re-reads them (duplicates, never losses).
    let group = match store {
        Store::ClickHouse(group) => group,
        Store::Kafka(consumer) => {
            commit(consumer, &batch.offsets).await;
            *batch = Batch::default();
            return;
        }
    };
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
    let offsets: Vec<OffsetRow> = batch
        .offsets
        .iter()
        .map(|((topic, partition), next)| OffsetRow {
            group: group.to_owned(),
            topic: topic.clone(),
            partition: *partition,
            offset: *next,
            at,
        })
        .collect();
    let table = "trident_writer_offsets";
    let mut wait = Duration::from_millis(100);
    while let Err(e) = insert_offsets(client, table, &offsets).await {
        tracing::warn!(error = %e, "storing offsets failed; retrying");
        if shutdown.is_triggered() {
            break;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
    *batch = Batch::default();
}

/// Commits `offsets` (the next to read, per topic and partition) for the
/// group. A refused commit (the group rebalanced, or the broker is away)
/// leaves the partition's last committed offset in place: its next owner
/// reads those rows again — duplicates, not losses.
async fn commit(consumer: &Arc<StreamConsumer>, offsets: &HashMap<(String, i32), i64>) {
    let mut list = TopicPartitionList::new();
    for ((topic, partition), next) in offsets {
        if let Err(e) = list.add_partition_offset(topic, *partition, Offset::Offset(*next)) {
            tracing::warn!(error = %e, "cannot list an offset to commit");
        }
    }
    let consumer = consumer.clone();
    let committed =
        tokio::task::spawn_blocking(move || consumer.commit(&list, CommitMode::Sync)).await;
    match committed {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            metrics::counter!("trident_writer_commit_failures_total").increment(1);
            tracing::warn!(error = %e, "offsets not committed; their rows may be inserted again");
        }
        Err(e) => tracing::warn!(error = %e, "the commit task failed"),
    }
}

async fn insert(
    client: &clickhouse::Client,
    table: &str,
    rows: &[rows::RawRow],
) -> Result<(), clickhouse::error::Error> {
    let mut insert = client.insert::<rows::RawRow>(table).await?;
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await
}

async fn insert_offsets(
    client: &clickhouse::Client,
    table: &str,
    rows: &[OffsetRow],
) -> Result<(), clickhouse::error::Error> {
    let mut insert = client.insert::<OffsetRow>(table).await?;
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await
}
