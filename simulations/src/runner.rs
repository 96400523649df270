//! Runs one seed: a fresh thread, a single-threaded tokio runtime on paused time with no I/O
//! driver, the scenario's plan, then the heal phase and the verdict.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use shoal_transport::NodeRng;
use tokio::time::Instant;

use crate::certs::SimCerts;
use crate::checker::{Detection, MembershipChecker, Violation, agreement};
use crate::cluster::{NodeSettings, Observed, Report, SimCluster};
use crate::config_checker::{ConfigChecker, Removal};
use crate::history::{History, HistoryStats};
use crate::net::{LinkFaults, Net, NetConfig};
use crate::replica_checker::{self, ReplicaChecker};
use crate::scenario::{Action, Params, Step};
use crate::trace::Trace;
use crate::workload::{self, EntityChecker, NodeEntities, Seen, Stats};
use crate::{determinism, scenarios, trace_event};

/// A bug planted on purpose, to show that the checkers catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Bug {
    /// The failure detector never declares anyone dead.
    NoFailureDetection,
    /// The configuration protocol counts one vote fewer than a majority as enough.
    WeakQuorum,
    /// Replicas accept writes of epochs older than the newest they promised (broken
    /// fencing).
    StaleEpoch,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub scenario: String,
    pub seed: u64,
    pub nodes: Option<usize>,
    pub duration: Option<Duration>,
    pub trace: Option<PathBuf>,
    /// Keep the trace lines in the report (tests).
    pub keep_trace: bool,
    /// Trace every datagram, not only drops.
    pub trace_packets: bool,
    pub bug: Option<Bug>,
    pub settings: NodeSettings,
    /// Run the entity workload.
    pub workload: bool,
    /// Time between two client operations.
    pub workload_every: Duration,
}

impl RunOptions {
    pub fn new(scenario: &str, seed: u64) -> Self {
        Self {
            scenario: scenario.to_string(),
            seed,
            nodes: None,
            duration: None,
            trace: None,
            keep_trace: false,
            trace_packets: true,
            bug: None,
            settings: NodeSettings::default(),
            workload: true,
            workload_every: Duration::from_millis(40),
        }
    }
}

/// What a run found.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub scenario: String,
    pub seed: u64,
    pub nodes: usize,
    pub duration: Duration,
    pub violations: Vec<Violation>,
    /// Seconds from the last initial start until every node agreed, if it happened before
    /// the first fault.
    pub convergence: Option<f64>,
    pub detections: Vec<Detection>,
    /// Seconds from the heal until every node agreed.
    pub heal_agreement: Option<f64>,
    pub heal_deadline: f64,
    /// The newest epoch committed anywhere, and how many epochs were committed in the run.
    pub final_epoch: u64,
    pub commits: usize,
    /// Seconds from a node's start to the commit that made it a member.
    pub joins: Vec<f64>,
    pub removals: Vec<Removal>,
    /// Outcomes of the client workload.
    pub workload: Stats,
    /// What the linearizability check covered.
    pub history: HistoryStats,
    /// Seconds from the agreement after the heal until every shard's replicas were equal.
    pub replicas_equal: Option<f64>,
    pub simulated_secs: f64,
    pub wall_secs: f64,
    pub packets_per_node_sec: f64,
    pub bytes_per_node_sec: f64,
    pub trace_hash: String,
    pub trace_lines: u64,
    pub trace: Vec<String>,
    pub tokio_seeded: bool,
    pub interposer: bool,
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// How long after healing the cluster may take to agree: failure detection of dead
/// incarnations, QUIC connections timing out and redialing after the partition, and enough
/// gossip rounds to spread the news.
pub fn heal_deadline(s: &NodeSettings, nodes: usize) -> Duration {
    let g = s.gossip_interval.as_secs_f64();
    let phi = if s.phi_threshold.is_finite() {
        s.phi_threshold
    } else {
        8.0
    };
    let rounds = (nodes.max(2) as f64).log(3.0).ceil() + 2.0;
    let detect = phi * g * 2.0;
    let reconnect = 10.0 + 5.0; // idle timeout + backoff cap of the transport
    Duration::from_secs_f64(detect + reconnect + rounds * g * 4.0 + 10.0)
}

