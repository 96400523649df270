//! Membership settings.

use std::net::SocketAddr;
use std::time::Duration;

/// How a node takes part in gossip.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// Nodes with different cluster ids never merge.
    pub cluster_id: String,
    /// This node's name; must match its certificate.
    pub node_name: String,
    /// Address peers use to reach this node (the advertised QUIC address).
    pub advertise_addr: SocketAddr,
    /// Addresses to join through: `IP:port` or `host:port` (DNS names are re-resolved every
    /// minute, which suits Kubernetes headless services).
    pub seeds: Vec<String>,
    /// Time between gossip rounds (default 500 ms).
    pub gossip_interval: Duration,
    pub failure_detector: FailureDetectorSettings,
    /// How long a leaving node keeps gossiping `leaving` before it stops, so the rest of the
    /// cluster learns it left rather than failed (default 6 gossip intervals).
    pub leave_grace: Duration,
    /// Data-plane address, published only when it differs from `advertise_addr`.
    pub data_addr: Option<SocketAddr>,
    /// Extra keys this node publishes at start.
    pub extra_keys: Vec<(String, String)>,
    /// A member reported dead this long is proposed for removal (default 10 s).
    pub down_after: Duration,
    /// Found a new cluster (epoch 1, this node alone) if no configuration is stored. Also
    /// implied when the node has no seed but itself.
    pub bootstrap: bool,
    /// Entity placement if this node founds the cluster. A node whose shard count differs
    /// from its cluster's refuses to join, and says why.
    pub placement: crate::configuration::Placement,
    /// Whether members report (gossip key `shards_ready`) when they serve every shard they
    /// are primary for. When they do, a configuration keeps earlier epochs in its history
    /// until every member of the previous one reported ready; when they do not (membership
    /// without entities), every epoch counts as settled.
    pub shard_readiness: bool,
    /// Limit on one configuration-protocol request (default 1 s).
    pub config_request_timeout: Duration,
    /// Votes short of a majority that still count as one. Always 0: only the simulator's
    /// planted-bug runs set it, to show that the checkers catch a weakened quorum.
    #[doc(hidden)]
    pub quorum_slack: usize,
}

/// Settings of chitchat's phi-accrual failure detector.
#[derive(Debug, Clone)]
pub struct FailureDetectorSettings {
    /// Suspicion level above which a node is reported failed (default 8). Higher: slower
    /// detection, fewer false alarms.
    pub phi_threshold: f64,
    /// Heartbeat gaps longer than this are not counted in the mean (default: four gossip
    /// intervals). A gap left by a partition or a burst of loss would otherwise inflate the
    /// mean and slow the detection of later crashes (found by the simulator's `chaos`
    /// scenario: 19 s instead of 3 s after a one-way partition).
    pub max_interval: Option<Duration>,
    /// Assumed heartbeat interval before samples exist (default: the gossip interval).
    pub initial_interval: Option<Duration>,
    /// A dead node's state is forgotten after this (default 1 h).
    pub dead_node_grace_period: Duration,
}

impl Default for FailureDetectorSettings {
    fn default() -> Self {
        Self {
            phi_threshold: 8.0,
            max_interval: None,
            initial_interval: None,
            dead_node_grace_period: Duration::from_secs(3600),
        }
    }
}

impl MembershipConfig {
    /// Whether this node founds a cluster when it has no stored configuration.
    pub fn bootstraps(&self) -> bool {
        self.bootstrap
            || self
                .seeds
                .iter()
                .all(|s| s.parse::<SocketAddr>().ok() == Some(self.advertise_addr))
    }

    pub fn new(
        cluster_id: impl Into<String>,
        node_name: impl Into<String>,
        advertise_addr: SocketAddr,
    ) -> Self {
        let gossip_interval = Duration::from_millis(500);
        Self {
            cluster_id: cluster_id.into(),
            node_name: node_name.into(),
            advertise_addr,
            seeds: Vec::new(),
            gossip_interval,
            failure_detector: FailureDetectorSettings::default(),
            leave_grace: gossip_interval * 6,
            data_addr: None,
            extra_keys: Vec::new(),
            down_after: Duration::from_secs(10),
            bootstrap: false,
            placement: Default::default(),
            config_request_timeout: Duration::from_secs(1),
            shard_readiness: false,
            quorum_slack: 0,
        }
    }
}

/// Checks that a seed is `IP:port` or `host:port`; returns a message that says what is wrong.
pub fn validate_seed(seed: &str) -> Result<(), String> {
    if seed.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let Some((host, port)) = seed.rsplit_once(':') else {
        return Err(format!(
            "seed {seed:?} has no port: write it as IP:PORT or HOST:PORT"
        ));
    };
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!(
            "seed {seed:?} has an invalid port {port:?}: use 1-65535"
        ));
    }
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if !host_ok {
        return Err(format!(
            "seed {seed:?} has an invalid host {host:?}: use an IP address or a DNS name"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_ip_port_or_host_port() {
        for ok in [
            "127.0.0.1:7100",
            "[::1]:7100",
            "shoal-0.shoal.default.svc:7100",
            "localhost:1",
        ] {
            assert!(validate_seed(ok).is_ok(), "{ok}");
        }
        for bad in [
            "127.0.0.1",
            "host:",
            "host:0",
            "host:99999",
            ":7100",
            "a b:1",
            "x:y",
        ] {
            assert!(validate_seed(bad).is_err(), "{bad}");
        }
    }
}
