//! Simulator speed: simulated seconds per wall second of the `steady` scenario with the full
//! QUIC stack (real `shoal::Node`s: quinn, rustls, chitchat, the configuration protocol, the
//! entity runtime) and the default client workload, as `shoal-sim run --scenario steady
//! --nodes N --duration D` runs it. Each repetition is another seed; the figure covers the
//! whole run (formation, the steady phase and the final checks).

use std::time::Duration;

use shoal_sim::runner::{self, RunOptions};

use super::Ctx;
use crate::report::{Better, Row, Sample};

/// One run: simulated seconds per wall second.
fn speed(nodes: usize, duration: Duration, seed: u64) -> anyhow::Result<f64> {
    let mut opts = RunOptions::new("steady", seed);
    opts.nodes = Some(nodes);
    opts.duration = Some(duration);
    let report = runner::run(opts)?;
    anyhow::ensure!(
        report.passed(),
        "steady, {nodes} nodes, seed {seed} failed: {}",
        report
            .violations
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    );
    Ok(report.simulated_secs / report.wall_secs.max(1e-9))
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let duration = Duration::from_secs(ctx.size(120, 60));
    let sizes = [5usize, 10, 30];
    let mut rows = Vec::new();
    for nodes in sizes {
        // Fewer repetitions of the slowest size: its runs vary less than the machine does.
        let reps = if nodes >= 30 {
            ctx.reps().min(3)
        } else {
            ctx.reps()
        };
        let speeds = (1..=reps as u64)
            .map(|seed| speed(nodes, duration, seed))
            .collect::<anyhow::Result<Vec<f64>>>()?;
        let row = Row::new(
            "sim-speed",
            &format!(
                "{nodes} QUIC nodes, steady with workload, {} simulated s",
                duration.as_secs()
            ),
            "× real time",
            Better::Higher,
            Sample::of(&speeds),
        );
        rows.push(if nodes == 10 {
            let met = row.shoal.median >= 100.0;
            row.target("≥ 100× real time at 10 nodes", met)
        } else {
            row
        });
    }
    Ok(rows)
}
