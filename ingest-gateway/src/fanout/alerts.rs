//! The alert topic: the points some alert rule looks at (or all of them,
//! or none — `gateway.alerts`), on the alert stream's own brokers.
//!
//! Best effort by design: a write never waits for this path. Records go
//! into a queue that one task empties, everything queued meanwhile in one
//! Produce request (`acks=1`). A request that fails is tried again, with
//! backoff, until its oldest record is `kafka.delivery_timeout` old; then
//! its points are dropped and counted
//! (`trident_gateway_alert_dropped_total{reason="delivery"}`). At most
//! `gateway.alert_queue_records` records are held, queued or in flight:
//! while the alert brokers are slow or down, what does not fit is dropped
//! and counted (`reason="queue_full"`).
//!
//! Records are keyed by **measurement**, so every series of a measurement
//! reaches one partition and one alerter instance can evaluate group-by
//! rules across series. Each record carries the lines of one measurement
//! of one request, with `db`/`rp` headers and the ingest time.
//!
//! The rules file is read at start and re-read when it changes; a file
//! that does not parse keeps the previous rules (and says so in `/health`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;
use trident_alert_rules::RuleSet;
use trident_kafka_wire::{Compression, Record};
use trident_line_protocol::{Line, shard_hash};
use trident_service::config::AlertPoints;
use trident_service::health::{Health, Status};
use trident_service::shutdown::Shutdown;

use super::producer::{Producer, Settings};
use super::{Backoff, Routed};
use crate::http::request::WriteTarget;

/// Bytes of records in one Produce request at most.
const REQUEST_BYTES: usize = 4 << 20;

/// One record on its way to the alert topic.
#[derive(Debug)]
struct Queued {
    /// The measurement.
    key: String,
    payload: Bytes,
    lines: usize,
    db: Arc<str>,
    rp: Arc<str>,
    timestamp_ms: i64,
}

/// Sends points to the alert topic without ever making a write wait.
#[derive(Clone)]
pub struct AlertSink {
    producer: Producer,
    /// Where `offer` puts records; the delivering task starts with the
    /// first (as the raw topic's group task does).
    queue: Arc<OnceLock<mpsc::UnboundedSender<Queued>>>,
    /// Records offered and not yet answered or dropped...
    queued: Arc<AtomicUsize>,
    /// ...at most this many.
    capacity: usize,
    timeout: Duration,
    topic: String,
    mode: AlertPoints,
    rules: Arc<RwLock<Arc<RuleSet>>>,
    rules_path: PathBuf,
}

impl std::fmt::Debug for AlertSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertSink")
            .field("topic", &self.topic)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl AlertSink {
    /// A producer for `topic` on the alert brokers; in `matching` mode the
    /// rules file is read now (an invalid file stops the start, with its
    /// line and column).
    pub fn new(
        brokers: &[String],
        topic: &str,
        mode: AlertPoints,
        rules_path: &Path,
        queue_records: usize,
        timeout: Duration,
        compression: &str,
    ) -> Result<Self, crate::Error> {
        let rules = if mode == AlertPoints::Matching && !rules_path.as_os_str().is_empty() {
            RuleSet::load(rules_path)?
        } else {
            RuleSet::default()
        };
        let compression = Compression::named(compression).ok_or_else(|| {
            crate::Error::Kafka(format!(
                "kafka.compression = {compression:?}: the gateway writes none, gzip or lz4"
            ))
        })?;
        let producer = Producer::new(Settings {
            bootstrap: brokers.to_vec(),
            topic: topic.to_owned(),
            acks: 1,
            idempotent: false,
            compression,
            timeout,
            client_id: "trident-gateway-alerts".to_owned(),
        });
        Ok(Self {
            producer,
            queue: Arc::default(),
            queued: Arc::default(),
            capacity: queue_records,
            timeout,
            topic: topic.to_owned(),
            mode,
            rules: Arc::new(RwLock::new(Arc::new(rules))),
            rules_path: rules_path.to_owned(),
        })
    }

    /// How many rules are in use.
    pub fn rule_count(&self) -> usize {
        self.current().rules().len()
    }

    fn current(&self) -> Arc<RuleSet> {
        self.rules.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reports its state in `health` and, in `matching` mode with a rules
    /// file, re-reads the file when it changes until `shutdown`.
    pub fn start(&self, shutdown: &Shutdown, health: &Health) {
        let describe = |sink: &AlertSink| match sink.mode {
            AlertPoints::Off => (Status::Up, "off (gateway.alerts)".to_owned()),
            AlertPoints::All => (Status::Up, "every point".to_owned()),
            AlertPoints::Matching => (
                Status::Up,
                format!("points matching {} rules", sink.rule_count()),
            ),
        };
        let (status, detail) = describe(self);
        health.set("sink:alerts", status, detail);
        if self.mode != AlertPoints::Matching || self.rules_path.as_os_str().is_empty() {
            return;
        }
        let (sink, health, stop) = (self.clone(), health.clone(), shutdown.triggered());
        tokio::spawn(async move {
            let watch = async {
                let mut seen = modified(&sink.rules_path);
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let now = modified(&sink.rules_path);
                    if now == seen {
                        continue;
                    }
                    seen = now;
                    match RuleSet::load(&sink.rules_path) {
                        Ok(rules) => {
                            tracing::info!(rules = rules.rules().len(), "alert rules reloaded");
                            *sink.rules.write().unwrap_or_else(|e| e.into_inner()) =
                                Arc::new(rules);
                            let (status, detail) = describe(&sink);
                            health.set("sink:alerts", status, detail);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "alert rules not reloaded; keeping the previous ones");
                            health.set(
                                "sink:alerts",
                                Status::Degraded,
                                format!("{e} (keeping {} rules)", sink.rule_count()),
                            );
                        }
                    }
                }
            };
            tokio::select! {
                () = watch => {}
                () = stop => {}
            }
        });
    }

    /// Records queued for the alert topic and not yet delivered.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Waits up to `timeout` for the points still queued to reach the
    /// broker: at shutdown, after the last request, so that a restart
    /// does not drop what was already offered. What is left then is
    /// logged and dropped (the path is best effort).
    pub async fn flush(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.queued() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let queued = self.queued();
        if queued > 0 {
            tracing::warn!(queued, "alert points still queued at shutdown were dropped");
            metrics::counter!("trident_gateway_alert_dropped_total", "reason" => "shutdown")
                .increment(queued as u64);
        }
    }

    /// Offers the accepted `lines` (routed as `routed`) to the alert topic.
    /// Never waits; what does not fit is dropped and counted.
    pub fn offer(&self, target: &WriteTarget, lines: &[Line<'_>], routed: &Routed<'_>) {
        if self.mode == AlertPoints::Off {
            return;
        }
        let rules = self.current();
        // The lines of each measurement, in order of first appearance;
        // each payload is then joined in one buffer sized once. A write's
        // points mostly come in runs of one measurement (Telegraf sends a
        // plugin's points together): the last group is tried before the
        // hash (without it, scripts/bench-ab: 1.026, 1.000, 1.039, 1.013).
        let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut last = usize::MAX;
        for (i, line) in lines.iter().enumerate() {
            if self.mode == AlertPoints::Matching && !rules.wants(line) {
                continue;
            }
            let key = line.measurement().raw();
            if groups.get(last).is_none_or(|(k, _)| *k != key) {
                last = *index.entry(key).or_insert_with(|| {
                    groups.push((key, Vec::new()));
                    groups.len() - 1
                });
            }
            groups[last].1.push(i);
        }
        if groups.is_empty() {
            return;
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or_default();
        let db: Arc<str> = target.db.as_str().into();
        let rp: Arc<str> = target.rp.as_deref().unwrap_or("").into();
        for (key, members) in &groups {
            let count = members.len();
            let record = Queued {
                key: (*key).to_owned(),
                payload: Bytes::from(routed.joined(members)),
                lines: count,
                db: db.clone(),
                rp: rp.clone(),
                timestamp_ms: now_ms,
            };
            let held = self.queued.fetch_add(1, Ordering::Relaxed) < self.capacity;
            let queue = self.queue.get_or_init(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(deliver(
                    self.producer.clone(),
                    rx,
                    self.queued.clone(),
                    self.timeout,
                ));
                tx
            });
            if held && queue.send(record).is_ok() {
                metrics::counter!("trident_gateway_alert_lines_total").increment(count as u64);
            } else {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                tracing::debug!("alert queue full; points dropped");
                metrics::counter!("trident_gateway_alert_dropped_total", "reason" => "queue_full")
                    .increment(count as u64);
            }
        }
    }
}

