//! Rendezvous (highest-random-weight) hashing.
//!
//! Every node has a seed (XXH3-64 of its id). A key's score on a node is a
//! 64-bit mix of the key's hash and the node's seed; the key's owners are
//! the `rf` nodes with the highest scores, best first. Why this and not a
//! ring of virtual nodes or jump hash:
//!
//! - **Minimal movement, exactly.** Adding a node only moves keys *to* it;
//!   removing one only moves its keys away. No key ever moves between two
//!   nodes that stayed, which keeps a rebalance to the data that must move.
//! - **Replicas for free.** The 2nd, 3rd … highest scores are distinct
//!   nodes, with no walking around a ring to skip duplicates.
//! - Any node can leave (jump hash only allows removing the last bucket).
//!
//! The cost is one mix per node per key (a handful of multiplications);
//! for clusters of tens of nodes that is cheaper than hashing the key.
//! Scores depend only on node ids, never on their order or count, so every
//! instance that agrees on the ids agrees on placement.

/// The largest replication factor the ring hands out.
pub const MAX_REPLICATION: usize = 8;

/// The nodes of a cluster, by index in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    seeds: Vec<u64>,
}

/// A key's owners: node indices, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owners {
    nodes: [u16; MAX_REPLICATION],
    len: u8,
}

impl Owners {
    /// Node indices, best first.
    pub fn as_slice(&self) -> &[u16] {
        &self.nodes[..usize::from(self.len)]
    }

    /// No owners.
    pub fn empty() -> Self {
        Self {
            nodes: [0; MAX_REPLICATION],
            len: 0,
        }
    }

    /// Adds node `index` unless it is there already or the list is full.
    pub fn push(&mut self, index: u16) {
        let len = usize::from(self.len);
        if len < MAX_REPLICATION && !self.as_slice().contains(&index) {
            self.nodes[len] = index;
            self.len += 1;
        }
    }

    /// Whether node `index` is among the owners.
    pub fn contains(&self, index: usize) -> bool {
        self.as_slice().iter().any(|&n| usize::from(n) == index)
    }
}

impl Ring {
    /// A ring over nodes with these ids (indices follow the order given).
    pub fn new<'a>(ids: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            seeds: ids
                .into_iter()
                .map(|id| xxhash_rust::xxh3::xxh3_64(id.as_bytes()))
                .collect(),
        }
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.seeds.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.seeds.is_empty()
    }

    /// The `rf` owners of the key whose hash is `key_hash` (at most the
    /// number of nodes and [`MAX_REPLICATION`]), best first.
    pub fn owners(&self, key_hash: u64, rf: usize) -> Owners {
        let rf = rf.min(self.seeds.len()).min(MAX_REPLICATION);
        let mut best: [(u64, u16); MAX_REPLICATION] = [(0, 0); MAX_REPLICATION];
        let mut len = 0usize;
        for (index, &seed) in self.seeds.iter().enumerate() {
            let s = score(key_hash, seed);
            // Insert into the sorted top-rf list (rf is small).
            if len < rf {
                best[len] = (s, index as u16);
                len += 1;
            } else if rf > 0 && s > best[rf - 1].0 {
                best[rf - 1] = (s, index as u16);
            } else {
                continue;
            }
            let mut j = len - 1;
            while j > 0 && best[j].0 > best[j - 1].0 {
                best.swap(j, j - 1);
                j -= 1;
            }
        }
        let mut nodes = [0u16; MAX_REPLICATION];
        for (slot, (_, index)) in nodes.iter_mut().zip(&best[..len]) {
            *slot = *index;
        }
        Owners {
            nodes,
            len: len as u8,
        }
    }
}

