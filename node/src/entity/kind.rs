//! What an entity kind is: a Rust type with serde state, a command type and a reply type.

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::context::Context;

/// A kind of entity. One value of the type serves every entity of the kind; each entity
/// (one id) has its own `State`, and its commands run one at a time.
///
/// ```no_run
/// use serde::{Deserialize, Serialize};
/// use shoal::entity::{Context, Entity, Rejection};
///
/// struct Cart;
///
/// #[derive(Default, Serialize, Deserialize)]
/// struct Items(Vec<String>);
///
/// #[derive(Serialize, Deserialize)]
/// enum CartCommand { Add(String), List }
///
/// impl Entity for Cart {
///     const KIND: &'static str = "cart";
///     type State = Items;
///     type Command = CartCommand;
///     type Reply = Vec<String>;
///
///     async fn handle(
///         &self,
///         _ctx: &mut Context,
///         state: &mut Items,
///         cmd: CartCommand,
///     ) -> Result<Vec<String>, Rejection> {
///         if let CartCommand::Add(item) = cmd {
///             state.0.push(item);
///         }
///         Ok(state.0.clone())
///     }
/// }
/// ```
pub trait Entity: Send + Sync + 'static {
    /// The kind's name on the wire; unique in a cluster.
    const KIND: &'static str;
    /// An entity's state; `Default` is the state of an entity never seen before.
    type State: Serialize + DeserializeOwned + Default + Send + 'static;
    type Command: Serialize + DeserializeOwned + Send + 'static;
    type Reply: Serialize + DeserializeOwned + Send + 'static;

    /// Handles one command. While it runs, no other command reaches this entity. It may
    /// `ask` and `tell` other entities through `ctx` (see `Context` for the reentrancy rule).
    fn handle(
        &self,
        ctx: &mut Context,
        state: &mut Self::State,
        cmd: Self::Command,
    ) -> impl Future<Output = Result<Self::Reply, Rejection>> + Send;
}

/// A handler's refusal of a command: the asker gets `AskError::Rejected` with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection(pub String);

impl Rejection {
    pub fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }
}

impl<E: std::fmt::Display> From<E> for Rejection {
    fn from(e: E) -> Self {
        Self(e.to_string())
    }
}
