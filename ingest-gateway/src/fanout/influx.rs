//! The write side of the InfluxDB cluster: every line goes to the nodes the
//! ring gives its shard key (under the strategy of its database and
//! measurement), one gzip'd request per node, all nodes at once.
//!
//! Per node and database at most `influx.node_requests` requests are in
//! flight; the parts of writes that arrive meanwhile wait and go together
//! in the next request (group commit); while a request is in flight the
//! next one also lingers `influx.batch_linger` for company. Many small
//! writes become few node requests without delaying a write when the node
//! is idle.
//!
//! Hinted handoff: a node that cannot be reached (or fails) gets its part
//! of the write in its own on-disk spool instead, and the write is answered
//! 2xx once every owner has either stored it or had it spooled on disk. A
//! node's replayer sends the spool back in order when the node answers
//! again, one request at a time, with [`Backoff`] between failures. While a
//! node's spool is not empty, new writes for it are spooled too, so they
//! reach it in the order they were accepted. A full spool is a 503.
//!
//! The client's `consistency` asks for more: `one`, `quorum` or `all`
//! replicas of every line stored on a node *now* (spooled copies do not
//! count); short of that the answer is 503, and the spooled copies are
//! still delivered later. Without it the level is `any`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use trident_cluster::{Owners, Placement};
use trident_influx_client::{Databases, Error as NodeError, Payload, send};
use trident_service::health::{Health, Status};
use trident_service::shutdown::Shutdown;

use super::{Backoff, GroupLimits, Routed, group_commit};
use crate::http::request::{Consistency, WriteTarget};
use crate::spool::{self, Spool, SpoolError};

/// Why the cluster did not take a write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// A node refused or failed, and (for a failure) its spool could not
    /// take the points either: the node client's own error.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// Fewer replicas stored a line than the client's `consistency` asks.
    #[error(
        "write consistency {level:?} not met: {stored} of {required} replicas stored; the rest are queued (hinted handoff) and will be delivered"
    )]
    Consistency {
        /// The level asked for.
        level: Consistency,
        /// Replicas required.
        required: usize,
        /// Replicas stored by the line that had fewest.
        stored: usize,
    },
}

/// A node that could not take points, or `node` when it is not known.
fn unavailable(node: &str, reason: impl ToString) -> SinkError {
    SinkError::Node(NodeError::Unavailable {
        node: node.to_owned(),
        reason: reason.to_string(),
    })
}

/// What became of one node's part of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    Delivered,
    Spooled,
}

/// A node as the sink sees it: where it is and its hinted-handoff spool.
/// Slots outlive topology versions: a node that stays keeps its spool.
#[derive(Debug, Clone)]
pub struct NodeSlot {
    /// The node's URL.
    pub url: String,
    /// Its spool.
    pub spool: Spool,
}

/// One topology version: its placement and, aligned with its nodes, their
/// slots. A write routes and stores under one view from start to end.
#[derive(Debug)]
pub struct View {
    /// The placement.
    pub placement: Arc<Placement>,
    /// Slots by node index of the placement's topology.
    pub nodes: Vec<NodeSlot>,
}

/// What replayers of nodes that appear later report to.
#[derive(Debug, Clone)]
struct ReplayContext {
    shutdown: Shutdown,
    health: Health,
    max_backoff: Duration,
}

/// Writes lines to the nodes that own them.
#[derive(Debug, Clone)]
pub struct ClusterSink {
    view: Arc<RwLock<Arc<View>>>,
    client: reqwest::Client,
    create_databases: bool,
    gzip: bool,
    /// Databases known to exist, per node.
    known: Databases,
    /// Databases this gateway has had created on every node.
    announced: Arc<Mutex<std::collections::HashSet<String>>>,
    options: Arc<ClusterOptions>,
    /// Every slot opened, by URL.
    slots: Arc<Mutex<HashMap<String, NodeSlot>>>,
    /// Set by [`ClusterSink::start_replay`].
    replaying: Arc<Mutex<Option<ReplayContext>>>,
    /// The batcher of each node URL, database and retention policy.
    batchers: Arc<Mutex<HashMap<BatchKey, mpsc::UnboundedSender<Part>>>>,
    /// Node parts handed to batchers whose outcome is not known yet.
    queued: Arc<std::sync::atomic::AtomicUsize>,
}

