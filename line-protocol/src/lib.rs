//! # trident-line-protocol
//!
//! InfluxDB 1.x line protocol, the wire format everywhere inside Trident.
//! Bytes come in from a write request and go out as validated lines, keys
//! and canonical text; nothing here does I/O.
//!
//! ```text
//! request body ──parse_lines()──► Result<Line, ParseError> per line
//!                                   │  (bad lines rejected alone: partial writes)
//!                                   ├─► series_key / shard_key ──► shard_hash (XXH3-64)
//!                                   ├─► tags() / fields()  (borrowed, unescaped on demand)
//!                                   └─► LineWriter ──► canonical line protocol
//! ```
//!
//! # Layout
//! - [`parse`]: the one-pass parser and the borrowed [`Line`] view.
//! - [`precision`]: the `precision` parameter and conversion to nanoseconds.
//! - [`keys`]: canonical series keys, shard keys per [`Strategy`], the hash.
//! - [`write`]: [`Point`] and [`LineWriter`], canonical serialisation.
//! - [`compat`]: what an InfluxDB 1.x server answers for the same body
//!   (status, and its short error wording).
//! - [`test_helpers`] (feature `test_helpers`): proptest strategies for points.
//!
//! # Rules (InfluxDB 1.x, and where Trident differs)
//! - One result per line; blank lines and `#` comments yield nothing; a
//!   quoted string value may span lines, as in 1.x.
//! - Field types: float (no suffix), integer `i`, unsigned `u` (refused
//!   unless [`ParseOptions::allow_unsigned`], as 1.x), string `"…"`, boolean
//!   `t T true True TRUE f F false False FALSE`.
//! - Keys `time`, `_field` and `_measurement` are refused as tag or field
//!   keys; a duplicate tag key is refused; a duplicate field key keeps the
//!   last value (as 1.x). Both checks sort the keys when a line has many,
//!   so a line of a mebibyte of fields costs n log n, not n².
//! - Limits: series key + field key 65 535 bytes, string value 64 KiB,
//!   line length configurable; timestamps must lie in 1.x's range.
//! - Differences from 1.x, on purpose: a `\r\n` line ending is accepted
//!   (1.x rejects the `\r`), and a line that is not UTF-8 is refused (1.x
//!   stores the bytes, which downstream consumers cannot read).

pub mod compat;
mod error;
pub mod keys;
pub mod parse;
pub mod precision;
#[cfg(feature = "test_helpers")]
pub mod test_helpers;
pub mod write;

pub use error::{Error, ErrorKind, KeyRole, ParseError, Result};
pub use keys::{Strategy, series_shard_key, shard_hash, shard_key_of};
pub use parse::{
    FieldKey, FieldValue, Fields, Line, Lines, ParseOptions, Tags, Token, parse_lines,
};
pub use precision::Precision;
pub use write::{LineWriter, Point, Value};
