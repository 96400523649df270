//! Where a message goes, and the retries while ownership settles.
//!
//! The primary serves a shard only if it is the primary in its current epoch, a member, and
//! sees a majority; otherwise the sender is told to retry, and retries (with jitter) until
//! its timeout. A node that handed a shard over forwards commands to the new primary until
//! its own table catches up; any other non-primary forwards a request once to the primary
//! it knows. Only a command that certainly did not run is retried: one that may have run
//! fails with `Unavailable` saying so.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use shoal_sharding::{ShardId, shard_of};
use shoal_transport::{Peer, RequestError};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::debug;

use super::actor::{Command, LocalReply, Payload, ReplyTo, encode, local};
use super::error::AskError;
use super::kind::Entity;
use super::runtime::{Placement, Runtime};
use super::shard_host::Mode;
use super::wire::{
    ENTITY_SERVICE, EntityKeyRef, EntityRef, EntityRequest, Outcome, TellBatchRef, TellRef,
};

/// Where a message goes.
pub(crate) enum Route {
    Local(ShardId),
    Remote(ShardId, Peer, u64),
    /// Not servable now; retry.
    Wait(String),
}

/// A tell's command: as the caller gave it, or boxed once the fast path tried it.
enum Told<C> {
    Typed(C),
    Boxed(Command),
}

/// [`Route`] of a known shard, the owner's name borrowed where it can be.
enum RouteRef<'p> {
    Local,
    Remote {
        name: Cow<'p, str>,
        addr: SocketAddr,
        epoch: u64,
    },
    Wait(String),
}

fn encoder<K: Entity>(v: &(dyn std::any::Any + Send)) -> Option<Bytes> {
    v.downcast_ref::<K::Command>().map(encode)
}

impl Runtime {
    pub(crate) fn route(&self, target: &EntityRef) -> Route {
        self.route_in(&self.placement(), &target.kind, &target.id)
    }

    /// Where entity `kind`/`id` goes under placement `p`.
    pub(crate) fn route_in(&self, p: &Placement, kind: &str, id: &str) -> Route {
        let shard = shard_of(kind, id.as_bytes(), self.inner.shards);
        match self.route_shard(p, shard) {
            RouteRef::Local => Route::Local(shard),
            RouteRef::Remote { name, addr, epoch } => {
                Route::Remote(shard, Peer::named(name, addr), epoch)
            }
            RouteRef::Wait(why) => Route::Wait(why),
        }
    }

