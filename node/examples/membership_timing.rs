//! Measures, on loopback with real QUIC, how long N nodes take to converge and how long the
//! survivors take to report a killed node failed.
//!
//! ```text
//! cargo run --release -p shoal --example membership_timing -- --nodes 10 --runs 5
//! ```
//!
//! Convergence: from the moment all N nodes are started (each seeded with the first) until
//! every node sees all N live and `up`. Detection: from the moment one node stops gossiping
//! (no leave announced) until every survivor reports it `Failed` (first and last survivor).

use std::time::Duration;

use clap::Parser;
use shoal::membership::MembershipEvent;
use shoal::transport::ClusterCa;
use shoal::{Node, NodeBuilder, loopback};
use tokio::time::Instant;

#[derive(Parser)]
struct Args {
    /// Cluster size.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Repetitions (a fresh cluster each).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Gossip interval.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    gossip_interval: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut converge = Vec::new();
    let mut detect_first = Vec::new();
    let mut detect_last = Vec::new();
    for run in 1..=args.runs {
        let (c, first, last) = one_run(&args).await?;
        println!(
            "run {run}: converged in {:.2}s; failure detected after {:.2}s (first survivor) / {:.2}s (last)",
            c.as_secs_f64(),
            first.as_secs_f64(),
            last.as_secs_f64()
        );
        converge.push(c);
        detect_first.push(first);
        detect_last.push(last);
    }
    println!(
        "\nN = {}, gossip interval {:?}, phi threshold 8, {} runs:",
        args.nodes, args.gossip_interval, args.runs
    );
    println!("  convergence       {}", summary(&mut converge));
    println!("  detection (first) {}", summary(&mut detect_first));
    println!("  detection (last)  {}", summary(&mut detect_last));
    Ok(())
}

fn summary(v: &mut [Duration]) -> String {
    v.sort();
    format!(
        "median {:.2}s  min {:.2}s  max {:.2}s",
        v[v.len() / 2].as_secs_f64(),
        v[0].as_secs_f64(),
        v[v.len() - 1].as_secs_f64()
    )
}

async fn one_run(args: &Args) -> anyhow::Result<(Duration, Duration, Duration)> {
    let ca = ClusterCa::generate("timing")?;
    let mut nodes: Vec<Node> = Vec::new();
    let start = Instant::now();
    for i in 1..=args.nodes {
        let seeds: Vec<&Node> = nodes.first().into_iter().collect();
        let mut config = loopback::config(&format!("n{i}"), &seeds);
        config.gossip_interval = args.gossip_interval;
        nodes.push(loopback::start(NodeBuilder::new(config), &ca).await?);
    }
    for node in &nodes {
        let mut rx = node.membership().watch();
        tokio::time::timeout(
            Duration::from_secs(60),
            rx.wait_for(|v| v.up_names().len() == args.nodes),
        )
        .await??;
    }
    let converged = start.elapsed();

    let victim = nodes.pop().expect("at least one node");
    let victim_name = victim.name().to_string();
    let killed = Instant::now();
    // One watcher per survivor, each timing its own detection.
    let watchers: Vec<_> = nodes
        .iter()
        .map(|n| {
            let mut rx = n.membership().subscribe();
            let victim_name = victim_name.clone();
            tokio::spawn(tokio::time::timeout(Duration::from_secs(60), async move {
                loop {
                    if let MembershipEvent::Failed { member } = rx.recv().await?
                        && member.name == victim_name
                    {
                        return anyhow::Ok(killed.elapsed());
                    }
                }
            }))
        })
        .collect();
    victim.stop().await;
    drop(victim);
    let mut times = Vec::new();
    for w in watchers {
        times.push(w.await???);
    }
    for node in &nodes {
        node.stop().await;
    }
    times.sort();
    Ok((converged, times[0], times[times.len() - 1]))
}
