//! The Kafka protocol as far as Trident's producers speak it, without I/O.
//!
//! What flows through: records (key, value, timestamp, headers) in, the
//! bytes of a [record batch](batch) (magic 2, CRC-32C, optionally
//! compressed) and of the requests that carry them out; the broker's
//! answers in, plain structs out. Four messages, each in one fixed,
//! version every broker since Kafka 2.5 understands:
//!
//! | message | key | version | used for |
//! |---|---|---|---|
//! | Produce | 0 | 7 | every partition of a write in one request per broker |
//! | Metadata | 3 | 5 | partition counts and leaders |
//! | InitProducerId | 22 | 3 | the producer id and epoch of an idempotent producer |
//!
//! A request is framed as `length, api key, version, correlation id,
//! client id, body`; an answer as `length, correlation id, body`. The
//! callers own the connections ([`frame_len`] tells how much to read).
//! InitProducerId is the one "flexible" version (tagged fields after the
//! header and the body, compact strings): tansu 0.6 answers only requests
//! that carry the producer id and epoch fields of version 3, and panics a
//! storage task on older ones.
//!
//! Decoding never panics on what a broker (or anything else on the port)
//! sends: every length is checked against what is left, and the decoders
//! are fuzzed (`fuzz/`).

use bytes::{BufMut, Bytes, BytesMut};

pub mod batch;
mod read;

pub use batch::{Compression, Record, Sequence};
use read::Reader;

/// What went wrong decoding an answer or encoding a batch.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The answer ended before a field it must hold.
    #[error(
        "the broker's answer ends early (at byte {0}): not a Kafka broker, or a version it does not speak"
    )]
    Truncated(usize),
    /// A length or count that cannot be right.
    #[error("the broker's answer has an impossible length or count ({0}) at byte {1}")]
    BadLength(i64, usize),
    /// A string that is not UTF-8.
    #[error("the broker's answer has a name that is not UTF-8 at byte {0}")]
    NotUtf8(usize),
    /// Compressing a batch failed.
    #[error("cannot compress a record batch: {0}")]
    Compress(#[from] std::io::Error),
}

/// The API keys used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i16)]
pub enum ApiKey {
    Produce = 0,
    Metadata = 3,
    InitProducerId = 22,
}

impl ApiKey {
    /// The one version of it spoken here.
    pub const fn version(self) -> i16 {
        match self {
            ApiKey::Produce => 7,
            ApiKey::Metadata => 5,
            ApiKey::InitProducerId => 3,
        }
    }

    /// Whether this version has tagged fields (a "flexible" version).
    const fn flexible(self) -> bool {
        matches!(self, ApiKey::InitProducerId)
    }
}

/// A request's bytes, length prefix included: the header and `body`.
pub fn request(key: ApiKey, correlation_id: i32, client_id: &str, body: &[u8]) -> BytesMut {
    let mut out = request_head(key, correlation_id, client_id, body.len());
    out.put_slice(body);
    out
}

/// The length prefix and header of a request whose body of `body_len`
/// bytes follows separately.
pub fn request_head(
    key: ApiKey,
    correlation_id: i32,
    client_id: &str,
    body_len: usize,
) -> BytesMut {
    let tags = usize::from(key.flexible());
    let header_len = 2 + 2 + 4 + 2 + client_id.len() + tags;
    let mut out = BytesMut::with_capacity(4 + header_len);
    put_len(&mut out, header_len + body_len);
    out.put_i16(key as i16);
    out.put_i16(key.version());
    out.put_i32(correlation_id);
    put_str(&mut out, client_id);
    if key.flexible() {
        out.put_u8(0); // no tagged fields
    }
    out
}

/// The length of a frame (request or answer) from its first four bytes:
/// `None` until four bytes are there, or if the length is negative.
pub fn frame_len(head: &[u8]) -> Option<usize> {
    let len = i32::from_be_bytes(head.get(..4)?.try_into().ok()?);
    usize::try_from(len).ok()
}

/// An answer's correlation id and body (the frame without its length).
pub fn answer(frame: &[u8]) -> Result<(i32, &[u8]), Error> {
    let mut r = Reader::new(frame);
    let id = r.i32()?;
    Ok((id, r.rest()))
}

/// A Metadata request body for `topics`, never creating them.
pub fn metadata_request(topics: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    put_len(&mut out, topics.len());
    for t in topics {
        put_str(&mut out, t);
    }
    out.put_u8(0); // allow_auto_topic_creation
    out
}

/// A broker as Metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
}

/// A topic as Metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    pub error_code: i16,
    pub name: String,
    /// `(partition, error code, leader node)`, in the order given.
    pub partitions: Vec<(i32, i16, i32)>,
}

/// A Metadata answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata {
    pub brokers: Vec<Broker>,
    pub topics: Vec<TopicMetadata>,
}

