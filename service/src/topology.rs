//! Where the cluster topology comes from, and how a running service follows
//! it without a restart:
//!
//! ```text
//! [influx] urls, replication, rules      ─► fixed for the process
//! influx.topology_file = "topology.json" ─┐ polled every influx.topology_poll;
//! influx.topology_key = "/trident/…"     ─┘ a higher `version` replaces the one in use
//!   (with [etcd] endpoints: etcd's v3 JSON gateway, keys and values in base64)
//! ```
//!
//! Versions only go up: a topology whose version is not higher than the one
//! in use is ignored, so every instance that sees the same source ends on
//! the same version whatever order it read them in.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use trident_cluster::Topology;

use crate::config::Config;
use crate::health::{Health, Status};
use crate::shutdown::Shutdown;
use crate::{Error, Result};

/// Where a topology is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The `[influx]` section, fixed.
    Config(Topology),
    /// A JSON or TOML file.
    File(PathBuf),
    /// A key in etcd.
    Etcd {
        /// `http://host:2379` …
        endpoints: Vec<String>,
        /// The key.
        key: String,
    },
}

fn topology_error(message: String) -> Error {
    Error::Topology(message)
}

impl Source {
    /// The source `config` names.
    pub fn of(config: &Config) -> Self {
        if let Some(path) = &config.influx.topology_file {
            return Source::File(path.clone());
        }
        if let Some(key) = &config.influx.topology_key {
            return Source::Etcd {
                endpoints: config.etcd.endpoints.clone(),
                key: key.clone(),
            };
        }
        Source::Config(config.influx.topology())
    }

    /// Whether the topology can change while the process runs.
    pub fn is_live(&self) -> bool {
        !matches!(self, Source::Config(_))
    }

    /// Where it is, for logs and errors.
    pub fn describe(&self) -> String {
        match self {
            Source::Config(_) => "the [influx] configuration".to_owned(),
            Source::File(path) => format!("file {}", path.display()),
            Source::Etcd { endpoints, key } => format!("etcd key {key} at {}", endpoints.join(",")),
        }
    }

    /// Reads the topology now.
    pub async fn load(&self, client: &reqwest::Client) -> Result<Topology> {
        match self {
            Source::Config(t) => Ok(t.clone()),
            Source::File(path) => {
                // A small file, read on the blocking pool.
                let owned = path.clone();
                tokio::task::spawn_blocking(move || read_file(&owned))
                    .await
                    .map_err(|e| topology_error(e.to_string()))?
            }
            Source::Etcd { endpoints, key } => {
                let Some((text, _)) = etcd_get(client, endpoints, key).await? else {
                    return Err(topology_error(format!(
                        "etcd has no key {key}: publish a topology with `trident-ctl publish`"
                    )));
                };
                parse(&text, true).map_err(|e| topology_error(format!("etcd key {key}: {e}")))
            }
        }
    }
}

/// The topology in a JSON (by extension) or TOML file.
pub fn read_file(path: &std::path::Path) -> Result<Topology> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        topology_error(format!(
            "cannot read the topology file {}: {e}",
            path.display()
        ))
    })?;
    parse(&text, path.extension().is_some_and(|e| e == "json"))
        .map_err(|e| topology_error(format!("{}: {e}", path.display())))
}

