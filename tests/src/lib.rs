//! # trident-e2e
//!
//! The harness of Trident's end-to-end tests. Tests talk to the real servers
//! that `scripts/stack up` started; this crate tells them where those are and
//! keeps tests apart:
//!
//! ```text
//! .stack/env ──StackEnv::load()──► URLs, brokers, topic names
//! unique_name("db") ──► names no other test (or earlier run) uses
//! InfluxDb / ClickHouseDb ──► created for one test, dropped after it
//! KafkaTopic ──► created for one test (kept: see its docs)
//! ```
//!
//! A missing stack is an error, not a skip: a test suite that silently ran
//! nothing would look green.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

/// What can go wrong while preparing a test.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// `.stack/env` is missing: the stack was not started.
    #[error("cannot read {path}: {source}. Start the servers first: scripts/stack up")]
    NoStack {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A variable the tests need is not in the env file.
    #[error("{path} has no {var}; re-run scripts/stack up")]
    MissingVar { path: PathBuf, var: &'static str },
    /// An HTTP request to a server failed.
    #[error("HTTP request to {url} failed: {source}")]
    Http { url: String, source: reqwest::Error },
    /// A server answered with an error status.
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    /// A Kafka admin or client operation failed.
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A Kafka admin operation was refused for one topic.
    #[error("Kafka refused to {op} topic {topic}: {code}")]
    KafkaTopic {
        op: &'static str,
        topic: String,
        code: String,
    },
    /// A runtime for a clean-up could not be built.
    #[error("cannot start a runtime for clean-up: {0}")]
    Runtime(#[from] std::io::Error),
    /// A ClickHouse statement failed.
    #[error("ClickHouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
}

/// Result with [`HarnessError`].
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;

/// Where the stack's servers are, as written by `scripts/stack up`.
#[derive(Debug, Clone)]
pub struct StackEnv {
    /// HTTP base URLs of the InfluxDB nodes.
    pub influx_urls: Vec<String>,
    /// ClickHouse HTTP URL.
    pub clickhouse_url: String,
    /// Whether the `clickhouse` crate may validate row types (old servers
    /// lack the setting the check needs).
    pub clickhouse_validation: bool,
    /// Kafka bootstrap brokers, comma-separated.
    pub kafka_brokers: String,
    /// The raw topic `scripts/stack` created.
    pub raw_topic: String,
    /// The alert topic `scripts/stack` created.
    pub alert_topic: String,
    /// Every variable of the file.
    pub vars: BTreeMap<String, String>,
}

impl StackEnv {
    /// The env file: `$TRIDENT_STACK_DIR/env`, else `<workspace>/.stack/env`.
    pub fn path() -> PathBuf {
        match std::env::var_os("TRIDENT_STACK_DIR") {
            Some(dir) => PathBuf::from(dir).join("env"),
            None => repo_root().join(".stack/env"),
        }
    }

    /// Reads the env file.
    pub fn load() -> Result<Self> {
        let path = Self::path();
        let text = std::fs::read_to_string(&path).map_err(|source| HarnessError::NoStack {
            path: path.clone(),
            source,
        })?;
        let vars = parse_env_file(&text);
        let get = |var: &'static str| {
            vars.get(var)
                .cloned()
                .ok_or_else(|| HarnessError::MissingVar {
                    path: path.clone(),
                    var,
                })
        };
        Ok(Self {
            influx_urls: get("TRIDENT_INFLUX_URLS")?
                .split(',')
                .map(str::to_owned)
                .collect(),
            clickhouse_url: get("TRIDENT_CLICKHOUSE_URL")?,
            clickhouse_validation: get("TRIDENT_CLICKHOUSE_VALIDATION")? != "false",
            kafka_brokers: get("TRIDENT_KAFKA_BROKERS")?,
            raw_topic: get("TRIDENT_KAFKA_RAW_TOPIC")?,
            alert_topic: get("TRIDENT_KAFKA_ALERT_TOPIC")?,
            vars,
        })
    }

    /// A Kafka client configuration pointing at the stack's broker.
    pub fn kafka_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.kafka_brokers);
        config
    }

    /// A consumer assigned to partitions `0..partitions` of `topic` from the
    /// beginning, outside any consumer group's rebalancing (as the
    /// downsampler and alerter consume).
    pub fn assigned_consumer(&self, topic: &str, partitions: i32) -> Result<BaseConsumer> {
        let consumer: BaseConsumer = self
            .kafka_config()
            .set("group.id", unique_name("group"))
            .set("enable.auto.commit", "false")
            .create()?;
        let mut assignment = TopicPartitionList::new();
        for p in 0..partitions {
            assignment.add_partition_offset(topic, p, Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;
        Ok(consumer)
    }

    /// A ClickHouse client for `database`, with validation as the stack says.
    pub fn clickhouse(&self, database: &str) -> clickhouse::Client {
        clickhouse::Client::default()
            .with_url(&self.clickhouse_url)
            .with_database(database)
            .with_validation(self.clickhouse_validation)
    }
}

/// The repository root. Read at run time (cargo sets `CARGO_MANIFEST_DIR`
/// for the tests it runs): a target directory shared by several checkouts
/// may hold a test binary compiled in another one, whose compile-time path
/// would point there.
pub fn repo_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir.join("..")
}

