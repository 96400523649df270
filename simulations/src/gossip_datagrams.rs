//! chitchat over plain simulated datagrams, without QUIC: the light mode for membership
//! studies of hundreds to thousands of nodes, where QUIC's handshakes and streams would
//! dominate the cost. The membership code above it is the production code.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::task::Poll;

use async_trait::async_trait;
use chitchat::transport::{Socket, Transport};
use chitchat::{ChitchatMessage, Deserializable, Serializable};

use crate::net::Net;
use crate::socket::SimSocket;

/// Opens datagram gossip sockets on the simulated network.
pub struct DatagramGossip {
    net: Net,
}

impl DatagramGossip {
    pub fn new(net: Net) -> Self {
        Self { net }
    }
}

#[async_trait]
impl Transport for DatagramGossip {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        Ok(Box::new(DatagramSocket {
            socket: SimSocket::new(self.net.clone(), listen_addr)?,
            buf: Vec::new(),
        }))
    }
}

struct DatagramSocket {
    socket: SimSocket,
    buf: Vec<u8>,
}

#[async_trait]
impl Socket for DatagramSocket {
    async fn send(&mut self, to: SocketAddr, msg: ChitchatMessage) -> anyhow::Result<()> {
        self.buf.clear();
        msg.serialize(&mut self.buf);
        self.socket.send_to(to, &self.buf);
        Ok(())
    }

    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
        loop {
            let (from, data) = poll_fn(|cx| match self.socket.poll_next(cx) {
                Poll::Ready(Some(d)) => Poll::Ready(d),
                _ => Poll::Pending,
            })
            .await;
            if let Ok(msg) = ChitchatMessage::deserialize(&mut &data[..]) {
                return Ok((from, msg));
            }
        }
    }
}
