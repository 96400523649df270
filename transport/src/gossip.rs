//! chitchat's `Transport` over QUIC: each gossip message travels on its own unidirectional
//! stream of the cached connection to the peer; the FIN ends the message.
//!
//! Gossip messages can be up to 65,507 bytes, more than a QUIC datagram holds, which is why
//! they use streams. Sending never blocks chitchat's loop (see `Shared::send_gossip`).

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use chitchat::ChitchatMessage;
use chitchat::transport::{Socket, Transport};
use tokio::sync::mpsc;

use crate::endpoint::Shared;

/// Opens the gossip socket of a [`crate::Transport`].
#[derive(Clone)]
pub struct GossipTransport {
    shared: Arc<Shared>,
}

impl GossipTransport {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

#[async_trait]
impl Transport for GossipTransport {
    /// `listen_addr` is ignored: gossip shares the endpoint's socket.
    async fn open(&self, _listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let rx = self
            .shared
            .gossip_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| {
                anyhow::anyhow!("the gossip socket of this transport is already open")
            })?;
        Ok(Box::new(GossipSocket {
            shared: self.shared.clone(),
            rx: Some(rx),
        }))
    }
}

struct GossipSocket {
    shared: Arc<Shared>,
    rx: Option<mpsc::Receiver<(SocketAddr, ChitchatMessage)>>,
}

#[async_trait]
impl Socket for GossipSocket {
    async fn send(&mut self, to: SocketAddr, msg: ChitchatMessage) -> anyhow::Result<()> {
        self.shared.send_gossip(to, msg);
        Ok(())
    }

    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
        let rx = self
            .rx
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("gossip socket closed"))?;
        rx.recv()
            .await
            .ok_or_else(|| anyhow::anyhow!("transport shut down"))
    }
}

impl Drop for GossipSocket {
    /// Gives the inbox back so the socket can be opened again (a restarted chitchat).
    fn drop(&mut self) {
        if let Some(rx) = self.rx.take() {
            *self
                .shared
                .gossip_rx
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(rx);
        }
    }
}
