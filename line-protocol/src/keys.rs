//! Series keys and shard keys.
//!
//! The **series key** is InfluxDB's identity of a series: the measurement
//! and the tags sorted by key, in canonical escaping (`cpu,host=a,region=b`).
//! Two lines that differ only in tag order or in needless escapes have the
//! same series key.
//!
//! The **shard key** is what the cluster and the Kafka partitioner hash; it
//! depends on the distribution [`Strategy`]. Its hash is XXH3-64, a
//! specified, endian-independent algorithm, so every machine and every
//! version of Trident places a point on the same node and partition.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use crate::error::Error;
use crate::parse::{EscapeSet, Line};
use crate::write::escape_unchecked;

/// How points are distributed over nodes and partitions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// By series: spreads load evenly; a query on a measurement must ask
    /// every node.
    Series,
    /// By measurement: one measurement lives on one node (and its replicas).
    Measurement,
    /// By measurement plus the values of these tags, in this order (tags a
    /// line lacks are left out): e.g. `measurement+tags(app)` keeps one
    /// application's series together.
    MeasurementTags(Vec<String>),
}

impl FromStr for Strategy {
    type Err = Error;

    /// `series`, `measurement`, or `measurement+tags(a,b)`.
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::Unrepresentable {
            what: "strategy",
            token: s.to_owned(),
            why: "expected `series`, `measurement` or `measurement+tags(key,...)`",
        };
        match s.trim() {
            "series" => Ok(Strategy::Series),
            "measurement" => Ok(Strategy::Measurement),
            other => {
                let list = other
                    .strip_prefix("measurement+tags(")
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(bad)?;
                let tags: Vec<String> = list
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect();
                if tags.is_empty() {
                    return Err(bad());
                }
                Ok(Strategy::MeasurementTags(tags))
            }
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Strategy::Series => f.write_str("series"),
            Strategy::Measurement => f.write_str("measurement"),
            Strategy::MeasurementTags(tags) => write!(f, "measurement+tags({})", tags.join(",")),
        }
    }
}

/// The 64-bit hash of a shard key: XXH3-64 with seed 0.
pub fn shard_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// The shard key of points of `measurement` whose tag values `tag` gives,
/// for the strategies that do not need every tag: what a query that names
/// the measurement (and, for `measurement+tags`, pins those tags) is
/// routed by. `None` under [`Strategy::Series`], or when `tag` lacks one of
/// the strategy's keys (a line without it would be placed without it, so
/// such a query may span several owners).
pub fn shard_key_of<'a>(
    strategy: &Strategy,
    measurement: &str,
    tag: impl Fn(&str) -> Option<&'a str>,
) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match strategy {
        Strategy::Series => return None,
        Strategy::Measurement => escape_unchecked(&mut out, measurement, EscapeSet::Measurement),
        Strategy::MeasurementTags(keys) => {
            escape_unchecked(&mut out, measurement, EscapeSet::Measurement);
            for key in keys {
                let value = tag(key)?;
                out.push(b',');
                escape_unchecked(&mut out, key, EscapeSet::Key);
                out.push(b'=');
                escape_unchecked(&mut out, value, EscapeSet::Key);
            }
        }
    }
    Some(out)
}

/// The shard key of the series of `measurement` with `tags` (non-empty
/// values, any order) under `strategy`: what a query's answer, which names
/// a series by its tags, is placed by.
pub fn series_shard_key(strategy: &Strategy, measurement: &str, tags: &[(&str, &str)]) -> Vec<u8> {
    if let Some(key) = shard_key_of(strategy, measurement, |k| {
        tags.iter().find(|(t, _)| *t == k).map(|(_, v)| *v)
    }) {
        return key;
    }
    let mut out = Vec::new();
    match strategy {
        Strategy::Series => {
            escape_unchecked(&mut out, measurement, EscapeSet::Measurement);
            let mut sorted = tags.to_vec();
            sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            for (k, v) in sorted {
                out.push(b',');
                escape_unchecked(&mut out, k, EscapeSet::Key);
                out.push(b'=');
                escape_unchecked(&mut out, v, EscapeSet::Key);
            }
        }
        Strategy::Measurement => {
            escape_unchecked(&mut out, measurement, EscapeSet::Measurement);
        }
        // A series without one of the strategy's tags: placed without it.
        Strategy::MeasurementTags(keys) => {
            escape_unchecked(&mut out, measurement, EscapeSet::Measurement);
            for key in keys {
                if let Some((_, value)) = tags.iter().find(|(t, _)| t == key) {
                    out.push(b',');
                    escape_unchecked(&mut out, key, EscapeSet::Key);
                    out.push(b'=');
                    escape_unchecked(&mut out, value, EscapeSet::Key);
                }
            }
        }
    }
    out
}

