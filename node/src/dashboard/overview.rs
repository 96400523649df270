//! `GET /overview`: everything the dashboard draws, as this node sees it, in one document.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use crate::api::ClusterInfo;
use crate::entity::RuntimeStats;
use crate::node::Node;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Overview {
    /// Membership and configuration, as `GET /cluster` has them.
    pub cluster: ClusterInfo,
    /// One row per known node, with what the dashboard adds to `/cluster`.
    pub members: Vec<OverviewMember>,
    pub ring: Ring,
    /// Nodes still taking over shards of the current epoch (from gossip), and this node's own
    /// shards changing hands.
    pub handoffs: Vec<Handoff>,
    /// The latest membership events, newest first.
    pub events: Vec<TimedEvent>,
    /// This node's shards and entities.
    pub local: RuntimeStats,
    /// When this document was made (Unix ms, the node's clock).
    pub at_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OverviewMember {
    pub name: String,
    pub addr: String,
    /// `joining`, `up`, `leaving`, or `failed` when the failure detector lost it.
    pub state: String,
    pub live: bool,
    /// In the committed configuration.
    pub member: bool,
    /// This node's suspicion of it (none for itself or before two heartbeats).
    pub phi: Option<f64>,
    /// Shards it is primary for, and holds a copy of, in the current shard table.
    pub primaries: usize,
    pub replicas: usize,
    /// Serves every shard it is primary for in the current epoch.
    pub ready: bool,
}

/// The shard table as the dashboard draws it: shard `i`'s primary is `members[primary[i]]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ring {
    pub members: Vec<String>,
    pub primary: Vec<u16>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Handoff {
    pub node: String,
    pub what: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TimedEvent {
    pub at_ms: u64,
    pub kind: String,
    pub node: String,
    pub generation: u64,
}

pub(super) async fn overview(State(node): State<Node>) -> Json<Overview> {
    Json(build(&node))
}

fn build(node: &Node) -> Overview {
    let view = node.view();
    let table = node.entities().table().map(|(_, t)| t);
    let cluster = crate::http::cluster_info(&view, table.as_ref());
    let primaries = &cluster.shards;
    let replicas = table
        .as_ref()
        .map(|t| t.replicas_per_member())
        .unwrap_or_default();
    let phi: BTreeMap<String, f64> = node.membership().phi().into_iter().collect();
    let epoch = cluster.epoch;
    let members: Vec<OverviewMember> = view
        .members
        .iter()
        .zip(&cluster.members)
        .map(|(m, info)| OverviewMember {
            name: m.name.clone(),
            addr: info.addr.clone(),
            state: if m.live {
                m.status.to_string()
            } else {
                "failed".into()
            },
            live: m.live,
            member: info.member,
            phi: phi.get(&m.name).copied(),
            primaries: primaries.get(&m.name).copied().unwrap_or(0),
            replicas: replicas.get(m.name.as_str()).copied().unwrap_or(0),
            ready: info.member && m.shards_ready.is_some_and(|r| r >= epoch),
        })
        .collect();
    let mut handoffs: Vec<Handoff> = members
        .iter()
        .filter(|m| m.member && m.live && !m.ready && m.primaries > 0)
        .map(|m| Handoff {
            node: m.name.clone(),
            what: format!("taking over its {} shards of epoch {epoch}", m.primaries),
        })
        .collect();
    let local = node.entities().stats();
    if local.draining > 0 {
        handoffs.push(Handoff {
            node: node.name().to_string(),
            what: format!("handing over {} shards", local.draining),
        });
    }
    let ring = table
        .map(|t| {
            let names: Vec<String> = primaries.keys().cloned().collect();
            let primary = (0..t.shards())
                .map(|s| {
                    let p = t.primary(shoal_sharding::ShardId(s)).unwrap_or_default();
                    names.iter().position(|n| n == p).unwrap_or(0) as u16
                })
                .collect();
            Ring {
                members: names,
                primary,
            }
        })
        .unwrap_or_default();
    let events = node
        .membership()
        .recent_events()
        .into_iter()
        .rev()
        .map(|(at_ms, e)| TimedEvent {
            at_ms,
            kind: e.kind().to_string(),
            node: e.member().name.clone(),
            generation: e.member().generation,
        })
        .collect();
    Overview {
        cluster,
        members,
        ring,
        handoffs,
        events,
        local,
        at_ms: node.environment().clock.unix_millis(),
    }
}
