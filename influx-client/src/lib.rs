//! # trident-influx-client
//!
//! How Trident talks to InfluxDB 1.x nodes, shared by the services that
//! write into the cluster (the gateway's cluster sink, the downsampler's
//! rollups):
//!
//! ```text
//! line text ──ClusterWriter::write──► parse, shard key, ring owners
//!           ──per-node body──► send (POST /write, optional gzip) on every owner
//! statements ──query──► POST /query on one node
//! ```
//!
//! [`Databases`] remembers which databases (and retention policies) exist
//! on which node, so each is created once, where it is written.

use std::collections::HashSet;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use trident_cluster::Placement;

/// Why a node did not take a write or a statement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The database does not exist and may not be created.
    #[error("database not found: \"{0}\"")]
    DatabaseNotFound(String),
    /// The node refused for a reason the sender must fix (e.g. a field
    /// type conflict); InfluxDB's own error text.
    #[error("{0}")]
    Refused(String),
    /// The node could not be reached or failed; a retry may succeed.
    #[error("InfluxDB node {node} is unavailable: {reason}")]
    Unavailable {
        /// The node's URL.
        node: String,
        /// What happened.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

impl Error {
    /// Whether the node refused the request as too large (413): a smaller
    /// one may pass, the same one never will.
    pub fn is_too_large(&self) -> bool {
        matches!(self, Error::Unavailable { reason, .. } if reason.starts_with("413"))
    }
}

/// An error and every cause under it: reqwest's own message ("error
/// sending request for url …") does not say whether the connection was
/// refused, reset or timed out.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// POSTs `params` to `url`'s `/query`: the status and the body.
async fn post_query(
    client: &reqwest::Client,
    url: &str,
    params: &[(&str, &str)],
) -> Result<(reqwest::StatusCode, String), Error> {
    let unavailable = |reason: String| Error::Unavailable {
        node: url.to_owned(),
        reason,
    };
    let resp = client
        .post(format!("{url}/query"))
        .form(params)
        .send()
        .await
        .map_err(|e| unavailable(with_causes(&e)))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| unavailable(with_causes(&e)))?;
    Ok((status, text))
}

/// Runs statement `q` on the node at `url`; its JSON answer. Any failure
/// to answer, a 4xx included, is [`Error::Unavailable`]; an error in the
/// answer is [`Error::Refused`].
pub async fn query(
    client: &reqwest::Client,
    url: &str,
    q: &str,
) -> Result<serde_json::Value, Error> {
    let (status, text) = post_query(client, url, &[("q", q)]).await?;
    let unavailable = |reason: String| Error::Unavailable {
        node: url.to_owned(),
        reason,
    };
    if !status.is_success() {
        return Err(unavailable(format!("{status}: {text}")));
    }
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| unavailable(format!("not JSON ({e})")))?;
    if let Some(error) = json["results"][0]["error"].as_str() {
        return Err(Error::Refused(error.to_owned()));
    }
    Ok(json)
}

/// Runs one statement on the node at `url` with the query parameters
/// `params` (`q`, `db`, `epoch` …); the statement's result object
/// (`{"statement_id":0,"series":[…]}`), an `error` in it included. A query
/// the node refuses outright (a 4xx, e.g. a parse error) is
/// [`Error::Refused`] with the node's words.
pub async fn statement(
    client: &reqwest::Client,
    url: &str,
    params: &[(&str, &str)],
) -> Result<serde_json::Value, Error> {
    let (status, text) = post_query(client, url, params).await?;
    let unavailable = |reason: String| Error::Unavailable {
        node: url.to_owned(),
        reason,
    };
    let json: Option<serde_json::Value> = serde_json::from_str(&text).ok();
    if status.is_client_error() {
        let message = json
            .as_ref()
            .and_then(|j| j["error"].as_str())
            .map_or(text.clone(), str::to_owned);
        return Err(Error::Refused(message));
    }
    if !status.is_success() {
        return Err(unavailable(format!("{status}: {text}")));
    }
    let mut json = json.ok_or_else(|| unavailable("the answer is not JSON".into()))?;
    Ok(json["results"][0].take())
}

/// The body of a write: line protocol in one or more pieces, each ending
/// in a newline, sent as one request without being joined first. A
/// batched request's pieces are the writes it batches; copying them into
/// one buffer was 3 % of the gateway's CPU (docs/benchmarks.md).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payload {
    pieces: Vec<Bytes>,
    len: usize,
}

