//! A Kafka producer on the gateway's own runtime: every partition of a
//! write in one Produce request per leader broker.
//!
//! librdkafka sends one Produce request per partition and hands every
//! record through its own broker threads (a queue, a wake-up pipe and a
//! poll per request): at eight raw partitions a write that was a fifth
//! of the gateway's CPU (docs/benchmarks.md). Here the task that serves a
//! write encodes one record batch per partition
//! ([`trident_kafka_wire::batch`]) and writes them, with the values lent
//! rather than copied, in one request to each leader; a task per
//! connection reads the answers and wakes whoever waits for them.
//!
//! **Idempotence** (the raw topic): the producer asks the broker for a
//! producer id and epoch (InitProducerId) and stamps each partition's
//! batches with consecutive sequence numbers, so that a batch the broker
//! stored twice (sent again on a new connection, say) is stored once.
//! Requests on a connection are answered in order, and several may be in
//! flight (the broker keeps up to five per partition in order).
//!
//! **Failure**: any failure — no connection, no answer within the
//! timeout, an error code — fails the request *and resets the producer*:
//! its connections are closed (what was in flight on them fails too), and
//! the next request starts from fresh metadata and a new producer id, so
//! no sequence gap or stale epoch reaches a broker that comes back (tansu
//! 0.6 stops serving produce requests after one, docs/decisions.md). The
//! callers spool what failed and produce it again later: delivery after
//! a failure is at least once, as the design allows.

use std::collections::{BTreeMap, HashMap};
use std::io::IoSlice;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use trident_kafka_wire::{self as wire, ApiKey, Compression, Record, Sequence};

/// Answers larger than this end the connection (a Produce answer is a
/// few bytes per partition; Metadata a few per partition and broker).
const MAX_ANSWER: usize = 64 << 20;

/// Bytes of values in one record batch at most: Kafka brokers refuse a
/// batch over `message.max.bytes` (1 MiB and 12 bytes by default) and take
/// one batch per partition in a request, so a write with more for one
/// partition is several requests. (A single larger record is a batch of
/// its own, which such a broker refuses.)
const BATCH_BYTES: usize = 960 << 10;

/// The connection that serves Metadata and InitProducerId: the first
/// bootstrap broker that answers.
const ANY_BROKER: i32 = -1;

/// Encoded batches for one broker: (partition, pieces).
type Batches = Vec<(i32, Vec<Bytes>)>;

/// What a producer is for.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `host:port` of the brokers to ask for metadata.
    pub bootstrap: Vec<String>,
    pub topic: String,
    /// -1: every in-sync replica; 1: the leader.
    pub acks: i16,
    pub idempotent: bool,
    pub compression: Compression,
    /// How long an answer may take (also the broker's own timeout).
    pub timeout: Duration,
    pub client_id: String,
}

/// A producer for one topic.
#[derive(Debug, Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: Settings,
    state: tokio::sync::Mutex<State>,
    /// Records sent and not yet answered.
    in_flight: AtomicUsize,
    /// Set when a batch was refused or lost (a Produce answer with an
    /// error, a connection closed or dropped with requests on it): the
    /// sequence numbers stamped after it have a gap, so the next request
    /// starts a new generation (new producer id) instead of sending more
    /// behind it.
    poisoned: Arc<AtomicBool>,
}

/// What the producer knows, changed only under its lock (so that batches
/// are stamped in the order they are written).
#[derive(Debug, Default)]
struct State {
    /// Increases with every reset; a failure resets only the generation
    /// it happened in.
    generation: u64,
    /// The leader of each partition (index = partition); empty until
    /// asked.
    leaders: Vec<i32>,
    /// `host:port` of each broker.
    brokers: HashMap<i32, String>,
    connections: HashMap<i32, Connection>,
    /// Producer id and epoch (idempotent producers).
    id: Option<(i64, i16)>,
    /// The next sequence number of each partition.
    sequences: Vec<i32>,
    correlation: i32,
}

/// Requests written and the answers they wait for.
#[derive(Debug)]
#[must_use = "the records are delivered only when `Pending::wait` says so"]
pub struct Pending {
    generation: u64,
    /// Each request's outcome: `Ok` once every partition it carried was
    /// stored.
    answers: Vec<Answered>,
    in_flight: InFlight,
}