/// Takes `.1` off the counter `.0` when dropped: a write's parts leave
/// the queue depth however the write ends (answered, or its client gone
/// and the request future dropped).
struct Settle<'a>(&'a std::sync::atomic::AtomicUsize, usize);

impl Drop for Settle<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::Relaxed);
    }
}

/// Node URL, database, retention policy.
type BatchKey = (String, String, Option<String>);

/// A node batcher with nothing to do for this long leaves.
const BATCHER_IDLE: Duration = Duration::from_secs(60);

/// How often every node's `/ping` is checked for `/health`; an answer
/// must come within half of it.
const HEALTH_CHECK_EVERY: Duration = Duration::from_secs(5);

/// One write's part for one node, and who waits for its outcome.
#[derive(Debug)]
struct Part {
    body: Bytes,
    /// Lines in `body`.
    lines: usize,
    done: oneshot::Sender<Result<Stored, SinkError>>,
}

/// How the cluster sink is set up.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Bound on each request to a node.
    pub timeout: Duration,
    /// Create databases on first use.
    pub create_databases: bool,
    /// Compress requests to the nodes.
    pub gzip: bool,
    /// Directory of the spools.
    pub spool_dir: std::path::PathBuf,
    /// Bound of each node's spool.
    pub spool_max_bytes: u64,
    /// Requests in flight at once per node and database.
    pub node_requests: usize,
    /// How long a node's next request waits for more writes.
    pub batch_linger: Duration,
    /// Bytes at most in one request to a node.
    pub batch_max_bytes: usize,
    /// Lines at most in one request to a node.
    pub batch_max_lines: usize,
}

/// The spool file of the node at `url` in `dir`: named by the URL, so that
/// reordering the node list never hands one node's points to another.
pub fn spool_path(dir: &Path, url: &str) -> std::path::PathBuf {
    let name: String = url
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("influx-{name}.spool"))
}

impl ClusterSink {
    /// A sink over `placement`, with the spools of every node opened (what
    /// a previous run left in them is kept and replayed).
    pub fn new(placement: Placement, options: &ClusterOptions) -> Result<Self, crate::Error> {
        let sink = Self {
            view: Arc::new(RwLock::new(Arc::new(View {
                placement: Arc::new(placement.clone()),
                nodes: Vec::new(),
            }))),
            client: reqwest::Client::builder()
                .timeout(options.timeout)
                .build()?,
            create_databases: options.create_databases,
            gzip: options.gzip,
            known: Databases::default(),
            announced: Arc::default(),
            options: Arc::new(options.clone()),
            slots: Arc::default(),
            replaying: Arc::default(),
            batchers: Arc::default(),
            queued: Arc::default(),
        };
        sink.set_placement(placement)?;
        Ok(sink)
    }

    /// The view in use now.
    pub fn view(&self) -> Arc<View> {
        self.view.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The placement in use now.
    pub fn placement(&self) -> Arc<Placement> {
        self.view().placement.clone()
    }

    /// Switches to `placement`: writes that start from now on use it. A
    /// node new to the sink gets its spool opened and its replayer started.
    pub fn set_placement(&self, placement: Placement) -> Result<(), crate::Error> {
        let mut opened = Vec::new();
        let nodes = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            let mut nodes = Vec::with_capacity(placement.topology().nodes.len());
            for node in &placement.topology().nodes {
                let slot = match slots.get(&node.url) {
                    Some(slot) => slot.clone(),
                    None => {
                        let spool = Spool::open(
                            &format!("influx:{}", node.url),
                            &spool_path(&self.options.spool_dir, &node.url),
                            self.options.spool_max_bytes,
                        )?;
                        let slot = NodeSlot {
                            url: node.url.clone(),
                            spool,
                        };
                        slots.insert(node.url.clone(), slot.clone());
                        opened.push(slot.clone());
                        slot
                    }
                };
                nodes.push(slot);
            }
            nodes
        };
        *self.view.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(View {
            placement: Arc::new(placement),
            nodes,
        });
        let context = self
            .replaying
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(context) = context {
            for slot in opened {
                self.spawn_replayer(&context, slot);
            }
        }
        Ok(())
    }

