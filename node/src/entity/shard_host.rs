//! One shard as this node holds it: its role here, its active entities (actors), this
//! node's replica of it, and, while this node is its primary, the replication log.
//!
//! Every node keeps a replica of the shards whose replica set it is in (and answers the
//! replica protocol for them whatever its role). The primary of the current epoch goes
//! `Recovering` (commands wait in a bounded buffer) → `Serving`. A primary that loses the
//! shard goes `Draining` (commands wait, its last writes finish) → `Moved` (commands go to
//! the new primary) → `Idle` once its shard table shows the new primary.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{Notify, mpsc};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::actor::{ActorMsg, Command, Ready};
use super::wire::EntityRef;
use crate::replication::{PrimaryLog, ReplicaShard};

/// Commands a shard holds while it is not serving before it refuses with `Unavailable`.
pub(crate) const RECEIVE_BUFFER: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Not primary here.
    Idle,
    /// Primary in `ShardHost::epoch`, recovering the shard's state before serving.
    Recovering,
    Serving,
    /// Was primary; waits for its last writes before handing over.
    Draining,
    /// Handed over: commands go to `to`, primary in `epoch`.
    Moved {
        to: String,
        addr: SocketAddr,
        epoch: u64,
    },
    /// Storage failed for this shard here; until `retry` (if any), it is out of service.
    Failed {
        reason: String,
        retry: Option<Instant>,
    },
}

pub(crate) struct Active {
    pub tx: mpsc::Sender<ActorMsg>,
    pub last_used: Instant,
    /// Used since `last_used` was set: the tell fast path sets this instead of reading the
    /// clock, and the next maintenance pass (every 500 ms) moves `last_used` to its own
    /// time, so passivation may come up to one pass late, never early.
    pub used: bool,
    /// Distinguishes this actor from a later one of the same entity.
    pub id: u64,
    /// Told to stop (passivation): no new command goes to it, and no new actor of the entity
    /// starts until it has ended, so two actors of one entity never run at once.
    pub stopping: bool,
}

pub(crate) struct ShardHost {
    pub mode: Mode,
    /// The epoch the mode was set in.
    pub epoch: u64,
    pub active: HashMap<EntityRef, Active>,
    pub buffer: Vec<(EntityRef, Command)>,
    pub replica: ReplicaShard,
    /// While primary (recovering, serving or draining): the replication log.
    pub log: Option<PrimaryLog<Ready>>,
    /// The activation or drain task in progress.
    pub task: Option<AbortHandle>,
    /// Woken when an actor of the shard ends.
    pub ended: Arc<Notify>,
    /// This node's replica is complete: it served the shard as primary, and no other node
    /// has been primary since. A primary again in the next epoch skips recovery.
    pub complete: bool,
}

impl ShardHost {
    pub fn new(replica: ReplicaShard) -> Self {
        Self {
            mode: Mode::Idle,
            epoch: 0,
            active: HashMap::new(),
            buffer: Vec::new(),
            replica,
            log: None,
            task: None,
            ended: Arc::new(Notify::new()),
            complete: false,
        }
    }

    pub fn is_serving(&self) -> bool {
        matches!(self.mode, Mode::Serving)
    }

    /// How many entities this node's replica of the shard holds.
    pub fn entities(&self) -> usize {
        self.replica.len()
    }

    /// Stops every actor (they finish what they queued, then end: the store has their
    /// state). Returns how many there were. Only for a change of epoch: an actor of the old
    /// epoch can no longer write.
    pub fn stop_actors(&mut self) -> usize {
        let n = self.active.len();
        for (_, a) in self.active.drain() {
            let _ = a.tx.try_send(ActorMsg::Stop);
        }
        n
    }
}
