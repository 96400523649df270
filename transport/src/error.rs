//! Typed errors of the transport. None of them is fatal to the node: each one concerns one
//! peer, one connection or one message.

use std::net::SocketAddr;
use std::time::Duration;

use crate::frame::{FrameError, RemoteError};

/// Failure to start the transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot bind UDP {addr}: {cause} (is another process using the port?)")]
    Bind {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("QUIC endpoint: {0}")]
    Endpoint(std::io::Error),
}

/// Failure to get a connection to a peer. Clonable: concurrent dials to one peer share one
/// attempt and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    #[error("{addr}: recent connection attempts failed; next attempt in {retry_in:?}")]
    BackingOff {
        addr: SocketAddr,
        retry_in: Duration,
    },
    #[error("{addr}: connection attempt timed out")]
    Timeout { addr: SocketAddr },
    #[error("{addr}: connection failed: {reason}")]
    Failed { addr: SocketAddr, reason: String },
    #[error("{addr}: expected node {expected:?} there, found {actual:?}")]
    WrongPeer {
        addr: SocketAddr,
        expected: String,
        actual: String,
    },
    #[error("transport is shut down")]
    Shutdown,
}

/// Failure of a one-way send.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("message cannot be sent: {0}")]
    Encode(#[from] FrameError),
    #[error("connection to {0} was lost")]
    ConnectionLost(SocketAddr),
}

/// Failure of a request.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("request cannot be sent: {0}")]
    Encode(#[from] FrameError),
    #[error("connection to {0} was lost before the reply")]
    ConnectionLost(SocketAddr),
    #[error("remote error: {0}")]
    Remote(#[from] RemoteError),
    #[error("reply could not be decoded: {0}")]
    Decode(#[from] postcard::Error),
}

impl From<SendError> for RequestError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Connect(c) => RequestError::Connect(c),
            SendError::Encode(f) => RequestError::Encode(f),
            SendError::ConnectionLost(a) => RequestError::ConnectionLost(a),
        }
    }
}
