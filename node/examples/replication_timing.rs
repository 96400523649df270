//! Measures replication on this machine, in-process nodes over QUIC on loopback, each with
//! its own redb data directory:
//!
//! 1. replicated writes: throughput and p50/p99 latency of counter adds at R = 3 against
//!    the same workload at R = 1, the two clusters run alternately in the same process;
//! 2. handoff: seconds until a joining fourth node holds its share of 10 000 entities of
//!    1 KiB (every replica it is given installed), and the rate;
//! 3. failover: seconds from a primary's crash to its keys answering again, split into the
//!    removal (failure detection + `down_after`) and the recovery after it.
//!
//! ```text
//! cargo run --release -p shoal --example replication_timing
//! ```
//!
//! Absolute figures drift with the machine's load; compare the ratios.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use shoal::entity::builtin::{Counter, CounterCommand, Kv, KvCommand};
use shoal::sharding::{ShardId, shard_of};
use shoal::transport::ClusterCa;
use shoal::{Node, NodeBuilder, loopback};

#[derive(Parser)]
struct Args {
    /// Seconds of writes per measurement.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Concurrent writers.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Alternating repetitions of the R = 1 and R = 3 measurements.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Entities moved in the handoff measurement.
    #[arg(long, default_value_t = 10_000)]
    entities: usize,
}

struct Cluster {
    nodes: Vec<Node>,
    _dirs: Vec<tempfile::TempDir>,
}

async fn start(
    ca: &ClusterCa,
    name: &str,
    seeds: &[&Node],
    replicas: u32,
    down_after: Duration,
) -> anyhow::Result<(Node, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let mut config = loopback::config(name, seeds);
    config.gossip_interval = Duration::from_millis(200);
    config.replicas = replicas;
    config.down_after = down_after;
    config.data_dir = Some(dir.path().to_path_buf());
    Ok((loopback::start(NodeBuilder::new(config), ca).await?, dir))
}

