//! Hosting entities on the shards this node serves: activation on the first message (from
//! the replica store), passivation when idle or when the node holds too many, and the
//! buffers of shards that are not serving yet.

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use shoal_sharding::ShardId;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::Instant;
use tracing::{debug, error, warn};

use super::actor::{ActorMsg, Command, Home};
use super::error::AskError;
use super::runtime::{Runtime, RuntimeInner};
use super::shard_host::{Active, Mode, RECEIVE_BUFFER};
use super::wire::{EntityKey, EntityRef};
use crate::storage::{Durable, Record, StoreError, Version, Write};

/// What a delivery does next.
enum Step {
    Done,
    Refused(Command, String),
    /// The entity's actor is stopping: wait until it has ended.
    WaitEnded(std::sync::Arc<tokio::sync::Notify>, Command),
    /// The entity's state must be read from the store first.
    Read(Command),
    Send(tokio::sync::mpsc::Sender<ActorMsg>, Command),
}

impl Runtime {
    /// Delivers a command to a shard hosted here. On refusal, gives the command back with the
    /// reason, for a retry.
    pub(crate) async fn deliver_local(
        &self,
        shard: ShardId,
        target: EntityRef,
        cmd: Command,
    ) -> Result<(), (Command, String)> {
        if let Some(why) = self.cannot_serve() {
            return Err((cmd, why));
        }
        let Some(kind) = self.inner.kinds.get(&target.kind).cloned() else {
            cmd.reply.fail(AskError::UnknownKind(target.kind.clone()));
            return Ok(());
        };
        let mut cmd = cmd;
        // A record read from the store, for an entity not active yet.
        let mut loaded: Option<Option<Record>> = None;
        loop {
            match self.delivery_step(shard, &target, &kind, cmd, &loaded) {
                Step::Done => return Ok(()),
                Step::Refused(back, why) => return Err((back, why)),
                Step::WaitEnded(ended, back) => {
                    let _ = tokio::time::timeout(Duration::from_millis(20), ended.notified()).await;
                    cmd = back;
                }
                Step::Read(back) => {
                    match self.inner.store.read(shard.0, &target).await {
                        Ok(r) => loaded = Some(r),
                        Err(e) => {
                            let reason = self.fail_shard(shard.0, &e);
                            back.reply.fail(AskError::Unavailable(reason));
                            return Ok(());
                        }
                    }
                    cmd = back;
                }
                Step::Send(tx, back) => match tx.send(ActorMsg::Command(back)).await {
                    Ok(()) => return Ok(()),
                    // The actor ended in between (passivation, handover, a refused write):
                    // wait until it has left, then start another.
                    Err(e) => match e.0 {
                        ActorMsg::Command(back) => {
                            let ended = {
                                let host = self.host(shard.0);
                                let gone = !host
                                    .active
                                    .get(&target)
                                    .is_some_and(|a| a.tx.same_channel(&tx));
                                (!gone).then(|| host.ended.clone())
                            };
                            if let Some(ended) = ended {
                                let _ = tokio::time::timeout(
                                    Duration::from_millis(20),
                                    ended.notified(),
                                )
                                .await;
                            }
                            cmd = back;
                        }
                        ActorMsg::Stop => return Ok(()),
                    },
                },
            }
        }
    }

