//! The write side of the InfluxDB cluster: every line goes to the nodes the
//! ring gives its shard key (under the strategy of its database and
//! measurement), one gzip'd request per node, all nodes at once.
//!
//! Acknowledgement is synchronous: a write succeeds only when every owner
//! of every line has stored it, so a 2xx never stands for a point held only
//! in memory. A node that is down makes the write fail (503, the client
//! retries; replays are idempotent because timestamps are fixed by then).
//! Hinted handoff — spooling for a down node and answering 2xx — is the
//! next step of issue #4.

use std::collections::HashSet;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use trident_cluster::Placement;

use super::Routed;
use crate::http::request::WriteTarget;

/// Why the cluster did not take a write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The database does not exist and may not be created.
    #[error("database not found: \"{0}\"")]
    DatabaseNotFound(String),
    /// A node refused the points for a reason the client must fix (e.g. a
    /// field type conflict); InfluxDB's own error text.
    #[error("{0}")]
    Refused(String),
    /// A node could not be reached or failed; the client should retry.
    #[error("InfluxDB node {node} is unavailable: {reason}")]
    Unavailable {
        /// The node's URL.
        node: String,
        /// What happened.
        reason: String,
    },
}

/// Writes lines to the nodes that own them.
#[derive(Debug, Clone)]
pub struct ClusterSink {
    placement: Arc<Placement>,
    client: reqwest::Client,
    create_databases: bool,
    gzip: bool,
    /// (node index, database) pairs known to exist.
    known: Arc<Mutex<HashSet<(usize, String)>>>,
}

impl ClusterSink {
    /// A sink over `placement`; `timeout` bounds each request to a node.
    pub fn new(
        placement: Placement,
        timeout: Duration,
        create_databases: bool,
        gzip: bool,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            placement: Arc::new(placement),
            client: reqwest::Client::builder().timeout(timeout).build()?,
            create_databases,
            gzip,
            known: Arc::default(),
        })
    }

    /// The placement in use.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Stores the routed lines on their owners.
    pub async fn write(&self, target: &WriteTarget, routed: &Routed) -> Result<(), SinkError> {
        let topology = self.placement.topology();
        let mut bodies: Vec<Vec<u8>> = vec![Vec::new(); topology.nodes.len()];
        for i in 0..routed.len() {
            let owners = self
                .placement
                .ring()
                .owners(routed.hash(i), topology.replication);
            for &node in owners.as_slice() {
                bodies[usize::from(node)].extend_from_slice(routed.text(i));
            }
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (index, body) in bodies.into_iter().enumerate() {
            if body.is_empty() {
                continue;
            }
            let (sink, target) = (self.clone(), target.clone());
            tasks.spawn(async move {
                // Databases are made where they are written, so a node that
                // is down stops only the writes it owns.
                sink.ensure_database(index, &target.db).await?;
                let url = &sink.placement.topology().nodes[index].url;
                send(&sink.client, url, &target, body, sink.gzip).await
            });
        }
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            let result = joined.unwrap_or_else(|e| {
                Err(SinkError::Unavailable {
                    node: "?".into(),
                    reason: e.to_string(),
                })
            });
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn ensure_database(&self, index: usize, db: &str) -> Result<(), SinkError> {
        let key = (index, db.to_owned());
        if self
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&key)
        {
            return Ok(());
        }
        let url = &self.placement.topology().nodes[index].url;
        if self.create_databases {
            let statement = format!("CREATE DATABASE \"{}\"", db.replace('"', "\\\""));
            query(&self.client, url, &statement).await?;
        } else {
            let listed = query(&self.client, url, "SHOW DATABASES").await?;
            let exists = listed["results"][0]["series"][0]["values"]
                .as_array()
                .is_some_and(|rows| rows.iter().any(|r| r[0].as_str() == Some(db)));
            if !exists {
                return Err(SinkError::DatabaseNotFound(db.to_owned()));
            }
        }
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key);
        Ok(())
    }
}

async fn query(
    client: &reqwest::Client,
    url: &str,
    q: &str,
) -> Result<serde_json::Value, SinkError> {
    let unavailable = |reason: String| SinkError::Unavailable {
        node: url.to_owned(),
        reason,
    };
    let resp = client
        .post(format!("{url}/query"))
        .query(&[("q", q)])
        .send()
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| unavailable(e.to_string()))?;
    if !status.is_success() {
        return Err(unavailable(format!("{status}: {text}")));
    }
    serde_json::from_str(&text).map_err(|e| unavailable(format!("not JSON ({e})")))
}

async fn send(
    client: &reqwest::Client,
    url: &str,
    target: &WriteTarget,
    body: Vec<u8>,
    gzip: bool,
) -> Result<(), SinkError> {
    let unavailable = |reason: String| SinkError::Unavailable {
        node: url.to_owned(),
        reason,
    };
    let body = if gzip {
        let mut gz = flate2::write::GzEncoder::new(
            Vec::with_capacity(body.len() / 4),
            flate2::Compression::fast(),
        );
        gz.write_all(&body)
            .map_err(|e| unavailable(e.to_string()))?;
        gz.finish().map_err(|e| unavailable(e.to_string()))?
    } else {
        body
    };
    let mut query = vec![("db", target.db.as_str()), ("precision", "n")];
    if let Some(rp) = &target.rp {
        query.push(("rp", rp));
    }
    let mut request = client.post(format!("{url}/write")).query(&query);
    if gzip {
        request = request.header("content-encoding", "gzip");
    }
    let resp = request
        .body(body)
        .send()
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let text = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or(text);
    if status.is_client_error() {
        Err(SinkError::Refused(message))
    } else {
        Err(unavailable(format!("{status}: {message}")))
    }
}
