//! Settings of a node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use shoal_membership::FailureDetectorSettings;
use shoal_transport::DEFAULT_MAX_FRAME_SIZE;

/// Everything a node needs to start, apart from its identity and environment.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Node name; must match the certificate.
    pub name: String,
    /// UDP address the QUIC endpoint binds.
    pub listen: SocketAddr,
    /// Address peers should use, when it differs from `listen` (NAT, 0.0.0.0 binds).
    pub advertise: Option<SocketAddr>,
    /// `IP:port` or `host:port` of nodes to join through.
    pub seeds: Vec<String>,
    /// Nodes with different cluster ids never merge.
    pub cluster_id: String,
    pub gossip_interval: Duration,
    pub failure_detector: FailureDetectorSettings,
    /// How long a leaving node keeps announcing it before it stops.
    pub leave_grace: Duration,
    /// Cap on one message frame.
    pub max_frame_size: usize,
    /// Where durable state lives (membership promises and the committed configuration).
    /// Without one, a restarted node forgets them and cannot vote in its old place.
    pub data_dir: Option<PathBuf>,
    /// Found a new cluster if no configuration is stored (implied by having no seeds).
    pub bootstrap: bool,
    /// A member reported dead this long is removed from the configuration.
    pub down_after: Duration,
    /// Number of shards; must match the cluster's (fixed when it was bootstrapped).
    pub shards: u32,
    /// Replicas per shard, the primary included (default 3), if this node founds the
    /// cluster; a joining node takes the cluster's.
    pub replicas: u32,
    /// Entity runtime settings (ask timeout, passivation, handoff).
    pub entities: crate::entity::EntitySettings,
    /// Planted-bug knob of the simulator; always 0.
    #[doc(hidden)]
    pub quorum_slack: usize,
}

impl NodeConfig {
    pub fn new(name: impl Into<String>, listen: SocketAddr) -> Self {
        let gossip_interval = Duration::from_millis(500);
        Self {
            name: name.into(),
            listen,
            advertise: None,
            seeds: Vec::new(),
            cluster_id: "shoal".to_string(),
            gossip_interval,
            failure_detector: FailureDetectorSettings::default(),
            leave_grace: gossip_interval * 6,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            data_dir: None,
            bootstrap: false,
            down_after: Duration::from_secs(10),
            shards: shoal_sharding::DEFAULT_SHARDS,
            replicas: 3,
            entities: Default::default(),
            quorum_slack: 0,
        }
    }

    /// The address peers reach this node at.
    pub fn advertise_addr(&self) -> Result<SocketAddr, String> {
        match self.advertise {
            Some(a) if a.ip().is_unspecified() || a.port() == 0 => Err(format!(
                "--advertise {a} is not reachable: give a concrete IP and port"
            )),
            Some(a) => Ok(a),
            None if self.listen.ip().is_unspecified() => Err(format!(
                "--listen {} binds every interface; add --advertise IP:PORT with the address peers should use",
                self.listen
            )),
            None => Ok(self.listen),
        }
    }
}
