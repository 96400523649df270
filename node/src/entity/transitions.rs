//! What a new committed configuration changes for each shard: a shard whose primary is now
//! this node activates (recovers, installs, serves); a shard this node was primary of and no
//! longer is drains (its last writes finish) and hands over; the others only follow.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shoal_membership::Committed;
use shoal_sharding::{ShardId, ShardTable, TableSpec};
use tokio::time::Instant;
use tracing::{info, warn};

use super::runtime::{Placement, Runtime};
use super::shard_host::Mode;
use crate::replication::{Plan, ReplicaSet};

/// An earlier epoch's table, for recovery.
pub(crate) struct PastTable {
    pub epoch: u64,
    pub table: ShardTable,
    pub addrs: HashMap<String, SocketAddr>,
}

impl Runtime {
    /// A new committed configuration: new table, and every shard follows.
    pub(crate) fn on_config(&self, committed: &Committed) {
        let config = &committed.config;
        let current = self.placement();
        if config.epoch <= current.epoch {
            return;
        }
        let me = self.inner.membership.self_id();
        let member = config.contains(&me);
        let spec = TableSpec {
            shards: config.placement.shards,
            vnodes: config.placement.vnodes,
            replicas: config.placement.replicas as usize,
        };
        if spec.shards != self.inner.shards {
            warn!(node = %self.inner.name, "configuration with another shard count ignored");
            return;
        }
        let names: Vec<&str> = config.members.iter().map(|m| m.id.name.as_str()).collect();
        let table = ShardTable::compute(&names, spec);
        let addrs: HashMap<String, SocketAddr> = config
            .members
            .iter()
            .map(|m| (m.id.name.clone(), m.addr))
            .collect();
        // Tables of the history, newest first; reuse what the previous placement computed.
        let known = |epoch: u64| -> Option<ShardTable> {
            if current.epoch == epoch {
                return current.table.clone();
            }
            current
                .history
                .iter()
                .find(|h| h.epoch == epoch)
                .map(|h| h.table.clone())
        };
        let history: Vec<PastTable> = config
            .history
            .iter()
            .rev()
            .map(|past| {
                let names: Vec<&str> = past.members.iter().map(|m| m.id.name.as_str()).collect();
                PastTable {
                    epoch: past.epoch,
                    table: known(past.epoch).unwrap_or_else(|| ShardTable::compute(&names, spec)),
                    addrs: past
                        .members
                        .iter()
                        .map(|m| (m.id.name.clone(), m.addr))
                        .collect(),
                }
            })
            .collect();
        *self
            .inner
            .placement
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(Placement {
            epoch: config.epoch,
            table: Some(table),
            member,
            addrs,
            history,
        });
        let mut gained = 0;
        let mut lost = 0;
        for s in 0..self.inner.shards {
            match self.transition(s) {
                Some(true) => gained += 1,
                Some(false) => lost += 1,
                None => {}
            }
        }
        info!(
            node = %self.inner.name,
            epoch = config.epoch,
            member,
            activating = gained,
            handing_over = lost,
            history = config.history.len(),
            "shard table updated"
        );
        self.publish_ready();
    }

    /// The replica set of `shard` in `table`, with addresses.
    fn replica_set(
        &self,
        table: &ShardTable,
        shard: u32,
        addrs: &HashMap<String, SocketAddr>,
        fallback: &HashMap<String, SocketAddr>,
    ) -> ReplicaSet {
        table
            .replicas(ShardId(shard))
            .filter_map(|n| {
                let addr = addrs
                    .get(n)
                    .or_else(|| fallback.get(n))
                    .copied()
                    .or_else(|| {
                        self.inner
                            .membership
                            .view()
                            .member(n)
                            .map(|m| m.data_plane_addr())
                    })?;
                Some((n.to_string(), addr))
            })
            .collect()
    }

