//! The entity runtime of a node: the shards it holds, the entities active on it, and the
//! tasks that route, replicate and move them.
//!
//! - **Routing** ([`super::routing`]): the shard table is computed once per committed
//!   configuration; a message's primary is an index into it.
//! - **Hosting** ([`super::hosting`]): entities activate on their first message, from the
//!   replica store, and passivate when idle or when the node holds too many.
//! - **Transitions** ([`super::transitions`]): on a new configuration, each shard whose
//!   primary is this node recovers and installs its state (`crate::replication`) before it
//!   serves; each shard this node loses finishes its writes and hands over.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use shoal_membership::Membership;
use shoal_sharding::{ShardId, ShardTable};
use shoal_transport::{NodeRng, Transport};
use tokio::sync::{Notify, Semaphore};
use tokio::task::AbortHandle;
use tracing::Instrument;

use super::actor::ErasedKind;
use super::shard_host::{Mode, ModeIndex, ShardHost};
use super::wire::{ENTITY_SERVICE, HANDOFF_SERVICE, TELL_SERVICE};
use crate::metrics::NodeMetrics;
use crate::replication::{
    Lanes, REPLICA_SERVICE, ReplicaShard, ReplicationEvent, ReplicationObserver,
};
use crate::storage::{GroupCommit, ReplicaStore};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Bulk replica requests in flight at once per node: with chunks of at most 1 MiB, this
/// bounds the memory recoveries and installs hold.
const BULK_IN_FLIGHT: usize = 64;

/// Settings of the entity runtime.
#[derive(Clone)]
pub struct EntitySettings {
    /// Default timeout of an `ask` (default 5 s).
    pub ask_timeout: Duration,
    /// An entity idle this long is passivated (default 120 s).
    pub idle_after: Duration,
    /// At most this many active entities per node; beyond, the least recently used are
    /// passivated (default 100 000).
    pub max_active: usize,
    /// How long a leaving node waits for every shard to be served elsewhere (default 10 s).
    pub handoff_timeout: Duration,
    /// How long a primary that loses a shard waits for its last writes to be stored by a
    /// majority before it hands over (default 1 s). Writes still unstored then fail as
    /// `Unavailable` (they may or may not be kept).
    pub drain_timeout: Duration,
    /// Limit on one replica-protocol request (default 5 s).
    pub replica_timeout: Duration,
    /// Shards recovering at once on this node (default 256). Recovery is mostly waiting
    /// (round trips, durable writes), so many at once share group commits; the bytes in
    /// flight are bounded separately (64 bulk requests of at most 1 MiB).
    pub recovery_concurrency: usize,
    /// Simulator only: seeded faults in replication and handoff (delayed acks, dropped
    /// chunks).
    #[doc(hidden)]
    pub buggify: bool,
    /// Simulator only: replicas accept writes of epochs older than they promised (a planted
    /// bug the checkers must catch).
    #[doc(hidden)]
    pub fencing_bug: bool,
    /// Simulator only: told about replication milestones.
    #[doc(hidden)]
    pub observer: Option<ReplicationObserver>,
}

