//! Where accepted lines go: the InfluxDB cluster ([`influx`]) and the raw
//! topic ([`kafka`]), both required, and the alert topic ([`alerts`]),
//! best effort.
//!
//! A required sink that cannot deliver puts the write in its on-disk spool
//! ([`crate::spool`]) and a replayer delivers it later, one request at a
//! time per target, waiting [`Backoff`] between failed attempts.
//!
//! [`Routed`] does the per-line work both sinks need — the strategy of the
//! line's database and measurement, its shard key and hash, and the text
//! that is forwarded — once per line, before the sinks run side by side.

pub mod alerts;
pub mod influx;
pub mod kafka;
pub mod producer;

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc;
use trident_cluster::Placement;
use trident_line_protocol::{Line, shard_hash};

/// Waits between replay attempts: doubling from 100 ms up to a cap, each
/// wait drawn from its upper half so that gateways replaying to the same
/// recovering node do not retry in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);

    /// Starts at 100 ms; never waits longer than `max`.
    pub fn new(max: Duration) -> Self {
        Self {
            next: Self::FIRST.min(max),
            max,
        }
    }

    /// The wait after one more failure.
    pub fn next_wait(&mut self) -> Duration {
        let ceiling = self.next;
        self.next = (self.next * 2).min(self.max);
        let ceiling_ms = u64::try_from(ceiling.as_millis())
            .unwrap_or(u64::MAX)
            .max(2);
        Duration::from_millis(rand::rng().random_range(ceiling_ms / 2..=ceiling_ms))
    }

    /// After a success: start again from 100 ms.
    pub fn reset(&mut self) {
        self.next = Self::FIRST.min(self.max);
    }
}

/// Accepted lines prepared for the sinks, in request order, borrowing the
/// request body: a line that already ends in its timestamp in nanoseconds
/// is forwarded as sent, without a copy.
#[derive(Debug, Default)]
pub struct Routed<'a> {
    /// Every line's shard key, end to end; `key_ends[i]` closes line i's.
    keys: Vec<u8>,
    key_ends: Vec<usize>,
    hashes: Vec<u64>,
    /// Line i as sent, or without its timestamp when line i's stamp (its
    /// timestamp in nanoseconds, formatted once) is not empty: missing, or
    /// in another precision.
    texts: Vec<&'a [u8]>,
    stamps: Vec<u8>,
    stamp_ends: Vec<usize>,
}

impl<'a> Routed<'a> {
    /// Routes `lines` of database `db`. Every line must carry a timestamp:
    /// the handler fixes missing ones at receipt, so every replica and the
    /// raw topic store the same point.
    pub fn new(placement: &Placement, db: &str, lines: &[Line<'a>]) -> Self {
        let mut routed = Routed {
            keys: Vec::with_capacity(lines.len() * 64),
            key_ends: Vec::with_capacity(lines.len()),
            hashes: Vec::with_capacity(lines.len()),
            texts: Vec::with_capacity(lines.len()),
            stamps: Vec::new(),
            stamp_ends: Vec::with_capacity(lines.len()),
        };
        let mut formatted = itoa::Buffer::new();
        for line in lines {
            let start = routed.keys.len();
            let strategy = placement.strategy_for(db, &line.measurement().as_str());
            line.shard_key_into(strategy, &mut routed.keys);
            routed.hashes.push(shard_hash(&routed.keys[start..]));
            routed.key_ends.push(routed.keys.len());

            // As sent when the rest is exactly ` <nanoseconds>`.
            if line.stamped_in_nanos() {
                routed.texts.push(line.text().as_bytes());
            } else {
                routed.texts.push(line.without_timestamp().as_bytes());
                let ts = line.timestamp().unwrap_or_default();
                routed
                    .stamps
                    .extend_from_slice(formatted.format(ts).as_bytes());
            }
            routed.stamp_ends.push(routed.stamps.len());
        }
        routed
    }

    /// How many lines.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Line `i`'s shard key.
    pub fn key(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.key_ends[i - 1] };
        &self.keys[start..self.key_ends[i]]
    }

