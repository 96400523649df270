//! Measures entity messaging on this machine: `ask` latency and `tell` throughput on one
//! node, and `ask` latency and throughput between two nodes over QUIC on loopback.
//!
//! ```text
//! cargo run --release -p shoal --example entity_timing
//! ```
//!
//! Figures are absolute and drift with the machine's load; `shoal-bench` (issue 7) reports
//! them as ratios against baselines run side by side.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal::entity::builtin::{Counter, CounterCommand};
use shoal::sharding::shard_of;
use shoal::transport::ClusterCa;
use shoal::{Node, NodeBuilder, loopback};

async fn start(ca: &ClusterCa, name: &str, seeds: &[&Node]) -> anyhow::Result<Node> {
    let mut config = loopback::config(name, seeds);
    config.gossip_interval = Duration::from_millis(200);
    Ok(loopback::start(NodeBuilder::new(config), ca).await?)
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[v.len() * 99 / 100])
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let ca = ClusterCa::generate("timing")?;
    let a = start(&ca, "a", &[]).await?;
    loopback::wait_serving(&[&a]).await;

    // One node.
    for i in 0..1000 {
        a.ask::<Counter>(&format!("w{i}"), CounterCommand::Add(1))
            .await?;
    }
    let mut lat = Vec::new();
    for i in 0..20_000 {
        let t = Instant::now();
        a.ask::<Counter>(&format!("w{}", i % 1000), CounterCommand::Add(1))
            .await?;
        lat.push(t.elapsed());
    }
    let (p50, p99) = percentiles(lat);
    println!("local ask (1 node, 1000 entities): p50 {p50:?}, p99 {p99:?}");
    for keys in [1usize, 1000] {
        let n = 500_000usize;
        let t = Instant::now();
        for i in 0..n {
            a.tell::<Counter>(&format!("t{keys}-{}", i % keys), CounterCommand::Add(1));
        }
        // Done when every counter has its share.
        for k in 0..keys {
            while a
                .ask::<Counter>(&format!("t{keys}-{k}"), CounterCommand::Get)
                .await?
                < (n / keys) as i64
            {
                tokio::task::yield_now().await;
            }
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "local tell ({keys} entities): {:.0} messages/s",
            n as f64 / secs
        );
    }

    // Two nodes: b owns about half the shards; ask from a to entities on b.
    let b = start(&ca, "b", &[&a]).await?;
    loopback::wait_serving(&[&a, &b]).await;
    let (_, table) = a.entities().table().expect("a table");
    let remote: Vec<String> = (0..100_000)
        .map(|i| format!("r{i}"))
        .filter(|id| table.primary(shard_of("counter", id.as_bytes(), 1024)) == Some("b"))
        .take(1000)
        .collect();
    for id in &remote {
        a.ask::<Counter>(id, CounterCommand::Add(1)).await?;
    }
    let mut lat = Vec::new();
    for i in 0..10_000 {
        let t = Instant::now();
        a.ask::<Counter>(&remote[i % remote.len()], CounterCommand::Add(1))
            .await?;
        lat.push(t.elapsed());
    }
    let (p50, p99) = percentiles(lat);
    println!("remote ask (a to b, loopback): p50 {p50:?}, p99 {p99:?}");
    let remote = Arc::new(remote);
    let t = Instant::now();
    let per = 2_000;
    let mut tasks = Vec::new();
    for w in 0..64 {
        let (a, remote) = (a.clone(), remote.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                a.ask::<Counter>(&remote[(w * 31 + i) % remote.len()], CounterCommand::Add(1))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    println!(
        "remote ask throughput (64 concurrent askers): {:.0} asks/s",
        (64 * per) as f64 / t.elapsed().as_secs_f64()
    );
    a.stop().await;
    b.stop().await;
    Ok(())
}
