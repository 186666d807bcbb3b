//! Partition pinning with a lookback re-read, shared by the services that
//! keep no checkpoints (downsampler, alerter):
//!
//! ```text
//! topic metadata ──owned_partitions(i of n)──► [p, …]
//!   ──offsets_for_times(start − lookback − 1 min)──► assign() (no group)
//! ```
//!
//! Records older than the lookback start are the caller's to skip: a
//! broker may answer an earlier offset than asked.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::{Error, Result};

/// The partitions instance `instance` of `instances` owns out of `count`
/// (`p % instances == instance`), or the explicit list, checked to exist.
pub fn owned_partitions(
    count: i32,
    instance: u32,
    instances: u32,
    explicit: &[i32],
) -> std::result::Result<Vec<i32>, String> {
    if !explicit.is_empty() {
        if let Some(p) = explicit.iter().find(|&&p| p < 0 || p >= count) {
            return Err(format!(
                "partitions lists {p}, but the topic has partitions 0..{count}"
            ));
        }
        let mut owned = explicit.to_vec();
        owned.sort_unstable();
        owned.dedup();
        return Ok(owned);
    }
    Ok((0..count)
        .filter(|p| u32::try_from(*p).is_ok_and(|p| p % instances.max(1) == instance))
        .collect())
}

/// A consumer of `topic` on `brokers`, assigned the partitions this
/// instance owns and positioned at `replay_from_ms` (record time, ms)
/// minus a minute. Also answers the partitions and, for each, the offset
/// the topic ended at when assigned (what counts as re-read history).
#[derive(Clone)]
pub struct Pinned {
    /// The consumer.
    pub consumer: Arc<StreamConsumer>,
    /// Owned partitions.
    pub partitions: Vec<i32>,
    /// The topic's partition count.
    pub count: i32,
    /// Per owned partition, the end offset at assignment.
    pub ends: HashMap<i32, i64>,
    /// Per owned partition, the offset it was assigned at: where reading
    /// starts. A partition that starts at or past its end has no history
    /// to re-read.
    pub starts: Vec<(i32, i64)>,
}

impl Pinned {
    /// The partitions with history to re-read (assigned before their
    /// end), each with the end it had at assignment.
    pub fn history(&self) -> HashMap<i32, i64> {
        self.starts
            .iter()
            .filter_map(|&(p, start)| {
                let end = self.ends.get(&p).copied().unwrap_or(0);
                (start < end).then_some((p, end))
            })
            .collect()
    }

    /// Reports the owned partitions as health component `partitions`.
    pub fn report(&self, health: &crate::health::Health) {
        health.set(
            "partitions",
            crate::health::Status::Up,
            format!("{:?} of {}", self.partitions, self.count),
        );
    }
}

impl std::fmt::Debug for Pinned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pinned")
            .field("partitions", &self.partitions)
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

/// A record from the consumer, or `None` after reporting why not: the
/// `consumer` health component turns degraded on an error and up again on
/// the next record, written only when it changes (`up` remembers), since
/// this runs once per record.
pub fn received<T, E: std::fmt::Display>(
    result: std::result::Result<T, E>,
    health: &crate::health::Health,
    up: &mut bool,
) -> Option<T> {
    match result {
        Ok(record) => {
            if !*up {
                health.set("consumer", crate::health::Status::Up, "");
                *up = true;
            }
            Some(record)
        }
        Err(e) => {
            tracing::warn!(error = %e, "reading the topic failed");
            health.set("consumer", crate::health::Status::Degraded, e.to_string());
            *up = false;
            None
        }
    }
}

/// What to pin.
#[derive(Debug, Clone)]
pub struct PinOptions<'a> {
    /// Bootstrap brokers.
    pub brokers: &'a [String],
    /// The topic.
    pub topic: &'a str,
    /// This instance, 0-based.
    pub instance: u32,
    /// How many instances.
    pub instances: u32,
    /// Explicit partitions (empty: by instance).
    pub partitions: &'a [i32],
    /// Re-read from this record time, ms since the epoch.
    pub replay_from_ms: i64,
    /// Next offsets to read, per partition, that win over the time (where
    /// a consumer stored its own position).
    pub resume: &'a HashMap<i32, i64>,
    /// Bound on each broker round trip.
    pub timeout: Duration,
}

