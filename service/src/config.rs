//! One configuration vocabulary for all four services.
//!
//! A deployment has one TOML file with a section per concern; every service
//! reads the whole file and validates the sections it uses, so the same file
//! can be handed to every process. Layers, later wins:
//!
//! 1. the defaults written on each field below;
//! 2. the TOML file given with `--config FILE` (or `TRIDENT_CONFIG`);
//! 3. environment variables `TRIDENT_<SECTION>_<KEY>`, e.g.
//!    `TRIDENT_KAFKA_BROKERS=127.0.0.1:9092` sets `kafka.brokers` and
//!    `TRIDENT_INFLUX_URLS=http://a:8086,http://b:8086` sets `influx.urls`.
//!    Deeper keys use `__`: `TRIDENT_GATEWAY_LISTEN` is `gateway.listen`.
//!    These are the very lines `scripts/stack env` prints, so a service
//!    started in a shell that sourced them talks to the local stack.
//!
//! Unknown keys are refused (a typo must not silently fall back to a default)
//! and [`Config::validate`] explains, per key, what to fix.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

/// The sections of the file; also the first word of every environment key.
const SECTIONS: &[&str] = &[
    "telemetry",
    "influx",
    "kafka",
    "clickhouse",
    "gateway",
    "downsampler",
    "alerter",
    "writer",
    "etcd",
];

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Logs.
    pub telemetry: TelemetryConfig,
    /// The InfluxDB 1.x nodes that form the storage cluster.
    pub influx: InfluxConfig,
    /// The Kafka-protocol brokers and topics of the raw and alert streams.
    pub kafka: KafkaConfig,
    /// The ClickHouse server the writer feeds.
    pub clickhouse: ClickHouseConfig,
    /// The ingest gateway (InfluxDB write API).
    pub gateway: GatewayConfig,
    /// The downsampler (rollups from the raw topic).
    pub downsampler: DownsamplerConfig,
    /// The streaming alerter (rules on the alert topic).
    pub alerter: AlerterConfig,
    /// The ClickHouse writer (business metrics from the raw topic).
    pub writer: WriterConfig,
    /// etcd, where a cluster of many machines keeps its topology.
    pub etcd: EtcdConfig,
}

/// etcd's v3 HTTP (JSON) gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdConfig {
    /// `http://host:2379` URLs, tried in order; comma-separated in the
    /// environment (`TRIDENT_ETCD_ENDPOINTS`).
    #[serde(deserialize_with = "list_or_csv")]
    pub endpoints: Vec<String>,
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// A `tracing` filter such as `info` or `info,trident=debug`.
    /// `RUST_LOG`, when set, wins over this.
    pub log: String,
    /// `text` for people, `json` for log shippers.
    pub log_format: LogFormat,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log: "info".to_owned(),
            log_format: LogFormat::Text,
        }
    }
}

/// How log lines are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The InfluxDB storage cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InfluxConfig {
    /// HTTP base URLs of the InfluxDB nodes, e.g. `["http://10.0.0.1:8086"]`;
    /// in the environment, comma-separated.
    #[serde(deserialize_with = "list_or_csv")]
    pub urls: Vec<String>,
    /// Timeout of one HTTP request to a node.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Copies of every point, on distinct nodes.
    pub replication: usize,
    /// How points are spread where no rule matches: `series`,
    /// `measurement` or `measurement+tags(a,b)`.
    pub strategy: String,
    /// Strategies for particular databases or measurements; first match
    /// wins. `[[influx.rules]] database = "biz" strategy = "measurement"`.
    pub rules: Vec<trident_cluster::StrategyRule>,
    /// Gzip the bodies sent to nodes: less network, more CPU. Off pays on
    /// loopback and fast local links.
    pub gzip: bool,
    /// Read the topology from this JSON or TOML file instead of `urls`,
    /// `replication` and `rules`, and follow its changes (a higher
    /// `version` replaces the one in use). For one machine.
    pub topology_file: Option<std::path::PathBuf>,
    /// Read the topology from this etcd key (`[etcd] endpoints`) and follow
    /// it; `trident-ctl publish` writes it. For many machines.
    pub topology_key: Option<String>,
    /// How often a topology file or key is read again.
    #[serde(with = "humantime_serde")]
    pub topology_poll: Duration,
    /// Requests in flight at once to one node for one database; writes
    /// that arrive meanwhile wait and go to the node together, as one
    /// request (group commit). Fewer, larger requests under load; no wait
    /// when idle.
    pub node_requests: usize,
    /// How long a node's next request waits for more writes to join it
    /// while another request to that node is in flight (0: not at all;
    /// writes still join while every slot is busy). A write to an idle
    /// node never waits.
    #[serde(with = "humantime_serde")]
    pub batch_linger: Duration,
    /// Bytes of line protocol at most in one request to a node.
    pub batch_max_bytes: usize,
    /// Lines at most in one request to a node (InfluxDB suggests batches
    /// of 5 000–10 000). A single write larger than this still goes whole.
    pub batch_max_lines: usize,
}

impl Default for InfluxConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            timeout: Duration::from_secs(10),
            replication: 1,
            strategy: "series".to_owned(),
            rules: Vec::new(),
            gzip: true,
            topology_file: None,
            topology_key: None,
            topology_poll: Duration::from_secs(1),
            node_requests: 4,
            batch_linger: Duration::from_millis(2),
            batch_max_bytes: 4 << 20,
            batch_max_lines: 10_000,
        }
    }
}

