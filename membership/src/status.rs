//! What a node says about itself in gossip: its status and the keys that carry it.

use serde::{Deserialize, Serialize};

/// Gossip keys a node publishes about itself.
pub mod keys {
    /// `joining`, `up` or `leaving`.
    pub const STATUS: &str = "status";
    /// The wire protocol version the node speaks.
    pub const PROTOCOL: &str = "protocol";
    /// The node's data-plane address, when it differs from its gossip address.
    pub const DATA_ADDR: &str = "data_addr";
    /// The newest committed configuration epoch the node knows.
    pub const CONFIG_EPOCH: &str = "config_epoch";
    /// That configuration's digest (hex).
    pub const CONFIG_DIGEST: &str = "config_digest";
    /// The lineage of the cluster the node belongs to (hex), drawn at bootstrap.
    pub const CONFIG_LINEAGE: &str = "config_lineage";
    /// The shard count the node was started with.
    pub const SHARDS: &str = "shards";
    /// The newest epoch in which this node serves every shard it is primary for.
    pub const SHARDS_READY: &str = "shards_ready";
}

/// The wire protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 2;

/// A node's own account of where it is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// Started, not (yet) a member of the committed configuration.
    Joining,
    /// A member of the committed configuration.
    Up,
    /// Announced that it is leaving; it stops soon.
    Leaving,
    /// A value this build does not know (a newer peer).
    Unknown,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Joining => "joining",
            NodeStatus::Up => "up",
            NodeStatus::Leaving => "leaving",
            NodeStatus::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "joining" => NodeStatus::Joining,
            "up" => NodeStatus::Up,
            "leaving" => NodeStatus::Leaving,
            _ => NodeStatus::Unknown,
        }
    }
}

impl std::fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