/// Parses `export K=V` / `K=V` lines; `#` starts a comment line; values may
/// be single- or double-quoted.
pub fn parse_env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let l = l.strip_prefix("export ").unwrap_or(l);
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.trim().to_owned(), v.to_owned()))
        })
        .collect()
}

/// A name no other test in this run, nor an earlier run, uses: `prefix`,
/// the process id, a per-process counter and random bits. Only `[a-z0-9_]`,
/// so it is valid as an InfluxDB database, a Kafka topic and a ClickHouse
/// identifier alike.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let r: u32 = rand::random();
    format!("t_{prefix}_{}_{n}_{r:08x}", std::process::id())
}

/// Runs an async clean-up from `Drop`, on a thread of its own so it works
/// inside and outside a runtime. Failures are printed, not raised: a test's
/// verdict must not depend on its clean-up.
fn cleanup_blocking<F>(fut: F)
where
    F: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let joined = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        match rt {
            Ok(rt) => rt.block_on(fut),
            Err(e) => Err(HarnessError::Runtime(e)),
        }
    })
    .join();
    if let Ok(Err(e)) = joined {
        eprintln!("clean-up failed (harmless, names are unique): {e}");
    }
}

/// An HTTP client for the tests.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default()
}

/// POSTs `body` and returns the response text, or an error for a non-2xx.
pub async fn post_text(url: &str, query: &[(&str, &str)], body: String) -> Result<String> {
    send(http().post(url).query(query).body(body), url).await
}

/// POSTs `body` as `application/json`; the response text, or an error.
pub async fn post_json(url: &str, body: &serde_json::Value) -> Result<String> {
    send(
        http()
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_string()),
        url,
    )
    .await
}

/// A response as the test sees it: status, body and headers, whatever the
/// status.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body text.
    pub body: String,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
}

/// POSTs `body` and returns the answer, 2xx or not.
pub async fn post_any(url: &str, body: impl Into<reqwest::Body>) -> Result<Answer> {
    answer(http().post(url).body(body), url).await
}

async fn answer(request: reqwest::RequestBuilder, url: &str) -> Result<Answer> {
    let http_error = |source| HarnessError::Http {
        url: url.to_owned(),
        source,
    };
    let resp = request.send().await.map_err(http_error)?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().await.map_err(http_error)?;
    Ok(Answer {
        status,
        body,
        headers,
    })
}

/// The body of a 2xx answer; any other status is an error.
async fn send(request: reqwest::RequestBuilder, url: &str) -> Result<String> {
    let a = answer(request, url).await?;
    if !(200..300).contains(&a.status) {
        return Err(HarnessError::Status {
            url: url.to_owned(),
            status: a.status,
            body: a.body,
        });
    }
    Ok(a.body)
}

/// A database created on every InfluxDB node for one test, dropped after it.
#[derive(Debug)]
pub struct InfluxDb {
    /// The database name.
    pub name: String,
    /// The nodes it exists on.
    pub urls: Vec<String>,
}