/// A node down longer than this must have been reported failed by every observer that saw
/// it live: the failure detector's threshold times a generous heartbeat interval, plus the
/// gossip round in which liveness is recomputed.
pub fn detection_deadline(s: &NodeSettings) -> f64 {
    let phi = if s.phi_threshold.is_finite() {
        s.phi_threshold
    } else {
        8.0
    };
    phi * s.gossip_interval.as_secs_f64() * 2.0 + 5.0
}

/// The same for a crash during or soon after network faults: the detector's mean heartbeat
/// interval may have grown to its cap (four gossip intervals).
pub fn faulty_detection_deadline(s: &NodeSettings) -> f64 {
    let phi = if s.phi_threshold.is_finite() {
        s.phi_threshold
    } else {
        8.0
    };
    phi * s.gossip_interval.as_secs_f64() * 4.0 + 10.0
}

/// After this long without a network fault, no running node may be reported failed.
pub fn quiet_window(s: &NodeSettings) -> f64 {
    let phi = if s.phi_threshold.is_finite() {
        s.phi_threshold
    } else {
        8.0
    };
    10.0 + 5.0 + phi * s.gossip_interval.as_secs_f64() * 2.0 + 5.0
}

/// How long after the cluster agrees again every shard's replicas must be equal.
const REPLICAS_EQUAL_WITHIN: Duration = Duration::from_secs(30);

/// Runs `opts` on a fresh thread with its own runtime.
pub fn run(opts: RunOptions) -> anyhow::Result<RunReport> {
    let seed = opts.seed;
    let (mut report, wall) = on_sim_thread(seed, simulate(opts))?;
    report.wall_secs = wall;
    Ok(report)
}

/// Runs `sim` to completion the way every simulation runs: on a fresh thread (std's hash keys
/// and thread RNGs start afresh), after reseeding the randomness interposer, on a
/// single-threaded tokio runtime with paused time and no I/O driver (and, in the
/// `tokio_unstable` build, a seeded runtime RNG). Returns the result and the wall seconds.
pub fn on_sim_thread<T: Send + 'static>(
    seed: u64,
    sim: impl std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
) -> anyhow::Result<(T, f64)> {
    std::thread::Builder::new()
        .name(format!("sim-seed-{seed}"))
        .spawn(move || {
            determinism::reseed(seed);
            let mut builder = tokio::runtime::Builder::new_current_thread();
            builder.enable_time().start_paused(true);
            #[cfg(tokio_unstable)]
            builder.rng_seed(tokio::runtime::RngSeed::from_bytes(&seed.to_le_bytes()));
            let runtime = builder.build()?;
            let wall = std::time::Instant::now();
            let out = runtime.block_on(async {
                crate::log_time::mark_start();
                sim.await
            })?;
            let secs = wall.elapsed().as_secs_f64();
            drop(runtime);
            Ok((out, secs))
        })?
        .join()
        .map_err(|_| anyhow::anyhow!("the simulation thread panicked"))?
}

/// A crash that waits for shards to move.
struct MidHandoff {
    node: usize,
    /// How long after the crash to start the node again.
    back: Duration,
    /// How long after the first movement to crash; `None` once movement was seen.
    after: Option<Duration>,
    /// When to crash (10 s after arming if nothing moves; moved up when something does).
    at: Instant,
}

struct World {
    cluster: SimCluster,
    checker: MembershipChecker,
    configs: ConfigChecker,
    entities: EntityChecker,
    stats: Stats,
    trace: Trace,
    net: Net,
    start: Instant,
    last_network_fault: Option<f64>,
    /// Starts due later: ones that failed (the address still held by a leaving incarnation)
    /// and restarts after a mid-handoff crash, with the number of failed attempts so far.
    retry_starts: Vec<(Instant, usize, u32)>,
    /// Violations found by the runner itself.
    stuck: Vec<Violation>,
    checker_quiet_window: f64,
    /// Failed start attempts per node, while retrying.
    attempts: std::collections::HashMap<usize, u32>,
    /// An armed [`Action::CrashMidHandoff`].
    mid_handoff: Option<MidHandoff>,
}

