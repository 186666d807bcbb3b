//! The raw topic: every accepted line, so that downsamplers and the
//! ClickHouse writer can consume, and replay, what was written.
//!
//! Each line goes to the partition of its shard key (XXH3 modulo the
//! partition count), so one series (or measurement, under the coarser
//! strategies) always lands in one partition — what lets a downsampler own
//! whole series. A partition's lines of a write travel together, in order,
//! in records of at most 512 KiB keyed by the shard key of their first
//! line; consumers take each line's key from the line. Writes that arrive
//! while four produce groups are in flight share records (group commit).
//! Records carry `db` and `rp` headers, their timestamp is the time of
//! ingest (the newest of a group), and the producer is idempotent with
//! `acks=all`.
//!
//! A write is acknowledged once the broker acknowledged every record, or —
//! when the broker does not answer within `kafka.delivery_timeout` — once
//! the request's records are in the on-disk spool; while the spool is not
//! empty new writes go to it too, so records keep their order. A replayer
//! produces the spool back, in order, when the broker returns: each line in
//! its shard key's partition, consecutive requests joined into larger
//! records that carry the newest joined ingest time. Spooled records are
//! delivered at least once: a record the broker stored but did not
//! acknowledge in time is produced again.
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use trident_kafka_wire::{Compression, Record};
use trident_service::health::{Health, Status};
use trident_service::shutdown::Shutdown;

use trident_line_protocol::shard_hash;

use super::producer::{Pending, Producer, Settings};
use super::{Backoff, GroupLimits, Routed, group_commit};
use crate::http::request::WriteTarget;
use crate::spool::{self, Spool};

/// A record being gathered: the key of its first entry, its entries'
/// pieces (its value, sent without joining them) and their bytes.
type Pieces<'a> = (&'a [u8], Vec<Bytes>, usize);

/// Keys and payloads of a write's records.
type Records = Arc<[(Vec<u8>, Bytes)]>;

/// Why the raw topic did not take a write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the raw topic is unavailable: {0}")]
pub struct KafkaUnavailable(pub String);

/// Appends accepted lines to the raw topic.
#[derive(Clone)]
pub struct RawSink {
    /// Idempotent, `acks=all`; it resets itself after a failure.
    producer: Producer,
    /// The topic's partition count; 0 until known.
    partitions: Arc<AtomicU32>,
    topic: String,
    spool: Spool,
    /// Writes on their way to a produce group; the task starts with the
    /// first write.
    groups: Arc<OnceLock<mpsc::UnboundedSender<SharedPart>>>,
}

/// Produce groups in flight at once; writes that arrive meanwhile share
/// the next one.
const PRODUCE_GROUPS: usize = 4;

/// While a produce group is in flight, how long the next one waits for
/// more writes (none when idle; see [`group_commit`]). Measured at 50-line
/// writes: 7 % less gateway CPU per line than no wait (docs/benchmarks.md).
const PRODUCE_LINGER: Duration = Duration::from_millis(2);

/// Bytes of lines in one produce group at most (records within it are cut
/// at [`RECORD_BYTES`]).
const GROUP_BYTES: usize = 4 << 20;

/// One write on its way to a produce group, and who waits for the outcome.
struct SharedPart {
    db: String,
    rp: String,
    timestamp_ms: i64,
    records: Records,
    done: oneshot::Sender<Result<(), KafkaUnavailable>>,
}

impl SharedPart {
    fn bytes(&self) -> usize {
        self.records.iter().map(|(_, p)| p.len()).sum()
    }
}

