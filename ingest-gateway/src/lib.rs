//! # ingest-gateway
//!
//! The InfluxDB-compatible write endpoint that fans every point out to the
//! InfluxDB cluster, the raw Kafka topic and the alert topic.
//!
//! ```text
//! client ─POST /write─► http::request (target, body ≤ limit, gzip)
//!                        ─► parse (one result per line) ─► compat (1.x's answer)
//!                        ─┬► fanout::influx: each line to the RF nodes the ring gives
//!                         │   its shard key
//!                         ├► fanout::kafka: raw topic, one record per shard key
//!                         └► fanout::alerts: alert topic, the points a rule looks at
//!                            (best effort: never waited for)
//!                        2xx only when every owner stored it (or its spool did, fsync'd)
//!                        and the broker acknowledged it (or the Kafka spool did)
//! ```
//!
//! Built so far (issue #4): the v1 and v2 write APIs, `/ping`, `/health`,
//! `/metrics`, answers worded as InfluxDB 1.x, and the cluster and raw-topic
//! paths, each with an on-disk spool ([`spool`]: hinted handoff per node,
//! one for the raw topic) that keeps answering 2xx while a node or the
//! broker is down and replays when it is back; and the alert path.
//! Optional authentication with users and write grants in the config
//! ([`http::auth`]).
//!
//! # Layout
//! - [`http`]: routes and handlers; [`http::request`] reads a request.
//! - [`fanout`]: the sinks lines go to.
//! - [`spool`]: the bounded on-disk queues behind them.

pub mod fanout;
pub mod http;
pub mod spool;

use tokio::net::TcpListener;
use trident_service::config::{Config, Service};
use trident_service::health::{Health, Status};
use trident_service::shutdown::Shutdown;

/// Which configuration sections this service validates.
pub const SERVICE: Service = Service::Gateway;