impl World {
    fn secs(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn note_faults(&mut self) {
        if self.net.has_faults() {
            self.last_network_fault = Some(self.secs());
        }
    }

    /// Registers generations the nodes took on their own (rejoins after removal).
    fn refresh(&mut self) {
        let at = self.secs();
        for (i, _old, new) in self.cluster.refresh_generations() {
            let name = self.cluster.nodes[i].name.clone();
            self.checker.started(&name, new);
            self.configs
                .started(at, shoal::membership::MemberId::new(name, new));
        }
    }

    fn on_event(&mut self, ev: Observed) {
        self.refresh();
        self.note_faults();
        let at = (ev.at - self.start).as_secs_f64();
        match &ev.what {
            Report::Member(event) => {
                let m = event.member();
                trace_event!(
                    self.trace,
                    &ev.observer,
                    "member",
                    "{} {} generation={} status={} live={}",
                    event.kind(),
                    m.name,
                    m.generation,
                    m.status,
                    m.live
                );
                self.checker.on_event(
                    at,
                    &ev.observer,
                    event,
                    &self.cluster,
                    self.last_network_fault,
                );
            }
            Report::Commit(c) => {
                trace_event!(
                    self.trace,
                    &ev.observer,
                    "commit",
                    "epoch={} digest={:x} members=[{}] quorum={}",
                    c.epoch(),
                    c.config.digest(),
                    c.config.describe(),
                    c.quorum.len()
                );
                self.configs.on_commit(at, &ev.observer, c);
            }
        }
    }

    fn views(&self) -> Vec<(String, shoal::membership::MembershipView)> {
        self.cluster
            .running()
            .filter_map(|n| Some((n.name.clone(), n.node.as_ref()?.view())))
            .collect()
    }

    fn sample(&mut self) -> Result<(), String> {
        self.refresh();
        self.note_faults();
        let views = self.views();
        let at = self.secs();
        self.checker.on_sample(at, &views, &self.cluster);
        let nodes: Vec<NodeEntities> = self
            .cluster
            .running()
            .filter_map(|n| Some(NodeEntities::of(n.node.as_ref()?)))
            .collect();
        self.entities.on_sample(at, &nodes);
        agreement(&views, &self.cluster)?;
        let shards = self
            .cluster
            .running()
            .find_map(|n| Some(n.node.as_ref()?.config().shards))
            .unwrap_or(0);
        workload::serving_complete(&nodes, shards)
    }

    /// A random running node, for a client.
    fn client_node(&self, rng: &NodeRng) -> Option<shoal::Node> {
        let running: Vec<&shoal::Node> = self
            .cluster
            .running()
            .filter_map(|n| n.node.as_ref())
            .collect();
        if running.is_empty() {
            return None;
        }
        Some(running[rng.below(running.len() as u64) as usize].clone())
    }

    /// Shards recovering anywhere in the cluster right now.
    fn shards_moving(&self) -> usize {
        self.cluster
            .running()
            .filter_map(|n| Some(n.node.as_ref()?.entities().recovering().len()))
            .sum()
    }

    /// Carries out an armed [`Action::CrashMidHandoff`] once shards move (or time is up).
    async fn poll_mid_handoff(&mut self) -> anyhow::Result<()> {
        let Some(m) = &mut self.mid_handoff else {
            return Ok(());
        };
        if let Some(after) = m.after
            && self.cluster.running().any(|n| {
                n.node
                    .as_ref()
                    .is_some_and(|n| !n.entities().recovering().is_empty())
            })
        {
            m.at = m.at.min(Instant::now() + after);
            m.after = None;
        }
        if Instant::now() >= m.at {
            let (node, back) = (m.node, m.back);
            self.mid_handoff = None;
            self.apply(&Step {
                at: Duration::ZERO,
                action: Action::Crash(node),
            })
            .await?;
            self.retry_starts.push((Instant::now() + back, node, 0));
        }
        Ok(())
    }

    async fn retry_due_starts(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.retry_starts)
            .into_iter()
            .partition(|(at, _, _)| *at <= now);
        self.retry_starts = later;
        for (_, i, attempts) in due {
            if !self.cluster.nodes[i].is_running() {
                self.attempts.insert(i, attempts);
                self.apply(&Step {
                    at: Duration::ZERO,
                    action: Action::Start(i),
                })
                .await?;
            }
        }
        Ok(())
    }