impl Payload {
    /// Appends `piece` (nothing if it is empty).
    pub fn push(&mut self, piece: impl Into<Bytes>) {
        let piece = piece.into();
        if !piece.is_empty() {
            self.len += piece.len();
            self.pieces.push(piece);
        }
    }

    /// Bytes in all pieces.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The pieces, in order.
    pub fn pieces(&self) -> &[Bytes] {
        &self.pieces
    }

    /// The pieces joined (a single piece without a copy).
    pub fn to_bytes(&self) -> Bytes {
        match self.pieces.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => Bytes::from(many.concat()),
        }
    }

    /// The request body: its length is known, so it goes with a
    /// `Content-Length` (InfluxDB sizes its buffer from it), not chunked.
    fn into_body(self) -> reqwest::Body {
        if self.pieces.len() <= 1 {
            return reqwest::Body::from(self.to_bytes());
        }
        reqwest::Body::wrap(PayloadBody {
            remaining: self.len as u64,
            pieces: self.pieces.into_iter(),
        })
    }
}

impl From<Bytes> for Payload {
    fn from(piece: Bytes) -> Self {
        let mut payload = Payload::default();
        payload.push(piece);
        payload
    }
}

impl From<Vec<u8>> for Payload {
    fn from(piece: Vec<u8>) -> Self {
        Bytes::from(piece).into()
    }
}

impl FromIterator<Bytes> for Payload {
    fn from_iter<I: IntoIterator<Item = Bytes>>(pieces: I) -> Self {
        let mut payload = Payload::default();
        for piece in pieces {
            payload.push(piece);
        }
        payload
    }
}

/// A [`Payload`] on its way out: one data frame per piece.
struct PayloadBody {
    pieces: std::vec::IntoIter<Bytes>,
    remaining: u64,
}

impl http_body::Body for PayloadBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let piece = this.pieces.next().map(|piece| {
            this.remaining = this.remaining.saturating_sub(piece.len() as u64);
            Ok(http_body::Frame::data(piece))
        });
        std::task::Poll::Ready(piece)
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

/// Writes `body` (line protocol, nanosecond timestamps) to `db`/`rp` on the
/// node at `url`, gzip'd if `gzip`.
pub async fn send(
    client: &reqwest::Client,
    url: &str,
    db: &str,
    rp: Option<&str>,
    body: Payload,
    gzip: bool,
) -> Result<(), Error> {
    let unavailable = |reason: String| Error::Unavailable {
        node: url.to_owned(),
        reason,
    };
    let body = if gzip {
        let mut gz = flate2::write::GzEncoder::new(
            Vec::with_capacity(body.len() / 4),
            flate2::Compression::fast(),
        );
        for piece in body.pieces() {
            gz.write_all(piece)
                .map_err(|e| unavailable(e.to_string()))?;
        }
        Payload::from(gz.finish().map_err(|e| unavailable(e.to_string()))?)
    } else {
        body
    };
    let mut params = vec![("db", db), ("precision", "n")];
    if let Some(rp) = rp {
        params.push(("rp", rp));
    }
    let mut request = client.post(format!("{url}/write")).query(&params);
    if gzip {
        request = request.header("content-encoding", "gzip");
    }
    let resp = request
        .body(body.into_body())
        .send()
        .await
        .map_err(|e| unavailable(with_causes(&e)))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let text = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or(text);
    Err(write_error(status, message, db, unavailable))
}

/// What a node's refusal of a write means to the sender. Only a 400 (a
/// line the node will never take, e.g. a field type conflict) is final; a
/// missing database can be created; any other refusal (401/403 for a node
/// with auth, 413 for its body limit, ...) is the node's set-up, which an
/// operator can fix: it counts as unavailable, so that what was spooled
/// for the node stays spooled.
fn write_error(
    status: reqwest::StatusCode,
    message: String,
    db: &str,
    unavailable: impl Fn(String) -> Error,
) -> Error {
    match status.as_u16() {
        400 => Error::Refused(message),
        404 if message.starts_with("database not found") => Error::DatabaseNotFound(db.to_owned()),
        _ => unavailable(format!("{status}: {message}")),
    }
}

