//! Bounded, fsync'd on-disk FIFOs: what the gateway acknowledged but could
//! not deliver yet (hinted handoff for an InfluxDB node, the raw topic's
//! records while the broker is down).
//!
//! Each spool is one [`queue_file::QueueFile`] (CRC-checked entries, the
//! header committed last, every change fsync'd before it returns) owned by a
//! thread of its own: the file is neither `Send` nor async, and fsync must
//! not stall the runtime. Appends that arrive while one is being written are
//! committed together (group commit), so many concurrent requests cost one
//! fsync. An append returns only once its entry is on disk — that is what
//! lets a write be answered 2xx.
//!
//! The bound counts entry bytes: an append that would pass it fails with
//! [`SpoolError::Full`] and the caller answers 503. The file itself may be
//! up to about twice the bound (it grows by doubling).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};

use queue_file::QueueFile;
use tokio::sync::{Notify, oneshot};
use trident_service::health::{Health, Status};

/// Why a spool did not take or give an entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpoolError {
    /// The entry does not fit under the bound.
    #[error(
        "the spool {name} is full ({limit} bytes, gateway.spool_max_bytes): the target has been down too long"
    )]
    Full {
        /// Which spool.
        name: String,
        /// Its bound in bytes.
        limit: u64,
    },
    /// The file could not be read or written.
    #[error("spool file {path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The spool's thread has stopped (the gateway is stopping).
    #[error("the spool {0} is closed")]
    Closed(String),
}

enum Op {
    Append(Vec<u8>, oneshot::Sender<Result<(), SpoolError>>),
    Peek {
        max_entries: usize,
        max_bytes: usize,
        reply: oneshot::Sender<Result<Vec<Vec<u8>>, SpoolError>>,
    },
    Remove(usize, oneshot::Sender<Result<(), SpoolError>>),
}

/// One spool; clones share it.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    limit: u64,
    ops: mpsc::Sender<Op>,
    /// Entry bytes and entries on disk.
    bytes: AtomicU64,
    entries: AtomicU64,
    /// Woken on every append, for the replayer.
    appended: Notify,
    /// Where its state is reported: the health component and what the
    /// spool stands for.
    health: OnceLock<(Health, String, String)>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("name", &self.inner.name)
            .field("entries", &self.entries())
            .field("bytes", &self.bytes())
            .finish_non_exhaustive()
    }
}

