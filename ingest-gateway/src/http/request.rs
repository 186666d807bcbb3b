//! Reading a write request the way InfluxDB does: target database and
//! retention policy, precision, consistency, credentials, and the body
//! (gzip included) within a size limit that also holds after inflation.
//!
//! Error texts are InfluxDB's own (observed on a 1.x node), because clients
//! and their operators match on them.

use std::io::Read;

use base64::Engine;
use trident_line_protocol::Precision;

/// Why a write request is refused before its lines are read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// v1 without `db`.
    #[error("database is required")]
    MissingDatabase,
    /// v2 without `bucket`.
    #[error("bucket is required")]
    MissingBucket,
    /// `consistency` other than any, one, quorum, all.
    #[error("invalid consistency level")]
    InvalidConsistency,
    /// v2 `precision` other than ns, us, ms, s.
    #[error("invalid precision \"{0}\": use ns, us, ms or s")]
    InvalidPrecision(String),
    /// The body, or what it inflates to, is over the limit: InfluxDB's
    /// words (the limit goes to the gateway's log).
    #[error("Request Entity Too Large")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// `Content-Encoding: gzip` with a body that is not gzip.
    #[error("{0}")]
    BadGzip(String),
    /// An `Authorization` header that cannot be read.
    #[error("unable to parse authentication credentials")]
    BadCredentials,
    /// The body, inflating, outgrew what `gateway.max_inflight_bytes`
    /// has left: 503, the client sends it again later.
    #[error(
        "the gateway is overloaded: too many bytes of writes in progress (gateway.max_inflight_bytes); retry later"
    )]
    InflightBytes,
}

impl RequestError {
    /// The `reason` label of `trident_gateway_refused_requests_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            RequestError::MissingDatabase => "missing_database",
            RequestError::MissingBucket => "missing_bucket",
            RequestError::InvalidConsistency => "invalid_consistency",
            RequestError::InvalidPrecision(_) => "invalid_precision",
            RequestError::BodyTooLarge { .. } => "body_too_large",
            RequestError::BadGzip(_) => "bad_gzip",
            RequestError::BadCredentials => "bad_credentials",
            RequestError::InflightBytes => "inflight_bytes",
        }
    }

    /// The HTTP status InfluxDB answers with.
    pub fn status(&self) -> u16 {
        match self {
            RequestError::BodyTooLarge { .. } => 413,
            RequestError::BadCredentials => 401,
            RequestError::InflightBytes => 503,
            _ => 400,
        }
    }
}

/// How many replicas of each line must be stored on a node before the
/// write is answered (InfluxDB's `consistency`). Spooled copies (hinted
/// handoff) count only for `any`, the level when none is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Every replica stored or spooled on disk.
    #[default]
    Any,
    /// One replica.
    One,
    /// A majority of replicas.
    Quorum,
    /// Every replica.
    All,
}

/// Where the lines of a write go, and how to read their timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteTarget {
    /// The database.
    pub db: String,
    /// The retention policy; `None` for the database's default.
    pub rp: Option<String>,
    /// Unit of the timestamps.
    pub precision: Precision,
    /// Required acknowledgements.
    pub consistency: Consistency,
}

/// A user and password from any of the places InfluxDB accepts them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub user: String,
    /// Password (or v2 token).
    pub password: String,
    /// Where they came from.
    pub source: Source,
}

/// Where credentials came from (InfluxDB words its refusals differently).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The `u` and `p` query parameters.
    Params,
    /// `Authorization: Basic …`.
    Basic,
    /// `Authorization: Token user:password` (1.8 and the v2 API).
    Token,
}

/// The first value of `name`, as Go's `url.Values.Get` (InfluxDB) returns.
fn param<'q>(query: &'q [(String, String)], name: &str) -> Option<&'q str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A v1 `/write`: `db` (required), `rp`, `precision` (1.x reads an unknown
/// one as nanoseconds), `consistency`.
pub fn v1_target(query: &[(String, String)]) -> Result<WriteTarget, RequestError> {
    let db = param(query, "db")
        .filter(|d| !d.is_empty())
        .ok_or(RequestError::MissingDatabase)?;
    let precision = param(query, "precision")
        .and_then(|p| p.parse().ok())
        .unwrap_or_default();
    let consistency = match param(query, "consistency") {
        None | Some("") => Consistency::default(),
        Some("any") => Consistency::Any,
        Some("one") => Consistency::One,
        Some("quorum") => Consistency::Quorum,
        Some("all") => Consistency::All,
        Some(_) => return Err(RequestError::InvalidConsistency),
    };
    Ok(WriteTarget {
        db: db.to_owned(),
        rp: param(query, "rp")
            .filter(|r| !r.is_empty())
            .map(str::to_owned),
        precision,
        consistency,
    })
}

