//! Shoal's transport: one QUIC endpoint per node, mutual TLS under a cluster CA, and on it
//! both chitchat gossip and the data plane (length-prefixed postcard frames, one-way
//! messages and request/response).
//!
//! Guarantees:
//! - a peer whose certificate does not chain to the cluster CA, or that presents none, never
//!   completes a handshake;
//! - an oversize or undecodable frame closes only the connection it came on, logged with the
//!   peer and the reason; nothing a peer sends can panic the node;
//! - a slow or dead peer never stalls gossip to the others;
//! - the only socket is obtained through [`SocketProvider`], the only wall-clock reads go
//!   through [`Clock`], the only randomness through [`NodeRng`]: the simulator replaces all
//!   three.

mod backoff;
mod clock;
mod connection;
mod endpoint;
mod environment;
mod error;
mod events;
mod frame;
mod gossip;
mod identity;
mod peers;
mod quinn_runtime;
mod rng;
mod service;
mod socket;
mod stats;
mod tasks;
mod tls;

pub use backoff::Backoff;
pub use clock::{Clock, SharedClock, SystemClock};
pub use connection::close_code;
pub use endpoint::{Peer, Transport, TransportConfig};
pub use environment::Environment;
pub use error::{ConnectError, RequestError, SendError, TransportError};
pub use events::{Direction, TransportEvent};
pub use frame::{DEFAULT_MAX_FRAME_SIZE, RemoteError};
pub use gossip::GossipTransport;
pub use identity::{
    CertDir, ClusterCa, IdentityError, NodeCertificate, NodeIdentity, validate_node_name,
};
pub use rng::NodeRng;
pub use service::{Inbound, PeerInfo, Replier, ServiceId};
pub use socket::{SocketProvider, UdpSockets};
pub use stats::TransportStats;
pub use tls::{ALPN, cert_node_name};

/// Stream-type bytes and frame encoding, public for tests that speak the wire protocol by
/// hand (to send malformed input on purpose).
pub mod wire {
    pub use crate::frame::{STREAM_FRAMES, STREAM_GOSSIP};
    pub use crate::tls::{ANY_PEER, client_crypto, server_crypto};
}
