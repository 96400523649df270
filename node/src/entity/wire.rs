//! What crosses the network for entities: requests to a shard's owner, their outcomes, and
//! the handoff of a shard's state to its new owner.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use shoal_transport::ServiceId;

use super::error::AskError;

/// Entity requests (ask and tell).
pub const ENTITY_SERVICE: ServiceId = ServiceId(2);
/// Shard handoffs.
pub const HANDOFF_SERVICE: ServiceId = ServiceId(3);
/// Batches of tells to one node ([`TellBatch`]).
pub const TELL_SERVICE: ServiceId = ServiceId(5);

/// An entity: its kind and id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EntityRef {
    pub kind: String,
    pub id: String,
}

/// An entity's address as borrowed strings, so that maps keyed by [`EntityRef`] can be
/// searched without allocating one (a tell looks its actor up this way).
pub(crate) trait EntityKey {
    fn kind(&self) -> &str;
    fn id(&self) -> &str;
}

impl EntityKey for EntityRef {
    fn kind(&self) -> &str {
        &self.kind
    }
    fn id(&self) -> &str {
        &self.id
    }
}

impl EntityKey for (&str, &str) {
    fn kind(&self) -> &str {
        self.0
    }
    fn id(&self) -> &str {
        self.1
    }
}

impl std::hash::Hash for dyn EntityKey + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.kind().hash(state);
        self.id().hash(state);
    }
}

impl PartialEq for dyn EntityKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.kind() == other.kind() && self.id() == other.id()
    }
}

impl Eq for dyn EntityKey + '_ {}

/// Hashes exactly as its borrowed form does (`Borrow` requires it).
impl std::hash::Hash for EntityRef {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self as &dyn EntityKey).hash(state);
    }
}

impl<'a> std::borrow::Borrow<dyn EntityKey + 'a> for EntityRef {
    fn borrow(&self) -> &(dyn EntityKey + 'a) {
        self
    }
}

impl EntityRef {
    pub fn new(kind: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            id: id.into(),
        }
    }
}

impl std::fmt::Display for EntityRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind, self.id)
    }
}

/// A command for an entity, sent to the node the sender believes owns its shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntityRequest {
    pub target: EntityRef,
    pub command: Bytes,
    /// Entities waiting on this call, outermost first (the reentrancy check).
    pub chain: Vec<EntityRef>,
    /// The sender's configuration epoch.
    pub epoch: u64,
    /// Already forwarded once by a node that did not own the shard.
    pub forwarded: bool,
}

/// Tells to one node, in the order they were told: one frame for many tells, so a flood
/// costs one encode, one frame and one dispatch per batch instead of per message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TellBatch {
    pub tells: Vec<EntityRequest>,
}

/// One tell of a [`TellBatch`] as borrowed from its frame, with the same encoding as
/// [`EntityRequest`]: a tell lane writes these straight into its batch, and the receiver
/// reads them without allocating per tell.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct TellRef<'a> {
    #[serde(borrow)]
    pub target: EntityKeyRef<'a>,
    #[serde(serialize_with = "as_bytes")]
    pub command: &'a [u8],
    pub chain: Vec<EntityRef>,
    pub epoch: u64,
    pub forwarded: bool,
}

/// [`EntityRef`], borrowed.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct EntityKeyRef<'a> {
    pub kind: &'a str,
    pub id: &'a str,
}

/// [`TellBatch`], borrowed from its frame.
#[derive(Debug, Deserialize)]
pub(crate) struct TellBatchRef<'a> {
    #[serde(borrow)]
    pub tells: Vec<TellRef<'a>>,
}

/// Encodes a slice as [`Bytes`] does (length and raw bytes), not element by element.
fn as_bytes<S: serde::Serializer>(bytes: &&[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(bytes)
}

/// The outcome of an entity request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Outcome {
    Reply(Bytes),
    Failed(AskError),
    /// Not served here now, but may be soon (the shard is moving, the node is catching up):
    /// the sender retries until its timeout. `epoch` is the receiver's.
    Retry {
        reason: String,
        epoch: u64,
    },
}

/// One entity's state in a handoff.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HandedState {
    pub entity: EntityRef,
    pub state: Bytes,
}

/// A shard's entities, sent by its previous owner to its new one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Handoff {
    pub shard: u32,
    /// The epoch in which the receiver owns the shard.
    pub epoch: u64,
    pub from: String,
    pub entities: Vec<HandedState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum HandoffReply {
    Installed,
    /// The receiver does not own the shard in an epoch at least `epoch` (it forwards to the
    /// owner it knows, or the sender tries later).
    NotOwner {
        epoch: u64,
    },
}
