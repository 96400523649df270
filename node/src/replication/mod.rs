//! Replication: how a shard's state survives the loss of a minority of its replicas.
//!
//! Each shard has, per configuration epoch, a replica set (primary first) from the shard
//! table. The protocol, argued in `docs/PROTOCOL.md`:
//!
//! - **Writes.** The primary numbers each write `(epoch, seq)`, stores it and appends it to
//!   its backups ([`log`], batched per peer by [`lane`]); the reply goes once a majority of
//!   the replica set stored it.
//! - **Fencing.** A replica refuses anything from an epoch older than the newest it promised
//!   ([`serve`]).
//! - **Recovery.** Before it serves in epoch N, a new primary fences a majority of the
//!   replica set of each epoch in the configuration's history, newest first, pulls every
//!   newer version from them, and stops at the first epoch in which one of them had been
//!   installed ([`recovery`]). It then installs its state on a majority of its own replica
//!   set ([`sync`]), and serves.
//! - **Reads** wait for a majority to confirm the epoch after the read ran ([`log`]).

mod lane;
mod log;
mod primary;
mod recovery;
mod replica;
mod serve;
mod sync;
mod wire;

pub(crate) use lane::{LaneSink, Lanes};
pub(crate) use log::PrimaryLog;
pub(crate) use recovery::{Plan, ReplicaSet};
pub(crate) use replica::{ReplicaShard, StoreBatch};
pub use wire::{Entry, REPLICA_SERVICE};

use std::sync::Arc;

use crate::storage::ShardMeta;

/// What a replica holds for a shard (for checkers and status pages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaSummary {
    pub meta: ShardMeta,
    pub digest: u64,
    pub entities: usize,
}

/// A replication milestone, for the simulator's checkers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationEvent {
    /// This node serves `shard` as primary of `epoch`.
    Serving { shard: u32, epoch: u64 },
    /// Writes of `shard` up to `seq` are stored by a majority: their replies may go.
    Committed { shard: u32, epoch: u64, seq: u64 },
    /// This node stopped being `shard`'s primary of `epoch`.
    SteppedDown { shard: u32, epoch: u64 },
}

/// Told `(node, event)`.
pub type ReplicationObserver = Arc<dyn Fn(&str, &ReplicationEvent) + Send + Sync>;