async fn cluster(
    ca: &ClusterCa,
    n: usize,
    replicas: u32,
    down_after: Duration,
) -> anyhow::Result<Cluster> {
    let mut nodes: Vec<Node> = Vec::new();
    let mut dirs = Vec::new();
    for i in 1..=n {
        let seeds: Vec<&Node> = nodes.iter().take(1).collect();
        let (node, dir) = start(ca, &format!("n{i}"), &seeds, replicas, down_after).await?;
        nodes.push(node);
        dirs.push(dir);
    }
    let c = Cluster { nodes, _dirs: dirs };
    loopback::wait_serving(&c.nodes.iter().collect::<Vec<_>>()).await;
    Ok(c)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

/// `clients` writers adding to their own counters through every node for `secs`.
async fn writes(c: &Cluster, clients: usize, secs: f64) -> (f64, Duration, Duration) {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for k in 0..clients {
        let node = c.nodes[k % c.nodes.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let key = format!("w{k}");
            while Instant::now() < until {
                let t = Instant::now();
                if node
                    .ask::<Counter>(&key, CounterCommand::Add(1))
                    .await
                    .is_ok()
                {
                    lat.push(t.elapsed());
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    all.sort();
    (
        all.len() as f64 / secs,
        percentile(&all, 0.5),
        percentile(&all, 0.99),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let ca = ClusterCa::generate("timing")?;
    let slow = Duration::from_secs(600);

    // 1. Replicated writes, R = 1 and R = 3 alternately.
    let one = cluster(&ca, 3, 1, slow).await?;
    let three = cluster(&ca, 3, 3, slow).await?;
    writes(&one, args.clients, 1.0).await;
    writes(&three, args.clients, 1.0).await;
    let (mut r1, mut r3) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        r1.push(writes(&one, args.clients, args.secs).await);
        r3.push(writes(&three, args.clients, args.secs).await);
    }
    println!(
        "replicated writes ({} clients, {} rounds of {}s, medians):",
        args.clients, args.rounds, args.secs
    );
    for (name, runs) in [("R = 1", &r1), ("R = 3", &r3)] {
        println!(
            "  {name}: {:>8.0} writes/s   p50 {:>6.2} ms   p99 {:>6.2} ms",
            median(runs.iter().map(|r| r.0).collect()),
            median(runs.iter().map(|r| r.1.as_secs_f64() * 1e3).collect()),
            median(runs.iter().map(|r| r.2.as_secs_f64() * 1e3).collect()),
        );
    }
    let ratio = median(r3.iter().map(|r| r.0).collect()) / median(r1.iter().map(|r| r.0).collect());
    println!("  R = 3 throughput / R = 1: {ratio:.2}");
    for n in one.nodes.iter().chain(&three.nodes) {
        n.stop().await;
    }
    drop((one, three));

    // 2. Handoff of `entities` × 1 KiB to a joining node.
    let mut c = cluster(&ca, 3, 3, slow).await?;
    // A JSON string of 1 KiB (the kv kind stores JSON).
    let value = format!("\"{}\"", "x".repeat(1022));
    let writers = 64;
    let per = args.entities.div_ceil(writers);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let node = c.nodes[w % 3].clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w * per)..((w + 1) * per) {
                node.ask::<Kv>(&format!("e{i}"), KvCommand::Put(value.clone()))
                    .await
                    .map(|_| ())?;
            }
            Ok::<(), shoal::entity::AskError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    println!(
        "handoff: wrote {} entities of 1 KiB in {:.1}s",
        writers * per,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let (n4, dir) = start(&ca, "n4", &[&c.nodes[0]], 3, slow).await?;
    c.nodes.push(n4.clone());
    c._dirs.push(dir);
    let (moved, took) = loop {
        if let Some((epoch, table)) = n4.entities().table()
            && table.replicas_per_member().contains_key("n4")
        {
            let mine: Vec<u32> = (0..table.shards())
                .filter(|s| table.replicas(ShardId(*s)).any(|r| r == "n4"))
                .collect();
            let done = mine
                .iter()
                .all(|s| n4.entities().replica_summary(ShardId(*s)).meta.installed >= epoch);
            if done
                && n4.entities().serving().len()
                    == table.primaries_per_member().get("n4").copied().unwrap_or(0)
            {
                let entities: usize = mine
                    .iter()
                    .map(|s| n4.entities().replica_summary(ShardId(*s)).entities)
                    .sum();
                break (entities, t.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let mb = moved as f64 * 1024.0 / 1e6;
    println!(
        "  n4 joined and holds {moved} entities ({mb:.1} MB) after {:.2}s: {:.1} MB/s (join commit included)",
        took.as_secs_f64(),
        mb / took.as_secs_f64()
    );
    for n in &c.nodes {
        n.stop().await;
    }
    drop(c);

    // 3. Failover: a primary crashes; its keys answer again once it is removed and its
    // shards recovered from the survivors.
    let down_after = Duration::from_secs(2);
    let c = cluster(&ca, 4, 3, down_after).await?;
    let victim = c.nodes[3].clone();
    let (_, table) = c.nodes[0].entities().table().expect("a table");
    let keys: Vec<String> = (0..2000)
        .map(|i| format!("f{i}"))
        .filter(|k| {
            let s = shard_of("counter", k.as_bytes(), table.shards());
            table.primary(s) == Some("n4")
        })
        .take(50)
        .collect();
    for k in &keys {
        c.nodes[0].ask::<Counter>(k, CounterCommand::Add(1)).await?;
    }
    let epoch = c.nodes[0].entities().table().map_or(0, |t| t.0);
    let t = Instant::now();
    victim.stop().await;
    let survivors: Arc<Vec<Node>> = Arc::new(c.nodes[..3].to_vec());
    let mut removed = None;
    loop {
        if removed.is_none() && survivors[0].entities().table().is_some_and(|t| t.0 > epoch) {
            removed = Some(t.elapsed());
        }
        if removed.is_some() {
            let mut all = true;
            for k in &keys {
                let r = survivors[0]
                    .ask_timeout::<Counter>(k, CounterCommand::Get, Duration::from_millis(500))
                    .await;
                if r != Ok(1) {
                    all = false;
                    break;
                }
            }
            if all {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let serving = t.elapsed();
    let removed = removed.unwrap_or_default();
    println!(
        "failover (4 nodes, down_after {down_after:?}): the primary of {} keys crashed; removal committed after {:.2}s, its keys answered again after {:.2}s (recovery {:.2}s)",
        keys.len(),
        removed.as_secs_f64(),
        serving.as_secs_f64(),
        (serving - removed).as_secs_f64()
    );
    for n in survivors.iter() {
        n.stop().await;
    }
    Ok(())
}