/// Decodes a Metadata (v5) answer body.
pub fn metadata_answer(body: &[u8]) -> Result<Metadata, Error> {
    let mut r = Reader::new(body);
    let _throttle = r.i32()?;
    let brokers = r.array(|r| {
        let node_id = r.i32()?;
        let host = r.string()?.to_owned();
        let port = r.i32()?;
        let _rack = r.nullable_string()?;
        Ok(Broker {
            node_id,
            host,
            port,
        })
    })?;
    let _cluster_id = r.nullable_string()?;
    let _controller = r.i32()?;
    let topics = r.array(|r| {
        let error_code = r.i16()?;
        let name = r.string()?.to_owned();
        let _internal = r.i8()?;
        let partitions = r.array(|r| {
            let error = r.i16()?;
            let index = r.i32()?;
            let leader = r.i32()?;
            for _ in 0..3 {
                // replicas, in-sync replicas, offline replicas
                r.array(Reader::i32)?;
            }
            Ok((index, error, leader))
        })?;
        Ok(TopicMetadata {
            error_code,
            name,
            partitions,
        })
    })?;
    Ok(Metadata { brokers, topics })
}

/// An InitProducerId (v3) request body for a new idempotent,
/// non-transactional producer.
pub fn init_producer_id_request() -> Vec<u8> {
    let mut out = Vec::new();
    out.put_u8(0); // transactional_id: null (compact: length + 1)
    out.put_i32(60_000); // transaction_timeout_ms (unused without one)
    out.put_i64(-1); // producer_id: none yet
    out.put_i16(-1); // producer_epoch
    out.put_u8(0); // no tagged fields
    out
}

/// Decodes an InitProducerId (v3) answer body (what follows the
/// correlation id, the header's tagged fields first): error code,
/// producer id and epoch.
pub fn init_producer_id_answer(body: &[u8]) -> Result<(i16, i64, i16), Error> {
    let mut r = Reader::new(body);
    r.skip_tags()?;
    let _throttle = r.i32()?;
    Ok((r.i16()?, r.i64()?, r.i16()?))
}

/// The body of a Produce request for one topic: each partition's encoded
/// batch. `acks` is -1 (all in-sync replicas) or 1 (the leader). Returned
/// as pieces, so that the batches' values are sent without being copied.
pub fn produce_request(
    acks: i16,
    timeout_ms: i32,
    topic: &str,
    batches: Vec<(i32, Vec<Bytes>)>,
) -> Vec<Bytes> {
    let mut head = BytesMut::with_capacity(64 + topic.len());
    head.put_i16(-1); // transactional_id: null
    head.put_i16(acks);
    head.put_i32(timeout_ms);
    put_len(&mut head, 1);
    put_str(&mut head, topic);
    put_len(&mut head, batches.len());
    let mut pieces = Vec::with_capacity(1 + batches.len() * 8);
    for (partition, batch) in batches {
        head.put_i32(partition);
        put_len(&mut head, batch.iter().map(Bytes::len).sum());
        pieces.push(head.split().freeze());
        pieces.extend(batch);
    }
    if !head.is_empty() {
        pieces.push(head.freeze());
    }
    pieces
}

/// One partition's outcome in a Produce answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Produced {
    pub topic: String,
    pub partition: i32,
    pub error_code: i16,
    pub base_offset: i64,
}

/// Decodes a Produce (v7) answer body.
pub fn produce_answer(body: &[u8]) -> Result<Vec<Produced>, Error> {
    let mut r = Reader::new(body);
    let topics = r.array(|r| {
        let topic = r.string()?.to_owned();
        r.array(|r| {
            let partition = r.i32()?;
            let error_code = r.i16()?;
            let base_offset = r.i64()?;
            let _log_append_time = r.i64()?;
            let _log_start_offset = r.i64()?;
            Ok(Produced {
                topic: topic.clone(),
                partition,
                error_code,
                base_offset,
            })
        })
    })?;
    let _throttle = r.i32()?;
    Ok(topics.into_iter().flatten().collect())
}

/// Kafka's name for an error code, for messages (the common ones; others
/// by number).
pub fn error_name(code: i16) -> String {
    let name = match code {
        -1 => "UNKNOWN_SERVER_ERROR",
        0 => "NONE",
        2 => "CORRUPT_MESSAGE",
        3 => "UNKNOWN_TOPIC_OR_PARTITION",
        5 => "LEADER_NOT_AVAILABLE",
        6 => "NOT_LEADER_OR_FOLLOWER",
        7 => "REQUEST_TIMED_OUT",
        10 => "MESSAGE_TOO_LARGE",
        19 => "NOT_ENOUGH_REPLICAS",
        20 => "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
        35 => "UNSUPPORTED_VERSION",
        45 => "OUT_OF_ORDER_SEQUENCE_NUMBER",
        46 => "DUPLICATE_SEQUENCE_NUMBER",
        47 => "INVALID_PRODUCER_EPOCH",
        59 => "UNKNOWN_PRODUCER_ID",
        76 => "UNSUPPORTED_COMPRESSION_TYPE",
        _ => return format!("error code {code}"),
    };
    name.to_owned()
}

