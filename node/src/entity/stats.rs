//! What the entity runtime holds right now, counted in one pass over its shards: for
//! `/metrics` and the dashboard.

use std::collections::BTreeMap;

use super::runtime::Runtime;
use super::shard_host::Mode;

/// Counts of [`Runtime::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RuntimeStats {
    /// Shards this node serves as primary.
    pub serving: usize,
    /// Shards this node is primary of and is recovering (taking over) before serving.
    pub recovering: usize,
    /// Shards this node was primary of and is handing over.
    pub draining: usize,
    /// Shards out of service here because their storage failed.
    pub failed: usize,
    /// Shards of which this node holds a backup copy (in the replica set, not primary).
    pub backups: usize,
    /// Active (in-memory) entities by kind.
    pub active: BTreeMap<String, usize>,
    /// Writes stored here as primary but not yet by a majority of their replica set: how far
    /// replication lags behind the primaries on this node.
    pub pending_writes: u64,
}

impl RuntimeStats {
    /// Shards changing hands on this node: taking over or handing over.
    pub fn handoffs_in_progress(&self) -> usize {
        self.recovering + self.draining
    }
}

impl Runtime {
    /// Tells dropped on this node since it started because a queue was full (an entity's
    /// mailbox, or the lane to another node): tells are at most once, and this is how many
    /// of them were not delivered for want of room.
    pub fn tells_dropped(&self) -> u64 {
        self.inner
            .metrics
            .kinds()
            .map(|(_, k)| k.tells_dropped.get())
            .sum()
    }

    /// Counts shards by role, active entities by kind and unreplicated writes.
    pub fn stats(&self) -> RuntimeStats {
        let placement = self.placement();
        let mut stats = RuntimeStats::default();
        for kind in self.inner.kinds.keys() {
            stats.active.insert(kind.clone(), 0);
        }
        for s in 0..self.inner.shards {
            let backup = placement.table.as_ref().is_some_and(|t| {
                t.replicas(shoal_sharding::ShardId(s))
                    .skip(1)
                    .any(|r| r == self.inner.name)
            });
            let host = self.host(s);
            match host.mode() {
                Mode::Serving => stats.serving += 1,
                Mode::Recovering => stats.recovering += 1,
                Mode::Draining => stats.draining += 1,
                Mode::Failed { .. } => stats.failed += 1,
                Mode::Idle | Mode::Moved { .. } => {
                    if backup {
                        stats.backups += 1;
                    }
                }
            }
            for entity in host.active.keys() {
                *stats.active.entry(entity.kind.clone()).or_default() += 1;
            }
            if let Some(log) = &host.log {
                stats.pending_writes += log.last_seq() - log.committed();
            }
        }
        stats
    }
}
