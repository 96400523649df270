//! What a handler can do beyond its own state: ask and tell other entities.
//!
//! **Reentrancy rule.** While a handler runs, its entity takes no other command. So if it
//! asks an entity that is (directly or through a chain of asks) waiting on it, the chain
//! can never finish. Every ask carries the chain of entities waiting on it; an ask that
//! reaches an entity already in its chain is refused at once with `AskError::Rejected`
//! ("reentrant ask"), instead of hanging. `tell` never waits, so a handler may tell itself
//! or anyone in its chain: the message is handled after the current command.

use std::time::Duration;

use super::error::AskError;
use super::kind::Entity;
use super::runtime::Runtime;
use super::wire::EntityRef;

/// Handed to every handler call.
pub struct Context {
    pub(crate) runtime: Runtime,
    pub(crate) me: EntityRef,
    /// Entities waiting on the current command, outermost first.
    pub(crate) chain: Vec<EntityRef>,
}

impl Context {
    /// The entity handling the command.
    pub fn me(&self) -> &EntityRef {
        &self.me
    }

    /// The node's name.
    pub fn node(&self) -> &str {
        self.runtime.node_name()
    }

    fn chain_with_me(&self) -> Vec<EntityRef> {
        let mut chain = self.chain.clone();
        chain.push(self.me.clone());
        chain
    }

    /// Asks entity `id` of kind `K` and waits for the reply (default timeout).
    pub async fn ask<K: Entity>(&self, id: &str, cmd: K::Command) -> Result<K::Reply, AskError> {
        self.runtime
            .ask_with::<K>(
                id,
                cmd,
                self.chain_with_me(),
                self.runtime.default_timeout(),
            )
            .await
    }

    /// [`Context::ask`] with an explicit timeout.
    pub async fn ask_timeout<K: Entity>(
        &self,
        id: &str,
        cmd: K::Command,
        timeout: Duration,
    ) -> Result<K::Reply, AskError> {
        self.runtime
            .ask_with::<K>(id, cmd, self.chain_with_me(), timeout)
            .await
    }

    /// Sends a command to entity `id` of kind `K` without waiting (at most once).
    pub fn tell<K: Entity>(&self, id: &str, cmd: K::Command) {
        self.runtime.tell::<K>(id, cmd);
    }
}
