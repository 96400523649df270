//! A running Shoal node: its transport and its membership, started and stopped together.

use std::fs::File;
use std::sync::Arc;

use shoal_membership::{
    DurableCell, FileCell, MemCell, Membership, MembershipConfig, MembershipError, MembershipView,
};
use shoal_transport::{Environment, NodeIdentity, Transport, TransportConfig, TransportError};
use tracing::{Instrument, info};

use crate::config::NodeConfig;
use crate::entity::{AskError, Entity, Runtime};
use crate::metrics::NodeMetrics;
use crate::storage::{DEFAULT_STRIPES, DiskStore, MemStore, ReplicaStore};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Membership(#[from] MembershipError),
    #[error("data directory {dir}: {reason}")]
    DataDir { dir: String, reason: String },
}

/// A node. Cheap to clone; every clone is the same node.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    config: NodeConfig,
    transport: Transport,
    membership: Membership,
    runtime: Runtime,
    env: Environment,
    /// Held for the node's life: one process per data directory.
    _lock: Option<File>,
}

impl Drop for Inner {
    /// Dropping the node stops it at once (the simulator's crash): the entity runtime's tasks
    /// hold references to it, so they are aborted here rather than left to finish.
    fn drop(&mut self) {
        self.runtime.shutdown();
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.inner.config.name)
            .finish_non_exhaustive()
    }
}

/// Durable state: the membership cell and the replica store.
pub(crate) struct Storage {
    pub lock: Option<File>,
    pub cell: Arc<dyn DurableCell>,
    pub store: Arc<dyn ReplicaStore>,
}

/// Opens (creating it if needed) and locks the data directory.
fn open_data_dir(dir: &std::path::Path) -> Result<(File, FileCell), NodeError> {
    let err = |reason: String| NodeError::DataDir {
        dir: dir.display().to_string(),
        reason,
    };
    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    let lock = File::create(dir.join("LOCK")).map_err(|e| err(e.to_string()))?;
    lock.try_lock().map_err(|_| {
        err(
            "another shoal node is using it (LOCK is held); give each node its own --data-dir"
                .into(),
        )
    })?;
    Ok((lock, FileCell::new(dir.join("membership.state"))))
}

impl Node {
    /// Starts a node with the built-in entity kinds only (see [`crate::NodeBuilder`] to
    /// register your own). Durable state goes to `config.data_dir` (or memory, lost on
    /// restart, without one).
    pub async fn start(
        config: NodeConfig,
        identity: NodeIdentity,
        env: Environment,
    ) -> Result<Self, NodeError> {
        crate::NodeBuilder::new(config).start(identity, env).await
    }

    /// Opens the durable state in `config.data_dir` (or memory, lost with the process).
    pub(crate) fn open_storage(config: &NodeConfig) -> Result<Storage, NodeError> {
        Ok(match &config.data_dir {
            Some(dir) => {
                let (lock, cell) = open_data_dir(dir)?;
                let store =
                    DiskStore::open(&dir.join("replicas"), DEFAULT_STRIPES).map_err(|e| {
                        NodeError::DataDir {
                            dir: dir.display().to_string(),
                            reason: e.to_string(),
                        }
                    })?;
                Storage {
                    lock: Some(lock),
                    cell: Arc::new(cell),
                    store: Arc::new(store),
                }
            }
            None => Storage {
                lock: None,
                cell: Arc::new(MemCell::new()),
                store: Arc::new(MemStore::default()),
            },
        })
    }

    /// Starts with the given durable state and entity kinds.
    pub(crate) async fn start_parts(
        config: NodeConfig,
        identity: NodeIdentity,
        env: Environment,
        storage: Storage,
        kinds: std::collections::HashMap<String, Arc<dyn crate::entity::ErasedKind>>,
    ) -> Result<Self, NodeError> {
        // Every task the node starts logs inside this span, so each line names its node. The
        // field is not `name`: JSON logs would then hold two `name` keys in the span object.
        let span = tracing::info_span!("node", node_name = %config.name);
        Self::start_in_span(config, identity, env, storage, kinds)
            .instrument(span)
            .await
    }

