//! The cluster's topology: its nodes, the replication factor and which
//! distribution strategy each database or measurement uses. One versioned
//! value that every gateway and downsampler must agree on.

use serde::{Deserialize, Serialize};
use trident_line_protocol::Strategy;

use crate::Error;
use crate::ring::{MAX_REPLICATION, Owners, Ring};

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

/// A move in progress: points are placed by the ring over `from` and are
/// being copied to their owners under the ring over `to`. While it lasts,
/// writes go to the owners under both rings, and reads to the `from`
/// owners, which hold everything until the move ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Move {
    /// Node ids data is placed by now.
    pub from: Vec<String>,
    /// Node ids it moves to.
    pub to: Vec<String>,
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
    /// A move in progress (`trident-ctl add-node`/`remove-node` publish
    /// one while they copy); `nodes` then lists every node of both sides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving: Option<Move>,
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
    /// During a move: the rings of both sides, with the index in `nodes`
    /// of each of their nodes.
    moving: Option<MoveRings>,
}

#[derive(Debug, Clone)]
struct MoveRings {
    from: Ring,
    from_nodes: Vec<u16>,
    to: Ring,
    to_nodes: Vec<u16>,
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
        let moving = match &self.moving {
            None => None,
            Some(m) => Some(self.move_rings(m)?),
        };
        let ring = Ring::new(self.nodes.iter().map(|n| n.id.as_str()));
        Ok(Placement {
            topology: self,
            ring,
            default_strategy,
            rules,
            moving,
        })
    }
}

impl Topology {
    /// The rings of a move; both sides within `nodes`, together all of
    /// them, each big enough for the replication factor.
    fn move_rings(&self, m: &Move) -> Result<MoveRings, Error> {
        let bad = |reason: String| Error::BadMove(reason);
        let index = |ids: &[String]| -> Result<Vec<u16>, Error> {
            ids.iter()
                .map(|id| {
                    self.nodes
                        .iter()
                        .position(|n| &n.id == id)
                        .and_then(|i| u16::try_from(i).ok())
                        .ok_or_else(|| bad(format!("node `{id}` is not in `nodes`")))
                })
                .collect()
        };
        let (from_nodes, to_nodes) = (index(&m.from)?, index(&m.to)?);
        if self.replication > m.from.len().min(m.to.len()) || 2 * self.replication > MAX_REPLICATION
        {
            return Err(bad(format!(
                "replication {} needs that many nodes on each side, and at most {} while moving",
                self.replication,
                MAX_REPLICATION / 2
            )));
        }
        if let Some(n) = self
            .nodes
            .iter()
            .find(|n| !m.from.contains(&n.id) && !m.to.contains(&n.id))
        {
            return Err(bad(format!("node `{}` is on neither side", n.id)));
        }
        Ok(MoveRings {
            from: Ring::new(m.from.iter().map(String::as_str)),
            from_nodes,
            to: Ring::new(m.to.iter().map(String::as_str)),
            to_nodes,
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

    /// The shard hash of the series of `measurement` in `database` with
    /// `tags` as InfluxDB answers them (a tag the series lacks has an empty
    /// value, and is left out): what its points were placed by.
    pub fn series_hash(
        &self,
        database: &str,
        measurement: &str,
        tags: &std::collections::BTreeMap<String, String>,
    ) -> u64 {
        let tags: Vec<(&str, &str)> = tags
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let strategy = self.strategy_for(database, measurement);
        trident_line_protocol::shard_hash(&trident_line_protocol::series_shard_key(
            strategy,
            measurement,
            &tags,
        ))
    }

    /// Node indices (in the topology's `nodes`) a point whose shard hash
    /// is `hash` is written to: its owners, best first, and during a move
    /// its owners on both sides.
    pub fn write_owners(&self, hash: u64) -> Owners {
        let rf = self.topology.replication;
        let Some(m) = &self.moving else {
            return self.ring.owners(hash, rf);
        };
        let mut out = Owners::empty();
        for (ring, nodes) in [(&m.from, &m.from_nodes), (&m.to, &m.to_nodes)] {
            for &i in ring.owners(hash, rf).as_slice() {
                if let Some(&n) = nodes.get(usize::from(i)) {
                    out.push(n);
                }
            }
        }
        out
    }

    /// Node indices that hold every point whose shard hash is `hash`, best
    /// first: its owners, and during a move its owners on the `from` side
    /// (the other side is still being filled).
    pub fn read_owners(&self, hash: u64) -> Owners {
        let rf = self.topology.replication;
        let Some(m) = &self.moving else {
            return self.ring.owners(hash, rf);
        };
        let mut out = Owners::empty();
        for &i in m.from.owners(hash, rf).as_slice() {
            if let Some(&n) = m.from_nodes.get(usize::from(i)) {
                out.push(n);
            }
        }
        out
    }

    /// Node indices a query must ask to see every point: all nodes, and
    /// during a move the old side only (it holds everything; the new side
    /// may hold partial copies).
    pub fn read_nodes(&self) -> Vec<usize> {
        match &self.moving {
            None => (0..self.topology.nodes.len()).collect(),
            Some(m) => m.from_nodes.iter().map(|&i| usize::from(i)).collect(),
        }
    }

    /// The nodes a point whose shard hash is `hash` is written to, best
    /// first (see [`Placement::write_owners`]).
    pub fn owners(&self, hash: u64) -> impl Iterator<Item = &Node> {
        let owners = self.write_owners(hash);
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
    fn during_a_move_writes_reach_both_sides_and_reads_the_old_one() {
        let p = topology(THREE).validate().unwrap();
        let mut moving = topology(THREE);
        moving.nodes.push(Node {
            id: "d".into(),
            url: "http://10.0.0.4:8086".into(),
        });
        moving.moving = Some(Move {
            from: vec!["a".into(), "b".into(), "c".into()],
            to: vec!["a".into(), "b".into(), "c".into(), "d".into()],
        });
        let m = moving.clone().validate().unwrap();
        let mut after = moving.clone();
        after.moving = None;
        let q = after.validate().unwrap();
        let ids = |p: &Placement, o: crate::Owners| -> Vec<String> {
            let mut v: Vec<String> = o
                .as_slice()
                .iter()
                .map(|&i| p.topology().nodes[usize::from(i)].id.clone())
                .collect();
            v.sort();
            v
        };
        let mut moved = 0;
        for hash in (0..2000u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) {
            let (before, now) = (ids(&p, p.write_owners(hash)), ids(&q, q.write_owners(hash)));
            let mut both = before.clone();
            both.extend(now.iter().cloned());
            both.sort();
            both.dedup();
            assert_eq!(ids(&m, m.write_owners(hash)), both);
            assert_eq!(ids(&m, m.read_owners(hash)), before);
            assert!(
                m.read_owners(hash)
                    .as_slice()
                    .iter()
                    .all(|&i| m.read_nodes().contains(&usize::from(i)))
            );
            moved += usize::from(before != now);
        }
        assert!(moved > 0, "a fourth node takes some keys");
        assert_eq!(m.read_nodes(), vec![0, 1, 2], "the old side");
        assert_eq!(q.read_nodes(), vec![0, 1, 2, 3]);

        let mut bad = moving.clone();
        bad.moving = Some(Move {
            from: vec!["a".into(), "x".into()],
            to: vec!["a".into()],
        });
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("`x` is not in `nodes`")
        );
        let mut bad = moving;
        bad.moving = Some(Move {
            from: vec!["a".into(), "b".into()],
            to: vec!["a".into(), "b".into(), "c".into()],
        });
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("`d` is on neither side")
        );
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