impl std::fmt::Debug for EntitySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntitySettings")
            .field("ask_timeout", &self.ask_timeout)
            .field("idle_after", &self.idle_after)
            .field("max_active", &self.max_active)
            .field("handoff_timeout", &self.handoff_timeout)
            .field("drain_timeout", &self.drain_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for EntitySettings {
    fn default() -> Self {
        Self {
            ask_timeout: Duration::from_secs(5),
            idle_after: Duration::from_secs(120),
            max_active: 100_000,
            handoff_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(1),
            replica_timeout: Duration::from_secs(5),
            recovery_concurrency: 256,
            buggify: false,
            fencing_bug: false,
            observer: None,
        }
    }
}

/// The committed configuration as the runtime uses it.
pub(crate) struct Placement {
    pub epoch: u64,
    pub table: Option<ShardTable>,
    /// This node's incarnation is a member.
    pub member: bool,
    pub addrs: HashMap<String, SocketAddr>,
    /// The configuration's history: earlier epochs' tables, newest first.
    pub history: Vec<super::transitions::PastTable>,
}

pub(crate) struct RuntimeInner {
    pub name: String,
    pub transport: Transport,
    pub membership: Membership,
    pub kinds: HashMap<String, Arc<dyn ErasedKind>>,
    pub shards: u32,
    pub hosts: Vec<Mutex<ShardHost>>,
    /// Which shards serve here and which failed, kept by the hosts (see [`ModeIndex`]).
    pub modes: Arc<ModeIndex>,
    pub placement: RwLock<Arc<Placement>>,
    pub settings: EntitySettings,
    pub rng: NodeRng,
    tasks: Mutex<Vec<AbortHandle>>,
    pub active: AtomicUsize,
    pub store: Arc<dyn ReplicaStore>,
    pub commits: GroupCommit,
    pub lanes: Lanes,
    /// Tells to other nodes, batched per peer.
    pub tells: super::tell_lane::TellLanes,
    pub activations: Semaphore,
    /// Bulk replica requests (versions, entries, install chunks) in flight at once.
    pub bulk: Semaphore,
    /// Woken when a log advances or a backup is installed (drains and activations wait).
    pub progress: Notify,
    /// The newest epoch published as `shards_ready`.
    pub ready: AtomicU64,
    pub actor_ids: AtomicU64,
    /// A weak handle on itself, for callbacks that only get `&RuntimeInner`.
    pub self_ref: std::sync::OnceLock<std::sync::Weak<RuntimeInner>>,
    /// The node's span: every task (actors included) logs inside it.
    pub span: tracing::Span,
    pub metrics: Arc<NodeMetrics>,
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
    }
}

impl RuntimeInner {
    /// Spawns a task that is aborted with the runtime.
    pub(crate) fn spawn(
        &self,
        fut: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> AbortHandle {
        let handle = tokio::spawn(fut.instrument(self.span.clone())).abort_handle();
        self.track(handle.clone());
        handle
    }

    /// Stops everything at once: every task (actors and committers included) is aborted and
    /// every waiting command is answered `Unavailable`. Breaks the reference cycles between
    /// tasks and the runtime, so the transport and its socket are released. Writes not yet
    /// synced are lost, as in a crash.
    pub(crate) fn abort_all(&self) {
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
        for host in &self.hosts {
            let mut h = lock(host);
            h.set_mode(Mode::Idle);
            h.active.clear();
            if let Some(mut log) = h.log.take() {
                let (writes, reads) = log.close();
                for w in writes {
                    w.fail_unknown("the node is stopping");
                }
                for r in reads {
                    r.retry("the node is stopping".into(), 0);
                }
            }
            for (_, cmd) in h.buffer.drain(..) {
                cmd.reply.retry("the node is stopping".into(), 0);
            }
        }
    }

    pub(crate) fn track(&self, handle: AbortHandle) {
        let mut tasks = lock(&self.tasks);
        if tasks.len() >= 1024 && tasks.len().is_power_of_two() {
            tasks.retain(|t| !t.is_finished());
        }
        tasks.push(handle);
    }

    pub(crate) fn observe(&self, event: ReplicationEvent) {
        match event {
            ReplicationEvent::Serving { .. } => {
                self.metrics.activations.inc();
            }
            ReplicationEvent::SteppedDown { .. } => {
                self.metrics.step_downs.inc();
            }
            ReplicationEvent::Committed { .. } => {}
        }
        if let Some(o) = &self.settings.observer {
            o(&self.name, &event);
        }
    }
}

/// Handle on the runtime. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<RuntimeInner>,
}

impl Runtime {
    pub(crate) fn from_inner(inner: Arc<RuntimeInner>) -> Self {
        Self { inner }
    }