    /// The HTTP client for the nodes.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Node parts of writes on their way (queued in a batcher or being
    /// sent), over every node: the cluster sink's queue depth.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Forgets which databases exist where, after a statement that may
    /// have dropped some ran on every node: the next write to a database
    /// checks (or creates) it again, on every node.
    pub fn forget_databases(&self) {
        self.known.forget();
        self.announced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Every spool opened so far (nodes of this and earlier versions).
    pub fn spools(&self) -> Vec<Spool> {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|s| s.spool.clone())
            .collect()
    }

    /// Starts one replayer per node, and later one per node that appears;
    /// they stop when `shutdown` fires (what is left stays on disk for the
    /// next start). A node that leaves the topology keeps its replayer
    /// until its spool is delivered.
    pub fn start_replay(&self, shutdown: &Shutdown, health: &Health, max_backoff: Duration) {
        let context = ReplayContext {
            shutdown: shutdown.clone(),
            health: health.clone(),
            max_backoff,
        };
        let slots: Vec<NodeSlot> = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        *self.replaying.lock().unwrap_or_else(|e| e.into_inner()) = Some(context.clone());
        for slot in slots {
            self.spawn_replayer(&context, slot);
        }
    }

    /// Checks every node of the current view with `/ping` every
    /// [`HEALTH_CHECK_EVERY`] until `shutdown`: `ping:<url>` is up, or
    /// degraded with the reason, and `sink:influx` says how many nodes
    /// answer. Degraded, not down: the gateway still takes writes for a
    /// dead node (its spool does), and `/health` answers 503 only when a
    /// component is down — a load balancer must not drop every gateway
    /// because one node died. (A node's delivery state, spooling or not,
    /// is `node:<url>`; a full spool is what turns writes away.)
    pub fn start_health_checks(&self, shutdown: &Shutdown, health: &Health) {
        let (sink, health, stop) = (self.clone(), health.clone(), shutdown.triggered());
        tokio::spawn(async move {
            tokio::select! {
                () = sink.check_nodes(health) => {}
                () = stop => {}
            }
        });
    }

    async fn check_nodes(self, health: Health) {
        let mut tick = tokio::time::interval(HEALTH_CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let view = self.view();
            let pings = view.nodes.iter().map(|slot| {
                let request = self
                    .client
                    .get(format!("{}/ping", slot.url))
                    .timeout(HEALTH_CHECK_EVERY / 2)
                    .send();
                async move { (slot.url.as_str(), request.await) }
            });
            let answers = futures_util::future::join_all(pings).await;
            let mut up = 0;
            for (url, answer) in &answers {
                let component = format!("ping:{url}");
                match answer {
                    Ok(resp) if resp.status().is_success() => {
                        up += 1;
                        health.set(component, Status::Up, "");
                    }
                    Ok(resp) => health.set(
                        component,
                        Status::Degraded,
                        format!("down: /ping answered {}", resp.status()),
                    ),
                    Err(e) => health.set(
                        component,
                        Status::Degraded,
                        format!(
                            "down: /ping failed: {}",
                            trident_influx_client::with_causes(e)
                        ),
                    ),
                }
            }
            let total = answers.len();
            let (status, detail) = if up == total {
                (Status::Up, String::new())
            } else {
                (
                    Status::Degraded,
                    format!(
                        "{up} of {total} nodes answer /ping; writes for the others are spooled"
                    ),
                )
            };
            health.set("sink:influx", status, detail);
        }
    }

    fn spawn_replayer(&self, context: &ReplayContext, slot: NodeSlot) {
        let sink = self.clone();
        let (stop, health) = (context.shutdown.triggered(), context.health.clone());
        let max_backoff = context.max_backoff;
        tokio::spawn(async move {
            tokio::select! {
                () = sink.replay(slot, health, max_backoff) => {}
                () = stop => {}
            }
        });
    }

