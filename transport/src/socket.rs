//! The UDP socket seam: the only way the transport gets a socket.
//!
//! Production binds a real UDP socket; the simulator hands out simulated ones. Both reach
//! quinn through `Endpoint::new_with_abstract_socket`, so the code above this seam is the
//! same in both.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use quinn::{AsyncUdpSocket, Runtime};

/// Gives the transport its UDP socket.
pub trait SocketProvider: Send + Sync + 'static {
    /// Binds a socket on `addr` (port 0 picks a free port).
    fn bind(&self, addr: SocketAddr) -> io::Result<Arc<dyn AsyncUdpSocket>>;
}

/// Real UDP sockets from the operating system.
#[derive(Debug, Clone, Copy, Default)]
pub struct UdpSockets;

impl SocketProvider for UdpSockets {
    fn bind(&self, addr: SocketAddr) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let socket = std::net::UdpSocket::bind(addr)?;
        quinn::TokioRuntime.wrap_udp_socket(socket)
    }
}

/// What the endpoint holds once the transport has shut down: sends go nowhere and nothing
/// is ever received, as on a closed socket.
///
/// quinn keeps the endpoint's socket until its last closing connection has drained (three
/// probe timeouts: seconds, to a peer whose measured round trip is long) and for as long as
/// anything holds the endpoint. Swapping this in gives the port back when
/// [`crate::Transport::shutdown`] returns, so a node can be started again on the same
/// address at once (the simulator restarts nodes this way; so may an embedding service).
#[derive(Debug)]
pub(crate) struct Released {
    addr: SocketAddr,
}

impl Released {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        Self { addr }
    }
}

#[derive(Debug)]
struct NeverBlocks;

impl quinn::UdpPoller for NeverBlocks {
    fn poll_writable(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl AsyncUdpSocket for Released {
    fn create_io_poller(self: Arc<Self>) -> std::pin::Pin<Box<dyn quinn::UdpPoller>> {
        Box::pin(NeverBlocks)
    }

    fn try_send(&self, _transmit: &quinn::udp::Transmit) -> io::Result<()> {
        Ok(())
    }

    fn poll_recv(
        &self,
        _cx: &mut std::task::Context,
        _bufs: &mut [io::IoSliceMut<'_>],
        _meta: &mut [quinn::udp::RecvMeta],
    ) -> std::task::Poll<io::Result<usize>> {
        std::task::Poll::Pending
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
}
