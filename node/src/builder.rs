//! Building a node with its entity kinds.

use std::collections::HashMap;
use std::sync::Arc;

use shoal_membership::DurableCell;
use shoal_transport::{Environment, NodeIdentity};

use crate::config::NodeConfig;
use crate::entity::builtin::{Counter, Kv};
use crate::entity::{Entity, ErasedKind, KindImpl};
use crate::node::{Node, NodeError, Storage};
use crate::storage::ReplicaStore;

/// Registers entity kinds, then starts the node.
///
/// ```no_run
/// # use shoal::{NodeBuilder, NodeConfig};
/// # use shoal::entity::{Context, Entity, Rejection};
/// # struct Cart;
/// # impl Entity for Cart {
/// #     const KIND: &'static str = "cart";
/// #     type State = Vec<String>;
/// #     type Command = String;
/// #     type Reply = usize;
/// #     async fn handle(&self, _: &mut Context, s: &mut Vec<String>, c: String) -> Result<usize, Rejection> {
/// #         s.push(c);
/// #         Ok(s.len())
/// #     }
/// # }
/// # async fn example(identity: shoal::transport::NodeIdentity) -> anyhow::Result<()> {
/// let node = NodeBuilder::new(NodeConfig::new("n1", "127.0.0.1:7101".parse()?))
///     .register(Cart)
///     .start(identity, shoal::transport::Environment::real())
///     .await?;
/// let items = node.ask::<Cart>("user-42", "apple".to_string()).await?;
/// # Ok(()) }
/// ```
pub struct NodeBuilder {
    config: NodeConfig,
    kinds: HashMap<String, Arc<dyn ErasedKind>>,
    duplicate: Option<String>,
}

impl NodeBuilder {
    /// A builder with the built-in kinds (`kv`, `counter`) registered.
    pub fn new(config: NodeConfig) -> Self {
        Self {
            config,
            kinds: HashMap::new(),
            duplicate: None,
        }
        .register(Kv)
        .register(Counter)
    }

    /// Registers kind `K`, served by `handler`. Every node that may own `K`'s entities must
    /// register it (a node that does not answers `UnknownKind`).
    pub fn register<K: Entity>(mut self, handler: K) -> Self {
        if self
            .kinds
            .insert(K::KIND.to_string(), Arc::new(KindImpl::new(handler)))
            .is_some()
        {
            self.duplicate = Some(K::KIND.to_string());
        }
        self
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Starts the node; durable state in `config.data_dir` (or memory).
    pub async fn start(self, identity: NodeIdentity, env: Environment) -> Result<Node, NodeError> {
        let storage = Node::open_storage(&self.config)?;
        self.start_inner(identity, env, storage).await
    }

    /// Starts the node with durable state in `cell` and `store` (the simulator gives each
    /// node memory ones that survive its restarts).
    pub async fn start_with_storage(
        self,
        identity: NodeIdentity,
        env: Environment,
        cell: Arc<dyn DurableCell>,
        store: Arc<dyn ReplicaStore>,
    ) -> Result<Node, NodeError> {
        let storage = Storage {
            lock: None,
            cell,
            store,
        };
        self.start_inner(identity, env, storage).await
    }

    async fn start_inner(
        self,
        identity: NodeIdentity,
        env: Environment,
        storage: Storage,
    ) -> Result<Node, NodeError> {
        if let Some(kind) = self.duplicate {
            return Err(NodeError::Config(format!(
                "entity kind {kind:?} is registered twice"
            )));
        }
        Node::start_parts(self.config, identity, env, storage, self.kinds).await
    }
}
