//! Failure detection in the simulator: Shoal (chitchat over QUIC, real simulated nodes) next
//! to chitchat's own datagram transport in the same simulator (membership-only mode: the
//! same membership code and failure detector, gossip on plain simulated datagrams).
//!
//! - **Time to detect a crash.** Shoal runs the `crash-stop` scenario (a seeded minority
//!   crashes at a seeded moment 15-25 s in and stays down; no client workload). The baseline
//!   crashes the same nodes at the same moment in a membership-only cluster of the same size.
//!   The figure is, per crashed node, the seconds until the last node that saw it live
//!   reported it `failed`; the sample holds every crashed node of every seed.
//! - **False positives.** `failed` events about a running node, summed over all observers,
//!   in a steady cluster (no faults at all) for 10 simulated minutes, per seed.

use std::time::Duration;

use shoal_sim::membership_only::{self, FailureReport};
use shoal_sim::runner::{self, RunOptions, RunReport};

use super::Ctx;
use crate::report::{Better, Row, Sample};

/// A crash as both sides replay it: node index (0-based) and when.
type Crash = (usize, Duration);

/// The index of node `nK` (`n1` is 0).
fn node_index(name: &str) -> anyhow::Result<usize> {
    name.strip_prefix('n')
        .and_then(|k| k.parse::<usize>().ok())
        .and_then(|k| k.checked_sub(1))
        .ok_or_else(|| anyhow::anyhow!("unexpected simulated node name {name:?}"))
}

