//! Per-peer batching: everything queued for a peer while its previous batch was in flight
//! goes in the next one, as one request. One batch in flight per lane keeps a shard's
//! appends in order.
//!
//! Each peer has two lanes: **data** (appends, read confirmations: the hot path) and
//! **control** (fences and install openings, which may wait for an old primary to finish
//! its writes), so a slow handover never holds up replication of other shards.
//!
//! A batch that cannot be delivered after a few attempts is given up: its appends are
//! reported dropped (the primary installs that backup again later), its calls fail. A lane
//! never grows without bound: past [`MAX_QUEUED_BYTES`] appends are dropped the same way.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use shoal_transport::{NodeRng, Peer, Transport};
use tokio::sync::{Notify, oneshot};
use tracing::debug;

use super::wire::{Item, ItemReply, REPLICA_SERVICE, ReplicaRequest, ReplicaResponse};

/// A batch carries about this much at most.
const MAX_BATCH_BYTES: usize = 4 << 20;
/// Queued bytes past which appends are dropped.
pub(crate) const MAX_QUEUED_BYTES: usize = 64 << 20;
/// Attempts before a batch is given up.
const ATTEMPTS: u32 = 3;

/// Receives the outcome of items nobody awaits (appends and confirmations).
pub(crate) trait LaneSink: Send + Sync + 'static {
    fn on_append(&self, peer: &str, batch: u64, shard: u32, epoch: u64, reply: ItemReply);
    fn on_confirm(&self, peer: &str, batch: u64, shard: u32, epoch: u64, ok: bool);
}

enum Waiter {
    Sink,
    Reply(oneshot::Sender<ItemReply>),
}

struct Queued {
    item: Item,
    waiter: Waiter,
}

#[derive(Default)]
struct State {
    queue: Vec<Queued>,
    bytes: usize,
    confirms: BTreeMap<u32, u64>,
    next_batch: u64,
}

/// Which lane of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum LaneKind {
    Data,
    Control,
}

/// One lane to one peer.
pub(crate) struct Lane {
    name: String,
    addr: Mutex<SocketAddr>,
    state: Mutex<State>,
    notify: Notify,
    sink: Weak<dyn LaneSink>,
    transport: Transport,
    rng: NodeRng,
    timeout: Duration,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Lane {
    /// Queues an item whose reply goes to the sink (an append).
    pub fn push(&self, item: Item) {
        let mut st = lock(&self.state);
        if st.bytes > MAX_QUEUED_BYTES
            && let Item::Append { shard, epoch, .. } = &item
        {
            let (shard, epoch) = (*shard, *epoch);
            drop(st);
            if let Some(sink) = self.sink.upgrade() {
                sink.on_append(&self.name, 0, shard, epoch, ItemReply::NeedInstall);
            }
            return;
        }
        st.bytes += item.size();
        st.queue.push(Queued {
            item,
            waiter: Waiter::Sink,
        });
        drop(st);
        self.notify.notify_one();
    }

    /// Queues an item and returns where its reply will arrive.
    pub fn call(&self, item: Item) -> oneshot::Receiver<ItemReply> {
        let (tx, rx) = oneshot::channel();
        let mut st = lock(&self.state);
        st.bytes += item.size();
        st.queue.push(Queued {
            item,
            waiter: Waiter::Reply(tx),
        });
        drop(st);
        self.notify.notify_one();
        rx
    }

    /// Asks, in the next batch, whether the peer still accepts `epoch` for `shard`; returns
    /// that batch's number.
    pub fn want_confirm(&self, shard: u32, epoch: u64) -> u64 {
        let mut st = lock(&self.state);
        st.confirms.insert(shard, epoch);
        let n = st.next_batch;
        drop(st);
        self.notify.notify_one();
        n
    }

    fn peer(&self) -> Peer {
        Peer::named(self.name.clone(), *lock(&self.addr))
    }

    async fn run(self: Arc<Self>) {
        loop {
            let (batch, items, confirms) = loop {
                let notified = self.notify.notified();
                {
                    let mut st = lock(&self.state);
                    if !st.queue.is_empty() || !st.confirms.is_empty() {
                        let mut size = 0;
                        let mut take = 0;
                        while take < st.queue.len() && (take == 0 || size < MAX_BATCH_BYTES) {
                            size += st.queue[take].item.size();
                            take += 1;
                        }
                        let items: Vec<Queued> = st.queue.drain(..take).collect();
                        st.bytes = st.bytes.saturating_sub(size);
                        let confirms: Vec<(u32, u64)> =
                            std::mem::take(&mut st.confirms).into_iter().collect();
                        let batch = st.next_batch;
                        st.next_batch += 1;
                        break (batch, items, confirms);
                    }
                }
                notified.await;
            };
            self.send(batch, items, confirms).await;
        }
    }

    async fn send(&self, batch: u64, items: Vec<Queued>, confirms: Vec<(u32, u64)>) {
        let request = ReplicaRequest::Batch {
            items: items.iter().map(|q| q.item.clone()).collect(),
            confirms: confirms.clone(),
        };
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            match self
                .transport
                .request::<_, ReplicaResponse>(self.peer(), REPLICA_SERVICE, &request, self.timeout)
                .await
            {
                Ok(ReplicaResponse::Batch {
                    items: replies,
                    confirms: oks,
                }) if replies.len() == items.len() && oks.len() == confirms.len() => {
                    break Ok((replies, oks));
                }
                Ok(_) => break Err("a malformed batch reply".to_string()),
                Err(e) if attempt >= ATTEMPTS => break Err(e.to_string()),
                Err(e) => {
                    debug!(peer = %self.name, batch, attempt, error = %e, "replica batch failed; retrying");
                    let pause = Duration::from_millis(100) * 2u32.pow(attempt);
                    tokio::time::sleep(self.rng.jitter(pause)).await;
                }
            }
        };
        let sink = self.sink.upgrade();
        match outcome {
            Ok((replies, oks)) => {
                for ((shard, epoch), ok) in confirms.into_iter().zip(oks) {
                    if let Some(s) = &sink {
                        s.on_confirm(&self.name, batch, shard, epoch, ok);
                    }
                }
                for (q, reply) in items.into_iter().zip(replies) {
                    deliver(sink.as_deref(), &self.name, batch, q, reply);
                }
            }
            Err(why) => {
                debug!(peer = %self.name, batch, error = %why, "replica batch given up");
                for q in items {
                    let reply = match &q.item {
                        Item::Append { .. } => ItemReply::NeedInstall,
                        _ => ItemReply::Failed(format!("{} unreachable: {why}", self.name)),
                    };
                    deliver(sink.as_deref(), &self.name, batch, q, reply);
                }
            }
        }
    }
}

