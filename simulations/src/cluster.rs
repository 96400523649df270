//! The simulated cluster: real `shoal::Node`s on the simulated network, started, crashed,
//! restarted and skewed by the scenario.
//!
//! A node gets everything of the world through its `Environment`: simulated sockets, a
//! simulated clock with its own offset, and an RNG forked from the run's seed. A crash takes
//! the host off the network first (nothing it sends afterwards leaves it, not even QUIC
//! close frames) and then drops the node, which aborts every task it owns.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use shoal::membership::MembershipEvent;
use shoal::transport::{Environment, NodeIdentity, NodeRng};
use shoal::{Node, NodeConfig};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::certs::SimCerts;
use crate::clock::SimClock;
use crate::net::Net;
use crate::socket::SimSockets;
use crate::trace::Trace;
use crate::trace_event;

/// Port every simulated node listens on.
pub const PORT: u16 = 7100;

/// The address of node `i` (0-based): 10.0.x.y:7100.
pub fn node_addr(i: usize) -> SocketAddr {
    let i = i as u32 + 1;
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8)),
        PORT,
    )
}

/// The name of node `i` (0-based): n1, n2, ...
pub fn node_name(i: usize) -> String {
    format!("n{}", i + 1)
}

/// A membership event as one node reported it.
#[derive(Debug, Clone)]
pub struct Observed {
    pub at: Instant,
    pub observer: String,
    pub event: MembershipEvent,
}

/// Knobs that tune the nodes, all at production defaults unless a test says otherwise.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub gossip_interval: Duration,
    pub phi_threshold: f64,
}

impl Default for NodeSettings {
    fn default() -> Self {
        let defaults = NodeConfig::new("x", node_addr(0));
        Self {
            gossip_interval: defaults.gossip_interval,
            phi_threshold: defaults.failure_detector.phi_threshold,
        }
    }
}

pub struct SimNode {
    pub index: usize,
    pub name: String,
    pub addr: SocketAddr,
    pub clock: SimClock,
    identity: NodeIdentity,
    pub node: Option<Node>,
    /// Starts so far.
    pub incarnations: u32,
    /// The running incarnation's generation, or the last one's.
    pub generation: Option<u64>,
    /// Left gracefully (and not restarted since).
    pub left: bool,
    forwarder: Option<AbortHandle>,
}

impl SimNode {
    pub fn is_running(&self) -> bool {
        self.node.is_some()
    }
}

pub struct SimCluster {
    pub net: Net,
    pub trace: Trace,
    rng: NodeRng,
    pub nodes: Vec<SimNode>,
    pub settings: NodeSettings,
    events: mpsc::UnboundedSender<Observed>,
}

impl SimCluster {
    /// `n` nodes, none started yet. Returns the stream of membership events of all nodes.
    pub fn new(
        net: Net,
        trace: Trace,
        rng: NodeRng,
        certs: &SimCerts,
        n: usize,
        settings: NodeSettings,
        start: Instant,
    ) -> anyhow::Result<(Self, mpsc::UnboundedReceiver<Observed>)> {
        let (events, rx) = mpsc::unbounded_channel();
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let clock = SimClock::new(start);
            let name = node_name(i);
            nodes.push(SimNode {
                index: i,
                identity: certs.identity(&name, &clock)?,
                name,
                addr: node_addr(i),
                clock,
                node: None,
                incarnations: 0,
                generation: None,
                left: false,
                forwarder: None,
            });
        }
        Ok((
            Self {
                net,
                trace,
                rng,
                nodes,
                settings,
                events,
            },
            rx,
        ))
    }

    /// Seeds of node `i`: the first three nodes but itself. The very first start of node 0
    /// has none: it founds the cluster.
    fn seeds(&self, i: usize) -> Vec<String> {
        if i == 0 && self.nodes[0].incarnations == 0 {
            return Vec::new();
        }
        (0..self.nodes.len().min(3))
            .filter(|&j| j != i)
            .map(|j| node_addr(j).to_string())
            .collect()
    }

    /// Starts node `i` (a new incarnation if it ran before).
    pub async fn start(&mut self, i: usize) -> anyhow::Result<()> {
        if self.nodes[i].is_running() {
            return Ok(());
        }
        let seeds = self.seeds(i);
        let node_rng = self.rng.fork();
        let settings = self.settings.clone();
        let n = &mut self.nodes[i];
        let mut config = NodeConfig::new(n.name.clone(), n.addr);
        config.seeds = seeds;
        config.gossip_interval = settings.gossip_interval;
        config.leave_grace = settings.gossip_interval * 6;
        config.failure_detector.phi_threshold = settings.phi_threshold;
        let env = Environment {
            sockets: Arc::new(SimSockets::new(self.net.clone())),
            clock: Arc::new(n.clock.clone()),
            rng: node_rng,
        };
        let node = Node::start(config, n.identity.clone(), env).await?;
        let generation = node.membership().generation();
        let mut rx = node.membership().subscribe();
        let events = self.events.clone();
        let observer = n.name.clone();
        n.forwarder = Some(
            tokio::spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(event) => {
                            let _ = events.send(Observed {
                                at: Instant::now(),
                                observer: observer.clone(),
                                event,
                            });
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(_) => return,
                    }
                }
            })
            .abort_handle(),
        );
        n.incarnations += 1;
        n.generation = Some(generation);
        n.left = false;
        n.node = Some(node);
        trace_event!(
            self.trace,
            &n.name,
            "node.start",
            "addr={} generation={generation} incarnation={} clock_offset_ms={}",
            n.addr,
            n.incarnations,
            n.clock.offset_ms()
        );
        Ok(())
    }

    /// Crashes node `i`: off the network at once, then everything of it dropped.
    pub fn crash(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let Some(node) = n.node.take() else { return };
        self.net.kill_host(n.addr.ip());
        if let Some(f) = n.forwarder.take() {
            f.abort();
        }
        drop(node);
        trace_event!(
            self.trace,
            &n.name,
            "node.crash",
            "generation={}",
            n.generation.unwrap_or(0)
        );
    }

    /// Makes node `i` leave gracefully, in the background; it is gone once the leave is done.
    pub fn leave(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let Some(node) = n.node.take() else { return };
        n.left = true;
        let forwarder = n.forwarder.take();
        trace_event!(
            self.trace,
            &n.name,
            "node.leave",
            "generation={}",
            n.generation.unwrap_or(0)
        );
        tokio::spawn(async move {
            node.leave().await;
            drop(node);
            if let Some(f) = forwarder {
                // Let the node's last events through, then stop listening.
                tokio::time::sleep(Duration::from_millis(1)).await;
                f.abort();
            }
        });
    }

    pub fn set_clock_offset(&mut self, i: usize, ms: i64) {
        let n = &self.nodes[i];
        n.clock.set_offset_ms(ms);
        trace_event!(self.trace, &n.name, "node.clock", "offset_ms={ms}");
    }

    pub fn ip(&self, i: usize) -> IpAddr {
        self.nodes[i].addr.ip()
    }

    pub fn running(&self) -> impl Iterator<Item = &SimNode> {
        self.nodes.iter().filter(|n| n.is_running())
    }
}