/// A v2 `/api/v2/write`: `bucket` as `db` or `db/rp` (InfluxDB 1.8's
/// mapping), `precision` one of ns, us, ms, s; `org` is ignored.
pub fn v2_target(query: &[(String, String)]) -> Result<WriteTarget, RequestError> {
    let bucket = param(query, "bucket")
        .filter(|b| !b.is_empty())
        .ok_or(RequestError::MissingBucket)?;
    let (db, rp) = match bucket.split_once('/') {
        Some((db, rp)) => (db, Some(rp.to_owned()).filter(|r| !r.is_empty())),
        None => (bucket, None),
    };
    let precision = match param(query, "precision") {
        None | Some("" | "ns") => Precision::Nanoseconds,
        Some("us") => Precision::Microseconds,
        Some("ms") => Precision::Milliseconds,
        Some("s") => Precision::Seconds,
        Some(other) => return Err(RequestError::InvalidPrecision(other.to_owned())),
    };
    Ok(WriteTarget {
        db: db.to_owned(),
        rp,
        precision,
        consistency: Consistency::default(),
    })
}

/// Credentials from `u` and `p` (both non-empty: they win, as on a 1.x
/// node), else `Authorization: Basic …` or `Authorization: Token
/// user:password`. A header that cannot be read is an error; no
/// credentials at all is `None`.
pub fn credentials(
    query: &[(String, String)],
    authorization: Option<&str>,
) -> Result<Option<Credentials>, RequestError> {
    if let (Some(user), Some(password)) = (
        param(query, "u").filter(|u| !u.is_empty()),
        param(query, "p").filter(|p| !p.is_empty()),
    ) {
        return Ok(Some(Credentials {
            user: user.to_owned(),
            password: password.to_owned(),
            source: Source::Params,
        }));
    }
    let Some(header) = authorization else {
        return Ok(None);
    };
    let (scheme, value) = header
        .trim()
        .split_once(' ')
        .ok_or(RequestError::BadCredentials)?;
    let (pair, source) = if scheme.eq_ignore_ascii_case("basic") {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .map_err(|_| RequestError::BadCredentials)?;
        let pair = String::from_utf8(bytes).map_err(|_| RequestError::BadCredentials)?;
        (pair, Source::Basic)
    } else if scheme.eq_ignore_ascii_case("token") {
        (value.trim().to_owned(), Source::Token)
    } else {
        return Err(RequestError::BadCredentials);
    };
    let (user, password) = pair.split_once(':').ok_or(RequestError::BadCredentials)?;
    Ok(Some(Credentials {
        user: user.to_owned(),
        password: password.to_owned(),
        source,
    }))
}

/// The body's line protocol: inflated when `gzip`, and never more than
/// `limit` bytes either way. A gzip bomb stops at `limit + 1` inflated
/// bytes, so memory stays bounded whatever the compression ratio.
/// A body that is not compressed is handed back as it is, not copied.
pub fn decode_body(
    raw: &[u8],
    gzip: bool,
    limit: usize,
) -> Result<std::borrow::Cow<'_, [u8]>, RequestError> {
    decode_body_within(raw, gzip, limit, |_| true)
}

/// The smallest step by which an inflating body's buffer grows.
const INFLATE_STEP: usize = 256 << 10;