impl std::fmt::Debug for RawSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawSink")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl RawSink {
    /// A producer for `topic` on `brokers`, spooling to `spool` what the
    /// broker does not take.
    pub fn new(
        brokers: &[String],
        topic: &str,
        compression: &str,
        timeout: Duration,
        spool: Spool,
    ) -> Result<Self, KafkaUnavailable> {
        let compression = Compression::named(compression).ok_or_else(|| {
            KafkaUnavailable(format!(
                "kafka.compression = {compression:?}: the gateway writes none, gzip or lz4"
            ))
        })?;
        let producer = Producer::new(Settings {
            bootstrap: brokers.to_vec(),
            topic: topic.to_owned(),
            acks: -1,
            idempotent: true,
            compression,
            timeout,
            client_id: "trident-gateway".to_owned(),
        });
        Ok(Self {
            producer,
            partitions: Arc::default(),
            topic: topic.to_owned(),
            spool,
            groups: Arc::default(),
        })
    }

    /// The spool.
    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// Records sent and not yet acknowledged (the producer's queue depth;
    /// the spool is counted apart).
    pub fn queued(&self) -> usize {
        self.producer.in_flight()
    }

    /// The raw topic's partition count, asked of the broker the first
    /// time it is needed. (Partitions added later are used after a restart.)
    async fn partition_count(&self) -> Result<u32, KafkaUnavailable> {
        let known = self.partitions.load(Ordering::Acquire);
        if known > 0 {
            return Ok(known);
        }
        let count = self.producer.partitions().await.map_err(|e| {
            KafkaUnavailable(format!("cannot read the metadata of {}: {e}", self.topic))
        })?;
        self.partitions.store(count, Ordering::Release);
        Ok(count)
    }

    /// Appends the routed lines to the topic — one record per partition,
    /// each line in the partition of its shard key — or, if the broker
    /// does not take them, to the spool.
    pub async fn write(
        &self,
        target: &WriteTarget,
        routed: &Routed<'_>,
    ) -> Result<(), KafkaUnavailable> {
        // Per partition when the count is known; per shard key otherwise
        // (valid whatever the count turns out to be). Either way a record's
        // key is the shard key of its first line, and every line in it
        // belongs to that key's partition.
        // Lines of one partition must stay in request order in one record:
        // a consumer's watermark follows the newest line of its partition.
        // Known partition count: one record per partition. Unknown (the
        // broker has not answered yet): one entry per line, in order, which
        // `produce` groups by partition once the count is known.
        if self.partitions.load(Ordering::Acquire) == 0 && self.spool.is_empty() {
            // Not while spooling: the broker is away and would make every
            // write wait for its metadata.
            let _ = self.partition_count().await;
        }
        let partitions = self.partitions.load(Ordering::Acquire) as usize;
        let mut batches: Vec<(&[u8], Vec<u8>)> = Vec::new();
        if partitions > 0 {
            // Each partition's record sized once from its lines.
            let mut slot: Vec<usize> = vec![usize::MAX; partitions];
            let mut sizes: Vec<usize> = Vec::new();
            let mut record_of: Vec<usize> = Vec::with_capacity(routed.len());
            for i in 0..routed.len() {
                let p = (routed.hash(i) % partitions as u64) as usize;
                if slot[p] == usize::MAX {
                    slot[p] = batches.len();
                    batches.push((routed.key(i), Vec::new()));
                    sizes.push(0);
                }
                sizes[slot[p]] += routed.size(i);
                record_of.push(slot[p]);
            }
            for ((_, payload), size) in batches.iter_mut().zip(sizes) {
                payload.reserve_exact(size);
            }
            for (i, &record) in record_of.iter().enumerate() {
                routed.append_line(i, &mut batches[record].1);
            }
        } else {
            for i in 0..routed.len() {
                batches.push((routed.key(i), routed.text(i)));
            }
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or_default();
        let rp = target.rp.as_deref().unwrap_or("");
        let records: Records = batches
            .into_iter()
            .map(|(k, p)| (k.to_vec(), Bytes::from(p)))
            .collect();
        if self.spool.is_empty() {
            match self.produce_shared(&target.db, rp, now_ms, &records).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(error = %e, "the broker did not take a write; spooling it");
                }
            }
        }
        // One entry per request: db, rp, timestamp, then key and payload
        // of each record.
        let ts = now_ms.to_le_bytes();
        let mut fields: Vec<&[u8]> = vec![target.db.as_bytes(), rp.as_bytes(), &ts];
        for (key, payload) in records.iter() {
            fields.push(key);
            fields.push(payload);
        }
        self.spool
            .append(spool::encode(&fields))
            .await
            .map_err(|e| KafkaUnavailable(e.to_string()))?;
        metrics::counter!("trident_gateway_spooled_total", "spool" => self.spool.name().to_owned())
            .increment(1);
        Ok(())
    }

    /// Produces a write's `records` together with those of the writes that
    /// arrive while [`PRODUCE_GROUPS`] groups are in flight (group commit:
    /// one record per partition for many small writes, not one each), and
    /// waits for the broker's acknowledgement of its group.
    async fn produce_shared(
        &self,
        db: &str,
        rp: &str,
        timestamp_ms: i64,
        records: &Records,
    ) -> Result<(), KafkaUnavailable> {
        let (done, outcome) = oneshot::channel();
        let part = SharedPart {
            db: db.to_owned(),
            rp: rp.to_owned(),
            timestamp_ms,
            records: records.clone(),
            done,
        };
        let groups = self.groups.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(self.clone().group(rx));
            tx
        });
        groups
            .send(part)
            .map_err(|_| KafkaUnavailable("the producer's group task stopped".into()))?;
        outcome
            .await
            .unwrap_or_else(|_| Err(KafkaUnavailable("the producer's group task stopped".into())))
    }

    /// Takes writes in arrival order and produces them in groups, at most
    /// [`PRODUCE_GROUPS`] at once; what arrives while all are in flight
    /// joins the next group (up to [`GROUP_BYTES`]).
    async fn group(self, mut rx: mpsc::UnboundedReceiver<SharedPart>) {
        let limits = GroupLimits {
            slots: PRODUCE_GROUPS,
            max_bytes: GROUP_BYTES,
            max_lines: usize::MAX,
            linger: PRODUCE_LINGER,
            idle: None,
        };
        let flush = |parts: Vec<SharedPart>| {
            let sink = self.clone();
            async move { sink.produce_group(parts).await }
        };
        group_commit(&mut rx, limits, |p| (p.bytes(), 0), flush).await;
    }

    /// Produces `parts`, those of one db and rp as one set of records
    /// (carrying the newest ingest time), and tells each part the outcome
    /// of its set.
    async fn produce_group(&self, parts: Vec<SharedPart>) {
        // A write whose client went away was not acknowledged: not sent.
        let mut parts: Vec<SharedPart> =
            parts.into_iter().filter(|p| !p.done.is_closed()).collect();
        while !parts.is_empty() {
            let (db, rp) = (parts[0].db.clone(), parts[0].rp.clone());
            let (same, rest): (Vec<SharedPart>, Vec<SharedPart>) =
                parts.into_iter().partition(|p| p.db == db && p.rp == rp);
            parts = rest;
            let timestamp_ms = same
                .iter()
                .map(|p| p.timestamp_ms)
                .max()
                .unwrap_or_default();
            let records: Vec<(&[u8], Bytes)> = same
                .iter()
                .flat_map(|p| p.records.iter().map(|(k, v)| (k.as_slice(), v.clone())))
                .collect();
            if same.len() > 1 {
                metrics::counter!("trident_gateway_raw_grouped_writes_total")
                    .increment(same.len() as u64);
            }
            let outcome = self.produce(&db, &rp, timestamp_ms, &records).await;
            drop(records);
            for part in same {
                let _ = part.done.send(outcome.clone());
            }
        }
    }

    /// Produces `records` and waits for the broker's acknowledgement of
    /// every one.
    async fn produce(
        &self,
        db: &str,
        rp: &str,
        timestamp_ms: i64,
        records: &[(&[u8], Bytes)],
    ) -> Result<(), KafkaUnavailable> {
        let partitions = self.partition_count().await?;
        self.send(partitions, db, rp, timestamp_ms, records)
            .await?
            .wait()
            .await
            .map_err(KafkaUnavailable)
    }

    /// Sends `records`, each to the partition of its key (XXH3 of the
    /// shard key modulo `partitions`, the hash placement uses too), every
    /// partition in one request; the acknowledgement comes with
    /// [`Pending::wait`].
    async fn send(
        &self,
        partitions: u32,
        db: &str,
        rp: &str,
        timestamp_ms: i64,
        records: &[(&[u8], Bytes)],
    ) -> Result<Pending, KafkaUnavailable> {
        // The entries of each partition joined in their order into records
        // of at most RECORD_BYTES (cut between lines), each keyed by the
        // key of the entry it starts with; a partition's records stay in
        // order in its batch.
        let headers: [(&str, &[u8]); 2] = [("db", db.as_bytes()), ("rp", rp.as_bytes())];
        let n = u64::from(partitions.max(1));
        // Per partition: its records, each as pieces and their bytes.
        let mut by_partition: Vec<Vec<Pieces<'_>>> = vec![Vec::new(); n as usize];
        for (key, payload) in records {
            let partition = (shard_hash(key) % n) as usize;
            for chunk in line_chunks(payload, RECORD_BYTES) {
                match by_partition[partition].last_mut() {
                    Some((_, pieces, bytes)) if *bytes + chunk.len() <= RECORD_BYTES => {
                        *bytes += chunk.len();
                        pieces.push(chunk);
                    }
                    _ => {
                        let bytes = chunk.len();
                        by_partition[partition].push((key, vec![chunk], bytes));
                    }
                }
            }
        }
        let batches: Vec<(i32, Vec<Record<'_>>)> = by_partition
            .iter()
            .enumerate()
            .filter(|(_, records)| !records.is_empty())
            .map(|(partition, records)| {
                let records = records
                    .iter()
                    .map(|(key, pieces, _)| Record {
                        key,
                        value: pieces,
                        timestamp_ms,
                        headers: &headers,
                    })
                    .collect();
                (i32::try_from(partition).unwrap_or(i32::MAX), records)
            })
            .collect();
        self.producer.send(batches).await.map_err(KafkaUnavailable)
    }

    /// Starts the replayer; it stops when `shutdown` fires.
    pub fn start_replay(&self, shutdown: &Shutdown, health: &Health, max_backoff: Duration) {
        let (sink, stop, health) = (self.clone(), shutdown.triggered(), health.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = sink.replay(health, max_backoff) => {}
                () = stop => {}
            }
        });
    }

    /// Produces the spool back, head first, until stopped.
    async fn replay(&self, health: Health, max_backoff: Duration) {
        let name = self.spool.name().to_owned();
        self.spool
            .report_to(&health, "sink:kafka", "broker unreachable or recovering");
        let mut backoff = Backoff::new(max_backoff);
        loop {
            if self.spool.is_empty() {
                self.spool.appended().await;
                continue;
            }
            let batch: Vec<Bytes> = match self.spool.peek(512, 8 << 20).await {
                // Records are lent to the producer as views of the entries.
                Ok(batch) => batch.into_iter().map(Bytes::from).collect(),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the Kafka spool; replay stopped");
                    health.set("sink:kafka", Status::Down, e.to_string());
                    return;
                }
            };
            // The whole batch in flight at once (the idempotent producer
            // keeps each partition in order), then the acknowledgements
            // in spool order: the entries acknowledged up to the first
            // failure are removed.
            let partitions = match self.partition_count().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!(error = %e, "replay to the broker failed");
                    tokio::time::sleep(backoff.next_wait()).await;
                    continue;
                }
            };
            // Consecutive entries of one db/rp share records: one per
            // partition for up to `RECORD_BYTES` of entries, not one
            // per partition per entry. A broker that pays per record (tansu
            // on SQLite stores about a thousand a second here) drains the
            // spool many times faster; the record's timestamp is its newest
            // entry's, so a reader looking up "since T" never skips a line
            // ingested after T.
            let runs = replay_runs(&batch);
            let mut pending = Vec::with_capacity(runs.len());
            for run in &runs {
                if run.entries == 0 {
                    pending.push(None);
                    continue;
                }
                let (db, rp) = (
                    String::from_utf8_lossy(run.db),
                    String::from_utf8_lossy(run.rp),
                );
                match self.send(partitions, &db, &rp, run.ts, &run.records).await {
                    Ok(deliveries) => pending.push(Some(deliveries)),
                    Err(e) => {
                        tracing::debug!(error = %e, "replay to the broker failed");
                        break;
                    }
                }
            }
            let mut failed = pending.len() < runs.len();
            let mut delivered = 0;
            for (run, deliveries) in runs.iter().zip(pending) {
                match deliveries {
                    Some(deliveries) => {
                        if let Err(e) = deliveries.wait().await {
                            tracing::debug!(error = %e, "replay to the broker failed");
                            failed = true;
                            break;
                        }
                        metrics::counter!("trident_gateway_replayed_total", "spool" => name.clone())
                            .increment(run.entries as u64);
                    }
                    None => {
                        tracing::error!(spool = %name, "an unreadable spool entry was dropped");
                        metrics::counter!("trident_gateway_spool_dropped_total", "spool" => name.clone(), "reason" => "unreadable").increment(1);
                    }
                }
                delivered += run.entries.max(1);
            }
            let bytes: u64 = batch.iter().take(delivered).map(|e| e.len() as u64).sum();
            if delivered > 0
                && let Err(e) = self.spool.remove(delivered, bytes).await
            {
                tracing::error!(error = %e, "cannot shorten the Kafka spool; replay stopped");
                health.set("sink:kafka", Status::Down, e.to_string());
                return;
            }
            if failed {
                tokio::time::sleep(backoff.next_wait()).await;
            } else {
                backoff.reset();
            }
        }
    }
}

