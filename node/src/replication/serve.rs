//! The replica's side: answering primaries (appends, read confirmations, install) and new
//! primaries (fences, version lists, states). Every answer that promises something is sent
//! only once what it promises is durable.
//!
//! Fencing: a replica that promised epoch P answers `Stale` to anything of an older epoch.
//! An old primary that is fenced first finishes the writes it has in flight (bounded by the
//! drain timeout), so a planned handover fails no command that was already running.

use std::net::SocketAddr;
use std::time::Duration;

use shoal_transport::Inbound;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::info;

use super::wire::{Entry, Item, ItemReply, ReplicaError, ReplicaRequest, ReplicaResponse};
use super::{ReplicaShard, StoreBatch};
use crate::entity::runtime::Runtime;
use crate::entity::shard_host::Mode;
use crate::entity::wire::EntityRef;
use crate::storage::{StoreError, Version, Write};

/// A version-list page holds at most this many entries.
pub(crate) const VERSIONS_PAGE: u32 = 10_000;

/// An item whose answer waits for its writes to be durable.
enum Pending {
    Now(ItemReply),
    Durable {
        rx: oneshot::Receiver<Result<(), StoreError>>,
        shard: u32,
        synced: Vec<(EntityRef, Version)>,
        reply: ItemReply,
    },
    Fence {
        shard: u32,
        epoch: u64,
        primary: String,
        addr: SocketAddr,
    },
}

impl Runtime {
    pub(crate) async fn serve_replica(&self, msg: Inbound) {
        let req: ReplicaRequest = match msg.decode() {
            Ok(r) => r,
            Err(e) => {
                msg.reply_error(format!("undecodable replica request: {e}"));
                return;
            }
        };
        let resp = match req {
            ReplicaRequest::Batch { items, confirms } => self.serve_batch(items, confirms).await,
            ReplicaRequest::Versions {
                shard,
                epoch,
                after,
                limit,
            } => ReplicaResponse::Versions(self.serve_versions(shard, epoch, after, limit)),
            ReplicaRequest::Get {
                shard,
                epoch,
                entities,
                max_bytes,
            } => ReplicaResponse::Entries(self.serve_get(shard, epoch, entities, max_bytes).await),
            ReplicaRequest::Install {
                shard,
                epoch,
                entries,
                done,
            } => ReplicaResponse::Installed(self.serve_install(shard, epoch, entries, done).await),
        };
        if self.buggify() {
            // A slow replica: its answer comes late.
            let pause = Duration::from_millis(self.inner.rng.below(300));
            tokio::time::sleep(pause).await;
        }
        msg.reply(&resp);
    }

    /// Whether a seeded fault fires here (simulator only).
    pub(crate) fn buggify(&self) -> bool {
        self.inner.settings.buggify && self.inner.rng.below(100) < 3
    }

    fn valid_shard(&self, shard: u32) -> Result<(), String> {
        if shard < self.inner.shards {
            Ok(())
        } else {
            Err(format!(
                "shard {shard} does not exist here ({} shards)",
                self.inner.shards
            ))
        }
    }

    /// Whether replica `r` may serve a request of `epoch`: its storage works and it has not
    /// promised a newer epoch.
    fn usable(&self, r: &ReplicaShard, epoch: u64) -> Result<(), ReplicaError> {
        if let Some(why) = &r.failed {
            return Err(ReplicaError::Failed(why.clone()));
        }
        if self.fenced(r.meta.promised, epoch) {
            return Err(ReplicaError::Stale {
                promised: r.meta.promised,
            });
        }
        Ok(())
    }

    /// Whether a replica that promised `promised` refuses `epoch`.
    fn fenced(&self, promised: u64, epoch: u64) -> bool {
        promised > epoch && !self.inner.settings.fencing_bug
    }

    async fn serve_batch(&self, items: Vec<Item>, confirms: Vec<(u32, u64)>) -> ReplicaResponse {
        let confirms = confirms
            .into_iter()
            .map(|(shard, epoch)| {
                self.valid_shard(shard).is_ok() && {
                    let h = self.host(shard);
                    h.replica.failed.is_none() && !self.fenced(h.replica.meta.promised, epoch)
                }
            })
            .collect();
        let pending: Vec<Pending> = items.into_iter().map(|i| self.prepare(i)).collect();
        let mut replies = Vec::with_capacity(pending.len());
        let mut fences = Vec::new();
        for (n, p) in pending.into_iter().enumerate() {
            match p {
                Pending::Now(r) => replies.push(r),
                Pending::Durable {
                    rx,
                    shard,
                    synced,
                    reply,
                } => replies.push(match self.stored(shard, rx, &synced).await {
                    Ok(()) => reply,
                    Err(why) => ItemReply::Failed(why),
                }),
                Pending::Fence {
                    shard,
                    epoch,
                    primary,
                    addr,
                } => {
                    replies.push(ItemReply::NeedInstall);
                    fences.push((n, shard, epoch, primary, addr));
                }
            }
        }
        for (n, reply) in self.serve_fences(fences).await {
            replies[n] = reply;
        }
        ReplicaResponse::Batch {
            items: replies,
            confirms,
        }
    }