/// A length or count as the protocol's INT32 (lengths here are bounded by
/// what fits in memory and by the frame, itself an INT32).
fn put_len(out: &mut impl BufMut, len: usize) {
    out.put_i32(i32::try_from(len).unwrap_or(i32::MAX));
}

/// A STRING: INT16 length, then the bytes.
fn put_str(out: &mut impl BufMut, s: &str) {
    out.put_i16(i16::try_from(s.len()).unwrap_or(i16::MAX));
    out.put_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_framed_with_its_length_and_header() {
        let frame = request(ApiKey::Metadata, 7, "gw", &metadata_request(&["raw"]));
        assert_eq!(frame_len(&frame), Some(frame.len() - 4));
        assert_eq!(
            &frame[4..],
            &[
                0, 3, 0, 5, 0, 0, 0, 7, 0, 2, b'g', b'w', // header
                0, 0, 0, 1, 0, 3, b'r', b'a', b'w', 0, // body
            ][..]
        );
    }

    #[test]
    fn a_metadata_answer_is_read() {
        let mut b = Vec::new();
        b.put_i32(0);
        b.put_i32(1);
        b.put_i32(1);
        put_str(&mut b, "127.0.0.1");
        b.put_i32(9092);
        b.put_i16(-1);
        b.put_i16(-1);
        b.put_i32(1);
        b.put_i32(1);
        b.put_i16(0);
        put_str(&mut b, "raw");
        b.put_u8(0);
        b.put_i32(2);
        for p in 0..2 {
            b.put_i16(0);
            b.put_i32(p);
            b.put_i32(1);
            for _ in 0..3 {
                b.put_i32(1);
                b.put_i32(1);
            }
        }
        let m = metadata_answer(&b).expect("valid");
        assert_eq!(
            m.brokers,
            [Broker {
                node_id: 1,
                host: "127.0.0.1".into(),
                port: 9092
            }]
        );
        assert_eq!(m.topics[0].name, "raw");
        assert_eq!(m.topics[0].partitions, [(0, 0, 1), (1, 0, 1)]);
        // Every shorter prefix is an error, not a panic.
        for cut in 0..b.len() {
            assert!(metadata_answer(&b[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn a_produce_answer_is_read() {
        let mut b = Vec::new();
        b.put_i32(1);
        put_str(&mut b, "raw");
        b.put_i32(1);
        b.put_i32(3);
        b.put_i16(45);
        b.put_i64(-1);
        b.put_i64(-1);
        b.put_i64(0);
        b.put_i32(0);
        assert_eq!(
            produce_answer(&b).expect("valid"),
            [Produced {
                topic: "raw".into(),
                partition: 3,
                error_code: 45,
                base_offset: -1
            }]
        );
        assert_eq!(error_name(45), "OUT_OF_ORDER_SEQUENCE_NUMBER");
    }

    #[test]
    fn a_produce_request_carries_each_partitions_batch_length() {
        let pieces = produce_request(
            -1,
            1000,
            "t",
            vec![
                (0, vec![Bytes::from_static(b"abc")]),
                (5, vec![Bytes::from_static(b"de"), Bytes::from_static(b"f")]),
            ],
        );
        let flat: Vec<u8> = pieces.iter().flat_map(|p| p.to_vec()).collect();
        let mut want = Vec::new();
        want.put_i16(-1);
        want.put_i16(-1);
        want.put_i32(1000);
        want.put_i32(1);
        put_str(&mut want, "t");
        want.put_i32(2);
        want.put_i32(0);
        want.put_i32(3);
        want.put_slice(b"abc");
        want.put_i32(5);
        want.put_i32(3);
        want.put_slice(b"def");
        assert_eq!(flat, want);
    }

    #[test]
    fn init_producer_id_is_the_flexible_version_3() {
        let frame = request(ApiKey::InitProducerId, 1, "g", &init_producer_id_request());
        assert_eq!(
            &frame[4..],
            &[
                0, 22, 0, 3, 0, 0, 0, 1, 0, 1, b'g', 0, // header, no tags
                0, 0, 0, 0xea, 0x60, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 0,
            ][..]
        );
        let mut answer = vec![0u8]; // the header's tags
        answer.put_i32(0);
        answer.put_i16(0);
        answer.put_i64(7);
        answer.put_i16(2);
        answer.put_u8(0);
        assert_eq!(init_producer_id_answer(&answer).expect("valid"), (0, 7, 2));
        // Tagged fields are skipped, whatever they hold.
        let mut tagged = vec![1u8, 5, 2, 0xaa, 0xbb];
        tagged.extend_from_slice(&answer[1..]);
        assert_eq!(init_producer_id_answer(&tagged).expect("valid"), (0, 7, 2));
    }

    #[test]
    fn huge_counts_are_errors_not_allocations() {
        let mut b = Vec::new();
        b.put_i32(0);
        b.put_i32(i32::MAX);
        assert!(matches!(metadata_answer(&b), Err(Error::BadLength(..))));
    }
}
