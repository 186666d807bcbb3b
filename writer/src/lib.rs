//! # writer
//!
//! ClickHouse pre-aggregation of business metrics consumed from the raw topic.
//!
//! Data flow (to be built in issue #8; nothing of it exists yet):
//!
//! ```text
//! raw topic (consumer group) ─► mapped rows ─► ClickHouse raw table ─► materialized views (quantilesState)
//! ```
//!
//! What exists today is the shared edge every service has: configuration
//! (the `[writer]` section of the one Trident file, see
//! [`trident_service::config`]), `--help`, `--version` and
//! `--check-config`. The binary refuses to start rather than pretend to work.

use trident_service::config::Service;

/// Which configuration sections this service validates.
pub const SERVICE: Service = Service::Writer;

/// Why the binary does not start yet.
pub const NOT_BUILT: &str =
    "the writer's data path is not built yet (issue #8); only --check-config works";
