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
