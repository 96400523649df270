//! Replication checkers, fed by the nodes' replica stores and replication milestones:
//!
//! - `versions-monotonic`: on each node's store, a shard's promised epoch and each entity's
//!   stored version never go back (what a store has synced survives crashes, so this holds
//!   across restarts too);
//! - `one-primary-per-epoch`: one node at most serves a shard as primary of an epoch, and
//!   only that node acknowledges writes of the shard in that epoch;
//! - `replicas-equal` (after the heal): the replicas of every shard hold the same versions.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use shoal::Node;
use shoal::replication::ReplicationEvent;
use shoal::sharding::ShardId;
use shoal::storage::Write;
use tokio::time::Instant;

use crate::checker::Violation;

#[derive(Default)]
struct State {
    /// (node, shard) -> newest promised epoch stored.
    promised: BTreeMap<(String, u32), u64>,
    /// (node, shard, entity) -> newest version stored, as (epoch, seq).
    versions: BTreeMap<(String, u32, String), (u64, u64)>,
    /// (shard, epoch) -> the node serving it.
    primaries: BTreeMap<(u32, u64), String>,
    violations: Vec<Violation>,
    committed: u64,
}

/// Shared by every node's observers; cheap to clone.
#[derive(Clone)]
pub struct ReplicaChecker {
    start: Instant,
    state: Arc<Mutex<State>>,
}

