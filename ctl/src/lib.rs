//! # trident-ctl
//!
//! Operations on Trident's InfluxDB cluster, a measurement at a time:
//!
//! ```text
//! every node, database, retention policy, measurement
//!   ─SELECT count(*) … GROUP BY *─► census: each series' per-field counts
//!   ─ring (old and new topology)─► each series' owners
//!   rebalance  a series' first old owner copies it to each new owner whose
//!              census differs (one chunked SELECT * … GROUP BY * per
//!              measurement ─► line protocol ─► /write), verifies by a new
//!              census, then drops it where it no longer belongs
//!   recover    every series a wiped node owns, from its first other owner;
//!              or, with --from-kafka, every line of the raw topic's
//!              retention whose owners include the node
//!   check      per-field counts on every owner compared; --repair copies
//!              each owner's points to the owners that differ
//! ```
//!
//! Every step is idempotent (InfluxDB keeps one point per series and time,
//! so a copy written twice is the same data), and nothing is dropped before
//! its copies verified: an operation that stops, whatever the reason, is
//! resumed by running it again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use serde_json::Value;
use trident_cluster::Placement;
use trident_influx_client::{Payload, quote_ident, send, statement};
use trident_line_protocol::{LineWriter, Point, Value as FieldValue, parse_lines};

/// Rows per chunk of a chunked scan, and bytes per write while copying.
const CHUNK_ROWS: usize = 10_000;
const WRITE_BYTES: usize = 1 << 20;
/// Series per `DROP SERIES` statement.
const DROP_BATCH: usize = 100;

/// Why an operation stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The topology is not usable.
    #[error("invalid topology: {0}")]
    Topology(#[from] trident_cluster::Error),
    /// A node refused or could not be reached.
    #[error(transparent)]
    Node(#[from] trident_influx_client::Error),
    /// A node answered a statement with an error.
    #[error("node {node} refused `{statement}`: {error}")]
    Statement {
        /// The node.
        node: String,
        /// The statement.
        statement: String,
        /// Its error.
        error: String,
    },
    /// A node id that is not in the topology.
    #[error("node `{0}` is not in the topology: see `trident-ctl show`")]
    UnknownNode(String),
    /// A copy that does not match its source; nothing was dropped.
    #[error(
        "series {series} in {db}: {node} holds {got} where its source holds {want} after copying; nothing was dropped, run the operation again"
    )]
    Verify {
        /// The database.
        db: String,
        /// The series key.
        series: String,
        /// The node copied to.
        node: String,
        /// Its per-field counts.
        got: String,
        /// The source's.
        want: String,
    },
    /// The HTTP client cannot be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// The raw topic cannot be read to its end.
    #[error("cannot replay the raw topic: {0}")]
    Topic(String),
}

/// What an operation found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Series looked at (each once, on the node that was its source).
    pub series: u64,
    /// Copies of a series written to a node.
    pub copies: u64,
    /// Points written by those copies.
    pub points: u64,
    /// Line-protocol bytes written.
    pub bytes: u64,
    /// Series dropped from nodes that no longer own them.
    pub dropped: u64,
    /// Owners whose points differ from the source's (`check`).
    pub differences: Vec<String>,
    /// Series found on nodes that do not own them (`check`).
    pub misplaced: Vec<String>,
}

/// One series of a census: its tags (every tag key of the measurement on
/// that node, absent ones empty) and its per-field counts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Census {
    tags: BTreeMap<String, String>,
    counts: String,
}

/// Series key (name, then non-empty tags sorted) → census.
type Censuses = BTreeMap<String, Census>;

/// How a person follows an operation: a line per step on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Print progress.
    Show,
    /// Stay quiet.
    Quiet,
}

/// Runs operations against the nodes of topologies.
#[derive(Debug, Clone)]
pub struct Ctl {
    client: reqwest::Client,
    progress: Progress,
    started: Instant,
}

fn rows(v: &Value) -> impl Iterator<Item = &Vec<Value>> {
    v["series"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["values"].as_array().into_iter().flatten())
        .filter_map(Value::as_array)
}