fn violations(r: &RunReport) -> String {
    r.violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Shoal over QUIC: `crash-stop` at `n` nodes; the crashes and, per crash, the seconds until
/// the last observer reported it.
fn quic_crash(n: usize, seed: u64) -> anyhow::Result<(Vec<Crash>, Vec<f64>)> {
    let mut opts = RunOptions::new("crash-stop", seed);
    opts.nodes = Some(n);
    // The crash comes 15-25 s in and is detected in seconds; the rest of the default 60 s
    // would only cost time.
    opts.duration = Some(Duration::from_secs(45));
    opts.workload = false;
    opts.trace_packets = false;
    let r = runner::run(opts)?;
    let mut crashes = Vec::new();
    let mut last = Vec::new();
    for d in &r.detections {
        anyhow::ensure!(
            d.complete(),
            "QUIC, N = {n}, seed {seed}: {} crashed at {:.1}s was reported by {} of {} observers ({})",
            d.node,
            d.crashed_at,
            d.reported(),
            d.expected.len(),
            violations(&r)
        );
        crashes.push((node_index(&d.node)?, Duration::from_secs_f64(d.crashed_at)));
        last.push(
            d.expected
                .iter()
                .filter_map(|o| d.by.get(o).copied())
                .fold(0.0, f64::max),
        );
    }
    anyhow::ensure!(
        !crashes.is_empty(),
        "QUIC, N = {n}, seed {seed}: crash-stop crashed nobody"
    );
    Ok((crashes, last))
}

/// The baseline: the same crashes in a membership-only cluster of `n` nodes.
fn datagram_crash(n: usize, seed: u64, crashes: &[Crash]) -> anyhow::Result<Vec<f64>> {
    let mut opts = RunOptions::new("steady", seed);
    opts.nodes = Some(n);
    let latest = crashes.iter().map(|c| c.1).max().unwrap_or_default();
    opts.duration = Some(latest + Duration::from_secs(60));
    opts.trace_packets = false;
    let r: FailureReport = membership_only::run_failures(opts, crashes.to_vec())?;
    r.crashes
        .iter()
        .map(|d| {
            d.last().ok_or_else(|| {
                anyhow::anyhow!(
                    "datagrams, N = {n}, seed {seed}: {} crashed at {:.1}s was reported by {} of {} observers within 60 s",
                    d.node,
                    d.crashed_at,
                    d.detected_after.len(),
                    d.observers.len()
                )
            })
        })
        .collect()
}

/// `failed` events about running nodes, counted in a trace (each observer's report counts).
fn failed_events(trace: &[String]) -> usize {
    trace
        .iter()
        .filter(|line| {
            let mut words = line.split_whitespace().skip(2);
            words.next() == Some("member") && words.next() == Some("failed")
        })
        .count()
}

/// Shoal over QUIC: false positives in `steady`.
fn quic_steady(n: usize, seed: u64, duration: Duration) -> anyhow::Result<f64> {
    let mut opts = RunOptions::new("steady", seed);
    opts.nodes = Some(n);
    opts.duration = Some(duration);
    opts.workload = false;
    opts.trace_packets = false;
    opts.keep_trace = true;
    let r = runner::run(opts)?;
    Ok(failed_events(&r.trace) as f64)
}

/// The baseline: false positives in a steady membership-only cluster.
fn datagram_steady(n: usize, seed: u64, duration: Duration) -> anyhow::Result<f64> {
    let mut opts = RunOptions::new("steady", seed);
    opts.nodes = Some(n);
    opts.duration = Some(duration);
    opts.trace_packets = false;
    let r = membership_only::run_failures(opts, Vec::new())?;
    Ok(r.false_failures.len() as f64)
}

const BASELINE: &str = "chitchat UDP (same sim)";

pub fn detection(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    // (nodes, seeds): a 100-node QUIC run takes about a minute of wall time.
    let crash_sizes: &[(usize, u64)] = if ctx.quick {
        &[(10, 2)]
    } else {
        &[(10, 5), (100, 2)]
    };
    let mut rows = Vec::new();
    for &(n, seeds) in crash_sizes {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for seed in 1..=seeds {
            let (crashes, last) = quic_crash(n, seed)?;
            ours.extend(last);
            theirs.extend(datagram_crash(n, seed, &crashes)?);
        }
        rows.push(
            Row::new(
                "failure-detection",
                &format!(
                    "N = {n}: crash reported by every observer, {} crashes in {seeds} seeds",
                    ours.len()
                ),
                "s",
                Better::Lower,
                Sample::of(&ours),
            )
            .against(BASELINE, Sample::of(&theirs)),
        );
    }
    let minutes = ctx.size(10, 10);
    let (n, seeds) = (10, ctx.size(3, 1));
    let duration = Duration::from_secs(60 * minutes);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for seed in 1..=seeds {
        ours.push(quic_steady(n, seed, duration)?);
        theirs.push(datagram_steady(n, seed, duration)?);
    }
    rows.push(
        Row::new(
            "failure-detection",
            &format!(
                "N = {n}: false positives in {minutes} steady minutes, per seed, {seeds} seeds"
            ),
            "failed events",
            Better::Lower,
            Sample::of(&ours),
        )
        .against(BASELINE, Sample::of(&theirs)),
    );
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_map_to_indexes() {
        assert_eq!(node_index("n1").unwrap(), 0);
        assert_eq!(node_index("n100").unwrap(), 99);
        assert!(node_index("n0").is_err());
        assert!(node_index("x3").is_err());
    }

    #[test]
    fn only_failed_member_events_count() {
        let trace: Vec<String> = [
            "    12.500000 n2 member failed n3 generation=1 status=joining live=false",
            "    12.500000 n2 member joined n3 generation=1 status=joining live=true",
            "    13.000000 n3 node.crash generation=1",
            "    14.000000 - member failed n4",
            "    14.000000 n5 ask #3 failed timeout",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(failed_events(&trace), 2);
    }

    #[test]
    fn the_datagram_baseline_detects_a_crash_at_ten_nodes() {
        let last = datagram_crash(10, 1, &[(3, Duration::from_secs(15))]).unwrap();
        assert_eq!(last.len(), 1);
        assert!(last[0] > 0.0 && last[0] < 20.0, "{last:?}");
    }
}
