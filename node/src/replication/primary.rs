//! The primary's side at run time: recording an actor's write, holding replies until the
//! log allows them, taking in the backups' answers, and stepping down.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tracing::{debug, info, warn};

use super::ReplicationEvent;
use super::lane::{Lane, LaneKind, LaneSink};
use super::log::Progress;
use super::wire::{Item, ItemReply};
use crate::entity::actor::{Command, Gate, Home, Ready, ReplyTo};
use crate::entity::runtime::{Runtime, RuntimeInner, lock};
use crate::entity::shard_host::{Mode, ShardHost};
use crate::entity::wire::{EntityRef, EntityRequest};
use crate::storage::{StoreError, Write};

impl Runtime {
    /// The lane of `kind` to `name`.
    pub(crate) fn lane(&self, name: &str, addr: SocketAddr, kind: LaneKind) -> Arc<Lane> {
        let inner = self.inner.clone();
        self.inner.lanes.get(name, addr, kind, move |f| {
            inner.spawn(f);
        })
    }

    /// Records an actor's write: numbers it, stores it here, appends it to the backups.
    /// Refused (with the reason) unless the shard serves in the actor's epoch.
    pub(crate) fn record_write(
        &self,
        home: Home,
        entity: &EntityRef,
        state: Option<Bytes>,
    ) -> Result<u64, String> {
        let mut host = self.host(home.shard);
        if !host.is_serving() || host.epoch != home.epoch || host.log.is_none() {
            return Err(format!(
                "shard {} is no longer served here in epoch {}",
                home.shard, home.epoch
            ));
        }
        Ok(self.write_locked(&mut host, home.shard, entity.clone(), state))
    }

    /// Numbers and replicates a write on a shard whose log exists (serving, or installing:
    /// restamps). Returns its sequence number.
    pub(crate) fn write_locked(
        &self,
        host: &mut ShardHost,
        shard: u32,
        entity: EntityRef,
        state: Option<Bytes>,
    ) -> u64 {
        let Some(log) = host.log.as_mut() else {
            return 0;
        };
        let epoch = log.epoch;
        let entry = log.assign(entity, state);
        let record = entry.record();
        host.replica.apply(&entry.entity, &record);
        if let Some(log) = host.log.as_ref() {
            for b in log
                .backups
                .iter()
                .filter(|b| b.progress == Progress::InSync)
            {
                self.lane(&b.name, b.addr, LaneKind::Data)
                    .push(Item::Append {
                        shard,
                        epoch,
                        entries: vec![entry.clone()],
                    });
            }
        }
        let weak = Arc::downgrade(&self.inner);
        let seq = entry.version.seq;
        let version = entry.version;
        let stored = entry.entity.clone();
        self.inner.commits.submit_then(
            self.inner.commits.stripe_of(shard),
            vec![Write::Entity {
                shard,
                entity: entry.entity,
                record,
            }],
            Box::new(move |result| {
                if let Some(inner) = weak.upgrade() {
                    Runtime::from_inner(inner).stored_here(shard, epoch, &stored, version, result);
                }
            }),
        );
        seq
    }

    /// A write of this node's log is durable here (or failed).
    fn stored_here(
        &self,
        shard: u32,
        epoch: u64,
        entity: &EntityRef,
        version: crate::storage::Version,
        result: Result<(), StoreError>,
    ) {
        if let Err(e) = result {
            self.fail_shard(shard, &e);
            return;
        }
        let mut host = self.host(shard);
        host.replica.synced(entity, version);
        let released = match host.log.as_mut() {
            Some(log) if log.epoch == epoch => log.local_durable(version.seq),
            _ => Vec::new(),
        };
        let committed = host.log.as_ref().map(|l| l.committed());
        drop(host);
        self.released(shard, epoch, committed, released);
    }

    /// Sends replies the log let go, and tells the observer.
    pub(super) fn released(
        &self,
        shard: u32,
        epoch: u64,
        committed: Option<u64>,
        replies: Vec<Ready>,
    ) {
        if replies.is_empty() {
            return;
        }
        if let Some(seq) = committed {
            self.inner
                .observe(ReplicationEvent::Committed { shard, epoch, seq });
        }
        for r in replies {
            r.send();
        }
        self.inner.progress.notify_waiters();
    }

