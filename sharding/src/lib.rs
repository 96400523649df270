//! Shoal's sharding, pure logic with no I/O:
//!
//! - an entity `(kind, id)` maps to one of a fixed number of shards by a stable hash of its
//!   bytes ([`shard_of`]);
//! - a shard maps to its replica set over the members of a configuration by consistent
//!   hashing ([`ShardTable`]), computed once per configuration so that routing a message is
//!   an array lookup;
//! - two tables give the plan of what moves ([`plan`]).
//!
//! The same members give the same table on every node, whatever their order: this is what
//! lets every node route to the same primary without talking to anyone.

mod hash;
mod plan;
mod table;

pub use hash::{ShardId, shard_of};
pub use plan::{Move, plan};
pub use table::{ShardTable, TableSpec};

/// Default number of shards, fixed when a cluster is created.
pub const DEFAULT_SHARDS: u32 = 1024;
/// Default virtual nodes per member on the ring.
pub const DEFAULT_VNODES: u32 = 256;
/// Default replicas per shard (the first is the primary).
pub const DEFAULT_REPLICAS: usize = 3;