    async fn start_in_span(
        config: NodeConfig,
        identity: NodeIdentity,
        env: Environment,
        storage: Storage,
        kinds: std::collections::HashMap<String, Arc<dyn crate::entity::ErasedKind>>,
    ) -> Result<Self, NodeError> {
        let Storage { lock, cell, store } = storage;
        if identity.name() != config.name {
            return Err(NodeError::Config(format!(
                "the certificate is issued to {:?}, not to {:?}",
                identity.name(),
                config.name
            )));
        }
        let advertise = config.advertise_addr().map_err(NodeError::Config)?;
        let mut tc = TransportConfig::new(config.listen);
        tc.max_frame_size = config.max_frame_size;
        let transport = Transport::bind(tc, identity, env.clone()).await?;
        // With port 0 the real port is only known now.
        let advertise = if advertise.port() == 0 {
            std::net::SocketAddr::new(advertise.ip(), transport.local_addr().port())
        } else {
            advertise
        };
        let mut mc =
            MembershipConfig::new(config.cluster_id.clone(), config.name.clone(), advertise);
        mc.seeds = config.seeds.clone();
        mc.gossip_interval = config.gossip_interval;
        mc.failure_detector = config.failure_detector.clone();
        mc.leave_grace = config.leave_grace;
        mc.down_after = config.down_after;
        mc.bootstrap = config.bootstrap;
        mc.quorum_slack = config.quorum_slack;
        mc.placement.shards = config.shards;
        mc.placement.replicas = config.replicas;
        mc.shard_readiness = true;
        let membership = Membership::start(mc, &transport, &env, cell).await?;
        let runtime = Runtime::start(
            transport.clone(),
            membership.clone(),
            kinds,
            config.shards,
            config.entities.clone(),
            env.rng.fork(),
            store,
        );
        info!(node = %config.name, listen = %transport.local_addr(), %advertise, "node started");
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                transport,
                membership,
                runtime,
                env,
                _lock: lock,
            }),
        })
    }

    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    pub fn transport(&self) -> &Transport {
        &self.inner.transport
    }

    pub fn membership(&self) -> &Membership {
        &self.inner.membership
    }

    pub fn environment(&self) -> &Environment {
        &self.inner.env
    }

    /// The current membership view.
    pub fn view(&self) -> MembershipView {
        self.inner.membership.view()
    }

    /// The entity runtime (routing, hosted shards).
    pub fn entities(&self) -> &Runtime {
        &self.inner.runtime
    }

    /// This node's event counters (read through [`crate::metrics::render`]).
    pub(crate) fn metrics(&self) -> &NodeMetrics {
        self.inner.runtime.metrics()
    }

    /// Asks entity `id` of kind `K`, wherever it lives, and waits for the reply (default
    /// timeout, 5 s).
    pub async fn ask<K: Entity>(&self, id: &str, cmd: K::Command) -> Result<K::Reply, AskError> {
        let timeout = self.inner.runtime.default_timeout();
        self.ask_timeout::<K>(id, cmd, timeout).await
    }

    /// [`Node::ask`] with an explicit timeout.
    pub async fn ask_timeout<K: Entity>(
        &self,
        id: &str,
        cmd: K::Command,
        timeout: std::time::Duration,
    ) -> Result<K::Reply, AskError> {
        self.inner
            .runtime
            .ask_with::<K>(id, cmd, Vec::new(), timeout)
            .await
    }

    /// Sends a command to entity `id` of kind `K` without waiting (at most once).
    pub fn tell<K: Entity>(&self, id: &str, cmd: K::Command) {
        self.inner.runtime.tell::<K>(id, cmd);
    }

    /// Graceful stop: announce `leaving`, wait for the configuration without this node, wait
    /// until every shard this node was primary of is served by its new primary (at most
    /// `handoff_timeout`), then close every connection and give the port back. Bounded: at
    /// most `leave_grace` + `handoff_timeout` + 2 s (the transport's close).
    pub async fn leave(&self) {
        self.inner.membership.announce_leave().await;
        let bound = self.inner.config.entities.handoff_timeout;
        if !self.inner.runtime.wait_handed_over(bound).await {
            tracing::warn!(node = %self.name(), ?bound, "not every shard was served elsewhere in time; stopping anyway");
        }
        self.inner.membership.shutdown().await;
        self.inner.runtime.shutdown();
        self.inner.transport.shutdown().await;
        info!(node = %self.name(), "node stopped");
    }

    /// Immediate stop without announcement (the others will report this node failed).
    pub async fn stop(&self) {
        self.inner.runtime.shutdown();
        self.inner.membership.shutdown().await;
        self.inner.transport.shutdown().await;
    }
}