impl Line<'_> {
    /// Appends the canonical series key to `out`.
    pub fn series_key_into(&self, out: &mut Vec<u8>) {
        if !self.has_escapes() && self.tags_sorted() {
            // Already canonical as sent: no escapes to normalise, tags in order.
            out.extend_from_slice(self.raw_key().as_bytes());
            return;
        }
        escape_unchecked(out, &self.measurement().as_str(), EscapeSet::Measurement);
        let mut tags: Vec<(Cow<'_, str>, Cow<'_, str>)> =
            self.tags().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        tags.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        for (k, v) in &tags {
            out.push(b',');
            escape_unchecked(out, k, EscapeSet::Key);
            out.push(b'=');
            escape_unchecked(out, v, EscapeSet::Key);
        }
    }

    /// The canonical series key.
    pub fn series_key(&self) -> String {
        let mut out = Vec::with_capacity(self.raw_key().len());
        self.series_key_into(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Appends the shard key under `strategy` to `out`.
    pub fn shard_key_into(&self, strategy: &Strategy, out: &mut Vec<u8>) {
        match strategy {
            Strategy::Series => self.series_key_into(out),
            Strategy::Measurement => {
                escape_unchecked(out, &self.measurement().as_str(), EscapeSet::Measurement);
            }
            Strategy::MeasurementTags(keys) => {
                escape_unchecked(out, &self.measurement().as_str(), EscapeSet::Measurement);
                for key in keys {
                    if let Some(value) = self.tag(key) {
                        out.push(b',');
                        escape_unchecked(out, key, EscapeSet::Key);
                        out.push(b'=');
                        escape_unchecked(out, &value.as_str(), EscapeSet::Key);
                    }
                }
            }
        }
    }

    /// The hash of the shard key under `strategy`; `scratch` is reused.
    pub fn shard_hash(&self, strategy: &Strategy, scratch: &mut Vec<u8>) -> u64 {
        scratch.clear();
        self.shard_key_into(strategy, scratch);
        shard_hash(scratch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_lines;

    fn line(text: &str) -> Line<'_> {
        parse_lines(text.as_bytes()).next().unwrap().unwrap()
    }

    #[test]
    fn an_answer_series_finds_the_shard_key_its_points_have() {
        let l = line("my\\ http,env=p\\,x,app=shop,host=h v=1");
        let tags = [("host", "h"), ("env", "p,x"), ("app", "shop")];
        for strategy in [
            "series",
            "measurement",
            "measurement+tags(app,env)",
            "measurement+tags(zone)",
        ] {
            let strategy: Strategy = strategy.parse().unwrap();
            let mut key = Vec::new();
            l.shard_key_into(&strategy, &mut key);
            assert_eq!(
                series_shard_key(&strategy, "my http", &tags),
                key,
                "{strategy:?}"
            );
        }
    }

    #[test]
    fn a_query_finds_the_shard_key_its_points_have() {
        let strategy: Strategy = "measurement+tags(app,env)".parse().unwrap();
        let l = line("my\\ http,env=p\\,x,app=shop,host=h v=1");
        let mut key = Vec::new();
        l.shard_key_into(&strategy, &mut key);
        let tags = [("app", "shop"), ("env", "p,x")];
        let find = |k: &str| tags.iter().find(|(t, _)| *t == k).map(|(_, v)| *v);
        assert_eq!(shard_key_of(&strategy, "my http", find), Some(key));
        assert_eq!(shard_key_of(&strategy, "my http", |_| None), None);
        assert_eq!(shard_key_of(&Strategy::Series, "cpu", find), None);
        let mut key = Vec::new();
        l.shard_key_into(&Strategy::Measurement, &mut key);
        assert_eq!(
            shard_key_of(&Strategy::Measurement, "my http", find),
            Some(key)
        );
    }

    #[test]
    fn series_key_sorts_tags_and_normalises_escapes() {
        assert_eq!(
            line("cpu,host=a,region=b v=1").series_key(),
            "cpu,host=a,region=b"
        );
        assert_eq!(
            line("cpu,region=b,host=a v=1").series_key(),
            "cpu,host=a,region=b"
        );
        // `\a` is not an escape: it stays; `\,` is canonical.
        assert_eq!(
            line(r"c\ pu,z=1\,2,a=x\ y v=1").series_key(),
            r"c\ pu,a=x\ y,z=1\,2"
        );
        // A needless escape of `=` in a measurement is kept (1.x leaves it).
        assert_eq!(line(r"a\=b v=1").series_key(), r"a\=b");
        assert_eq!(line("cpu v=1").series_key(), "cpu");
    }

    #[test]
    fn same_series_same_key_whatever_the_order() {
        let a = line("m,a=1,b=2,c=3 v=1 1");
        let b = line("m,c=3,a=1,b=2 x=2i 2");
        assert_eq!(a.series_key(), b.series_key());
    }

    #[test]
    fn shard_keys_per_strategy() {
        let l = line("http,app=shop,host=h1,endpoint=/buy latency=3");
        let key = |s: &str| {
            let mut out = Vec::new();
            l.shard_key_into(&s.parse().unwrap(), &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(key("series"), "http,app=shop,endpoint=/buy,host=h1");
        assert_eq!(key("measurement"), "http");
        assert_eq!(key("measurement+tags(app)"), "http,app=shop");
        assert_eq!(key("measurement+tags(host, app)"), "http,host=h1,app=shop");
        assert_eq!(key("measurement+tags(missing)"), "http");
    }

    #[test]
    fn strategies_parse_and_print() {
        for s in ["series", "measurement", "measurement+tags(a,b)"] {
            assert_eq!(s.parse::<Strategy>().unwrap().to_string(), s);
        }
        for bad in ["", "tags", "measurement+tags()", "measurement+tags(a"] {
            let err = bad.parse::<Strategy>().unwrap_err().to_string();
            assert!(err.contains("measurement+tags"), "{err}");
        }
    }

    /// The hash is part of the data contract (it decides nodes and
    /// partitions); these values must never change.
    #[test]
    fn shard_hash_is_stable() {
        assert_eq!(shard_hash(b""), 0x2d06_8005_38d3_94c2);
        assert_eq!(
            shard_hash(b"cpu,host=a,region=b"),
            shard_hash(b"cpu,host=a,region=b")
        );
        let l = line("cpu,region=b,host=a v=1");
        let mut scratch = Vec::new();
        assert_eq!(
            l.shard_hash(&Strategy::Series, &mut scratch),
            shard_hash(b"cpu,host=a,region=b")
        );
    }
}