    /// The hash of line `i`'s shard key.
    pub fn hash(&self, i: usize) -> u64 {
        self.hashes[i]
    }

    /// The timestamp digits written after line `i`'s text; empty when the
    /// line is forwarded as sent.
    fn stamp(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.stamp_ends[i - 1] };
        &self.stamps[start..self.stamp_ends[i]]
    }

    /// Bytes that [`Routed::append_line`] appends for line `i`.
    pub fn size(&self, i: usize) -> usize {
        let stamp = self.stamp(i).len();
        self.texts[i].len() + if stamp == 0 { 0 } else { 1 + stamp } + 1
    }

    /// Appends line `i` as forwarded (`Line::without_timestamp`, a space,
    /// the timestamp in nanoseconds) and `\n` to `out`.
    pub fn append_line(&self, i: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(self.texts[i]);
        let stamp = self.stamp(i);
        if !stamp.is_empty() {
            out.push(b' ');
            out.extend_from_slice(stamp);
        }
        out.push(b'\n');
    }

    /// Line `i` as forwarded, ending in `\n`.
    pub fn text(&self, i: usize) -> Vec<u8> {
        self.joined(&[i])
    }

    /// Lines `lines` as forwarded, in that order, in one buffer sized
    /// once.
    pub fn joined(&self, lines: &[usize]) -> Vec<u8> {
        let mut out = Vec::with_capacity(lines.iter().map(|&i| self.size(i)).sum());
        for &i in lines {
            self.append_line(i, &mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trident_cluster::Topology;

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(1000));
        let waits: Vec<u128> = (0..7).map(|_| b.next_wait().as_millis()).collect();
        for (wait, ceiling) in waits.iter().zip([100, 200, 400, 800, 1000, 1000, 1000]) {
            assert!((ceiling / 2..=ceiling).contains(wait), "{waits:?}");
        }
        b.reset();
        assert!(b.next_wait() <= Duration::from_millis(100));
    }

    #[test]
    fn each_line_is_routed_once_with_its_key_hash_and_text() {
        let placement = topology().validate().unwrap();
        let body = b"cpu,b=2,a=1 v=1 5\nhttp,app=shop,host=x ms=3i 6\n";
        let lines: Vec<Line<'_>> = trident_line_protocol::parse_lines(body)
            .map(|r| r.unwrap())
            .collect();
        let routed = Routed::new(&placement, "biz", &lines);
        assert_eq!(routed.len(), 2);
        assert_eq!(
            routed.key(0),
            b"cpu,a=1,b=2",
            "series strategy, tags sorted"
        );
        assert_eq!(routed.key(1), b"http", "the biz/http rule: by measurement");
        assert_eq!(routed.hash(1), shard_hash(b"http"));
        assert_eq!(routed.text(0), b"cpu,b=2,a=1 v=1 5\n", "forwarded as sent");
        assert_eq!(routed.text(1), b"http,app=shop,host=x ms=3i 6\n");
        let joined = routed.joined(&[1, 0]);
        assert_eq!(joined, b"http,app=shop,host=x ms=3i 6\ncpu,b=2,a=1 v=1 5\n");
        assert_eq!(joined.capacity(), joined.len(), "sized once");
    }

    #[test]
    fn lines_are_forwarded_as_sent_only_when_they_end_in_nanoseconds() {
        let placement = topology().validate().unwrap();
        let options = trident_line_protocol::ParseOptions {
            precision: trident_line_protocol::Precision::Seconds,
            default_time: Some(9),
            ..Default::default()
        };
        // In seconds, without a timestamp, with leading zeros, with a
        // comment and a trailing carriage return around them.
        let body = b"a v=1 2\nb v=1\n# note\nc v=1 0003\r\n";
        let lines: Vec<Line<'_>> = trident_line_protocol::Lines::new(body, options)
            .map(|r| r.unwrap())
            .collect();
        let routed = Routed::new(&placement, "db", &lines);
        assert_eq!(routed.text(0), b"a v=1 2000000000\n");
        assert_eq!(routed.text(1), b"b v=1 9\n", "the time of receipt");
        assert_eq!(routed.text(2), b"c v=1 3000000000\n");

        let ns = b"d v=1 -5\ne v=1 5 \nf v=1 05\n";
        let lines: Vec<Line<'_>> = trident_line_protocol::parse_lines(ns)
            .map(|r| r.unwrap())
            .collect();
        let routed = Routed::new(&placement, "db", &lines);
        assert_eq!(routed.text(0), b"d v=1 -5\n", "as sent");
        assert_eq!(
            routed.texts[0].as_ptr(),
            ns.as_ptr(),
            "borrowed, not copied"
        );
        assert!(!routed.stamp(1).is_empty() && !routed.stamp(2).is_empty());
        assert_eq!(routed.text(1), b"e v=1 5\n", "trailing space dropped");
        assert_eq!(routed.text(2), b"f v=1 5\n", "canonical digits");
        let mut joined = Vec::new();
        for i in 0..routed.len() {
            let before = joined.len();
            routed.append_line(i, &mut joined);
            assert_eq!(joined.len() - before, routed.size(i));
        }
        assert_eq!(joined, b"d v=1 -5\ne v=1 5\nf v=1 5\n");
    }

    fn topology() -> Topology {
        Topology {
            version: 1,
            nodes: vec![trident_cluster::Node {
                id: "a".into(),
                url: "http://a".into(),
            }],
            replication: 1,
            default_strategy: "series".into(),
            rules: vec![trident_cluster::StrategyRule {
                database: Some("biz".into()),
                measurement: Some("http".into()),
                strategy: "measurement".into(),
            }],
            moving: None,
        }
    }
}

