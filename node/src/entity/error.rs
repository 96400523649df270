//! Errors of `tell` and `ask`: values, never panics.

use serde::{Deserialize, Serialize};

/// Why an `ask` did not return a reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AskError {
    /// No reply within the timeout (the entity's owner may be slow or unreachable).
    #[error("no reply within {0} ms")]
    Timeout(u64),
    /// The entity cannot be served now, and why (no configuration, no majority, the shard is
    /// moving, its owner is unreachable...).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The handler refused the command, or the ask would deadlock (reentrancy).
    #[error("rejected: {0}")]
    Rejected(String),
    /// No node serving the entity knows this kind.
    #[error("unknown entity kind {0:?}")]
    UnknownKind(String),
    /// A command or reply could not be decoded as the kind's types.
    #[error("cannot decode: {0}")]
    Decode(String),
}
