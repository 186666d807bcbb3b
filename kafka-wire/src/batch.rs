//! Record batches (magic 2), the unit a partition stores.
//!
//! ```text
//! base offset i64 | length i32 | leader epoch i32 | magic i8 = 2 | crc u32
//! | attributes i16 | last offset delta i32 | first timestamp i64
//! | max timestamp i64 | producer id i64 | producer epoch i16
//! | base sequence i32 | record count i32 | records (compressed or not)
//! ```
//!
//! The CRC-32C covers everything from the attributes to the end. Each
//! record is `length, attributes, timestamp delta, offset delta, key,
//! value, headers`, lengths and deltas as zig-zag varints. A value is
//! given as pieces (the lines of several writes, say) and uncompressed
//! pieces are not copied: a batch is a list of pieces, values' among them.

use std::io::{Read, Write};

use bytes::{BufMut, Bytes, BytesMut};

use crate::Error;
use crate::read::Reader;

/// Bytes before the records: the fixed header, record count included.
const HEADER: usize = 61;
/// Where the CRC-covered part starts (the attributes).
const CRC_FROM: usize = 21;
/// Value pieces shorter than this are copied into the batch's own bytes
/// rather than sent as pieces of their own.
const LEND_FROM: usize = 4096;

/// How a batch's records are compressed, as the `compression.type`
/// setting names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Lz4,
}

impl Compression {
    /// The codec named `name`, or `None` for one not written here
    /// (`snappy`, `zstd`).
    pub fn named(name: &str) -> Option<Self> {
        match name {
            "none" => Some(Self::None),
            "gzip" => Some(Self::Gzip),
            "lz4" => Some(Self::Lz4),
            _ => None,
        }
    }

    fn attribute(self) -> i16 {
        match self {
            Self::None => 0,
            Self::Gzip => 1,
            Self::Lz4 => 3,
        }
    }
}

/// One record to encode.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    pub key: &'a [u8],
    /// The value, as the concatenation of these pieces.
    pub value: &'a [Bytes],
    /// Creation time, milliseconds since the epoch.
    pub timestamp_ms: i64,
    pub headers: &'a [(&'a str, &'a [u8])],
}

/// The idempotent producer's stamp on a batch: its id, epoch and the
/// sequence number of the batch's first record. [`Sequence::NONE`] for
/// a producer that is not idempotent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sequence {
    pub producer_id: i64,
    pub epoch: i16,
    pub base: i32,
}

impl Record<'_> {
    /// The value's bytes.
    pub fn value_len(&self) -> usize {
        self.value.iter().map(Bytes::len).sum()
    }
}

impl Sequence {
    pub const NONE: Self = Self {
        producer_id: -1,
        epoch: -1,
        base: -1,
    };
}

/// Encodes `records` (at least one) as one batch, in pieces to send in
/// order.
pub fn encode(
    records: &[Record<'_>],
    sequence: Sequence,
    compression: Compression,
) -> Result<Vec<Bytes>, Error> {
    let first_ts = records.first().map_or(0, |r| r.timestamp_ms);
    let max_ts = records.iter().map(|r| r.timestamp_ms).max().unwrap_or(0);
    let mut pieces = vec![Bytes::new()];
    let mut own = BytesMut::new();
    // Compressed records are one piece: the codec reads them all.
    let lend = compression == Compression::None;
    for (i, r) in records.iter().enumerate() {
        put_record(&mut own, &mut pieces, i, r, first_ts, lend);
    }
    if lend {
        if !own.is_empty() {
            pieces.push(own.freeze());
        }
    } else {
        pieces.push(Bytes::from(compress(compression, &own)?));
    }
    let body: usize = pieces.iter().map(Bytes::len).sum();
    let mut head = BytesMut::with_capacity(HEADER);
    head.put_i64(0); // base offset: the broker assigns it
    head.put_i32(len_i32(HEADER - 12 + body));
    head.put_i32(-1); // partition leader epoch
    head.put_i8(2); // magic
    head.put_u32(0); // crc, below
    head.put_i16(compression.attribute()); // create time, not transactional
    head.put_i32(len_i32(records.len().saturating_sub(1)));
    head.put_i64(first_ts);
    head.put_i64(max_ts);
    head.put_i64(sequence.producer_id);
    head.put_i16(sequence.epoch);
    head.put_i32(sequence.base);
    head.put_i32(len_i32(records.len()));
    let crc = pieces[1..]
        .iter()
        .fold(crc32c::crc32c(&head[CRC_FROM..]), |crc, p| {
            crc32c::crc32c_append(crc, p)
        });
    head[17..21].copy_from_slice(&crc.to_be_bytes());
    pieces[0] = head.freeze();
    Ok(pieces)
}

/// Appends record `i` to `own`; with `lend`, each long piece of its value
/// becomes a piece of the batch (what `own` holds so far is cut off
/// before it).
fn put_record(
    own: &mut BytesMut,
    pieces: &mut Vec<Bytes>,
    i: usize,
    r: &Record<'_>,
    first_ts: i64,
    lend: bool,
) {
    let ts_delta = r.timestamp_ms.wrapping_sub(first_ts);
    let offset_delta = i64::try_from(i).unwrap_or(i64::MAX);
    let value_len = r.value_len();
    let headers_len = varint_len(len_i64(r.headers.len()))
        + r.headers
            .iter()
            .map(|(k, v)| {
                varint_len(len_i64(k.len())) + k.len() + varint_len(len_i64(v.len())) + v.len()
            })
            .sum::<usize>();
    let len = 1
        + varint_len(ts_delta)
        + varint_len(offset_delta)
        + varint_len(len_i64(r.key.len()))
        + r.key.len()
        + varint_len(len_i64(value_len))
        + value_len
        + headers_len;
    put_varint(own, len_i64(len));
    own.put_i8(0); // attributes
    put_varint(own, ts_delta);
    put_varint(own, offset_delta);
    put_varint(own, len_i64(r.key.len()));
    own.put_slice(r.key);
    put_varint(own, len_i64(value_len));
    for piece in r.value {
        if lend && piece.len() >= LEND_FROM {
            pieces.push(own.split().freeze());
            pieces.push(piece.clone());
        } else {
            own.put_slice(piece);
        }
    }
    put_varint(own, len_i64(r.headers.len()));
    for (k, v) in r.headers {
        put_varint(own, len_i64(k.len()));
        own.put_slice(k.as_bytes());
        put_varint(own, len_i64(v.len()));
        own.put_slice(v);
    }
}

fn compress(codec: Compression, records: &[u8]) -> Result<Vec<u8>, Error> {
    Ok(match codec {
        Compression::None => records.to_vec(),
        Compression::Gzip => {
            let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            z.write_all(records)?;
            z.finish()?
        }
        Compression::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut z = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
            z.write_all(records)?;
            z.finish().map_err(std::io::Error::other)?
        }
    })
}

