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

/// Waits until every one of `sent` tells (started at `t`) to counters `keys` is either
/// delivered (the counters' sum, asked through `owner`) or counted as dropped by a full
/// queue (`dropped()`, from `dropped_before`); fails if more arrived than were sent or if
/// some are neither after [`super::DRAIN_TIMEOUT`]. Returns delivered tells per second and
/// the share of tells dropped.
pub async fn delivered(
    owner: &Node,
    keys: &[String],
    sent: u64,
    t: Instant,
    dropped: impl Fn() -> u64,
    dropped_before: u64,
) -> anyhow::Result<(f64, f64)> {
    loop {
        // The Gets queue behind every tell still in the mailboxes: a flood is seconds of
        // backlog, longer than the default ask timeout.
        let mut delivered = 0u64;
        for k in keys {
            delivered += owner
                .ask_timeout::<Counter>(k, CounterCommand::Get, super::DRAIN_TIMEOUT)
                .await? as u64;
        }
        let lost = dropped() - dropped_before;
        if delivered + lost >= sent {
            anyhow::ensure!(
                delivered + lost == sent,
                "{delivered} tells delivered and {lost} dropped of {sent} sent"
            );
            let elapsed = t.elapsed().as_secs_f64();
            return Ok((delivered as f64 / elapsed, lost as f64 / sent as f64));
        }
        anyhow::ensure!(
            t.elapsed() < super::DRAIN_TIMEOUT,
            "tells were lost: {delivered} delivered and {lost} dropped of {sent} after {:?}",
            super::DRAIN_TIMEOUT
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
