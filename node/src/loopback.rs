//! Nodes in one process on loopback, with certificates from an in-memory cluster CA: what
//! examples, tests and benchmarks start.

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