/// The CRC-32C a batch carries, of its bytes from the attributes on.
pub fn crc(from_attributes: &[u8]) -> u32 {
    crc32c::crc32c(from_attributes)
}

/// A record read back from a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub offset_delta: i64,
    pub timestamp_ms: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Reads one batch back: its sequence stamp and records, after checking
/// its CRC. (For tests and the fuzzer: the producers only write.)
pub fn decode(batch: &[u8]) -> Result<(Sequence, Vec<Decoded>), Error> {
    let mut r = Reader::new(batch);
    let _base_offset = r.i64()?;
    let len = r.i32()?;
    if usize::try_from(len).ok() != batch.len().checked_sub(12) {
        return Err(Error::BadLength(len.into(), 8));
    }
    let _leader_epoch = r.i32()?;
    let magic = r.i8()?;
    if magic != 2 {
        return Err(Error::BadLength(magic.into(), 16));
    }
    let crc = r.i32()? as u32;
    if crc32c::crc32c(r.rest()) != crc {
        return Err(Error::BadLength(i64::from(crc), 17));
    }
    let attributes = r.i16()?;
    let _last_offset_delta = r.i32()?;
    let first_ts = r.i64()?;
    let _max_ts = r.i64()?;
    let sequence = Sequence {
        producer_id: r.i64()?,
        epoch: r.i16()?,
        base: r.i32()?,
    };
    let count = r.i32()?;
    let raw = r.rest();
    let inflated;
    let records = match attributes & 7 {
        0 => raw,
        1 => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(raw).read_to_end(&mut out)?;
            inflated = out;
            &inflated
        }
        3 => {
            let mut out = Vec::new();
            lz4_flex::frame::FrameDecoder::new(raw).read_to_end(&mut out)?;
            inflated = out;
            &inflated
        }
        other => return Err(Error::BadLength(other.into(), 21)),
    };
    let mut v = Varints(Reader::new(records));
    let mut out = Vec::new();
    for _ in 0..count.max(0) {
        let _len = v.varint()?;
        let _attributes = v.0.i8()?;
        let timestamp_ms = first_ts.wrapping_add(v.varint()?);
        let offset_delta = v.varint()?;
        let key = v.bytes()?;
        let value = v.bytes()?;
        let n = v.varint()?;
        let mut headers = Vec::new();
        for _ in 0..n.max(0) {
            let k = v.bytes()?.unwrap_or_default();
            let k = String::from_utf8(k).map_err(|_| Error::NotUtf8(0))?;
            headers.push((k, v.bytes()?));
        }
        out.push(Decoded {
            offset_delta,
            timestamp_ms,
            key,
            value,
            headers,
        });
    }
    Ok((sequence, out))
}

/// Zig-zag varints over a reader.
struct Varints<'a>(Reader<'a>);

impl Varints<'_> {
    fn varint(&mut self) -> Result<i64, Error> {
        let mut n: u64 = 0;
        for shift in (0..70).step_by(7) {
            let b = self.0.i8()? as u8;
            n |= u64::from(b & 0x7f).checked_shl(shift).unwrap_or(0);
            if b & 0x80 == 0 {
                return Ok((n >> 1) as i64 ^ -((n & 1) as i64));
            }
        }
        Err(Error::BadLength(-1, 0))
    }

    /// Varint length and bytes; -1 is null.
    fn bytes(&mut self) -> Result<Option<Vec<u8>>, Error> {
        let len = self.varint()?;
        if len == -1 {
            return Ok(None);
        }
        let n = usize::try_from(len).map_err(|_| Error::BadLength(len, 0))?;
        let out = self.0.take(n)?.to_vec();
        Ok(Some(out))
    }
}