/// Takes what is queued, all of it (up to [`REQUEST_BYTES`]) in one
/// request, until every sender is gone. A failed request is tried again
/// until its oldest record is `timeout` old, then its points are dropped
/// and counted.
async fn deliver(
    producer: Producer,
    mut queue: mpsc::UnboundedReceiver<Queued>,
    queued: Arc<AtomicUsize>,
    timeout: Duration,
) {
    let mut partitions = 0u32;
    let mut backoff = Backoff::new(Duration::from_secs(1));
    while let Some(first) = queue.recv().await {
        let since = Instant::now();
        let mut bytes = first.payload.len();
        let mut batch = vec![first];
        while bytes < REQUEST_BYTES {
            match queue.try_recv() {
                Ok(next) => {
                    bytes += next.payload.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        loop {
            match produce(&producer, &mut partitions, &batch).await {
                Ok(()) => {
                    backoff.reset();
                    break;
                }
                Err(e) if since.elapsed() >= timeout => {
                    let lines: usize = batch.iter().map(|q| q.lines).sum();
                    tracing::debug!(error = %e, lines, "alert points dropped");
                    metrics::counter!("trident_gateway_alert_dropped_total", "reason" => "delivery")
                        .increment(lines as u64);
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "alert points not delivered yet; trying again");
                    tokio::time::sleep(backoff.next_wait()).await;
                }
            }
        }
        queued.fetch_sub(batch.len(), Ordering::Relaxed);
    }
}

/// Produces `batch`, each record to the partition of its measurement
/// (XXH3 modulo the topic's partition count, learnt once).
async fn produce(
    producer: &Producer,
    partitions: &mut u32,
    batch: &[Queued],
) -> Result<(), String> {
    if *partitions == 0 {
        *partitions = producer.partitions().await?;
    }
    let headers: Vec<[(&str, &[u8]); 2]> = batch
        .iter()
        .map(|q| [("db", q.db.as_bytes()), ("rp", q.rp.as_bytes())])
        .collect();
    let n = u64::from(*partitions);
    let mut by_partition: Vec<Vec<Record<'_>>> = (0..n).map(|_| Vec::new()).collect();
    for (q, headers) in batch.iter().zip(&headers) {
        by_partition[(shard_hash(q.key.as_bytes()) % n) as usize].push(Record {
            key: q.key.as_bytes(),
            value: std::slice::from_ref(&q.payload),
            timestamp_ms: q.timestamp_ms,
            headers,
        });
    }
    let batches = by_partition
        .into_iter()
        .enumerate()
        .filter(|(_, r)| !r.is_empty())
        .map(|(p, r)| (i32::try_from(p).unwrap_or(i32::MAX), r))
        .collect();
    producer.produce(batches).await
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
