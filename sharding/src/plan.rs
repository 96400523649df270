//! The plan between two tables: which shards change replica sets, and how.

use serde::{Deserialize, Serialize};

use crate::hash::ShardId;
use crate::table::ShardTable;

/// One shard whose replica set changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub shard: ShardId,
    /// Old replica set, primary first.
    pub from: Vec<String>,
    /// New replica set, primary first.
    pub to: Vec<String>,
}

impl Move {
    pub fn primary_changes(&self) -> bool {
        self.from.first() != self.to.first()
    }

    /// Members that gain a replica of the shard.
    pub fn gained(&self) -> impl Iterator<Item = &str> {
        self.to
            .iter()
            .filter(|m| !self.from.contains(m))
            .map(String::as_str)
    }
}

/// The shards whose replica sets (or primary) differ between `old` and `new`. Tables of
/// different shard counts cannot be compared: the plan is empty.
pub fn plan(old: &ShardTable, new: &ShardTable) -> Vec<Move> {
    if old.shards() != new.shards() {
        return Vec::new();
    }
    (0..old.shards())
        .map(ShardId)
        .filter_map(|shard| {
            let from: Vec<String> = old.replicas(shard).map(str::to_string).collect();
            let to: Vec<String> = new.replicas(shard).map(str::to_string).collect();
            (from != to).then_some(Move { shard, from, to })
        })
        .collect()
}
