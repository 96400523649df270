//! Entities: stateful actors addressed by kind and id, living on the owner of their shard.
//!
//! Define a kind by implementing [`Entity`], register it with `NodeBuilder::register`, and
//! call it from anywhere in the cluster with `node.ask::<K>(id, cmd)` or `node.tell`. The
//! built-in kinds `kv` and `counter` ([`builtin`]) are always registered.

pub(crate) mod actor;
pub mod builtin;
mod context;
mod error;
mod hosting;
mod kind;
mod routing;
pub(crate) mod runtime;
pub(crate) mod shard_host;
mod stats;
mod tell_lane;
mod transitions;
pub mod wire;

pub use context::Context;
pub use error::AskError;
pub use kind::{Entity, Rejection};
pub use runtime::{EntitySettings, Runtime};
pub use stats::RuntimeStats;
pub use wire::EntityRef;

pub(crate) use actor::{ErasedKind, KindImpl};
