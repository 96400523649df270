//! Membership-only mode: chitchat and Shoal's membership over simulated datagrams, no QUIC,
//! for large clusters. Every node joins through the seeds at once; the figure is the number
//! of gossip rounds until every node knows every other node live.

use std::sync::Arc;

use anyhow::Context;
use shoal::membership::{Membership, MembershipConfig};
use shoal_transport::NodeRng;
use tokio::time::Instant;

use crate::clock::SimClock;
use crate::cluster::{node_addr, node_name};
use crate::gossip_datagrams::DatagramGossip;
use crate::net::{Net, NetConfig};
use crate::runner::RunOptions;
use crate::trace::Trace;
use crate::trace_event;

#[derive(Debug, Clone, serde::Serialize)]
pub struct MembershipOnlyReport {
    pub nodes: usize,
    pub seed: u64,
    pub gossip_interval_ms: u64,
    /// Gossip rounds from the start until every node saw every node live.
    pub rounds_to_full_knowledge: Option<f64>,
    /// The same, per percentile of nodes: (percent, rounds until that share knew everyone).
    pub rounds_by_share: Vec<(u32, f64)>,
    pub simulated_secs: f64,
    pub wall_secs: f64,
    pub trace_hash: String,
}

/// Runs the membership-only simulation on a fresh thread.
pub fn run(opts: RunOptions, max_rounds: u32) -> anyhow::Result<MembershipOnlyReport> {
    anyhow::ensure!(
        opts.scenario == "join" || opts.scenario == "steady",
        "--membership-only runs the `join` scenario (every node joins through the seeds at once); {:?} needs QUIC nodes",
        opts.scenario
    );
    let seed = opts.seed;
    let (mut report, wall) = crate::runner::on_sim_thread(seed, simulate(opts, max_rounds))?;
    report.wall_secs = wall;
    Ok(report)
}

async fn simulate(opts: RunOptions, max_rounds: u32) -> anyhow::Result<MembershipOnlyReport> {
    let n = opts.nodes.unwrap_or(100);
    let gossip = opts.settings.gossip_interval;
    let start = Instant::now();
    let trace = Trace::new(opts.trace.as_deref()).context("creating the trace file")?;
    trace_event!(
        trace,
        "-",
        "run.start",
        "membership-only nodes={n} seed={} gossip_ms={}",
        opts.seed,
        gossip.as_millis()
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
    let transport: Arc<dyn chitchat::transport::Transport> =
        Arc::new(DatagramGossip::new(net.clone()));
    let mut members = Vec::with_capacity(n);
    for i in 0..n {
        let mut config = MembershipConfig::new("sim", node_name(i), node_addr(i));
        config.gossip_interval = gossip;
        config.failure_detector.phi_threshold = opts.settings.phi_threshold;
        config.seeds = (0..n.min(3))
            .filter(|&j| j != i && i != 0)
            .map(|j| node_addr(j).to_string())
            .collect();
        let clock = SimClock::new(start);
        members.push(Arc::new(
            Membership::start_with_gossip(config, transport.clone(), Arc::new(clock)).await?,
        ));
    }
    trace_event!(trace, "-", "started", "nodes={n}");
    let mut knew_all: Vec<Option<f64>> = vec![None; n];
    let mut done = None;
    let step = gossip / 4;
    while done.is_none() && start.elapsed() < gossip * max_rounds {
        tokio::time::sleep(step).await;
        let rounds = start.elapsed().as_secs_f64() / gossip.as_secs_f64();
        for (i, m) in members.iter().enumerate() {
            if knew_all[i].is_none() && m.watch().borrow().live().count() == n {
                knew_all[i] = Some(rounds);
                trace_event!(trace, &node_name(i), "knows-all", "rounds={rounds:.2}");
            }
        }
        if knew_all.iter().all(Option::is_some) {
            done = Some(rounds);
        }
    }
    let mut known: Vec<f64> = knew_all.iter().flatten().copied().collect();
    known.sort_by(f64::total_cmp);
    let rounds_by_share = [50u32, 90, 99, 100]
        .iter()
        .filter_map(|&p| {
            let k = ((n as f64 * p as f64 / 100.0).ceil() as usize).clamp(1, n);
            known.get(k - 1).map(|r| (p, *r))
        })
        .collect();
    trace_event!(trace, "-", "run.end", "rounds={done:?}");
    for m in &members {
        m.shutdown().await;
    }
    Ok(MembershipOnlyReport {
        nodes: n,
        seed: opts.seed,
        gossip_interval_ms: gossip.as_millis() as u64,
        rounds_to_full_knowledge: done,
        rounds_by_share,
        simulated_secs: start.elapsed().as_secs_f64(),
        wall_secs: 0.0,
        trace_hash: trace.hash_hex(),
    })
}

/// Rounds a push-pull epidemic needs in theory: log base 3 of N (three peers per round).
pub fn theory_rounds(n: usize) -> f64 {
    (n.max(1) as f64).log(3.0)
}

pub const DEFAULT_MAX_ROUNDS: u32 = 400;