impl InfluxDb {
    /// Creates a uniquely named database on every node of the stack.
    pub async fn create(env: &StackEnv) -> Result<Self> {
        let name = unique_name("db");
        for url in &env.influx_urls {
            influx_query(url, &format!("CREATE DATABASE \"{name}\""), None).await?;
        }
        Ok(Self {
            name,
            urls: env.influx_urls.clone(),
        })
    }
}

impl Drop for InfluxDb {
    fn drop(&mut self) {
        let (name, urls) = (self.name.clone(), self.urls.clone());
        cleanup_blocking(async move {
            for url in &urls {
                influx_query(url, &format!("DROP DATABASE \"{name}\""), None).await?;
            }
            Ok(())
        });
    }
}

/// Runs an InfluxQL statement on one node (POST /query) and returns the JSON.
pub async fn influx_query(url: &str, q: &str, db: Option<&str>) -> Result<serde_json::Value> {
    let endpoint = format!("{url}/query");
    let mut query = vec![("q", q)];
    if let Some(db) = db {
        query.push(("db", db));
    }
    let text = post_text(&endpoint, &query, String::new()).await?;
    serde_json::from_str(&text).map_err(|e| HarnessError::Status {
        url: endpoint,
        status: 200,
        body: format!("not JSON ({e}): {text}"),
    })
}

/// A Kafka topic created for one test.
///
/// It is **not deleted** afterwards: tansu 0.6 (the local broker) deletes
/// every topic of the cluster when asked to delete one, which would take
/// the stack's own topics with it. Names are unique, so leftovers are
/// harmless; `scripts/stack down` plus removing `.stack/` starts afresh.
#[derive(Debug)]
pub struct KafkaTopic {
    /// The topic name.
    pub name: String,
}

impl KafkaTopic {
    /// Creates a uniquely named topic with `partitions` partitions.
    pub async fn create(env: &StackEnv, partitions: i32) -> Result<Self> {
        let name = unique_name("topic");
        let admin: AdminClient<DefaultClientContext> = env.kafka_config().create()?;
        let results = admin
            .create_topics(
                &[NewTopic::new(&name, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await?;
        for result in results {
            if let Err((topic, code)) = result {
                return Err(HarnessError::KafkaTopic {
                    op: "create",
                    topic,
                    code: code.to_string(),
                });
            }
        }
        Ok(Self { name })
    }
}

/// A ClickHouse database created for one test, dropped after it.
#[derive(Debug)]
pub struct ClickHouseDb {
    /// The database name.
    pub name: String,
    /// A client bound to it.
    pub client: clickhouse::Client,
    env: StackEnv,
}

impl ClickHouseDb {
    /// Creates a uniquely named database.
    pub async fn create(env: &StackEnv) -> Result<Self> {
        let name = unique_name("ch");
        let root = env.clickhouse("default");
        root.query(&format!("CREATE DATABASE {name}"))
            .execute()
            .await?;
        Ok(Self {
            client: env.clickhouse(&name),
            name,
            env: env.clone(),
        })
    }
}

impl Drop for ClickHouseDb {
    fn drop(&mut self) {
        // A new client: the test's one pools connections whose tasks live on
        // the test's runtime, which is blocked while this runs.
        let (name, root) = (self.name.clone(), self.env.clickhouse("default"));
        cleanup_blocking(async move {
            root.query(&format!("DROP DATABASE IF EXISTS {name}"))
                .execute()
                .await?;
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_lines_are_parsed_like_a_shell_would() {
        let vars =
            parse_env_file("# written by scripts/stack\nexport A=1\nexport B=\"x,y\"\nC='z'\n\n");
        assert_eq!(vars["A"], "1");
        assert_eq!(vars["B"], "x,y");
        assert_eq!(vars["C"], "z");
    }

    #[test]
    fn unique_names_differ_and_are_identifiers() {
        let a = unique_name("db");
        let b = unique_name("db");
        assert_ne!(a, b);
        assert!(
            a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{a}"
        );
    }
}