/// An identifier quoted for InfluxQL.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Which databases and retention policies are known to exist on which
/// node (by URL, so that a topology change cannot confuse two nodes);
/// cheap to clone, shared by clones.
#[derive(Debug, Clone, Default)]
pub struct Databases {
    known: Arc<Mutex<HashSet<(String, String)>>>,
}

impl Databases {
    fn is_known(&self, key: &(String, String)) -> bool {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(key)
    }

    /// Forgets what is known, after databases or retention policies were
    /// dropped: the next write checks (or creates) them again.
    pub fn forget(&self) {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Forgets that `db` exists on the node at `url` (the node said it
    /// does not): the next write there creates or looks it up again.
    pub fn forget_database(&self, url: &str, db: &str) {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(url.to_owned(), db.to_owned()));
    }

    fn remember(&self, key: (String, String)) {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key);
    }

    /// Makes sure `db` exists on the node at `url`: created when
    /// `create`, else looked up (and [`Error::DatabaseNotFound`] if absent).
    pub async fn ensure(
        &self,
        client: &reqwest::Client,
        url: &str,
        db: &str,
        create: bool,
    ) -> Result<(), Error> {
        let key = (url.to_owned(), db.to_owned());
        if self.is_known(&key) {
            return Ok(());
        }
        if create {
            query(client, url, &format!("CREATE DATABASE {}", quote_ident(db))).await?;
        } else {
            let listed = query(client, url, "SHOW DATABASES").await?;
            let exists = listed["results"][0]["series"][0]["values"]
                .as_array()
                .is_some_and(|rows| rows.iter().any(|r| r[0].as_str() == Some(db)));
            if !exists {
                return Err(Error::DatabaseNotFound(db.to_owned()));
            }
        }
        self.remember(key);
        Ok(())
    }

    /// Makes sure retention policy `rp` (infinite, not the default) exists
    /// in `db` on the node at `url`, creating both if needed.
    pub async fn ensure_rp(
        &self,
        client: &reqwest::Client,
        url: &str,
        db: &str,
        rp: &str,
    ) -> Result<(), Error> {
        self.ensure(client, url, db, true).await?;
        let key = (url.to_owned(), format!("{db}\0{rp}"));
        if self.is_known(&key) {
            return Ok(());
        }
        let statement = format!(
            "CREATE RETENTION POLICY {} ON {} DURATION INF REPLICATION 1",
            quote_ident(rp),
            quote_ident(db)
        );
        match query(client, url, &statement).await {
            Ok(_) => {}
            // Created earlier (by us or an operator) with other settings.
            Err(Error::Refused(message)) if message.contains("already exists") => {}
            Err(e) => return Err(e),
        }
        self.remember(key);
        Ok(())
    }
}

/// Writes line text into the cluster: each line to the replication
/// factor's worth of nodes the ring gives its shard key, one request per
/// node, all nodes at once; a write succeeds when every owner stored it.
#[derive(Debug, Clone)]
pub struct ClusterWriter {
    /// The placement in use; replaced whole when the topology changes.
    placement: Arc<std::sync::RwLock<Arc<Placement>>>,
    client: reqwest::Client,
    gzip: bool,
    databases: Databases,
}

impl ClusterWriter {
    /// A writer over `placement`; `timeout` bounds each request.
    pub fn new(placement: Placement, timeout: Duration, gzip: bool) -> Result<Self, Error> {
        Ok(Self {
            placement: Arc::new(std::sync::RwLock::new(Arc::new(placement))),
            client: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .map_err(|e| Error::Client(e.to_string()))?,
            gzip,
            databases: Databases::default(),
        })
    }

