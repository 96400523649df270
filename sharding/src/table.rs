//! Shard to replica set: consistent hashing over the members of a configuration.
//!
//! Each member owns `vnodes` points on a `hashring` ring, placed by hashing the string
//! `"{name}/{i}"` (names only: a member's points do not depend on who else is in the
//! cluster, so a join only takes shards, and a departure only gives its own away). A shard's
//! point is the hash of `"shard/{n}"`; its replicas are the first `replicas` *distinct*
//! members met walking clockwise from there, the first being the primary (the ring's own
//! `get`).
//!
//! The crate's `get_with_replicas` is not used: with virtual nodes it returns the same member
//! several times, it has an off-by-one at `replicas == len`, and it clones the whole ring on
//! every call. The walk over the ring's sorted points gives the rest of the set. The table is
//! computed once per configuration. Balance and movement are measured in docs/SHARDING.md,
//! with the alternatives that were tried.

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use hashring::{DefaultHashBuilder, HashRing};
use serde::{Deserialize, Serialize};

use crate::hash::ShardId;

/// The shape of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSpec {
    pub shards: u32,
    pub vnodes: u32,
    pub replicas: usize,
}

impl Default for TableSpec {
    fn default() -> Self {
        Self {
            shards: crate::DEFAULT_SHARDS,
            vnodes: crate::DEFAULT_VNODES,
            replicas: crate::DEFAULT_REPLICAS,
        }
    }
}

/// Every shard's replica set for one set of members. Computed once per configuration and
/// then only read: clones share the data, and the fingerprint is computed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardTable {
    spec: TableSpec,
    /// Sorted, deduplicated.
    members: Arc<[String]>,
    /// `min(replicas, members)` entries per shard, indexes into `members`, primary first.
    sets: Arc<[u16]>,
    width: usize,
    digest: u64,
}

/// A shard's point on the ring, placed by hashing its label.
#[derive(Hash)]
struct Point<'a>(&'a str);

/// A member's virtual node, placed by hashing its label only (a `str` hashes the same way on
/// every platform: its bytes and a terminator).
#[derive(Clone, Debug)]
struct VNode {
    label: String,
    member: u16,
}

impl std::hash::Hash for VNode {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        Point(&self.label).hash(state);
    }
}

impl ShardTable {
    /// Computes the table. The order of `members` does not matter; duplicates are ignored.
    pub fn compute<S: AsRef<str>>(members: &[S], spec: TableSpec) -> Self {
        let mut names: Vec<String> = members.iter().map(|m| m.as_ref().to_string()).collect();
        names.sort();
        names.dedup();
        let width = spec.replicas.min(names.len());
        let mut sets = Vec::with_capacity(spec.shards as usize * width);
        if names.is_empty() || width == 0 {
            return Self::new(spec, names, sets, width);
        }
        let hasher = DefaultHashBuilder;
        let mut ring: HashRing<VNode> = HashRing::new();
        // One sort for all points (`add` sorts the ring on every call).
        ring.batch_add(
            names
                .iter()
                .enumerate()
                .flat_map(|(idx, name)| {
                    (0..spec.vnodes.max(1)).map(move |v| VNode {
                        label: format!("{name}/{v}"),
                        member: idx as u16,
                    })
                })
                .collect(),
        );
        // The ring's points in ring order, with the position each was placed at.
        let mut points: Vec<(u64, u16)> = ring
            .clone()
            .into_iter()
            .map(|v| (hasher.hash_one(&v), v.member))
            .collect();
        points.sort_by_key(|p| p.0);
        let mut seen = vec![false; names.len()];
        for s in 0..spec.shards {
            let label = format!("shard/{s}");
            let key = hasher.hash_one(Point(&label));
            let primary = ring.get(&Point(&label)).map(|v| v.member);
            let start = points.partition_point(|p| p.0 < key);
            seen.iter_mut().for_each(|x| *x = false);
            let before = sets.len();
            for i in 0..points.len() {
                let idx = points[(start + i) % points.len()].1;
                if !seen[idx as usize] {
                    seen[idx as usize] = true;
                    sets.push(idx);
                    if sets.len() - before == width {
                        break;
                    }
                }
            }
            debug_assert_eq!(
                primary,
                Some(sets[before]),
                "the walk starts where the ring's get does"
            );
        }
        Self::new(spec, names, sets, width)
    }

    fn new(spec: TableSpec, members: Vec<String>, sets: Vec<u16>, width: usize) -> Self {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for m in &members {
            h.update(m.as_bytes());
            h.update(&[0xff]);
        }
        for &i in &sets {
            h.update(&i.to_le_bytes());
        }
        Self {
            spec,
            members: members.into(),
            sets: sets.into(),
            width,
            digest: h.digest(),
        }
    }

    pub fn spec(&self) -> TableSpec {
        self.spec
    }

    /// The members, sorted.
    pub fn members(&self) -> &[String] {
        &self.members
    }

    pub fn shards(&self) -> u32 {
        self.spec.shards
    }

    /// The replica set of `shard`, primary first (empty for a table without members).
    pub fn replicas(&self, shard: ShardId) -> impl Iterator<Item = &str> {
        let start = shard.0 as usize * self.width;
        self.sets
            .get(start..start + self.width)
            .unwrap_or_default()
            .iter()
            .map(|&i| self.members[i as usize].as_str())
    }

    /// The primary of `shard`.
    pub fn primary(&self, shard: ShardId) -> Option<&str> {
        self.replicas(shard).next()
    }

    /// How many shards each member is primary for.
    pub fn primaries_per_member(&self) -> BTreeMap<&str, usize> {
        let mut counts: BTreeMap<&str, usize> =
            self.members.iter().map(|m| (m.as_str(), 0)).collect();
        for s in 0..self.spec.shards {
            if let Some(p) = self.primary(ShardId(s)) {
                *counts.entry(p).or_default() += 1;
            }
        }
        counts
    }

    /// How many shards each member holds a replica of.
    pub fn replicas_per_member(&self) -> BTreeMap<&str, usize> {
        let mut counts: BTreeMap<&str, usize> =
            self.members.iter().map(|m| (m.as_str(), 0)).collect();
        for &i in self.sets.iter() {
            *counts.entry(self.members[i as usize].as_str()).or_default() += 1;
        }
        counts
    }

    /// A fingerprint of the whole table (members and every replica set): two nodes with the
    /// same fingerprint route every entity the same way.
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// Balance of primaries: the busiest member's count over the mean (1.0 is perfect).
    pub fn primary_balance(&self) -> f64 {
        let counts = self.primaries_per_member();
        let max = counts.values().copied().max().unwrap_or(0) as f64;
        let mean = self.spec.shards as f64 / self.members.len().max(1) as f64;
        if mean == 0.0 { 1.0 } else { max / mean }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(shards: u32) -> TableSpec {
        TableSpec {
            shards,
            vnodes: 64,
            replicas: 3,
        }
    }

    #[test]
    fn small_clusters_have_as_many_replicas_as_members() {
        let t = ShardTable::compute(&["a"], spec(16));
        assert!((0..16).all(|s| t.replicas(ShardId(s)).collect::<Vec<_>>() == ["a"]));
        let t = ShardTable::compute(&["b", "a"], spec(16));
        for s in 0..16 {
            let r: Vec<&str> = t.replicas(ShardId(s)).collect();
            assert_eq!(r.len(), 2);
            assert_ne!(r[0], r[1]);
        }
        let empty = ShardTable::compute::<&str>(&[], spec(16));
        assert_eq!(empty.primary(ShardId(3)), None);
    }
}
