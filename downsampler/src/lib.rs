//! # downsampler
//!
//! Partition-pinned windowed rollups of the raw topic, written back into
//! the InfluxDB cluster.
//!
//! ```text
//! raw topic, partitions p % instances == instance (assign(), no group)
//!   ── seek to offsets_for_times(now − lookback), skip older records
//!   ──► window::Rollups (per partition: tumbling event-time windows per
//!       series and field, interned strings, hashbrown maps)
//!   ──► closed windows as lines ──► ClusterWriter: same ring as raw data,
//!       database of the points, retention policy <rp_prefix><window>
//! ```
//!
//! No checkpoints: a restart re-reads the lookback and rebuilds the open
//! windows; windows that may start before the re-read range are never
//! emitted (the exact rule is in `docs/downsampler.md`). Rollups are
//! idempotent overwrites (same series, same window start), so a re-read
//! window is written again with the same values.
//!
//! # Layout
//! - [`window`]: the windows and the replay rule (no I/O).
//! - this file: partitions, the consumer loop, writing, metrics.

pub mod window;

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use tokio::net::TcpListener;
use trident_influx_client::ClusterWriter;
use trident_service::config::{Config, Service};
use trident_service::health::{Health, Status};
use trident_service::shutdown::Shutdown;

use window::{Aggregates, Rollups, Settings};

/// Which configuration sections this service validates.
pub const SERVICE: Service = Service::Downsampler;

