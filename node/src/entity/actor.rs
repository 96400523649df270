//! One active entity: a task that owns the state and handles commands one at a time.
//!
//! Kinds are registered with their Rust types; the rest of the runtime only sees
//! [`ErasedKind`], which spawns actors from stored state bytes. Commands from the same process
//! travel as typed values (no serialization); commands from other nodes as postcard bytes.

use std::any::Any;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::context::Context;
use super::error::AskError;
use super::kind::Entity;
use super::runtime::{Runtime, RuntimeInner};
use super::wire::{EntityRef, Outcome};

/// Commands queued for one entity before senders wait.
const MAILBOX: usize = 1024;

pub(crate) type LocalReply = Result<Box<dyn Any + Send>, AskError>;

/// A command's body: a typed value from this process, or bytes from another node.
pub(crate) enum Payload {
    Local(Box<dyn Any + Send>),
    Wire(Bytes),
}

/// Where the reply goes.
pub(crate) enum ReplyTo {
    Local(oneshot::Sender<LocalReply>),
    Wire(oneshot::Sender<Outcome>),
    /// A tell: nobody waits.
    Nobody,
}

impl ReplyTo {
    pub(crate) fn fail(self, e: AskError) {
        match self {
            ReplyTo::Local(tx) => {
                let _ = tx.send(Err(e));
            }
            ReplyTo::Wire(tx) => {
                let _ = tx.send(Outcome::Failed(e));
            }
            ReplyTo::Nobody => {}
        }
    }
}

pub(crate) struct Command {
    pub payload: Payload,
    pub chain: Vec<EntityRef>,
    pub reply: ReplyTo,
}

pub(crate) enum ActorMsg {
    Command(Command),
    /// Stop and hand back the state (passivation, handoff).
    Stop(oneshot::Sender<Bytes>),
}

/// A registered kind, without its types.
pub(crate) trait ErasedKind: Send + Sync + 'static {
    /// Starts an actor for `me` from its stored state (or the default state).
    fn spawn(
        &self,
        runtime: Weak<RuntimeInner>,
        me: EntityRef,
        state: Option<Bytes>,
    ) -> Result<mpsc::Sender<ActorMsg>, AskError>;
}

pub(crate) struct KindImpl<K: Entity>(pub Arc<K>);

impl<K: Entity> ErasedKind for KindImpl<K> {
    fn spawn(
        &self,
        runtime: Weak<RuntimeInner>,
        me: EntityRef,
        state: Option<Bytes>,
    ) -> Result<mpsc::Sender<ActorMsg>, AskError> {
        let state: K::State = match state {
            Some(bytes) => postcard::from_bytes(&bytes).map_err(|e| {
                AskError::Decode(format!(
                    "stored state of {me} is not a {} state: {e}",
                    K::KIND
                ))
            })?,
            None => K::State::default(),
        };
        let (tx, rx) = mpsc::channel(MAILBOX);
        let handle = tokio::spawn(run::<K>(self.0.clone(), runtime.clone(), me, state, rx));
        if let Some(rt) = runtime.upgrade() {
            rt.track(handle.abort_handle());
        }
        Ok(tx)
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Bytes {
    postcard::to_allocvec(value).unwrap_or_default().into()
}

async fn run<K: Entity>(
    kind: Arc<K>,
    runtime: Weak<RuntimeInner>,
    me: EntityRef,
    mut state: K::State,
    mut rx: mpsc::Receiver<ActorMsg>,
) {
    while let Some(msg) = rx.recv().await {
        let cmd = match msg {
            ActorMsg::Stop(tx) => {
                let _ = tx.send(encode(&state));
                return;
            }
            ActorMsg::Command(cmd) => cmd,
        };
        let Command {
            payload,
            chain,
            reply,
        } = cmd;
        let command: K::Command = match payload {
            Payload::Local(b) => match b.downcast::<K::Command>() {
                Ok(c) => *c,
                Err(_) => {
                    reply.fail(AskError::Decode(format!(
                        "a command of another type than {}'s",
                        K::KIND
                    )));
                    continue;
                }
            },
            Payload::Wire(bytes) => match postcard::from_bytes(&bytes) {
                Ok(c) => c,
                Err(e) => {
                    reply.fail(AskError::Decode(format!("not a {} command: {e}", K::KIND)));
                    continue;
                }
            },
        };
        let Some(rt) = runtime.upgrade() else { return };
        let mut ctx = Context {
            runtime: Runtime::from_inner(rt),
            me: me.clone(),
            chain,
        };
        let result = kind.handle(&mut ctx, &mut state, command).await;
        drop(ctx);
        match reply {
            ReplyTo::Local(tx) => {
                let _ = tx.send(
                    result
                        .map(|r| Box::new(r) as Box<dyn Any + Send>)
                        .map_err(|e| AskError::Rejected(e.0)),
                );
            }
            ReplyTo::Wire(tx) => {
                let _ = tx.send(match result {
                    Ok(r) => Outcome::Reply(encode(&r)),
                    Err(e) => Outcome::Failed(AskError::Rejected(e.0)),
                });
            }
            ReplyTo::Nobody => {}
        }
    }
}