/// [`decode_body`], asking `reserve(n)` before the inflated body's buffer
/// grows by `n` bytes, and stopping with [`RequestError::InflightBytes`]
/// when refused. The buffer grows only here, by half its size (at least
/// [`INFLATE_STEP`], at first four times the compressed size), and never
/// beyond `limit`: a write of up to `limit` bytes asks for at most `limit`,
/// and one over `limit` is told so (413), not to retry. What is counted is
/// the memory held, not the bytes inflated so far; a body the budget
/// refuses stops inflating there.
pub fn decode_body_within(
    raw: &[u8],
    gzip: bool,
    limit: usize,
    mut reserve: impl FnMut(usize) -> bool,
) -> Result<std::borrow::Cow<'_, [u8]>, RequestError> {
    if !gzip {
        if raw.len() > limit {
            return Err(RequestError::BodyTooLarge { limit });
        }
        return Ok(std::borrow::Cow::Borrowed(raw));
    }
    let bad_gzip = |e: std::io::Error| RequestError::BadGzip(gzip_error_text(&e));
    let mut decoder = flate2::read::MultiGzDecoder::new(raw);
    let mut out: Vec<u8> = Vec::new();
    let mut len = 0;
    loop {
        if len == out.len() {
            if len == limit {
                // Full: one byte more means over the limit.
                let mut probe = [0u8; 1];
                if decoder.read(&mut probe).map_err(bad_gzip)? > 0 {
                    return Err(RequestError::BodyTooLarge { limit });
                }
                break;
            }
            let grow = if len == 0 {
                raw.len().saturating_mul(4)
            } else {
                len / 2
            }
            .max(INFLATE_STEP)
            .min(limit - len);
            if !reserve(grow) {
                return Err(RequestError::InflightBytes);
            }
            out.reserve_exact(grow);
            out.resize(len + grow, 0);
        }
        let read = decoder.read(&mut out[len..]).map_err(bad_gzip)?;
        if read == 0 {
            break;
        }
        len += read;
    }
    out.truncate(len);
    Ok(std::borrow::Cow::Owned(out))
}