/// Bytes of lines in one record at most (a longer line is a record of its
/// own). Kafka brokers refuse records over `message.max.bytes` (about
/// 1 MB by default): a write with more for one partition becomes several
/// records.
const RECORD_BYTES: usize = 512 << 10;

/// `payload` (lines, each ending in `\n`) cut between lines into pieces of
/// at most `max` bytes (views of it, not copies); a line longer than `max`
/// is a piece of its own.
fn line_chunks(payload: &Bytes, max: usize) -> impl Iterator<Item = Bytes> {
    let mut rest = payload.clone();
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let cut = if rest.len() <= max {
            rest.len()
        } else {
            match rest[..max].iter().rposition(|&b| b == b'\n') {
                Some(i) => i + 1,
                None => rest
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(rest.len(), |i| i + 1),
            }
        };
        Some(rest.split_to(cut))
    })
}

/// Spool entries grouped into runs, in order.
fn replay_runs(batch: &[Bytes]) -> Vec<ReplayRun<'_>> {
    let mut runs: Vec<ReplayRun<'_>> = Vec::new();
    for entry in batch {
        let next = ReplayRun::of(entry);
        match runs.last_mut() {
            Some(run) if run.takes(&next) => run.join(next),
            _ => runs.push(next),
        }
    }
    runs
}