impl Spool {
    /// Opens (or creates) the spool file `path`, keeping every entry a
    /// previous run left in it. `name` names it in errors and metrics.
    pub fn open(name: &str, path: &Path, limit: u64) -> Result<Self, SpoolError> {
        let io = |e: &dyn std::fmt::Display| SpoolError::Io {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io(&e))?;
        }
        let (ops, receiver) = mpsc::channel();
        let (opened, opened_rx) = mpsc::sync_channel(1);
        let thread_path = path.to_owned();
        std::thread::Builder::new()
            .name(format!("spool-{name}"))
            .spawn(move || {
                let queue = match QueueFile::open(&thread_path) {
                    Ok(queue) => queue,
                    Err(e) => {
                        let _ = opened.send(Err(e.to_string()));
                        return;
                    }
                };
                let bytes: u64 = queue.iter().map(|e| e.len() as u64).sum();
                let _ = opened.send(Ok((queue.size() as u64, bytes)));
                serve(queue, &thread_path, &receiver);
            })
            .map_err(|e| io(&e))?;
        let (entries, bytes) = opened_rx.recv().map_err(|e| io(&e))?.map_err(|e| {
            io(&format!(
                "cannot open ({e}); move it aside only if its entries may be lost"
            ))
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                limit,
                ops,
                bytes: AtomicU64::new(bytes),
                entries: AtomicU64::new(entries),
                appended: Notify::new(),
                health: OnceLock::new(),
            }),
        })
    }

    /// Keeps `component` of `health` current: up while the spool is empty,
    /// degraded (saying how much waits, and that `target` is why) otherwise.
    pub fn report_to(&self, health: &Health, component: &str, target: &str) {
        let _ = self
            .inner
            .health
            .set((health.clone(), component.to_owned(), target.to_owned()));
        self.publish();
    }

    /// The spool's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Entries waiting.
    pub fn entries(&self) -> u64 {
        self.inner.entries.load(Ordering::Acquire)
    }

    /// Entry bytes waiting.
    pub fn bytes(&self) -> u64 {
        self.inner.bytes.load(Ordering::Acquire)
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.entries() == 0
    }

    /// Appends `entry`; returns once it is on disk.
    pub async fn append(&self, entry: Vec<u8>) -> Result<(), SpoolError> {
        let size = entry.len() as u64;
        // Reserve the room first, so concurrent appends cannot overshoot.
        let reserved = self
            .inner
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                (b + size <= self.inner.limit).then_some(b + size)
            });
        if reserved.is_err() {
            return Err(SpoolError::Full {
                name: self.inner.name.clone(),
                limit: self.inner.limit,
            });
        }
        let (reply, answer) = oneshot::channel();
        let result = match self.inner.ops.send(Op::Append(entry, reply)) {
            Ok(()) => answer.await.unwrap_or_else(|_| Err(self.closed())),
            Err(_) => Err(self.closed()),
        };
        match &result {
            Ok(()) => {
                self.inner.entries.fetch_add(1, Ordering::AcqRel);
                self.inner.appended.notify_one();
            }
            Err(_) => {
                self.inner.bytes.fetch_sub(size, Ordering::AcqRel);
            }
        }
        self.publish();
        result
    }

    /// Up to `max_entries` entries from the head (at least one if any
    /// waits, else at most `max_bytes` in total), without removing them.
    pub async fn peek(
        &self,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<Vec<u8>>, SpoolError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .ops
            .send(Op::Peek {
                max_entries,
                max_bytes,
                reply,
            })
            .map_err(|_| self.closed())?;
        answer.await.unwrap_or_else(|_| Err(self.closed()))
    }

    /// Removes the `n` head entries, whose sizes sum to `bytes`: they were
    /// delivered (or can never be).
    pub async fn remove(&self, n: usize, bytes: u64) -> Result<(), SpoolError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .ops
            .send(Op::Remove(n, reply))
            .map_err(|_| self.closed())?;
        answer.await.unwrap_or_else(|_| Err(self.closed()))?;
        self.inner.entries.fetch_sub(n as u64, Ordering::AcqRel);
        self.inner.bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.publish();
        Ok(())
    }

    /// Waits until something is appended (returns at once if something was
    /// appended since the last wait).
    pub async fn appended(&self) {
        self.inner.appended.notified().await;
    }

    fn closed(&self) -> SpoolError {
        SpoolError::Closed(self.inner.name.clone())
    }

    fn publish(&self) {
        let name = self.inner.name.clone();
        metrics::gauge!("trident_gateway_spool_bytes", "spool" => name.clone())
            .set(self.bytes() as f64);
        metrics::gauge!("trident_gateway_spool_entries", "spool" => name)
            .set(self.entries() as f64);
        if let Some((health, component, target)) = self.inner.health.get() {
            if self.is_empty() {
                health.set(component, Status::Up, "");
            } else {
                health.set(
                    component,
                    Status::Degraded,
                    format!(
                        "{target}: {} writes ({} bytes) spooled, replaying",
                        self.entries(),
                        self.bytes()
                    ),
                );
            }
        }
    }
}