    /// The synchronous part of an item: checks, applies, queues the writes.
    fn prepare(&self, item: Item) -> Pending {
        let shard = match &item {
            Item::Append { shard, .. } | Item::Fence { shard, .. } | Item::Begin { shard, .. } => {
                *shard
            }
        };
        if let Err(e) = self.valid_shard(shard) {
            return Pending::Now(ItemReply::Failed(e));
        }
        let mut host = self.host(shard);
        if let Some(why) = &host.replica.failed {
            return Pending::Now(ItemReply::Failed(format!(
                "shard {shard} on {}: {why}",
                self.inner.name
            )));
        }
        let stripe = self.inner.commits.stripe_of(shard);
        match item {
            Item::Append { epoch, entries, .. } => {
                let r = &mut host.replica;
                if self.fenced(r.meta.promised, epoch) {
                    return Pending::Now(ItemReply::Stale {
                        promised: r.meta.promised,
                    });
                }
                let bug = self.inner.settings.fencing_bug && r.meta.installed != epoch;
                if r.meta.installed != epoch && !bug {
                    return Pending::Now(ItemReply::NeedInstall);
                }
                let mut batch = StoreBatch::default();
                let mut gap = false;
                for e in entries {
                    let seq = e.version.seq;
                    if !bug {
                        if seq <= r.meta.applied {
                            continue;
                        }
                        if seq != r.meta.applied + 1 {
                            gap = true;
                            break;
                        }
                        r.meta.applied = seq;
                    }
                    r.merge(shard, e, &mut batch);
                    if bug {
                        r.meta.applied = r.meta.applied.max(seq);
                    }
                }
                batch.writes.push(Write::Meta {
                    shard,
                    meta: r.meta,
                });
                let applied = r.meta.applied;
                Pending::Durable {
                    rx: self.inner.commits.submit(stripe, batch.writes),
                    shard,
                    synced: batch.synced,
                    reply: if gap {
                        ItemReply::NeedInstall
                    } else {
                        ItemReply::Acked { applied }
                    },
                }
            }
            Item::Begin {
                epoch,
                digest,
                through,
                ..
            } => {
                let r = &mut host.replica;
                if self.fenced(r.meta.promised, epoch) {
                    return Pending::Now(ItemReply::Stale {
                        promised: r.meta.promised,
                    });
                }
                r.meta.promised = r.meta.promised.max(epoch);
                let same = r.digest() == digest;
                if same {
                    r.meta.installed = epoch;
                    r.meta.applied = through;
                }
                Pending::Durable {
                    rx: self.inner.commits.submit(
                        stripe,
                        vec![Write::Meta {
                            shard,
                            meta: r.meta,
                        }],
                    ),
                    shard,
                    synced: Vec::new(),
                    reply: if same {
                        ItemReply::Installed
                    } else {
                        ItemReply::Differs
                    },
                }
            }
            Item::Fence {
                epoch,
                primary,
                addr,
                ..
            } => {
                if self.fenced(host.replica.meta.promised, epoch) {
                    return Pending::Now(ItemReply::Stale {
                        promised: host.replica.meta.promised,
                    });
                }
                if host.log.as_ref().is_some_and(|l| l.epoch >= epoch) {
                    return Pending::Now(ItemReply::Failed(format!(
                        "{} is the primary of shard {shard} in epoch {epoch} itself",
                        self.inner.name
                    )));
                }
                if host.is_serving() {
                    host.set_mode(Mode::Draining);
                }
                Pending::Fence {
                    shard,
                    epoch,
                    primary,
                    addr,
                }
            }
        }
    }

