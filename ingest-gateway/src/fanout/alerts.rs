//! The alert topic: the points some alert rule looks at (or all of them,
//! or none — `gateway.alerts`), on the alert stream's own brokers.
//!
//! Best effort by design: a write never waits for this path. Records go
//! into librdkafka's bounded queue (`gateway.alert_queue_records`); when it
//! is full — the alert brokers are slow or down — the points are dropped
//! and counted (`trident_gateway_alert_dropped_total`), and delivery
//! failures are counted by the producer's own thread.
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
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use trident_alert_rules::RuleSet;
use trident_line_protocol::Line;
use trident_service::config::AlertPoints;
use trident_service::health::{Health, Status};
use trident_service::shutdown::Shutdown;

use super::Routed;
use crate::http::request::WriteTarget;

/// Counts what the alert brokers did not take.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountDrops;

impl ClientContext for CountDrops {}

impl ProducerContext for CountDrops {
    /// The number of lines in the record.
    type DeliveryOpaque = usize;

    /// Only failures are reported (`delivery.report.only.error`).
    fn delivery(&self, result: &DeliveryResult<'_>, lines: usize) {
        if result.is_err() {
            metrics::counter!("trident_gateway_alert_dropped_total", "reason" => "delivery")
                .increment(lines as u64);
        }
    }
}

/// Sends points to the alert topic without ever making a write wait.
#[derive(Clone)]
pub struct AlertSink {
    producer: Arc<BaseProducer<CountDrops>>,
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
        let producer: BaseProducer<CountDrops> = ClientConfig::new()
            .set("bootstrap.servers", brokers.join(","))
            .set("acks", "1")
            // Successes are counted when handed over; only failures report.
            .set("delivery.report.only.error", "true")
            .set("linger.ms", "5")
            .set("compression.type", compression)
            .set("queue.buffering.max.messages", queue_records.to_string())
            .set("message.timeout.ms", timeout.as_millis().to_string())
            .create_with_context(CountDrops)?;
        Ok(Self {
            producer: super::producer::polled(producer),
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
        usize::try_from(self.producer.in_flight_count()).unwrap_or(0)
    }

    /// Waits up to `timeout` for the points still queued to reach the
    /// broker: at shutdown, after the last request, so that a restart
    /// does not drop what was already offered. What is left then is
    /// logged and dropped (the path is best effort).
    pub async fn flush(&self, timeout: Duration) {
        let producer = self.producer.clone();
        let flushed =
            tokio::task::spawn_blocking(move || producer.flush(timeout).map_err(|e| e.to_string()))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r);
        if let Err(e) = flushed {
            let queued = self.producer.in_flight_count();
            tracing::warn!(error = %e, queued, "alert points still queued at shutdown were dropped");
            metrics::counter!("trident_gateway_alert_dropped_total", "reason" => "shutdown")
                .increment(u64::try_from(queued).unwrap_or(0));
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
        let rp = target.rp.as_deref().unwrap_or("");
        for (key, members) in &groups {
            let payload = routed.joined(members);
            let count = members.len();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "db",
                    value: Some(target.db.as_str()),
                })
                .insert(Header {
                    key: "rp",
                    value: Some(rp),
                });
            let record = BaseRecord::with_opaque_to(&self.topic, count)
                .key(*key)
                .payload(payload.as_slice())
                .headers(headers)
                .timestamp(now_ms);
            match self.producer.send(record) {
                Ok(()) => {
                    metrics::counter!("trident_gateway_alert_lines_total").increment(count as u64)
                }
                Err((e, _)) => {
                    tracing::debug!(error = %e, "alert point dropped");
                    metrics::counter!("trident_gateway_alert_dropped_total", "reason" => "queue_full")
                        .increment(count as u64);
                }
            }
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
