//! # downsampler
//!
//! Partition-pinned windowed rollups of the raw topic, written back into the InfluxDB cluster.
//!
//! Data flow (to be built in issue #6; nothing of it exists yet):
//!
//! ```text
//! raw topic partitions (assigned, p % n == i) ─► windows per series/field ─► rollups ─► InfluxDB cluster
//! ```
//!
//! What exists today is the shared edge every service has: configuration
//! (the `[downsampler]` section of the one Trident file, see
//! [`trident_service::config`]), `--help`, `--version` and
//! `--check-config`. The binary refuses to start rather than pretend to work.

use trident_service::config::Service;

/// Which configuration sections this service validates.
pub const SERVICE: Service = Service::Downsampler;

/// Why the binary does not start yet.
pub const NOT_BUILT: &str =
    "the downsampler's data path is not built yet (issue #6); only --check-config works";
