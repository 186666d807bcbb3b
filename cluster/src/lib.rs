//! # trident-cluster
//!
//! Where a point lives in the InfluxDB cluster. A point's shard key (from
//! `trident-line-protocol`, under the strategy its database and measurement
//! use) is hashed once; the ring turns that hash into the replication
//! factor's worth of distinct nodes. Pure logic: no I/O, no runtime.
//!
//! ```text
//! line ──Topology::strategy_for(db, measurement)──► Strategy
//!      ──Line::shard_hash(strategy)──► u64 ──Ring::owners(hash, rf)──► [node, node, …]
//! ```
//!
//! # Layout
//! - [`ring`]: rendezvous (highest-random-weight) hashing over node ids.
//! - [`topology`]: nodes, replication factor and strategy rules, validated.

pub mod ring;
pub mod topology;

pub use ring::{MAX_REPLICATION, Owners, Ring};
pub use topology::{Move, Node, Placement, StrategyRule, Topology};

/// Everything that can be wrong with a topology.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No nodes.
    #[error("the topology has no nodes: list at least one InfluxDB node")]
    NoNodes,
    /// Two nodes with one id.
    #[error("node id `{0}` appears twice: every node needs its own id")]
    DuplicateNode(String),
    /// An empty node id.
    #[error("node {0} has an empty id")]
    EmptyNodeId(usize),
    /// A node URL that is not http(s).
    #[error("node `{id}` has url `{url}`, which is not an http:// or https:// URL")]
    BadUrl {
        /// The node.
        id: String,
        /// The URL.
        url: String,
    },
    /// Replication outside 1..=nodes (and the ring's maximum).
    #[error("replication factor {replication} is impossible with {nodes} node(s): use 1 to {max}")]
    BadReplication {
        /// Requested.
        replication: usize,
        /// Nodes in the topology.
        nodes: usize,
        /// The largest possible value.
        max: usize,
    },
    /// A move whose sides do not fit the nodes.
    #[error("invalid move: {0}")]
    BadMove(String),
    /// A strategy that does not parse.
    #[error("strategy rule {rule}: {source}")]
    BadStrategy {
        /// Index of the rule (0 = the default strategy).
        rule: usize,
        /// Why.
        source: trident_line_protocol::Error,
    },
}
