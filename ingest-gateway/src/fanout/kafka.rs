//! The raw topic: every accepted line, so that downsamplers and the
//! ClickHouse writer can consume, and replay, what was written.
//!
//! Lines are grouped by shard key within a request; each group is one
//! record whose key is that shard key, so one series (or measurement, under
//! the coarser strategies) always lands in one partition — what lets a
//! downsampler own whole series. Records carry `db` and `rp` headers, their
//! timestamp is the time of ingest, and the producer is idempotent with
//! `acks=all`. A write is acknowledged only after the broker acknowledged
//! every record (no spool yet: a broker that is down is a 503).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::Routed;
use crate::http::request::WriteTarget;

/// Why the raw topic did not take a write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the raw topic is unavailable: {0}")]
pub struct KafkaUnavailable(pub String);

/// Appends accepted lines to the raw topic.
#[derive(Clone)]
pub struct RawSink {
    producer: FutureProducer,
    topic: String,
    timeout: Duration,
}

impl std::fmt::Debug for RawSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawSink")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl RawSink {
    /// A producer for `topic` on `brokers`.
    pub fn new(
        brokers: &[String],
        topic: &str,
        compression: &str,
        timeout: Duration,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers.join(","))
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", compression)
            .set("linger.ms", "5")
            .set("message.timeout.ms", timeout.as_millis().to_string())
            .create()?;
        Ok(Self {
            producer,
            topic: topic.to_owned(),
            timeout,
        })
    }

    /// Appends the routed lines, one record per shard key.
    pub async fn write(
        &self,
        target: &WriteTarget,
        routed: &Routed,
    ) -> Result<(), KafkaUnavailable> {
        // Records in the order their keys first appear in the request.
        let mut groups: HashMap<&[u8], Vec<u8>> = HashMap::new();
        let mut order: Vec<&[u8]> = Vec::new();
        for i in 0..routed.len() {
            let key = routed.key(i);
            groups
                .entry(key)
                .or_insert_with(|| {
                    order.push(key);
                    Vec::new()
                })
                .extend_from_slice(routed.text(i));
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or_default();
        let rp = target.rp.as_deref().unwrap_or("");
        let mut deliveries = Vec::with_capacity(order.len());
        for key in order {
            let payload = &groups[key];
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "db",
                    value: Some(target.db.as_str()),
                })
                .insert(Header {
                    key: "rp",
                    value: Some(rp),
                });
            let record = FutureRecord::to(&self.topic)
                .key(key)
                .payload(payload.as_slice())
                .headers(headers)
                .timestamp(now_ms);
            // Enqueue all records first, then wait: many in flight at once.
            match self.producer.send_result(record) {
                Ok(delivery) => deliveries.push(delivery),
                Err((e, _)) => return Err(KafkaUnavailable(e.to_string())),
            }
        }
        for delivery in deliveries {
            match tokio::time::timeout(self.timeout + Duration::from_secs(1), delivery).await {
                Ok(Ok(Ok(_))) => {}
                Ok(Ok(Err((e, _)))) => return Err(KafkaUnavailable(e.to_string())),
                Ok(Err(_)) => return Err(KafkaUnavailable("the producer was dropped".into())),
                Err(_) => return Err(KafkaUnavailable("no acknowledgement in time".into())),
            }
        }
        Ok(())
    }
}
