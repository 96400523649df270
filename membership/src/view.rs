//! The membership view: every node this node knows of, newest incarnation per name.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::status::NodeStatus;

/// One node as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    /// Gossip (and, unless `data_addr` says otherwise, data-plane) address.
    pub addr: SocketAddr,
    /// Incarnation: new on every start of the node.
    pub generation: u64,
    pub status: NodeStatus,
    /// Whether the failure detector currently considers the node alive.
    pub live: bool,
    /// Wire protocol version it announced.
    pub protocol: Option<u32>,
    /// Data-plane address, when it differs from `addr`.
    pub data_addr: Option<SocketAddr>,
}

impl Member {
    /// Where to send data-plane messages.
    pub fn data_plane_addr(&self) -> SocketAddr {
        self.data_addr.unwrap_or(self.addr)
    }
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}@{}", self.name, self.generation, self.addr)
    }
}

/// A snapshot of the membership.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipView {
    pub cluster_id: String,
    /// This node's name.
    pub self_name: String,
    /// Sorted by name; one entry per name (its newest generation).
    pub members: Vec<Member>,
}

impl MembershipView {
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    /// Members the failure detector considers alive (this node included).
    pub fn live(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.live)
    }

    /// Names of live members with status `up`.
    pub fn up_names(&self) -> Vec<&str> {
        self.live()
            .filter(|m| m.status == NodeStatus::Up)
            .map(|m| m.name.as_str())
            .collect()
    }
}