    /// Stores the routed lines on their owners under `view` (the one they
    /// were routed with), or in the spools of the owners that are down.
    pub async fn write(
        &self,
        view: &View,
        target: &WriteTarget,
        routed: &Routed<'_>,
    ) -> Result<(), SinkError> {
        let topology = view.placement.topology();
        // During a move: the owners on both sides. Each node's body is
        // sized once from its lines.
        let owners: Vec<Owners> = (0..routed.len())
            .map(|i| view.placement.write_owners(routed.hash(i)))
            .collect();
        let mut sizes = vec![0usize; topology.nodes.len()];
        let mut lines = vec![0usize; topology.nodes.len()];
        for (i, owners) in owners.iter().enumerate() {
            for &node in owners.as_slice() {
                sizes[usize::from(node)] += routed.size(i);
                lines[usize::from(node)] += 1;
            }
        }
        let mut bodies: Vec<Vec<u8>> = sizes.into_iter().map(Vec::with_capacity).collect();
        for (i, owners) in owners.iter().enumerate() {
            for &node in owners.as_slice() {
                routed.append_line(i, &mut bodies[usize::from(node)]);
            }
        }
        // Every node's part goes to its batcher at once; the batchers
        // store them concurrently while this write waits for each outcome.
        let pending: Vec<_> = bodies
            .into_iter()
            .enumerate()
            .filter(|(_, body)| !body.is_empty())
            .map(|(index, body)| {
                let slot = &view.nodes[index];
                (
                    index,
                    slot,
                    self.submit(slot, target, Bytes::from(body), lines[index]),
                )
            })
            .collect();
        let mut outcome = vec![None; topology.nodes.len()];
        let mut first_error = None;
        let parts = pending.len();
        self.queued.fetch_add(parts, Ordering::Relaxed);
        let _done = Settle(&self.queued, parts);
        for (index, slot, stored) in pending {
            match stored.await {
                Ok(Ok(stored)) => outcome[index] = Some(stored),
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error.get_or_insert(unavailable(&slot.url, "the batcher stopped"));
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        Self::check_consistency(&view.placement, target.consistency, &owners, &outcome)
    }

    /// Whether every line (given by its owners) has as many replicas
    /// stored now as `level` asks.
    fn check_consistency(
        placement: &Placement,
        level: Consistency,
        owners: &[Owners],
        outcome: &[Option<Stored>],
    ) -> Result<(), SinkError> {
        let rf = placement.topology().replication;
        let required = match level {
            Consistency::Any => return Ok(()),
            Consistency::One => 1,
            Consistency::Quorum => rf / 2 + 1,
            Consistency::All => rf,
        };
        if !outcome.contains(&Some(Stored::Spooled)) {
            return Ok(());
        }
        let mut fewest = usize::MAX;
        for owners in owners {
            let stored = owners
                .as_slice()
                .iter()
                .filter(|&&n| outcome[usize::from(n)] == Some(Stored::Delivered))
                .count();
            fewest = fewest.min(stored);
        }
        if fewest < required {
            return Err(SinkError::Consistency {
                level,
                required,
                stored: fewest,
            });
        }
        Ok(())
    }

    /// Hands one node's part of a write to the batcher of its node and
    /// database, which stores it at once when nothing is in flight to the
    /// node, otherwise together with the parts that arrive within
    /// `influx.batch_linger` or until a request slot frees; the receiver
    /// gets the outcome.
    fn submit(
        &self,
        slot: &NodeSlot,
        target: &WriteTarget,
        body: Bytes,
        lines: usize,
    ) -> oneshot::Receiver<Result<Stored, SinkError>> {
        let key = (slot.url.clone(), target.db.clone(), target.rp.clone());
        let (done, outcome) = oneshot::channel();
        let mut part = Part { body, lines, done };
        // A batcher that just left (idle) is replaced by a new one.
        for _ in 0..3 {
            let sender = {
                let mut batchers = self.batchers.lock().unwrap_or_else(|e| e.into_inner());
                match batchers.get(&key) {
                    Some(sender) => sender.clone(),
                    None => {
                        let sender = self.spawn_batcher(key.clone(), slot.clone(), target);
                        batchers.insert(key.clone(), sender.clone());
                        sender
                    }
                }
            };
            match sender.send(part) {
                Ok(()) => return outcome,
                Err(mpsc::error::SendError(back)) => {
                    part = back;
                    self.forget_batcher(&key, &sender);
                }
            }
        }
        let _ = part
            .done
            .send(Err(unavailable(&slot.url, "the batcher stopped")));
        outcome
    }

    /// Removes the batcher of `key` if it is still `sender`'s.
    fn forget_batcher(&self, key: &BatchKey, sender: &mpsc::UnboundedSender<Part>) {
        let mut batchers = self.batchers.lock().unwrap_or_else(|e| e.into_inner());
        if batchers.get(key).is_some_and(|s| s.same_channel(sender)) {
            batchers.remove(key);
        }
    }

    /// Starts the batcher of `slot`'s node for `target`'s database.
    fn spawn_batcher(
        &self,
        key: BatchKey,
        slot: NodeSlot,
        target: &WriteTarget,
    ) -> mpsc::UnboundedSender<Part> {
        let (tx, rx) = mpsc::unbounded_channel();
        let me = tx.clone();
        tokio::spawn(self.clone().batch(key, me, slot, target.clone(), rx));
        tx
    }

    /// A batcher: takes parts in arrival order and sends them in requests
    /// of up to `batch_max_bytes`, at most `node_requests` at once. Memory
    /// stays bounded by the writes in flight: each part's request waits
    /// for its outcome (and the gateway bounds its requests).
    ///
    /// A batcher idle for [`BATCHER_IDLE`] leaves (databases and nodes
    /// come and go; clients name the databases): it takes itself out of
    /// the map, stops taking parts and stores those already sent.
    async fn batch(
        self,
        key: BatchKey,
        me: mpsc::UnboundedSender<Part>,
        slot: NodeSlot,
        target: WriteTarget,
        mut rx: mpsc::UnboundedReceiver<Part>,
    ) {
        let limits = GroupLimits {
            slots: self.options.node_requests,
            max_bytes: self.options.batch_max_bytes,
            max_lines: self.options.batch_max_lines,
            linger: self.options.batch_linger,
            idle: Some(BATCHER_IDLE),
        };
        let flush = |parts: Vec<Part>| {
            let (sink, slot, target) = (self.clone(), slot.clone(), target.clone());
            async move { sink.store_parts(&slot, &target, parts).await }
        };
        // `me` keeps the channel open, so this returns only when idle.
        group_commit(&mut rx, limits, |p: &Part| (p.body.len(), p.lines), flush).await;
        self.forget_batcher(&key, &me);
        rx.close();
        let mut rest = Vec::new();
        while let Ok(part) = rx.try_recv() {
            rest.push(part);
        }
        if !rest.is_empty() {
            self.store_parts(&slot, &target, rest).await;
        }
    }

    /// Stores `parts` as one request and tells each its outcome. A refusal
    /// of the joined request (a field type conflict, say) names no write:
    /// each part is then stored alone, for its own exact answer (what the
    /// node took of the joined request it takes again: same series and
    /// time overwrite themselves).
    async fn store_parts(&self, slot: &NodeSlot, target: &WriteTarget, parts: Vec<Part>) {
        // A write whose client went away was not acknowledged: its part is
        // not sent (the client sends it again), so a node that hangs while
        // clients give up does not grow this queue without bound.
        let parts: Vec<Part> = parts.into_iter().filter(|p| !p.done.is_closed()).collect();
        if parts.is_empty() {
            return;
        }
        if parts.len() == 1 {
            for part in parts {
                let _ = part
                    .done
                    .send(self.store(slot, target, part.body.into(), false).await);
            }
            return;
        }
        // One request of the parts as they are: not copied into one buffer.
        let joined: Payload = parts.iter().map(|p| p.body.clone()).collect();
        metrics::counter!("trident_gateway_node_batched_writes_total")
            .increment(parts.len() as u64);
        match self.store(slot, target, joined, true).await {
            Ok(stored) => {
                for part in parts {
                    let _ = part.done.send(Ok(stored));
                }
            }
            // Also a 413: the node's body limit is below the joined
            // request, and each part alone may pass.
            Err(SinkError::Node(e))
                if matches!(e, NodeError::Refused(_) | NodeError::DatabaseNotFound(_))
                    || e.is_too_large() =>
            {
                for part in parts {
                    let _ = part
                        .done
                        .send(self.store(slot, target, part.body.into(), false).await);
                }
            }
            Err(e) => {
                for part in parts {
                    let _ = part.done.send(Err(e.clone()));
                }
            }
        }
    }

    /// One node's part of a write (several, `joined`): delivered, or
    /// spooled if the node is down or still has a spool to replay. A joined
    /// request the node finds too large (413) is not spooled but returned,
    /// for the caller to store its parts one by one: spooled whole, it
    /// would stay too large for that node on every replay.
    async fn store(
        &self,
        slot: &NodeSlot,
        target: &WriteTarget,
        body: Payload,
        joined: bool,
    ) -> Result<Stored, SinkError> {
        let (spool, url) = (&slot.spool, &slot.url);
        if spool.is_empty() {
            match self
                .deliver(url, &target.db, target.rp.as_deref(), body.clone())
                .await
            {
                Ok(()) => return Ok(Stored::Delivered),
                Err(SinkError::Node(e)) if joined && e.is_too_large() => {
                    return Err(SinkError::Node(e));
                }
                Err(SinkError::Node(NodeError::Unavailable { reason, .. })) => {
                    tracing::warn!(node = %url, %reason, "node unavailable; spooling its points");
                }
                Err(e) => return Err(e),
            }
        }
        let rp = target.rp.as_deref().unwrap_or("");
        let entry = spool::encode(&[target.db.as_bytes(), rp.as_bytes(), &body.to_bytes()]);
        spool.append(entry).await.map_err(|e| unavailable(url, e))?;
        metrics::counter!("trident_gateway_spooled_total", "spool" => spool.name().to_owned())
            .increment(1);
        Ok(Stored::Spooled)
    }

    /// Sends `body` to the node at `url`, creating the database there
    /// first if needed.
    async fn deliver(
        &self,
        url: &str,
        db: &str,
        rp: Option<&str>,
        body: Payload,
    ) -> Result<(), SinkError> {
        // Databases are made where they are written, so a node that is
        // down stops only the writes it owns; and on every other node in
        // the background, the first time this gateway writes to them.
        self.create_everywhere(db);
        self.known
            .ensure(&self.client, url, db, self.create_databases)
            .await?;
        match send(&self.client, url, db, rp, body.clone(), self.gzip).await {
            // The node lost the database since it was seen there (it came
            // back empty, or an operator dropped it): made again, or looked
            // up again and reported missing.
            Err(NodeError::DatabaseNotFound(_)) => {
                tracing::warn!(node = %url, db, "the node no longer has the database");
                self.known.forget_database(url, db);
                self.known
                    .ensure(&self.client, url, db, self.create_databases)
                    .await?;
                Ok(send(&self.client, url, db, rp, body, self.gzip).await?)
            }
            other => Ok(other?),
        }
    }

    /// Without `create_databases`, whether `db` exists: a write to a
    /// database no node has is refused (404) before any sink takes it, so
    /// that none of it reaches the topics either. Asked of the nodes in
    /// turn (an answer seen once is remembered); a node that cannot be
    /// asked decides nothing, and a database that only some owners lack
    /// is still found missing when they are written to.
    pub async fn check_database(&self, view: &View, db: &str) -> Result<(), SinkError> {
        if self.create_databases {
            return Ok(());
        }
        let mut missing = false;
        for slot in &view.nodes {
            match self.known.ensure(&self.client, &slot.url, db, false).await {
                Ok(()) => return Ok(()),
                Err(NodeError::DatabaseNotFound(_)) => missing = true,
                Err(_) => {}
            }
        }
        if missing {
            return Err(SinkError::Node(NodeError::DatabaseNotFound(db.to_owned())));
        }
        Ok(())
    }

    /// Creates `db` on every node of the current view in the background,
    /// the first time it is written to (and again after
    /// [`ClusterSink::forget_databases`]): a node that owns none of its
    /// lines yet still answers queries on it (a fan-out query to a node
    /// without the database fails), and a node added later gets it with its
    /// first line. A node that is down is retried with backoff until it
    /// has it.
    fn create_everywhere(&self, db: &str) {
        if !self.create_databases {
            return;
        }
        {
            let mut announced = self.announced.lock().unwrap_or_else(|e| e.into_inner());
            if announced.contains(db) {
                return;
            }
            announced.insert(db.to_owned());
        }
        for slot in &self.view().nodes {
            let (sink, url, db) = (self.clone(), slot.url.clone(), db.to_owned());
            tokio::spawn(async move {
                let mut backoff = Backoff::new(Duration::from_secs(30));
                while let Err(e) = sink.known.ensure(&sink.client, &url, &db, true).await {
                    // A node that left the topology is no longer waited for.
                    if !sink.view().nodes.iter().any(|n| n.url == url) {
                        return;
                    }
                    let wait = backoff.next_wait();
                    tracing::debug!(node = %url, db, error = %e, ?wait, "cannot create the database yet");
                    tokio::time::sleep(wait).await;
                }
            });
        }
    }

    /// Sends a node's spool back to it, head first, until stopped.
    async fn replay(&self, slot: NodeSlot, health: Health, max_backoff: Duration) {
        let (spool, url) = (&slot.spool, slot.url.clone());
        let component = format!("node:{url}");
        spool.report_to(&health, &component, "unreachable or recovering");
        let mut backoff = Backoff::new(max_backoff);
        loop {
            if spool.is_empty() {
                spool.appended().await;
                continue;
            }
            let batch = match spool.peek(256, 4 << 20).await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(node = %url, error = %e, "cannot read the spool; replay stopped");
                    health.set(&component, Status::Down, e.to_string());
                    return;
                }
            };
            match self.replay_batch(&url, spool, &batch).await {
                Ok(()) => backoff.reset(),
                Err(e) => {
                    let wait = backoff.next_wait();
                    tracing::debug!(node = %url, error = %e, ?wait, "replay failed; waiting");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Delivers `batch` (the spool's head): runs of entries for the same
    /// database and retention policy go as one request. Stops at the first
    /// failure that a retry may cure.
    async fn replay_batch(
        &self,
        url: &str,
        spool: &Spool,
        batch: &[Vec<u8>],
    ) -> Result<(), SinkError> {
        let name = spool.name().to_owned();
        // After a joined request was too large for the node (its body limit
        // is below `influx.batch_max_bytes`), the rest of the batch goes one
        // entry at a time: each was a request the gateway once took.
        let mut single = false;
        let mut i = 0;
        while i < batch.len() {
            let Some(fields) = spool::decode(&batch[i]).filter(|f| f.len() == 3) else {
                tracing::error!(spool = %name, "an unreadable spool entry was dropped");
                metrics::counter!("trident_gateway_spool_dropped_total", "spool" => name.clone(), "reason" => "unreadable").increment(1);
                remove(spool, &batch[i..=i]).await?;
                i += 1;
                continue;
            };
            let (db, rp) = (fields[0], fields[1]);
            let mut body = fields[2].to_vec();
            let mut end = i + 1;
            while !single && end < batch.len() && body.len() < self.options.batch_max_bytes {
                match spool::decode(&batch[end]) {
                    Some(f) if f.len() == 3 && f[0] == db && f[1] == rp => {
                        body.extend_from_slice(f[2]);
                        end += 1;
                    }
                    _ => break,
                }
            }
            let db = String::from_utf8_lossy(db).into_owned();
            let rp = String::from_utf8_lossy(rp).into_owned();
            let rp = (!rp.is_empty()).then_some(rp.as_str());
            match self.deliver(url, &db, rp, body.into()).await {
                Ok(()) => {
                    metrics::counter!("trident_gateway_replayed_total", "spool" => name.clone())
                        .increment((end - i) as u64);
                }
                Err(SinkError::Node(e)) if e.is_too_large() && end - i > 1 => {
                    tracing::info!(spool = %name, node = url, "joined replay too large for the node; replaying one write at a time");
                    single = true;
                    continue;
                }
                Err(e @ SinkError::Node(NodeError::Unavailable { .. })) => return Err(e),
                Err(SinkError::Node(NodeError::DatabaseNotFound(_))) => {
                    // Only without `create_databases`: the database was
                    // dropped since the write was taken, and its points with it.
                    tracing::warn!(spool = %name, db, "spooled points of a dropped database were dropped");
                    metrics::counter!("trident_gateway_spool_dropped_total", "spool" => name.clone(), "reason" => "database_not_found").increment((end - i) as u64);
                }
                Err(e) => {
                    // InfluxDB stored the lines it could; the rest can never be.
                    tracing::warn!(spool = %name, db, error = %e, "the node refused spooled points");
                    metrics::counter!("trident_gateway_spool_dropped_total", "spool" => name.clone(), "reason" => "refused").increment((end - i) as u64);
                }
            }
            remove(spool, &batch[i..end]).await?;
            i = end;
        }
        Ok(())
    }
}

/// Removes the delivered head `entries` from `spool`.
async fn remove(spool: &Spool, entries: &[Vec<u8>]) -> Result<(), SinkError> {
    let bytes = entries.iter().map(|e| e.len() as u64).sum();
    spool
        .remove(entries.len(), bytes)
        .await
        .map_err(|e: SpoolError| unavailable(spool.name(), e))
}
