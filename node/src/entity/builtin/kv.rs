//! `kv`: one JSON value per key, with get, put, compare-and-set and delete.
//!
//! Values travel as JSON text (postcard cannot carry `serde_json::Value`, whose decoding
//! needs a self-describing format), and are parsed at the edges.

use serde::{Deserialize, Serialize};

use crate::entity::{Context, Entity, Rejection};

/// The `kv` kind.
pub struct Kv;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KvState {
    /// JSON text of the value, if any.
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    Get,
    /// Stores JSON text.
    Put(String),
    /// Stores `new` if the current value is `expected` (None: absent).
    Cas {
        expected: Option<String>,
        new: String,
    },
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvReply {
    /// The value after the command (JSON text), or None.
    Value(Option<String>),
    /// A compare-and-set that did not match: the current value.
    CasFailed(Option<String>),
}

/// JSON texts are compared as JSON values, so formatting does not matter.
fn same_json(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            match (
                serde_json::from_str::<serde_json::Value>(a),
                serde_json::from_str::<serde_json::Value>(b),
            ) {
                (Ok(x), Ok(y)) => x == y,
                _ => a == b,
            }
        }
        _ => false,
    }
}

impl Entity for Kv {
    const KIND: &'static str = "kv";
    type State = KvState;
    type Command = KvCommand;
    type Reply = KvReply;

    async fn handle(
        &self,
        _ctx: &mut Context,
        state: &mut KvState,
        cmd: KvCommand,
    ) -> Result<KvReply, Rejection> {
        Ok(match cmd {
            KvCommand::Get => KvReply::Value(state.value.clone()),
            KvCommand::Put(v) => {
                serde_json::from_str::<serde_json::Value>(&v)
                    .map_err(|e| Rejection::new(format!("not JSON: {e}")))?;
                state.value = Some(v);
                KvReply::Value(state.value.clone())
            }
            KvCommand::Cas { expected, new } => {
                serde_json::from_str::<serde_json::Value>(&new)
                    .map_err(|e| Rejection::new(format!("not JSON: {e}")))?;
                if same_json(state.value.as_deref(), expected.as_deref()) {
                    state.value = Some(new);
                    KvReply::Value(state.value.clone())
                } else {
                    KvReply::CasFailed(state.value.clone())
                }
            }
            KvCommand::Delete => KvReply::Value(state.value.take()),
        })
    }
}
