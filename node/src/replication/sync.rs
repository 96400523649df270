//! Installing a backup: bringing one replica of a shard level with its primary, so that it
//! can take appends. Used when a primary activates (on a majority of its replica set before
//! it serves, on the rest after) and whenever a backup fell behind (it restarted, a batch
//! to it was lost, it lagged past the tail).
//!
//! 1. `Begin` with the primary's digest: equal digests mean the backup holds exactly the
//!    primary's versions (the common case after a change that did not touch the shard).
//! 2. Otherwise the primary reads the backup's version list and computes the difference:
//!    it sends what is newer on its side, and writes again, under new versions, the entities
//!    where the backup is ahead (writes no majority ever stored, left by a deposed primary),
//!    so that the backup's versions only ever grow.
//! 3. The states go in chunks of about [`CHUNK_BYTES`]; the last `Install` completes it.
//!    Writes made meanwhile reach the backup from the log's tail.

use std::net::SocketAddr;

use shoal_transport::Peer;
use tracing::{debug, warn};

use super::lane::LaneKind;
use super::log::Progress;
use super::replica::diff;
use super::serve::VERSIONS_PAGE;
use super::wire::{Entry, Item, ItemReply, REPLICA_SERVICE, ReplicaRequest, ReplicaResponse};
use crate::entity::runtime::Runtime;
use crate::entity::wire::EntityRef;
use crate::storage::Version;

/// An install or pull chunk carries about this many bytes.
pub(crate) const CHUNK_BYTES: usize = 1 << 20;

/// Why a sync or a pull stopped.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The peer promised a newer epoch.
    Stale(u64),
    Failed(String),
}

impl From<super::wire::ReplicaError> for Stop {
    fn from(e: super::wire::ReplicaError) -> Self {
        match e {
            super::wire::ReplicaError::Stale { promised } => Stop::Stale(promised),
            other => Stop::Failed(other.to_string()),
        }
    }
}

impl Runtime {
    /// One bulk request to `name`.
    pub(crate) async fn bulk(
        &self,
        name: &str,
        addr: SocketAddr,
        req: &ReplicaRequest,
    ) -> Result<ReplicaResponse, Stop> {
        let _permit = self
            .inner
            .bulk
            .acquire()
            .await
            .map_err(|_| Stop::Failed("the node is stopping".into()))?;
        self.inner
            .transport
            .request::<_, ReplicaResponse>(
                Peer::named(name, addr),
                REPLICA_SERVICE,
                req,
                self.inner.settings.replica_timeout,
            )
            .await
            .map_err(|e| Stop::Failed(format!("{name}: {e}")))
    }

