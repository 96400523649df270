//! Replicated counter writes on three nodes (redb data directories, QUIC on loopback): R = 3
//! against the same workload at R = 1, the two clusters measured alternately.

use shoal::transport::ClusterCa;

use super::Ctx;
use super::cluster::Cluster;
use crate::measure::{micros, runtime};
use crate::report::{Better, Row, Sample};

const CLIENTS: usize = 64;

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let secs = ctx.size(5.0, 1.0);
    let rt = runtime();
    let (r1, r3) = rt.block_on(async {
        let ca = ClusterCa::generate("bench")?;
        let one = Cluster::start(&ca, 3, 1).await?;
        let three = Cluster::start(&ca, 3, 3).await?;
        let (mut r1, mut r3) = (Vec::new(), Vec::new());
        for rep in 0..=ctx.reps() {
            let a = one.writes(CLIENTS, secs).await;
            let b = three.writes(CLIENTS, secs).await;
            if rep > 0 {
                r1.push(a);
                r3.push(b);
            }
        }
        one.stop().await;
        three.stop().await;
        anyhow::Ok((r1, r3))
    })?;
    let pick = |runs: &[(f64, std::time::Duration, std::time::Duration)], i: usize| {
        Sample::of(
            &runs
                .iter()
                .map(|r| match i {
                    0 => r.0,
                    1 => micros(r.1) / 1e3,
                    _ => micros(r.2) / 1e3,
                })
                .collect::<Vec<_>>(),
        )
    };
    let figure = format!("R = 3, {CLIENTS} writers");
    let throughput = Row::new(
        "replicated-write",
        &figure,
        "writes/s",
        Better::Higher,
        pick(&r3, 0),
    )
    .against("R = 1", pick(&r1, 0));
    let met = throughput.ratio.unwrap_or(0.0) >= 0.5;
    Ok(vec![
        throughput.target("≥ 0.5× R = 1", met),
        Row::new(
            "replicated-write",
            &format!("{figure}, p50"),
            "ms",
            Better::Lower,
            pick(&r3, 1),
        )
        .against("R = 1", pick(&r1, 1)),
        Row::new(
            "replicated-write",
            &format!("{figure}, p99"),
            "ms",
            Better::Lower,
            pick(&r3, 2),
        )
        .against("R = 1", pick(&r1, 2)),
    ])
}