impl InfluxConfig {
    /// The cluster topology this section describes. A node's id is its URL
    /// (placement follows ids: moving a node to a new address moves its
    /// data; a topology file or etcd key can give ids of their own).
    pub fn topology(&self) -> trident_cluster::Topology {
        trident_cluster::Topology {
            version: 0,
            nodes: self
                .urls
                .iter()
                .map(|url| trident_cluster::Node {
                    id: url.trim_end_matches('/').to_owned(),
                    url: url.trim_end_matches('/').to_owned(),
                })
                .collect(),
            replication: self.replication,
            default_strategy: self.strategy.clone(),
            rules: self.rules.clone(),
            moving: None,
        }
    }
}

/// The Kafka-protocol streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap brokers of the raw stream, `host:port`, comma-separated in
    /// the environment.
    #[serde(deserialize_with = "list_or_csv")]
    pub brokers: Vec<String>,
    /// Brokers of the alert stream. Empty means the same as `brokers`; a
    /// separate cluster keeps alerts firing when the raw stream's is down.
    #[serde(deserialize_with = "list_or_csv")]
    pub alert_brokers: Vec<String>,
    /// The topic every accepted point is appended to.
    pub raw_topic: String,
    /// The topic the alerter reads.
    pub alert_topic: String,
    /// Compression of produced records: `none`, `gzip`, `snappy`, `lz4`, `zstd`.
    pub compression: String,
    /// How long a produced record may wait for the broker's acknowledgement
    /// before the write is answered 503.
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: Vec::new(),
            alert_brokers: Vec::new(),
            raw_topic: "trident.raw".to_owned(),
            alert_topic: "trident.alerts".to_owned(),
            compression: "lz4".to_owned(),
            delivery_timeout: Duration::from_secs(10),
        }
    }
}

impl KafkaConfig {
    /// The broker list of the alert stream (`alert_brokers`, else `brokers`).
    pub fn alert_brokers(&self) -> &[String] {
        if self.alert_brokers.is_empty() {
            &self.brokers
        } else {
            &self.alert_brokers
        }
    }
}

/// The ClickHouse server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// HTTP URL, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    /// Database the writer creates its tables in.
    pub database: String,
    /// User name.
    pub user: String,
    /// Password (never printed by `--check-config`).
    #[serde(serialize_with = "redact")]
    pub password: String,
    /// Check row types against the table schema on insert. Servers older
    /// than ~21.x lack the setting this check needs; turn it off for them.
    pub validation: bool,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            database: "trident".to_owned(),
            user: "default".to_owned(),
            password: String::new(),
            validation: true,
        }
    }
}

/// The ingest gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Address of the InfluxDB-compatible HTTP API (also `/health`, `/metrics`).
    pub listen: SocketAddr,
    /// Largest request body, also after gzip inflation (InfluxDB: 25 MB).
    pub max_body_bytes: usize,
    /// Create a database on every node the first time it is written to;
    /// otherwise an unknown database is 404, as in InfluxDB.
    pub create_databases: bool,
    /// Directory of the on-disk spools (hinted handoff per InfluxDB node,
    /// one for the raw topic). Must survive a restart: what is in it was
    /// acknowledged to clients.
    pub spool_dir: PathBuf,
    /// Largest size of each spool; a write that does not fit is a 503.
    pub spool_max_bytes: u64,
    /// Longest wait between two replay attempts to a target that is down
    /// (the wait doubles from 100 ms up to this, with jitter).
    #[serde(with = "humantime_serde")]
    pub replay_max_backoff: Duration,
    /// Which points go to the alert topic: `matching` (those some rule in
    /// `alerter.rules` looks at), `all`, or `off`.
    pub alerts: AlertPoints,
    /// Records the alert path may hold in memory; beyond that points are
    /// dropped and counted (the alert path never slows writes).
    pub alert_queue_records: usize,
    /// Writes handled at once; one more is answered 503 with
    /// `Retry-After` (overload: memory stays bounded, clients back off).
    pub max_inflight_writes: usize,
    /// Bytes of request bodies held at once, as received plus inflated (an
    /// uncompressed body counts once; a gzip body's buffer is counted
    /// before it grows, never past `max_body_bytes`); a write that
    /// does not fit is answered 503 with `Retry-After`. Node
    /// bodies and records add about twice the inflated size on top. At
    /// least twice `max_body_bytes`, so that the largest write fits.
    pub max_inflight_bytes: u64,
    /// The sinks a 2xx vouches for: `influx`, `kafka` (both by default).
    /// A write waits for every sink either way; a sink left out that
    /// cannot take it (its spool full) is logged and counted
    /// (`trident_gateway_sink_failures_total`) instead of failing the
    /// write with 503. Refusals of the data itself (400, 404) still answer.
    #[serde(deserialize_with = "list_or_csv")]
    pub required: Vec<String>,
    /// Users and what they may write, as InfluxDB's `auth-enabled`.
    pub auth: AuthConfig,
}

/// Who may write (InfluxDB 1.x's users and grants, kept in the config).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Require credentials on every write; off: anyone may write.
    pub enabled: bool,
    /// The users.
    pub users: Vec<UserConfig>,
}

/// One user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// User name.
    pub name: String,
    /// The password as an argon2 PHC string (`trident-gateway
    /// --hash-password` makes one); never the password itself.
    pub password_hash: String,
    /// May write to every database.
    #[serde(default)]
    pub admin: bool,
    /// Databases the user may write to (`"*"`: all).
    #[serde(default)]
    pub write: Vec<String>,
    /// Databases the user may read (for the query path).
    #[serde(default)]
    pub read: Vec<String>,
}

