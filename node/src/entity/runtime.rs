//! The entity runtime of a node: routes every `tell`/`ask` to the owner of the entity's shard,
//! hosts the shards this node owns, and moves shards when the configuration changes.
//!
//! - **Routing.** The shard table is computed once per committed configuration; a message's
//!   owner is an index into it. The owner serves the shard only if it owns it in its current
//!   epoch, is a member, and sees a majority; otherwise the sender is told to retry, and
//!   retries (with jitter) until its timeout. A non-owner forwards a request once to the owner
//!   it knows.
//! - **Hosting.** An entity is activated on its first message (an actor task, from its stored
//!   state if it has one) and passivated when idle or when the node holds too many active
//!   entities (least recently used first).
//! - **Moving.** On a configuration change, a shard whose owner changes is handed over with
//!   its live state when the previous owner is alive (it stops taking commands, lets its
//!   entities finish what they queued, and sends their states); the new owner buffers
//!   commands until the handoff arrives. When the previous owner died, the shard restarts
//!   empty: until replication (the next milestone), a shard's state lives only on its owner.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use shoal_membership::{Committed, Membership};
use shoal_sharding::{ShardId, ShardTable, TableSpec, shard_of};
use shoal_transport::{NodeRng, Peer, Transport};
use tokio::sync::{Notify, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::actor::{ActorMsg, Command, ErasedKind, LocalReply, Payload, ReplyTo};
use super::error::AskError;
use super::kind::Entity;
use super::shard_host::{Active, Mode, RECEIVE_BUFFER, ShardHost};
use super::wire::{
    ENTITY_SERVICE, EntityRef, EntityRequest, HANDOFF_SERVICE, HandedState, Handoff, HandoffReply,
    Outcome,
};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Settings of the entity runtime.
#[derive(Debug, Clone)]
pub struct EntitySettings {
    /// Default timeout of an `ask` (default 5 s).
    pub ask_timeout: Duration,
    /// An entity idle this long is passivated (default 120 s).
    pub idle_after: Duration,
    /// At most this many active entities per node; beyond, the least recently used are
    /// passivated (default 100 000).
    pub max_active: usize,
    /// A new owner waits this long for the previous owner's handoff before serving the
    /// shard empty (default 10 s).
    pub handoff_timeout: Duration,
}

impl Default for EntitySettings {
    fn default() -> Self {
        Self {
            ask_timeout: Duration::from_secs(5),
            idle_after: Duration::from_secs(120),
            max_active: 100_000,
            handoff_timeout: Duration::from_secs(10),
        }
    }
}

/// The committed configuration as the runtime uses it.
struct Placement {
    epoch: u64,
    table: Option<ShardTable>,
    /// This node's incarnation is a member.
    member: bool,
    addrs: HashMap<String, SocketAddr>,
}

pub(crate) struct RuntimeInner {
    name: String,
    transport: Transport,
    membership: Membership,
    kinds: HashMap<String, Arc<dyn ErasedKind>>,
    shards: u32,
    hosts: Vec<Mutex<ShardHost>>,
    placement: RwLock<Arc<Placement>>,
    settings: EntitySettings,
    rng: NodeRng,
    tasks: Mutex<Vec<AbortHandle>>,
    active: AtomicUsize,
    handoffs: AtomicUsize,
    handoffs_done: Notify,
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
    pub(crate) fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        self.track(tokio::spawn(fut).abort_handle());
    }

    /// Stops everything at once: every task (actors included) is aborted and every buffered
    /// command is answered `Unavailable`. Breaks the reference cycles between tasks and the
    /// runtime, so the transport and its socket are released.
    pub(crate) fn abort_all(&self) {
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
        for host in &self.hosts {
            let mut h = lock(host);
            h.mode = Mode::Idle;
            h.active.clear();
            for (_, cmd) in h.buffer.drain(..) {
                cmd.reply
                    .fail(AskError::Unavailable("the node is stopping".into()));
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
}

/// Where a message goes.
enum Route {
    Local(ShardId),
    Remote(ShardId, Peer, u64),
    /// Not servable now; retry.
    Wait(String),
}

/// Handle on the runtime. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
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
    ) -> Self {
        let inner = Arc::new(RuntimeInner {
            name: transport.name().to_string(),
            transport: transport.clone(),
            membership: membership.clone(),
            kinds,
            shards,
            hosts: (0..shards)
                .map(|_| Mutex::new(ShardHost::default()))
                .collect(),
            placement: RwLock::new(Arc::new(Placement {
                epoch: 0,
                table: None,
                member: false,
                addrs: HashMap::new(),
            })),
            settings,
            rng,
            tasks: Mutex::new(Vec::new()),
            active: AtomicUsize::new(0),
            handoffs: AtomicUsize::new(0),
            handoffs_done: Notify::new(),
        });
        let weak = Arc::downgrade(&inner);
        let mut configs = membership.configuration();
        inner.track(
            tokio::spawn({
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
            })
            .abort_handle(),
        );
        let mut requests = transport.register(ENTITY_SERVICE, 4096);
        inner.track(
            tokio::spawn({
                let weak = weak.clone();
                async move {
                    while let Some(msg) = requests.recv().await {
                        let Some(rt) = weak.upgrade() else { return };
                        let rt2 = Runtime::from_inner(rt.clone());
                        rt.spawn(async move { rt2.serve_inbound(msg).await });
                    }
                }
            })
            .abort_handle(),
        );
        let mut handoffs = transport.register(HANDOFF_SERVICE, 256);
        inner.track(
            tokio::spawn({
                let weak = weak.clone();
                async move {
                    while let Some(msg) = handoffs.recv().await {
                        let Some(rt) = weak.upgrade() else { return };
                        let rt2 = Runtime::from_inner(rt.clone());
                        rt.spawn(async move {
                            let rt = rt2;
                            match msg.decode::<Handoff>() {
                                Ok(h) => {
                                    let reply = rt.on_handoff(h).await;
                                    msg.reply(&reply);
                                }
                                Err(e) => msg.reply_error(format!("undecodable handoff: {e}")),
                            }
                        });
                    }
                }
            })
            .abort_handle(),
        );
        inner.track(tokio::spawn(maintain(weak)).abort_handle());
        Self { inner }
    }

    /// Stops the runtime: every task aborted, buffered commands answered `Unavailable`.
    pub fn shutdown(&self) {
        self.inner.abort_all();
    }

    pub(crate) fn node_name(&self) -> &str {
        &self.inner.name
    }

    pub(crate) fn default_timeout(&self) -> Duration {
        self.inner.settings.ask_timeout
    }

    fn placement(&self) -> Arc<Placement> {
        self.inner
            .placement
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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
        (0..self.inner.shards)
            .filter(|&s| lock(&self.inner.hosts[s as usize]).is_serving())
            .map(ShardId)
            .collect()
    }

    /// Active (in-memory) entities on this node.
    pub fn active_entities(&self) -> usize {
        self.inner.active.load(Ordering::Relaxed)
    }

    /// Handoffs this node is still sending.
    pub fn handoffs_in_flight(&self) -> usize {
        self.inner.handoffs.load(Ordering::SeqCst)
    }

    /// Waits until every handoff this node is sending is done, at most `within`.
    pub async fn wait_handoffs(&self, within: Duration) {
        let _ = tokio::time::timeout(within, async {
            while self.handoffs_in_flight() > 0 {
                let notified = self.inner.handoffs_done.notified();
                if self.handoffs_in_flight() == 0 {
                    return;
                }
                notified.await;
            }
        })
        .await;
    }

    fn shard(&self, target: &EntityRef) -> ShardId {
        shard_of(&target.kind, target.id.as_bytes(), self.inner.shards)
    }

    fn route(&self, target: &EntityRef) -> Route {
        let p = self.placement();
        let Some(table) = &p.table else {
            return Route::Wait("this node knows no cluster configuration yet".into());
        };
        let shard = self.shard(target);
        match table.primary(shard) {
            None => Route::Wait("the configuration has no members".into()),
            Some(owner) if owner == self.inner.name => Route::Local(shard),
            Some(owner) => match p.addrs.get(owner) {
                Some(addr) => Route::Remote(shard, Peer::named(owner, *addr), p.epoch),
                None => Route::Wait(format!("no address for {owner}")),
            },
        }
    }

    /// Why this node cannot serve its shards now, if it cannot.
    fn cannot_serve(&self) -> Option<String> {
        let p = self.placement();
        if !p.member {
            return Some("this node is not a member of the cluster configuration".into());
        }
        let view = self.inner.membership.view();
        match view.configuration {
            Some(c) if !c.in_majority => Some(format!(
                "this node sees no majority of epoch {}'s members: it is on the minority side of a partition",
                c.epoch
            )),
            _ => None,
        }
    }

    /// Delivers a command to a shard hosted here. On refusal, gives the command back with the
    /// reason, for a retry.
    async fn deliver_local(
        &self,
        shard: ShardId,
        target: EntityRef,
        cmd: Command,
    ) -> Result<(), (Command, String)> {
        if let Some(why) = self.cannot_serve() {
            return Err((cmd, why));
        }
        let kind = match self.inner.kinds.get(&target.kind) {
            Some(k) => k.clone(),
            None => {
                cmd.reply.fail(AskError::UnknownKind(target.kind.clone()));
                return Ok(());
            }
        };
        let tx = {
            let mut host = lock(&self.inner.hosts[shard.0 as usize]);
            match host.mode {
                Mode::Serving => {}
                Mode::Receiving { ref from, .. } => {
                    if host.buffer.len() >= RECEIVE_BUFFER {
                        let from = from.clone();
                        drop(host);
                        cmd.reply.fail(AskError::Unavailable(format!(
                            "shard {shard} is being handed over from {from} and its buffer is full"
                        )));
                        return Ok(());
                    }
                    host.buffer.push((target, cmd));
                    return Ok(());
                }
                Mode::Idle | Mode::Moving => {
                    return Err((
                        cmd,
                        format!("shard {shard} is not served here (epoch {})", host.epoch),
                    ));
                }
            }
            let now = Instant::now();
            if let Some(a) = host.active.get_mut(&target) {
                a.last_used = now;
                a.tx.clone()
            } else {
                let state = host.passive.remove(&target);
                match kind.spawn(Arc::downgrade(&self.inner), target.clone(), state.clone()) {
                    Ok(tx) => {
                        host.active.insert(
                            target.clone(),
                            Active {
                                tx: tx.clone(),
                                last_used: now,
                            },
                        );
                        self.inner.active.fetch_add(1, Ordering::Relaxed);
                        tx
                    }
                    Err(e) => {
                        if let Some(s) = state {
                            host.passive.insert(target, s);
                        }
                        drop(host);
                        cmd.reply.fail(e);
                        return Ok(());
                    }
                }
            }
        };
        match tx.send(ActorMsg::Command(cmd)).await {
            Ok(()) => Ok(()),
            // The actor stopped in between (passivation or handoff): try again.
            Err(e) => match e.0 {
                ActorMsg::Command(cmd) => {
                    Err((cmd, "the entity was just passivated or moved".into()))
                }
                ActorMsg::Stop(_) => Ok(()),
            },
        }
    }

    /// Sends a command to `K`/`id` and waits for the reply, retrying while ownership settles,
    /// at most `timeout` in all.
    pub(crate) async fn ask_with<K: Entity>(
        &self,
        id: &str,
        cmd: K::Command,
        chain: Vec<EntityRef>,
        timeout: Duration,
    ) -> Result<K::Reply, AskError> {
        let target = EntityRef {
            kind: K::KIND.to_string(),
            id: id.to_string(),
        };
        if let Some(pos) = chain.iter().position(|e| *e == target) {
            let cycle: Vec<String> = chain[pos..].iter().map(|e| e.to_string()).collect();
            return Err(AskError::Rejected(format!(
                "reentrant ask: {target} is waiting in this call chain ({} -> {target}) and cannot take another command until it returns",
                cycle.join(" -> ")
            )));
        }
        let deadline = Instant::now() + timeout;
        let mut payload = Payload::Local(Box::new(cmd));
        let mut last: String;
        loop {
            match self.route(&target) {
                Route::Local(shard) => {
                    let (tx, rx) = oneshot::channel::<LocalReply>();
                    let command = Command {
                        payload,
                        chain: chain.clone(),
                        reply: ReplyTo::Local(tx),
                    };
                    match self.deliver_local(shard, target.clone(), command).await {
                        Ok(()) => {
                            return match tokio::time::timeout_at(deadline, rx).await {
                                Ok(Ok(Ok(b))) => {
                                    b.downcast::<K::Reply>().map(|r| *r).map_err(|_| {
                                        AskError::Decode("a reply of another type".into())
                                    })
                                }
                                Ok(Ok(Err(e))) => Err(e),
                                Ok(Err(_)) => Err(AskError::Unavailable(
                                    "the entity stopped before replying".into(),
                                )),
                                Err(_) => Err(AskError::Timeout(timeout.as_millis() as u64)),
                            };
                        }
                        Err((back, why)) => {
                            payload = back.payload;
                            last = why;
                        }
                    }
                }
                Route::Remote(_, peer, epoch) => {
                    let bytes = match payload {
                        Payload::Wire(b) => b,
                        Payload::Local(b) => match b.downcast::<K::Command>() {
                            Ok(c) => encode(&*c),
                            Err(_) => {
                                return Err(AskError::Decode("a command of another type".into()));
                            }
                        },
                    };
                    let req = EntityRequest {
                        target: target.clone(),
                        command: bytes.clone(),
                        chain: chain.clone(),
                        epoch,
                        forwarded: false,
                    };
                    let left = deadline.saturating_duration_since(Instant::now());
                    match self
                        .inner
                        .transport
                        .request::<_, Outcome>(peer.clone(), ENTITY_SERVICE, &req, left)
                        .await
                    {
                        Ok(Outcome::Reply(r)) => {
                            return postcard::from_bytes(&r).map_err(|e| {
                                AskError::Decode(format!("reply of {}: {e}", K::KIND))
                            });
                        }
                        Ok(Outcome::Failed(e)) => return Err(e),
                        Ok(Outcome::Retry { reason, .. }) => last = reason,
                        Err(shoal_transport::RequestError::Timeout(_)) => {
                            return Err(AskError::Timeout(timeout.as_millis() as u64));
                        }
                        // The request never left: safe to try again.
                        Err(shoal_transport::RequestError::Connect(e)) => {
                            last =
                                format!("owner {} unreachable: {e}", peer.name.unwrap_or_default())
                        }
                        // It may have been handled: retrying could run the command twice.
                        Err(e) => {
                            return Err(AskError::Unavailable(format!(
                                "lost contact with the owner {} after sending (the command may or may not have run): {e}",
                                peer.name.unwrap_or_default()
                            )));
                        }
                    }
                    payload = Payload::Wire(bytes);
                }
                Route::Wait(why) => last = why,
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(AskError::Unavailable(last));
            }
            let pause = self
                .inner
                .rng
                .jitter(Duration::from_millis(50))
                .min(deadline - now);
            tokio::time::sleep(pause).await;
        }
    }

    /// Sends a command to `K`/`id` without waiting: at most once, dropped when the owner is
    /// not known or not serving.
    pub fn tell<K: Entity>(&self, id: &str, cmd: K::Command) {
        let target = EntityRef {
            kind: K::KIND.to_string(),
            id: id.to_string(),
        };
        match self.route(&target) {
            Route::Local(shard) => {
                let rt = self.clone();
                let command = Command {
                    payload: Payload::Local(Box::new(cmd)),
                    chain: Vec::new(),
                    reply: ReplyTo::Nobody,
                };
                // Fast path: the actor exists and has room.
                if rt.cannot_serve().is_none() {
                    let host = lock(&rt.inner.hosts[shard.0 as usize]);
                    if let (Mode::Serving, Some(a)) = (&host.mode, host.active.get(&target)) {
                        match a.tx.try_send(ActorMsg::Command(command)) {
                            Ok(()) => return,
                            Err(tokio::sync::mpsc::error::TrySendError::Full(msg))
                            | Err(tokio::sync::mpsc::error::TrySendError::Closed(msg)) => {
                                drop(host);
                                if let ActorMsg::Command(command) = msg {
                                    let inner = rt.inner.clone();
                                    inner.spawn(async move {
                                        let _ = rt.deliver_local(shard, target, command).await;
                                    });
                                }
                                return;
                            }
                        }
                    }
                }
                let inner = rt.inner.clone();
                inner.spawn(async move {
                    let _ = rt.deliver_local(shard, target, command).await;
                });
            }
            Route::Remote(_, peer, epoch) => {
                let req = EntityRequest {
                    target,
                    command: encode(&cmd),
                    chain: Vec::new(),
                    epoch,
                    forwarded: false,
                };
                let transport = self.inner.transport.clone();
                self.inner.spawn(async move {
                    let _ = transport.send(peer, ENTITY_SERVICE, &req).await;
                });
            }
            Route::Wait(why) => debug!(%target, reason = %why, "tell dropped"),
        }
    }

    /// Serves a request from another node: here if this node owns the shard, else forwarded
    /// once to the owner it knows.
    async fn serve_inbound(&self, mut msg: shoal_transport::Inbound) {
        let req: EntityRequest = match msg.decode() {
            Ok(r) => r,
            Err(e) => {
                msg.reply_error(format!("undecodable entity request: {e}"));
                return;
            }
        };
        let replier = msg.take_replier();
        let outcome = self.serve_request(req, replier.is_some()).await;
        if let (Some(r), Some(o)) = (replier, outcome) {
            r.reply(&o);
        }
    }

    async fn serve_request(&self, req: EntityRequest, wants_reply: bool) -> Option<Outcome> {
        let epoch = self.epoch();
        if req.chain.contains(&req.target) {
            return Some(Outcome::Failed(AskError::Rejected(format!(
                "reentrant ask: {} is waiting in this call chain",
                req.target
            ))));
        }
        match self.route(&req.target) {
            Route::Local(shard) => {
                let (tx, rx) = oneshot::channel();
                let cmd = Command {
                    payload: Payload::Wire(req.command),
                    chain: req.chain,
                    reply: if wants_reply {
                        ReplyTo::Wire(tx)
                    } else {
                        ReplyTo::Nobody
                    },
                };
                match self.deliver_local(shard, req.target, cmd).await {
                    Ok(()) if wants_reply => Some(rx.await.unwrap_or(Outcome::Retry {
                        reason: "the entity stopped before replying".into(),
                        epoch,
                    })),
                    Ok(()) => None,
                    Err((_, reason)) => Some(Outcome::Retry { reason, epoch }),
                }
            }
            Route::Remote(_, peer, _) if !req.forwarded => {
                let fwd = EntityRequest {
                    forwarded: true,
                    epoch,
                    ..req
                };
                if !wants_reply {
                    let _ = self.inner.transport.send(peer, ENTITY_SERVICE, &fwd).await;
                    return None;
                }
                match self
                    .inner
                    .transport
                    .request::<_, Outcome>(
                        peer,
                        ENTITY_SERVICE,
                        &fwd,
                        self.inner.settings.ask_timeout,
                    )
                    .await
                {
                    Ok(o) => Some(o),
                    Err(shoal_transport::RequestError::Connect(e)) => Some(Outcome::Retry {
                        reason: format!("forwarding to the owner failed: {e}"),
                        epoch,
                    }),
                    Err(e) => Some(Outcome::Failed(AskError::Unavailable(format!(
                        "lost contact with the owner after forwarding (the command may or may not have run): {e}"
                    )))),
                }
            }
            Route::Remote(shard, peer, _) => Some(Outcome::Retry {
                reason: format!(
                    "shard {shard} is owned by {} in epoch {epoch}, not here",
                    peer.name.unwrap_or_default()
                ),
                epoch,
            }),
            Route::Wait(reason) => Some(Outcome::Retry { reason, epoch }),
        }
    }

    /// A new committed configuration: new table, and the shards that change owner start
    /// moving.
    fn on_config(&self, committed: &Committed) {
        let config = &committed.config;
        let current = self.placement();
        if config.epoch <= current.epoch {
            return;
        }
        let me = self.inner.membership.self_id();
        let member = config.contains(&me);
        let spec = TableSpec {
            shards: config.placement.shards,
            vnodes: config.placement.vnodes,
            replicas: config.placement.replicas as usize,
        };
        if spec.shards != self.inner.shards {
            warn!(node = %self.inner.name, "configuration with another shard count ignored");
            return;
        }
        let names: Vec<&str> = config.members.iter().map(|m| m.id.name.as_str()).collect();
        let table = ShardTable::compute(&names, spec);
        // The table before: ours, or, for a node that joins, the previous epoch's members.
        let previous = match &current.table {
            Some(t) => Some(t.clone()),
            None if config.epoch > 1 && !committed.prev_members.is_empty() => {
                let prev: Vec<&str> = committed
                    .prev_members
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect();
                Some(ShardTable::compute(&prev, spec))
            }
            None => None,
        };
        let addrs: HashMap<String, SocketAddr> = config
            .members
            .iter()
            .map(|m| (m.id.name.clone(), m.addr))
            .collect();
        // The previous owner will hand the shard over if it is still a member (a planned
        // move: someone joined) or is leaving gracefully; a member that was removed because
        // it died cannot. A new node's failure detector may not have heard from the others
        // yet, so liveness alone is not the test.
        let view = self.inner.membership.view();
        let will_hand_off = |name: &str| {
            config.members.iter().any(|m| m.id.name == name)
                || view
                    .member(name)
                    .is_some_and(|m| m.live || m.status == shoal_membership::NodeStatus::Leaving)
        };
        let mut gained = 0;
        let mut moving = Vec::new();
        let deadline = Instant::now() + self.inner.settings.handoff_timeout;
        for s in 0..self.inner.shards {
            let shard = ShardId(s);
            let new_owner = if member { table.primary(shard) } else { None };
            let mine_now = new_owner == Some(self.inner.name.as_str());
            let old_owner = previous.as_ref().and_then(|t| t.primary(shard));
            let mut host = lock(&self.inner.hosts[s as usize]);
            let was_mine = matches!(host.mode, Mode::Serving | Mode::Receiving { .. });
            host.epoch = config.epoch;
            match (was_mine, mine_now) {
                (true, true) => {}
                (false, true) => {
                    gained += 1;
                    host.mode = match old_owner {
                        Some(o) if o != self.inner.name && will_hand_off(o) => Mode::Receiving {
                            from: o.to_string(),
                            deadline,
                        },
                        _ => Mode::Serving,
                    };
                }
                (true, false) => {
                    host.mode = Mode::Moving;
                    if let Some(to) = table.primary(shard) {
                        moving.push((shard, to.to_string()));
                    }
                }
                (false, false) => {
                    if !matches!(host.mode, Mode::Moving) {
                        host.mode = Mode::Idle;
                    }
                }
            }
        }
        *self
            .inner
            .placement
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(Placement {
            epoch: config.epoch,
            table: Some(table),
            member,
            addrs,
        });
        info!(
            node = %self.inner.name,
            epoch = config.epoch,
            member,
            gained,
            handing_off = moving.len(),
            "shard table updated"
        );
        for (shard, to) in moving {
            let rt = self.clone();
            self.inner.handoffs.fetch_add(1, Ordering::SeqCst);
            let epoch = config.epoch;
            let handle = tokio::spawn(async move {
                rt.hand_off(shard, epoch, to).await;
                rt.inner.handoffs.fetch_sub(1, Ordering::SeqCst);
                rt.inner.handoffs_done.notify_waiters();
            });
            self.inner.track(handle.abort_handle());
        }
    }

    /// Hands `shard` to `to`: stops its entities (they finish what they queued), collects
    /// every state and sends them, until the receiver installs them or gives up.
    async fn hand_off(&self, shard: ShardId, epoch: u64, to: String) {
        let (active, passive) = lock(&self.inner.hosts[shard.0 as usize]).drain();
        self.inner.active.fetch_sub(active.len(), Ordering::Relaxed);
        let mut entities: Vec<HandedState> = passive
            .into_iter()
            .map(|(entity, state)| HandedState { entity, state })
            .collect();
        for (entity, tx) in active {
            let (stx, srx) = oneshot::channel();
            if tx.send(ActorMsg::Stop(stx)).await.is_ok()
                && let Ok(state) = srx.await
            {
                entities.push(HandedState { entity, state });
            }
        }
        // Sent even when empty: the new owner waits for it before serving.
        let count = entities.len();
        let mut h = Handoff {
            shard: shard.0,
            epoch,
            from: self.inner.name.clone(),
            entities,
        };
        // As long as the receiver waits for it, no longer.
        let give_up = Instant::now() + self.inner.settings.handoff_timeout;
        let mut target = to;
        while Instant::now() < give_up {
            let Some(addr) = self.placement().addrs.get(&target).copied() else {
                break;
            };
            match self
                .inner
                .transport
                .request::<_, HandoffReply>(
                    Peer::named(target.clone(), addr),
                    HANDOFF_SERVICE,
                    &h,
                    Duration::from_secs(5),
                )
                .await
            {
                Ok(HandoffReply::Installed) => {
                    info!(node = %self.inner.name, shard = shard.0, to = %target, entities = count, "shard handed off");
                    return;
                }
                Ok(HandoffReply::NotOwner { .. }) | Err(_) => {
                    // The owner may have changed again: send to the newest owner we know.
                    let p = self.placement();
                    if let Some(owner) = p.table.as_ref().and_then(|t| t.primary(shard))
                        && owner != self.inner.name
                    {
                        target = owner.to_string();
                        h.epoch = h.epoch.max(p.epoch);
                    }
                    tokio::time::sleep(self.inner.rng.jitter(Duration::from_millis(200))).await;
                }
            }
        }
        warn!(
            node = %self.inner.name, shard = shard.0, entities = count,
            "could not hand the shard off: its entities' state is lost (replication will keep copies)"
        );
    }

    /// Receives a shard's states from its previous owner.
    async fn on_handoff(&self, h: Handoff) -> HandoffReply {
        let shard = ShardId(h.shard);
        if shard.0 >= self.inner.shards {
            return HandoffReply::NotOwner {
                epoch: self.epoch(),
            };
        }
        let buffered = {
            let mut host = lock(&self.inner.hosts[shard.0 as usize]);
            match host.mode {
                Mode::Receiving { .. } | Mode::Serving => {}
                _ => return HandoffReply::NotOwner { epoch: host.epoch },
            }
            let mut kept = 0;
            for e in h.entities {
                if host.active.contains_key(&e.entity) || host.passive.contains_key(&e.entity) {
                    // Served here already (the handoff came after the timeout): keep ours.
                    kept += 1;
                    continue;
                }
                host.passive.insert(e.entity, e.state);
            }
            if kept > 0 {
                warn!(node = %self.inner.name, shard = shard.0, kept, "late handoff: kept the states served here meanwhile");
            }
            host.mode = Mode::Serving;
            std::mem::take(&mut host.buffer)
        };
        info!(node = %self.inner.name, shard = shard.0, from = %h.from, "shard received");
        self.flush(shard, buffered).await;
        HandoffReply::Installed
    }

    /// Delivers commands buffered while a shard was being received.
    async fn flush(&self, shard: ShardId, buffered: Vec<(EntityRef, Command)>) {
        for (target, cmd) in buffered {
            if let Err((cmd, why)) = self.deliver_local(shard, target, cmd).await {
                cmd.reply.fail(AskError::Unavailable(why));
            }
        }
    }

    /// Shards whose handoff did not come in time start serving (empty); idle entities are
    /// passivated; beyond the active limit, the least recently used too.
    async fn maintain_once(&self) {
        let now = Instant::now();
        let idle = self.inner.settings.idle_after;
        let over = self
            .active_entities()
            .saturating_sub(self.inner.settings.max_active);
        let mut candidates: Vec<(Instant, ShardId, EntityRef)> = Vec::new();
        for s in 0..self.inner.shards {
            let shard = ShardId(s);
            let late = {
                let mut host = lock(&self.inner.hosts[s as usize]);
                let late = match &host.mode {
                    Mode::Receiving { from, deadline } if *deadline <= now => Some(from.clone()),
                    _ => None,
                };
                if late.is_some() {
                    host.mode = Mode::Serving;
                }
                if host.is_serving() {
                    for (k, a) in &host.active {
                        if now.duration_since(a.last_used) >= idle || over > 0 {
                            candidates.push((a.last_used, shard, k.clone()));
                        }
                    }
                }
                late.map(|from| (from, std::mem::take(&mut host.buffer)))
            };
            if let Some((from, buffered)) = late {
                warn!(node = %self.inner.name, shard = s, %from, "no handoff arrived in time: serving the shard empty");
                self.flush(shard, buffered).await;
            }
        }
        candidates.sort_by_key(|c| c.0);
        let idle_count = candidates
            .iter()
            .filter(|c| now.duration_since(c.0) >= idle)
            .count();
        for (_, shard, key) in candidates.into_iter().take(idle_count.max(over)) {
            self.passivate(shard, key).await;
        }
    }

    async fn passivate(&self, shard: ShardId, key: EntityRef) {
        let tx = {
            let mut host = lock(&self.inner.hosts[shard.0 as usize]);
            match host.active.remove(&key) {
                Some(a) => a.tx,
                None => return,
            }
        };
        self.inner.active.fetch_sub(1, Ordering::Relaxed);
        let (stx, srx) = oneshot::channel();
        if tx.send(ActorMsg::Stop(stx)).await.is_ok()
            && let Ok(state) = srx.await
        {
            let mut host = lock(&self.inner.hosts[shard.0 as usize]);
            if host.is_serving() && !host.active.contains_key(&key) {
                host.passive.insert(key, state);
            }
        }
    }

    /// The number of entities held here per shard (for views and tests).
    pub fn entities_per_shard(&self) -> Vec<(ShardId, usize)> {
        (0..self.inner.shards)
            .map(|s| (ShardId(s), lock(&self.inner.hosts[s as usize]).entities()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

async fn maintain(weak: Weak<RuntimeInner>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(rt) = weak.upgrade() else { return };
        Runtime::from_inner(rt).maintain_once().await;
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Bytes {
    postcard::to_allocvec(value).unwrap_or_default().into()
}