    /// Fences shards for their new primaries. Where this node was the primary, its writes in
    /// flight finish first (at most the drain timeout), then it hands over.
    async fn serve_fences(
        &self,
        fences: Vec<(usize, u32, u64, String, SocketAddr)>,
    ) -> Vec<(usize, ItemReply)> {
        if fences.is_empty() {
            return Vec::new();
        }
        let deadline = Instant::now() + self.inner.settings.drain_timeout;
        loop {
            let notified = self.inner.progress.notified();
            let busy = fences
                .iter()
                .any(|(_, s, ..)| self.host(*s).log.as_ref().is_some_and(|l| l.pending()));
            if !busy || Instant::now() >= deadline {
                break;
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
        let mut pending = Vec::new();
        for (n, shard, epoch, primary, addr) in fences {
            let mut host = self.host(shard);
            if self.fenced(host.replica.meta.promised, epoch) {
                pending.push((
                    n,
                    None,
                    ItemReply::Stale {
                        promised: host.replica.meta.promised,
                    },
                ));
                continue;
            }
            if matches!(host.mode(), Mode::Recovering) && host.epoch > epoch {
                // This node recovers the shard for a newer epoch than the fencer's.
                pending.push((
                    n,
                    None,
                    ItemReply::Stale {
                        promised: host.epoch,
                    },
                ));
                continue;
            }
            let was_primary = host.log.is_some()
                || matches!(
                    host.mode(),
                    Mode::Recovering | Mode::Draining | Mode::Serving
                );
            if was_primary && !matches!(host.mode(), Mode::Failed { .. }) {
                info!(node = %self.inner.name, shard, epoch, to = %primary, "handing the shard over to its new primary");
                self.step_down(
                    shard,
                    &mut host,
                    Mode::Moved {
                        to: primary.clone(),
                        addr,
                        epoch,
                    },
                    &format!("shard {shard} moved to {primary}"),
                );
            }
            let r = &mut host.replica;
            r.meta.promised = r.meta.promised.max(epoch);
            let reply = ItemReply::Promised {
                installed: r.meta.installed,
                digest: r.digest(),
                entities: r.len() as u64,
            };
            let rx = self.inner.commits.submit(
                self.inner.commits.stripe_of(shard),
                vec![Write::Meta {
                    shard,
                    meta: r.meta,
                }],
            );
            pending.push((n, Some((shard, rx)), reply));
        }
        let mut out = Vec::new();
        for (n, rx, reply) in pending {
            let reply = match rx {
                None => reply,
                Some((shard, rx)) => match self.stored(shard, rx, &[]).await {
                    Ok(()) => reply,
                    Err(why) => ItemReply::Failed(why),
                },
            };
            out.push((n, reply));
        }
        out
    }

    fn serve_versions(
        &self,
        shard: u32,
        epoch: u64,
        after: Option<EntityRef>,
        limit: u32,
    ) -> Result<Vec<(EntityRef, Version)>, ReplicaError> {
        self.valid_shard(shard).map_err(ReplicaError::Failed)?;
        let host = self.host(shard);
        self.usable(&host.replica, epoch)?;
        Ok(host
            .replica
            .versions(after.as_ref(), limit.min(VERSIONS_PAGE) as usize))
    }

    /// Records of `entities`, about `max_bytes` at most (at least one).
    async fn serve_get(
        &self,
        shard: u32,
        epoch: u64,
        entities: Vec<EntityRef>,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, ReplicaError> {
        self.valid_shard(shard).map_err(ReplicaError::Failed)?;
        self.usable(&self.host(shard).replica, epoch)?;
        let mut out = Vec::new();
        let mut size = 0u64;
        for entity in entities {
            if !out.is_empty() && size >= max_bytes {
                break;
            }
            let Some(record) = self.read_record(shard, &entity).await? else {
                continue;
            };
            let e = Entry {
                entity,
                version: record.version,
                state: record.state,
            };
            size += e.size() as u64;
            out.push(e);
        }
        Ok(out)
    }

    /// This node's newest record of `entity`: not yet durable, or from the store.
    pub(crate) async fn read_record(
        &self,
        shard: u32,
        entity: &EntityRef,
    ) -> Result<Option<crate::storage::Record>, ReplicaError> {
        if let Some(r) = self.host(shard).replica.unsynced(entity) {
            return Ok(Some(r.clone()));
        }
        match self.inner.store.read(shard, entity).await {
            Ok(r) => Ok(r),
            Err(e) => Err(ReplicaError::Failed(self.fail_shard(shard, &e))),
        }
    }

    async fn serve_install(
        &self,
        shard: u32,
        epoch: u64,
        entries: Vec<Entry>,
        done: Option<u64>,
    ) -> Result<(), ReplicaError> {
        self.valid_shard(shard).map_err(ReplicaError::Failed)?;
        let (rx, synced) = {
            let mut host = self.host(shard);
            self.usable(&host.replica, epoch)?;
            let r = &mut host.replica;
            r.meta.promised = r.meta.promised.max(epoch);
            let mut batch = StoreBatch::default();
            for e in entries {
                r.merge(shard, e, &mut batch);
            }
            if let Some(through) = done {
                let before = if r.meta.installed == epoch {
                    r.meta.applied
                } else {
                    0
                };
                r.meta.installed = epoch;
                r.meta.applied = before.max(through);
            }
            batch.writes.push(Write::Meta {
                shard,
                meta: r.meta,
            });
            let stripe = self.inner.commits.stripe_of(shard);
            (
                self.inner.commits.submit(stripe, batch.writes),
                batch.synced,
            )
        };
        self.stored(shard, rx, &synced)
            .await
            .map_err(ReplicaError::Failed)
    }
}