/// How a [`group_commit`] loop is bounded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GroupLimits {
    /// Groups in flight at once.
    pub slots: usize,
    /// A group stops taking parts at this many bytes.
    pub max_bytes: usize,
    /// ... or at this many lines.
    pub max_lines: usize,
    /// How long a group waits for more parts before it goes, while
    /// another group is in flight (zero: it takes only what is already
    /// queued). With nothing in flight a group goes at once.
    pub linger: Duration,
    /// With no part for this long and nothing in flight, the loop returns
    /// (`None`: only when the channel closes).
    pub idle: Option<Duration>,
}

/// Group commit, shared by the node batchers and the raw topic: takes
/// parts in arrival order and hands them to `flush` in groups, at most
/// `slots` groups in flight; what arrives while every slot is busy joins
/// the next group. While a group is in flight (the target is busy), the
/// next one also waits up to [`GroupLimits::linger`] for more parts; an
/// idle target gets a part at once. Returns when `rx` closes (after the
/// groups in flight) or when it has been idle (see [`GroupLimits::idle`]).
///
/// `measure` gives a part's bytes and lines.
pub(crate) async fn group_commit<P, Fut>(
    rx: &mut mpsc::UnboundedReceiver<P>,
    limits: GroupLimits,
    measure: impl Fn(&P) -> (usize, usize),
    flush: impl Fn(Vec<P>) -> Fut,
) where
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut inflight = tokio::task::JoinSet::new();
    loop {
        let next = match limits.idle {
            None => rx.recv().await,
            Some(idle) => match tokio::time::timeout(idle, rx.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    while inflight.try_join_next().is_some() {}
                    if inflight.is_empty() {
                        return;
                    }
                    continue;
                }
            },
        };
        let Some(first) = next else { break };
        let (mut bytes, mut lines) = measure(&first);
        let mut parts = vec![first];
        let room =
            |bytes: usize, lines: usize| bytes < limits.max_bytes && lines < limits.max_lines;
        while inflight.try_join_next().is_some() {}
        let linger = if inflight.is_empty() {
            Duration::ZERO
        } else {
            limits.linger
        };
        let deadline = tokio::time::Instant::now() + linger;
        while room(bytes, lines) {
            let next = if linger.is_zero() {
                rx.try_recv().ok()
            } else {
                tokio::time::timeout_at(deadline, rx.recv())
                    .await
                    .ok()
                    .flatten()
            };
            let Some(part) = next else { break };
            let (b, l) = measure(&part);
            (bytes, lines) = (bytes + b, lines + l);
            parts.push(part);
        }
        while inflight.len() >= limits.slots {
            tokio::select! {
                _ = inflight.join_next() => {}
                Some(part) = rx.recv(), if room(bytes, lines) => {
                    let (b, l) = measure(&part);
                    (bytes, lines) = (bytes + b, lines + l);
                    parts.push(part);
                }
            }
        }
        inflight.spawn(flush(parts));
    }
    while inflight.join_next().await.is_some() {}
}

