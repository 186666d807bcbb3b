//! Logs (`tracing`) and metrics (the `metrics` facade with a Prometheus
//! recorder). Metric names follow `trident_<service>_<what>_<unit>`; labels
//! are low-cardinality (sink, node, topic, partition, outcome), never series
//! tags.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, TelemetryConfig};
use crate::{Error, Result};

/// Installs the log subscriber. `RUST_LOG`, when set, wins over the config.
/// Calling it twice keeps the first subscriber (tests start several services
/// in one process).
pub fn init_logs(config: &TelemetryConfig) -> Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(from_env) if !from_env.is_empty() => from_env,
        _ => config.log.clone(),
    };
    let env_filter = EnvFilter::try_new(&filter).map_err(|e| Error::LogFilter {
        filter: filter.clone(),
        reason: e.to_string(),
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr);
    // An error here only means a subscriber is already installed.
    let _ = match config.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    Ok(())
}

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use. Every
/// service in the process records into it; `/metrics` renders it.
pub fn metrics() -> Result<PrometheusHandle> {
    if let Some(handle) = PROMETHEUS.get() {
        return Ok(handle.clone());
    }
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    match PROMETHEUS.set(handle.clone()) {
        Ok(()) => {
            metrics::set_global_recorder(recorder).map_err(|e| Error::Metrics(e.to_string()))?;
            Ok(handle)
        }
        // Another thread won the race; use its handle.
        Err(_) => PROMETHEUS
            .get()
            .cloned()
            .ok_or_else(|| Error::Metrics("recorder vanished".into())),
    }
}
