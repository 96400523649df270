//! Shoal's membership: who is in the cluster and alive, learned by gossip.
//!
//! chitchat (scuttlebutt reconciliation and a phi-accrual failure detector) runs over the
//! node's QUIC transport. This crate starts it with seeds and settings, publishes the node's
//! status and metadata, keeps a [`MembershipView`] and derives typed [`MembershipEvent`]s
//! that other layers subscribe to.
//!
//! Gossip reports liveness; it never decides ownership on its own.

mod cluster_guard;
mod config;
mod events;
mod membership;
mod status;
mod view;

pub use config::{FailureDetectorSettings, MembershipConfig, validate_seed};
pub use events::{EventTracker, MembershipEvent};
pub use membership::{Membership, MembershipError};
pub use status::{NodeStatus, PROTOCOL_VERSION, keys};
pub use view::{Member, MembershipView};