/// Pins a consumer as `options` say.
pub async fn pin(options: PinOptions<'_>) -> Result<Pinned> {
    let kafka = |what: &str, e: &dyn std::fmt::Display| Error::Kafka(format!("{what}: {e}"));
    let consumer: Arc<StreamConsumer> = Arc::new(
        ClientConfig::new()
            .set("bootstrap.servers", options.brokers.join(","))
            // Required by librdkafka; never joined: partitions are assigned.
            .set("group.id", "trident-pinned")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // A position the broker no longer holds (retention deleted
            // it) resumes at the oldest record left, not at the end: the
            // records after it are still there to be read.
            .set("auto.offset.reset", "earliest")
            .create()
            .map_err(|e| kafka("cannot create the consumer", &e))?,
    );
    let (c, topic, timeout) = (consumer.clone(), options.topic.to_owned(), options.timeout);
    let count = tokio::task::spawn_blocking(move || {
        c.fetch_metadata(Some(&topic), timeout).map(|m| {
            m.topics()
                .iter()
                .find(|t| t.name() == topic)
                .map_or(0, |t| t.partitions().len())
        })
    })
    .await
    .map_err(|e| kafka("metadata", &e))?
    .map_err(|e| kafka("cannot read the topic's metadata", &e))?;
    let count = i32::try_from(count).unwrap_or(0);
    if count == 0 {
        return Err(Error::Kafka(format!(
            "topic {} has no partitions: create it",
            options.topic
        )));
    }
    let partitions = owned_partitions(
        count,
        options.instance,
        options.instances,
        options.partitions,
    )
    .map_err(Error::Kafka)?;
    let mut wanted = TopicPartitionList::new();
    for &p in &partitions {
        wanted
            .add_partition_offset(
                options.topic,
                p,
                Offset::Offset((options.replay_from_ms - 60_000).max(0)),
            )
            .map_err(|e| kafka("partition list", &e))?;
    }
    let (c, topic) = (consumer.clone(), options.topic.to_owned());
    let owned = partitions.clone();
    let (offsets, ends) = tokio::task::spawn_blocking(move || {
        let offsets = c.offsets_for_times(wanted, timeout)?;
        let mut ends = HashMap::new();
        for p in owned {
            let (_, high) = c.fetch_watermarks(&topic, p, timeout)?;
            ends.insert(p, high);
        }
        Ok::<_, rdkafka::error::KafkaError>((offsets, ends))
    })
    .await
    .map_err(|e| kafka("seek", &e))?
    .map_err(|e| kafka("cannot find the lookback's offsets", &e))?;
    let mut assignment = TopicPartitionList::new();
    let mut starts = Vec::new();
    for element in offsets.elements() {
        let end = ends.get(&element.partition()).copied().unwrap_or(0);
        // Explicit offsets only (no "end" marker): nothing newer than the
        // lookback start means the end as it was at assignment.
        let start = match (options.resume.get(&element.partition()), element.offset()) {
            (Some(&stored), _) => stored,
            (None, Offset::Offset(o)) if o >= 0 => o,
            _ => end,
        };
        starts.push((element.partition(), start));
        assignment
            .add_partition_offset(options.topic, element.partition(), Offset::Offset(start))
            .map_err(|e| kafka("assignment", &e))?;
    }
    consumer
        .assign(&assignment)
        .map_err(|e| kafka("cannot assign the partitions", &e))?;
    Ok(Pinned {
        consumer,
        partitions,
        count,
        ends,
        starts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_split_the_partitions_without_overlap_or_gap() {
        for count in [1, 4, 7, 8] {
            for instances in 1..=4u32 {
                let mut all: Vec<i32> = (0..instances)
                    .flat_map(|i| owned_partitions(count, i, instances, &[]).unwrap())
                    .collect();
                all.sort_unstable();
                assert_eq!(
                    all,
                    (0..count).collect::<Vec<_>>(),
                    "{count} over {instances}"
                );
            }
        }
        assert_eq!(owned_partitions(8, 0, 1, &[5, 2, 5]).unwrap(), [2, 5]);
        let e = owned_partitions(4, 0, 1, &[4]).unwrap_err();
        assert!(e.contains("0..4"), "{e}");
    }
}
