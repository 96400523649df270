//! One active entity: a task that owns the state and handles commands one at a time.
//!
//! Kinds are registered with their Rust types; the rest of the runtime only sees
//! [`ErasedKind`], which spawns actors from stored state bytes. Commands from the same process
//! travel as typed values (no serialization); commands from other nodes as postcard bytes.
//!
//! The actor handles what is queued in batches. After each batch it encodes its state: if the
//! bytes changed, the batch was a write, which the shard's replication log numbers and
//! replicates; either way the replies are held until the replication rules allow them (see
//! `replication::log`). An actor belongs to
//! one epoch of its shard: when the shard changes hands, or its log refuses a write, the
//! actor ends and a new one starts from the stored state.

use std::any::Any;
use std::sync::{Arc, OnceLock, Weak};

use bytes::Bytes;
use smallbox::space::S2;
use smallbox::{SmallBox, smallbox};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::context::Context;
use super::error::AskError;
use super::kind::Entity;
use super::runtime::{Runtime, RuntimeInner};
use super::wire::{EntityRef, Outcome};

/// Commands queued for one entity before askers wait and tells are dropped. tokio allocates
/// a mailbox's slots as they fill, so the bound costs nothing until a flood uses it.
const MAILBOX: usize = 65_536;
/// Commands handled in one batch at most (one write, one release).
const BATCH: usize = 256;

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

/// A typed command from this process. Commands of up to 16 bytes (a counter's `Add(i64)`)
/// sit inline: a tell then allocates nothing, where a `Box` cost a `malloc` on the sender's
/// thread and a `free` on the actor's: 13 % of a one-entity tell flood, more than anything
/// but the channel itself.
pub(crate) type LocalCommand = SmallBox<dyn Any + Send, S2>;

/// Boxes a typed command (inline when small).
pub(crate) fn local<C: Any + Send>(cmd: C) -> LocalCommand {
    smallbox!(cmd)
}

/// A command's body: a typed value from this process, or bytes from another node.
pub(crate) enum Payload {
    Local(LocalCommand, Encoder),
    Wire(Bytes),
}

impl Payload {
    /// The command as bytes, to forward it.
    pub fn encoded(&self) -> Option<Bytes> {
        match self {
            Payload::Local(v, enc) => enc(&**v),
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

/// The replies of one batch of an actor's commands, held together until replication allows
/// them (the batch's one write is committed, or its reads are confirmed).
#[derive(Default)]
pub(crate) struct Ready(Vec<(ReplyTo, Result<ReadyValue, AskError>)>);

enum ReadyValue {
    Local(Box<dyn Any + Send>),
    Wire(Bytes),
}

impl Ready {
    fn push(&mut self, to: ReplyTo, reply: Result<ReadyValue, AskError>) {
        self.0.push((to, reply));
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn send(self) {
        for (to, reply) in self.0 {
            match (to, reply) {
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
    }

    /// The write may or may not be kept: the askers cannot know.
    pub fn fail_unknown(self, why: &str) {
        for (to, _) in self.0 {
            to.fail(AskError::Unavailable(format!(
                "{why}; the command may or may not have taken effect"
            )));
        }
    }

    /// The commands changed nothing: the askers may send them again.
    pub fn retry(self, why: String, epoch: u64) {
        for (to, _) in self.0 {
            to.retry(why.clone(), epoch);
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
            Payload::Local(b, _) => {
                b.downcast::<K::Command>()
                    .map(|c| c.into_inner())
                    .map_err(|_| {
                        AskError::Decode(format!("a command of another type than {}'s", K::KIND))
                    })
            }
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

    /// Handles commands in batches: whatever is queued (up to [`BATCH`]) runs one command at a
    /// time, then the state is encoded once and, if it changed, recorded as one write whose
    /// commit releases every reply of the batch. Under load a flood of commands to one entity
    /// costs one replicated write per batch instead of one per command; alone, a command is a
    /// batch of one. The batch is atomic for replication: its writes are kept or lost together.
    async fn serve(&mut self, mut rx: mpsc::Receiver<ActorMsg>) {
        while let Some(first) = rx.recv().await {
            let Some(rt) = self.runtime.upgrade() else {
                return;
            };
            let rt = Runtime::from_inner(rt);
            let mut ctx = Context {
                runtime: rt.clone(),
                me: self.me.clone(),
                chain: Vec::new(),
            };
            let mut ready = Ready::default();
            let mut handled = 0usize;
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                if let ActorMsg::Command(cmd) = msg {
                    handled += 1;
                    self.handle_one(&mut ctx, cmd, &mut ready).await;
                } else {
                    // Stop: no new command can arrive; those already queued are still handled.
                    rx.close();
                }
                if handled < BATCH {
                    next = rx.try_recv().ok();
                }
            }
            drop(ctx);
            if handled == 0 {
                continue;
            }
            self.commands.inc_by(handled as u64);
            let bytes = encode(&self.state);
            let gate = if bytes != self.last {
                let stored = (bytes != self.default).then(|| bytes.clone());
                match rt.record_write(self.home, &self.me, stored) {
                    Ok(seq) => {
                        self.last = bytes;
                        Gate::Write(seq)
                    }
                    Err(why) => {
                        // Nothing was recorded: the batch did not happen, and this actor's
                        // state is ahead of the store. End it.
                        ready.retry(why, self.home.epoch);
                        return;
                    }
                }
            } else {
                Gate::Read
            };
            if !ready.is_empty() {
                rt.release(self.home, gate, ready);
            }
        }
    }

    /// Runs one command and queues its reply (tells have none).
    async fn handle_one(&mut self, ctx: &mut Context, cmd: Command, ready: &mut Ready) {
        let Command {
            payload,
            chain,
            reply,
        } = cmd;
        let command = match self.decode(payload) {
            Ok(c) => c,
            Err(e) => {
                reply.fail(e);
                return;
            }
        };
        ctx.chain = chain;
        let result = self.kind.handle(ctx, &mut self.state, command).await;
        let value = match (&reply, result) {
            (ReplyTo::Nobody, _) => return,
            (ReplyTo::Local(_), Ok(r)) => Ok(ReadyValue::Local(Box::new(r))),
            (ReplyTo::Wire(_), Ok(r)) => Ok(ReadyValue::Wire(encode(&r))),
            (_, Err(e)) => Err(AskError::Rejected(e.0)),
        };
        ready.push(reply, value);
    }
}