/// Consecutive spool entries replayed as one set of records.
struct ReplayRun<'a> {
    db: &'a [u8],
    rp: &'a [u8],
    /// The newest entry's ingest time.
    ts: i64,
    /// Keys, and payloads as views of their entries.
    records: Vec<(&'a [u8], Bytes)>,
    bytes: usize,
    /// Spool entries in the run; 0 for one unreadable entry.
    entries: usize,
}

impl<'a> ReplayRun<'a> {
    /// The run of one spool entry: db, rp, ingest time and records, or
    /// an unreadable entry's empty run.
    fn of(entry: &'a Bytes) -> Self {
        let decoded = spool::decode(entry).and_then(|fields| {
            let ts = i64::from_le_bytes(fields.get(2)?.get(..8)?.try_into().ok()?);
            (fields.len() >= 3 && fields.len() % 2 == 1).then_some((fields, ts))
        });
        let Some((fields, ts)) = decoded else {
            return Self {
                db: b"",
                rp: b"",
                ts: 0,
                records: Vec::new(),
                bytes: 0,
                entries: 0,
            };
        };
        let records: Vec<(&[u8], Bytes)> = fields[3..]
            .chunks(2)
            .map(|kv| (kv[0], entry.slice_ref(kv[1])))
            .collect();
        Self {
            db: fields[0],
            rp: fields[1],
            ts,
            bytes: records.iter().map(|(_, p)| p.len()).sum(),
            records,
            entries: 1,
        }
    }

