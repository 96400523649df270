//! Tells to another node, batched per peer.
//!
//! `tell` never waits, so it cannot wait for a connection or for room in one. Each peer has a
//! lane: a bounded queue of tells that one task drains into [`TellBatch`] frames, in order.
//! A tell costs the sender one push under a lock; encoding and sending happen on the lane's
//! task, one frame per batch. A full lane (the peer or the network cannot keep up) drops the
//! tell and counts it in `shoal_tells_dropped_total`: tells are at most once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use shoal_transport::{Peer, Transport};
use tokio::sync::Notify;
use tracing::debug;

use super::runtime::lock;
use super::wire::{EntityRequest, TELL_SERVICE, TellBatch};

/// Tells waiting for one peer at most; beyond, new ones are dropped.
const LANE_LIMIT: usize = 65_536;
/// Tells in one batch at most, and the bytes of their commands.
const BATCH_TELLS: usize = 4096;
const BATCH_BYTES: usize = 1024 * 1024;

struct Lane {
    queue: Mutex<Vec<EntityRequest>>,
    wake: Notify,
}

/// Every peer's lane, created on first use.
#[derive(Default)]
pub(crate) struct TellLanes {
    /// By address, with the name the lane was made for.
    lanes: Mutex<HashMap<SocketAddr, (String, Arc<Lane>)>>,
}

impl TellLanes {
    /// Queues `req` for `peer`; `false` if its lane is full (the tell is dropped). `spawn`
    /// starts the lane's task the first time.
    pub(crate) fn push(
        &self,
        transport: &Transport,
        peer: &Peer,
        req: EntityRequest,
        spawn: impl FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>),
    ) -> bool {
        let name = peer.name.as_deref().unwrap_or_default();
        let lane = {
            let mut lanes = lock(&self.lanes);
            match lanes.get(&peer.addr) {
                Some((n, l)) if n == name => l.clone(),
                // New, or another node at that address now: a lane of its own.
                _ => {
                    let l = Arc::new(Lane {
                        queue: Mutex::new(Vec::new()),
                        wake: Notify::new(),
                    });
                    lanes.insert(peer.addr, (name.to_string(), l.clone()));
                    spawn(Box::pin(drain(l.clone(), transport.clone(), peer.clone())));
                    l
                }
            }
        };
        let mut queue = lock(&lane.queue);
        if queue.len() >= LANE_LIMIT {
            return false;
        }
        queue.push(req);
        if queue.len() == 1 {
            drop(queue);
            lane.wake.notify_one();
        }
        true
    }
}

/// The lane's task: sends what is queued, a batch at a time, in order. A batch that cannot
/// be sent (no connection, the peer gone) is dropped.
async fn drain(lane: Arc<Lane>, transport: Transport, peer: Peer) {
    loop {
        let tells = {
            let mut queue = lock(&lane.queue);
            let mut bytes = 0;
            let take = queue
                .iter()
                .take(BATCH_TELLS)
                .take_while(|t| {
                    bytes += t.command.len() + t.target.id.len();
                    bytes <= BATCH_BYTES
                })
                .count()
                .max(queue.len().min(1));
            queue.drain(..take).collect::<Vec<_>>()
        };
        if tells.is_empty() {
            lane.wake.notified().await;
            continue;
        }
        let n = tells.len();
        if let Err(e) = transport
            .send(peer.clone(), TELL_SERVICE, &TellBatch { tells })
            .await
        {
            debug!(peer = ?peer.name, tells = n, error = %e, "tells dropped: cannot send them");
        }
    }
}
