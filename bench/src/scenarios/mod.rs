//! The scenarios: each measures Shoal and its baseline in the same process, alternating
//! repetitions where both are measured by time, and returns table rows.

mod bare_quinn;
mod cluster;
mod failure;
mod gossip;
mod handoff;
mod local;
mod memory;
mod peers;
mod rebalance;
mod remote;
mod replicated;
mod shoal_asks;
mod sim_speed;

use crate::report::Row;

/// How long a flood's completion check may wait behind the flood.
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// How a run is sized.
pub struct Ctx {
    /// Small sizes, one repetition (CI's smoke run).
    pub quick: bool,
}

impl Ctx {
    /// Repetitions of each timed measurement (the table shows their median and spread).
    pub fn reps(&self) -> usize {
        if self.quick { 1 } else { 5 }
    }

    /// `full` normally, `quick` in a quick run.
    pub fn size<T>(&self, full: T, quick: T) -> T {
        if self.quick { quick } else { full }
    }
}

pub struct Scenario {
    pub name: &'static str,
    pub what: &'static str,
    pub run: fn(&Ctx) -> anyhow::Result<Vec<Row>>,
}

pub const ALL: &[Scenario] = &[
    Scenario {
        name: "local-tell",
        what: "tell throughput on one node (1 and 100 000 counters) vs tokio mpsc, actix, ractor, kameo",
        run: local::tell,
    },
    Scenario {
        name: "local-ask",
        what: "ask round trip on one node vs tokio mpsc + oneshot, ractor call, kameo ask",
        run: local::ask,
    },
    Scenario {
        name: "remote",
        what: "tell and ask between two nodes on loopback vs a bare quinn connection with one framed stream",
        run: remote::run,
    },
    Scenario {
        name: "replicated-write",
        what: "counter writes on three nodes at R = 3 vs the same workload at R = 1",
        run: replicated::run,
    },
    Scenario {
        name: "handoff",
        what: "10 000 entities of 1 KiB moving to a joining node vs a quinn bulk transfer of the same bytes",
        run: handoff::run,
    },
    Scenario {
        name: "gossip-convergence",
        what: "simulator, membership only: rounds until all know all at N = 10, 100, 1000 vs log3(N)",
        run: gossip::convergence,
    },
    Scenario {
        name: "failure-detection",
        what: "simulator: time to detect a crash at N = 10, 100 and false positives in 10 minutes, QUIC vs chitchat's UDP",
        run: failure::detection,
    },
    Scenario {
        name: "rebalance",
        what: "shards moved when a node joins and busiest/mean shards per node at N = 3, 10, 30 vs the ideal",
        run: rebalance::movement,
    },
    Scenario {
        name: "sim-speed",
        what: "simulated seconds per wall second with 5, 10 and 30 QUIC nodes",
        run: sim_speed::run,
    },
    Scenario {
        name: "memory",
        what: "bytes per active counter entity and the RSS of an idle node",
        run: memory::footprint,
    },
];