/// Go's gzip reader says `unexpected EOF` for truncated or foreign input;
/// keep that wording for the common cases.
fn gzip_error_text(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidInput => {
            "unexpected EOF".to_owned()
        }
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn v1_reads_like_influxdb_1x() {
        assert_eq!(v1_target(&q(&[])), Err(RequestError::MissingDatabase));
        assert_eq!(
            v1_target(&q(&[("db", "")])),
            Err(RequestError::MissingDatabase)
        );
        let t = v1_target(&q(&[
            ("db", "telegraf"),
            ("rp", "week"),
            ("precision", "ms"),
        ]))
        .unwrap();
        assert_eq!(t.db, "telegraf");
        assert_eq!(t.rp.as_deref(), Some("week"));
        assert_eq!(t.precision, Precision::Milliseconds);
        assert_eq!(t.consistency, Consistency::Any, "spooled copies count");
        // 1.x takes an unknown precision as nanoseconds.
        let t = v1_target(&q(&[("db", "d"), ("precision", "rfc3339")])).unwrap();
        assert_eq!(t.precision, Precision::Nanoseconds);
        for (level, expected) in [
            ("any", Consistency::Any),
            ("one", Consistency::One),
            ("quorum", Consistency::Quorum),
            ("all", Consistency::All),
        ] {
            let t = v1_target(&q(&[("db", "d"), ("consistency", level)])).unwrap();
            assert_eq!(t.consistency, expected);
        }
        let err = v1_target(&q(&[("db", "d"), ("consistency", "bad")])).unwrap_err();
        assert_eq!(err.to_string(), "invalid consistency level");
        assert_eq!(err.status(), 400);
    }

    #[test]
    fn v2_maps_bucket_to_database_and_policy() {
        assert_eq!(
            v2_target(&q(&[("org", "o")])),
            Err(RequestError::MissingBucket)
        );
        let t = v2_target(&q(&[("bucket", "telegraf/week"), ("precision", "s")])).unwrap();
        assert_eq!((t.db.as_str(), t.rp.as_deref()), ("telegraf", Some("week")));
        assert_eq!(t.precision, Precision::Seconds);
        let t = v2_target(&q(&[("bucket", "telegraf")])).unwrap();
        assert_eq!((t.db.as_str(), t.rp), ("telegraf", None));
        assert_eq!(
            v2_target(&q(&[("bucket", "b"), ("precision", "h")])),
            Err(RequestError::InvalidPrecision("h".into()))
        );
    }

    #[test]
    fn credentials_from_every_place_influxdb_reads_them() {
        let ann = |source| {
            Some(Credentials {
                user: "ann".into(),
                password: "pw".into(),
                source,
            })
        };
        let from_query = credentials(&q(&[("u", "ann"), ("p", "pw")]), None).unwrap();
        assert_eq!(from_query, ann(Source::Params));
        // "ann:pw" in base64. Parameters win over the header (as on 1.x),
        // but only both of them.
        let both = credentials(&q(&[("u", "ann"), ("p", "pw")]), Some("Basic Ym9iOng=")).unwrap();
        assert_eq!(both, ann(Source::Params));
        let basic = credentials(&q(&[("u", "ignored")]), Some("Basic YW5uOnB3")).unwrap();
        assert_eq!(basic, ann(Source::Basic));
        let token = credentials(&[], Some("Token ann:pw")).unwrap();
        assert_eq!(token, ann(Source::Token));
        assert_eq!(credentials(&[], None).unwrap(), None);
        for bad in [
            "Basic !!!",
            "Basic YW5u",
            "Bearer x",
            "Token nocolon",
            "Basic",
        ] {
            assert_eq!(
                credentials(&[], Some(bad)),
                Err(RequestError::BadCredentials),
                "{bad}"
            );
        }
        assert_eq!(RequestError::BadCredentials.status(), 401);
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn bodies_are_inflated_within_the_limit() {
        let body = b"cpu v=1\ncpu v=2\n";
        assert_eq!(decode_body(body, false, 100).unwrap().as_ref(), body);
        assert_eq!(decode_body(&gzip(body), true, 100).unwrap().as_ref(), body);
        assert_eq!(
            decode_body(body, false, 10),
            Err(RequestError::BodyTooLarge { limit: 10 })
        );
        assert_eq!(
            decode_body(&gzip(body), true, 10),
            Err(RequestError::BodyTooLarge { limit: 10 })
        );
        let err = decode_body(body, true, 100).unwrap_err();
        assert_eq!(err.status(), 400);
    }

    #[test]
    fn inflating_stops_when_the_budget_refuses_more() {
        let body: Vec<u8> = (0..100_000)
            .flat_map(|i| format!("cpu,host=h{i} v={i}\n").into_bytes())
            .collect();
        let packed = gzip(&body);
        // Every byte of memory the inflated body holds is asked for first,
        // and not much more than it needs.
        let mut asked = 0;
        let inflated = decode_body_within(&packed, true, 10 << 20, |n| {
            asked += n;
            true
        })
        .unwrap();
        assert_eq!(inflated.as_ref(), body.as_slice());
        assert!(asked >= body.len(), "{asked} < {}", body.len());
        assert!(
            asked < body.len() * 3 / 2 + (256 << 10),
            "{asked} for {}",
            body.len()
        );
        // A body just under the limit asks for no more than the limit,
        // and one just over is too large, not an overload.
        let limit = body.len();
        let mut asked = 0;
        decode_body_within(&packed, true, limit, |n| {
            asked += n;
            true
        })
        .unwrap();
        assert!(asked <= limit, "{asked} > {limit}");
        assert_eq!(
            decode_body_within(&packed, true, limit - 1, |_| true),
            Err(RequestError::BodyTooLarge { limit: limit - 1 })
        );
        // A budget of 1 MB stops a 2 MB body early: an overload, not a
        // refusal of the body.
        let mut left = 1usize << 20;
        let err = decode_body_within(&packed, true, 10 << 20, |n| {
            left.checked_sub(n).map(|rest| left = rest).is_some()
        })
        .unwrap_err();
        assert_eq!(err, RequestError::InflightBytes);
        assert_eq!(err.status(), 503);
        // Uncompressed bodies are not inflated: nothing to ask.
        let plain = decode_body_within(&body, false, 10 << 20, |_| false).unwrap();
        assert_eq!(plain.len(), body.len());
    }

    #[test]
    fn a_gzip_bomb_is_refused_without_inflating_it() {
        // 64 MiB of zeros compress to about 64 KiB.
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            enc.write_all(&zeros).unwrap();
        }
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 1 << 20);
        let err = decode_body(&bomb, true, 25 << 20).unwrap_err();
        assert_eq!(err, RequestError::BodyTooLarge { limit: 25 << 20 });
        assert_eq!(err.status(), 413);
    }
}