    /// Whether `next` joins this run: both readable, same db and rp, and
    /// the joined records within `RECORD_BYTES`.
    fn takes(&self, next: &Self) -> bool {
        self.entries > 0
            && next.entries > 0
            && self.db == next.db
            && self.rp == next.rp
            && self.bytes + next.bytes <= RECORD_BYTES
    }

    fn join(&mut self, next: Self) {
        self.ts = self.ts.max(next.ts);
        self.records.extend(next.records);
        self.bytes += next.bytes;
        self.entries += next.entries;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(db: &str, ts: i64, records: &[(&str, &str)]) -> Vec<u8> {
        let ts = ts.to_le_bytes();
        let mut fields: Vec<&[u8]> = vec![db.as_bytes(), b"", &ts];
        for (k, p) in records {
            fields.push(k.as_bytes());
            fields.push(p.as_bytes());
        }
        spool::encode(&fields)
    }

    #[test]
    fn payloads_are_cut_between_lines() {
        let cut = |p: &str, max| -> Vec<String> {
            line_chunks(&Bytes::copy_from_slice(p.as_bytes()), max)
                .map(|c| String::from_utf8_lossy(&c).into_owned())
                .collect()
        };
        assert_eq!(cut("a 1\nb 2\nc 3\n", 100), ["a 1\nb 2\nc 3\n"]);
        assert_eq!(cut("a 1\nb 2\nc 3\n", 8), ["a 1\nb 2\n", "c 3\n"]);
        assert_eq!(cut("a 1\nb 2\nc 3\n", 7), ["a 1\n", "b 2\n", "c 3\n"]);
        // A line longer than the limit is a piece of its own.
        assert_eq!(
            cut("a 1\nlong line\nb 2\n", 6),
            ["a 1\n", "long line\n", "b 2\n"]
        );
        assert_eq!(cut("", 6), Vec::<String>::new());
        let joined: Vec<u8> = line_chunks(&Bytes::from_static(b"x\ny\nz"), 2)
            .flat_map(|c| c.to_vec())
            .collect();
        assert_eq!(joined, b"x\ny\nz");
    }

    #[test]
    fn replay_joins_consecutive_entries_of_one_database_up_to_the_record_limit() {
        let big = "x".repeat(RECORD_BYTES / 2 + 1);
        let batch: Vec<Bytes> = [
            entry(
                "a",
                10,
                &[("cpu,h=1", "cpu,h=1 v=1 1\n"), ("mem", "mem v=1 1\n")],
            ),
            entry("a", 30, &[("cpu,h=1", "cpu,h=1 v=2 2\n")]),
            entry("a", 20, &[("disk", "disk v=1 1\n")]),
            entry("b", 40, &[("cpu,h=1", "cpu,h=1 v=3 3\n")]),
            b"\x09not an entry".to_vec(),
            entry("b", 50, &[("k", &big)]),
            entry("b", 60, &[("k", &big)]),
        ]
        .into_iter()
        .map(Bytes::from)
        .collect();
        let runs = replay_runs(&batch);
        let shape: Vec<(&[u8], usize, usize, i64)> = runs
            .iter()
            .map(|r| (r.db, r.entries, r.records.len(), r.ts))
            .collect();
        assert_eq!(
            shape,
            vec![
                (&b"a"[..], 3, 4, 30),
                (&b"b"[..], 1, 1, 40),
                (&b""[..], 0, 0, 0),
                (&b"b"[..], 1, 1, 50),
                (&b"b"[..], 1, 1, 60),
            ]
        );
        // Records keep the spool's order.
        assert_eq!(
            runs[0].records[2],
            (&b"cpu,h=1"[..], Bytes::from_static(b"cpu,h=1 v=2 2\n"))
        );
    }
}