fn put_varint(out: &mut impl BufMut, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    out.put_u8(z as u8);
}

fn varint_len(n: i64) -> usize {
    let z = ((n << 1) ^ (n >> 63)) as u64;
    (64 - z.leading_zeros() as usize).max(1).div_ceil(7)
}

fn len_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn len_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn flat(pieces: &[Bytes]) -> Vec<u8> {
        pieces.iter().flat_map(|p| p.to_vec()).collect()
    }

    #[test]
    fn varints_are_zigzag_leb128() {
        for (n, want) in [
            (0i64, &[0u8][..]),
            (-1, &[1]),
            (1, &[2]),
            (63, &[126]),
            (64, &[128, 1]),
            (-65, &[129, 1]),
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, n);
            assert_eq!(out, want, "{n}");
            assert_eq!(varint_len(n), want.len(), "{n}");
        }
        for n in [i64::MIN, i64::MAX, 1 << 40, -(1 << 40)] {
            let mut out = Vec::new();
            put_varint(&mut out, n);
            assert_eq!(varint_len(n), out.len());
            assert_eq!(Varints(Reader::new(&out)).varint().ok(), Some(n));
        }
    }

    proptest! {
        #[test]
        fn batches_read_back_as_written(
            // Each value in one to three pieces, long and short ones.
            values in proptest::collection::vec(
                proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..6000), 1..4),
                1..6,
            ),
            codec in prop_oneof![Just(Compression::None), Just(Compression::Gzip), Just(Compression::Lz4)],
            ts in 0i64..2_000_000_000_000,
            base in 0i32..1000,
        ) {
            let headers: &[(&str, &[u8])] = &[("db", b"telegraf"), ("rp", b"")];
            let pieces: Vec<Vec<Bytes>> = values
                .iter()
                .map(|v| v.iter().map(|p| Bytes::from(p.clone())).collect())
                .collect();
            let records: Vec<Record<'_>> = pieces
                .iter()
                .enumerate()
                .map(|(i, v)| Record {
                    key: b"cpu,host=a",
                    value: v,
                    timestamp_ms: ts + i as i64,
                    headers,
                })
                .collect();
            let seq = Sequence { producer_id: 42, epoch: 3, base };
            let batch = flat(&encode(&records, seq, codec).expect("encodes"));
            let (read_seq, read) = decode(&batch).expect("decodes");
            prop_assert_eq!(read_seq, seq);
            prop_assert_eq!(read.len(), records.len());
            for (i, (got, want)) in read.iter().zip(&records).enumerate() {
                prop_assert_eq!(got.offset_delta, i as i64);
                prop_assert_eq!(got.timestamp_ms, want.timestamp_ms);
                prop_assert_eq!(got.key.as_deref(), Some(&b"cpu,host=a"[..]));
                prop_assert_eq!(got.value.as_deref(), Some(&want.value.concat()[..]));
                prop_assert_eq!(got.headers.len(), 2);
            }
        }
    }

    #[test]
    fn a_flipped_bit_fails_the_crc() {
        let records = [Record {
            key: b"k",
            value: &[Bytes::from_static(b"cpu v=1 1\n")],
            timestamp_ms: 5,
            headers: &[],
        }];
        let mut batch = flat(&encode(&records, Sequence::NONE, Compression::None).expect("ok"));
        assert!(decode(&batch).is_ok());
        let last = batch.len() - 3;
        batch[last] ^= 1;
        assert!(decode(&batch).is_err());
    }

    #[test]
    fn the_header_matches_the_layout() {
        let records = [
            Record {
                key: b"k",
                value: &[Bytes::from_static(b"a")],
                timestamp_ms: 1000,
                headers: &[],
            },
            Record {
                key: b"k",
                value: &[Bytes::from_static(b"b")],
                timestamp_ms: 1007,
                headers: &[],
            },
        ];
        let seq = Sequence {
            producer_id: 9,
            epoch: 1,
            base: 100,
        };
        let batch = flat(&encode(&records, seq, Compression::None).expect("ok"));
        assert_eq!(&batch[..8], &[0; 8]);
        assert_eq!(
            i32::from_be_bytes(batch[8..12].try_into().expect("4")) as usize,
            batch.len() - 12
        );
        assert_eq!(batch[16], 2);
        assert_eq!(i32::from_be_bytes(batch[23..27].try_into().expect("4")), 1);
        assert_eq!(
            i64::from_be_bytes(batch[35..43].try_into().expect("8")),
            1007
        );
        assert_eq!(
            i32::from_be_bytes(batch[53..57].try_into().expect("4")),
            100
        );
        assert_eq!(i32::from_be_bytes(batch[57..61].try_into().expect("4")), 2);
    }
}