impl ReplicaChecker {
    pub fn new(start: Instant) -> Self {
        Self {
            start,
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn at(&self) -> f64 {
        (Instant::now() - self.start).as_secs_f64()
    }

    fn violate(state: &mut State, at: f64, checker: &'static str, what: String) {
        if state.violations.len() < 50 {
            state.violations.push(Violation { at, checker, what });
        }
    }

    /// `node`'s store made `writes` durable.
    pub fn on_stored(&self, node: &str, writes: &[Write]) {
        let at = self.at();
        let mut s = self.lock();
        for w in writes {
            match w {
                Write::Meta { shard, meta } => {
                    let old = s
                        .promised
                        .insert((node.to_string(), *shard), meta.promised)
                        .unwrap_or(0);
                    if meta.promised < old {
                        let what = format!(
                            "{node} stored a promise of epoch {} for shard {shard} after one of epoch {old}",
                            meta.promised
                        );
                        Self::violate(&mut s, at, "versions-monotonic", what);
                    }
                }
                Write::Entity {
                    shard,
                    entity,
                    record,
                } => {
                    let v = (record.version.epoch, record.version.seq);
                    let key = (node.to_string(), *shard, entity.to_string());
                    let old = s.versions.insert(key, v).unwrap_or((0, 0));
                    if v < old {
                        let what = format!(
                            "{node} stored {entity} (shard {shard}) at version {v:?} after {old:?}"
                        );
                        Self::violate(&mut s, at, "versions-monotonic", what);
                    }
                }
            }
        }
    }

    /// `node` reached a replication milestone.
    pub fn on_event(&self, node: &str, event: &ReplicationEvent) {
        let at = self.at();
        let mut s = self.lock();
        match *event {
            ReplicationEvent::Serving { shard, epoch } => {
                let who = s
                    .primaries
                    .entry((shard, epoch))
                    .or_insert_with(|| node.to_string())
                    .clone();
                if who != node {
                    let what = format!(
                        "{node} and {who} both became primary of shard {shard} in epoch {epoch}"
                    );
                    Self::violate(&mut s, at, "one-primary-per-epoch", what);
                }
            }
            ReplicationEvent::Committed { shard, epoch, seq } => {
                s.committed += 1;
                match s.primaries.get(&(shard, epoch)).cloned() {
                    Some(who) if who == node => {}
                    who => {
                        let what = format!(
                            "{node} acknowledged writes of shard {shard} up to ({epoch}, {seq}) but the primary of epoch {epoch} is {who:?}"
                        );
                        Self::violate(&mut s, at, "one-primary-per-epoch", what);
                    }
                }
            }
            ReplicationEvent::SteppedDown { .. } => {}
        }
    }

    pub fn violations(&self) -> Vec<Violation> {
        self.lock().violations.clone()
    }

    /// Commit milestones seen (a run with a workload that commits nothing checked nothing).
    pub fn commits(&self) -> u64 {
        self.lock().committed
    }
}

/// Whether every shard's running replicas hold the same versions; `Err` names the first
/// shard that differs.
pub fn replicas_equal(nodes: &[Node]) -> Result<(), String> {
    let Some(first) = nodes.first() else {
        return Ok(());
    };
    let Some((epoch, table)) = first.entities().table() else {
        return Err("no shard table".into());
    };
    let by_name: BTreeMap<&str, &Node> = nodes.iter().map(|n| (n.name(), n)).collect();
    for s in 0..table.shards() {
        let shard = ShardId(s);
        let mut seen: Option<(&str, shoal::replication::ReplicaSummary)> = None;
        for name in table.replicas(shard) {
            let Some(node) = by_name.get(name) else {
                continue;
            };
            let summary = node.entities().replica_summary(shard);
            if summary.meta.installed < epoch {
                return Err(format!(
                    "{name} has not installed shard {s} of epoch {epoch} (installed {})",
                    summary.meta.installed
                ));
            }
            match seen {
                None => seen = Some((name, summary)),
                Some((other, o)) if o.digest != summary.digest => {
                    return Err(format!(
                        "shard {s} of epoch {epoch}: {name} holds {} entities ({:?}), {other} holds {} ({:?}); their versions differ",
                        summary.entities, summary.meta, o.entities, o.meta
                    ));
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

/// Polls [`replicas_equal`] over the nodes `running` returns, every 250 ms, for at most
/// `within`: the seconds it took, or the last difference seen.
pub async fn wait_replicas_equal(
    running: impl Fn() -> Vec<Node>,
    within: std::time::Duration,
) -> Result<f64, String> {
    let since = Instant::now();
    let deadline = since + within;
    loop {
        let why = match replicas_equal(&running()) {
            Ok(()) => return Ok(since.elapsed().as_secs_f64()),
            Err(why) => why,
        };
        if Instant::now() >= deadline {
            return Err(why);
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal::entity::EntityRef;
    use shoal::storage::{Record, ShardMeta, Version};

    fn put(epoch: u64, seq: u64) -> Write {
        Write::Entity {
            shard: 3,
            entity: EntityRef::new("kv", "a"),
            record: Record {
                version: Version { epoch, seq },
                state: None,
            },
        }
    }

    fn promise(promised: u64) -> Write {
        Write::Meta {
            shard: 3,
            meta: ShardMeta {
                promised,
                ..ShardMeta::default()
            },
        }
    }

    fn checkers(c: &ReplicaChecker) -> Vec<&'static str> {
        c.violations().iter().map(|v| v.checker).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn versions_and_promises_may_only_grow_per_node() {
        let c = ReplicaChecker::new(Instant::now());
        c.on_stored("n1", &[put(1, 1), put(1, 2), promise(2), put(2, 1)]);
        // Another node's store is its own: an older version there is fine.
        c.on_stored("n2", &[put(1, 1), promise(1)]);
        assert!(c.violations().is_empty(), "{:?}", c.violations());
        c.on_stored("n1", &[put(1, 5)]);
        c.on_stored("n1", &[promise(1)]);
        assert_eq!(checkers(&c), ["versions-monotonic", "versions-monotonic"]);
    }

    #[tokio::test(start_paused = true)]
    async fn only_the_primary_of_an_epoch_may_acknowledge_writes() {
        let c = ReplicaChecker::new(Instant::now());
        let serving = |epoch| ReplicationEvent::Serving { shard: 3, epoch };
        let committed = |epoch| ReplicationEvent::Committed {
            shard: 3,
            epoch,
            seq: 1,
        };
        c.on_event("n1", &serving(4));
        c.on_event("n1", &committed(4));
        c.on_event("n2", &serving(5));
        c.on_event("n2", &committed(5));
        assert!(c.violations().is_empty(), "{:?}", c.violations());
        assert_eq!(c.commits(), 2);
        // A second primary in epoch 5, and a write acknowledged by a node that never served.
        c.on_event("n3", &serving(5));
        c.on_event("n1", &committed(5));
        assert_eq!(
            checkers(&c),
            ["one-primary-per-epoch", "one-primary-per-epoch"]
        );
    }
}