/// Where a writer keeps the raw-topic positions its rows end at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Positions {
    /// In ClickHouse, next to the rows; partitions split by
    /// `instance`/`instances` (brokers without a group coordinator).
    Clickhouse,
    /// In the broker, as a consumer group named `group_id`.
    Kafka,
}

/// Which points the gateway sends to the alert topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertPoints {
    /// Points some alert rule looks at.
    Matching,
    /// Every point.
    All,
    /// None: no alert path.
    Off,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8086)),
            max_body_bytes: 25_000_000,
            create_databases: true,
            spool_dir: PathBuf::from("trident-spool"),
            spool_max_bytes: 1 << 30,
            replay_max_backoff: Duration::from_secs(5),
            alerts: AlertPoints::Matching,
            alert_queue_records: 100_000,
            max_inflight_writes: 256,
            max_inflight_bytes: 1 << 30,
            required: vec!["influx".into(), "kafka".into()],
            auth: AuthConfig::default(),
        }
    }
}

/// The downsampler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DownsamplerConfig {
    /// Address of `/health` and `/metrics`.
    pub admin_listen: SocketAddr,
    /// This instance's number, 0-based: it owns the raw topic's partitions
    /// `p` with `p % instances == instance`.
    pub instance: u32,
    /// How many instances split the partitions.
    pub instances: u32,
    /// Explicit partitions to own instead (empty: by `instance`).
    pub partitions: Vec<i32>,
    /// Tumbling window sizes, e.g. `["1m", "5m", "1h"]`.
    #[serde(with = "humantime_vec")]
    pub windows: Vec<Duration>,
    /// Aggregates written for numeric fields (strings and booleans get
    /// count and last): count, sum, min, max, mean, first, last.
    pub aggregates: Vec<String>,
    /// How far event time may run behind the newest point of a partition
    /// before a window closes; later points are dropped and counted.
    #[serde(with = "humantime_serde")]
    pub lateness: Duration,
    /// How far a point's time may be ahead of its ingest time; points
    /// further in the future are dropped and counted (the replay rule
    /// depends on it, see docs/downsampler.md).
    #[serde(with = "humantime_serde")]
    pub future_skew: Duration,
    /// How much of the raw topic is re-read at start to rebuild state; at
    /// least the largest window + lateness + future_skew.
    #[serde(with = "humantime_serde")]
    pub lookback: Duration,
    /// Rollups of window size `w` go to retention policy
    /// `<rp_prefix><w>` of the point's database (e.g. `rollup_1m`).
    pub rp_prefix: String,
    /// Append every emitted rollup line to this file (an audit of what
    /// was written; empty: off).
    pub emit_log: PathBuf,
}

impl Default for DownsamplerConfig {
    fn default() -> Self {
        Self {
            admin_listen: SocketAddr::from(([0, 0, 0, 0], 9271)),
            instance: 0,
            instances: 1,
            partitions: Vec::new(),
            windows: vec![
                Duration::from_secs(60),
                Duration::from_secs(300),
                Duration::from_secs(3600),
            ],
            aggregates: ["count", "sum", "min", "max", "mean", "first", "last"]
                .map(str::to_owned)
                .to_vec(),
            lateness: Duration::from_secs(30),
            future_skew: Duration::from_secs(60),
            lookback: Duration::from_secs(2 * 3600),
            rp_prefix: "rollup_".to_owned(),
            emit_log: PathBuf::new(),
        }
    }
}

/// A list of durations written as humantime strings (`"1m"`), also from
/// one comma-separated environment value.
mod humantime_vec {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|d| humantime::format_duration(*d).to_string()))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            List(Vec<String>),
            Csv(String),
        }
        let items = match Raw::deserialize(d)? {
            Raw::List(items) => items,
            Raw::Csv(text) => text.split(',').map(|s| s.trim().to_owned()).collect(),
        };
        items
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| humantime::parse_duration(s).map_err(serde::de::Error::custom))
            .collect()
    }
}

/// The alerter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlerterConfig {
    /// Address of `/health`, `/metrics` and `/alerts`.
    pub admin_listen: SocketAddr,
    /// The alert rules file (`docs/alert-rules.md`); the gateway reads it
    /// too, to send the alert topic only the points a rule looks at.
    /// Empty: no rules.
    pub rules: PathBuf,
    /// This instance's number, 0-based: it owns the alert topic's
    /// partitions `p % instances == instance`.
    pub instance: u32,
    /// How many instances split the partitions.
    pub instances: u32,
    /// Explicit partitions to own instead (empty: by `instance`).
    pub partitions: Vec<i32>,
    /// How much of the alert topic is re-read at start to rebuild windows
    /// and `for` state; at least the longest window or `for` of any rule.
    #[serde(with = "humantime_serde")]
    pub lookback: Duration,
    /// Webhook receivers.
    pub webhooks: Vec<WebhookConfig>,
    /// Alertmanager base URLs (`http://host:9093`); alerts go to
    /// `/api/v2/alerts` of each. Comma-separated in the environment.
    #[serde(deserialize_with = "list_or_csv")]
    pub alertmanagers: Vec<String>,
    /// How often firing alerts are sent to Alertmanager again.
    #[serde(with = "humantime_serde")]
    pub resend_interval: Duration,
    /// Notifications held in memory; beyond, they are dropped and counted
    /// (evaluation never waits for a receiver).
    pub notify_queue: usize,
}