    /// Puts a tell straight into the mailbox of its entity's running actor, looked up
    /// without allocating, if the shard serves here (the caller checked this node may
    /// serve). Gives the command back when there is no such actor (see
    /// [`Runtime::tell_slow`]). Tells are at most once: a full mailbox drops the tell and
    /// counts it in `shoal_tells_dropped_total`, so a flood costs bounded memory and never
    /// a task per message.
    pub(crate) fn tell_active(
        &self,
        shard: ShardId,
        kind: &str,
        id: &str,
        cmd: Command,
    ) -> Option<Command> {
        let mut guard = self.host(shard.0);
        let host = &mut *guard;
        if !host.is_serving() {
            return Some(cmd);
        }
        let Some(a) = host.active.get_mut(&(kind, id) as &dyn EntityKey) else {
            return Some(cmd);
        };
        if a.stopping {
            return Some(cmd);
        }
        a.used = true;
        match a.tx.try_send(ActorMsg::Command(cmd)) {
            Ok(()) | Err(TrySendError::Closed(ActorMsg::Stop)) => None,
            Err(TrySendError::Full(_)) => {
                drop(guard);
                self.inner.metrics.kind(kind).tells_dropped.inc();
                debug!(kind, id, "mailbox full: tell dropped");
                None
            }
            Err(TrySendError::Closed(ActorMsg::Command(cmd))) => Some(cmd),
        }
    }

    /// A tell whose entity has no actor taking commands: the actor starts here if its state
    /// needs no store read, the shard buffers it while it recovers, and only what must wait
    /// (a store read, an actor ending) goes through a task.
    pub(crate) fn tell_slow(&self, shard: ShardId, target: EntityRef, cmd: Command) {
        let Some(kind) = self.inner.kinds.get(&target.kind) else {
            debug!(%target, "tell to an unknown kind dropped");
            return;
        };
        let later = match self.delivery_step(shard, &target, kind, cmd, &None) {
            Step::Done => return,
            Step::Refused(_, why) => {
                debug!(%target, reason = %why, "tell dropped");
                return;
            }
            Step::Send(tx, cmd) => match tx.try_send(ActorMsg::Command(cmd)) {
                Ok(()) => return,
                Err(TrySendError::Full(_)) => {
                    self.inner.metrics.kind(&target.kind).tells_dropped.inc();
                    debug!(%target, "mailbox full: tell dropped");
                    return;
                }
                Err(TrySendError::Closed(ActorMsg::Command(cmd))) => cmd,
                Err(TrySendError::Closed(ActorMsg::Stop)) => return,
            },
            Step::Read(cmd) | Step::WaitEnded(_, cmd) => cmd,
        };
        let rt = self.clone();
        self.inner.spawn(async move {
            let _ = rt.deliver_local(shard, target, later).await;
        });
    }

    /// One step of a delivery, under the shard's lock.
    fn delivery_step(
        &self,
        shard: ShardId,
        target: &EntityRef,
        kind: &std::sync::Arc<dyn super::actor::ErasedKind>,
        cmd: Command,
        loaded: &Option<Option<Record>>,
    ) -> Step {
        let mut host = self.host(shard.0);
        match host.mode() {
            Mode::Serving => {}
            Mode::Recovering | Mode::Draining => {
                if host.buffer.len() >= RECEIVE_BUFFER {
                    let state = format!("{:?}", host.mode()).to_lowercase();
                    drop(host);
                    cmd.reply.fail(AskError::Unavailable(format!(
                        "shard {shard} is {state} and its buffer of {RECEIVE_BUFFER} commands is full"
                    )));
                } else {
                    host.buffer.push((target.clone(), cmd));
                }
                return Step::Done;
            }
            Mode::Failed { reason, .. } => {
                let reason = reason.clone();
                drop(host);
                cmd.reply.fail(AskError::Unavailable(reason));
                return Step::Done;
            }
            Mode::Idle | Mode::Moved { .. } => {
                let why = format!("shard {shard} is not served here (epoch {})", host.epoch);
                return Step::Refused(cmd, why);
            }
        }
        let now = Instant::now();
        if let Some(a) = host.active.get_mut(target) {
            if a.stopping {
                return Step::WaitEnded(host.ended.clone(), cmd);
            }
            a.last_used = now;
            return Step::Send(a.tx.clone(), cmd);
        }
        let held = host.replica.version(target);
        let state: Option<Bytes> = match host.replica.unsynced(target) {
            Some(r) => r.state.clone(),
            None if held.is_none() => None,
            None => match loaded {
                Some(Some(r)) if Some(r.version) == held => r.state.clone(),
                _ => return Step::Read(cmd),
            },
        };
        let home = Home {
            shard: shard.0,
            epoch: host.epoch,
            id: self.inner.actor_ids.fetch_add(1, Ordering::Relaxed),
        };
        match kind.spawn(
            std::sync::Arc::downgrade(&self.inner),
            target.clone(),
            home,
            state,
        ) {
            Ok(tx) => {
                host.active.insert(
                    target.clone(),
                    Active {
                        tx: tx.clone(),
                        last_used: now,
                        used: false,
                        id: home.id,
                        stopping: false,
                    },
                );
                self.inner.active.fetch_add(1, Ordering::Relaxed);
                Step::Send(tx, cmd)
            }
            Err(e) => {
                drop(host);
                cmd.reply.fail(e);
                Step::Done
            }
        }
    }