/// Why the gateway cannot run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cluster topology in the configuration is not usable.
    #[error("invalid cluster topology: {0}")]
    Topology(#[from] trident_cluster::Error),
    /// The HTTP client for the nodes could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// The Kafka producers' settings cannot be used.
    #[error("cannot start the Kafka producer: {0}")]
    Kafka(String),
    /// The alert rules file is unreadable or invalid (`alerter.rules`).
    #[error("{0}")]
    Rules(#[from] trident_alert_rules::Error),
    /// `gateway.auth` cannot be used.
    #[error("{0}")]
    Auth(String),
    /// A spool could not be opened (`gateway.spool_dir`).
    #[error("cannot open a spool: {0}")]
    Spool(#[from] spool::SpoolError),
    /// Serving, metrics or signals failed.
    #[error(transparent)]
    Service(#[from] trident_service::Error),
}

/// Serves the gateway on `listener` until `shutdown` fires, then finishes
/// the requests in flight.
pub async fn run(config: Config, listener: TcpListener, shutdown: Shutdown) -> Result<(), Error> {
    // The recorder first: what the sinks record while starting (a spool's
    // size read back after a restart) would otherwise go nowhere.
    let metrics = trident_service::telemetry::metrics()?;
    let health = Health::new("trident-gateway", env!("CARGO_PKG_VERSION"));
    let (topology, tracker) = trident_service::topology::tracked(&config, &health).await?;
    let placement = topology.validate()?;
    let gw = &config.gateway;
    let cluster = fanout::influx::ClusterSink::new(
        placement,
        &fanout::influx::ClusterOptions {
            timeout: config.influx.timeout,
            create_databases: gw.create_databases,
            gzip: config.influx.gzip,
            spool_dir: gw.spool_dir.clone(),
            spool_max_bytes: gw.spool_max_bytes,
            node_requests: config.influx.node_requests,
            batch_linger: config.influx.batch_linger,
            batch_max_bytes: config.influx.batch_max_bytes,
            batch_max_lines: config.influx.batch_max_lines,
        },
    )?;
    health.set("sink:influx", Status::Up, "");
    let following = cluster.clone();
    tracker.follow("gateway", &shutdown, move |placement| {
        following
            .set_placement(placement)
            .map_err(|e| e.to_string())
    });
    let raw_spool = spool::Spool::open(
        "kafka:raw",
        &gw.spool_dir.join("kafka-raw.spool"),
        gw.spool_max_bytes,
    )?;
    let raw = fanout::kafka::RawSink::new(
        &config.kafka.brokers,
        &config.kafka.raw_topic,
        &config.kafka.compression,
        config.kafka.delivery_timeout,
        raw_spool,
    )
    .map_err(|e| Error::Kafka(e.0))?;
    health.set("sink:kafka", Status::Up, "");
    let alerts = fanout::alerts::AlertSink::new(
        config.kafka.alert_brokers(),
        &config.kafka.alert_topic,
        gw.alerts,
        &config.alerter.rules,
        gw.alert_queue_records,
        config.kafka.delivery_timeout,
        &config.kafka.compression,
    )?;
    alerts.start(&shutdown, &health);
    for s in cluster.spools().iter().chain([raw.spool()]) {
        if !s.is_empty() {
            tracing::info!(
                spool = s.name(),
                entries = s.entries(),
                bytes = s.bytes(),
                "replaying what the last run spooled"
            );
        }
    }
    cluster.start_replay(&shutdown, &health, gw.replay_max_backoff);
    cluster.start_health_checks(&shutdown, &health);
    raw.start_replay(&shutdown, &health, gw.replay_max_backoff);
    sample_queues(&shutdown, cluster.clone(), raw.clone(), alerts.clone());
    let auth = http::auth::Auth::from_config(&gw.auth).map_err(Error::Auth)?;
    let state = http::AppState {
        inflight: std::sync::Arc::new(tokio::sync::Semaphore::new(gw.max_inflight_writes)),
        inflight_bytes: std::sync::Arc::new(tokio::sync::Semaphore::new(
            usize::try_from(gw.max_inflight_bytes)
                .unwrap_or(usize::MAX)
                .min(tokio::sync::Semaphore::MAX_PERMITS),
        )),
        auth,
        cluster,
        raw,
        alerts: alerts.clone(),
        influx_required: gw.required.iter().any(|s| s == "influx"),
        kafka_required: gw.required.iter().any(|s| s == "kafka"),
        max_body_bytes: config.gateway.max_body_bytes,
    };
    let app = http::router(state).merge(trident_service::admin::router(health, metrics));
    tracing::info!(addr = ?listener.local_addr().ok(), "gateway listening");
    trident_service::admin::serve(listener, app, shutdown.triggered()).await?;
    // A dead alert broker must not hold a restart for long.
    alerts
        .flush(
            config
                .kafka
                .delivery_timeout
                .min(std::time::Duration::from_secs(5)),
        )
        .await;
    Ok(())
}

/// Every second, each sink's queue depth as `trident_gateway_queue_depth`
/// (`sink` = influx: node parts on their way; kafka, alerts: records in
/// the producer not yet acknowledged). Spools are counted apart
/// (`trident_gateway_spool_bytes`, `_entries`).
fn sample_queues(
    shutdown: &Shutdown,
    cluster: fanout::influx::ClusterSink,
    raw: fanout::kafka::RawSink,
    alerts: fanout::alerts::AlertSink,
) {
    let stop = shutdown.triggered();
    tokio::spawn(async move {
        let sample = async {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                for (sink, depth) in [
                    ("influx", cluster.queued()),
                    ("kafka", raw.queued()),
                    ("alerts", alerts.queued()),
                ] {
                    metrics::gauge!("trident_gateway_queue_depth", "sink" => sink)
                        .set(depth as f64);
                }
            }
        };
        tokio::select! {
            () = sample => {}
            () = stop => {}
        }
    });
}