/// A webhook receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Its name (the `receiver` field of the payload).
    pub name: String,
    /// Where to POST.
    pub url: String,
    /// If set, `X-Trident-Signature: sha256=<hex HMAC-SHA256 of the body>`.
    #[serde(default)]
    pub secret: String,
    /// Bound on each attempt.
    #[serde(default = "default_webhook_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts before a notification is given up (and counted).
    #[serde(default = "default_webhook_attempts")]
    pub attempts: u32,
    /// Notifications in flight to this receiver at most.
    #[serde(default = "default_webhook_concurrency")]
    pub concurrency: usize,
}

fn default_webhook_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_webhook_attempts() -> u32 {
    4
}

fn default_webhook_concurrency() -> usize {
    4
}

impl Default for AlerterConfig {
    fn default() -> Self {
        Self {
            admin_listen: SocketAddr::from(([0, 0, 0, 0], 9272)),
            rules: PathBuf::new(),
            instance: 0,
            instances: 1,
            partitions: Vec::new(),
            lookback: Duration::from_secs(15 * 60),
            webhooks: Vec::new(),
            alertmanagers: Vec::new(),
            resend_interval: Duration::from_secs(60),
            notify_queue: 10_000,
        }
    }
}

/// The ClickHouse writer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WriterConfig {
    /// Address of `/health`, `/metrics` and `/query`.
    pub admin_listen: SocketAddr,
    /// Name under which consumed offsets are stored; writers with one
    /// name continue each other's work.
    pub group_id: String,
    /// Where positions live: `clickhouse` (next to the rows; partitions
    /// split by `instance`/`instances`, for brokers without a group
    /// coordinator) or `kafka` (a consumer group named `group_id`: the
    /// broker splits the partitions among the running writers, offsets
    /// are committed to it after ClickHouse took the rows).
    pub positions: Positions,
    /// This instance, 0-based: it owns the raw topic's partitions
    /// `p % instances == instance` (positions in ClickHouse).
    pub instance: u32,
    /// How many instances split the partitions (positions in ClickHouse).
    pub instances: u32,
    /// Which measurements are business metrics and how they map to columns.
    pub mappings: Vec<MappingConfig>,
    /// Pre-aggregation intervals, e.g. `["1m", "1h"]`.
    #[serde(with = "humantime_vec")]
    pub intervals: Vec<Duration>,
    /// Rows per insert at most.
    pub batch_rows: usize,
    /// Bytes of line protocol (of the mapped points) per insert at most.
    pub batch_bytes: usize,
    /// Longest wait before rows are inserted (and offsets committed).
    #[serde(with = "humantime_serde")]
    pub batch_period: Duration,
    /// Days raw rows are kept (ClickHouse 19.6+ TTL; 0: forever).
    pub raw_ttl_days: u32,
}

/// One business-metric measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    /// The measurement.
    pub measurement: String,
    /// Table name prefix (default: the measurement).
    #[serde(default)]
    pub table: String,
    /// Tag keys that become dimension columns (a missing tag is "").
    pub dimensions: Vec<String>,
    /// Numeric fields that become value columns (count, sum, quantiles).
    pub values: Vec<String>,
    /// How success is decided; none: every row succeeds.
    #[serde(default)]
    pub success: Option<SuccessConfig>,
}

/// `field op value`, e.g. status < 400; a boolean field compares as 1/0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuccessConfig {
    /// The field.
    pub field: String,
    /// One of < <= > >= == !=.
    pub op: String,
    /// The number compared with.
    pub value: f64,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            admin_listen: SocketAddr::from(([0, 0, 0, 0], 9273)),
            group_id: "trident-writer".to_owned(),
            positions: Positions::Clickhouse,
            instance: 0,
            instances: 1,
            mappings: Vec::new(),
            intervals: vec![Duration::from_secs(60), Duration::from_secs(3600)],
            batch_rows: 100_000,
            batch_bytes: 64 << 20,
            batch_period: Duration::from_secs(1),
            raw_ttl_days: 30,
        }
    }
}

/// Which service is validating; each needs different sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// `ingest-gateway`.
    Gateway,
    /// `downsampler`.
    Downsampler,
    /// `alerter`.
    Alerter,
    /// `writer`.
    Writer,
}