    /// Takes `shard` out of service here after a storage error; returns the reason given to
    /// askers. A write error (a full disk) is retried after a while; corruption is not.
    pub(crate) fn fail_shard(&self, shard: u32, e: &StoreError) -> String {
        let reason = format!("shard {shard} on {}: {e}", self.inner.name);
        let retry = match e {
            StoreError::Io(_) => Some(Instant::now() + Duration::from_secs(5)),
            StoreError::Corrupt(_) => None,
        };
        error!(node = %self.inner.name, shard, error = %e, "storage failed: the shard is out of service here");
        let mut host = self.host(shard);
        host.replica.failed = Some(e.to_string());
        self.step_down(
            shard,
            &mut host,
            Mode::Failed {
                reason: reason.clone(),
                retry,
            },
            // Writes waiting for the store learn why (a full disk...), not just that.
            &reason,
        );
        reason
    }

    /// Waits for a commit of `shard`'s writes (`rx`, from the group committer). Once it is
    /// durable the records in `synced` count as stored in the replica; a storage error
    /// takes the shard out of service here. `Err` says why, for the caller's answer.
    pub(crate) async fn stored(
        &self,
        shard: u32,
        rx: Durable,
        synced: &[(EntityRef, Version)],
    ) -> Result<(), String> {
        match rx.await {
            Ok(Ok(())) => {
                let mut host = self.host(shard);
                for (e, v) in synced {
                    host.replica.synced(e, *v);
                }
                Ok(())
            }
            Ok(Err(e)) => Err(self.fail_shard(shard, &e)),
            Err(_) => Err("the node is stopping".into()),
        }
    }

    /// Delivers commands buffered while a shard was not serving.
    pub(crate) async fn flush(&self, shard: ShardId, buffered: Vec<(EntityRef, Command)>) {
        for (target, cmd) in buffered {
            if let Err((cmd, why)) = self.deliver_local(shard, target, cmd).await {
                cmd.reply.retry(why, self.epoch());
            }
        }
    }