    async fn apply(&mut self, step: &Step) -> anyhow::Result<()> {
        let at = self.secs();
        trace_event!(self.trace, "-", "step", "{:?}", step.action);
        match &step.action {
            Action::Start(i) => {
                if let Err(e) = self.cluster.start(*i).await {
                    let name = self.cluster.nodes[*i].name.clone();
                    let attempts = self.attempts.remove(i).unwrap_or(0) + 1;
                    if attempts >= 30 {
                        self.stuck.push(Violation {
                            at,
                            checker: "restart",
                            what: format!("{name} could not start for 30 s: {e} (a stopped incarnation still holds its socket?)"),
                        });
                        return Ok(());
                    }
                    trace_event!(
                        self.trace,
                        &name,
                        "node.start-failed",
                        "{e}; retrying in 1s"
                    );
                    self.retry_starts
                        .push((Instant::now() + Duration::from_secs(1), *i, attempts));
                    return Ok(());
                }
                self.attempts.remove(i);
                let n = &self.cluster.nodes[*i];
                if let Some(g) = n.generation {
                    let name = n.name.clone();
                    self.checker.started(&name, g);
                    self.configs
                        .started(at, shoal::membership::MemberId::new(name, g));
                }
            }
            Action::Crash(i) => {
                let i = *i;
                if let Some(generation) = self.cluster.nodes[i]
                    .generation
                    .filter(|_| self.cluster.nodes[i].is_running())
                {
                    let name = self.cluster.nodes[i].name.clone();
                    // Expected to notice: running nodes that currently see it live.
                    let observers: BTreeMap<String, u64> = self
                        .views()
                        .into_iter()
                        .filter(|(o, v)| {
                            *o != name
                                && v.member(&name)
                                    .is_some_and(|m| m.live && m.generation == generation)
                        })
                        .filter_map(|(o, _)| {
                            let g = self
                                .cluster
                                .nodes
                                .iter()
                                .find(|n| n.name == o)?
                                .generation?;
                            Some((o, g))
                        })
                        .collect();
                    // How much was moving at that instant (a crash mid-handoff is the point of
                    // some scenarios).
                    let moving = self.shards_moving();
                    trace_event!(
                        self.trace,
                        &name,
                        "node.crash-during",
                        "shards_recovering={moving}"
                    );
                    self.cluster.crash(i);
                    self.checker.observer_gone(&name);
                    self.configs.crashed(
                        at,
                        shoal::membership::MemberId::new(name.clone(), generation),
                    );
                    let quiet = self
                        .last_network_fault
                        .is_none_or(|t| at - t >= self.checker_quiet_window);
                    self.checker
                        .crashed(at, &name, generation, observers, quiet);
                }
            }
            Action::CrashMidHandoff { node, after, back } => {
                self.mid_handoff = Some(MidHandoff {
                    node: *node,
                    back: *back,
                    after: Some(*after),
                    at: Instant::now() + Duration::from_secs(10),
                });
            }
            Action::Leave(i) => {
                self.cluster.leave(*i);
                let name = self.cluster.nodes[*i].name.clone();
                self.checker.observer_gone(&name);
            }
            Action::Partition(groups) => {
                let ips: Vec<Vec<_>> = groups
                    .iter()
                    .map(|g| g.iter().map(|&i| self.cluster.ip(i)).collect())
                    .collect();
                self.net.partition(&ips);
                let names: Vec<Vec<String>> = groups
                    .iter()
                    .map(|g| {
                        g.iter()
                            .map(|&i| self.cluster.nodes[i].name.clone())
                            .collect()
                    })
                    .collect();
                self.configs.partitioned(at, &names);
            }
            Action::OneWay { from, to } => {
                let from: Vec<_> = from.iter().map(|&i| self.cluster.ip(i)).collect();
                let to: Vec<_> = to.iter().map(|&i| self.cluster.ip(i)).collect();
                self.net.block_one_way(&from, &to);
            }
            Action::Network(faults) => {
                let faults = faults.clone();
                self.net.update_global(|g| {
                    let blocked = g.blocked;
                    *g = LinkFaults { blocked, ..faults };
                });
            }
            Action::Clog { node, on } => {
                let me = self.cluster.ip(*node);
                for j in 0..self.cluster.nodes.len() {
                    let other = self.cluster.ip(j);
                    if other != me {
                        self.net.update_link(me, other, |l| l.clogged = *on);
                        self.net.update_link(other, me, |l| l.clogged = *on);
                    }
                }
            }
            Action::ClockOffset { node, ms } => self.cluster.set_clock_offset(*node, *ms),
            Action::Heal => {
                self.net.heal();
                self.configs.healed();
                self.last_network_fault = Some(at);
            }
        }
        self.note_faults();
        Ok(())
    }
}