/// A key's weight on a node: the SplitMix64 finaliser of the two combined,
/// a well-mixed, specified function (equal inputs, equal outputs, on every
/// machine).
fn score(key_hash: u64, seed: u64) -> u64 {
    let mut z = key_hash ^ seed.rotate_left(32);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("influx-{i}")).collect()
    }

    fn ring(ids: &[String]) -> Ring {
        Ring::new(ids.iter().map(String::as_str))
    }

    fn key(i: u64) -> u64 {
        xxhash_rust::xxh3::xxh3_64(format!("cpu,host=h{i}").as_bytes())
    }

    #[test]
    fn owners_are_distinct_and_as_many_as_asked() {
        let r = ring(&ids(5));
        for i in 0..1000 {
            for rf in 1..=5 {
                let o = r.owners(key(i), rf);
                assert_eq!(o.as_slice().len(), rf);
                let mut seen = o.as_slice().to_vec();
                seen.sort_unstable();
                seen.dedup();
                assert_eq!(seen.len(), rf);
            }
        }
        assert_eq!(
            r.owners(key(0), 9).as_slice().len(),
            5,
            "capped at the node count"
        );
        assert!(Ring::new([]).owners(key(0), 2).as_slice().is_empty());
    }

    #[test]
    fn replicas_extend_the_primary_choice() {
        let r = ring(&ids(6));
        for i in 0..1000 {
            let three = r.owners(key(i), 3);
            let two = r.owners(key(i), 2);
            assert_eq!(&three.as_slice()[..2], two.as_slice());
        }
    }

    #[test]
    fn load_is_balanced() {
        let n = 5;
        let r = ring(&ids(n));
        let mut primary = vec![0usize; n];
        let mut replicas = vec![0usize; n];
        let keys = 100_000;
        for i in 0..keys {
            let o = r.owners(key(i), 2);
            primary[usize::from(o.as_slice()[0])] += 1;
            for &node in o.as_slice() {
                replicas[usize::from(node)] += 1;
            }
        }
        for count in primary {
            let share = count as f64 / keys as f64;
            assert!((share - 0.2).abs() < 0.01, "primary share {share}");
        }
        for count in replicas {
            let share = count as f64 / (2 * keys) as f64;
            assert!((share - 0.2).abs() < 0.01, "replica share {share}");
        }
    }

    #[test]
    fn adding_a_node_only_moves_keys_to_it() {
        let before = ring(&ids(5));
        let after = ring(&ids(6));
        let new = 5;
        let mut moved = 0;
        for i in 0..50_000 {
            let (b, a) = (before.owners(key(i), 2), after.owners(key(i), 2));
            for &node in a.as_slice() {
                let node = usize::from(node);
                assert!(
                    b.contains(node) || node == new,
                    "key {i} moved between old nodes"
                );
            }
            if a != b {
                moved += 1;
            }
        }
        // With rf = 2 a key changes when the new node enters its top two:
        // expected 2/6 of the keys.
        let share = f64::from(moved) / 50_000.0;
        assert!((share - 2.0 / 6.0).abs() < 0.02, "moved {share}");
    }

    #[test]
    fn removing_a_node_only_moves_its_keys() {
        let all = ids(5);
        let before = ring(&all);
        let remaining: Vec<String> = all.iter().filter(|id| *id != "influx-3").cloned().collect();
        let after = ring(&remaining);
        let old_index = |new_index: u16| {
            let id = &remaining[usize::from(new_index)];
            all.iter().position(|x| x == id).expect("id")
        };
        for i in 0..50_000 {
            let b = before.owners(key(i), 2);
            let a = after.owners(key(i), 2);
            let a_old: Vec<usize> = a.as_slice().iter().map(|&n| old_index(n)).collect();
            if !b.contains(2) {
                let b_old: Vec<usize> = b.as_slice().iter().map(|&n| usize::from(n)).collect();
                assert_eq!(a_old, b_old, "key {i} did not live on the removed node");
            }
        }
    }

    #[test]
    fn placement_depends_on_ids_not_their_order() {
        let ids_ = ids(4);
        let forward = ring(&ids_);
        let mut reversed_ids = ids_.clone();
        reversed_ids.reverse();
        let reversed = ring(&reversed_ids);
        for i in 0..1000 {
            let f: Vec<&str> = forward
                .owners(key(i), 2)
                .as_slice()
                .iter()
                .map(|&n| ids_[usize::from(n)].as_str())
                .collect();
            let r: Vec<&str> = reversed
                .owners(key(i), 2)
                .as_slice()
                .iter()
                .map(|&n| reversed_ids[usize::from(n)].as_str())
                .collect();
            assert_eq!(f, r);
        }
    }

    /// Placement is part of the data contract: these must never change.
    #[test]
    fn placement_is_stable() {
        let r = ring(&ids(3));
        let placed: Vec<Vec<u16>> = (0..4)
            .map(|i| r.owners(key(i), 2).as_slice().to_vec())
            .collect();
        assert_eq!(placed, PINNED);
    }

    const PINNED: [[u16; 2]; 4] = [[1, 0], [2, 0], [1, 2], [1, 2]];
}
