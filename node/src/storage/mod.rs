//! Where a node keeps its replicas: every shard it holds a copy of, entity by entity, with
//! each entity's version, and per shard the epochs it has promised and installed.
//!
//! [`ReplicaStore`] is the seam: [`DiskStore`] (redb files under `--data-dir`) for real
//! nodes, [`MemStore`] for tests and the simulator, with crash semantics (a write that was
//! not synced when the node crashed is lost). Writes reach it through [`GroupCommit`], which
//! batches every write queued while the previous batch was syncing into one transaction:
//! one fsync for many replicated commands. A write counts (is acknowledged) only once its
//! batch is durable.

mod disk_store;
mod group_commit;
mod mem_store;
mod record;

pub use disk_store::{DEFAULT_STRIPES, DiskStore};
pub use group_commit::{Callback, Durable, GroupCommit};
pub use mem_store::{MemStore, StoreFaults};
pub use record::{Record, ShardMeta, Version, Write};

use std::collections::BTreeMap;

use crate::entity::EntityRef;

/// Why the store could not do something. Each error names what it affects, so a node can
/// take just those shards out of service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The disk refused a write (full, read-only, I/O error).
    #[error("storage write failed: {0}")]
    Io(String),
    /// Stored bytes do not check out.
    #[error("corrupt storage: {0}")]
    Corrupt(String),
}

/// What a store holds for one shard, as read at start-up: the states stay on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadedShard {
    pub meta: ShardMeta,
    /// Every entity with its version (tombstones included).
    pub index: BTreeMap<EntityRef, Version>,
}

/// The whole store at start-up.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub shards: BTreeMap<u32, LoadedShard>,
    /// Shards that cannot be used, and why (a corrupt file takes out the shards in it).
    pub failed: BTreeMap<u32, StoreError>,
}

/// A node's replica storage.
#[async_trait::async_trait]
pub trait ReplicaStore: Send + Sync + 'static {
    /// Independent units of storage (files); shard `s` lives in stripe `s % stripes()`.
    /// Each stripe has its own group commit, and a broken stripe affects only its shards.
    fn stripes(&self) -> usize;

    /// Reads every shard's metadata and index, for `shards` shards.
    fn load(&self, shards: u32) -> Loaded;

    /// Writes a batch of one stripe durably: when this returns `Ok`, a crash cannot lose it.
    async fn write(&self, stripe: usize, writes: Vec<Write>) -> Result<(), StoreError>;

    /// One entity's record, if the store has it.
    async fn read(&self, shard: u32, entity: &EntityRef) -> Result<Option<Record>, StoreError>;
}