/// Records counted in flight until this is dropped (answered, failed, or
/// no longer waited for).
#[derive(Debug)]
struct InFlight {
    inner: Arc<Inner>,
    records: usize,
}

impl InFlight {
    fn new(inner: &Arc<Inner>, records: usize) -> Self {
        inner.in_flight.fetch_add(records, Ordering::Relaxed);
        Self {
            inner: inner.clone(),
            records,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.inner
            .in_flight
            .fetch_sub(self.records, Ordering::Relaxed);
    }
}

impl Producer {
    pub fn new(settings: Settings) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                state: tokio::sync::Mutex::default(),
                in_flight: AtomicUsize::new(0),
                poisoned: Arc::default(),
            }),
        }
    }

    /// Records sent and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Relaxed)
    }

    /// The topic's partition count, asked of a broker if not known.
    pub async fn partitions(&self) -> Result<u32, String> {
        let mut state = self.inner.state.lock().await;
        let generation = state.generation;
        let known = self.inner.metadata(&mut state).await;
        match known {
            Ok(()) => Ok(u32::try_from(state.leaders.len()).unwrap_or(u32::MAX)),
            Err(e) => {
                self.inner.reset(&mut state, generation);
                Err(e)
            }
        }
    }

    /// Sends each partition's records (partition, records; none empty) in
    /// one request per leader and waits for the answers.
    pub async fn produce(&self, batches: Vec<(i32, Vec<Record<'_>>)>) -> Result<(), String> {
        self.send(batches).await?.wait().await
    }

    /// Sends each partition's records in one request per leader; the
    /// answers come with [`Pending::wait`]. Requests sent one after the
    /// other are stored in that order.
    pub async fn send(&self, batches: Vec<(i32, Vec<Record<'_>>)>) -> Result<Pending, String> {
        let inner = &self.inner;
        let mut state = inner.state.lock().await;
        let generation = state.generation;
        let records = batches.iter().map(|(_, r)| r.len()).sum();
        let in_flight = InFlight::new(inner, records);
        match inner.send(&mut state, batches).await {
            Ok(answers) => Ok(Pending {
                generation,
                answers,
                in_flight,
            }),
            Err(e) => {
                inner.reset(&mut state, generation);
                Err(e)
            }
        }
    }
}

impl Pending {
    /// Waits for every answer: `Ok` once every partition was stored.
    pub async fn wait(self) -> Result<(), String> {
        let Pending {
            generation,
            answers,
            in_flight,
        } = self;
        let inner = &in_flight.inner;
        let timeout = inner.settings.timeout + Duration::from_secs(1);
        let mut outcome = Ok(());
        for answer in answers {
            outcome = match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(answered)) => answered.map(drop),
                Ok(Err(_)) => Err("the connection to the broker was closed".to_owned()),
                Err(_) => Err(format!("no answer from the broker within {timeout:?}")),
            };
            if outcome.is_err() {
                break;
            }
        }
        if outcome.is_err() {
            let mut state = inner.state.lock().await;
            inner.reset(&mut state, generation);
        }
        outcome
    }
}

/// `Ok` if a Produce answer reports every partition in `sent` of `topic`
/// stored; an answer that leaves one out is not an acknowledgement.
fn stored(body: &[u8], topic: &str, sent: &[i32]) -> Result<(), String> {
    let partitions = wire::produce_answer(body).map_err(|e| e.to_string())?;
    if let Some(p) = partitions.iter().find(|p| p.error_code != 0) {
        return Err(format!(
            "the broker did not store {}/{}: {}",
            p.topic,
            p.partition,
            wire::error_name(p.error_code)
        ));
    }
    match sent.iter().find(|&&s| {
        !partitions
            .iter()
            .any(|p| p.partition == s && p.topic == topic)
    }) {
        Some(missing) => Err(format!(
            "the broker's answer does not mention {topic}/{missing}"
        )),
        None => Ok(()),
    }
}

