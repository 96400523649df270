//! One shard as this node holds it: whether it serves it, its active entities (actors) and
//! the stored states of the passive ones.
//!
//! A shard is `Serving` on exactly the node that owns it in that node's current epoch, and
//! only once any live previous owner has handed it over: until then it is `Receiving`, and
//! commands wait in a bounded buffer. A shard this node has just lost is `Moving`: new
//! commands are refused (the sender retries at the new owner), the entities finish what they
//! queued and hand back their state, which goes to the new owner.

use std::collections::HashMap;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::actor::{ActorMsg, Command};
use super::wire::EntityRef;

/// Commands a `Receiving` shard holds before it refuses with `Unavailable`.
pub(crate) const RECEIVE_BUFFER: usize = 10_000;

#[derive(Debug)]
pub(crate) enum Mode {
    /// Not ours.
    Idle,
    Serving,
    /// Ours, waiting for `from` to hand it over (or for `deadline`).
    Receiving {
        from: String,
        deadline: Instant,
    },
    /// Was ours; being handed to its new owner.
    Moving,
}

pub(crate) struct Active {
    pub tx: mpsc::Sender<ActorMsg>,
    pub last_used: Instant,
}

/// A shard's actors (to stop) and stored states, taken out for a handoff.
pub(crate) type Drained = (
    Vec<(EntityRef, mpsc::Sender<ActorMsg>)>,
    Vec<(EntityRef, Bytes)>,
);

pub(crate) struct ShardHost {
    pub mode: Mode,
    /// The epoch the mode was set in.
    pub epoch: u64,
    pub active: HashMap<EntityRef, Active>,
    pub passive: HashMap<EntityRef, Bytes>,
    pub buffer: Vec<(EntityRef, Command)>,
}

impl Default for ShardHost {
    fn default() -> Self {
        Self {
            mode: Mode::Idle,
            epoch: 0,
            active: HashMap::new(),
            passive: HashMap::new(),
            buffer: Vec::new(),
        }
    }
}

impl ShardHost {
    pub fn is_serving(&self) -> bool {
        matches!(self.mode, Mode::Serving)
    }

    /// How many entities (active and passive) the shard holds.
    pub fn entities(&self) -> usize {
        self.active.len() + self.passive.len()
    }

    /// Takes every active actor and stored state out of the shard, for a handoff.
    pub fn drain(&mut self) -> Drained {
        let active = self.active.drain().map(|(k, a)| (k, a.tx)).collect();
        let passive = self.passive.drain().collect();
        (active, passive)
    }
}