fn first_strings(v: &Value) -> Vec<String> {
    rows(v)
        .filter_map(|r| r.first().and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// Name and tags of an answer's series.
fn series_tags(s: &Value) -> BTreeMap<String, String> {
    s["tags"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// The series key of `measurement` with `tags` (empty ones left out).
fn key_of(measurement: &str, tags: &BTreeMap<String, String>) -> String {
    let mut key = measurement.to_owned();
    for (k, v) in tags.iter().filter(|(_, v)| !v.is_empty()) {
        key.push(',');
        key.push_str(k);
        key.push('=');
        key.push_str(v);
    }
    key
}

/// `k = 'v'` for every tag key: exactly one series.
fn exact(tags: &BTreeMap<String, String>) -> String {
    tags.iter()
        .map(|(k, v)| {
            format!(
                "{} = '{}'",
                quote_ident(k),
                v.replace('\\', "\\\\").replace('\'', "\\'")
            )
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// `[######..............]  3/10`: how far through `total` steps.
fn bar(done: usize, total: usize) -> String {
    const WIDTH: usize = 20;
    let filled = (done * WIDTH)
        .checked_div(total)
        .unwrap_or(WIDTH)
        .min(WIDTH);
    format!(
        "[{}{}] {done:>w$}/{total}",
        "#".repeat(filled),
        ".".repeat(WIDTH - filled),
        w = total.to_string().len()
    )
}

/// Whether per-field counts `got` (`count_a=3,count_b=1`) are at least
/// `want`'s, field by field.
fn holds_at_least(got: &str, want: &str) -> bool {
    let parse = |s: &str| -> HashMap<String, u64> {
        s.split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.parse().unwrap_or(0)))
            .collect()
    };
    let got = parse(got);
    parse(want)
        .iter()
        .all(|(k, n)| got.get(k).is_some_and(|g| g >= n))
}

/// Owner ids of a series, best first.
fn owners(
    placement: &Placement,
    db: &str,
    measurement: &str,
    tags: &BTreeMap<String, String>,
) -> Vec<String> {
    placement
        .owners(placement.series_hash(db, measurement, tags))
        .map(|n| n.id.clone())
        .collect()
}

/// A field of a copied row, typed as the source declares it.
fn field(name: String, v: &Value, ty: Option<&str>) -> Option<(String, FieldValue)> {
    let value = match (ty, v) {
        (_, Value::Null) => return None,
        (Some("integer"), v) => FieldValue::Integer(v.as_i64()?),
        (Some("unsigned"), v) => FieldValue::UInteger(v.as_u64()?),
        (_, Value::String(s)) => FieldValue::String(s.clone()),
        (_, Value::Bool(b)) => FieldValue::Boolean(*b),
        (_, v) => FieldValue::Float(v.as_f64()?),
    };
    Some((name, value))
}

/// Where `recover --from-kafka` reads the raw topic.
#[derive(Debug, Clone, Copy)]
pub struct TopicSource<'a> {
    /// Bootstrap brokers.
    pub brokers: &'a [String],
    /// The raw topic.
    pub topic: &'a str,
    /// Replay records from this time, ms since the epoch.
    pub since_ms: i64,
    /// Bound on each broker round trip.
    pub timeout: std::time::Duration,
    /// How long without a record means the topic is read to its end.
    pub idle: std::time::Duration,
}

/// A database on a node: its retention policies and measurements.
#[derive(Debug, Clone)]
struct Layout {
    db: String,
    rps: Vec<String>,
    measurements: Vec<String>,
}

impl Layout {
    fn scope<'a>(&'a self, rp: &'a str, measurement: &'a str) -> Scope<'a> {
        Scope {
            db: &self.db,
            rp,
            measurement,
        }
    }
}

/// Where one measurement of one database and retention policy is read.
#[derive(Debug, Clone, Copy)]
struct Scope<'a> {
    db: &'a str,
    rp: &'a str,
    measurement: &'a str,
}

impl Scope<'_> {
    fn from(&self) -> String {
        format!(
            "{}.{}.{}",
            quote_ident(self.db),
            quote_ident(self.rp),
            quote_ident(self.measurement)
        )
    }
}

impl Ctl {
    /// A controller whose requests give up after `timeout`.
    pub fn new(timeout: std::time::Duration, progress: Progress) -> Result<Self, Error> {
        Ok(Self {
            client: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .map_err(|e| Error::Client(e.to_string()))?,
            progress,
            started: Instant::now(),
        })
    }

