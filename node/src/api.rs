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
                })
                .collect(),
        }
    }
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub node: String,
    pub status: String,
}