#[cfg(test)]
mod group_tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::sync::Notify;

    /// The groups a flush saw, in order.
    type Recorded = Arc<Mutex<Vec<Vec<u32>>>>;
    type Flushing = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

    /// The groups flushed so far, and a flush that records each group and
    /// holds the one that starts with part 1 in flight until `release`.
    fn gated_flush(release: Arc<Notify>) -> (Recorded, impl Fn(Vec<u32>) -> Flushing) {
        let groups: Recorded = Arc::default();
        let (seen, gate) = (groups.clone(), release);
        let flush = move |parts: Vec<u32>| {
            let (seen, gate) = (seen.clone(), gate.clone());
            Box::pin(async move {
                let first = parts[0];
                seen.lock().unwrap().push(parts);
                if first == 1 {
                    gate.notified().await;
                }
            }) as Flushing
        };
        (groups, flush)
    }

    /// A part's arrival is answered at once when nothing is in flight; a
    /// part arriving while a group is in flight lingers for company, even
    /// with a slot free.
    #[tokio::test]
    async fn an_idle_target_gets_a_part_at_once_a_busy_one_a_joined_group() {
        let (tx, mut rx) = mpsc::unbounded_channel::<u32>();
        let release = Arc::new(Notify::new());
        let limits = GroupLimits {
            slots: 2,
            max_bytes: 3,
            max_lines: usize::MAX,
            linger: Duration::from_secs(30),
            idle: None,
        };
        // The first group stays in flight until released.
        let (groups, flush) = gated_flush(release.clone());
        let started = std::time::Instant::now();
        let committer = tokio::spawn(async move {
            group_commit(&mut rx, limits, |_| (1, 0), flush).await;
        });
        let groups_now = || groups.lock().unwrap().clone();
        tx.send(1).unwrap();
        while groups_now().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Flushed alone, long before the 30 s linger: nothing was in flight.
        assert_eq!(groups_now(), vec![vec![1]]);
        assert!(started.elapsed() < Duration::from_secs(10));
        // The first group is in flight and the second slot free: 2 still
        // waits for company and goes with 3 and 4 (the byte limit).
        tx.send(2).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(groups_now().len(), 1, "2 lingers while 1 is in flight");
        tx.send(3).unwrap();
        tx.send(4).unwrap();
        while groups_now().len() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(groups_now()[1], vec![2, 3, 4]);
        release.notify_one();
        drop(tx);
        committer.await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no linger waited out"
        );
    }

    /// A group stops at the line limit as at the byte limit: parts of two
    /// lines each, three lines at most, go two by two while the single
    /// slot is busy.
    #[tokio::test]
    async fn groups_stop_at_the_line_limit() {
        let (tx, mut rx) = mpsc::unbounded_channel::<u32>();
        let release = Arc::new(Notify::new());
        let limits = GroupLimits {
            slots: 1,
            max_bytes: usize::MAX,
            max_lines: 3,
            linger: Duration::ZERO,
            idle: None,
        };
        let (groups, flush) = gated_flush(release.clone());
        let committer = tokio::spawn(async move {
            group_commit(&mut rx, limits, |_| (10, 2), flush).await;
        });
        tx.send(1).unwrap();
        while groups.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // While 1 holds the only slot, five more parts queue up.
        for part in 2..=6 {
            tx.send(part).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        release.notify_one();
        drop(tx);
        committer.await.unwrap();
        assert_eq!(
            *groups.lock().unwrap(),
            vec![vec![1], vec![2, 3], vec![4, 5], vec![6]]
        );
    }
}
