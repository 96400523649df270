//! Activation: what a shard's new primary does before it serves in an epoch.
//!
//! 1. Finish its own writes of an earlier epoch (if it was primary then), and promise the
//!    new epoch itself.
//! 2. **Recover** (skipped when this node served the shard in the previous epoch and nobody
//!    else has been primary since: it holds everything). For each epoch of the
//!    configuration's history, newest first: fence a majority of that epoch's replica set
//!    (the old primary first, so that its writes in flight finish), pull from each of them
//!    every version newer than ours, and stop at the first epoch where one of them had been
//!    installed: that epoch's primary had recovered everything before it, and the majority
//!    we fenced holds everything acknowledged in it (quorum intersection).
//! 3. **Install** its state on a majority of the new replica set (`sync`).
//! 4. Serve: the buffered commands run.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use super::ReplicationEvent;
use super::lane::LaneKind;
use super::log::{PrimaryLog, Progress};
use super::replica::newer;
use super::sync::{CHUNK_BYTES, Stop};
use super::wire::{Item, ItemReply, ReplicaRequest, ReplicaResponse};
use crate::entity::runtime::Runtime;
use crate::entity::shard_host::Mode;
use crate::entity::wire::EntityRef;
use crate::storage::Write;

/// Replica sets are lists of `(name, address)`, primary first.
pub(crate) type ReplicaSet = Vec<(String, SocketAddr)>;

/// What a new primary needs to activate a shard in an epoch.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub epoch: u64,
    /// Earlier epochs, newest first, with the shard's replica set in each.
    pub history: Vec<(u64, ReplicaSet)>,
    /// The replica set in `epoch` (this node first).
    pub replicas: ReplicaSet,
    /// This node's replica is complete: skip recovery.
    pub complete: bool,
}

/// A fenced replica's report.
struct Fenced {
    name: String,
    addr: SocketAddr,
    installed: u64,
    digest: u64,
}

