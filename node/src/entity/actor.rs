//! One active entity: a task that owns the state and handles commands one at a time.
//!
//! Kinds are registered with their Rust types; the rest of the runtime only sees
//! [`ErasedKind`], which spawns actors from stored state bytes. Commands from the same process
//! travel as typed values (no serialization); commands from other nodes as postcard bytes.
//!
//! After each command the actor encodes its state: if the bytes changed, the command was a
//! write, which the shard's replication log numbers and replicates; either way the reply is
//! held until the replication rules allow it (see `replication::log`). An actor belongs to
//! one epoch of its shard: when the shard changes hands, or its log refuses a write, the
//! actor ends and a new one starts from the stored state.

use std::any::Any;
use std::sync::{Arc, OnceLock, Weak};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::context::Context;
use super::error::AskError;
use super::kind::Entity;
use super::runtime::{Runtime, RuntimeInner};
use super::wire::{EntityRef, Outcome};

/// Commands queued for one entity before senders wait.
const MAILBOX: usize = 1024;

/// What a local asker gets back.
pub(crate) enum LocalReply {
    Value(Box<dyn Any + Send>),
    /// The reply as bytes (the command was forwarded to another node).
    Encoded(Bytes),
    Failed(AskError),
    /// Not run; the asker may send it again.
    Retry(String),
}

/// Encodes a typed command for the wire (it knows the command's type).
pub(crate) type Encoder = fn(&(dyn Any + Send)) -> Option<Bytes>;

/// A command's body: a typed value from this process, or bytes from another node.
pub(crate) enum Payload {
    Local(Box<dyn Any + Send>, Encoder),
    Wire(Bytes),
}

impl Payload {
    /// The command as bytes, to forward it.
    pub fn encoded(&self) -> Option<Bytes> {
        match self {
            Payload::Local(v, enc) => enc(v.as_ref()),
            Payload::Wire(b) => Some(b.clone()),
        }
    }
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
                let _ = tx.send(LocalReply::Failed(e));
            }
            ReplyTo::Wire(tx) => {
                let _ = tx.send(Outcome::Failed(e));
            }
            ReplyTo::Nobody => {}
        }
    }

    /// The command did not run: the sender may send it again.
    pub(crate) fn retry(self, reason: String, epoch: u64) {
        match self {
            ReplyTo::Local(tx) => {
                let _ = tx.send(LocalReply::Retry(reason));
            }
            ReplyTo::Wire(tx) => {
                let _ = tx.send(Outcome::Retry { reason, epoch });
            }
            ReplyTo::Nobody => {}
        }
    }

    /// Passes on an outcome from the node the command was forwarded to.
    pub(crate) fn relay(self, outcome: Outcome) {
        match self {
            ReplyTo::Local(tx) => {
                let _ = tx.send(match outcome {
                    Outcome::Reply(b) => LocalReply::Encoded(b),
                    Outcome::Failed(e) => LocalReply::Failed(e),
                    Outcome::Retry { reason, .. } => LocalReply::Retry(reason),
                });
            }
            ReplyTo::Wire(tx) => {
                let _ = tx.send(outcome);
            }
            ReplyTo::Nobody => {}
        }
    }
}

/// A reply computed by an actor, held until replication allows it.
pub(crate) struct Ready {
    to: ReplyTo,
    reply: Result<ReadyValue, AskError>,
}

enum ReadyValue {
    Local(Box<dyn Any + Send>),
    Wire(Bytes),
}

impl Ready {
    pub fn send(self) {
        match (self.to, self.reply) {
            (ReplyTo::Local(tx), Ok(ReadyValue::Local(v))) => {
                let _ = tx.send(LocalReply::Value(v));
            }
            (ReplyTo::Wire(tx), Ok(ReadyValue::Wire(b))) => {
                let _ = tx.send(Outcome::Reply(b));
            }
            (to, Err(e)) => to.fail(e),
            (to, Ok(_)) => to.fail(AskError::Decode("a reply of the wrong form".into())),
        }
    }

    /// The write may or may not be kept: the asker cannot know.
    pub fn fail_unknown(self, why: &str) {
        self.to.fail(AskError::Unavailable(format!(
            "{why}; the command may or may not have taken effect"
        )));
    }

    /// The command changed nothing: the asker may send it again.
    pub fn retry(self, why: String, epoch: u64) {
        self.to.retry(why, epoch);
    }
}

pub(crate) struct Command {
    pub payload: Payload,
    pub chain: Vec<EntityRef>,
    pub reply: ReplyTo,
}

pub(crate) enum ActorMsg {
    Command(Command),
    /// Stop once the commands already queued are handled (passivation, handover); the
    /// state is in the store.
    Stop,
}

/// Where an actor lives: its shard, the epoch of the log it writes to, and its id.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Home {
    pub shard: u32,
    pub epoch: u64,
    pub id: u64,
}

/// A registered kind, without its types.
pub(crate) trait ErasedKind: Send + Sync + 'static {
    /// Starts an actor for `me` from its stored state (or the default state).
    fn spawn(
        &self,
        runtime: Weak<RuntimeInner>,
        me: EntityRef,
        home: Home,
        state: Option<Bytes>,
    ) -> Result<mpsc::Sender<ActorMsg>, AskError>;
}

