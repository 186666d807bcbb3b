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
//! PrivateStack::up() ──► a stack of its own on a free port block, whose
//!                        servers a fault test may kill and start again
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
    /// `scripts/stack` failed.
    #[error("scripts/stack {args} failed: {stderr}")]
    Script { args: String, stderr: String },
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
        Self::load_from(Self::path())
    }

    /// Reads the env file at `path`.
    pub fn load_from(path: PathBuf) -> Result<Self> {
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

    /// Trident's configuration for this stack: its environment, a spool
    /// directory no other gateway uses, then `extra` (which wins).
    pub fn config(&self, extra: &[(&str, &str)]) -> trident_service::config::Config {
        let spool = std::env::temp_dir().join(unique_name("spool"));
        let vars = self
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .chain([(
                "TRIDENT_GATEWAY_SPOOL_DIR".to_owned(),
                spool.to_string_lossy().into_owned(),
            )])
            .chain(
                extra
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
            );
        trident_service::config::Config::load_with_env(None, vars)
            .unwrap_or_else(|e| panic!("the stack's configuration does not load: {e}"))
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

/// GETs `url` and returns the body, whatever the status; empty when the
/// server does not answer.
pub async fn get_text(url: &str) -> String {
    match http().get(url).send().await {
        Ok(resp) => resp.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// POSTs `body` and returns the response text, or an error for a non-2xx.
pub async fn post_text(url: &str, query: &[(&str, &str)], body: String) -> Result<String> {
    send(http().post(url).query(query).body(body), url).await
}

/// The rows ClickHouse answers to `sql` (`FORMAT JSONCompact`).
pub async fn clickhouse_rows(env: &StackEnv, sql: &str) -> Vec<serde_json::Value> {
    let text = post_text(
        &env.clickhouse_url,
        &[],
        format!("{sql} FORMAT JSONCompact"),
    )
    .await
    .expect("ClickHouse query");
    let json: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    json["data"].as_array().cloned().unwrap_or_default()
}

/// A JSON number, or a number in a string (ClickHouse quotes 64-bit
/// integers); NaN otherwise.
pub fn json_number(v: &serde_json::Value) -> f64 {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(f64::NAN)
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
    influx_query_with(url, q, db, &[]).await
}

/// [`influx_query`] with more parameters, e.g. `("epoch", "ns")`.
pub async fn influx_query_with(
    url: &str,
    q: &str,
    db: Option<&str>,
    params: &[(&str, &str)],
) -> Result<serde_json::Value> {
    let endpoint = format!("{url}/query");
    let mut query = vec![("q", q)];
    query.extend_from_slice(params);
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

/// A service binary of this workspace: `cargo test --workspace` (and
/// `scripts/test`'s build step) put it next to the test executables'
/// `deps/` directory.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .unwrap_or_default();
    dir.join(name)
}

/// Offsets from the port base that `scripts/stack up --with etcd,alertmanager`
/// listens on, a spare fourth InfluxDB node (`scripts/stack start influx4`)
/// and the four services `scripts/run` starts.
pub const STACK_PORTS: [u16; 19] = [
    1, 2, 3, 4, 11, 12, 13, 14, 21, 22, 23, 31, 41, 42, 51, 80, 81, 82, 83,
];

/// A port base whose whole block is free right now. Callers in one process
/// start their search at different blocks, so two of them at once do not
/// pick the same one.
pub fn free_port_block() -> Option<u16> {
    // Below Linux's ephemeral range (32768–60999): a port there can be
    // free when checked and taken by some process's outgoing connection
    // before the server binds it (seen: a spare node's port, seconds later).
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let first = 20_000 + 100 * ((std::process::id() + NEXT.fetch_add(7, Ordering::Relaxed)) % 120);
    let first = u16::try_from(first).unwrap_or(20_000);
    (first..32_000)
        .step_by(100)
        .chain((20_000..first).step_by(100))
        .find(|base| {
            STACK_PORTS
                .iter()
                .all(|off| std::net::TcpListener::bind(("127.0.0.1", base + off)).is_ok())
        })
}

/// A whole stack of its own (`scripts/stack up` in a temporary state dir on
/// a free port block), for tests that kill servers: the shared stack must
/// stay whole for the tests running beside them. `down` on drop.
#[derive(Debug)]
pub struct PrivateStack {
    dir: PathBuf,
    base: u16,
    vars: Vec<(String, String)>,
    /// Where its servers are.
    pub env: StackEnv,
}

impl PrivateStack {
    /// Starts it, with the optional servers in `with` (e.g. `["etcd"]`).
    pub fn up(with: &[&str]) -> Result<Self> {
        Self::up_with(with, &[])
    }

    /// Starts it with `scripts/stack` settings `vars` (e.g.
    /// `TRIDENT_STACK_INFLUX_AUTH=true`).
    pub fn up_with(with: &[&str], vars: &[(&str, &str)]) -> Result<Self> {
        let base = free_port_block().ok_or_else(|| HarnessError::Script {
            args: "up".into(),
            stderr: "no free block of ports between 49000 and 60000".into(),
        })?;
        let dir = std::env::temp_dir().join(unique_name("stack"));
        let mut stack = Self {
            dir,
            base,
            vars: vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            env: StackEnv {
                influx_urls: Vec::new(),
                clickhouse_url: String::new(),
                clickhouse_validation: false,
                kafka_brokers: String::new(),
                raw_topic: String::new(),
                alert_topic: String::new(),
                vars: BTreeMap::new(),
            },
        };
        let mut args = vec!["up"];
        let with = with.join(",");
        if !with.is_empty() {
            args.extend(["--with", &with]);
        }
        stack.script(&args)?;
        stack.env = StackEnv::load_from(stack.dir.join("env"))?;
        Ok(stack)
    }

    /// Its state directory (`TRIDENT_STACK_DIR`).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Its port base (`TRIDENT_STACK_PORT_BASE`).
    pub fn base(&self) -> u16 {
        self.base
    }

    /// Kills server `name` (`influx1`, `kafka`, …) with SIGKILL.
    pub fn kill(&self, name: &str) -> Result<()> {
        self.script(&["kill", name])
    }

    /// Kills InfluxDB node `name` (`influx2`), deletes everything it stored
    /// and starts it empty.
    pub fn wipe(&self, name: &str) -> Result<()> {
        self.kill(name)?;
        for part in ["data", "wal", "meta"] {
            let dir = self.dir.join(name).join(part);
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| HarnessError::Script {
                    args: format!("wipe {name}"),
                    stderr: format!("cannot remove {}: {e}", dir.display()),
                })?;
            }
        }
        self.start(name)
    }

    /// The URL of InfluxDB node `n` of this stack (`4` for the spare).
    pub fn influx_url(&self, n: u16) -> String {
        format!("http://127.0.0.1:{}", self.base + n)
    }

    /// Starts server `name` again and waits until it is healthy.
    pub fn start(&self, name: &str) -> Result<()> {
        self.script(&["start", name])
    }

    fn script(&self, args: &[&str]) -> Result<()> {
        let out = std::process::Command::new(repo_root().join("scripts/stack"))
            .args(args)
            .env("TRIDENT_STACK_DIR", &self.dir)
            .env("TRIDENT_STACK_PORT_BASE", self.base.to_string())
            .envs(self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .map_err(HarnessError::Runtime)?;
        if !out.status.success() {
            return Err(HarnessError::Script {
                args: args.join(" "),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(())
    }
}

impl Drop for PrivateStack {
    fn drop(&mut self) {
        if let Err(e) = self.script(&["down"]) {
            eprintln!("stopping the private stack failed: {e}");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A service binary running as a child process, so a test can `kill -9`
/// it; killed on drop. Its output goes to `log`.
#[derive(Debug)]
pub struct ServiceProcess {
    child: std::process::Child,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
}

impl ServiceProcess {
    /// Starts binary `name` with exactly the environment `vars`.
    pub fn start(name: &str, vars: &BTreeMap<String, String>, log: PathBuf) -> Result<Self> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(HarnessError::Runtime)?;
        let err = out.try_clone().map_err(HarnessError::Runtime)?;
        let child = std::process::Command::new(binary(name))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(vars)
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(HarnessError::Runtime)?;
        Ok(Self { child, log })
    }

    /// SIGKILL, and wait until it is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, as `systemctl stop` sends: the service shuts down in
    /// order. Waits up to 30 s for it to exit, then kills it.
    pub fn terminate(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
    }

    /// `trident-gateway` with `vars`, logging to `work/gateway.log`, once
    /// `url/ping` answers (up to 20 s).
    pub async fn gateway(
        vars: &BTreeMap<String, String>,
        work: &std::path::Path,
        url: &str,
    ) -> Result<Self> {
        let mut process = Self::start("trident-gateway", vars, work.join("gateway.log"))?;
        process
            .wait_ready(&format!("{url}/ping"), Duration::from_secs(20))
            .await?;
        Ok(process)
    }

    /// Waits until `url` answers 2xx, failing early if the process exits.
    pub async fn wait_ready(&mut self, url: &str, timeout: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                return Err(HarnessError::Script {
                    args: format!("{url}: the service exited ({status})"),
                    stderr: log,
                });
            }
            if let Ok(resp) = http().get(url).send().await
                && resp.status().is_success()
            {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(HarnessError::Script {
                    args: format!("{url}: not ready after {timeout:?}"),
                    stderr: std::fs::read_to_string(&self.log).unwrap_or_default(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// `total` lines of measurement `http` for the writer's latency rollups:
/// `app=a0`…`a{apps-1}` in turn, `latency_ms` = i mod `latencies` + 0.5,
/// one nanosecond apart from 1.7e18.
pub fn http_latency_lines(total: usize, apps: usize, latencies: usize) -> Vec<String> {
    (0..total)
        .map(|i| {
            format!(
                "http,app=a{} latency_ms={}.5 {}",
                i % apps,
                i % latencies,
                1_700_000_000_000_000_000u64 + i as u64
            )
        })
        .collect()
}

/// Line `seq` of a continuous load: its own timestamp and `seq` field, 37
/// series, so a resent line overwrites itself.
pub fn load_line(measurement: &str, seq: u64) -> String {
    format!(
        "{measurement},k=k{} seq={seq}i {}",
        seq % 37,
        1_700_000_000_000_000_000u64 + seq
    )
}

/// What a [`WriteLoad`] saw.
#[derive(Debug, Clone, Default)]
pub struct LoadLog {
    /// `seq` of every line of every request answered 2xx.
    pub acked: Vec<u64>,
    /// Each request's status in order; 0 for no answer (connection lost).
    pub statuses: Vec<u16>,
    /// The text of the first answer that was neither 2xx nor lost.
    pub first_refusal: Option<String>,
}

/// Continuous writes from a task of its own: one request at a time, each
/// of `per_request` [`load_line`]s, until stopped.
#[derive(Debug)]
pub struct WriteLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    log: std::sync::Arc<std::sync::Mutex<LoadLog>>,
    task: tokio::task::JoinHandle<()>,
}

impl WriteLoad {
    /// Starts writing to `write_url` (with its `db`); pauses `pause`
    /// between requests.
    pub fn start(write_url: String, measurement: &str, per_request: u64, pause: Duration) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let log = std::sync::Arc::new(std::sync::Mutex::new(LoadLog::default()));
        let (stop2, log2, measurement) = (stop.clone(), log.clone(), measurement.to_owned());
        let task = tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default();
            let mut seq = 0u64;
            while !stop2.load(Ordering::Acquire) {
                let seqs: Vec<u64> = (seq..seq + per_request).collect();
                seq += per_request;
                let body: Vec<String> = seqs.iter().map(|&s| load_line(&measurement, s)).collect();
                let answer = client.post(&write_url).body(body.join("\n")).send().await;
                let (status, text) = match answer {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        (status, resp.text().await.unwrap_or_default())
                    }
                    Err(_) => (0, String::new()),
                };
                {
                    let mut log = log2.lock().unwrap_or_else(|e| e.into_inner());
                    log.statuses.push(status);
                    if (200..300).contains(&status) {
                        log.acked.extend(&seqs);
                    } else if status != 0 && log.first_refusal.is_none() {
                        log.first_refusal = Some(format!("{status}: {text}"));
                    }
                }
                tokio::time::sleep(pause).await;
            }
        });
        Self { stop, log, task }
    }

    /// What it saw so far.
    pub fn snapshot(&self) -> LoadLog {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A function that reads the log so far, for another task.
    pub fn snapshot_handle(&self) -> impl Fn() -> LoadLog + Send + Sync + 'static {
        let log = self.log.clone();
        move || log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stops it after the request in flight.
    pub async fn stop(self) -> LoadLog {
        self.stop.store(true, Ordering::Release);
        let log = self.log.clone();
        let _ = self.task.await;
        log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Polls `url` (JSON) until `done` holds for it, or `timeout` passes;
/// returns the last document.
pub async fn wait_for_json(
    url: &str,
    timeout: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let doc = match http().get(url).send().await {
            Ok(resp) => resp.json().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        };
        if done(&doc) || std::time::Instant::now() > deadline {
            return doc;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs the gateway in this process on a free loopback port with `config`:
/// its base URL, once `/ping` answers, and the trigger that stops it.
pub async fn spawn_gateway(
    config: trident_service::config::Config,
) -> (String, trident_service::shutdown::Shutdown) {
    let shutdown = trident_service::shutdown::Shutdown::new();
    let Ok(listener) = tokio::net::TcpListener::bind("127.0.0.1:0").await else {
        return (String::from("http://127.0.0.1:9"), shutdown);
    };
    let url = listener
        .local_addr()
        .map(|a| format!("http://{a}"))
        .unwrap_or_default();
    tokio::spawn(ingest_gateway::run(config, listener, shutdown.clone()));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while http().get(format!("{url}/ping")).send().await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway at {url} did not answer /ping within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (url, shutdown)
}

/// A query answer with rows equal in time sorted: InfluxDB lists them in
/// no defined order.
pub fn normalize_answer(v: &serde_json::Value) -> serde_json::Value {
    let mut v = v.clone();
    if let Some(results) = v["results"].as_array_mut() {
        for r in results {
            if let Some(series) = r["series"].as_array_mut() {
                for s in series {
                    if let Some(rows) = s["values"].as_array_mut() {
                        let mut i = 0;
                        while i < rows.len() {
                            let mut j = i;
                            while j < rows.len() && rows[j][0] == rows[i][0] {
                                j += 1;
                            }
                            rows[i..j].sort_by_key(|r| r.to_string());
                            i = j;
                        }
                    }
                }
            }
        }
    }
    v
}

/// Whether two query answers agree, floats to 1e-9 relative (sums added in
/// another order differ in the last bits).
pub fn same_answer(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a, b) {
        (serde_json::Value::Number(x), serde_json::Value::Number(y)) => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs())
        }
        (serde_json::Value::Array(x), serde_json::Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_answer(a, b))
        }
        (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_answer(v, w)))
        }
        _ => a == b,
    }
}

/// Strategy rules that give each strategy a measurement: `cpu` (and
/// anything else) by series, `mem` by measurement, `http_requests` by
/// measurement and app.
pub fn one_rule_per_strategy() -> Vec<trident_cluster::StrategyRule> {
    let rule = |measurement: &str, strategy: &str| trident_cluster::StrategyRule {
        database: None,
        measurement: Some(measurement.to_owned()),
        strategy: strategy.to_owned(),
    };
    vec![
        rule("mem", "measurement"),
        rule("http_requests", "measurement+tags(app)"),
    ]
}

/// A topology of `urls` (each node's id is its URL, as the configuration's
/// topology has it), with [`one_rule_per_strategy`].
pub fn topology_of(version: u64, urls: &[String], replication: usize) -> trident_cluster::Topology {
    trident_cluster::Topology {
        version,
        nodes: urls
            .iter()
            .map(|u| trident_cluster::Node {
                id: u.clone(),
                url: u.clone(),
            })
            .collect(),
        replication,
        default_strategy: "series".into(),
        rules: one_rule_per_strategy(),
        moving: None,
    }
}

/// Per node URL: series key → points, what every node must hold when
/// `lines` (line protocol) of database `db` are placed by `placement`;
/// each point counts `weight(line)` (e.g. its number of fields).
pub fn expected_holdings<'a>(
    placement: &trident_cluster::Placement,
    db: &str,
    lines: impl IntoIterator<Item = &'a str>,
    weight: impl Fn(&trident_line_protocol::Line<'_>) -> u64,
) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut out: BTreeMap<String, BTreeMap<String, u64>> = placement
        .topology()
        .nodes
        .iter()
        .map(|n| (n.url.clone(), BTreeMap::new()))
        .collect();
    let mut scratch = Vec::new();
    for text in lines {
        for line in trident_line_protocol::parse_lines(text.as_bytes()).flatten() {
            let strategy = placement.strategy_for(db, &line.measurement().as_str());
            let hash = line.shard_hash(strategy, &mut scratch);
            for node in placement.owners(hash) {
                *out.entry(node.url.clone())
                    .or_default()
                    .entry(line.series_key())
                    .or_default() += weight(&line);
            }
        }
    }
    out
}