impl Inner {
    /// Forgets connections, metadata and producer id, unless a reset
    /// since `generation` already did.
    fn reset(&self, state: &mut State, generation: u64) {
        if state.generation != generation {
            return;
        }
        let correlation = state.correlation;
        // Dropping the connections fails what waits on them (and would
        // poison the new generation: cleared after).
        *state = State {
            generation: generation + 1,
            correlation,
            ..State::default()
        };
        self.poisoned.store(false, Ordering::Release);
    }

    async fn send(
        &self,
        state: &mut State,
        batches: Vec<(i32, Vec<Record<'_>>)>,
    ) -> Result<Vec<Answered>, String> {
        // A batch refused or lost since the last request leaves a gap in
        // the sequence numbers stamped after it: start a new generation
        // rather than send behind it. A closed connection also starts
        // one: the broker may have restarted and forgotten the producer.
        if self.poisoned.load(Ordering::Acquire) || state.connections.values().any(|c| !c.open()) {
            self.reset(state, state.generation);
        }
        self.metadata(state).await?;
        if self.settings.idempotent && state.id.is_none() {
            self.init_producer_id(state).await?;
        }
        // Each round holds at most one batch per partition (a broker takes
        // one per partition in a request) of at most BATCH_BYTES (its
        // `message.max.bytes`); within a round, each leader's partitions
        // in partition order. Rounds are written in order, so a
        // partition's sequence numbers rise in the order it is written.
        let mut rounds: Vec<BTreeMap<i32, Batches>> = Vec::new();
        for (partition, records) in batches {
            let index = usize::try_from(partition)
                .ok()
                .filter(|&p| p < state.leaders.len())
                .ok_or_else(|| format!("{} has no partition {partition}", self.settings.topic))?;
            for (round, records) in cut(&records, BATCH_BYTES).enumerate() {
                let sequence = match state.id {
                    Some((producer_id, epoch)) if self.settings.idempotent => {
                        let base = state.sequences[index];
                        let count = i32::try_from(records.len()).unwrap_or(i32::MAX);
                        // Sequence numbers wrap to 0 after i32::MAX.
                        state.sequences[index] = base
                            .checked_add(count)
                            .unwrap_or(count - (i32::MAX - base) - 1);
                        Sequence {
                            producer_id,
                            epoch,
                            base,
                        }
                    }
                    _ => Sequence::NONE,
                };
                let batch = wire::batch::encode(records, sequence, self.settings.compression)
                    .map_err(|e| e.to_string())?;
                if rounds.len() <= round {
                    rounds.push(BTreeMap::new());
                }
                rounds[round]
                    .entry(state.leaders[index])
                    .or_default()
                    .push((partition, batch));
            }
        }
        let timeout_ms = i32::try_from(self.settings.timeout.as_millis()).unwrap_or(i32::MAX);
        let mut answers = Vec::new();
        for (leader, batches) in rounds.into_iter().flatten() {
            let sent: Vec<i32> = batches.iter().map(|(p, _)| *p).collect();
            let body = wire::produce_request(
                self.settings.acks,
                timeout_ms,
                &self.settings.topic,
                batches,
            );
            answers.push(
                self.request(state, leader, ApiKey::Produce, body, Some(sent))
                    .await?,
            );
        }
        Ok(answers)
    }

    /// Learns the topic's partitions and their leaders, if not known.
    async fn metadata(&self, state: &mut State) -> Result<(), String> {
        if !state.leaders.is_empty() {
            return Ok(());
        }
        let topic = &self.settings.topic;
        let body = wire::metadata_request(&[topic]);
        let answer = self.call(state, ANY_BROKER, ApiKey::Metadata, body).await?;
        let metadata = wire::metadata_answer(&answer).map_err(|e| e.to_string())?;
        let found = metadata
            .topics
            .iter()
            .find(|t| &t.name == topic)
            .ok_or_else(|| format!("the broker did not describe topic {topic}"))?;
        if found.error_code != 0 || found.partitions.is_empty() {
            return Err(format!(
                "topic {topic} is not there ({}): create it",
                wire::error_name(found.error_code)
            ));
        }
        let mut leaders = vec![-1; found.partitions.len()];
        for &(index, error, leader) in &found.partitions {
            let slot = usize::try_from(index)
                .ok()
                .and_then(|i| leaders.get_mut(i))
                .ok_or_else(|| format!("topic {topic}: partition {index} out of range"))?;
            if error != 0 || leader < 0 {
                return Err(format!(
                    "{topic}/{index} has no leader ({})",
                    wire::error_name(error)
                ));
            }
            *slot = leader;
        }
        if let Some(index) = leaders.iter().position(|&l| l < 0) {
            return Err(format!("the broker did not describe {topic}/{index}"));
        }
        state.brokers = metadata
            .brokers
            .iter()
            .map(|b| (b.node_id, format!("{}:{}", b.host, b.port)))
            .collect();
        state.sequences = vec![0; leaders.len()];
        state.leaders = leaders;
        Ok(())
    }

    async fn init_producer_id(&self, state: &mut State) -> Result<(), String> {
        let body = wire::init_producer_id_request();
        let answer = self
            .call(state, ANY_BROKER, ApiKey::InitProducerId, body)
            .await?;
        let (error, id, epoch) =
            wire::init_producer_id_answer(&answer).map_err(|e| e.to_string())?;
        if error != 0 {
            return Err(format!(
                "the broker gave no producer id: {}",
                wire::error_name(error)
            ));
        }
        state.id = Some((id, epoch));
        state.sequences.iter_mut().for_each(|s| *s = 0);
        Ok(())
    }

    /// A request and its answer, waited for.
    async fn call(
        &self,
        state: &mut State,
        broker: i32,
        key: ApiKey,
        body: Vec<u8>,
    ) -> Result<Bytes, String> {
        let answer = self
            .request(state, broker, key, vec![Bytes::from(body)], None)
            .await?;
        match tokio::time::timeout(self.settings.timeout, answer).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err("the connection to the broker was closed".to_owned()),
            Err(_) => Err(format!(
                "no answer from the broker within {:?}",
                self.settings.timeout
            )),
        }
    }