    /// The placement in use now.
    pub fn placement(&self) -> Arc<Placement> {
        self.placement
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Switches to `placement` for the writes that start from now on.
    pub fn set_placement(&self, placement: Placement) {
        *self.placement.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(placement);
    }

    /// Writes `text` (valid line protocol, nanosecond timestamps) to
    /// `db`/`rp`, creating the database and retention policy on the nodes
    /// that need them. Lines that do not parse are refused.
    pub async fn write(&self, db: &str, rp: &str, text: &[u8]) -> Result<(), Error> {
        // One placement for the whole write.
        let placement = self.placement();
        let topology = placement.topology();
        let mut bodies: Vec<Vec<u8>> = vec![Vec::new(); topology.nodes.len()];
        let mut key = Vec::new();
        for line in trident_line_protocol::parse_lines(text) {
            let line = line.map_err(|e| Error::Refused(e.to_string()))?;
            let strategy = placement.strategy_for(db, &line.measurement().as_str());
            key.clear();
            let hash = line.shard_hash(strategy, &mut key);
            for &node in placement.write_owners(hash).as_slice() {
                let body = &mut bodies[usize::from(node)];
                body.extend_from_slice(line.text().as_bytes());
                body.push(b'\n');
            }
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (index, body) in bodies.into_iter().enumerate() {
            if body.is_empty() {
                continue;
            }
            let (writer, db, rp) = (self.clone(), db.to_owned(), rp.to_owned());
            let url = topology.nodes[index].url.clone();
            tasks.spawn(async move {
                let url = &url;
                writer
                    .databases
                    .ensure_rp(&writer.client, url, &db, &rp)
                    .await?;
                send(
                    &writer.client,
                    url,
                    &db,
                    Some(&rp),
                    Payload::from(body),
                    writer.gzip,
                )
                .await
            });
        }
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            let result = joined.unwrap_or_else(|e| {
                Err(Error::Unavailable {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped(status: u16, message: &str) -> Error {
        let status = reqwest::StatusCode::from_u16(status).expect("a status");
        write_error(status, message.to_owned(), "db", |reason| {
            Error::Unavailable {
                node: "n".into(),
                reason,
            }
        })
    }

    /// Only a 400 is final; a lost database can be made again; every
    /// other refusal is the node's set-up, and what was spooled for it
    /// must stay spooled.
    #[test]
    fn only_a_bad_request_is_a_final_refusal() {
        assert_eq!(
            mapped(400, "partial write: field type conflict"),
            Error::Refused("partial write: field type conflict".into())
        );
        assert_eq!(
            mapped(404, "database not found: \"db\""),
            Error::DatabaseNotFound("db".into())
        );
        for (status, message) in [
            (401, "authorization failed"),
            (403, "forbidden"),
            (404, "page not found"),
            (413, "Request Entity Too Large"),
        ] {
            assert!(
                matches!(mapped(status, message), Error::Unavailable { .. }),
                "{status} {message}"
            );
            // Only a 413 says that a smaller request may pass.
            assert_eq!(mapped(status, message).is_too_large(), status == 413);
        }
    }

    #[test]
    fn a_payload_joins_its_pieces_in_order_and_skips_empty_ones() {
        let payload: Payload = ["a v=1 1\n", "", "b v=2 2\n"]
            .into_iter()
            .map(Bytes::from)
            .collect();
        assert_eq!(payload.pieces().len(), 2);
        assert_eq!(payload.len(), 16);
        assert_eq!(payload.to_bytes(), "a v=1 1\nb v=2 2\n");
        let one = Bytes::from_static(b"c v=3 3\n");
        assert_eq!(
            Payload::from(one.clone()).to_bytes().as_ptr(),
            one.as_ptr(),
            "one piece is not copied"
        );
        assert!(Payload::default().is_empty());
    }

    /// Sent in pieces, a payload is still one request with its length
    /// given up front (InfluxDB sizes its buffer from `Content-Length`),
    /// not a chunked one. A listener stands in for the node here; the
    /// end-to-end tests store such requests on real nodes.
    #[tokio::test]
    async fn a_payload_in_pieces_goes_with_its_length_not_chunked() {
        use std::io::{Read, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        let node = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("a connection");
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = conn.read(&mut buf).expect("a read");
                seen.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&seen).to_string();
                if let Some(head_end) = text.find("\r\n\r\n")
                    && seen.len() >= head_end + 4 + 3 * 1000
                {
                    conn.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                        .expect("an answer");
                    return text;
                }
                assert!(n > 0, "the request ended early: {text}");
            }
        });
        let pieces = ["a", "b", "c"].map(|m| format!("{m} v=1 1\n").repeat(125));
        let payload: Payload = pieces.iter().cloned().map(Bytes::from).collect();
        assert_eq!(payload.pieces().len(), 3);
        send(&reqwest::Client::new(), &url, "db", None, payload, false)
            .await
            .expect("a 204");
        let request = node.join().expect("the listener");
        let lower = request.to_ascii_lowercase();
        assert!(lower.contains("content-length: 3000\r\n"), "{request}");
        assert!(!lower.contains("transfer-encoding"), "{request}");
        assert!(request.ends_with(&pieces.concat()), "pieces in order");
    }
}