    /// Every `(entity, version)` `name` holds for `shard`.
    pub(crate) async fn fetch_versions(
        &self,
        shard: u32,
        epoch: u64,
        name: &str,
        addr: SocketAddr,
    ) -> Result<Vec<(EntityRef, Version)>, Stop> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let req = ReplicaRequest::Versions {
                shard,
                epoch,
                after: after.clone(),
                limit: VERSIONS_PAGE,
            };
            let page = match self.bulk(name, addr, &req).await? {
                ReplicaResponse::Versions(p) => p?,
                _ => return Err(Stop::Failed(format!("{name}: a malformed versions reply"))),
            };
            let full = page.len() == VERSIONS_PAGE as usize;
            after = page.last().map(|(e, _)| e.clone());
            all.extend(page);
            if !full {
                return Ok(all);
            }
        }
    }

    /// Installs backup `name` of `shard` up to `from`, the primary's newest write when the
    /// sync began (its digest then was `digest`).
    pub(crate) async fn sync_backup(
        &self,
        shard: u32,
        epoch: u64,
        name: String,
        addr: SocketAddr,
        from: u64,
        digest: u64,
    ) {
        match self.try_sync(shard, epoch, &name, addr, from, digest).await {
            Ok(()) => {
                let mut host = self.host(shard);
                let Some(log) = host.log.as_mut().filter(|l| l.epoch == epoch) else {
                    return;
                };
                let Some(i) = log.backup(&name) else { return };
                if log.backups[i].progress != (Progress::Syncing { from }) {
                    return;
                }
                let (rest, released) = log.installed(i, from);
                let committed = log.committed();
                if !rest.is_empty() {
                    self.lane(&name, addr, LaneKind::Data).push(Item::Append {
                        shard,
                        epoch,
                        entries: rest,
                    });
                }
                drop(host);
                debug!(node = %self.inner.name, shard, epoch, backup = %name, through = from, "backup installed");
                self.released(shard, epoch, Some(committed), released);
                self.inner.progress.notify_waiters();
            }
            Err(stop) => {
                let mut host = self.host(shard);
                if let Some(log) = host.log.as_mut().filter(|l| l.epoch == epoch)
                    && let Some(i) = log.backup(&name)
                    && log.backups[i].progress == (Progress::Syncing { from })
                {
                    log.unsynced(i);
                }
                drop(host);
                match stop {
                    Stop::Stale(promised) => {
                        warn!(node = %self.inner.name, shard, epoch, backup = %name, promised, "backup promised a newer epoch");
                        let mut host = self.host(shard);
                        if Self::leads(&host, epoch) {
                            self.step_down(
                                shard,
                                &mut host,
                                crate::entity::shard_host::Mode::Idle,
                                &format!("shard {shard}'s replicas moved on to epoch {promised}"),
                            );
                        }
                    }
                    Stop::Failed(why) => {
                        debug!(node = %self.inner.name, shard, epoch, backup = %name, error = %why, "backup install failed; will retry");
                    }
                }
                self.inner.progress.notify_waiters();
            }
        }
    }

    async fn try_sync(
        &self,
        shard: u32,
        epoch: u64,
        name: &str,
        addr: SocketAddr,
        from: u64,
        digest: u64,
    ) -> Result<(), Stop> {
        let reply = self
            .lane(name, addr, LaneKind::Control)
            .call(Item::Begin {
                shard,
                epoch,
                digest,
                through: from,
            })
            .await
            .map_err(|_| Stop::Failed("the node is stopping".into()))?;
        match reply {
            ItemReply::Installed => return Ok(()),
            ItemReply::Differs => {}
            ItemReply::Stale { promised } => return Err(Stop::Stale(promised)),
            other => return Err(Stop::Failed(format!("{name}: {other:?}"))),
        }
        let theirs = self.fetch_versions(shard, epoch, name, addr).await?;
        let d = {
            let host = self.host(shard);
            diff(host.replica.index(), &theirs)
        };
        // Where the backup is ahead, write our state again under a new version.
        for entity in &d.restamp {
            let record = self
                .read_record(shard, entity)
                .await
                .map_err(|e| Stop::Failed(e.to_string()))?;
            let mut host = self.host(shard);
            if host.log.as_ref().is_none_or(|l| l.epoch != epoch) {
                return Err(Stop::Failed("the shard changed hands".into()));
            }
            if host.replica.version(entity) == record.as_ref().map(|r| r.version) {
                let state = record.and_then(|r| r.state);
                self.write_locked(&mut host, shard, entity.clone(), state);
            }
        }
        let mut send: Vec<EntityRef> = d.send;
        send.extend(d.restamp);
        let mut chunk: Vec<Entry> = Vec::new();
        let mut size = 0;
        for entity in send {
            let Some(record) = self
                .read_record(shard, &entity)
                .await
                .map_err(|e| Stop::Failed(e.to_string()))?
            else {
                continue;
            };
            let e = Entry {
                entity,
                version: record.version,
                state: record.state,
            };
            size += e.size();
            chunk.push(e);
            if size >= CHUNK_BYTES {
                self.install_chunk(shard, epoch, name, addr, std::mem::take(&mut chunk), None)
                    .await?;
                size = 0;
            }
        }
        self.install_chunk(shard, epoch, name, addr, chunk, Some(from))
            .await
    }

    async fn install_chunk(
        &self,
        shard: u32,
        epoch: u64,
        name: &str,
        addr: SocketAddr,
        entries: Vec<Entry>,
        done: Option<u64>,
    ) -> Result<(), Stop> {
        if self.buggify() {
            return Err(Stop::Failed("a chunk was lost (buggify)".into()));
        }
        let req = ReplicaRequest::Install {
            shard,
            epoch,
            entries,
            done,
        };
        match self.bulk(name, addr, &req).await? {
            ReplicaResponse::Installed(r) => Ok(r?),
            _ => Err(Stop::Failed(format!("{name}: a malformed install reply"))),
        }
    }
}