/// When the cluster's first formation is complete: the last start before anything else
/// happens.
fn formation_end(plan: &[Step]) -> Option<Duration> {
    let mut last = None;
    for s in plan {
        match s.action {
            Action::Start(_) => last = Some(s.at),
            Action::ClockOffset { .. } => {}
            _ => break,
        }
    }
    last
}

async fn simulate(opts: RunOptions) -> anyhow::Result<RunReport> {
    let scenario = scenarios::find(&opts.scenario).with_context(|| {
        format!(
            "unknown scenario {:?}; `shoal-sim list` shows them",
            opts.scenario
        )
    })?;
    let nodes = opts.nodes.unwrap_or(scenario.default_nodes);
    anyhow::ensure!(nodes >= 1, "--nodes must be at least 1");
    let duration = opts.duration.unwrap_or(scenario.default_duration);
    let start = Instant::now();
    let trace = Trace::new(opts.trace.as_deref()).context("creating the trace file")?;
    if opts.keep_trace {
        trace.keep_in_memory();
    }
    let mut settings = opts.settings.clone();
    match opts.bug {
        Some(Bug::NoFailureDetection) => settings.phi_threshold = f64::INFINITY,
        Some(Bug::WeakQuorum) => settings.quorum_slack = 1,
        Some(Bug::StaleEpoch) => settings.fencing_bug = true,
        None => {}
    }
    trace_event!(
        trace,
        "-",
        "run.start",
        "scenario={} seed={} nodes={nodes} duration_s={} gossip_ms={} phi={} bug={:?}",
        scenario.name,
        opts.seed,
        duration.as_secs_f64(),
        settings.gossip_interval.as_millis(),
        settings.phi_threshold,
        opts.bug
    );
    let rng = NodeRng::seeded(opts.seed);
    let net = Net::new(
        rng.fork(),
        trace.clone(),
        NetConfig {
            trace_packets: opts.trace_packets,
            ..NetConfig::default()
        },
    );
    tokio::spawn(net.clone().run());
    let certs = SimCerts::new(rng.fork())?;
    let (mut cluster, mut events) = SimCluster::new(
        net.clone(),
        trace.clone(),
        rng.fork(),
        &certs,
        nodes,
        settings.clone(),
        start,
    )?;
    let replicas = ReplicaChecker::new(start);
    cluster.replicas = Some(replicas.clone());
    let params = Params {
        nodes,
        duration,
        gossip_interval: settings.gossip_interval,
    };
    let plan = (scenario.plan)(&params, &rng.fork());
    for step in &plan {
        trace_event!(
            trace,
            "-",
            "plan",
            "at={:.3} {:?}",
            step.at.as_secs_f64(),
            step.action
        );
    }
    let formed_at = formation_end(&plan).map(|d| start + d);
    let first_fault = plan
        .iter()
        .find(|s| !matches!(s.action, Action::Start(_) | Action::ClockOffset { .. }))
        .map(|s| start + s.at);
    let mut world = World {
        cluster,
        checker: MembershipChecker::new(
            quiet_window(&settings),
            detection_deadline(&settings),
            faulty_detection_deadline(&settings),
        ),
        checker_quiet_window: quiet_window(&settings),
        configs: ConfigChecker::new(),
        entities: EntityChecker::default(),
        stats: Stats::default(),
        trace: trace.clone(),
        net: net.clone(),
        start,
        last_network_fault: None,
        retry_starts: Vec::new(),
        stuck: Vec::new(),
        attempts: std::collections::HashMap::new(),
        mid_handoff: None,
    };

    // Phase 1: the plan.
    let mut steps = plan.into_iter().peekable();
    let sample_every = settings.gossip_interval / 2;
    let mut sampler = tokio::time::interval_at(start + sample_every, sample_every);
    sampler.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = start + duration;
    let mut convergence = None;
    let client_rng = rng.fork();
    type OpResult = (
        usize,
        String,
        workload::Op,
        Result<workload::Reply, shoal::entity::AskError>,
    );
    let mut history = History::new(start);
    let mut seen = Seen::default();
    let (ops_tx, mut ops) = tokio::sync::mpsc::unbounded_channel::<OpResult>();
    let mut workload_tick =
        tokio::time::interval_at(start + Duration::from_secs(1), opts.workload_every);
    workload_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    loop {
        let next_step = steps.peek().map(|s| start + s.at);
        tokio::select! {
            biased;
            Some(ev) = events.recv() => world.on_event(ev),
            Some((client, via, op, result)) = ops.recv() => {
                world.stats.record(&result);
                match &result {
                    Ok(reply) => {
                        seen.note(&op, reply);
                        trace_event!(trace, via.as_str(), "ask", "#{client} {op} ok {reply}")
                    }
                    Err(e) => trace_event!(trace, via.as_str(), "ask", "#{client} {op} failed {e}"),
                }
                history.ret(client, result);
            }
            _ = workload_tick.tick(), if opts.workload => {
                if let Some(node) = world.client_node(&client_rng) {
                    seq += 1;
                    let op = workload::pick(&client_rng, seq, &seen);
                    let client = history.call(&op);
                    let tx = ops_tx.clone();
                    tokio::spawn(async move {
                        let result = workload::run(&node, &op, Duration::from_secs(2)).await;
                        let _ = tx.send((client, node.name().to_string(), op, result));
                    });
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(5)), if world.mid_handoff.is_some() => {
                world.poll_mid_handoff().await?;
            }
            _ = tokio::time::sleep_until(next_step.unwrap_or(end)), if next_step.is_some() => {
                while let Some(step) = steps.next_if(|s| start + s.at <= Instant::now()) {
                    world.apply(&step).await?;
                }
            }
            _ = sampler.tick() => {
                world.retry_due_starts().await?;
                let now = Instant::now();
                let agreed = world.sample().is_ok();
                if convergence.is_none()
                    && agreed
                    && let Some(formed) = formed_at
                    && now >= formed
                    && first_fault.is_none_or(|f| now <= f)
                {
                    convergence = Some((now - formed).as_secs_f64());
                }
                if now >= end
                    && steps.peek().is_none()
                    && world.retry_starts.is_empty()
                    && world.mid_handoff.is_none()
                {
                    break;
                }
            }
        }
    }

    // Phase 2: heal. Faults stop, crashed nodes restart, and the cluster must agree.
    let healed_at = Instant::now();
    trace_event!(
        trace,
        "-",
        "heal",
        "network healed; restarting crashed nodes"
    );
    net.heal();
    world.configs.healed();
    world.last_network_fault = Some(world.secs());
    for i in 0..world.cluster.nodes.len() {
        let n = &world.cluster.nodes[i];
        if !n.is_running() && !n.left {
            world
                .apply(&Step {
                    at: Duration::ZERO,
                    action: Action::Start(i),
                })
                .await?;
        }
    }
    let deadline = heal_deadline(&settings, nodes);
    let mut heal_agreement = None;
    let mut last_disagreement = String::new();
    loop {
        tokio::select! {
            biased;
            Some(ev) = events.recv() => world.on_event(ev),
            Some((client, _, _, result)) = ops.recv() => {
                world.stats.record(&result);
                history.ret(client, result);
            }
            _ = sampler.tick() => {
                world.retry_due_starts().await?;
                match world.sample() {
                    Ok(()) => {
                        heal_agreement = Some(healed_at.elapsed().as_secs_f64());
                        break;
                    }
                    Err(why) => last_disagreement = why,
                }
                if healed_at.elapsed() > deadline {
                    break;
                }
            }
        }
    }
    // Every read must succeed once the cluster agrees again, and every shard's replicas
    // converge once nothing disturbs them.
    let mut failed_after_heal = Vec::new();
    let mut replicas_equal = None;
    let mut replica_difference = String::new();
    if heal_agreement.is_some() {
        if opts.workload {
            let client = || world.client_node(&client_rng);
            failed_after_heal = workload::final_reads(client, &mut history, &trace).await;
        }
        let running = || {
            world
                .cluster
                .running()
                .filter_map(|n| n.node.clone())
                .collect::<Vec<_>>()
        };
        match replica_checker::wait_replicas_equal(running, REPLICAS_EQUAL_WITHIN).await {
            Ok(secs) => replicas_equal = Some(secs),
            Err(why) => replica_difference = why,
        }
    }
    let at = world.secs();
    let (mut not_linearizable, history_stats) = history.check(at);
    let mut violations = world.checker.violations().to_vec();
    violations.extend(world.entities.violations().iter().cloned());
    violations.extend(world.stuck.iter().cloned());
    if !failed_after_heal.is_empty() {
        violations.push(Violation {
            at,
            checker: "ask-after-heal",
            what: format!(
                "{} reads failed three times after the cluster agreed again, e.g. {}",
                failed_after_heal.len(),
                failed_after_heal[0]
            ),
        });
    }
    violations.extend(world.configs.violations().iter().cloned());
    violations.extend(replicas.violations());
    // Counted from the moment the cluster first agreed: asks sent while it is still forming
    // may time out.
    let formed = formed_at
        .zip(convergence)
        .map(|(f, c)| f + Duration::from_secs_f64(c));
    let failed = formed.map(|t| history.failed_since(t));
    if scenario.asks_never_fail
        && let Some(failed) = failed.filter(|f| !f.is_empty())
    {
        violations.push(Violation {
            at,
            checker: "asks-never-fail",
            what: format!(
                "only planned changes happened, yet {} asks sent after the cluster formed failed, e.g. {}",
                failed.len(),
                failed[0]
            ),
        });
    }
    violations.append(&mut not_linearizable);
    violations.sort_by(|a, b| a.at.total_cmp(&b.at));
    if heal_agreement.is_some() && replicas_equal.is_none() {
        violations.push(Violation {
            at,
            checker: "replicas-equal",
            what: format!(
                "replicas still differ {}s after the cluster agreed: {replica_difference}",
                REPLICAS_EQUAL_WITHIN.as_secs()
            ),
        });
    }
    if heal_agreement.is_none() {
        violations.push(Violation {
            at,
            checker: "agreement-after-heal",
            what: format!(
                "the live nodes did not agree on the membership and configuration within {:.1}s of the heal; last disagreement: {last_disagreement}",
                deadline.as_secs_f64()
            ),
        });
    }
    for v in &violations {
        trace_event!(trace, "-", "violation", "{v}");
    }
    let simulated_secs = start.elapsed().as_secs_f64();
    let stats = net.stats();
    let sent_packets: u64 = stats.values().map(|s| s.sent_packets).sum();
    let sent_bytes: u64 = stats.values().map(|s| s.sent_bytes).sum();
    let per = (nodes as f64 * simulated_secs).max(f64::MIN_POSITIVE);
    trace_event!(
        trace,
        "-",
        "run.end",
        "verdict={} violations={} sent_packets={sent_packets} sent_bytes={sent_bytes}",
        if violations.is_empty() {
            "pass"
        } else {
            "fail"
        },
        violations.len()
    );
    trace.flush();
    Ok(RunReport {
        scenario: scenario.name.to_string(),
        seed: opts.seed,
        nodes,
        duration,
        violations,
        convergence,
        detections: world.checker.detections(),
        heal_agreement,
        heal_deadline: deadline.as_secs_f64(),
        final_epoch: world.configs.newest(),
        commits: world.configs.commits(),
        joins: world.configs.joins.iter().map(|(_, s)| *s).collect(),
        removals: world.configs.removals.clone(),
        workload: world.stats.clone(),
        history: history_stats,
        replicas_equal,
        simulated_secs,
        wall_secs: 0.0,
        packets_per_node_sec: sent_packets as f64 / per,
        bytes_per_node_sec: sent_bytes as f64 / per,
        trace_hash: trace.hash_hex(),
        trace_lines: trace.line_count(),
        trace: trace.lines(),
        tokio_seeded: cfg!(tokio_unstable),
        interposer: determinism::installed(),
    })
}
