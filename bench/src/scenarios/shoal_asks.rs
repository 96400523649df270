//! `Get` asks to counters through one Shoal node, the same way for the local and the remote
//! scenarios: sequential round trips from one caller, and throughput from many.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal::Node;
use shoal::entity::builtin::{Counter, CounterCommand};

/// `n` sequential asks spread over `keys`, each timed; sorted.
pub async fn timed(node: &Node, keys: &[String], n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        node.ask::<Counter>(&keys[i % keys.len()], CounterCommand::Get)
            .await?;
        lat.push(t.elapsed());
    }
    lat.sort();
    Ok(lat)
}

/// Asks per second: `n` asks shared by `callers` concurrent callers.
pub async fn rate(node: &Node, keys: &[String], n: usize, callers: usize) -> anyhow::Result<f64> {
    let keys = Arc::new(keys.to_vec());
    let per = n / callers;
    let t = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let (node, keys) = (node.clone(), keys.clone());
            tokio::spawn(async move {
                for i in 0..per {
                    let k = &keys[(c * 31 + i) % keys.len()];
                    node.ask::<Counter>(k, CounterCommand::Get).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok((per * callers) as f64 / t.elapsed().as_secs_f64())
}