/// The spool thread: one operation at a time, appends committed in groups.
fn serve(mut queue: QueueFile, path: &Path, ops: &mpsc::Receiver<Op>) {
    let io = |e: queue_file::Error| SpoolError::Io {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let mut next = ops.recv().ok();
    while let Some(op) = next.take() {
        match op {
            Op::Append(entry, reply) => {
                let mut group = vec![(entry, reply)];
                // Everything already waiting joins this fsync.
                loop {
                    match ops.try_recv() {
                        Ok(Op::Append(entry, reply)) => group.push((entry, reply)),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let result = queue
                    .add_n(group.iter().map(|(entry, _)| entry.as_slice()))
                    .map_err(io);
                for (_, reply) in group {
                    let _ = reply.send(result.clone());
                }
            }
            Op::Peek {
                max_entries,
                max_bytes,
                reply,
            } => {
                let mut out = Vec::new();
                let mut total = 0;
                for entry in queue.iter().take(max_entries) {
                    if !out.is_empty() && total + entry.len() > max_bytes {
                        break;
                    }
                    total += entry.len();
                    out.push(entry);
                }
                let _ = reply.send(Ok(out));
            }
            Op::Remove(n, reply) => {
                let _ = reply.send(queue.remove_n(n).map_err(io));
            }
        }
        if next.is_none() {
            next = ops.recv().ok();
        }
    }
}

/// Length-prefixed fields, the layout of every spool entry.
pub fn encode(fields: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(fields.iter().map(|f| f.len() + 4).sum());
    for field in fields {
        let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&field[..len as usize]);
    }
    out
}

/// The fields of an entry [`encode`] wrote; `None` if it is cut short.
pub fn decode(mut entry: &[u8]) -> Option<Vec<&[u8]>> {
    let mut fields = Vec::new();
    while !entry.is_empty() {
        let (len, rest) = entry.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return None;
        }
        let (field, rest) = rest.split_at(len);
        fields.push(field);
        entry = rest;
    }
    Some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "trident-spool-test-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn fields_round_trip_and_a_cut_entry_is_refused() {
        let entry = encode(&[b"db", b"", b"cpu v=1 1\n"]);
        assert_eq!(
            decode(&entry).unwrap(),
            vec![&b"db"[..], b"", b"cpu v=1 1\n"]
        );
        assert_eq!(decode(&entry[..entry.len() - 1]), None);
        assert_eq!(decode(&entry[..2]), None);
    }

    #[tokio::test]
    async fn entries_survive_a_reopen_in_order_and_removal_is_durable() {
        let path = dir().join("a.spool");
        {
            let spool = Spool::open("a", &path, 1 << 20).unwrap();
            for i in 0..5u8 {
                spool.append(vec![i; 10 + usize::from(i)]).await.unwrap();
            }
            let head = spool.peek(2, usize::MAX).await.unwrap();
            assert_eq!(head, vec![vec![0; 10], vec![1; 11]]);
            spool.remove(2, 21).await.unwrap();
            assert_eq!((spool.entries(), spool.bytes()), (3, 12 + 13 + 14));
        }
        let spool = Spool::open("a", &path, 1 << 20).unwrap();
        assert_eq!((spool.entries(), spool.bytes()), (3, 12 + 13 + 14));
        let all = spool.peek(10, usize::MAX).await.unwrap();
        assert_eq!(all, vec![vec![2; 12], vec![3; 13], vec![4; 14]]);
    }

    #[tokio::test]
    async fn the_bound_refuses_what_does_not_fit_and_frees_on_removal() {
        let spool = Spool::open("b", &dir().join("b.spool"), 100).unwrap();
        spool.append(vec![1; 60]).await.unwrap();
        let full = spool.append(vec![2; 41]).await.unwrap_err();
        assert!(
            matches!(full, SpoolError::Full { limit: 100, .. }),
            "{full}"
        );
        assert!(full.to_string().contains("gateway.spool_max_bytes"));
        spool.append(vec![3; 40]).await.unwrap();
        spool.remove(1, 60).await.unwrap();
        spool.append(vec![4; 60]).await.unwrap();
        assert_eq!(spool.entries(), 2);
    }

    #[tokio::test]
    async fn concurrent_appends_all_land_and_peek_respects_the_byte_budget() {
        let spool = Spool::open("c", &dir().join("c.spool"), 1 << 20).unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..50u8 {
            let s = spool.clone();
            tasks.spawn(async move { s.append(vec![i; 100]).await });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap().unwrap();
        }
        assert_eq!((spool.entries(), spool.bytes()), (50, 5000));
        assert_eq!(spool.peek(50, 250).await.unwrap().len(), 2);
        assert_eq!(spool.peek(50, 10).await.unwrap().len(), 1, "at least one");
    }
}