    /// Writes a request to `broker` (connecting first if needed); for a
    /// Produce request, `produced` names the partitions it carries.
    async fn request(
        &self,
        state: &mut State,
        broker: i32,
        key: ApiKey,
        body: Vec<Bytes>,
        produced: Option<Vec<i32>>,
    ) -> Result<Answered, String> {
        state.correlation = state.correlation.wrapping_add(1);
        let correlation = state.correlation;
        if !state.connections.get(&broker).is_some_and(Connection::open) {
            let addresses = if broker == ANY_BROKER {
                self.settings.bootstrap.clone()
            } else {
                let address = state
                    .brokers
                    .get(&broker)
                    .ok_or_else(|| format!("broker {broker} is not in the metadata"))?;
                vec![address.clone()]
            };
            let connection =
                Connection::open_to(&addresses, &self.settings, &self.poisoned).await?;
            state.connections.insert(broker, connection);
        }
        // Out of the map while it is written to: if this future is dropped
        // mid-write (a client gone), the half-written connection goes with
        // it rather than staying for the next request.
        let mut connection = state.connections.remove(&broker).ok_or("no connection")?;
        let len: usize = body.iter().map(Bytes::len).sum();
        let head = wire::request_head(key, correlation, &self.settings.client_id, len).freeze();
        let answer = connection.expect(correlation, produced);
        let written = tokio::time::timeout(
            self.settings.timeout,
            write_all(&mut connection.writer, &head, &body),
        )
        .await;
        match written {
            Ok(Ok(())) => {
                state.connections.insert(broker, connection);
                Ok(answer)
            }
            Ok(Err(e)) => Err(format!("cannot write to broker {broker}: {e}")),
            Err(_) => Err(format!("broker {broker} did not take a request in time")),
        }
    }
}

/// `records` cut, in order, into runs of at most `max` bytes of values
/// (a longer record is a run of its own).
fn cut<'r, 'a>(records: &'r [Record<'a>], max: usize) -> impl Iterator<Item = &'r [Record<'a>]> {
    let mut rest = records;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let n = rest
            .iter()
            .position(|r| {
                bytes += r.value_len();
                bytes > max
            })
            .map_or(rest.len(), |i| i.max(1));
        let (run, tail) = rest.split_at(n);
        rest = tail;
        Some(run)
    })
}