    /// Idle entities are passivated; beyond the active limit, the least recently used too.
    /// Shards whose storage failed for a while are tried again.
    async fn maintain_once(&self) {
        let now = Instant::now();
        let idle = self.inner.settings.idle_after;
        let over = self
            .active_entities()
            .saturating_sub(self.inner.settings.max_active);
        // Shards out of service after a storage failure, due for another try.
        let retry: Vec<u32> = self
            .inner
            .modes
            .failed
            .shards()
            .filter(|&s| {
                matches!(self.host(s).mode(), Mode::Failed { retry: Some(at), .. } if *at <= now)
            })
            .collect();
        // Pass 1, over the serving shards only (the others have no actors): last uses
        // brought up to date; with too many active, the ages of all of them, to find the
        // newest last use among the `over` least recently used; backups that need an
        // installation get one.
        let mut ages: Vec<Instant> = Vec::new();
        let mut oldest: Option<Instant> = None;
        for s in self.inner.modes.serving.shards() {
            let mut host = self.host(s);
            if !host.is_serving() {
                continue;
            }
            for a in host.active.values_mut().filter(|a| !a.stopping) {
                if std::mem::take(&mut a.used) {
                    a.last_used = now;
                }
                oldest = Some(oldest.map_or(a.last_used, |o| o.min(a.last_used)));
                if over > 0 {
                    ages.push(a.last_used);
                }
            }
            self.resync_backups(&mut host, s);
        }
        for s in retry {
            self.retry_storage(s).await;
        }
        // Nothing idle and nothing over the limit: no second pass.
        if over == 0 && oldest.is_none_or(|o| now.duration_since(o) < idle) {
            return;
        }
        // The `over` oldest: all older than the cutoff, and enough of those at it (many share
        // one last use: the pass that noticed them).
        let (lru_cutoff, mut at_cutoff) = match over.min(ages.len()) {
            0 => (None, 0),
            n => {
                let cutoff = *ages.select_nth_unstable(n - 1).1;
                let older = ages.iter().filter(|t| **t < cutoff).count();
                (Some(cutoff), n - older)
            }
        };
        // Pass 2: the idle and those least recently used stop (no key is copied, no list of
        // every entity sorted: with 100 000 active this runs every half second).
        for s in self.inner.modes.serving.shards() {
            let mut host = self.host(s);
            if !host.is_serving() {
                continue;
            }
            for a in host.active.values_mut().filter(|a| !a.stopping) {
                let idle_now = now.duration_since(a.last_used) >= idle;
                let lru = match lru_cutoff {
                    Some(c) if a.last_used < c => true,
                    Some(c) if a.last_used == c && at_cutoff > 0 => {
                        at_cutoff -= 1;
                        true
                    }
                    _ => false,
                };
                if (idle_now || lru) && a.tx.try_send(ActorMsg::Stop).is_ok() {
                    a.stopping = true;
                }
            }
        }
    }

    /// Tries a shard's storage again after an I/O error. First the records this node took in
    /// but could not store (the failed writes) are written again, with the shard's metadata:
    /// what the replica claims to hold (its versions and digest, which installs and
    /// recoveries compare) must be on disk before anyone counts on it. Then the shard is
    /// back in service here.
    async fn retry_storage(&self, s: u32) {
        let (rx, synced) = {
            let host = self.host(s);
            let mut batch = crate::replication::StoreBatch::default();
            for (entity, record) in host.replica.unsynced_records() {
                batch.record(s, entity.clone(), record.clone());
            }
            batch.writes.push(Write::Meta {
                shard: s,
                meta: host.replica.meta,
            });
            let stripe = self.inner.commits.stripe_of(s);
            (
                self.inner.commits.submit(stripe, batch.writes),
                batch.synced,
            )
        };
        warn!(node = %self.inner.name, shard = s, unstored = synced.len(), "trying the shard's storage again");
        if self.stored(s, rx, &synced).await.is_err() {
            return;
        }
        let mut host = self.host(s);
        if !matches!(host.mode(), Mode::Failed { .. }) {
            return;
        }
        host.replica.failed = None;
        host.set_mode(Mode::Idle);
        drop(host);
        self.reconsider(s);
    }

    /// An actor ended: it leaves the shard, and a new one of its entity may start.
    pub(crate) fn actor_ended(&self, home: Home, me: &EntityRef) {
        let mut host = self.host(home.shard);
        if host.active.get(me).is_some_and(|a| a.id == home.id) {
            host.active.remove(me);
            self.inner.active.fetch_sub(1, Ordering::Relaxed);
        }
        host.ended.notify_waiters();
    }
}

pub(crate) async fn maintain(weak: Weak<RuntimeInner>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(rt) = weak.upgrade() else { return };
        Runtime::from_inner(rt).maintain_once().await;
    }
}
