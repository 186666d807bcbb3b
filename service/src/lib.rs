//! # trident-service
//!
//! What every Trident service (gateway, downsampler, alerter, writer) shares at
//! its edges, so that a user learns one vocabulary for all four:
//!
//! ```text
//!  defaults ─┐
//!  TOML file ├─► config::Config ──validate()──► service's run(config, listener, shutdown)
//!  TRIDENT_* ┘                                     │
//!                     telemetry (logs, metrics) ◄──┤
//!                     health::Health ◄─────────────┤ components report their state
//!                     admin::router ── /health, /metrics over HTTP
//!                     shutdown::StopOrder ── stops stages one after another
//! ```
//!
//! # Layout
//! - [`config`]: one configuration file with a section per service, layered
//!   defaults < file < environment, unknown keys refused, validated with
//!   messages that name the key to fix.
//! - [`cli`]: the flags every binary shares (`--config`, `--check-config`,
//!   `--help`, `--version`).
//! - [`telemetry`]: `tracing` logs and the process-wide Prometheus recorder.
//! - [`health`]: a registry where components report their state, rendered as
//!   the `/health` JSON document.
//! - [`admin`]: the `/health` and `/metrics` HTTP routes every service serves.
//! - [`shutdown`]: signals and an ordered, stage-by-stage graceful stop.
//! - [`topology`]: the cluster topology from the configuration, a file or
//!   etcd, followed while the service runs.

pub mod admin;
pub mod cli;
pub mod config;
mod error;
pub mod health;
pub mod pinned;
pub mod shutdown;
pub mod telemetry;
pub mod topology;

pub use error::{Error, Result};