    fn say(&self, line: &str) {
        if self.progress == Progress::Show {
            eprintln!("[{:>7.1}s] {line}", self.started.elapsed().as_secs_f64());
        }
    }

    /// Runs `q` on `url`, nanosecond times; an `error` in the answer is an
    /// error, except a database that does not exist (a wiped node), which
    /// answers as empty.
    async fn q(&self, url: &str, db: Option<&str>, q: &str) -> Result<Value, Error> {
        let mut params = vec![("q", q), ("epoch", "ns")];
        if let Some(db) = db {
            params.push(("db", db));
        }
        let answer = statement(&self.client, url, &params).await?;
        match answer["error"].as_str() {
            None => Ok(answer),
            Some(e) if e.starts_with("database not found") => Ok(Value::Null),
            Some(error) => Err(Error::Statement {
                node: url.to_owned(),
                statement: q.to_owned(),
                error: error.to_owned(),
            }),
        }
    }

    async fn databases(&self, url: &str) -> Result<Vec<String>, Error> {
        let v = self.q(url, None, "SHOW DATABASES").await?;
        Ok(first_strings(&v)
            .into_iter()
            .filter(|d| d != "_internal")
            .collect())
    }

    /// Retention policies of `db` on `url`: (name, duration, shard duration, default).
    async fn retention_policies(
        &self,
        url: &str,
        db: &str,
    ) -> Result<Vec<(String, String, String, bool)>, Error> {
        let v = self
            .q(
                url,
                None,
                &format!("SHOW RETENTION POLICIES ON {}", quote_ident(db)),
            )
            .await?;
        Ok(rows(&v)
            .map(|r| {
                let s = |i: usize| {
                    r.get(i)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                (
                    s(0),
                    s(1),
                    s(2),
                    r.get(4).and_then(Value::as_bool).unwrap_or(false),
                )
            })
            .collect())
    }

    /// Creates `db` and its retention policies (as on `source`) on `target`.
    async fn prepare(&self, source: &str, target: &str, db: &str) -> Result<(), Error> {
        self.q(
            target,
            None,
            &format!("CREATE DATABASE {}", quote_ident(db)),
        )
        .await?;
        for (rp, duration, shard, default) in self.retention_policies(source, db).await? {
            let mut create = format!(
                "CREATE RETENTION POLICY {} ON {} DURATION {} REPLICATION 1 SHARD DURATION {}",
                quote_ident(&rp),
                quote_ident(db),
                if duration == "0s" { "INF" } else { &duration },
                shard
            );
            if default {
                create.push_str(" DEFAULT");
            }
            match self.q(target, None, &create).await {
                Ok(_) => {}
                Err(Error::Statement { error, .. }) if error.contains("already exists") => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// What `url` holds: each database with its retention policies and
    /// measurements.
    async fn layout(&self, url: &str) -> Result<Vec<Layout>, Error> {
        let mut out = Vec::new();
        for db in self.databases(url).await? {
            let rps = self
                .retention_policies(url, &db)
                .await?
                .into_iter()
                .map(|r| r.0)
                .collect();
            let measurements = first_strings(&self.q(url, Some(&db), "SHOW MEASUREMENTS").await?);
            out.push(Layout {
                db,
                rps,
                measurements,
            });
        }
        Ok(out)
    }

    /// Every series of `scope` on `url` with its per-field counts.
    async fn census(&self, url: &str, scope: Scope<'_>) -> Result<Censuses, Error> {
        let v = self
            .q(
                url,
                Some(scope.db),
                &format!("SELECT count(*) FROM {} GROUP BY *", scope.from()),
            )
            .await?;
        let mut out = Censuses::new();
        for s in v["series"].as_array().into_iter().flatten() {
            let tags = series_tags(s);
            let mut counts: Vec<String> = s["columns"]
                .as_array()
                .into_iter()
                .flatten()
                .zip(s["values"][0].as_array().into_iter().flatten())
                .skip(1)
                .filter(|(_, n)| n.as_u64().is_some_and(|n| n > 0))
                .map(|(c, n)| format!("{}={n}", c.as_str().unwrap_or_default()))
                .collect();
            counts.sort();
            out.insert(
                key_of(scope.measurement, &tags),
                Census {
                    tags,
                    counts: counts.join(","),
                },
            );
        }
        Ok(out)
    }

    /// Field types of `scope`'s measurement on `url`.
    async fn types(&self, url: &str, scope: Scope<'_>) -> Result<HashMap<String, String>, Error> {
        let v = self
            .q(
                url,
                Some(scope.db),
                &format!("SHOW FIELD KEYS FROM {}", quote_ident(scope.measurement)),
            )
            .await?;
        Ok(rows(&v)
            .filter_map(|r| {
                Some((
                    r.first()?.as_str()?.to_owned(),
                    r.get(1)?.as_str()?.to_owned(),
                ))
            })
            .collect())
    }

    /// Copies the series of `want` (series key → target URLs) of `scope`
    /// from `from`, in one chunked scan of the measurement: (points, bytes).
    async fn copy(
        &self,
        from: &str,
        scope: Scope<'_>,
        want: &HashMap<String, Vec<String>>,
    ) -> Result<(u64, u64), Error> {
        let types = self.types(from, scope).await?;
        let statement = format!("SELECT * FROM {} GROUP BY *", scope.from());
        let chunk_size = CHUNK_ROWS.to_string();
        let unavailable = |reason: String| {
            Error::Node(trident_influx_client::Error::Unavailable {
                node: from.to_owned(),
                reason,
            })
        };
        let mut resp = self
            .client
            .post(format!("{from}/query"))
            .form(&[
                ("q", statement.as_str()),
                ("db", scope.db),
                ("epoch", "ns"),
                ("chunked", "true"),
                ("chunk_size", chunk_size.as_str()),
            ])
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(unavailable(format!("{}", resp.status())));
        }
        let mut writers: HashMap<&str, LineWriter> = HashMap::new();
        let (mut points, mut bytes) = (0u64, 0u64);
        let mut buffer: Vec<u8> = Vec::new();
        loop {
            let chunk = resp.chunk().await.map_err(|e| unavailable(e.to_string()))?;
            let done = chunk.is_none();
            if let Some(chunk) = chunk {
                buffer.extend_from_slice(&chunk);
            }
            // Whole lines are whole JSON objects.
            while let Some(end) = buffer
                .iter()
                .position(|&b| b == b'\n')
                .or(done.then_some(buffer.len()).filter(|&n| n > 0))
            {
                let line: Vec<u8> = buffer.drain(..end.min(buffer.len())).collect();
                if buffer.first() == Some(&b'\n') {
                    buffer.remove(0);
                }
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let v: Value = serde_json::from_slice(&line)
                    .map_err(|e| unavailable(format!("a chunk is not JSON: {e}")))?;
                let result = &v["results"][0];
                if let Some(error) = result["error"].as_str().or(v["error"].as_str()) {
                    return Err(Error::Statement {
                        node: from.to_owned(),
                        statement: statement.clone(),
                        error: error.to_owned(),
                    });
                }
                for s in result["series"].as_array().into_iter().flatten() {
                    let tags = series_tags(s);
                    let Some(targets) = want.get(&key_of(scope.measurement, &tags)) else {
                        continue;
                    };
                    let columns: Vec<&str> = s["columns"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| c.as_str().unwrap_or_default())
                        .collect();
                    let tags: Vec<(String, String)> =
                        tags.into_iter().filter(|(_, v)| !v.is_empty()).collect();
                    for row in s["values"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_array)
                    {
                        let fields: Vec<_> = columns
                            .iter()
                            .zip(row)
                            .skip(1)
                            .filter_map(|(c, v)| {
                                field((*c).to_owned(), v, types.get(*c).map(String::as_str))
                            })
                            .collect();
                        if fields.is_empty() {
                            continue;
                        }
                        let point = Point {
                            measurement: scope.measurement.to_owned(),
                            tags: tags.clone(),
                            fields,
                            timestamp: row.first().and_then(Value::as_i64),
                        };
                        for target in targets {
                            let writer = writers.entry(target.as_str()).or_default();
                            if let Err(e) = writer.write_point(&point) {
                                self.say(&format!("skipping a point that cannot be written: {e}"));
                                continue;
                            }
                            points += 1;
                            if writer.len() >= WRITE_BYTES {
                                bytes += writer.len() as u64;
                                let body = std::mem::take(writer).into_inner();
                                send(
                                    &self.client,
                                    target,
                                    scope.db,
                                    Some(scope.rp),
                                    Payload::from(body),
                                    false,
                                )
                                .await?;
                            }
                        }
                    }
                }
            }
            if done {
                break;
            }
        }
        for (target, writer) in writers {
            if !writer.is_empty() {
                bytes += writer.len() as u64;
                send(
                    &self.client,
                    target,
                    scope.db,
                    Some(scope.rp),
                    Payload::from(writer.into_inner()),
                    false,
                )
                .await?;
            }
        }
        Ok((points, bytes))
    }

    /// Copies `want` from `from` and checks each target's new census
    /// against `source`'s.
    async fn copy_verified(
        &self,
        from: &str,
        scope: Scope<'_>,
        source: &Censuses,
        want: HashMap<String, Vec<String>>,
        report: &mut Report,
    ) -> Result<(), Error> {
        if want.is_empty() {
            return Ok(());
        }
        let (points, bytes) = self.copy(from, scope, &want).await?;
        report.points += points;
        report.bytes += bytes;
        let mut by_target: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (key, targets) in &want {
            for t in targets {
                by_target.entry(t).or_default().push(key);
            }
        }
        for (target, keys) in by_target {
            let now = self.census(target, scope).await?;
            for key in keys {
                let want = source
                    .get(key)
                    .map(|c| c.counts.as_str())
                    .unwrap_or_default();
                let got = now.get(key).map(|c| c.counts.as_str()).unwrap_or_default();
                // At least the source's points: while a move runs, writes
                // may reach the new owner too.
                if !holds_at_least(got, want) {
                    return Err(Error::Verify {
                        db: scope.db.to_owned(),
                        series: key.to_owned(),
                        node: target.to_owned(),
                        got: got.to_owned(),
                        want: want.to_owned(),
                    });
                }
                report.copies += 1;
            }
        }
        Ok(())
    }

    /// Drops the series `keys` of `measurement` in `db` from `url`, whose
    /// censuses give their full tag sets.
    async fn drop_series(
        &self,
        url: &str,
        db: &str,
        measurement: &str,
        series: &[BTreeMap<String, String>],
        report: &mut Report,
    ) -> Result<(), Error> {
        // Every tag key the measurement has on that node, in any policy.
        let v = self
            .q(
                url,
                Some(db),
                &format!("SHOW TAG KEYS FROM {}", quote_ident(measurement)),
            )
            .await?;
        let all: Vec<String> = first_strings(&v);
        for batch in series.chunks(DROP_BATCH) {
            let condition = batch
                .iter()
                .map(|tags| {
                    let mut full = tags.clone();
                    for k in &all {
                        full.entry(k.clone()).or_default();
                    }
                    format!("({})", exact(&full))
                })
                .collect::<Vec<_>>()
                .join(" OR ");
            let filter = if condition == "()" {
                String::new()
            } else {
                format!(" WHERE {condition}")
            };
            self.q(
                url,
                Some(db),
                &format!("DROP SERIES FROM {}{filter}", quote_ident(measurement)),
            )
            .await?;
            report.dropped += batch.len() as u64;
        }
        Ok(())
    }

    /// Moves data from the placement of `old` to that of `new`: every
    /// series reaches each of its new owners, verified, and then (when
    /// `drop_moved`) leaves the nodes that no longer own it.
    pub async fn rebalance(
        &mut self,
        old: &Placement,
        new: &Placement,
        drop_moved: bool,
    ) -> Result<Report, Error> {
        let mut report = Report::default();
        let url_of: HashMap<String, String> = old
            .topology()
            .nodes
            .iter()
            .chain(&new.topology().nodes)
            .map(|n| (n.id.clone(), n.url.clone()))
            .collect();
        for source in &old.topology().nodes {
            for layout in self.layout(&source.url).await? {
                let (db, rps) = (&layout.db, &layout.rps);
                let mut prepared: HashSet<String> = HashSet::new();
                let total = layout.measurements.len();
                for (done, m) in layout.measurements.iter().enumerate() {
                    // Node id → tag sets to drop there, after every policy is copied.
                    let mut leaving: BTreeMap<String, Vec<BTreeMap<String, String>>> =
                        BTreeMap::new();
                    for rp in rps {
                        let scope = layout.scope(rp, m);
                        let here = self.census(&source.url, scope).await?;
                        let mut targets: BTreeMap<String, Censuses> = BTreeMap::new();
                        let mut want: HashMap<String, Vec<String>> = HashMap::new();
                        for (key, c) in &here {
                            let old_owners = owners(old, db, m, &c.tags);
                            let new_owners = owners(new, db, m, &c.tags);
                            // The first old owner moves a series; a stray copy moves itself.
                            if old_owners.first() != Some(&source.id)
                                && old_owners.contains(&source.id)
                            {
                                continue;
                            }
                            report.series += 1;
                            for t in new_owners.iter().filter(|t| **t != source.id) {
                                let url = &url_of[t];
                                if prepared.insert(url.clone()) {
                                    self.prepare(&source.url, url, db).await?;
                                }
                                if !targets.contains_key(url) {
                                    let census = self.census(url, scope).await?;
                                    targets.insert(url.clone(), census);
                                }
                                if targets[url].get(key).map(|c| &c.counts) != Some(&c.counts) {
                                    want.entry(key.clone()).or_default().push(url.clone());
                                }
                            }
                            let mut gone: Vec<&String> = old_owners
                                .iter()
                                .filter(|o| !new_owners.contains(o))
                                .collect();
                            if !old_owners.contains(&source.id) && !new_owners.contains(&source.id)
                            {
                                gone.push(&source.id);
                            }
                            for g in gone {
                                leaving.entry(g.clone()).or_default().push(c.tags.clone());
                            }
                        }
                        let copies = want.len();
                        self.copy_verified(&source.url, scope, &here, want, &mut report)
                            .await?;
                        self.say(&format!(
                            "{} {}: {db}.{rp}.{m}: {} series, {copies} copied; so far {} points, {:.1} MB",
                            bar(done + 1, total),
                            source.id,
                            here.len(),
                            report.points,
                            report.bytes as f64 / 1e6
                        ));
                    }
                    if drop_moved {
                        for (node, series) in &mut leaving {
                            series.sort();
                            series.dedup();
                            self.drop_series(&url_of[node], db, m, series, &mut report)
                                .await?;
                        }
                    }
                }
            }
        }
        Ok(report)
    }

    /// Refills node `id` (wiped or replaced) from the other owners of its
    /// series.
    pub async fn recover(&mut self, placement: &Placement, id: &str) -> Result<Report, Error> {
        let target = placement
            .topology()
            .nodes
            .iter()
            .find(|n| n.id == id)
            .ok_or_else(|| Error::UnknownNode(id.to_owned()))?
            .url
            .clone();
        let mut report = Report::default();
        for source in placement.topology().nodes.iter().filter(|n| n.id != id) {
            for layout in self.layout(&source.url).await? {
                let (db, rps) = (&layout.db, &layout.rps);
                self.prepare(&source.url, &target, db).await?;
                let total = layout.measurements.len();
                for (done, m) in layout.measurements.iter().enumerate() {
                    for rp in rps {
                        let scope = layout.scope(rp, m);
                        let here = self.census(&source.url, scope).await?;
                        let there = self.census(&target, scope).await?;
                        let mut want = HashMap::new();
                        for (key, c) in &here {
                            let owners = owners(placement, db, m, &c.tags);
                            // The first owner other than the node is the source.
                            if !owners.iter().any(|o| o == id)
                                || owners.iter().find(|o| *o != id) != Some(&source.id)
                            {
                                continue;
                            }
                            report.series += 1;
                            if there.get(key).map(|t| &t.counts) != Some(&c.counts) {
                                want.insert(key.clone(), vec![target.clone()]);
                            }
                        }
                        let copies = want.len();
                        self.copy_verified(&source.url, scope, &here, want, &mut report)
                            .await?;
                        if copies > 0 || done + 1 == total {
                            self.say(&format!(
                                "{} {} → {id}: {db}.{rp}.{m}: {copies} series copied; so far {} points, {:.1} MB",
                                bar(done + 1, total),
                                source.id,
                                report.points,
                                report.bytes as f64 / 1e6
                            ));
                        }
                    }
                }
            }
        }
        Ok(report)
    }

    /// Refills node `id` by replaying the raw topic from `since_ms`
    /// (record time, ms) to the end it had when this started: every line
    /// whose owners include the node is written to it, in the database and
    /// retention policy its record names. For data no replica holds any
    /// more, within the topic's retention.
    pub async fn recover_from_topic(
        &mut self,
        placement: &Placement,
        id: &str,
        topic: TopicSource<'_>,
    ) -> Result<Report, Error> {
        use rdkafka::Message;
        use rdkafka::consumer::Consumer;
        use rdkafka::message::Headers;

        let index = placement
            .topology()
            .nodes
            .iter()
            .position(|n| n.id == id)
            .ok_or_else(|| Error::UnknownNode(id.to_owned()))?;
        let target = placement.topology().nodes[index].url.clone();
        let pinned = trident_service::pinned::pin(trident_service::pinned::PinOptions {
            brokers: topic.brokers,
            topic: topic.topic,
            instance: 0,
            instances: 1,
            partitions: &[],
            replay_from_ms: topic.since_ms,
            resume: &HashMap::new(),
            timeout: topic.timeout,
        })
        .await
        .map_err(|e| Error::Topic(e.to_string()))?;
        // Partition → the offset it ended at when assigned (exclusive), for
        // every partition that starts before its end.
        let mut open = pinned.history();
        let databases = trident_influx_client::Databases::default();
        // (db, rp) → lines for the node.
        let mut bodies: BTreeMap<(String, String), Vec<u8>> = BTreeMap::new();
        let mut report = Report::default();
        let mut records = 0u64;
        let mut scratch = Vec::new();
        while !open.is_empty() {
            let next = tokio::time::timeout(topic.idle, pinned.consumer.recv()).await;
            let message = match next {
                Ok(Ok(m)) => m,
                Ok(Err(e)) => return Err(Error::Topic(e.to_string())),
                Err(_) => {
                    // Every open partition has records left to read.
                    let positions = pinned
                        .consumer
                        .position()
                        .map_err(|e| Error::Topic(e.to_string()))?;
                    let behind: Vec<String> = positions
                        .elements()
                        .iter()
                        .filter_map(|e| {
                            let end = open.get(&e.partition())?;
                            let at = e.offset().to_raw().filter(|&o| o >= 0).map_or_else(
                                || "its start (nothing fetched)".to_owned(),
                                |o| o.to_string(),
                            );
                            Some(format!("partition {} at {at} of {end}", e.partition()))
                        })
                        .collect();
                    return Err(Error::Topic(format!(
                        "no record for {:?} while {} remain",
                        topic.idle,
                        behind.join(", ")
                    )));
                }
            };
            if message.offset() + 1 >= open.get(&message.partition()).copied().unwrap_or(0) {
                open.remove(&message.partition());
            }
            if message
                .timestamp()
                .to_millis()
                .is_some_and(|t| t < topic.since_ms)
            {
                continue;
            }
            records += 1;
            let header = |name: &str| {
                message.headers().and_then(|h| {
                    h.iter()
                        .find(|x| x.key == name)
                        .and_then(|x| x.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                })
            };
            let (Some(db), rp) = (header("db"), header("rp").unwrap_or_default()) else {
                self.say(&format!(
                    "skipping a record without a db header at {}/{}",
                    message.partition(),
                    message.offset()
                ));
                continue;
            };
            for line in parse_lines(message.payload().unwrap_or_default()).flatten() {
                let strategy = placement.strategy_for(&db, &line.measurement().as_str());
                let hash = line.shard_hash(strategy, &mut scratch);
                let owners = placement.write_owners(hash);
                if !owners.contains(index) {
                    continue;
                }
                let body = bodies.entry((db.clone(), rp.clone())).or_default();
                body.extend_from_slice(line.text().as_bytes());
                body.push(b'\n');
                report.points += 1;
                if body.len() >= WRITE_BYTES {
                    let body = std::mem::take(body);
                    self.write_lines(&databases, &target, &db, &rp, body, &mut report)
                        .await?;
                }
            }
        }
        for ((db, rp), body) in bodies {
            if !body.is_empty() {
                self.write_lines(&databases, &target, &db, &rp, body, &mut report)
                    .await?;
            }
        }
        self.say(&format!(
            "{records} records replayed; {} lines, {:.1} MB written to {id}",
            report.points,
            report.bytes as f64 / 1e6
        ));
        Ok(report)
    }

    /// Writes line text to `db`/`rp` (empty: the default policy) on the
    /// node at `url`, creating them if needed.
    async fn write_lines(
        &self,
        databases: &trident_influx_client::Databases,
        url: &str,
        db: &str,
        rp: &str,
        body: Vec<u8>,
        report: &mut Report,
    ) -> Result<(), Error> {
        if rp.is_empty() {
            databases.ensure(&self.client, url, db, true).await?;
        } else {
            databases.ensure_rp(&self.client, url, db, rp).await?;
        }
        report.bytes += body.len() as u64;
        report.copies += 1;
        let rp = Some(rp).filter(|r| !r.is_empty());
        send(&self.client, url, db, rp, body.into(), false).await?;
        Ok(())
    }

    /// Compares every series on its owners; with `repair`, copies each
    /// owner's points to the owners whose counts differ.
    pub async fn check(&mut self, placement: &Placement, repair: bool) -> Result<Report, Error> {
        let mut report = Report::default();
        let nodes = placement.topology().nodes.clone();
        let url_of: HashMap<&str, &str> = nodes
            .iter()
            .map(|n| (n.id.as_str(), n.url.as_str()))
            .collect();
        for source in &nodes {
            for layout in self.layout(&source.url).await? {
                let (db, rps) = (&layout.db, &layout.rps);
                for m in &layout.measurements {
                    for rp in rps {
                        let scope = layout.scope(rp, m);
                        let here = self.census(&source.url, scope).await?;
                        let mut others: BTreeMap<String, Censuses> = BTreeMap::new();
                        // Source node → series → targets, for --repair.
                        let mut repairs: BTreeMap<String, HashMap<String, Vec<String>>> =
                            BTreeMap::new();
                        for (key, c) in &here {
                            let owners = owners(placement, db, m, &c.tags);
                            if !owners.contains(&source.id) {
                                report
                                    .misplaced
                                    .push(format!("{db}.{rp}: {key} on {}", source.id));
                                continue;
                            }
                            if owners.first() != Some(&source.id) {
                                continue;
                            }
                            report.series += 1;
                            let mut counts = Vec::new();
                            for o in &owners {
                                let url = url_of[o.as_str()].to_owned();
                                if !others.contains_key(&url) {
                                    let census = self.census(&url, scope).await?;
                                    others.insert(url.clone(), census);
                                }
                                counts.push(
                                    others[&url]
                                        .get(key)
                                        .map(|c| c.counts.clone())
                                        .unwrap_or_default(),
                                );
                            }
                            if counts.iter().all(|c| *c == counts[0]) {
                                continue;
                            }
                            let detail: Vec<String> = owners
                                .iter()
                                .zip(&counts)
                                .map(|(o, c)| format!("{o}: {c}"))
                                .collect();
                            report
                                .differences
                                .push(format!("{db}.{rp}: {key}: {}", detail.join("; ")));
                            for (a, ca) in owners.iter().zip(&counts).filter(|(_, c)| !c.is_empty())
                            {
                                let targets = owners
                                    .iter()
                                    .zip(&counts)
                                    .filter(|(b, cb)| *b != a && *cb != ca)
                                    .map(|(b, _)| url_of[b.as_str()].to_owned())
                                    .collect();
                                repairs
                                    .entry(url_of[a.as_str()].to_owned())
                                    .or_default()
                                    .insert(key.clone(), targets);
                            }
                        }
                        if repair {
                            for (from, want) in repairs {
                                let (points, bytes) = self.copy(&from, scope, &want).await?;
                                report.copies += want.values().map(|t| t.len() as u64).sum::<u64>();
                                report.points += points;
                                report.bytes += bytes;
                            }
                        }
                    }
                }
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_bars() {
        assert_eq!(bar(0, 4), "[....................] 0/4");
        assert_eq!(bar(1, 4), "[#####...............] 1/4");
        assert_eq!(bar(12, 12), "[####################] 12/12");
        assert_eq!(bar(0, 0), "[####################] 0/0");
    }

    #[test]
    fn a_copy_holds_at_least_its_source() {
        assert!(holds_at_least("count_a=3,count_b=1", "count_a=3,count_b=1"));
        assert!(holds_at_least("count_a=4,count_b=1", "count_a=3"));
        assert!(!holds_at_least(
            "count_a=2,count_b=1",
            "count_a=3,count_b=1"
        ));
        assert!(!holds_at_least("", "count_a=1"));
        assert!(holds_at_least("", ""));
    }
}