/// Writes `head` and `body` with as few system calls as the socket
/// allows.
async fn write_all(
    writer: &mut OwnedWriteHalf,
    head: &Bytes,
    body: &[Bytes],
) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = std::iter::once(head)
        .chain(body)
        .filter(|p| !p.is_empty())
        .map(|p| IoSlice::new(p))
        .collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let n = writer.write_vectored(rest).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

/// Who waits for which answer on a connection (and, for a Produce
/// request, the partitions it must report stored); `None` once it closed.
type Waiting = Arc<Mutex<Option<HashMap<i32, (Answer, Option<Vec<i32>>)>>>>;

/// Where an answer goes: its body, or why there is none (for a Produce
/// request, also an answer that does not report every partition stored).
type Answer = oneshot::Sender<Result<Bytes, String>>;

/// An answer to come.
type Answered = oneshot::Receiver<Result<Bytes, String>>;

/// A connection to one broker and the task that reads its answers.
#[derive(Debug)]
struct Connection {
    writer: OwnedWriteHalf,
    waiting: Waiting,
    reader: JoinHandle<()>,
    /// The producer's flag, set when a batch on this connection is
    /// refused or lost.
    poisoned: Arc<AtomicBool>,
}

impl Connection {
    /// Connects to the first of `addresses` that accepts.
    async fn open_to(
        addresses: &[String],
        settings: &Settings,
        poisoned: &Arc<AtomicBool>,
    ) -> Result<Self, String> {
        let timeout = settings.timeout;
        let mut last = String::from("no broker address configured");
        for address in addresses {
            let stream = match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    last = format!("cannot connect to the broker at {address}: {e}");
                    continue;
                }
                Err(_) => {
                    last = format!("no connection to the broker at {address} within {timeout:?}");
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let (mut read, writer) = stream.into_split();
            let waiting: Waiting = Arc::new(Mutex::new(Some(HashMap::new())));
            let answers = waiting.clone();
            let address = address.clone();
            let topic = settings.topic.clone();
            let poison = poisoned.clone();
            let reader = tokio::spawn(async move {
                let why = loop {
                    let mut len = [0u8; 4];
                    if let Err(e) = read.read_exact(&mut len).await {
                        break format!("the broker at {address} closed the connection: {e}");
                    }
                    let Some(len) = wire::frame_len(&len).filter(|&n| n <= MAX_ANSWER) else {
                        break format!(
                            "the broker at {address} sent an answer of impossible length"
                        );
                    };
                    let mut frame = vec![0u8; len];
                    if let Err(e) = read.read_exact(&mut frame).await {
                        break format!("the broker at {address} closed the connection: {e}");
                    }
                    let frame = Bytes::from(frame);
                    let Ok((id, body)) = wire::answer(&frame) else {
                        break format!("the broker at {address} sent an answer without a header");
                    };
                    let body = frame.slice_ref(body);
                    let waiter = lock(&answers).as_mut().and_then(|w| w.remove(&id));
                    if let Some((tx, produced)) = waiter {
                        let answer = match produced {
                            // Judged here, not by whoever waits, so that
                            // no request is stamped behind a refused batch.
                            Some(sent) => stored(&body, &topic, &sent).map(|()| body),
                            None => Ok(body),
                        };
                        if answer.is_err() {
                            poison.store(true, Ordering::Release);
                        }
                        let _ = tx.send(answer);
                    }
                };
                if fail_all(&answers, &why) {
                    poison.store(true, Ordering::Release);
                }
            });
            return Ok(Self {
                writer,
                waiting,
                reader,
                poisoned: poisoned.clone(),
            });
        }
        Err(last)
    }

    fn open(&self) -> bool {
        lock(&self.waiting).is_some()
    }