    /// Brings one shard in line with the current placement. `Some(true)`: it started
    /// activating here; `Some(false)`: it started handing over.
    fn transition(&self, s: u32) -> Option<bool> {
        let p = self.placement();
        let table = p.table.as_ref()?;
        let me = self.inner.name.as_str();
        let mine = p.member && table.primary(ShardId(s)) == Some(me);
        let mut host = self.host(s);
        if matches!(host.mode(), Mode::Failed { .. }) {
            return None;
        }
        let was = host.mode().clone();
        if mine {
            if host.epoch == p.epoch && matches!(was, Mode::Recovering | Mode::Serving) {
                return None;
            }
            if let Some(t) = host.task.take() {
                t.abort();
            }
            // Complete only if this node was the primary of the epoch right before this one:
            // then nobody else can have served the shard since. A node that sat out epochs
            // (cut off, removed and back) holds a stale copy however it last served.
            let previous = p.history.first().map(|h| h.epoch);
            let complete = host.complete
                && matches!(was, Mode::Serving | Mode::Recovering)
                && previous == Some(host.epoch);
            // Until this activation finishes, the copy here is only as complete as the plan
            // says (a newer epoch arriving meanwhile must not inherit an old `complete`).
            host.complete = complete;
            let plan = Plan {
                epoch: p.epoch,
                history: p
                    .history
                    .iter()
                    .map(|h| (h.epoch, self.replica_set(&h.table, s, &h.addrs, &p.addrs)))
                    .collect(),
                replicas: self.replica_set(table, s, &p.addrs, &p.addrs),
                complete,
            };
            host.set_mode(Mode::Recovering);
            host.epoch = p.epoch;
            host.task = Some(self.inner.spawn(self.clone().activate(s, plan)));
            return Some(true);
        }
        host.epoch = p.epoch;
        match was {
            Mode::Serving | Mode::Recovering => {
                if let Some(t) = host.task.take() {
                    t.abort();
                }
                host.set_mode(Mode::Draining);
                host.complete = false;
                host.task = Some(self.inner.spawn(self.clone().hand_over(s)));
                Some(false)
            }
            Mode::Moved { epoch, .. } if epoch <= p.epoch => {
                host.set_mode(Mode::Idle);
                None
            }
            _ => None,
        }
    }

    /// Runs [`Runtime::transition`] again for a shard (after its storage recovered).
    pub(crate) fn reconsider(&self, s: u32) {
        self.transition(s);
    }

    /// A shard this node no longer is primary of: its last writes finish (at most the drain
    /// timeout), then commands go to the new primary.
    async fn hand_over(self, s: u32) {
        let deadline = Instant::now() + self.inner.settings.drain_timeout;
        loop {
            let notified = self.inner.progress.notified();
            let pending = self.host(s).log.as_ref().is_some_and(|l| l.pending());
            if !pending || Instant::now() >= deadline {
                break;
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
        let p = self.placement();
        let mut host = self.host(s);
        if *host.mode() != Mode::Draining {
            return;
        }
        let next = match p.table.as_ref().and_then(|t| t.primary(ShardId(s))) {
            Some(to) if to != self.inner.name => match p.addrs.get(to) {
                Some(addr) => Mode::Moved {
                    to: to.to_string(),
                    addr: *addr,
                    epoch: p.epoch,
                },
                None => Mode::Idle,
            },
            _ => Mode::Idle,
        };
        host.task = None;
        self.step_down(s, &mut host, next, &format!("shard {s} changed hands"));
    }

    /// Waits until this node holds no shard as primary and every member of the current
    /// configuration serves all of its shards, at most `within`: a leaving node may stop then.
    pub async fn wait_handed_over(&self, within: Duration) -> bool {
        let done = async {
            loop {
                let notified = self.inner.progress.notified();
                let mine = (0..self.inner.shards).any(|s| {
                    matches!(
                        self.host(s).mode(),
                        Mode::Serving | Mode::Recovering | Mode::Draining
                    )
                });
                let view = self.inner.membership.view();
                let everyone = view.configuration.as_ref().is_some_and(|c| {
                    c.members.iter().all(|m| {
                        view.member(&m.name)
                            .is_some_and(|v| v.shards_ready.is_some_and(|r| r >= c.epoch))
                    })
                });
                if !mine && everyone {
                    return;
                }
                let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
            }
        };
        tokio::time::timeout(within, done).await.is_ok()
    }
}
