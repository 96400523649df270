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
use std::sync::atomic::{AtomicU64, Ordering};

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

/// One bit per shard, readable without the shard's lock.
pub(crate) struct ShardBits {
    words: Box<[AtomicU64]>,
}

impl ShardBits {
    fn new(shards: u32) -> Self {
        Self {
            words: (0..shards.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    fn set(&self, shard: u32, on: bool) {
        let (word, bit) = (&self.words[(shard / 64) as usize], 1u64 << (shard % 64));
        if on {
            word.fetch_or(bit, Ordering::Release);
        } else {
            word.fetch_and(!bit, Ordering::Release);
        }
    }

    /// The shards whose bit is set, in order.
    pub fn shards(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(i, w)| {
            let mut bits = w.load(Ordering::Acquire);
            std::iter::from_fn(move || {
                (bits != 0).then(|| {
                    let b = bits.trailing_zeros();
                    bits &= bits - 1;
                    i as u32 * 64 + b
                })
            })
        })
    }
}

/// Which shards serve on this node and which are out of service after a storage failure,
/// kept by [`ShardHost::set_mode`] under each shard's lock. The simulator's checkers (four
/// times a gossip round), the dashboard's `/shards` and the maintenance pass (twice a
/// second) look at a few shards out of 1 024; taking every shard's lock to find them
/// showed in profiles.
pub(crate) struct ModeIndex {
    pub serving: ShardBits,
    pub failed: ShardBits,
}

impl ModeIndex {
    pub fn new(shards: u32) -> Self {
        Self {
            serving: ShardBits::new(shards),
            failed: ShardBits::new(shards),
        }
    }
}

pub(crate) struct ShardHost {
    /// Private: every change goes through [`ShardHost::set_mode`], which keeps the node's
    /// [`ModeIndex`] in step.
    mode: Mode,
    shard: u32,
    index: Arc<ModeIndex>,
    /// The epoch the mode was set in.
    pub epoch: u64,
    pub active: ActiveMap,
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

/// A shard's running actors. Every local tell looks one up: foldhash costs a fraction of
/// std's SipHash on these short keys (SipHash and its key compare were ~6 % of a one-entity
/// tell flood). Its seed comes from the node's RNG: per node in production, so colliding
/// ids cannot be computed once for every node (foldhash is not a keyed PRF like SipHash,
/// so this resists flooding one bucket less than std did), and from the run's seed in the
/// simulator, whose iteration order (idle actors are stopped in it) then replays.
pub(crate) type ActiveMap = HashMap<EntityRef, Active, foldhash::fast::FixedState>;

impl ShardHost {
    pub fn new(shard: u32, replica: ReplicaShard, index: Arc<ModeIndex>, seed: u64) -> Self {
        Self {
            mode: Mode::Idle,
            shard,
            index,
            epoch: 0,
            active: HashMap::with_hasher(foldhash::fast::FixedState::with_seed(seed)),
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

    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    pub fn set_mode(&mut self, mode: Mode) {
        let serving = matches!(mode, Mode::Serving);
        let failed = matches!(mode, Mode::Failed { .. });
        if serving != self.is_serving() {
            self.index.serving.set(self.shard, serving);
        }
        if failed != matches!(self.mode, Mode::Failed { .. }) {
            self.index.failed.set(self.shard, failed);
        }
        self.mode = mode;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_index_follows_every_mode_change() {
        let index = Arc::new(ModeIndex::new(130));
        let mut hosts: Vec<ShardHost> = (0..130)
            .map(|s| ShardHost::new(s, ReplicaShard::default(), index.clone(), 0))
            .collect();
        for s in [0, 63, 64, 129] {
            hosts[s].set_mode(Mode::Recovering);
            hosts[s].set_mode(Mode::Serving);
        }
        hosts[64].set_mode(Mode::Serving);
        let set = &index.serving;
        assert_eq!(set.shards().collect::<Vec<_>>(), [0, 63, 64, 129]);
        hosts[63].set_mode(Mode::Draining);
        hosts[129].set_mode(Mode::Failed {
            reason: "disk".into(),
            retry: None,
        });
        assert_eq!(set.shards().collect::<Vec<_>>(), [0, 64]);
        assert_eq!(index.failed.shards().collect::<Vec<_>>(), [129]);
        hosts[129].set_mode(Mode::Idle);
        assert_eq!(index.failed.shards().count(), 0);
        let serving: Vec<u32> = (0..130)
            .filter(|&s| hosts[s as usize].is_serving())
            .collect();
        assert_eq!(set.shards().collect::<Vec<_>>(), serving);
    }
}