/// Why the downsampler cannot run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cluster topology in the configuration is not usable.
    #[error("invalid cluster topology: {0}")]
    Topology(#[from] trident_cluster::Error),
    /// The InfluxDB client could not be built.
    #[error(transparent)]
    Influx(#[from] trident_influx_client::Error),
    /// The aggregates listed are not usable.
    #[error("{0}")]
    Partitions(String),
    /// Serving, metrics or signals failed.
    #[error(transparent)]
    Service(#[from] trident_service::Error),
    /// The emit log could not be written.
    #[error("downsampler.emit_log {path}: {source}")]
    EmitLog {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
}

/// The retention-policy suffix of a window size: `1m`, `5m`, `1h`, `90s`.
pub fn window_label(window: Duration) -> String {
    let s = window.as_secs();
    if s > 0 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s > 0 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else if window.subsec_nanos() == 0 {
        format!("{s}s")
    } else {
        format!("{}ms", window.as_millis())
    }
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, nanos)
}

/// Rollup lines waiting to be written, by (database, retention policy).
#[derive(Debug, Default)]
struct Pending {
    lines: BTreeMap<(String, String), String>,
    bytes: usize,
}

/// Runs the downsampler until `shutdown` fires; `/health` and `/metrics`
/// on `admin`.
pub async fn run(config: Config, admin: TcpListener, shutdown: Shutdown) -> Result<(), Error> {
    let d = &config.downsampler;
    let health = Health::new("trident-downsampler", env!("CARGO_PKG_VERSION"));
    let (topology, tracker) = trident_service::topology::tracked(&config, &health).await?;
    let writer = ClusterWriter::new(
        topology.validate()?,
        config.influx.timeout,
        config.influx.gzip,
    )?;
    // Rollups go where the topology in use places them.
    let following = writer.clone();
    tracker.follow("downsampler", &shutdown, move |placement| {
        following.set_placement(placement);
        Ok(())
    });
    let metrics = trident_service::telemetry::metrics()?;
    let app = trident_service::admin::router(health.clone(), metrics);
    let stop_admin = shutdown.triggered();
    tokio::spawn(async move {
        if let Err(e) = trident_service::admin::serve(admin, app, stop_admin).await {
            tracing::error!(error = %e, "the admin endpoint stopped");
        }
    });

    let topic = config.kafka.raw_topic.clone();
    let started = now_nanos();
    let replay_from = started - nanos(d.lookback);
    let pinned = trident_service::pinned::pin(trident_service::pinned::PinOptions {
        brokers: &config.kafka.brokers,
        topic: &topic,
        instance: d.instance,
        instances: d.instances,
        partitions: &d.partitions,
        replay_from_ms: replay_from / 1_000_000,
        resume: &std::collections::HashMap::new(),
        timeout: config.kafka.delivery_timeout,
    })
    .await?;
    let (consumer, owned, count) = (pinned.consumer, pinned.partitions, pinned.count);
    tracing::info!(?owned, of = count, lookback = ?d.lookback, "partitions assigned; re-reading the lookback");
    health.set(
        "partitions",
        Status::Up,
        format!(
            "{owned:?} of {count}, instance {} of {}",
            d.instance, d.instances
        ),
    );
    metrics::gauge!("trident_downsampler_partitions_owned").set(owned.len() as f64);

    let aggregates = Aggregates::from_names(&d.aggregates)
        .map_err(|a| Error::Partitions(format!("unknown aggregate {a}")))?;
    let mut rollups = Rollups::new(Settings {
        windows: d.windows.iter().map(|w| nanos(*w)).collect(),
        lateness: nanos(d.lateness),
        future_skew: nanos(d.future_skew),
        emit_from: replay_from.saturating_add(nanos(d.future_skew)),
        aggregates,
    });
    let labels: Vec<String> = d.windows.iter().map(|w| window_label(*w)).collect();
    let mut emit_log = if d.emit_log.as_os_str().is_empty() {
        None
    } else {
        Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&d.emit_log)
                .map_err(|source| Error::EmitLog {
                    path: d.emit_log.display().to_string(),
                    source,
                })?,
        )
    };

    let mut pending = Pending::default();
    let mut positions: HashMap<i32, i64> = HashMap::new();
    let mut skipped_old = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut lag_tick = tokio::time::interval(Duration::from_secs(5));
    let stop = shutdown.triggered();
    tokio::pin!(stop);
    let mut consuming = false;
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = tick.tick() => {
                flush(&writer, &mut pending, &mut emit_log, &shutdown).await;
                publish(&rollups, skipped_old);
            }
            _ = lag_tick.tick() => {
                report_lag(&consumer, &topic, &positions).await;
            }
            message = consumer.recv() => {
                let Some(message) = trident_service::pinned::received(message, &health, &mut consuming) else {
                    continue;
                };
                let partition = message.partition();
                positions.insert(partition, message.offset());
                let ingest = message.timestamp().to_millis().unwrap_or(0).saturating_mul(1_000_000);
                if ingest < replay_from {
                    skipped_old += 1;
                    continue;
                }
                let header = |name: &str| {
                    message.headers().and_then(|h| {
                        h.iter()
                            .find(|h| h.key == name)
                            .and_then(|h| h.value)
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                    })
                };
                let Some(db) = header("db").filter(|d| !d.is_empty()) else {
                    metrics::counter!("trident_downsampler_records_skipped_total", "reason" => "no_db").increment(1);
                    continue;
                };
                let rp = header("rp").unwrap_or_default();
                let target = rollups.target(&db, &rp);
                let payload = message.payload().unwrap_or_default();
                for line in trident_line_protocol::parse_lines(payload) {
                    match line {
                        Ok(line) => rollups.add(partition, target, &line, ingest),
                        Err(_) => metrics::counter!("trident_downsampler_lines_skipped_total", "reason" => "unparsable").increment(1),
                    }
                }
                metrics::counter!("trident_downsampler_records_total").increment(1);
                for emitted in rollups.close(partition) {
                    let db = emitted.target.split('\0').next().unwrap_or_default().to_owned();
                    let rp = format!("{}{}", d.rp_prefix, labels[emitted.window]);
                    pending.bytes += emitted.lines.len();
                    pending.lines.entry((db, rp)).or_default().push_str(&emitted.lines);
                }
                if pending.bytes > 1 << 20 {
                    flush(&writer, &mut pending, &mut emit_log, &shutdown).await;
                }
            }
        }
    }
    // Closed windows not yet written are written before the end.
    flush(&writer, &mut pending, &mut emit_log, &shutdown).await;
    publish(&rollups, skipped_old);
    Ok(())
}

