//! The cluster's topology: its nodes, the replication factor and which
//! distribution strategy each database or measurement uses. One versioned
//! value that every gateway and downsampler must agree on.

use serde::{Deserialize, Serialize};
use trident_line_protocol::Strategy;

use crate::Error;
use crate::ring::{MAX_REPLICATION, Ring};

/// One InfluxDB node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Stable id: placement is computed from it, so renaming a node moves
    /// its data. Keep it when a node's address changes.
    pub id: String,
    /// HTTP base URL, e.g. `http://10.0.0.1:8086`.
    pub url: String,
}

/// Which strategy points of a database (and optionally a measurement) use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrategyRule {
    /// Database the rule applies to; absent for every database.
    #[serde(default)]
    pub database: Option<String>,
    /// Measurement the rule applies to; absent for every measurement.
    #[serde(default)]
    pub measurement: Option<String>,
    /// `series`, `measurement` or `measurement+tags(a,b)`.
    pub strategy: String,
}

/// The whole topology, as stored in a file or in etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Increases with every change; instances switch to a higher version.
    #[serde(default)]
    pub version: u64,
    /// The nodes.
    pub nodes: Vec<Node>,
    /// Copies of every point (1 = no replication).
    #[serde(default = "one")]
    pub replication: usize,
    /// Strategy where no rule matches.
    #[serde(default = "series")]
    pub default_strategy: String,
    /// First match wins; a rule with database and measurement is more
    /// specific only by coming first.
    #[serde(default)]
    pub rules: Vec<StrategyRule>,
}

fn one() -> usize {
    1
}

fn series() -> String {
    "series".to_owned()
}

/// A validated topology, ready to place points.
#[derive(Debug, Clone)]
pub struct Placement {
    topology: Topology,
    ring: Ring,
    default_strategy: Strategy,
    rules: Vec<(Option<String>, Option<String>, Strategy)>,
}

impl Topology {
    /// Checks the topology and builds its ring.
    pub fn validate(self) -> Result<Placement, Error> {
        if self.nodes.is_empty() {
            return Err(Error::NoNodes);
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if node.id.trim().is_empty() {
                return Err(Error::EmptyNodeId(i));
            }
            if self.nodes[..i].iter().any(|n| n.id == node.id) {
                return Err(Error::DuplicateNode(node.id.clone()));
            }
            let host = node
                .url
                .strip_prefix("http://")
                .or_else(|| node.url.strip_prefix("https://"));
            if host.is_none_or(str::is_empty) {
                return Err(Error::BadUrl {
                    id: node.id.clone(),
                    url: node.url.clone(),
                });
            }
        }
        let max = self.nodes.len().min(MAX_REPLICATION);
        if self.replication == 0 || self.replication > max {
            return Err(Error::BadReplication {
                replication: self.replication,
                nodes: self.nodes.len(),
                max,
            });
        }
        let default_strategy = self
            .default_strategy
            .parse()
            .map_err(|source| Error::BadStrategy { rule: 0, source })?;
        let rules = self
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let strategy = r.strategy.parse().map_err(|source| Error::BadStrategy {
                    rule: i + 1,
                    source,
                })?;
                Ok((r.database.clone(), r.measurement.clone(), strategy))
            })
            .collect::<Result<_, Error>>()?;
        let ring = Ring::new(self.nodes.iter().map(|n| n.id.as_str()));
        Ok(Placement {
            topology: self,
            ring,
            default_strategy,
            rules,
        })
    }
}

impl Placement {
    /// The topology this placement was built from.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The ring over the topology's nodes.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// The strategy for points of `measurement` in `database`.
    pub fn strategy_for(&self, database: &str, measurement: &str) -> &Strategy {
        self.rules
            .iter()
            .find(|(db, m, _)| {
                db.as_deref().is_none_or(|d| d == database)
                    && m.as_deref().is_none_or(|x| x == measurement)
            })
            .map_or(&self.default_strategy, |(_, _, s)| s)
    }

