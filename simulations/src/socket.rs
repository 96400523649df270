//! Simulated UDP sockets, handed to the real transport through its socket seam.
//!
//! Always writable (a send never blocks; the network decides the datagram's fate), one
//! datagram per transmit and per receive, no fragmentation.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use shoal_transport::SocketProvider;

use crate::net::Net;

/// Gives out sockets on the simulated network.
#[derive(Clone)]
pub struct SimSockets {
    net: Net,
}

impl SimSockets {
    pub fn new(net: Net) -> Self {
        Self { net }
    }
}

impl SocketProvider for SimSockets {
    fn bind(&self, addr: SocketAddr) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let id = self.net.bind(addr)?;
        Ok(Arc::new(SimSocket {
            net: self.net.clone(),
            addr,
            id,
        }))
    }
}

/// One bound socket. Dropping it releases the address.
pub struct SimSocket {
    net: Net,
    addr: SocketAddr,
    id: u64,
}

impl SimSocket {
    pub(crate) fn new(net: Net, addr: SocketAddr) -> io::Result<Self> {
        let id = net.bind(addr)?;
        Ok(Self { net, addr, id })
    }

    pub(crate) fn send_to(&self, dst: SocketAddr, data: &[u8]) {
        self.net.send(self.addr, self.id, dst, data);
    }

    pub(crate) fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Option<(SocketAddr, Vec<u8>)>> {
        self.net.poll_recv(self.addr, self.id, cx)
    }
}

impl Drop for SimSocket {
    fn drop(&mut self) {
        self.net.unbind(self.addr, self.id);
    }
}

impl fmt::Debug for SimSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SimSocket({})", self.addr)
    }
}

#[derive(Debug)]
struct AlwaysWritable;

impl UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncUdpSocket for SimSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        match transmit.segment_size {
            Some(size) if size > 0 && size < transmit.contents.len() => {
                for segment in transmit.contents.chunks(size) {
                    self.send_to(transmit.destination, segment);
                }
            }
            _ => self.send_to(transmit.destination, transmit.contents),
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let Some(buf) = bufs.first_mut() else {
            return Poll::Ready(Ok(0));
        };
        match self.poll_next(cx) {
            Poll::Ready(Some((src, data))) => {
                let len = data.len().min(buf.len());
                buf[..len].copy_from_slice(&data[..len]);
                meta[0] = RecvMeta {
                    addr: src,
                    len,
                    stride: len,
                    ecn: None,
                    dst_ip: Some(self.addr.ip()),
                };
                Poll::Ready(Ok(1))
            }
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }

    fn max_transmit_segments(&self) -> usize {
        1
    }

    fn max_receive_segments(&self) -> usize {
        1
    }

    fn may_fragment(&self) -> bool {
        false
    }
}