fn deliver(sink: Option<&dyn LaneSink>, peer: &str, batch: u64, q: Queued, reply: ItemReply) {
    match q.waiter {
        Waiter::Reply(tx) => {
            let _ = tx.send(reply);
        }
        Waiter::Sink => {
            if let (Some(s), Item::Append { shard, epoch, .. }) = (sink, &q.item) {
                s.on_append(peer, batch, *shard, *epoch, reply);
            }
        }
    }
}

/// Every lane of a node, created on first use.
pub(crate) struct Lanes {
    lanes: Mutex<HashMap<(String, LaneKind), Arc<Lane>>>,
    transport: Transport,
    rng: NodeRng,
    sink: Mutex<Option<Weak<dyn LaneSink>>>,
    timeout: Duration,
}

impl Lanes {
    pub fn new(transport: Transport, rng: NodeRng, timeout: Duration) -> Self {
        Self {
            lanes: Mutex::new(HashMap::new()),
            transport,
            rng,
            sink: Mutex::new(None),
            timeout,
        }
    }

    pub fn set_sink(&self, sink: Weak<dyn LaneSink>) {
        *lock(&self.sink) = Some(sink);
    }

    /// The lane to `name`, started with `spawn` if new.
    pub fn get(
        &self,
        name: &str,
        addr: SocketAddr,
        kind: LaneKind,
        spawn: impl FnOnce(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>),
    ) -> Arc<Lane> {
        let mut lanes = lock(&self.lanes);
        if let Some(l) = lanes.get(&(name.to_string(), kind)) {
            let mut a = lock(&l.addr);
            if *a != addr {
                *a = addr;
            }
            return l.clone();
        }
        let sink = lock(&self.sink)
            .clone()
            .unwrap_or_else(|| Weak::<NoSink>::new());
        let lane = Arc::new(Lane {
            name: name.to_string(),
            addr: Mutex::new(addr),
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            sink,
            transport: self.transport.clone(),
            rng: self.rng.fork(),
            timeout: self.timeout,
        });
        lanes.insert((name.to_string(), kind), lane.clone());
        spawn(Box::pin(lane.clone().run()));
        lane
    }
}

struct NoSink;

impl LaneSink for NoSink {
    fn on_append(&self, _: &str, _: u64, _: u32, _: u64, _: ItemReply) {}
    fn on_confirm(&self, _: &str, _: u64, _: u32, _: u64, _: bool) {}
}