    /// Holds an actor's reply until the log allows it.
    pub(crate) fn release(&self, home: Home, gate: Gate, ready: Ready) {
        let mut host = self.host(home.shard);
        let serving = host.is_serving() && host.epoch == home.epoch;
        let Some(log) = host
            .log
            .as_mut()
            .filter(|l| serving && l.epoch == home.epoch)
        else {
            drop(host);
            let why = format!("shard {} changed hands", home.shard);
            match gate {
                Gate::Write(_) => ready.fail_unknown(&why),
                Gate::Read => ready.retry(why, home.epoch),
            }
            return;
        };
        let now = match gate {
            Gate::Write(seq) => log.wait_write(seq, ready),
            Gate::Read => {
                let seq = log.last_seq();
                let needs = log
                    .backups
                    .iter()
                    .map(|b| {
                        self.lane(&b.name, b.addr, LaneKind::Data)
                            .want_confirm(home.shard, home.epoch)
                    })
                    .collect();
                log.wait_read(seq, needs, ready)
            }
        };
        drop(host);
        if let Some(r) = now {
            r.send();
        }
    }

    /// Ends this node's role as the shard's primary (or its recovery): waiting writes fail as
    /// unknown, waiting reads and buffered commands are retried elsewhere, actors stop.
    pub(crate) fn step_down(&self, shard: u32, host: &mut ShardHost, next: Mode, why: &str) {
        if let Some(t) = host.task.take() {
            t.abort();
        }
        if let Some(mut log) = host.log.take() {
            let (writes, reads) = log.close();
            for w in writes {
                w.fail_unknown(why);
            }
            for r in reads {
                r.retry(why.to_string(), log.epoch);
            }
            self.inner.observe(ReplicationEvent::SteppedDown {
                shard,
                epoch: log.epoch,
            });
        }
        let stopped = host.stop_actors();
        self.inner
            .active
            .fetch_sub(stopped, std::sync::atomic::Ordering::Relaxed);
        let buffered = std::mem::take(&mut host.buffer);
        let epoch = host.epoch;
        match &next {
            Mode::Moved { to, addr, epoch } => {
                self.forward_buffered(to.clone(), *addr, *epoch, buffered)
            }
            _ => {
                for (_, cmd) in buffered {
                    cmd.reply.retry(why.to_string(), epoch);
                }
            }
        }
        host.set_mode(next);
        host.complete = false;
        self.inner.progress.notify_waiters();
    }

    /// Sends commands buffered here to the shard's new primary, in order, and passes its
    /// answers back. Local asks are handed back instead: their sender resends them.
    fn forward_buffered(
        &self,
        to: String,
        addr: SocketAddr,
        epoch: u64,
        buffered: Vec<(EntityRef, Command)>,
    ) {
        if buffered.is_empty() {
            return;
        }
        debug!(node = %self.inner.name, to = %to, commands = buffered.len(), "forwarding buffered commands to the new primary");
        let rt = self.clone();
        self.inner.spawn(async move {
            for (target, cmd) in buffered {
                let Command {
                    payload,
                    chain,
                    reply,
                } = cmd;
                if matches!(reply, ReplyTo::Local(_)) {
                    reply.retry(format!("the shard moved to {to}"), epoch);
                    continue;
                }
                let Some(command) = payload.encoded() else {
                    continue;
                };
                let req = EntityRequest {
                    target,
                    command,
                    chain,
                    epoch,
                    forwarded: true,
                };
                let wants = !matches!(reply, ReplyTo::Nobody);
                let peer = shoal_transport::Peer::named(to.clone(), addr);
                if let Some(outcome) = rt.forward(peer, &req, wants).await {
                    reply.relay(outcome);
                }
            }
        });
    }

    /// A backup promised a newer epoch: this node is no longer the shard's primary.
    fn deposed(&self, shard: u32, epoch: u64, promised: u64) {
        let mut host = self.host(shard);
        if Self::leads(&host, epoch) {
            warn!(node = %self.inner.name, shard, epoch, promised, "a replica promised a newer epoch: stepping down");
            self.step_down(
                shard,
                &mut host,
                Mode::Idle,
                &format!("shard {shard}'s replicas moved on to epoch {promised}"),
            );
        }
    }

    /// Whether `host` is still this node's shard as primary of `epoch`: news for an older
    /// epoch's log (a backup that moved on) must not touch a newer activation, which finishes
    /// that log itself.
    pub(super) fn leads(host: &ShardHost, epoch: u64) -> bool {
        host.epoch == epoch && host.log.as_ref().is_some_and(|l| l.epoch == epoch)
    }