    pub(crate) fn start(
        transport: Transport,
        membership: Membership,
        kinds: HashMap<String, Arc<dyn ErasedKind>>,
        shards: u32,
        settings: EntitySettings,
        rng: NodeRng,
        store: Arc<dyn ReplicaStore>,
    ) -> Self {
        let metrics = NodeMetrics::new(kinds.keys().map(String::as_str));
        let loaded = store.load(shards);
        let mut tasks = Vec::new();
        let commits = GroupCommit::start(store.clone(), |f| {
            tasks.push(tokio::spawn(f.in_current_span()).abort_handle());
        });
        let mut hosts = Vec::with_capacity(shards as usize);
        let modes = Arc::new(ModeIndex::new(shards));
        let mut loaded_shards = loaded.shards;
        let seed = rng.next_u64();
        for s in 0..shards {
            let replica = ReplicaShard::from_loaded(loaded_shards.remove(&s).unwrap_or_default());
            let mut host = ShardHost::new(s, replica, modes.clone(), seed);
            if let Some(e) = loaded.failed.get(&s) {
                host.replica.failed = Some(e.to_string());
                host.set_mode(Mode::Failed {
                    reason: format!("shard {s} on {}: {e}", transport.name()),
                    retry: None,
                });
            }
            hosts.push(Mutex::new(host));
        }
        if !loaded.failed.is_empty() {
            tracing::error!(
                node = %transport.name(),
                shards = loaded.failed.len(),
                first = %loaded.failed.values().next().map(|e| e.to_string()).unwrap_or_default(),
                "replica storage failed to load: those shards are out of service on this node"
            );
        }
        let lanes = Lanes::new(transport.clone(), rng.fork(), settings.replica_timeout);
        let inner = Arc::new(RuntimeInner {
            name: transport.name().to_string(),
            transport: transport.clone(),
            membership: membership.clone(),
            kinds,
            shards,
            hosts,
            modes,
            placement: RwLock::new(Arc::new(Placement {
                epoch: 0,
                table: None,
                member: false,
                addrs: HashMap::new(),
                history: Vec::new(),
            })),
            activations: Semaphore::new(settings.recovery_concurrency.max(1)),
            bulk: Semaphore::new(BULK_IN_FLIGHT),
            settings,
            rng,
            tasks: Mutex::new(tasks),
            active: AtomicUsize::new(0),
            store,
            commits,
            lanes,
            tells: Default::default(),
            progress: Notify::new(),
            ready: AtomicU64::new(0),
            actor_ids: AtomicU64::new(1),
            self_ref: std::sync::OnceLock::new(),
            span: tracing::Span::current(),
            metrics,
        });
        let _ = inner.self_ref.set(Arc::downgrade(&inner));
        let sink: Arc<dyn crate::replication::LaneSink> = inner.clone();
        inner.lanes.set_sink(Arc::downgrade(&sink));
        drop(sink);
        let weak = Arc::downgrade(&inner);
        let mut configs = membership.configuration();
        inner.spawn({
            let weak = weak.clone();
            async move {
                loop {
                    let current = configs.borrow_and_update().clone();
                    if let (Some(c), Some(rt)) = (current, weak.upgrade()) {
                        Runtime::from_inner(rt).on_config(&c);
                    }
                    if configs.changed().await.is_err() {
                        return;
                    }
                }
            }
        });
        let mut requests = transport.register(ENTITY_SERVICE, 4096);
        inner.spawn({
            let weak = weak.clone();
            async move {
                while let Some(msg) = requests.recv().await {
                    let Some(rt) = weak.upgrade() else { return };
                    let rt2 = Runtime::from_inner(rt.clone());
                    rt.spawn(async move { rt2.serve_inbound(msg).await });
                }
            }
        });
        let mut tells = transport.register(TELL_SERVICE, 1024);
        inner.spawn({
            let weak = weak.clone();
            async move {
                while let Some(msg) = tells.recv().await {
                    let Some(rt) = weak.upgrade() else { return };
                    Runtime::from_inner(rt).serve_tells(msg);
                }
            }
        });
        // The handoff service of earlier versions: answered, so their senders stop.
        let mut old = transport.register(HANDOFF_SERVICE, 16);
        inner.spawn(async move {
            while let Some(msg) = old.recv().await {
                msg.reply_error("this node hands shards over through the replica protocol");
            }
        });
        let mut replicas = transport.register(REPLICA_SERVICE, 4096);
        inner.spawn({
            let weak = weak.clone();
            async move {
                while let Some(msg) = replicas.recv().await {
                    let Some(rt) = weak.upgrade() else { return };
                    let rt2 = Runtime::from_inner(rt.clone());
                    rt.spawn(async move { rt2.serve_replica(msg).await });
                }
            }
        });
        inner.spawn(super::hosting::maintain(weak));
        Self { inner }
    }

