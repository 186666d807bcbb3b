//! # ingest-gateway
//!
//! The InfluxDB-compatible write endpoint that fans every point out to the InfluxDB cluster, the raw Kafka topic and the alert topic.
//!
//! Data flow (to be built in issue #4; nothing of it exists yet):
//!
//! ```text
//! client ─POST /write─► parse ─┬─► InfluxDB cluster (ring, RF, hinted handoff)
//!                               ├─► raw topic (key = shard key, spool)
//!                               └─► alert topic (best effort)
//! ```
//!
//! What exists today: [`http::request`], which reads a write request the
//! way InfluxDB does (target, precision, consistency, credentials, gzip
//! within a size limit), and the shared edge every service has: configuration
//! (the `[gateway]` section of the one Trident file, see
//! [`trident_service::config`]), `--help`, `--version` and
//! `--check-config`. The binary refuses to start rather than pretend to work.

pub mod http;

use trident_service::config::Service;

/// Which configuration sections this service validates.
pub const SERVICE: Service = Service::Gateway;

/// Why the binary does not start yet.
pub const NOT_BUILT: &str =
    "the gateway's data path is not built yet (issue #4); only --check-config works";
