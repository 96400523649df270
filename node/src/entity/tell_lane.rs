//! Tells to another node, batched per peer.
//!
//! `tell` never waits, so it cannot wait for a connection or for room in one. Each peer has a
//! lane: a bounded queue of tells that one task drains into [`TellBatch`] frames, in order.
//! A tell costs the sender one push under a lock; encoding and sending happen on the lane's
//! task, one frame per batch. A full lane (the peer or the network cannot keep up) drops the
//! tell and counts it in `shoal_tells_dropped_total`: tells are at most once.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use shoal_transport::{Peer, Transport};
use tokio::sync::Notify;
use tracing::debug;

use super::runtime::lock;
use super::wire::{TELL_SERVICE, TellRef};

/// Tells waiting for one peer at most; beyond, new ones are dropped.
const LANE_LIMIT: usize = 65_536;
/// Tells in one batch at most, and the bytes of their encodings (a batch is closed once it
/// has reached either).
const BATCH_TELLS: usize = 4096;
const BATCH_BYTES: usize = 1024 * 1024;

/// A [`super::wire::TellBatch`] being filled: its tells already encoded, one after the
/// other, so a tell costs no allocation of its own and the frame is one copy away.
#[derive(Default)]
struct Batch {
    encoded: Vec<u8>,
    tells: usize,
}

impl Batch {
    fn is_open(&self) -> bool {
        self.tells < BATCH_TELLS && self.encoded.len() < BATCH_BYTES
    }

    /// The body of the `TellBatch` frame: the tell count, then the tells.
    fn into_body(self) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.encoded.len() + 10);
        body = postcard::to_extend(&self.tells, body).unwrap_or_default();
        body.extend_from_slice(&self.encoded);
        body
    }
}

#[derive(Default)]
struct Queue {
    batches: VecDeque<Batch>,
    /// Tells in `batches`.
    tells: usize,
}

struct Lane {
    queue: Mutex<Queue>,
    wake: Notify,
}

/// Every peer's lane, created on first use.
#[derive(Default)]
pub(crate) struct TellLanes {
    /// By address, with the name the lane was made for.
    lanes: Mutex<HashMap<SocketAddr, (String, Arc<Lane>)>>,
}

impl TellLanes {
    /// Queues `tell` for node `name` at `addr`; `false` if its lane is full (the tell is
    /// dropped). `spawn` starts the lane's task the first time.
    pub(crate) fn push(
        &self,
        transport: &Transport,
        name: &str,
        addr: SocketAddr,
        tell: &TellRef<'_>,
        spawn: impl FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>),
    ) -> bool {
        let lane = {
            let mut lanes = lock(&self.lanes);
            match lanes.get(&addr) {
                Some((n, l)) if n == name => l.clone(),
                // New, or another node at that address now: a lane of its own.
                _ => {
                    let l = Arc::new(Lane {
                        queue: Mutex::new(Queue::default()),
                        wake: Notify::new(),
                    });
                    lanes.insert(addr, (name.to_string(), l.clone()));
                    let peer = Peer::named(name, addr);
                    spawn(Box::pin(drain(l.clone(), transport.clone(), peer)));
                    l
                }
            }
        };
        let mut queue = lock(&lane.queue);
        if queue.tells >= LANE_LIMIT {
            return false;
        }
        if !queue.batches.back().is_some_and(Batch::is_open) {
            queue.batches.push_back(Batch::default());
        }
        let Some(batch) = queue.batches.back_mut() else {
            return false;
        };
        let encoded = std::mem::take(&mut batch.encoded);
        match postcard::to_extend(tell, encoded) {
            Ok(encoded) => batch.encoded = encoded,
            Err(e) => {
                debug!(error = %e, "tell not encodable: dropped");
                return false;
            }
        }
        batch.tells += 1;
        queue.tells += 1;
        let first = queue.tells == 1;
        drop(queue);
        if first {
            lane.wake.notify_one();
        }
        true
    }
}

/// The lane's task: sends what is queued, a batch at a time, in order. A batch that cannot
/// be sent (no connection, the peer gone) is dropped.
async fn drain(lane: Arc<Lane>, transport: Transport, peer: Peer) {
    loop {
        let batch = {
            let mut queue = lock(&lane.queue);
            let batch = queue.batches.pop_front();
            if let Some(b) = &batch {
                queue.tells -= b.tells;
            }
            batch
        };
        let Some(batch) = batch else {
            lane.wake.notified().await;
            continue;
        };
        let n = batch.tells;
        if let Err(e) = transport
            .send_bytes(peer.clone(), TELL_SERVICE, batch.into_body().into())
            .await
        {
            debug!(peer = ?peer.name, tells = n, error = %e, "tells dropped: cannot send them");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entity::wire::{EntityKeyRef, EntityRef, TellBatch, TellBatchRef};

    fn tell<'a>(id: &'a str, command: &'a [u8], chain: Vec<EntityRef>) -> TellRef<'a> {
        TellRef {
            target: EntityKeyRef {
                kind: "counter",
                id,
            },
            command,
            chain,
            epoch: 7,
            forwarded: id.len().is_multiple_of(2),
        }
    }

    #[test]
    fn a_batch_is_a_tell_batch_frame_and_reads_back_borrowed() {
        let mut batch = Batch::default();
        let ids: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
        let big = vec![7u8; 300];
        for (i, id) in ids.iter().enumerate() {
            let chain = if i == 5 {
                vec![EntityRef::new("kv", "caller")]
            } else {
                Vec::new()
            };
            let command: &[u8] = if i == 9 { &big } else { &[1, 2, 3] };
            batch.encoded = postcard::to_extend(&tell(id, command, chain), batch.encoded).unwrap();
            batch.tells += 1;
        }
        let body = bytes::Bytes::from(batch.into_body());
        // Owned, as earlier versions read it.
        let owned: TellBatch = postcard::from_bytes(&body).unwrap();
        assert_eq!(owned.tells.len(), 300);
        assert_eq!(owned.tells[9].command.len(), 300);
        assert_eq!(owned.tells[5].chain, vec![EntityRef::new("kv", "caller")]);
        assert_eq!(owned.tells[299].target, EntityRef::new("counter", "k299"));
        assert_eq!(owned.tells[10].epoch, 7);
        assert_eq!(&owned.tells[1].command[..], &[1, 2, 3]);
        // Borrowed, as this version reads it, and as earlier versions wrote it.
        let again = bytes::Bytes::from(postcard::to_allocvec(&owned).unwrap());
        assert_eq!(again, body);
        let borrowed: TellBatchRef = postcard::from_bytes(&body).unwrap();
        assert_eq!(borrowed.tells.len(), 300);
        assert_eq!(borrowed.tells[42].target.id, "k42");
        assert_eq!(borrowed.tells[9].command, &big[..]);
        assert!(borrowed.tells[9].forwarded && !borrowed.tells[10].forwarded);
    }
}
