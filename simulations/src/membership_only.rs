//! Membership-only mode: chitchat and Shoal's membership over simulated datagrams, no QUIC,
//! for large clusters. Every node joins through the seeds at once; the figure is the number
//! of gossip rounds until every node knows every other node live ([`run`]). [`run_failures`]
//! crashes chosen nodes instead and times their detection, counting false positives: the
//! baseline `shoal-bench` holds Shoal's detection over QUIC against.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use shoal::membership::{Membership, MembershipConfig, MembershipEvent};
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
    let (_net, members) = start_members(&opts, n, &trace, start).await?;
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

/// The simulated network and `n` gossip-only members on it, all started at once, the first
/// three being everyone's seeds.
async fn start_members(
    opts: &RunOptions,
    n: usize,
    trace: &Trace,
    start: Instant,
) -> anyhow::Result<(Net, Vec<Arc<Membership>>)> {
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
        config.gossip_interval = opts.settings.gossip_interval;
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
    Ok((net, members))
}

/// What a membership-only run saw of failure detection: chitchat's own failure detector
/// with its messages on plain simulated datagrams (no QUIC), the baseline of Shoal's
/// detection over QUIC.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FailureReport {
    pub nodes: usize,
    pub seed: u64,
    /// One entry per crash, in the order they happened.
    pub crashes: Vec<CrashDetection>,
    /// `failed` events about a node that was running: (seconds from the start, observer,
    /// subject).
    pub false_failures: Vec<(f64, String, String)>,
    pub simulated_secs: f64,
    pub wall_secs: f64,
    pub trace_hash: String,
}

/// How one crash was noticed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CrashDetection {
    pub node: String,
    /// Seconds from the start.
    pub crashed_at: f64,
    /// Nodes expected to notice: running, not crashing at the same moment, and seeing the
    /// node live when it crashed (an observer that crashes later without having reported it
    /// is dropped).
    pub observers: Vec<String>,
    /// Seconds from the crash until each observer reported it `failed`.
    pub detected_after: BTreeMap<String, f64>,
}

impl CrashDetection {
    /// Whether every observer reported the crash.
    pub fn complete(&self) -> bool {
        self.observers
            .iter()
            .all(|o| self.detected_after.contains_key(o))
    }

    /// Seconds until the last observer reported it, once all did.
    pub fn last(&self) -> Option<f64> {
        self.complete().then(|| {
            self.observers
                .iter()
                .filter_map(|o| self.detected_after.get(o).copied())
                .fold(0.0, f64::max)
        })
    }
}

/// Membership only, for failure detection: `opts.nodes` members (default 10) start at once,
/// as in [`run`]; each `(i, at)` of `crashes` crashes node `i` (0-based) at `at` (its host
/// leaves the network, then its gossip stops) and stays down. The run ends at
/// `opts.duration` (default 10 minutes), or earlier once there were crashes and every one of
/// them was reported by all its observers. Every `failed` event about a node still running
/// is a false positive.
pub fn run_failures(
    opts: RunOptions,
    crashes: Vec<(usize, Duration)>,
) -> anyhow::Result<FailureReport> {
    let seed = opts.seed;
    let (mut report, wall) = crate::runner::on_sim_thread(seed, simulate_failures(opts, crashes))?;
    report.wall_secs = wall;
    Ok(report)
}

