//! Connection events other layers can watch (membership uses them as hints; the dashboard
//! and metrics count them).

use crate::service::PeerInfo;

/// Who opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Outgoing,
    Incoming,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportEvent {
    /// A connection to `peer` was established.
    Connected {
        peer: PeerInfo,
        direction: Direction,
    },
    /// A connection to `peer` closed; `reason` says why in words.
    ConnectionLost { peer: PeerInfo, reason: String },
}
