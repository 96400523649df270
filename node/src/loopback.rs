//! Nodes in one process on loopback, with certificates from an in-memory cluster CA: what
//! examples, tests and benchmarks start.

use std::collections::BTreeSet;
use std::time::Duration;

use shoal_transport::{ClusterCa, Environment, IdentityError, NodeIdentity, SystemClock};

use crate::builder::NodeBuilder;
use crate::config::NodeConfig;
use crate::node::{Node, NodeError};

/// Issues `name` a certificate from `ca` and returns its identity.
pub fn identity(ca: &ClusterCa, name: &str) -> Result<NodeIdentity, IdentityError> {
    let cert = ca.issue(name)?;
    NodeIdentity::from_pem(ca.cert_pem(), &cert.cert_pem, &cert.key_pem, &SystemClock)
}

/// A configuration listening on a free loopback port, seeded with `seeds`.
pub fn config(name: &str, seeds: &[&Node]) -> NodeConfig {
    let mut config = NodeConfig::new(name, ([127, 0, 0, 1], 0).into());
    config.seeds = seeds
        .iter()
        .map(|n| n.transport().local_addr().to_string())
        .collect();
    config
}

/// Starts `builder`'s node with a certificate from `ca`, on real loopback sockets.
pub async fn start(builder: NodeBuilder, ca: &ClusterCa) -> Result<Node, NodeError> {
    let name = builder.config().name.clone();
    let identity = identity(ca, &name).map_err(|e| NodeError::Config(e.to_string()))?;
    builder.start(identity, Environment::real()).await
}

/// Whether `nodes` form a settled cluster: each one's committed configuration has exactly
/// these nodes as members and its entity runtime uses that epoch, and every shard is served
/// (once: a node serves a shard only as its primary in its epoch).
pub fn all_serving(nodes: &[&Node]) -> bool {
    let Some(first) = nodes.first() else {
        return false;
    };
    let want: BTreeSet<&str> = nodes.iter().map(|n| n.name()).collect();
    let agreed = nodes.iter().all(|n| {
        let v = n.view();
        v.configuration.as_ref().is_some_and(|c| {
            c.members
                .iter()
                .map(|m| m.name.as_str())
                .collect::<BTreeSet<_>>()
                == want
        }) && n.entities().epoch() == v.epoch()
    });
    let serving: usize = nodes.iter().map(|n| n.entities().serving().len()).sum();
    agreed && serving == first.config().shards as usize
}

/// Waits until [`all_serving`] holds, polling every 20 ms.
pub async fn wait_serving(nodes: &[&Node]) {
    while !all_serving(nodes) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
