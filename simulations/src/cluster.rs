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

use shoal::membership::{Committed, MemCell, MembershipEvent};
use shoal::storage::MemStore;

use crate::incarnation::{Alive, IncarnationCell, IncarnationStore};
use shoal::transport::{Environment, NodeIdentity, NodeRng};
use shoal::{Node, NodeBuilder, NodeConfig};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::certs::SimCerts;
use crate::clock::SimClock;
use crate::net::Net;
use crate::replica_checker::ReplicaChecker;
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

/// What a node reported, and when.
#[derive(Debug, Clone)]
pub struct Observed {
    pub at: Instant,
    pub observer: String,
    pub what: Report,
}

#[derive(Debug, Clone)]
pub enum Report {
    /// A membership event.
    Member(MembershipEvent),
    /// A configuration the node learned is committed.
    Commit(Committed),
}

/// Knobs that tune the nodes, all at production defaults unless a test says otherwise.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub gossip_interval: Duration,
    pub phi_threshold: f64,
    pub down_after: Duration,
    /// Planted bug: votes short of a majority that still count.
    pub quorum_slack: usize,
    /// Seeded fault points in replication and handoff (delayed acks, lost chunks).
    pub buggify: bool,
    /// Planted bug: replicas accept writes of epochs older than they promised.
    pub fencing_bug: bool,
}

impl Default for NodeSettings {
    fn default() -> Self {
        let defaults = NodeConfig::new("x", node_addr(0));
        Self {
            gossip_interval: defaults.gossip_interval,
            phi_threshold: defaults.failure_detector.phi_threshold,
            down_after: defaults.down_after,
            quorum_slack: 0,
            buggify: true,
            fencing_bug: false,
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
    /// The node's "disk": durable state that survives its crashes and restarts.
    pub disk: MemCell,
    /// Its replica store, on the same "disk" (a crash loses only what was not synced).
    pub store: Arc<MemStore>,
    /// The running incarnation's hold on the disk, cleared by its crash.
    alive: Option<Alive>,
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
    /// Told what every node's replica store makes durable and every replication milestone.
    pub replicas: Option<ReplicaChecker>,
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
                disk: MemCell::new(),
                store: Arc::new(MemStore::default()),
                alive: None,
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
                replicas: None,
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
        config.down_after = settings.down_after;
        config.quorum_slack = settings.quorum_slack;
        config.entities.buggify = settings.buggify;
        config.entities.fencing_bug = settings.fencing_bug;
        if let Some(checker) = &self.replicas {
            let c = checker.clone();
            config.entities.observer =
                Some(Arc::new(move |node: &str, ev: &_| c.on_event(node, ev)));
            let c = checker.clone();
            let name = n.name.clone();
            n.store
                .set_observer(Arc::new(move |writes: &[_]| c.on_stored(&name, writes)));
        }
        let alive = Alive::new();
        n.alive = Some(alive.clone());
        let node = NodeBuilder::new(config)
            .start_with_storage(
                n.identity.clone(),
                env,
                Arc::new(IncarnationCell {
                    inner: n.disk.clone(),
                    alive: alive.clone(),
                }),
                Arc::new(IncarnationStore {
                    inner: n.store.clone(),
                    alive,
                }),
            )
            .await?;
        let generation = node.membership().generation();
        let mut members = node.membership().subscribe();
        let mut commits = node.membership().commits();
        let events = self.events.clone();
        let observer = n.name.clone();
        n.forwarder = Some(
            tokio::spawn(async move {
                use tokio::sync::broadcast::error::RecvError;
                loop {
                    let what = tokio::select! {
                        biased;
                        c = commits.recv() => match c {
                            Ok(c) => Report::Commit(c),
                            Err(RecvError::Lagged(_)) => continue,
                            Err(_) => return,
                        },
                        e = members.recv() => match e {
                            Ok(e) => Report::Member(e),
                            Err(RecvError::Lagged(_)) => continue,
                            Err(_) => return,
                        },
                    };
                    let _ = events.send(Observed {
                        at: Instant::now(),
                        observer: observer.clone(),
                        what,
                    });
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
        if let Some(alive) = n.alive.take() {
            alive.crash();
        }
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

    /// Nodes that took a new generation on their own (they found themselves removed and
    /// rejoined): `(index, old, new)`. The records follow.
    pub fn refresh_generations(&mut self) -> Vec<(usize, u64, u64)> {
        let mut changed = Vec::new();
        for n in &mut self.nodes {
            let Some(node) = &n.node else { continue };
            let now = node.membership().generation();
            if let Some(old) = n.generation
                && old != now
            {
                changed.push((n.index, old, now));
                n.generation = Some(now);
                trace_event!(
                    self.trace,
                    &n.name,
                    "node.rejoin",
                    "old_generation={old} generation={now}"
                );
            }
        }
        changed
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