/// Writes what is pending, retrying a cluster that is unavailable (the
/// consumer waits meanwhile, so memory stays bounded) until `shutdown`.
async fn flush(
    writer: &ClusterWriter,
    pending: &mut Pending,
    emit_log: &mut Option<std::fs::File>,
    shutdown: &Shutdown,
) {
    let batches = std::mem::take(&mut pending.lines);
    pending.bytes = 0;
    for ((db, rp), lines) in batches {
        let mut wait = Duration::from_millis(100);
        loop {
            match writer.write(&db, &rp, lines.as_bytes()).await {
                Ok(()) => {
                    metrics::counter!("trident_downsampler_rollup_lines_total")
                        .increment(lines.lines().count() as u64);
                    if let Some(log) = emit_log.as_mut() {
                        for line in lines.lines() {
                            let _ = writeln!(log, "{db}\t{rp}\t{line}");
                        }
                    }
                    break;
                }
                Err(trident_influx_client::Error::Unavailable { node, reason }) => {
                    tracing::warn!(%node, %reason, ?wait, "rollups not written; retrying");
                    if shutdown.is_triggered() {
                        tracing::error!(
                            db,
                            rp,
                            "stopping with rollups unwritten; a restart recomputes them"
                        );
                        break;
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    tracing::error!(db, rp, error = %e, "rollups refused by the cluster; dropped");
                    metrics::counter!("trident_downsampler_rollup_lines_dropped_total")
                        .increment(lines.lines().count() as u64);
                    break;
                }
            }
        }
    }
}

fn publish(rollups: &Rollups, skipped_old: u64) {
    let c = rollups.counters();
    metrics::counter!("trident_downsampler_late_points_total").absolute(c.late);
    metrics::counter!("trident_downsampler_future_points_total").absolute(c.future);
    metrics::counter!("trident_downsampler_type_conflicts_total").absolute(c.type_conflicts);
    metrics::counter!("trident_downsampler_windows_emitted_total").absolute(c.emitted);
    metrics::counter!("trident_downsampler_windows_withheld_total").absolute(c.withheld);
    metrics::counter!("trident_downsampler_records_before_lookback_total").absolute(skipped_old);
    metrics::gauge!("trident_downsampler_windows_open").set(rollups.open_windows() as f64);
    metrics::gauge!("trident_downsampler_interned_strings").set(rollups.interned() as f64);
    if let Some(rss) = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
    {
        metrics::gauge!("trident_downsampler_rss_bytes").set(rss * 4096.0);
    }
}

async fn report_lag(consumer: &Arc<StreamConsumer>, topic: &str, positions: &HashMap<i32, i64>) {
    let (consumer, topic, positions) = (consumer.clone(), topic.to_owned(), positions.clone());
    let lags = tokio::task::spawn_blocking(move || {
        positions
            .iter()
            .filter_map(|(&p, &offset)| {
                let (_, high) = consumer
                    .fetch_watermarks(&topic, p, Duration::from_secs(1))
                    .ok()?;
                Some((p, (high - offset - 1).max(0)))
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    for (p, lag) in lags {
        metrics::gauge!("trident_downsampler_lag_records", "partition" => p.to_string())
            .set(lag as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_sizes_name_their_retention_policies() {
        assert_eq!(window_label(Duration::from_secs(60)), "1m");
        assert_eq!(window_label(Duration::from_secs(300)), "5m");
        assert_eq!(window_label(Duration::from_secs(3600)), "1h");
        assert_eq!(window_label(Duration::from_secs(90)), "90s");
        assert_eq!(window_label(Duration::from_millis(1500)), "1500ms");
    }
}