    /// Starts installing backup `i` of the shard (it must be `Unsynced`).
    pub(crate) fn schedule_sync(&self, host: &mut ShardHost, shard: u32, i: usize) {
        let Some(log) = host.log.as_mut() else { return };
        if log.backups[i].progress != Progress::Unsynced {
            return;
        }
        let from = log.start_sync(i);
        let digest = host.replica.digest();
        let (epoch, name, addr) = (log.epoch, log.backups[i].name.clone(), log.backups[i].addr);
        let rt = self.clone();
        self.inner.spawn(async move {
            rt.sync_backup(shard, epoch, name, addr, from, digest).await;
        });
    }

    /// Schedules the installation of every backup of a serving shard that needs one
    /// ([`Runtime::schedule_sync`] skips the others).
    pub(crate) fn resync_backups(&self, host: &mut ShardHost, shard: u32) {
        let backups = host.log.as_ref().map_or(0, |l| l.backups.len());
        for i in 0..backups {
            self.schedule_sync(host, shard, i);
        }
    }

    /// Publishes `shards_ready` once this node serves every shard it is primary for.
    pub(crate) fn publish_ready(&self) {
        let p = self.placement();
        let Some(table) = &p.table else { return };
        if p.epoch <= self.inner.ready.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let me = self.inner.name.as_str();
        let all = (0..self.inner.shards).all(|s| {
            !p.member || table.primary(shoal_sharding::ShardId(s)) != Some(me) || {
                let h = self.host(s);
                h.is_serving() && h.epoch == p.epoch
            }
        });
        if !all {
            return;
        }
        if self
            .inner
            .ready
            .fetch_max(p.epoch, std::sync::atomic::Ordering::SeqCst)
            >= p.epoch
        {
            return;
        }
        info!(node = %self.inner.name, epoch = p.epoch, "serving every shard this node is primary for");
        let membership = self.inner.membership.clone();
        let epoch = p.epoch;
        self.inner.spawn(async move {
            membership
                .set_key(shoal_membership::keys::SHARDS_READY, &epoch.to_string())
                .await;
        });
    }
}

impl LaneSink for RuntimeInner {
    fn on_append(&self, peer: &str, batch: u64, shard: u32, epoch: u64, reply: ItemReply) {
        let Some(rt) = self.me() else { return };
        let mut host = lock(&self.hosts[shard as usize]);
        let Some(log) = host.log.as_mut().filter(|l| l.epoch == epoch) else {
            return;
        };
        let Some(i) = log.backup(peer) else { return };
        match reply {
            ItemReply::Acked { applied } => {
                let released = log.acked(i, applied, batch);
                let committed = log.committed();
                drop(host);
                rt.released(shard, epoch, Some(committed), released);
            }
            ItemReply::Stale { promised } => {
                drop(host);
                rt.deposed(shard, epoch, promised);
            }
            _ => {
                if log.backups[i].progress == Progress::InSync {
                    log.unsynced(i);
                    if host.is_serving() {
                        rt.schedule_sync(&mut host, shard, i);
                    }
                }
            }
        }
    }

    fn on_confirm(&self, peer: &str, batch: u64, shard: u32, epoch: u64, ok: bool) {
        let Some(rt) = self.me() else { return };
        let mut host = lock(&self.hosts[shard as usize]);
        let Some(log) = host.log.as_mut().filter(|l| l.epoch == epoch) else {
            return;
        };
        let Some(i) = log.backup(peer) else { return };
        if ok {
            let released = log.confirmed(i, batch);
            drop(host);
            rt.released(shard, epoch, None, released);
        } else {
            // Not necessarily deposed: a backup whose storage failed does not confirm
            // either, and stepping down for it would take a healthy shard out of service
            // until the next epoch. Its answer just does not count; installing it again
            // tells which it is (`Stale` steps down, see `sync_backup`).
            if log.backups[i].progress == Progress::InSync {
                log.unsynced(i);
            }
            if host.is_serving() {
                rt.schedule_sync(&mut host, shard, i);
            }
        }
    }
}

impl RuntimeInner {
    /// A handle on this runtime, from inside it.
    fn me(&self) -> Option<Runtime> {
        self.self_ref
            .get()
            .and_then(|w| w.upgrade())
            .map(Runtime::from_inner)
    }
}
