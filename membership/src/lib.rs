//! Shoal's membership: who is alive (gossip) and who is a member (configurations agreed by a
//! majority).
//!
//! chitchat (scuttlebutt reconciliation and a phi-accrual failure detector) runs over the
//! node's QUIC transport and reports liveness and what each node says about itself. The
//! cluster configuration `(epoch, members)` is decided separately: epoch N+1 is committed
//! only by a majority of epoch N's members, with single-decree Paxos per epoch
//! ([`paxos`]). Gossip never decides ownership on its own, which is what keeps a partition
//! from producing two owners. See `docs/PROTOCOL.md`.

mod changes;
mod cluster_guard;
mod config;
mod config_manager;
pub mod configuration;
pub mod durable;
mod events;
mod heartbeats;
mod membership;
pub mod paxos;
mod status;
mod view;

pub use changes::{Change, Why, desired_changes};
pub use config::{FailureDetectorSettings, MembershipConfig, validate_seed};
pub use config_manager::CONFIG_SERVICE;
pub use configuration::{Committed, ConfigMember, Configuration, MemberId, PastEpoch, Placement};
pub use durable::{DurableCell, FileCell, MemCell};
pub use events::{EventTracker, MembershipEvent};
pub use membership::{Membership, MembershipError};
pub use status::{NodeStatus, PROTOCOL_VERSION, keys};
pub use view::{ConfigView, Member, MembershipView};