impl Runtime {
    /// Activates `shard` per `plan`, retrying until it serves or the plan is obsolete.
    pub(crate) async fn activate(self, shard: u32, plan: Plan) {
        tracing::trace!(node = %self.inner.name, shard, epoch = plan.epoch, "activation queued");
        let _permit = self.inner.activations.acquire().await;
        tracing::trace!(node = %self.inner.name, shard, epoch = plan.epoch, "activation started");
        let started = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            if !self.still_recovering(shard, plan.epoch) {
                return;
            }
            match self.try_activate(shard, &plan).await {
                Ok(()) => {
                    info!(
                        node = %self.inner.name, shard, epoch = plan.epoch,
                        took_ms = started.elapsed().as_millis() as u64,
                        "shard serving"
                    );
                    return;
                }
                Err(Stop::Stale(promised)) => {
                    warn!(node = %self.inner.name, shard, epoch = plan.epoch, promised, "a newer epoch took the shard; waiting for its configuration");
                    return;
                }
                Err(Stop::Failed(why)) => {
                    attempt += 1;
                    if attempt == 1 || attempt.is_multiple_of(10) {
                        warn!(node = %self.inner.name, shard, epoch = plan.epoch, attempt, reason = %why, "shard not activated yet; retrying");
                    }
                    let pause = Duration::from_millis(100 * 2u64.pow(attempt.min(4)));
                    tokio::time::sleep(self.inner.rng.jitter(pause)).await;
                }
            }
        }
    }

    fn still_recovering(&self, shard: u32, epoch: u64) -> bool {
        let h = self.host(shard);
        *h.mode() == Mode::Recovering && h.epoch == epoch
    }

    async fn try_activate(&self, shard: u32, plan: &Plan) -> Result<(), Stop> {
        let epoch = plan.epoch;
        self.finish_old_log(shard, epoch).await;
        self.fence_here(shard, epoch).await?;
        tracing::debug!(
            node = %self.inner.name, shard, epoch, complete = plan.complete,
            history = ?plan.history.iter().map(|(k, set)| (*k, set.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>())).collect::<Vec<_>>(),
            "activating"
        );
        if !plan.complete {
            self.recover(shard, plan).await?;
        }
        self.install(shard, plan).await?;
        let buffered = {
            let mut host = self.host(shard);
            if *host.mode() != Mode::Recovering || host.epoch != epoch {
                return Ok(());
            }
            host.set_mode(Mode::Serving);
            host.complete = true;
            std::mem::take(&mut host.buffer)
        };
        self.inner
            .observe(ReplicationEvent::Serving { shard, epoch });
        self.inner.progress.notify_waiters();
        self.flush(shoal_sharding::ShardId(shard), buffered).await;
        self.publish_ready();
        Ok(())
    }

    /// If this node was the shard's primary in an earlier epoch, waits (at most the drain
    /// timeout) for that log's writes to be stored by a majority, then closes it.
    async fn finish_old_log(&self, shard: u32, epoch: u64) {
        let deadline = Instant::now() + self.inner.settings.drain_timeout;
        loop {
            let notified = self.inner.progress.notified();
            {
                let mut host = self.host(shard);
                let old = host.log.as_ref().is_some_and(|l| l.epoch < epoch);
                if !old {
                    return;
                }
                let pending = host.log.as_ref().is_some_and(|l| l.pending());
                if !pending || Instant::now() >= deadline {
                    if let Some(mut log) = host.log.take() {
                        let (writes, reads) = log.close();
                        for w in writes {
                            w.fail_unknown("the shard's epoch changed");
                        }
                        for r in reads {
                            r.retry("the shard's epoch changed".into(), epoch);
                        }
                    }
                    let stopped = host.stop_actors();
                    self.inner
                        .active
                        .fetch_sub(stopped, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }

    /// Promises `epoch` for the shard here, durably.
    async fn fence_here(&self, shard: u32, epoch: u64) -> Result<(), Stop> {
        let rx = {
            let mut host = self.host(shard);
            if let Some(why) = &host.replica.failed {
                return Err(Stop::Failed(why.clone()));
            }
            let promised = host.replica.meta.promised;
            if promised > epoch {
                return Err(Stop::Stale(promised));
            }
            host.replica.meta.promised = epoch;
            self.inner.commits.submit(
                self.inner.commits.stripe_of(shard),
                vec![Write::Meta {
                    shard,
                    meta: host.replica.meta,
                }],
            )
        };
        self.stored(shard, rx, &[]).await.map_err(Stop::Failed)
    }

    /// Step 2 of the module documentation.
    async fn recover(&self, shard: u32, plan: &Plan) -> Result<(), Stop> {
        for (k, set) in &plan.history {
            let fenced = self.fence_majority(shard, plan.epoch, set).await?;
            tracing::debug!(
                node = %self.inner.name, shard, epoch = plan.epoch, past = k,
                fenced = ?fenced.iter().map(|f| (f.name.as_str(), f.installed, f.digest)).collect::<Vec<_>>(),
                "recovery: fenced a majority of an earlier replica set"
            );
            for f in &fenced {
                let ours = self.host(shard).replica.digest();
                if f.name != self.inner.name && f.digest != ours {
                    self.pull(shard, plan.epoch, &f.name, f.addr).await?;
                }
            }
            if *k <= 1 || fenced.iter().any(|f| f.installed >= *k) {
                return Ok(());
            }
        }
        match plan.history.last() {
            None => Ok(()),
            Some((k, _)) => Err(Stop::Failed(format!(
                "no replica of the shard in epochs {k}..{} had been installed: its newest state cannot be located",
                plan.epoch - 1
            ))),
        }
    }

    /// Fences a majority of `set` for `epoch`: the old primary first, then the others.
    async fn fence_majority(
        &self,
        shard: u32,
        epoch: u64,
        set: &ReplicaSet,
    ) -> Result<Vec<Fenced>, Stop> {
        let need = set.len() / 2 + 1;
        let mut fenced = Vec::new();
        let fence = |name: &str, addr: SocketAddr| {
            self.lane(name, addr, LaneKind::Control).call(Item::Fence {
                shard,
                epoch,
                primary: self.inner.name.clone(),
                addr: self.inner.transport.local_addr(),
            })
        };
        let mut calls = Vec::new();
        for (i, (name, addr)) in set.iter().enumerate() {
            if *name == self.inner.name {
                let h = self.host(shard);
                fenced.push(Fenced {
                    name: name.clone(),
                    addr: *addr,
                    installed: h.replica.meta.installed,
                    digest: h.replica.digest(),
                });
                continue;
            }
            if i == 0 && self.placement().addrs.contains_key(name) {
                // The old primary, still a member: its writes in flight finish before anyone
                // else is fenced. (One that was removed is presumed dead: not waited for.)
                let wait = self.inner.settings.drain_timeout + self.inner.settings.replica_timeout;
                let rx = fence(name, *addr);
                tracing::trace!(node = %self.inner.name, shard, epoch, old_primary = %name, "fencing the old primary first");
                if let Ok(Ok(reply)) = tokio::time::timeout(wait, rx).await {
                    Self::take_fence(name, *addr, reply, &mut fenced)?;
                }
                continue;
            }
            calls.push((name.clone(), *addr, fence(name, *addr)));
        }
        // A majority is enough: the first replies count, the dead are not waited for.
        let deadline = Instant::now() + self.inner.settings.replica_timeout;
        let mut replies = tokio::task::JoinSet::new();
        for (name, addr, rx) in calls {
            replies.spawn(async move { (name, addr, rx.await) });
        }
        tracing::trace!(node = %self.inner.name, shard, epoch, have = fenced.len(), need, "fencing the others");
        while fenced.len() < need {
            match tokio::time::timeout_at(deadline, replies.join_next()).await {
                Ok(Some(Ok((name, addr, Ok(reply))))) => {
                    tracing::trace!(node = %self.inner.name, shard, epoch, replica = %name, ?reply, "fence answered");
                    Self::take_fence(&name, addr, reply, &mut fenced)?;
                }
                Ok(Some(other)) => {
                    tracing::trace!(node = %self.inner.name, shard, epoch, outcome = ?other.map(|(n, _, r)| (n, r.is_ok())), "fence not answered");
                }
                Ok(None) | Err(_) => break,
            }
        }
        if fenced.len() >= need {
            Ok(fenced)
        } else {
            Err(Stop::Failed(format!(
                "fenced {} of the {} replicas of an earlier epoch ({}), {need} needed",
                fenced.len(),
                set.len(),
                set.iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    }

    fn take_fence(
        name: &str,
        addr: SocketAddr,
        reply: ItemReply,
        fenced: &mut Vec<Fenced>,
    ) -> Result<(), Stop> {
        match reply {
            ItemReply::Promised {
                installed, digest, ..
            } => {
                fenced.push(Fenced {
                    name: name.to_string(),
                    addr,
                    installed,
                    digest,
                });
                Ok(())
            }
            ItemReply::Stale { promised } => Err(Stop::Stale(promised)),
            _ => Ok(()),
        }
    }

    /// Takes from `name` every version of the shard newer than ours.
    async fn pull(&self, shard: u32, epoch: u64, name: &str, addr: SocketAddr) -> Result<(), Stop> {
        let theirs = self.fetch_versions(shard, epoch, name, addr).await?;
        let wanted: Vec<EntityRef> = {
            let host = self.host(shard);
            newer(host.replica.index(), &theirs)
        };
        let mut rest = &wanted[..];
        while !rest.is_empty() {
            let take = rest.len().min(256);
            let req = ReplicaRequest::Get {
                shard,
                epoch,
                entities: rest[..take].to_vec(),
                max_bytes: CHUNK_BYTES as u64,
            };
            let entries = match self.bulk(name, addr, &req).await? {
                ReplicaResponse::Entries(e) => e?,
                _ => return Err(Stop::Failed(format!("{name}: a malformed entries reply"))),
            };
            // The answer holds the wanted entities in order, skipping any it no longer has,
            // and may stop short at its byte budget: go on after the last one it sent.
            let advanced = match entries.last() {
                Some(last) => rest[..take]
                    .iter()
                    .position(|e| *e == last.entity)
                    .map_or(take, |p| p + 1),
                None => take,
            };
            self.store_entries(shard, entries).await?;
            rest = &rest[advanced..];
        }
        Ok(())
    }

    /// Merges entries into this node's replica, durably.
    async fn store_entries(
        &self,
        shard: u32,
        entries: Vec<super::wire::Entry>,
    ) -> Result<(), Stop> {
        if entries.is_empty() {
            return Ok(());
        }
        let (rx, synced) = {
            let mut host = self.host(shard);
            let mut batch = super::StoreBatch::default();
            for e in entries {
                host.replica.merge(shard, e, &mut batch);
            }
            let stripe = self.inner.commits.stripe_of(shard);
            (
                self.inner.commits.submit(stripe, batch.writes),
                batch.synced,
            )
        };
        self.stored(shard, rx, &synced).await.map_err(Stop::Failed)
    }

    /// Step 3: this node's state on a majority of the new replica set.
    async fn install(&self, shard: u32, plan: &Plan) -> Result<(), Stop> {
        let epoch = plan.epoch;
        let rx = {
            let mut host = self.host(shard);
            if *host.mode() != Mode::Recovering || host.epoch != epoch {
                return Err(Stop::Failed("the shard's plan changed".into()));
            }
            // Writes this node numbered in this epoch already (it activates again after a
            // storage failure): the newest is in its replica, as nothing else writes in
            // this epoch. The new log numbers after it.
            let after = host
                .replica
                .index()
                .values()
                .filter(|v| v.epoch == epoch)
                .map(|v| v.seq)
                .max()
                .unwrap_or(0);
            if host.log.is_none() {
                let backups = plan
                    .replicas
                    .iter()
                    .filter(|(n, _)| *n != self.inner.name)
                    .cloned()
                    .collect();
                host.log = Some(PrimaryLog::new(epoch, backups).after(after));
            }
            let meta = &mut host.replica.meta;
            meta.installed = epoch;
            meta.applied = after;
            let meta = *meta;
            self.inner.commits.submit(
                self.inner.commits.stripe_of(shard),
                vec![Write::Meta { shard, meta }],
            )
        };
        self.stored(shard, rx, &[]).await.map_err(Stop::Failed)?;
        let deadline = Instant::now() + self.inner.settings.replica_timeout * 2;
        loop {
            let notified = self.inner.progress.notified();
            {
                let mut host = self.host(shard);
                if *host.mode() != Mode::Recovering || host.epoch != epoch {
                    return Err(Stop::Failed("the shard's plan changed".into()));
                }
                let Some(log) = host.log.as_ref() else {
                    return Err(Stop::Failed("the shard's log closed".into()));
                };
                let synced = log
                    .backups
                    .iter()
                    .filter(|b| b.progress == Progress::InSync)
                    .count();
                if synced + 1 >= log.majority() {
                    return Ok(());
                }
                let unsynced: Vec<usize> = (0..log.backups.len())
                    .filter(|i| log.backups[*i].progress == Progress::Unsynced)
                    .collect();
                for i in unsynced {
                    self.schedule_sync(&mut host, shard, i);
                }
            }
            if Instant::now() >= deadline {
                return Err(Stop::Failed(
                    "could not install the shard on a majority of its replicas".into(),
                ));
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
        }
    }
}