impl Config {
    /// Loads the layers: defaults, then `file` if given, then `TRIDENT_*`
    /// variables from the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self> {
        Self::load_with_env(file, std::env::vars())
    }

    /// Like [`Config::load`] with the environment given explicitly, e.g. the
    /// `environment:` block of a deployment file, or a test's variables.
    pub fn load_with_env<K, V>(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            // Figment treats a missing file as empty; a user who named a file
            // wants to hear that it is not there.
            std::fs::metadata(path).map_err(|source| Error::ConfigFile {
                path: path.to_owned(),
                source,
            })?;
            figment = figment.merge(Toml::file_exact(path));
        }
        // Sorted, so that the outcome does not depend on the order the
        // environment happens to list its variables in.
        let mut vars: Vec<(String, figment::value::Value)> = env
            .into_iter()
            .filter_map(|(k, v)| {
                let path = env_key_to_path(k.as_ref())?;
                // Values parse as TOML-like scalars ("true", "3", "[a, b]").
                let value = v
                    .as_ref()
                    .parse::<figment::value::Value>()
                    .unwrap_or_else(|never| match never {});
                Some((path, value))
            })
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        for (path, value) in vars {
            figment = figment.merge(Serialized::global(&path, value));
        }
        figment
            .extract()
            .map_err(|e| Error::ConfigParse(Box::new(e)))
    }

    /// Checks the sections `service` uses and says, per key, what to fix.
    pub fn validate(&self, service: Service) -> Result<()> {
        let uses_influx = matches!(service, Service::Gateway | Service::Downsampler);
        let uses_raw_stream = !matches!(service, Service::Alerter);
        let uses_alert_stream = matches!(service, Service::Gateway | Service::Alerter);
        if self.influx.topology_file.is_some() && self.influx.topology_key.is_some() {
            return Err(invalid(
                "influx.topology_key",
                "and influx.topology_file are both set: choose one source of the topology",
            ));
        }
        if self.influx.topology_key.is_some() && self.etcd.endpoints.is_empty() {
            return Err(invalid(
                "etcd.endpoints",
                "is empty while influx.topology_key is set: list etcd's URLs, e.g. [\"http://127.0.0.1:2379\"]",
            ));
        }
        if self.influx.node_requests == 0 {
            return Err(invalid("influx.node_requests", "must be at least 1"));
        }
        if self.influx.batch_max_bytes == 0 {
            return Err(invalid("influx.batch_max_bytes", "must be at least 1"));
        }
        if self.influx.batch_max_lines == 0 {
            return Err(invalid("influx.batch_max_lines", "must be at least 1"));
        }
        if self.influx.topology_poll.is_zero() {
            return Err(invalid("influx.topology_poll", "must be longer than 0s"));
        }
        let live_topology =
            self.influx.topology_file.is_some() || self.influx.topology_key.is_some();
        if uses_influx && !live_topology {
            if self.influx.urls.is_empty() {
                return Err(invalid(
                    "influx.urls",
                    "is empty: list the HTTP URLs of the InfluxDB nodes, e.g. [\"http://127.0.0.1:8086\"]",
                ));
            }
            if self.influx.timeout.is_zero() {
                return Err(invalid("influx.timeout", "must be longer than 0s"));
            }
            // The topology checks the URLs, the replication factor and the
            // strategy rules.
            self.influx
                .topology()
                .validate()
                .map_err(|e| invalid("influx", &e.to_string()))?;
        }
        if uses_influx && self.influx.timeout.is_zero() {
            return Err(invalid("influx.timeout", "must be longer than 0s"));
        }
        if service == Service::Gateway && self.gateway.max_body_bytes == 0 {
            return Err(invalid("gateway.max_body_bytes", "must be more than 0"));
        }
        if service == Service::Gateway && self.gateway.spool_max_bytes < 1 << 20 {
            return Err(invalid(
                "gateway.spool_max_bytes",
                "must be at least 1048576 (1 MiB): a spool must hold a whole request",
            ));
        }
        if service == Service::Gateway && self.gateway.max_inflight_writes == 0 {
            return Err(invalid(
                "gateway.max_inflight_writes",
                "must be more than 0",
            ));
        }
        if service == Service::Gateway && self.gateway.auth.enabled {
            if self.gateway.auth.users.is_empty() {
                return Err(invalid(
                    "gateway.auth.users",
                    "is empty while gateway.auth.enabled = true: add [[gateway.auth.users]] entries",
                ));
            }
            let mut seen = std::collections::HashSet::new();
            for user in &self.gateway.auth.users {
                if user.name.is_empty() || !seen.insert(user.name.as_str()) {
                    return Err(invalid(
                        "gateway.auth.users",
                        &format!(
                            "user names must be non-empty and unique (\"{}\")",
                            user.name
                        ),
                    ));
                }
                if !user.password_hash.starts_with("$argon2") {
                    return Err(invalid(
                        "gateway.auth.users",
                        &format!(
                            "user \"{}\": password_hash must be an argon2 PHC string ($argon2id$...); make one with `trident-gateway --hash-password`",
                            user.name
                        ),
                    ));
                }
            }
        }
        if service == Service::Gateway {
            let gw = &self.gateway;
            if gw.max_inflight_bytes < 2 * gw.max_body_bytes as u64 {
                return Err(invalid(
                    "gateway.max_inflight_bytes",
                    &format!(
                        "is {}: it must be at least twice gateway.max_body_bytes ({}), or the largest write could never be taken",
                        gw.max_inflight_bytes, gw.max_body_bytes
                    ),
                ));
            }
            let required = &self.gateway.required;
            if let Some(unknown) = required
                .iter()
                .find(|s| !matches!(s.as_str(), "influx" | "kafka"))
            {
                return Err(invalid(
                    "gateway.required",
                    &format!("names `{unknown}`: the sinks are \"influx\" and \"kafka\""),
                ));
            }
            if required.is_empty() {
                return Err(invalid(
                    "gateway.required",
                    "is empty: a 2xx must vouch for at least one sink, e.g. [\"influx\"]",
                ));
            }
        }
        if service == Service::Gateway
            && self.gateway.alerts != AlertPoints::Off
            && self.gateway.alert_queue_records == 0
        {
            return Err(invalid(
                "gateway.alert_queue_records",
                "must be more than 0 (or set gateway.alerts = \"off\")",
            ));
        }
        if uses_raw_stream || uses_alert_stream {
            let brokers = if uses_raw_stream {
                ("kafka.brokers", &self.kafka.brokers[..])
            } else {
                ("kafka.alert_brokers", self.kafka.alert_brokers())
            };
            if brokers.1.is_empty() {
                return Err(invalid(
                    brokers.0,
                    "is empty: list the Kafka bootstrap brokers as host:port",
                ));
            }
            for broker in self.kafka.brokers.iter().chain(&self.kafka.alert_brokers) {
                check_host_port("kafka.brokers", broker)?;
            }
        }
        if !matches!(
            self.kafka.compression.as_str(),
            "none" | "gzip" | "snappy" | "lz4" | "zstd"
        ) {
            return Err(invalid(
                "kafka.compression",
                "must be one of none, gzip, snappy, lz4, zstd",
            ));
        }
        if self.kafka.delivery_timeout.is_zero() {
            return Err(invalid("kafka.delivery_timeout", "must be longer than 0s"));
        }
        if uses_raw_stream {
            check_topic("kafka.raw_topic", &self.kafka.raw_topic)?;
        }
        if uses_alert_stream {
            check_topic("kafka.alert_topic", &self.kafka.alert_topic)?;
        }
        if service == Service::Downsampler {
            let d = &self.downsampler;
            if d.instances == 0 || d.instance >= d.instances {
                return Err(invalid(
                    "downsampler.instance",
                    &format!(
                        "must be below downsampler.instances ({}); instances count from 0",
                        d.instances
                    ),
                ));
            }
            if d.windows.is_empty() || d.windows.iter().any(|w| w.is_zero()) {
                return Err(invalid(
                    "downsampler.windows",
                    "list at least one window longer than 0s, e.g. [\"1m\", \"1h\"]",
                ));
            }
            for a in &d.aggregates {
                if !["count", "sum", "min", "max", "mean", "first", "last"].contains(&a.as_str()) {
                    return Err(invalid(
                        "downsampler.aggregates",
                        &format!(
                            "unknown aggregate \"{a}\": use count, sum, min, max, mean, first, last"
                        ),
                    ));
                }
            }
            let largest = d.windows.iter().max().copied().unwrap_or_default();
            let needed = largest + d.lateness + d.future_skew;
            if d.lookback < needed {
                return Err(invalid(
                    "downsampler.lookback",
                    &format!(
                        "is {}, but must be at least the largest window + lateness + future_skew = {}",
                        humantime::format_duration(d.lookback),
                        humantime::format_duration(needed)
                    ),
                ));
            }
        }
        if service == Service::Alerter {
            let a = &self.alerter;
            if a.instances == 0 || a.instance >= a.instances {
                return Err(invalid(
                    "alerter.instance",
                    &format!("must be below alerter.instances ({})", a.instances),
                ));
            }
            if a.rules.as_os_str().is_empty() {
                return Err(invalid(
                    "alerter.rules",
                    "is empty: name the rules file (docs/alert-rules.md)",
                ));
            }
            for w in &a.webhooks {
                check_http_url("alerter.webhooks.url", &w.url)?;
            }
            for url in &a.alertmanagers {
                check_http_url("alerter.alertmanagers", url)?;
            }
        }
        if service == Service::Writer {
            if self.clickhouse.url.is_empty() {
                return Err(invalid(
                    "clickhouse.url",
                    "is empty: give the ClickHouse HTTP URL, e.g. http://127.0.0.1:8123",
                ));
            }
            check_http_url("clickhouse.url", &self.clickhouse.url)?;
            if !is_identifier(&self.clickhouse.database) {
                return Err(invalid(
                    "clickhouse.database",
                    "must name a database: letters, digits and _",
                ));
            }
            let w = &self.writer;
            if w.intervals.is_empty()
                || w.intervals
                    .iter()
                    .any(|i| i.as_secs() == 0 || i.subsec_nanos() != 0)
            {
                return Err(invalid(
                    "writer.intervals",
                    "list whole seconds of at least 1s, e.g. [\"1m\", \"1h\"]",
                ));
            }
            if w.instances == 0 || w.instance >= w.instances {
                return Err(invalid(
                    "writer.instance",
                    &format!("must be below writer.instances ({})", w.instances),
                ));
            }
            if w.batch_rows == 0 {
                return Err(invalid("writer.batch_rows", "must be more than 0"));
            }
            for m in &w.mappings {
                let table = if m.table.is_empty() {
                    &m.measurement
                } else {
                    &m.table
                };
                for (what, name) in std::iter::once(("table", table))
                    .chain(m.dimensions.iter().map(|d| ("dimension", d)))
                    .chain(m.values.iter().map(|v| ("value", v)))
                {
                    if !is_identifier(name) {
                        return Err(invalid(
                            "writer.mappings",
                            &format!(
                                "{what} \"{name}\" of measurement \"{}\" becomes a ClickHouse column or table: use letters, digits and _ (set table = ... for the measurement)",
                                m.measurement
                            ),
                        ));
                    }
                }
                if m.values.is_empty() {
                    return Err(invalid(
                        "writer.mappings",
                        &format!("measurement \"{}\" lists no values", m.measurement),
                    ));
                }
                if let Some(s) = &m.success
                    && !["<", "<=", ">", ">=", "==", "!="].contains(&s.op.as_str())
                {
                    return Err(invalid(
                        "writer.mappings.success.op",
                        &format!("\"{}\": use <, <=, >, >=, == or !=", s.op),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Letters, digits and `_`, not starting with a digit: safe as a
/// ClickHouse identifier without quoting.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The configuration key an environment variable sets:
/// `TRIDENT_KAFKA_BROKERS` → `kafka.brokers`, `TRIDENT_GATEWAY_A__B` →
/// `gateway.a.b`. Variables whose first word is no section (e.g.
/// `TRIDENT_STACK_DIR`, `TRIDENT_CONFIG`) are not configuration: `None`.
pub fn env_key_to_path(var: &str) -> Option<String> {
    let key = var.strip_prefix("TRIDENT_")?.to_ascii_lowercase();
    SECTIONS.iter().find_map(|section| {
        let rest = key.strip_prefix(section)?.strip_prefix('_')?;
        (!rest.is_empty()).then(|| format!("{section}.{}", rest.replace("__", ".")))
    })
}

fn invalid(key: &str, reason: &str) -> Error {
    Error::ConfigInvalid {
        key: key.to_owned(),
        reason: reason.to_owned(),
    }
}

/// A name Kafka accepts for a topic: 1 to 249 of ASCII letters, digits,
/// `.`, `_` and `-`, and not `.` or `..`.
fn check_topic(key: &str, name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(invalid(key, "must name a topic"));
    }
    let legal = name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !legal {
        return Err(invalid(
            key,
            &format!(
                "{name:?} is not a Kafka topic name: use 1 to 249 ASCII letters, digits, '.', '_' or '-'"
            ),
        ));
    }
    Ok(())
}

fn check_http_url(key: &str, url: &str) -> Result<()> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| {
            invalid(
                key,
                &format!("has `{url}`, which is not an http:// or https:// URL"),
            )
        })?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(invalid(key, &format!("has `{url}`, which names no host")));
    }
    Ok(())
}

fn check_host_port(key: &str, addr: &str) -> Result<()> {
    let valid = addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if valid {
        Ok(())
    } else {
        Err(invalid(
            key,
            &format!("has `{addr}`, which is not host:port (e.g. 127.0.0.1:9092)"),
        ))
    }
}

/// Accepts a TOML array or a comma-separated string (how lists arrive from
/// the environment).
fn list_or_csv<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrCsv {
        List(Vec<String>),
        Csv(String),
    }
    Ok(match ListOrCsv::deserialize(deserializer)? {
        ListOrCsv::List(list) => list,
        ListOrCsv::Csv(csv) => csv
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

fn redact<S: Serializer>(secret: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(if secret.is_empty() { "" } else { "<redacted>" })
}

#[cfg(test)]
// figment's Jail returns its own large error type; fine in tests.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    fn load_in_jail(jail: &Jail, file: Option<&str>) -> Result<Config> {
        Config::load(file.map(|f| jail.directory().join(f)).as_deref())
    }

    #[test]
    fn defaults_then_file_then_environment() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "trident.toml",
                r#"
                [influx]
                urls = ["http://a:8086", "http://b:8086"]
                timeout = "3s"
                [kafka]
                brokers = ["file:9092"]
                "#,
            )?;
            jail.set_env("TRIDENT_KAFKA_BROKERS", "env1:9092, env2:9092");
            jail.set_env("TRIDENT_GATEWAY_LISTEN", "127.0.0.1:18086");
            jail.set_env("TRIDENT_STACK_DIR", "/not/config");
            let config = load_in_jail(jail, Some("trident.toml")).expect("loads");
            assert_eq!(config.influx.urls, ["http://a:8086", "http://b:8086"]);
            assert_eq!(config.influx.timeout, Duration::from_secs(3));
            assert_eq!(config.kafka.brokers, ["env1:9092", "env2:9092"]);
            assert_eq!(config.kafka.raw_topic, "trident.raw", "default kept");
            assert_eq!(config.gateway.listen, "127.0.0.1:18086".parse().unwrap());
            config.validate(Service::Gateway).expect("valid");
            Ok(())
        });
    }

    #[test]
    fn unknown_key_in_file_is_refused_and_named() {
        Jail::expect_with(|jail| {
            jail.create_file("trident.toml", "[kafka]\nbrokerz = [\"a:1\"]\n")?;
            let err = load_in_jail(jail, Some("trident.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("brokerz"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unknown_key_in_environment_is_refused() {
        Jail::expect_with(|jail| {
            jail.set_env("TRIDENT_KAFKA_BROKRES", "a:1");
            let err = load_in_jail(jail, None).unwrap_err().to_string();
            assert!(err.contains("brokres"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn missing_file_is_an_error_naming_it() {
        Jail::expect_with(|jail| {
            let err = load_in_jail(jail, Some("nope.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("nope.toml"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn explicit_environment_maps_like_the_process_one() {
        let config = Config::load_with_env(
            None,
            [
                ("TRIDENT_INFLUX_URLS", "http://a:1,http://b:2"),
                ("TRIDENT_KAFKA_BROKERS", "k:9092"),
                ("TRIDENT_CLICKHOUSE_VALIDATION", "false"),
                ("TRIDENT_INFLUX_TIMEOUT", "250ms"),
                ("PATH", "/usr/bin"),
            ],
        )
        .unwrap();
        assert_eq!(config.influx.urls, ["http://a:1", "http://b:2"]);
        assert_eq!(config.kafka.brokers, ["k:9092"]);
        assert!(!config.clickhouse.validation);
        assert_eq!(config.influx.timeout, Duration::from_millis(250));
        assert_eq!(env_key_to_path("TRIDENT_STACK_DIR"), None);
        assert_eq!(
            env_key_to_path("TRIDENT_GATEWAY_A__B").as_deref(),
            Some("gateway.a.b")
        );
    }

    #[test]
    fn validation_names_the_key_to_fix() {
        let mut config = Config::default();
        let err = config.validate(Service::Gateway).unwrap_err().to_string();
        assert!(err.contains("influx.urls"), "{err}");

        config.influx.urls = vec!["localhost:8086".into()];
        let err = config.validate(Service::Gateway).unwrap_err().to_string();
        assert!(err.contains("not an http://"), "{err}");

        config.influx.urls = vec!["http://localhost:8086".into()];
        let err = config.validate(Service::Gateway).unwrap_err().to_string();
        assert!(err.contains("kafka.brokers"), "{err}");

        config.kafka.brokers = vec!["localhost".into()];
        let err = config.validate(Service::Gateway).unwrap_err().to_string();
        assert!(err.contains("host:port"), "{err}");

        config.kafka.brokers = vec!["localhost:9092".into()];
        config.validate(Service::Gateway).expect("valid now");

        config.gateway.required = vec!["influx".into(), "clickhouse".into()];
        let err = config.validate(Service::Gateway).unwrap_err().to_string();
        assert!(
            err.contains("gateway.required") && err.contains("`clickhouse`"),
            "{err}"
        );
        config.gateway.required = Vec::new();
        let err = config.validate(Service::Gateway).unwrap_err().to_string();
        assert!(
            err.contains("gateway.required") && err.contains("empty"),
            "{err}"
        );
        config.gateway.required = vec!["kafka".into()];
        config
            .validate(Service::Gateway)
            .expect("kafka alone may be required");

        config.gateway.max_inflight_bytes = config.gateway.max_body_bytes as u64;
        let err = config.validate(Service::Gateway).unwrap_err().to_string();
        assert!(err.contains("gateway.max_inflight_bytes"), "{err}");
        config.gateway.max_inflight_bytes = 2 * config.gateway.max_body_bytes as u64;
        config
            .validate(Service::Gateway)
            .expect("twice the body limit");

        let err = config.validate(Service::Writer).unwrap_err().to_string();
        assert!(err.contains("clickhouse.url"), "{err}");

        config.clickhouse.url = "http://localhost:8123".into();
        let err = Config::load_with_env(None, [("TRIDENT_WRITER_POSITIONS", "zookeeper")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("writer.positions"), "{err}");

        config.influx.node_requests = 0;
        let err = config.validate(Service::Gateway).unwrap_err().to_string();
        assert!(err.contains("influx.node_requests"), "{err}");
        config.influx.node_requests = 2;

        // Topic names go to librdkafka as C strings: Kafka's own rule
        // keeps NUL (and everything else a broker refuses) out.
        for bad in ["", "raw topic", "raw\0", "..", &"t".repeat(250)] {
            config.kafka.raw_topic = bad.to_owned();
            let err = config.validate(Service::Gateway).unwrap_err().to_string();
            assert!(err.contains("kafka.raw_topic"), "{bad:?}: {err}");
        }
        config.kafka.raw_topic = "trident.raw_v2-eu".to_owned();
        config.kafka.alert_topic = "alerts/eu".to_owned();
        let err = config.validate(Service::Gateway).unwrap_err().to_string();
        assert!(
            err.contains("kafka.alert_topic") && err.contains("not a Kafka topic name"),
            "{err}"
        );
        config.kafka.alert_topic = "trident.alerts".to_owned();
        config.validate(Service::Gateway).expect("legal names");
    }

    #[test]
    fn a_live_topology_source_replaces_the_urls() {
        let mut config = Config::default();
        config.kafka.brokers = vec!["localhost:9092".into()];
        config.influx.topology_key = Some("/trident/topology".into());
        let err = config.validate(Service::Gateway).unwrap_err().to_string();
        assert!(err.contains("etcd.endpoints"), "{err}");
        config.etcd.endpoints = vec!["http://127.0.0.1:2379".into()];
        config.validate(Service::Gateway).expect("no urls needed");
        config.influx.topology_file = Some("topology.json".into());
        let err = config.validate(Service::Gateway).unwrap_err().to_string();
        assert!(err.contains("choose one source"), "{err}");
        let from_env = Config::load_with_env(
            None,
            [("TRIDENT_ETCD_ENDPOINTS", "http://a:2379,http://b:2379")],
        )
        .expect("loads");
        assert_eq!(from_env.etcd.endpoints.len(), 2);
    }

    #[test]
    fn alerter_uses_its_own_brokers_when_given() {
        let mut config = Config::default();
        config.kafka.alert_brokers = vec!["alerts:9092".into()];
        config.alerter.rules = "rules.toml".into();
        config
            .validate(Service::Alerter)
            .expect("alert brokers suffice");
        config.alerter.rules = PathBuf::new();
        let e = config.validate(Service::Alerter).unwrap_err().to_string();
        assert!(e.contains("alerter.rules"), "{e}");
        assert_eq!(config.kafka.alert_brokers(), ["alerts:9092"]);
    }

    #[test]
    fn password_is_redacted_when_printed() {
        let mut config = Config::default();
        config.clickhouse.password = "hunter2".into();
        let printed = serde_json::to_string(&config).unwrap();
        assert!(!printed.contains("hunter2"));
        assert!(printed.contains("<redacted>"));
    }
}
