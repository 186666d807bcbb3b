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

use std::sync::{Arc, Weak};
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
    type DeliveryOpaque = Box<oneshot::Sender<Ack>>;

    fn delivery(&self, result: &DeliveryResult<'_>, waiting: Self::DeliveryOpaque) {
        let ack = match result {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.to_string()),
        };
        // The request may have given up waiting; nothing to do then.
        let _ = waiting.send(ack);
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