    /// The nodes that own a point whose shard hash is `hash`, best first.
    pub fn owners(&self, hash: u64) -> impl Iterator<Item = &Node> {
        let owners = self.ring.owners(hash, self.topology.replication);
        let nodes = &self.topology.nodes;
        (0..owners.as_slice().len()).filter_map(move |i| {
            owners
                .as_slice()
                .get(i)
                .and_then(|&n| nodes.get(usize::from(n)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology(json: &str) -> Topology {
        serde_json::from_str(json).expect("topology JSON")
    }

    const THREE: &str = r#"{
        "version": 7,
        "nodes": [
            {"id": "a", "url": "http://10.0.0.1:8086"},
            {"id": "b", "url": "http://10.0.0.2:8086"},
            {"id": "c", "url": "http://10.0.0.3:8086"}
        ],
        "replication": 2,
        "default_strategy": "series",
        "rules": [
            {"database": "biz", "measurement": "http", "strategy": "measurement+tags(app)"},
            {"database": "biz", "strategy": "measurement"}
        ]
    }"#;

    #[test]
    fn rules_pick_strategies_first_match_wins() {
        let p = topology(THREE).validate().unwrap();
        assert_eq!(p.strategy_for("telegraf", "cpu"), &Strategy::Series);
        assert_eq!(p.strategy_for("biz", "orders"), &Strategy::Measurement);
        assert_eq!(
            p.strategy_for("biz", "http"),
            &Strategy::MeasurementTags(vec!["app".into()])
        );
    }

    #[test]
    fn a_point_is_placed_on_replication_many_nodes() {
        let p = topology(THREE).validate().unwrap();
        let line = trident_line_protocol::parse_lines(b"http,app=shop,host=x latency=3")
            .next()
            .unwrap()
            .unwrap();
        let mut scratch = Vec::new();
        let same_app = trident_line_protocol::parse_lines(b"http,app=shop,host=y latency=9")
            .next()
            .unwrap()
            .unwrap();
        let strategy = p.strategy_for("biz", "http");
        let a: Vec<&str> = p
            .owners(line.shard_hash(strategy, &mut scratch))
            .map(|n| n.id.as_str())
            .collect();
        let b: Vec<&str> = p
            .owners(same_app.shard_hash(strategy, &mut scratch))
            .map(|n| n.id.as_str())
            .collect();
        assert_eq!(a.len(), 2);
        assert_ne!(a[0], a[1]);
        assert_eq!(a, b, "one app, one place, whatever the host");
    }

    #[test]
    fn bad_topologies_say_what_to_fix() {
        let cases = [
            (r#"{"nodes": []}"#, "no nodes"),
            (
                r#"{"nodes": [{"id": "a", "url": "http://x"}, {"id": "a", "url": "http://y"}]}"#,
                "`a` appears twice",
            ),
            (r#"{"nodes": [{"id": " ", "url": "http://x"}]}"#, "empty id"),
            (
                r#"{"nodes": [{"id": "a", "url": "x:8086"}]}"#,
                "not an http://",
            ),
            (
                r#"{"nodes": [{"id": "a", "url": "http://x"}], "replication": 2}"#,
                "use 1 to 1",
            ),
            (
                r#"{"nodes": [{"id": "a", "url": "http://x"}], "replication": 0}"#,
                "replication factor 0",
            ),
            (
                r#"{"nodes": [{"id": "a", "url": "http://x"}], "rules": [{"strategy": "tags"}]}"#,
                "strategy rule 1",
            ),
        ];
        for (json, words) in cases {
            let err = topology(json).validate().unwrap_err().to_string();
            assert!(err.contains(words), "{json}: {err}");
        }
        let unknown = serde_json::from_str::<Topology>(r#"{"nodes": [], "replicas": 2}"#);
        assert!(unknown.unwrap_err().to_string().contains("replicas"));
    }
}
