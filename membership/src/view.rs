//! The membership view: every node this node knows of, newest incarnation per name.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::configuration::MemberId;
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
    /// The newest committed configuration epoch it announced.
    pub config_epoch: Option<u64>,
    /// The cluster lineage it belongs to (hex), once it knows a configuration.
    pub lineage: Option<String>,
    /// The shard count it was started with.
    pub shards: Option<u32>,
    /// The newest epoch in which it serves every shard it is primary for.
    pub shards_ready: Option<u64>,
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
    /// The committed configuration this node knows, if any.
    pub configuration: Option<ConfigView>,
}

/// The committed configuration as this node knows it, and what it is doing about it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigView {
    pub epoch: u64,
    /// Hex.
    pub lineage: String,
    /// Hex.
    pub digest: String,
    pub members: Vec<MemberId>,
    /// Whether this node sees a majority of the configuration's members live (itself
    /// included): only then can changes be committed on its side.
    pub in_majority: bool,
    /// Changes gossip calls for that are not committed yet.
    pub pending: Vec<String>,
    /// The proposal in flight, if this node is proposing.
    pub proposing: Option<String>,
}

impl MembershipView {
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    /// Members the failure detector considers alive (this node included).
    pub fn live(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.live)
    }

    /// The committed epoch this node knows (0: none yet).
    pub fn epoch(&self) -> u64 {
        self.configuration.as_ref().map_or(0, |c| c.epoch)
    }

    /// Names of live members with status `up`.
    pub fn up_names(&self) -> Vec<&str> {
        self.live()
            .filter(|m| m.status == NodeStatus::Up)
            .map(|m| m.name.as_str())
            .collect()
    }
}