/// A topology from JSON (`json`) or TOML text.
pub fn parse(text: &str, json: bool) -> std::result::Result<Topology, String> {
    if json {
        serde_json::from_str(text).map_err(|e| e.to_string())
    } else {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// POSTs `body` to `path` on the first endpoint that answers.
async fn etcd_call(
    client: &reqwest::Client,
    endpoints: &[String],
    path: &str,
    body: &Value,
) -> Result<Value> {
    let mut failures = Vec::new();
    for endpoint in endpoints {
        let url = format!("{}/{path}", endpoint.trim_end_matches('/'));
        match client.post(&url).json(body).send().await {
            Ok(resp) if resp.status().is_success() => {
                return resp.json().await.map_err(|e| {
                    topology_error(format!(
                        "etcd at {endpoint} answered something else than JSON: {e}"
                    ))
                });
            }
            Ok(resp) => failures.push(format!("{endpoint}: {}", resp.status())),
            Err(e) => failures.push(format!("{endpoint}: {e}")),
        }
    }
    Err(topology_error(format!(
        "no etcd endpoint answered ({}); set [etcd] endpoints",
        if failures.is_empty() {
            "none configured".to_owned()
        } else {
            failures.join("; ")
        }
    )))
}

/// The value of `key` and its modification revision, if it exists.
pub async fn etcd_get(
    client: &reqwest::Client,
    endpoints: &[String],
    key: &str,
) -> Result<Option<(String, i64)>> {
    let v = etcd_call(
        client,
        endpoints,
        "v3/kv/range",
        &json!({ "key": b64(key) }),
    )
    .await?;
    let Some(kv) = v["kvs"].get(0) else {
        return Ok(None);
    };
    let value = kv["value"].as_str().unwrap_or_default();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value)
        .map_err(|e| topology_error(format!("etcd key {key} is not base64: {e}")))?;
    let revision = kv["mod_revision"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    Ok(Some((
        String::from_utf8_lossy(&bytes).into_owned(),
        revision,
    )))
}

/// Sets `key` to `value` if it was last modified at `revision` (`None`: if
/// it does not exist): whether it was set.
pub async fn etcd_put_if(
    client: &reqwest::Client,
    endpoints: &[String],
    key: &str,
    value: &str,
    revision: Option<i64>,
) -> Result<bool> {
    let compare = match revision {
        Some(r) => {
            json!({ "key": b64(key), "result": "EQUAL", "target": "MOD", "mod_revision": r.to_string() })
        }
        None => {
            json!({ "key": b64(key), "result": "EQUAL", "target": "CREATE", "create_revision": "0" })
        }
    };
    let body = json!({
        "compare": [compare],
        "success": [{ "request_put": { "key": b64(key), "value": b64(value) } }],
    });
    let v = etcd_call(client, endpoints, "v3/kv/txn", &body).await?;
    Ok(v["succeeded"].as_bool().unwrap_or(false))
}

/// Where an instance following an etcd topology key reports the version
/// it uses: `<key>/instances/<instance>`, so that `trident-ctl` can wait
/// until every live instance follows a new version.
pub fn instance_key(key: &str, instance: &str) -> String {
    format!("{key}/instances/{instance}")
}

/// A name for this process among the instances that follow a key:
/// `service-pid-random`, unique across machines.
pub fn instance_name(service: &str) -> String {
    format!("{service}-{}-{:08x}", std::process::id(), rand_u32())
}

fn rand_u32() -> u32 {
    // Seconds and nanoseconds of now mixed with the pid: enough to keep two
    // processes apart, not a secret.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now.subsec_nanos() ^ (now.as_secs() as u32).rotate_left(13) ^ std::process::id().rotate_left(7)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// Sets `key` to `value`.
pub async fn etcd_put(
    client: &reqwest::Client,
    endpoints: &[String],
    key: &str,
    value: &str,
) -> Result<()> {
    etcd_call(
        client,
        endpoints,
        "v3/kv/put",
        &json!({ "key": b64(key), "value": b64(value) }),
    )
    .await
    .map(|_| ())
}

/// Every value under `prefix`: (key, value).
pub async fn etcd_list(
    client: &reqwest::Client,
    endpoints: &[String],
    prefix: &str,
) -> Result<Vec<(String, String)>> {
    // The range [prefix, prefix with its last byte + 1).
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last = last.saturating_add(1);
    }
    let engine = base64::engine::general_purpose::STANDARD;
    let v = etcd_call(
        client,
        endpoints,
        "v3/kv/range",
        &json!({ "key": b64(prefix), "range_end": engine.encode(&end) }),
    )
    .await?;
    let decode = |s: &Value| {
        engine
            .decode(s.as_str().unwrap_or_default())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    Ok(v["kvs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|kv| (decode(&kv["key"]), decode(&kv["value"])))
        .collect())
}

/// What an instance reports: the version it uses, and when it said so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Following {
    /// The version in use.
    pub version: u64,
    /// When reported, ms since the epoch.
    pub at_ms: i64,
}

/// The instances following etcd key `key` that reported within `fresh`,
/// by name.
pub async fn followers(
    client: &reqwest::Client,
    endpoints: &[String],
    key: &str,
    fresh: Duration,
) -> Result<Vec<(String, Following)>> {
    let prefix = instance_key(key, "");
    let oldest = now_ms() - i64::try_from(fresh.as_millis()).unwrap_or(i64::MAX);
    Ok(etcd_list(client, endpoints, &prefix)
        .await?
        .into_iter()
        .filter_map(|(k, v)| {
            let v: Value = serde_json::from_str(&v).ok()?;
            let f = Following {
                version: v["version"].as_u64()?,
                at_ms: v["at_ms"].as_i64()?,
            };
            (f.at_ms >= oldest).then(|| (k.trim_start_matches(&prefix).to_owned(), f))
        })
        .collect())
}

/// Polls `source` every `every` and calls `apply` with each topology whose
/// version is higher than `version` (the one in use); runs until dropped.
/// Following an etcd key, it also reports the version in use under
/// [`instance_key`] as `instance` on every poll.
pub async fn follow(
    source: Source,
    client: reqwest::Client,
    every: Duration,
    mut version: u64,
    instance: String,
    mut apply: impl FnMut(Topology) -> std::result::Result<(), String>,
) {
    let mut failing = false;
    loop {
        if let Source::Etcd { endpoints, key } = &source {
            let status = json!({ "version": version, "at_ms": now_ms() }).to_string();
            if let Err(e) =
                etcd_put(&client, endpoints, &instance_key(key, &instance), &status).await
            {
                tracing::debug!(error = %e, "cannot report the topology version in use");
            }
        }
        tokio::time::sleep(every).await;
        match source.load(&client).await {
            Ok(t) if t.version > version => {
                let v = t.version;
                match apply(t) {
                    Ok(()) => {
                        tracing::info!(version = v, source = %source.describe(), "topology version in use");
                        version = v;
                    }
                    Err(e) => {
                        tracing::error!(version = v, error = %e, "topology version refused; keeping the one in use")
                    }
                }
                failing = false;
            }
            Ok(_) => failing = false,
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot read the topology; keeping the one in use");
                }
                failing = true;
            }
        }
    }
}

/// A service's hold on its topology source: what [`tracked`] loaded, ready
/// to follow it.
#[derive(Debug)]
pub struct Tracker {
    source: Source,
    client: reqwest::Client,
    every: Duration,
    version: u64,
    health: Health,
}

/// Loads the topology `config` names, and reports it on `health` as the
/// `topology` component.
pub async fn tracked(config: &Config, health: &Health) -> Result<(Topology, Tracker)> {
    let source = Source::of(config);
    let client = reqwest::Client::builder()
        .timeout(config.influx.timeout)
        .build()
        .map_err(|e| topology_error(format!("cannot build the HTTP client: {e}")))?;
    let topology = source.load(&client).await?;
    health.set(
        "topology",
        Status::Up,
        format!("version {} from {}", topology.version, source.describe()),
    );
    let tracker = Tracker {
        every: config.influx.topology_poll,
        version: topology.version,
        source,
        client,
        health: health.clone(),
    };
    Ok((topology, tracker))
}

impl Tracker {
    /// For a file or etcd source, follows it until `shutdown`: `apply`
    /// gets every higher version's placement, and `/health` shows the
    /// version in use. A fixed source has nothing to follow.
    pub fn follow(
        self,
        service: &str,
        shutdown: &Shutdown,
        mut apply: impl FnMut(trident_cluster::Placement) -> std::result::Result<(), String>
        + Send
        + 'static,
    ) {
        if !self.source.is_live() {
            return;
        }
        let Tracker {
            source,
            client,
            every,
            version,
            health,
        } = self;
        let (stop, instance, described) = (
            shutdown.triggered(),
            instance_name(service),
            source.describe(),
        );
        tokio::spawn(async move {
            let run = follow(source, client, every, version, instance, move |t| {
                let v = t.version;
                apply(t.validate().map_err(|e| e.to_string())?)?;
                health.set(
                    "topology",
                    Status::Up,
                    format!("version {v} from {described}"),
                );
                Ok(())
            });
            tokio::select! {
                () = run => {}
                () = stop => {}
            }
        });
    }
}