    /// Where `shard` goes under placement `p`, the owner's name borrowed from `p` (a hot
    /// path, `tell`, needs no allocation). Locks the shard: `p` must not be a
    /// [`Runtime::placement_ref`] guard.
    fn route_shard<'p>(&self, p: &'p Placement, shard: ShardId) -> RouteRef<'p> {
        let Some(table) = &p.table else {
            return RouteRef::Wait("this node knows no cluster configuration yet".into());
        };
        if let Mode::Moved { to, addr, epoch } = self.host(shard.0).mode()
            && *epoch > p.epoch
        {
            return RouteRef::Remote {
                name: to.clone().into(),
                addr: *addr,
                epoch: *epoch,
            };
        }
        match table.primary(shard) {
            None => RouteRef::Wait("the configuration has no members".into()),
            Some(owner) if owner == self.inner.name => RouteRef::Local,
            Some(owner) => match p.addrs.get(owner) {
                Some(addr) => RouteRef::Remote {
                    name: owner.into(),
                    addr: *addr,
                    epoch: p.epoch,
                },
                None => RouteRef::Wait(format!("no address for {owner}")),
            },
        }
    }

    /// Why this node cannot serve its shards now, if it cannot.
    pub(crate) fn cannot_serve(&self) -> Option<String> {
        self.cannot_serve_in(&self.placement())
    }

    /// [`Runtime::cannot_serve`] under placement `p`.
    pub(crate) fn cannot_serve_in(&self, p: &Placement) -> Option<String> {
        if !p.member {
            return Some("this node is not a member of the cluster configuration".into());
        }
        match self.inner.membership.majority() {
            Some((epoch, false)) => Some(format!(
                "this node sees no majority of epoch {epoch}'s members: it is on the minority side of a partition"
            )),
            _ => None,
        }
    }

    /// Sends a command to `K`/`id` and waits for the reply, retrying while ownership settles,
    /// at most `timeout` in all. Timed in `shoal_ask_duration_seconds`.
    pub(crate) async fn ask_with<K: Entity>(
        &self,
        id: &str,
        cmd: K::Command,
        chain: Vec<EntityRef>,
        timeout: Duration,
    ) -> Result<K::Reply, AskError> {
        let started = Instant::now();
        let result = self.ask_routed::<K>(id, cmd, chain, timeout).await;
        let kind = self.inner.metrics.kind(K::KIND);
        let histogram = if result.is_ok() {
            &kind.asks_ok
        } else {
            &kind.asks_failed
        };
        histogram.observe(started.elapsed().as_secs_f64());
        result
    }

    async fn ask_routed<K: Entity>(
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
        let decode = |b: &Bytes| {
            postcard::from_bytes::<K::Reply>(b)
                .map_err(|e| AskError::Decode(format!("reply of {}: {e}", K::KIND)))
        };
        let deadline = Instant::now() + timeout;
        // Kept to send the command again (or elsewhere) once the typed value is gone.
        let wire = encode(&cmd);
        let mut payload = Payload::Local(local(cmd), encoder::<K>);
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
                        Ok(()) => match tokio::time::timeout_at(deadline, rx).await {
                            Ok(Ok(LocalReply::Value(b))) => {
                                return b.downcast::<K::Reply>().map(|r| *r).map_err(|_| {
                                    AskError::Decode("a reply of another type".into())
                                });
                            }
                            Ok(Ok(LocalReply::Encoded(b))) => return decode(&b),
                            Ok(Ok(LocalReply::Failed(e))) => return Err(e),
                            Ok(Ok(LocalReply::Retry(why))) => {
                                // It did not run; the typed value went with it.
                                last = why;
                                payload = Payload::Wire(wire.clone());
                            }
                            Ok(Err(_)) => {
                                return Err(AskError::Unavailable(
                                    "the entity stopped before replying; the command may or may not have taken effect".into(),
                                ));
                            }
                            Err(_) => return Err(AskError::Timeout(timeout.as_millis() as u64)),
                        },
                        Err((back, why)) => {
                            payload = back.payload;
                            last = why;
                        }
                    }
                }
                Route::Remote(_, peer, epoch) => {
                    let bytes = wire.clone();
                    let req = EntityRequest {
                        target: target.clone(),
                        command: bytes.clone(),
                        chain: chain.clone(),
                        epoch,
                        forwarded: false,
                    };
                    let left = deadline.saturating_duration_since(Instant::now());
                    self.inner.metrics.kind(K::KIND).messages_out.inc();
                    match self
                        .inner
                        .transport
                        .request::<_, Outcome>(peer.clone(), ENTITY_SERVICE, &req, left)
                        .await
                    {
                        Ok(Outcome::Reply(r)) => return decode(&r),
                        Ok(Outcome::Failed(e)) => return Err(e),
                        Ok(Outcome::Retry { reason, .. }) => last = reason,
                        Err(RequestError::Timeout(_)) => {
                            return Err(AskError::Timeout(timeout.as_millis() as u64));
                        }
                        // The request never left: safe to try again.
                        Err(RequestError::Connect(e)) => {
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
        let boxed = |cmd: K::Command| Command {
            payload: Payload::Local(local(cmd), encoder::<K>),
            chain: Vec::new(),
            reply: ReplyTo::Nobody,
        };
        let shard = shard_of(K::KIND, id.as_bytes(), self.inner.shards);
        // The common case first: this node's table makes it the shard's primary and the
        // entity's actor is running. One shard lock, and no allocation for a command of up
        // to 16 bytes.
        let here = {
            let p = self.placement_ref();
            p.table.as_ref().and_then(|t| t.primary(shard)) == Some(&*self.inner.name)
                && self.cannot_serve_in(&p).is_none()
        };
        let cmd = if here {
            match self.tell_active(shard, K::KIND, id, boxed(cmd)) {
                None => return,
                Some(back) => Told::Boxed(back),
            }
        } else {
            Told::Typed(cmd)
        };
        let p = self.placement();
        match self.route_shard(&p, shard) {
            RouteRef::Local => match self.cannot_serve_in(&p) {
                None => {
                    let command = match cmd {
                        Told::Typed(cmd) => boxed(cmd),
                        Told::Boxed(command) => command,
                    };
                    self.tell_slow(shard, EntityRef::new(K::KIND, id), command)
                }
                Some(why) => debug!(kind = K::KIND, id, reason = %why, "tell dropped"),
            },
            RouteRef::Remote { name, addr, epoch } => {
                // Encoded on the stack when it fits: a tell to another node allocates
                // nothing of its own (the lane copies it into the batch being filled).
                let mut small = [0u8; 256];
                let owned;
                let bytes: &[u8] = match &cmd {
                    Told::Typed(cmd) => match postcard::to_slice(cmd, &mut small) {
                        Ok(b) => b,
                        Err(_) => {
                            owned = encode(cmd);
                            &owned
                        }
                    },
                    Told::Boxed(command) => match command.payload.encoded() {
                        Some(b) => {
                            owned = b;
                            &owned
                        }
                        None => return,
                    },
                };
                let tell = TellRef {
                    target: EntityKeyRef { kind: K::KIND, id },
                    command: bytes,
                    chain: Vec::new(),
                    epoch,
                    forwarded: false,
                };
                self.tell_remote(&name, addr, &tell);
            }
            RouteRef::Wait(why) => debug!(kind = K::KIND, id, reason = %why, "tell dropped"),
        }
    }

    /// Queues a tell for node `name` at `addr` (see `tell_lane`).
    fn tell_remote(&self, name: &str, addr: SocketAddr, tell: &TellRef<'_>) {
        let metrics = self.inner.metrics.kind(tell.target.kind);
        let inner = &self.inner;
        if inner.tells.push(&inner.transport, name, addr, tell, |f| {
            inner.spawn(f);
        }) {
            metrics.messages_out.inc();
        } else {
            metrics.tells_dropped.inc();
            debug!(peer = name, "tell lane full: tell dropped");
        }
    }

    /// Takes in a batch of tells from another node, read in place: a tell to a running actor
    /// of a shard this node serves goes into its mailbox with one small copy and no task;
    /// the others go on to their owner once, or are dropped (tells are at most once).
    pub(crate) fn serve_tells(&self, msg: shoal_transport::Inbound) {
        let batch: TellBatchRef<'_> = match postcard::from_bytes(&msg.body) {
            Ok(b) => b,
            Err(e) => {
                debug!(from = %msg.from, error = %e, "undecodable tell batch dropped");
                return;
            }
        };
        // Checked once per batch; every tell's shard is checked again under its lock.
        let placement = self.placement();
        let serving = self.cannot_serve_in(&placement).is_none();
        let table = placement.table.as_ref().filter(|_| serving);
        let me = self.inner.name.as_str();
        for tell in batch.tells {
            let TellRef {
                target: EntityKeyRef { kind, id },
                command,
                chain,
                epoch,
                forwarded,
            } = tell;
            self.inner.metrics.kind(kind).messages_in.inc();
            // Copied, not sliced: a slice would keep the whole frame (up to 1 MiB) alive
            // for as long as one of its tells waits in a slow actor's mailbox.
            let command = Bytes::copy_from_slice(command);
            let mut cmd = Command {
                payload: Payload::Wire(command),
                chain,
                reply: ReplyTo::Nobody,
            };
            if let Some(t) = table {
                let shard = shard_of(kind, id.as_bytes(), self.inner.shards);
                if t.primary(shard) == Some(me) {
                    match self.tell_active(shard, kind, id, cmd) {
                        None => continue,
                        Some(back) => cmd = back,
                    }
                }
            }
            let Payload::Wire(command) = cmd.payload else {
                continue;
            };
            self.tell_inbound(EntityRequest {
                target: EntityRef::new(kind, id),
                command,
                chain: cmd.chain,
                epoch,
                forwarded,
            });
        }
    }

    /// A tell from another node that did not go straight into a running actor.
    fn tell_inbound(&self, req: EntityRequest) {
        match self.route(&req.target) {
            Route::Local(shard) => {
                if let Some(why) = self.cannot_serve() {
                    debug!(target = %req.target, reason = %why, "tell dropped");
                    return;
                }
                let cmd = Command {
                    payload: Payload::Wire(req.command),
                    chain: req.chain,
                    reply: ReplyTo::Nobody,
                };
                self.tell_slow(shard, req.target, cmd);
            }
            Route::Remote(_, peer, _) if !req.forwarded => {
                let tell = TellRef {
                    target: EntityKeyRef {
                        kind: &req.target.kind,
                        id: &req.target.id,
                    },
                    command: &req.command,
                    chain: req.chain,
                    epoch: self.epoch(),
                    forwarded: true,
                };
                self.tell_remote(peer.name.as_deref().unwrap_or_default(), peer.addr, &tell);
            }
            Route::Remote(..) | Route::Wait(_) => {
                debug!(target = %req.target, "tell dropped: not served here")
            }
        }
    }

    /// Serves a request from another node: here if this node is the shard's primary, else
    /// forwarded once to the primary it knows.
    pub(crate) async fn serve_inbound(&self, mut msg: shoal_transport::Inbound) {
        let req: EntityRequest = match msg.decode() {
            Ok(r) => r,
            Err(e) => {
                msg.reply_error(format!("undecodable entity request: {e}"));
                return;
            }
        };
        self.inner.metrics.kind(&req.target.kind).messages_in.inc();
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
                    Ok(()) if wants_reply => Some(rx.await.unwrap_or(Outcome::Failed(
                        AskError::Unavailable(
                            "the entity stopped before replying; the command may or may not have taken effect".into(),
                        ),
                    ))),
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
                Some(self.forward(peer, &fwd, wants_reply).await?)
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

    /// Sends `req` on to `peer` and returns its outcome (`None` for a tell).
    pub(crate) async fn forward(
        &self,
        peer: Peer,
        req: &EntityRequest,
        wants_reply: bool,
    ) -> Option<Outcome> {
        self.inner.metrics.kind(&req.target.kind).messages_out.inc();
        if !wants_reply {
            let _ = self.inner.transport.send(peer, ENTITY_SERVICE, req).await;
            return None;
        }
        Some(
            match self
                .inner
                .transport
                .request::<_, Outcome>(peer, ENTITY_SERVICE, req, self.inner.settings.ask_timeout)
                .await
            {
                Ok(o) => o,
                Err(RequestError::Connect(e)) => Outcome::Retry {
                    reason: format!("forwarding to the owner failed: {e}"),
                    epoch: req.epoch,
                },
                Err(e) => Outcome::Failed(AskError::Unavailable(format!(
                    "lost contact with the owner after forwarding (the command may or may not have run): {e}"
                ))),
            },
        )
    }
}
