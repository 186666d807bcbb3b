//! librdkafka producers polled by a thread of our own.
//!
//! rdkafka's `FutureProducer` and `ThreadedProducer` poll every 100 ms, and
//! each poll spins through its last millisecond (the remaining time rounds
//! down to a 0 ms wait): a constant cost that was a fifth of the gateway's
//! CPU at 15 000 lines/s (docs/benchmarks.md). Here a thread polls with a
//! long timeout: deliveries are still handled at once (every event is
//! dispatched as it arrives), and the spin — which every `poll` call ends
//! with, however long — comes once every [`POLL_FOR`]. The thread holds the
//! producer only while polling and ends when the last handle is dropped,
//! so a replaced producer lives on for at most that long, idle.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::producer::{BaseProducer, DeliveryResult, ProducerContext};
use tokio::sync::oneshot;

/// How long one `poll` call lasts. Each ends with about a millisecond of
/// busy polling (rdkafka counts the remaining time down in whole
/// milliseconds, so the last one is a loop of non-blocking polls): with
/// 2 s that was 0.45 ms of CPU a second per producer, idle or not — over
/// half of an idle gateway's CPU (docs/benchmarks.md).
const POLL_FOR: Duration = Duration::from_secs(30);

/// Hands each delivery report to the request waiting for it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Acks;

/// What a waiting request receives: `Err` with librdkafka's words.
pub type Ack = Result<(), String>;

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = Arc<Awaited>;

    fn delivery(&self, result: &DeliveryResult<'_>, awaited: Self::DeliveryOpaque) {
        awaited.report(match result {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.to_string()),
        });
    }
}

/// The records one request waits for, with one outcome: the first
/// failure, or success once the last is acknowledged. One wake-up of the
/// waiting task per set, not one per record.
#[derive(Debug)]
pub struct Awaited {
    /// Records not yet acknowledged, plus one while they are handed over.
    left: AtomicUsize,
    outcome: Mutex<Option<oneshot::Sender<Ack>>>,
}

impl Awaited {
    /// An empty set, held open until [`Awaited::sealed`], and where its
    /// outcome arrives.
    pub fn new() -> (Arc<Self>, oneshot::Receiver<Ack>) {
        let (tx, rx) = oneshot::channel();
        let awaited = Self {
            left: AtomicUsize::new(1),
            outcome: Mutex::new(Some(tx)),
        };
        (Arc::new(awaited), rx)
    }

    /// One more record to wait for: its delivery opaque.
    pub fn one_more(self: &Arc<Self>) -> Arc<Self> {
        self.left.fetch_add(1, Ordering::Relaxed);
        self.clone()
    }

    /// Every record is handed over: the outcome may be sent.
    pub fn sealed(&self) {
        self.report(Ok(()));
    }

    fn report(&self, ack: Ack) {
        let settled = ack.is_err() || self.left.fetch_sub(1, Ordering::AcqRel) == 1;
        if settled
            && let Some(tx) = self
                .outcome
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
        {
            // The request may have given up waiting; nothing to do then.
            let _ = tx.send(ack);
        }
    }
}

/// Starts polling `producer` and returns the handle to use.
pub fn polled<C: ProducerContext + 'static>(producer: BaseProducer<C>) -> Arc<BaseProducer<C>> {
    let shared = Arc::new(producer);
    let weak: Weak<BaseProducer<C>> = Arc::downgrade(&shared);
    let spawned = std::thread::Builder::new()
        .name("kafka-poll".into())
        .spawn(move || {
            while let Some(producer) = weak.upgrade() {
                producer.poll(POLL_FOR);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the Kafka polling thread");
    }
    shared
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outcome_comes_after_the_last_record_and_the_seal() {
        let (awaited, mut rx) = Awaited::new();
        let (a, b) = (awaited.one_more(), awaited.one_more());
        a.report(Ok(()));
        awaited.sealed();
        assert!(rx.try_recv().is_err(), "one record is still out");
        b.report(Ok(()));
        assert_eq!(rx.try_recv(), Ok(Ok(())));
    }

    #[test]
    fn the_first_failure_is_the_outcome() {
        let (awaited, mut rx) = Awaited::new();
        let (a, b) = (awaited.one_more(), awaited.one_more());
        a.report(Err("timed out".into()));
        b.report(Ok(()));
        awaited.sealed();
        assert_eq!(rx.try_recv(), Ok(Err("timed out".into())));
    }

    #[test]
    fn an_empty_set_succeeds_when_sealed() {
        let (awaited, mut rx) = Awaited::new();
        awaited.sealed();
        assert_eq!(rx.try_recv(), Ok(Ok(())));
    }
}