    /// Stops the runtime: every task aborted, waiting commands answered `Unavailable`.
    pub fn shutdown(&self) {
        self.inner.abort_all();
    }

    pub(crate) fn host(&self, shard: u32) -> MutexGuard<'_, ShardHost> {
        lock(&self.inner.hosts[shard as usize])
    }

    pub(crate) fn node_name(&self) -> &str {
        &self.inner.name
    }

    pub(crate) fn default_timeout(&self) -> Duration {
        self.inner.settings.ask_timeout
    }

    pub(crate) fn placement(&self) -> Arc<Placement> {
        self.inner
            .placement
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The placement in use, borrowed: cheaper than [`Runtime::placement`] on hot paths.
    /// Never lock a shard while holding it (a waiting writer would block its readers).
    pub(crate) fn placement_ref(&self) -> std::sync::RwLockReadGuard<'_, Arc<Placement>> {
        self.inner
            .placement
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The epoch of the shard table in use (0: none yet).
    pub fn epoch(&self) -> u64 {
        self.placement().epoch
    }

    /// The shard table in use, if any.
    pub fn table(&self) -> Option<(u64, ShardTable)> {
        let p = self.placement();
        p.table.clone().map(|t| (p.epoch, t))
    }

    /// The shards this node serves right now.
    pub fn serving(&self) -> Vec<ShardId> {
        self.inner.modes.serving.shards().map(ShardId).collect()
    }

    /// Shards this node serves, with the epoch each serves in.
    pub fn serving_epochs(&self) -> Vec<(ShardId, u64)> {
        self.inner
            .modes
            .serving
            .shards()
            .filter_map(|s| {
                let h = self.host(s);
                h.is_serving().then_some((ShardId(s), h.epoch))
            })
            .collect()
    }

    /// Shards this node is primary for but does not serve yet (recovering).
    pub fn recovering(&self) -> Vec<ShardId> {
        (0..self.inner.shards)
            .filter(|&s| matches!(self.host(s).mode(), Mode::Recovering))
            .map(ShardId)
            .collect()
    }

    /// Shards out of service here because their storage failed, with the reason.
    pub fn failed_shards(&self) -> Vec<(ShardId, String)> {
        self.inner
            .modes
            .failed
            .shards()
            .filter_map(|s| match self.host(s).mode() {
                Mode::Failed { reason, .. } => Some((ShardId(s), reason.clone())),
                _ => None,
            })
            .collect()
    }

    /// The node's event counters.
    pub(crate) fn metrics(&self) -> &NodeMetrics {
        &self.inner.metrics
    }

    /// Active (in-memory) entities on this node.
    pub fn active_entities(&self) -> usize {
        self.inner.active.load(Ordering::Relaxed)
    }

    /// The number of entities this node's replicas hold, per shard (for views and tests).
    pub fn entities_per_shard(&self) -> Vec<(ShardId, usize)> {
        (0..self.inner.shards)
            .map(|s| (ShardId(s), self.host(s).entities()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// This node's replica of `shard`: its promises, digest and size (for checkers).
    pub fn replica_summary(&self, shard: ShardId) -> crate::replication::ReplicaSummary {
        let h = self.host(shard.0);
        crate::replication::ReplicaSummary {
            meta: h.replica.meta,
            digest: h.replica.digest(),
            entities: h.replica.len(),
        }
    }
}
