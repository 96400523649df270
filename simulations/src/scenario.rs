//! Scenarios: named, seeded fault schedules.
//!
//! A scenario is a function from the run's parameters and an RNG to a list of timed
//! [`Action`]s. Adding one means writing that function and listing it in
//! [`crate::scenarios::all`]. After the last action and the scenario's duration, the runner
//! heals everything (network faults cleared, crashed nodes restarted) and checks that the
//! cluster agrees again.

use std::time::Duration;

use shoal_transport::NodeRng;

use crate::net::LinkFaults;

/// One thing that happens to the cluster.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start node i (or restart it after a crash: a new generation).
    Start(usize),
    /// Crash node i: it vanishes without a word.
    Crash(usize),
    /// Crash `node` `after` shards start moving anywhere in the cluster (a restart
    /// mid-handoff, at a seeded point of it), or after 10 s if nothing moves; start it again
    /// `back` after the crash.
    CrashMidHandoff {
        node: usize,
        after: Duration,
        back: Duration,
    },
    /// Node i leaves gracefully.
    Leave(usize),
    /// Block every link between different groups, both ways (nodes in no group keep all
    /// their links: a bridge).
    Partition(Vec<Vec<usize>>),
    /// Block the links from `from` to `to`, one way.
    OneWay { from: Vec<usize>, to: Vec<usize> },
    /// Faults on every link (loss, duplication, reordering, spikes).
    Network(LinkFaults),
    /// Hold every datagram to and from node i until unclogged.
    Clog { node: usize, on: bool },
    /// Set node i's clock offset.
    ClockOffset { node: usize, ms: i64 },
    /// Clear every network fault.
    Heal,
}

impl Action {
    /// Whether the action disturbs the network (as opposed to node life cycle and clocks).
    pub fn is_network_fault(&self) -> bool {
        matches!(
            self,
            Action::Partition(_)
                | Action::OneWay { .. }
                | Action::Network(_)
                | Action::Clog { on: true, .. }
        )
    }
}

/// An action at a time since the start of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub at: Duration,
    pub action: Action,
}

/// What a scenario is given.
#[derive(Debug, Clone)]
pub struct Params {
    pub nodes: usize,
    pub duration: Duration,
    pub gossip_interval: Duration,
}

/// A named fault schedule.
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub default_nodes: usize,
    pub default_duration: Duration,
    /// Every client ask must succeed (no fault that may make one fail: planned changes only).
    pub asks_never_fail: bool,
    pub plan: fn(&Params, &NodeRng) -> Vec<Step>,
}

/// Builds a schedule step by step.
#[derive(Default)]
pub struct Schedule {
    steps: Vec<Step>,
}

impl Schedule {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn at(&mut self, at: Duration, action: Action) -> &mut Self {
        self.steps.push(Step { at, action });
        self
    }

    /// Starts every node at time zero.
    pub fn start_all(&mut self, n: usize) -> &mut Self {
        for i in 0..n {
            self.at(Duration::ZERO, Action::Start(i));
        }
        self
    }

    pub fn build(&mut self) -> Vec<Step> {
        let mut steps = std::mem::take(&mut self.steps);
        steps.sort_by_key(|s| s.at);
        steps
    }
}

/// `secs(1.5)`: a duration in seconds.
pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// A uniformly random duration between `lo` and `hi` seconds.
pub fn between(rng: &NodeRng, lo: f64, hi: f64) -> Duration {
    let span = ((hi - lo) * 1000.0).max(0.0) as u64;
    secs(lo) + Duration::from_millis(rng.below(span + 1))
}

/// A random subset of `0..n` of size `k`, sorted.
pub fn pick(rng: &NodeRng, n: usize, k: usize) -> Vec<usize> {
    let mut all: Vec<usize> = (0..n).collect();
    for i in 0..k.min(n) {
        let j = i + rng.below((n - i) as u64) as usize;
        all.swap(i, j);
    }
    let mut chosen = all[..k.min(n)].to_vec();
    chosen.sort();
    chosen
}

/// Splits `0..n` into a random group of size `k` and the rest.
pub fn split(rng: &NodeRng, n: usize, k: usize) -> (Vec<usize>, Vec<usize>) {
    let a = pick(rng, n, k);
    let b = (0..n).filter(|i| !a.contains(i)).collect();
    (a, b)
}