async fn simulate_failures(
    opts: RunOptions,
    mut crashes: Vec<(usize, Duration)>,
) -> anyhow::Result<FailureReport> {
    let n = opts.nodes.unwrap_or(10);
    for &(victim, _) in &crashes {
        anyhow::ensure!(victim < n, "node {victim} to crash, but only {n} nodes");
    }
    crashes.sort_by_key(|c| c.1);
    let mut planned = crashes.into_iter().peekable();
    let duration = opts.duration.unwrap_or(Duration::from_secs(600));
    let start = Instant::now();
    let trace = Trace::new(opts.trace.as_deref()).context("creating the trace file")?;
    trace_event!(
        trace,
        "-",
        "run.start",
        "membership-only failures nodes={n} seed={} gossip_ms={}",
        opts.seed,
        opts.settings.gossip_interval.as_millis()
    );
    let (net, members) = start_members(&opts, n, &trace, start).await?;
    trace_event!(trace, "-", "started", "nodes={n}");
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let forwarders: Vec<_> = members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut rx = m.subscribe();
            let tx = tx.clone();
            tokio::spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(ev) => {
                            if tx.send((Instant::now(), i, ev)).is_err() {
                                break;
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    }
                }
            })
        })
        .collect();
    drop(tx);
    let end = start + duration;
    let mut down = vec![false; n];
    let mut detections: Vec<CrashDetection> = Vec::new();
    let mut false_failures = Vec::new();
    let done = |d: &[CrashDetection]| !d.is_empty() && d.iter().all(CrashDetection::complete);
    loop {
        let crash_due = planned.peek().map(|&(_, at)| start + at);
        tokio::select! {
            biased;
            Some((at, observer, ev)) = events.recv() => {
                let MembershipEvent::Failed { member } = &ev else { continue };
                if down[observer] {
                    continue;
                }
                let name = node_name(observer);
                trace_event!(
                    trace,
                    &name,
                    "member",
                    "failed {} generation={}",
                    member.name,
                    member.generation
                );
                let secs = (at - start).as_secs_f64();
                match detections.iter_mut().find(|d| d.node == member.name) {
                    Some(d) => {
                        let after = secs - d.crashed_at;
                        d.detected_after.entry(name).or_insert(after);
                    }
                    None => false_failures.push((secs, name, member.name.clone())),
                }
                if done(&detections) && planned.peek().is_none() {
                    break;
                }
            }
            _ = tokio::time::sleep_until(crash_due.unwrap_or(end)), if crash_due.is_some() => {
                let now = Instant::now();
                let mut due = Vec::new();
                while let Some((victim, _)) = planned.next_if(|&(_, at)| start + at <= now) {
                    if !down[victim] {
                        down[victim] = true;
                        due.push(victim);
                    }
                }
                let crashed_at = (now - start).as_secs_f64();
                for &victim in &due {
                    let name = node_name(victim);
                    let observers: Vec<String> = members
                        .iter()
                        .enumerate()
                        .filter(|&(i, m)| {
                            !down[i] && m.view().member(&name).is_some_and(|x| x.live)
                        })
                        .map(|(i, _)| node_name(i))
                        .collect();
                    trace_event!(trace, &name, "node.crash", "observers={}", observers.len());
                    detections.push(CrashDetection {
                        node: name,
                        crashed_at,
                        observers,
                        detected_after: BTreeMap::new(),
                    });
                }
                // Observers that crash now cannot report the earlier crashes any more.
                for d in &mut detections {
                    d.observers
                        .retain(|o| d.detected_after.contains_key(o) || !due.iter().any(|&v| node_name(v) == *o));
                }
                for &victim in &due {
                    net.kill_host(node_addr(victim).ip());
                    members[victim].shutdown().await;
                }
                if done(&detections) && planned.peek().is_none() {
                    break;
                }
            }
            _ = tokio::time::sleep_until(end) => break,
        }
    }
    trace_event!(
        trace,
        "-",
        "run.end",
        "crashes={} detected={} false_failures={}",
        detections.len(),
        detections.iter().filter(|d| d.complete()).count(),
        false_failures.len()
    );
    for f in forwarders {
        f.abort();
    }
    for (i, m) in members.iter().enumerate() {
        if !down[i] {
            m.shutdown().await;
        }
    }
    Ok(FailureReport {
        nodes: n,
        seed: opts.seed,
        crashes: detections,
        false_failures,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(nodes: usize, secs: u64) -> RunOptions {
        let mut o = RunOptions::new("steady", 1);
        o.nodes = Some(nodes);
        o.duration = Some(Duration::from_secs(secs));
        o.trace_packets = false;
        o
    }

    #[test]
    fn a_crash_is_reported_by_every_observer() {
        let r = run_failures(opts(8, 120), vec![(4, Duration::from_secs(15))]).unwrap();
        assert_eq!(r.crashes.len(), 1);
        let d = &r.crashes[0];
        assert_eq!(d.node, "n5");
        assert_eq!(d.observers.len(), 7, "{d:?}");
        let last = d.last().expect("every observer reported it");
        assert!(last > 0.0 && last < 13.0, "{d:?}");
        assert!(r.false_failures.is_empty(), "{:?}", r.false_failures);
        // It stops once every crash was reported, well before the duration.
        assert!(r.simulated_secs < 60.0, "{}", r.simulated_secs);
    }

    #[test]
    fn simultaneous_crashes_do_not_count_each_other_as_observers() {
        let at = Duration::from_secs(15);
        let r = run_failures(opts(6, 120), vec![(1, at), (2, at)]).unwrap();
        assert_eq!(r.crashes.len(), 2);
        for d in &r.crashes {
            assert_eq!(d.observers.len(), 4, "{d:?}");
            assert!(d.complete(), "{d:?}");
        }
    }

    #[test]
    fn a_steady_cluster_reports_nobody_failed() {
        let r = run_failures(opts(5, 120), Vec::new()).unwrap();
        assert!(r.crashes.is_empty());
        assert!(r.false_failures.is_empty(), "{:?}", r.false_failures);
        assert!(r.simulated_secs >= 120.0);
    }
}
