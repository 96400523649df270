//! JSON documents of the HTTP admin API, shared by the server and `shoal status`.

use serde::{Deserialize, Serialize};
use shoal_membership::MembershipView;

/// `GET /cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub cluster_id: String,
    /// The name of the node that answered.
    #[serde(rename = "self")]
    pub self_name: String,
    pub members: Vec<MemberInfo>,
    /// The newest committed configuration epoch this node knows (0: none yet).
    pub epoch: u64,
    /// That configuration's members.
    pub config_members: Vec<ConfigMemberInfo>,
    /// Whether this node sees a majority of those members live: only a majority side can
    /// commit changes.
    pub in_majority: bool,
    /// Changes gossip calls for that are not committed yet.
    pub pending: Vec<String>,
    /// The proposal this node has in flight, if any.
    pub proposing: Option<String>,
    /// Shards each node is primary for, in the shard table of `epoch`.
    #[serde(default)]
    pub shards: std::collections::BTreeMap<String, usize>,
}

/// One row of `GET /shards`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub shard: u32,
    pub epoch: u64,
    pub primary: String,
    /// Primary first.
    pub replicas: Vec<String>,
    /// This node's copy: entities held, the epoch it was last installed in, and why it is
    /// out of service if it is (its storage failed).
    #[serde(default)]
    pub here: Option<ReplicaHere>,
}

/// The answering node's replica of a shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaHere {
    /// `serving` (primary, taking commands), `recovering`, `replica` (a copy, not serving),
    /// or `failed`.
    pub state: String,
    pub entities: usize,
    pub installed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigMemberInfo {
    pub name: String,
    pub generation: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub name: String,
    pub addr: String,
    /// `joining`, `up` or `leaving`.
    pub status: String,
    /// Whether the answering node's failure detector considers it alive.
    pub live: bool,
    pub generation: u64,
    /// Whether this incarnation is a member of the committed configuration.
    pub member: bool,
}

impl ClusterInfo {
    pub fn member(&self, name: &str) -> Option<&MemberInfo> {
        self.members.iter().find(|m| m.name == name)
    }

    /// Names of members that are live and up.
    pub fn up(&self) -> Vec<&str> {
        self.members
            .iter()
            .filter(|m| m.live && m.status == "up")
            .map(|m| m.name.as_str())
            .collect()
    }
}

impl From<&MembershipView> for ClusterInfo {
    fn from(v: &MembershipView) -> Self {
        let config = v.configuration.clone().unwrap_or_default();
        Self {
            cluster_id: v.cluster_id.clone(),
            self_name: v.self_name.clone(),
            members: v
                .members
                .iter()
                .map(|m| MemberInfo {
                    name: m.name.clone(),
                    addr: m.addr.to_string(),
                    status: m.status.to_string(),
                    live: m.live,
                    generation: m.generation,
                    member: config
                        .members
                        .iter()
                        .any(|c| c.name == m.name && c.generation == m.generation),
                })
                .collect(),
            epoch: config.epoch,
            config_members: config
                .members
                .iter()
                .map(|c| ConfigMemberInfo {
                    name: c.name.clone(),
                    generation: c.generation,
                })
                .collect(),
            in_majority: config.in_majority,
            pending: config.pending.clone(),
            proposing: config.proposing.clone(),
            shards: Default::default(),
        }
    }
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub node: String,
    pub status: String,
}
