//! The replica protocol's messages (service 4).
//!
//! Small, frequent messages travel in per-peer batches ([`ReplicaRequest::Batch`]): a
//! primary's appends and read confirmations on the data lane, fences and install openings
//! on the control lane. Bulk transfers (a shard's version list, entity states, install
//! chunks) are requests of their own, chunked, so a large shard never holds up the batches
//! of the others.

use std::net::SocketAddr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use shoal_transport::ServiceId;

use crate::entity::EntityRef;
use crate::storage::{Record, Version};

/// Replication, fencing, recovery and install.
pub const REPLICA_SERVICE: ServiceId = ServiceId(4);

/// One entity's state at a version, as replicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub entity: EntityRef,
    pub version: Version,
    /// `None`: a tombstone.
    pub state: Option<Bytes>,
}

impl Entry {
    pub fn record(&self) -> Record {
        Record {
            version: self.version,
            state: self.state.clone(),
        }
    }

    pub fn size(&self) -> usize {
        self.state.as_ref().map_or(0, |s| s.len()) + self.entity.id.len() + 32
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ReplicaRequest {
    /// Items for several shards, answered item by item; `confirms` asks, for each
    /// `(shard, epoch)`, whether this replica still accepts that epoch (a read barrier).
    Batch {
        items: Vec<Item>,
        confirms: Vec<(u32, u64)>,
    },
    /// A page of the shard's `(entity, version)` list, entities after `after`.
    Versions {
        shard: u32,
        epoch: u64,
        after: Option<EntityRef>,
        limit: u32,
    },
    /// These entities' records, up to about `max_bytes`.
    Get {
        shard: u32,
        epoch: u64,
        entities: Vec<EntityRef>,
        max_bytes: u64,
    },
    /// A chunk of a shard from its primary; `done: Some(through)` completes the install:
    /// the replica then holds everything the primary had up to sequence number `through`.
    Install {
        shard: u32,
        epoch: u64,
        entries: Vec<Entry>,
        done: Option<u64>,
    },
}

/// A batched item.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Item {
    /// Writes of the shard's primary in `epoch`, in sequence order.
    Append {
        shard: u32,
        epoch: u64,
        entries: Vec<Entry>,
    },
    /// Promise to refuse every epoch before `epoch` for the shard, and report what this
    /// replica holds. `primary` is the shard's primary in `epoch` (where an old primary
    /// forwards the commands it buffered).
    Fence {
        shard: u32,
        epoch: u64,
        primary: String,
        addr: SocketAddr,
    },
    /// The primary of `epoch` opens an install: if this replica's digest equals `digest`,
    /// it holds what the primary holds up to `through` and the install is complete at once.
    Begin {
        shard: u32,
        epoch: u64,
        digest: u64,
        through: u64,
    },
}

impl Item {
    pub fn size(&self) -> usize {
        match self {
            Item::Append { entries, .. } => 16 + entries.iter().map(Entry::size).sum::<usize>(),
            _ => 48,
        }
    }
}

/// The answer to one item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ItemReply {
    /// Appended: every write of the epoch up to `applied` is durable here.
    Acked { applied: u64 },
    /// Fenced: what this replica holds for the shard.
    Promised {
        installed: u64,
        digest: u64,
        entities: u64,
    },
    /// The install is complete.
    Installed,
    /// The digests differ: the primary must send what is missing.
    Differs,
    /// This replica has not been installed in the epoch (or missed writes): sync it.
    NeedInstall,
    /// This replica promised a newer epoch: the sender is no longer the primary.
    Stale { promised: u64 },
    /// The replica could not do it (its storage failed).
    Failed(String),
}

/// Why a bulk request was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ReplicaError {
    #[error("this replica promised epoch {promised}")]
    Stale { promised: u64 },
    #[error("{0}")]
    Failed(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ReplicaResponse {
    Batch {
        items: Vec<ItemReply>,
        /// Per confirm: whether the epoch still holds here.
        confirms: Vec<bool>,
    },
    Versions(Result<Vec<(EntityRef, Version)>, ReplicaError>),
    Entries(Result<Vec<Entry>, ReplicaError>),
    Installed(Result<(), ReplicaError>),
}
