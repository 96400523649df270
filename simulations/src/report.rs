//! How a run is told: a human-readable verdict with figures, or one JSON object (what
//! `sweep` and `determinism` read from their child processes). The trace hash is always the
//! last line.

use serde::Serialize;

use crate::runner::RunReport;

/// The figures and verdict of a run, as JSON.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub scenario: String,
    pub seed: u64,
    pub nodes: usize,
    pub passed: bool,
    pub violations: Vec<String>,
    pub convergence_secs: Option<f64>,
    pub detection_secs: Vec<DetectionSummary>,
    pub heal_agreement_secs: Option<f64>,
    pub heal_deadline_secs: f64,
    pub final_epoch: u64,
    pub join_commit_median_secs: Option<f64>,
    /// Seconds from a crash to the committed removal, for nodes that stayed down.
    pub removal_commit_secs: Vec<f64>,
    pub packets_per_node_sec: f64,
    pub bytes_per_node_sec: f64,
    pub workload: crate::workload::Stats,
    pub history: crate::history::HistoryStats,
    pub replicas_equal_secs: Option<f64>,
    pub simulated_secs: f64,
    pub wall_secs: f64,
    pub speedup: f64,
    pub trace_hash: String,
}

#[derive(Debug, Serialize)]
pub struct DetectionSummary {
    pub node: String,
    pub crashed_at: f64,
    pub first: Option<f64>,
    pub last: Option<f64>,
    pub complete: bool,
}

impl From<&RunReport> for Summary {
    fn from(r: &RunReport) -> Self {
        Self {
            scenario: r.scenario.clone(),
            seed: r.seed,
            nodes: r.nodes,
            passed: r.passed(),
            violations: r.violations.iter().map(|v| v.to_string()).collect(),
            convergence_secs: r.convergence,
            detection_secs: r
                .detections
                .iter()
                .map(|d| DetectionSummary {
                    node: d.node.clone(),
                    crashed_at: d.crashed_at,
                    first: d.by.values().copied().reduce(f64::min),
                    last: d.by.values().copied().reduce(f64::max),
                    complete: d.complete(),
                })
                .collect(),
            heal_agreement_secs: r.heal_agreement,
            heal_deadline_secs: r.heal_deadline,
            final_epoch: r.final_epoch,
            join_commit_median_secs: crate::config_checker::median(r.joins.clone()),
            removal_commit_secs: r
                .removals
                .iter()
                .filter(|x| !x.replaced)
                .filter_map(|x| x.removed_after)
                .collect(),
            packets_per_node_sec: r.packets_per_node_sec,
            workload: r.workload.clone(),
            history: r.history.clone(),
            replicas_equal_secs: r.replicas_equal,
            bytes_per_node_sec: r.bytes_per_node_sec,
            simulated_secs: r.simulated_secs,
            wall_secs: r.wall_secs,
            speedup: r.simulated_secs / r.wall_secs.max(1e-9),
            trace_hash: r.trace_hash.clone(),
        }
    }
}

/// The command that replays a run.
pub fn replay_command(scenario: &str, seed: u64, extra: &str) -> String {
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(" {extra}")
    };
    format!("shoal-sim run --scenario {scenario} --seed {seed}{extra}")
}

/// Prints the report for a person.
pub fn print_human(r: &RunReport, replay_extra: &str) {
    let s = Summary::from(r);
    println!(
        "scenario {}  seed {}  nodes {}  duration {}",
        r.scenario,
        r.seed,
        r.nodes,
        humantime::format_duration(r.duration)
    );
    println!("verdict: {}", if s.passed { "PASS" } else { "FAIL" });
    for v in &r.violations {
        println!("  violation {v}");
    }
    match s.convergence_secs {
        Some(c) => println!("convergence: {c:.2}s after the last node started"),
        None => println!("convergence: not reached before the first fault"),
    }
    for d in &r.detections {
        let first = d.by.values().copied().reduce(f64::min);
        let last = d.by.values().copied().reduce(f64::max);
        match (first, last) {
            (Some(f), Some(l)) => println!(
                "failure detection: {} crashed at {:.1}s; {} of {} observers reported it, the first after {f:.2}s, the last after {l:.2}s",
                d.node,
                d.crashed_at,
                d.reported(),
                d.expected.len()
            ),
            _ => println!(
                "failure detection: {} crashed at {:.1}s; no observer reported it before it came back or the run ended",
                d.node, d.crashed_at
            ),
        }
    }
    let joins = crate::config_checker::median(r.joins.clone());
    let join_max = r.joins.iter().copied().fold(f64::NAN, f64::max);
    println!(
        "configuration: epoch {} at the end, {} epochs committed in the run{}",
        r.final_epoch,
        r.commits,
        match joins {
            Some(j) => format!(
                "; joins committed {j:.2}s after the node started (median, max {join_max:.2}s)"
            ),
            None => String::new(),
        }
    );
    for rm in &r.removals {
        match rm.removed_after {
            Some(t) => println!(
                "  {} crashed at {:.1}s: {} committed {t:.2}s later",
                rm.id,
                rm.crashed_at,
                if rm.replaced {
                    "its replacement by the restarted node"
                } else {
                    "its removal"
                }
            ),
            None => println!(
                "  {} crashed at {:.1}s: still a member at the end",
                rm.id, rm.crashed_at
            ),
        }
    }
    match s.heal_agreement_secs {
        Some(h) => println!(
            "after heal: every live node agreed in {h:.2}s (deadline {:.1}s)",
            s.heal_deadline_secs
        ),
        None => println!(
            "after heal: no agreement within the {:.1}s deadline",
            s.heal_deadline_secs
        ),
    }
    let w = &r.workload;
    if w.total() > 0 {
        println!(
            "workload: {} asks, {} ok, {} unavailable, {} timed out, {} other errors",
            w.total(),
            w.ok,
            w.unavailable,
            w.timeout,
            w.other
        );
        let h = &r.history;
        println!(
            "linearizability: {} entities, {} operations ({} with unknown outcome), {} undecided",
            h.entities, h.operations, h.unknown_outcomes, h.undecided
        );
    }
    if let Some(secs) = r.replicas_equal {
        println!("replicas equal {secs:.1}s after the cluster agreed");
    }
    println!(
        "traffic: {:.1} datagrams/s and {:.1} KB/s per node",
        s.packets_per_node_sec,
        s.bytes_per_node_sec / 1000.0
    );
    println!(
        "speed: {:.1} simulated s in {:.2} wall s ({:.0}x real time); {} trace lines; tokio seeded: {}; interposer: {}",
        s.simulated_secs, s.wall_secs, s.speedup, r.trace_lines, r.tokio_seeded, r.interposer
    );
    if !s.passed {
        println!(
            "replay: {}",
            replay_command(&r.scenario, r.seed, replay_extra)
        );
    }
    println!("trace-hash: {}", r.trace_hash);
}
