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
//!
//! Records are handed over with [`send`], which lends librdkafka the
//! payload instead of having it copied.

use std::ffi::{CStr, c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use rdkafka::ClientContext;
use rdkafka::bindings as rdsys;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext};
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
    type DeliveryOpaque = Box<Lent>;

    fn delivery(&self, result: &DeliveryResult<'_>, lent: Self::DeliveryOpaque) {
        lent.awaited.report(match result {
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

/// A record's payload, lent to librdkafka until its delivery report, and
/// the set the record belongs to. The report hands it back (as the
/// delivery opaque), and dropping it there frees the payload.
#[derive(Debug)]
pub struct Lent {
    payload: Bytes,
    awaited: Arc<Awaited>,
}

/// Where a record goes and what it carries besides its payload.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub topic: &'a CStr,
    pub partition: i32,
    pub key: &'a [u8],
    /// The `db` and `rp` headers.
    pub db: &'a str,
    pub rp: &'a str,
    pub timestamp_ms: i64,
}

/// Enqueues `record` with `payload` on `producer`; its delivery report
/// goes to `awaited`.
///
/// Unlike rdkafka's `BaseProducer::send`, which always asks librdkafka for
/// a copy of the payload (`RD_KAFKA_MSG_F_COPY`: a memmove of every byte
/// produced, 2 % of the gateway's CPU at 5 000-line writes,
/// docs/benchmarks.md), this lends it: librdkafka reads the payload in
/// place until it reports the delivery, and the payload is owned by the
/// delivery opaque until then. A producer dropped without serving its
/// reports leaks the payloads it still holds rather than freeing them
/// under librdkafka.
///
/// The raw producer reports every delivery; the alert producer, which
/// reports only failures (`delivery.report.only.error`: reports would
/// cost more wake-ups than the copy), keeps rdkafka's copying `send` — a
/// delivered record's lent payload would never be freed.
#[allow(unsafe_code)]
pub fn send(
    producer: &BaseProducer<Acks>,
    record: &Record<'_>,
    payload: Bytes,
    awaited: Arc<Awaited>,
) -> Result<(), KafkaError> {
    let lent = Box::new(Lent { payload, awaited });
    // The bytes stay where they are while the box, and then librdkafka,
    // holds them.
    let (payload_ptr, payload_len) = (lent.payload.as_ptr(), lent.payload.len());
    let opaque = Box::into_raw(lent);
    // SAFETY: the arguments are the (type, value) pairs rd_kafka_producev
    // reads with va_arg, in its C types (int32_t partition, int flags,
    // size_t lengths, int64_t timestamp, ssize_t header sizes), ended by
    // RD_KAFKA_VTYPE_END. librdkafka copies the topic name, key and
    // headers before it returns. Without RD_KAFKA_MSG_F_COPY or _F_FREE
    // it reads the payload until the delivery report ("the caller must
    // ensure that the memory backing payload remains valid ... until the
    // delivery callback is invoked", rdkafka.h): the payload is owned by
    // `opaque`, which librdkafka hands back only with that report
    // (rdkafka's delivery callback rebuilds the box with `from_ptr`).
    let err = unsafe {
        use rdsys::rd_kafka_vtype_t::*;
        rdsys::rd_kafka_producev(
            producer.client().native_ptr(),
            RD_KAFKA_VTYPE_TOPIC,
            record.topic.as_ptr(),
            RD_KAFKA_VTYPE_PARTITION,
            record.partition,
            RD_KAFKA_VTYPE_MSGFLAGS,
            0 as c_int,
            RD_KAFKA_VTYPE_VALUE,
            payload_ptr.cast_mut().cast::<c_void>(),
            payload_len,
            RD_KAFKA_VTYPE_KEY,
            record.key.as_ptr().cast_mut().cast::<c_void>(),
            record.key.len(),
            RD_KAFKA_VTYPE_OPAQUE,
            opaque.cast::<c_void>(),
            RD_KAFKA_VTYPE_TIMESTAMP,
            record.timestamp_ms,
            RD_KAFKA_VTYPE_HEADER,
            c"db".as_ptr(),
            record.db.as_ptr().cast::<c_void>(),
            record.db.len() as isize,
            RD_KAFKA_VTYPE_HEADER,
            c"rp".as_ptr(),
            record.rp.as_ptr().cast::<c_void>(),
            record.rp.len() as isize,
            RD_KAFKA_VTYPE_END,
        )
    };
    if err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        return Ok(());
    }
    // SAFETY: refused, so librdkafka kept no pointer to the opaque or the
    // payload: the box is ours again, rebuilt once from its own pointer.
    drop(unsafe { Box::from_raw(opaque) });
    Err(KafkaError::MessageProduction(err.into()))
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