pub(crate) struct KindImpl<K: Entity> {
    pub handler: Arc<K>,
    /// The encoding of the default state: a state equal to it is stored as a tombstone.
    default: OnceLock<Bytes>,
}

impl<K: Entity> KindImpl<K> {
    pub fn new(handler: K) -> Self {
        Self {
            handler: Arc::new(handler),
            default: OnceLock::new(),
        }
    }
}

impl<K: Entity> ErasedKind for KindImpl<K> {
    fn spawn(
        &self,
        runtime: Weak<RuntimeInner>,
        me: EntityRef,
        home: Home,
        stored: Option<Bytes>,
    ) -> Result<mpsc::Sender<ActorMsg>, AskError> {
        let default = self
            .default
            .get_or_init(|| encode(&K::State::default()))
            .clone();
        let (state, last): (K::State, Bytes) = match stored {
            Some(bytes) => (
                postcard::from_bytes(&bytes).map_err(|e| {
                    AskError::Decode(format!(
                        "stored state of {me} is not a {} state: {e}",
                        K::KIND
                    ))
                })?,
                bytes,
            ),
            None => (K::State::default(), default.clone()),
        };
        let (tx, rx) = mpsc::channel(MAILBOX);
        let commands = runtime
            .upgrade()
            .map(|rt| rt.metrics.kind(K::KIND).commands.clone())
            .unwrap_or_default();
        let actor = Actor::<K> {
            commands,
            kind: self.handler.clone(),
            runtime: runtime.clone(),
            me,
            home,
            state,
            last,
            default,
        };
        match runtime.upgrade() {
            Some(rt) => {
                let handle = tokio::spawn(actor.run(rx).instrument(rt.span.clone()));
                rt.track(handle.abort_handle());
            }
            None => drop(tokio::spawn(actor.run(rx))),
        }
        Ok(tx)
    }
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Bytes {
    postcard::to_allocvec(value).unwrap_or_default().into()
}

/// How a command's reply is gated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// The command wrote this sequence number.
    Write(u64),
    /// The command changed nothing.
    Read,
}

struct Actor<K: Entity> {
    kind: Arc<K>,
    /// `shoal_commands_total` of this kind.
    commands: prometheus_client::metrics::counter::Counter,
    runtime: Weak<RuntimeInner>,
    me: EntityRef,
    home: Home,
    state: K::State,
    /// The encoding of `state` as last stored.
    last: Bytes,
    default: Bytes,
}

impl<K: Entity> Actor<K> {
    fn decode(&self, payload: Payload) -> Result<K::Command, AskError> {
        match payload {
            Payload::Local(b, _) => b.downcast::<K::Command>().map(|c| *c).map_err(|_| {
                AskError::Decode(format!("a command of another type than {}'s", K::KIND))
            }),
            Payload::Wire(bytes) => postcard::from_bytes(&bytes)
                .map_err(|e| AskError::Decode(format!("not a {} command: {e}", K::KIND))),
        }
    }

    async fn run(mut self, rx: mpsc::Receiver<ActorMsg>) {
        self.serve(rx).await;
        if let Some(rt) = self.runtime.upgrade() {
            Runtime::from_inner(rt).actor_ended(self.home, &self.me);
        }
    }

    async fn serve(&mut self, mut rx: mpsc::Receiver<ActorMsg>) {
        while let Some(msg) = rx.recv().await {
            let cmd = match msg {
                // No new command can arrive; those already queued are still handled.
                ActorMsg::Stop => {
                    rx.close();
                    continue;
                }
                ActorMsg::Command(cmd) => cmd,
            };
            let Command {
                payload,
                chain,
                reply,
            } = cmd;
            let command = match self.decode(payload) {
                Ok(c) => c,
                Err(e) => {
                    reply.fail(e);
                    continue;
                }
            };
            let Some(rt) = self.runtime.upgrade() else {
                return;
            };
            self.commands.inc();
            let rt = Runtime::from_inner(rt);
            let mut ctx = Context {
                runtime: rt.clone(),
                me: self.me.clone(),
                chain,
            };
            let result = self.kind.handle(&mut ctx, &mut self.state, command).await;
            drop(ctx);
            let bytes = encode(&self.state);
            let gate = if bytes != self.last {
                let stored = (bytes != self.default).then(|| bytes.clone());
                match rt.record_write(self.home, &self.me, stored) {
                    Ok(seq) => {
                        self.last = bytes;
                        Gate::Write(seq)
                    }
                    Err(why) => {
                        // Nothing was recorded: the command did not happen, and this
                        // actor's state is ahead of the store. End it.
                        reply.retry(why, self.home.epoch);
                        return;
                    }
                }
            } else {
                Gate::Read
            };
            let ready =
                |value: Result<ReadyValue, AskError>, to: ReplyTo| Ready { to, reply: value };
            let ready = match (&reply, result) {
                (ReplyTo::Nobody, _) => continue,
                (ReplyTo::Local(_), Ok(r)) => ready(Ok(ReadyValue::Local(Box::new(r))), reply),
                (ReplyTo::Wire(_), Ok(r)) => ready(Ok(ReadyValue::Wire(encode(&r))), reply),
                (_, Err(e)) => ready(Err(AskError::Rejected(e.0)), reply),
            };
            rt.release(self.home, gate, ready);
        }
    }
}