    /// Where the answer to request `correlation` will arrive.
    fn expect(&self, correlation: i32, produced: Option<Vec<i32>>) -> Answered {
        let (tx, rx) = oneshot::channel();
        match lock(&self.waiting).as_mut() {
            Some(waiting) => {
                waiting.insert(correlation, (tx, produced));
            }
            None => {
                let _ = tx.send(Err("the connection to the broker was closed".to_owned()));
            }
        }
        rx
    }
}

impl Drop for Connection {
    /// Whatever still waits on a dropped connection fails now (and
    /// leaves a gap in the sequence numbers).
    fn drop(&mut self) {
        self.reader.abort();
        if fail_all(&self.waiting, "the connection to the broker was dropped") {
            self.poisoned.store(true, Ordering::Release);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Fails every request still waiting and closes the connection for
/// good; whether any was waiting.
fn fail_all(waiting: &Waiting, why: &str) -> bool {
    let Some(waiting) = lock(waiting).take() else {
        return false;
    };
    let any = !waiting.is_empty();
    for (_, (tx, _)) in waiting {
        let _ = tx.send(Err(why.to_owned()));
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Produce (v7) answer for `topic` with (partition, error) pairs.
    fn answer(topic: &str, partitions: &[(i32, i16)]) -> Vec<u8> {
        use bytes::BufMut;
        let mut b = Vec::new();
        b.put_i32(1);
        b.put_i16(topic.len() as i16);
        b.put_slice(topic.as_bytes());
        b.put_i32(partitions.len() as i32);
        for &(p, e) in partitions {
            b.put_i32(p);
            b.put_i16(e);
            b.put_i64(0);
            b.put_i64(-1);
            b.put_i64(0);
        }
        b.put_i32(0);
        b
    }

    #[test]
    fn only_an_answer_naming_every_partition_sent_is_an_acknowledgement() {
        assert_eq!(
            stored(&answer("raw", &[(0, 0), (3, 0)]), "raw", &[0, 3]),
            Ok(())
        );
        let e = stored(&answer("raw", &[(0, 0)]), "raw", &[0, 3]).expect_err("3 missing");
        assert!(e.contains("raw/3"), "{e}");
        let e = stored(&answer("raw", &[(0, 0), (3, 45)]), "raw", &[0, 3]).expect_err("refused");
        assert!(e.contains("OUT_OF_ORDER_SEQUENCE_NUMBER"), "{e}");
        assert!(stored(&answer("other", &[(0, 0)]), "raw", &[0]).is_err());
        assert!(stored(b"\x00\x00", "raw", &[0]).is_err());
    }

    #[test]
    fn records_are_cut_into_batches_the_broker_takes() {
        let values: Vec<[Bytes; 1]> = [4, 4, 3, 9, 1, 1]
            .into_iter()
            .map(|n| [Bytes::from(vec![b'x'; n])])
            .collect();
        let records: Vec<Record<'_>> = values
            .iter()
            .map(|value| Record {
                key: b"k",
                value,
                timestamp_ms: 0,
                headers: &[],
            })
            .collect();
        let runs: Vec<Vec<usize>> = cut(&records, 8)
            .map(|run| run.iter().map(Record::value_len).collect())
            .collect();
        assert_eq!(runs, [vec![4, 4], vec![3], vec![9], vec![1, 1]]);
        assert_eq!(cut(&[], 8).count(), 0);
    }

    #[tokio::test]
    async fn no_broker_is_a_clear_error() {
        // A port nothing listens on: bind one and drop it.
        let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = free.local_addr().expect("addr").to_string();
        drop(free);
        let producer = Producer::new(Settings {
            bootstrap: vec![address.clone()],
            topic: "t".into(),
            acks: -1,
            idempotent: true,
            compression: Compression::None,
            timeout: Duration::from_secs(2),
            client_id: "test".into(),
        });
        let e = producer.partitions().await.expect_err("nothing listens");
        assert!(e.contains(&address), "{e}");
        let value = [Bytes::from_static(b"v")];
        let records = vec![(
            0,
            vec![Record {
                key: b"k",
                value: &value,
                timestamp_ms: 0,
                headers: &[],
            }],
        )];
        assert!(producer.produce(records).await.is_err());
        assert_eq!(producer.in_flight(), 0);
    }
}
