//! Explains, in the log, why nodes of different clusters never merge.
//!
//! chitchat already refuses gossip whose cluster id differs from ours (it answers
//! `BadCluster`). This wrapper around the gossip socket adds who and why: the first time a
//! given address sends gossip for another cluster, or refuses ours, it logs a warning that
//! names the address and both cluster ids; repeats go to debug so a misconfigured neighbour
//! cannot flood the log.

use std::collections::HashSet;
use std::net::SocketAddr;

use async_trait::async_trait;
use chitchat::ChitchatMessage;
use chitchat::transport::{Socket, Transport};
use tracing::{debug, warn};

/// A chitchat transport that hands out one already opened, guarded socket.
pub(crate) struct ClusterGuard {
    socket: std::sync::Mutex<Option<Box<dyn Socket>>>,
}

impl ClusterGuard {
    /// Opens `inner`'s socket now and wraps it.
    pub(crate) async fn open(
        inner: &dyn Transport,
        listen_addr: SocketAddr,
        cluster_id: String,
    ) -> anyhow::Result<Self> {
        let socket = GuardedSocket {
            inner: inner.open(listen_addr).await?,
            cluster_id,
            warned: HashSet::new(),
        };
        Ok(Self {
            socket: std::sync::Mutex::new(Some(Box::new(socket))),
        })
    }
}

#[async_trait]
impl Transport for ClusterGuard {
    async fn open(&self, _listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        self.socket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| anyhow::anyhow!("gossip socket already taken"))
    }
}

struct GuardedSocket {
    inner: Box<dyn Socket>,
    cluster_id: String,
    warned: HashSet<SocketAddr>,
}

#[async_trait]
impl Socket for GuardedSocket {
    async fn send(&mut self, to: SocketAddr, msg: ChitchatMessage) -> anyhow::Result<()> {
        self.inner.send(to, msg).await
    }

    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
        let (from, msg) = self.inner.recv().await?;
        match &msg {
            ChitchatMessage::Syn { cluster_id, .. } if *cluster_id != self.cluster_id => {
                if self.warned.insert(from) {
                    warn!(
                        peer = %from,
                        their_cluster = %cluster_id,
                        our_cluster = %self.cluster_id,
                        "ignoring gossip from a node of another cluster: nodes with different cluster ids never merge"
                    );
                } else {
                    debug!(peer = %from, their_cluster = %cluster_id, "gossip from another cluster ignored");
                }
            }
            ChitchatMessage::BadCluster => {
                if self.warned.insert(from) {
                    warn!(
                        peer = %from,
                        our_cluster = %self.cluster_id,
                        "peer refused our gossip: it belongs to another cluster (check --cluster-id and --seeds)"
                    );
                } else {
                    debug!(peer = %from, "peer of another cluster refused our gossip");
                }
            }
            _ => {}
        }
        Ok((from, msg))
    }
}
