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
//!                         └► fanout::kafka: raw topic, one record per shard key
//!                        2xx only when every owner stored it and the broker acknowledged
//! ```
//!
//! Built so far (issue #4): the v1 and v2 write APIs, `/ping`, `/health`,
//! `/metrics`, answers worded as InfluxDB 1.x, and the cluster and raw-topic
//! paths with synchronous acknowledgement. **Not built yet:** the alert
//! path, the on-disk spools (hinted handoff) that keep answering 2xx while a
//! node or the broker is down, and authentication.
//!
//! # Layout
//! - [`http`]: routes and handlers; [`http::request`] reads a request.
//! - [`fanout`]: the sinks lines go to.

pub mod fanout;
pub mod http;

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
    /// The Kafka producer could not be built.
    #[error("cannot create the Kafka producer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Serving, metrics or signals failed.
    #[error(transparent)]
    Service(#[from] trident_service::Error),
}

/// Serves the gateway on `listener` until `shutdown` fires, then finishes
/// the requests in flight.
pub async fn run(config: Config, listener: TcpListener, shutdown: Shutdown) -> Result<(), Error> {
    let placement = config.influx.topology().validate()?;
    let cluster = fanout::influx::ClusterSink::new(
        placement,
        config.influx.timeout,
        config.gateway.create_databases,
        config.influx.gzip,
    )?;
    let health = Health::new("trident-gateway", env!("CARGO_PKG_VERSION"));
    health.set("sink:influx", Status::Up, "");
    let raw = fanout::kafka::RawSink::new(
        &config.kafka.brokers,
        &config.kafka.raw_topic,
        &config.kafka.compression,
        config.kafka.delivery_timeout,
    )?;
    health.set("sink:kafka", Status::Up, "");
    health.set(
        "sink:alerts",
        Status::Degraded,
        "not built yet (issue #4): points are not sent to the alert topic",
    );
    let state = http::AppState {
        cluster,
        raw,
        max_body_bytes: config.gateway.max_body_bytes,
    };
    let app = http::router(state).merge(trident_service::admin::router(
        health,
        trident_service::telemetry::metrics()?,
    ));
    tracing::info!(addr = ?listener.local_addr().ok(), "gateway listening");
    trident_service::admin::serve(listener, app, shutdown.triggered()).await?;
    Ok(())
}
