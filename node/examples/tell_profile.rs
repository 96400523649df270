//! Local tells alone in a process, for `perf`: `cargo run --release -p shoal --example
//! tell_profile -- ENTITIES MESSAGES` tells `Add(1)` round-robin to ENTITIES counters, three
//! rounds on fresh keys, and prints the send and delivery rates of each round.
use std::time::Instant;

use shoal::entity::builtin::{Counter, CounterCommand};
use shoal::transport::ClusterCa;
use shoal::{NodeBuilder, loopback};

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let entities: usize = std::env::args().nth(1).map_or(1, |s| s.parse().unwrap());
    let n: usize = std::env::args()
        .nth(2)
        .map_or(5_000_000, |s| s.parse().unwrap());
    rt.block_on(async {
        let ca = ClusterCa::generate("p")?;
        let node = loopback::start(NodeBuilder::new(loopback::config("p", &[])), &ca).await?;
        loopback::wait_serving(&[&node]).await;
        for round in 0..3 {
            let keys: Vec<String> = (0..entities).map(|i| format!("r{round}-{i}")).collect();
            let d0 = node.entities().tells_dropped();
            let t = Instant::now();
            for i in 0..n {
                node.tell::<Counter>(&keys[i % entities], CounterCommand::Add(1));
            }
            let sent = t.elapsed();
            // Done when every tell was delivered or counted as dropped by a full mailbox.
            let total = loop {
                let mut total = 0;
                for k in &keys {
                    total += node.ask::<Counter>(k, CounterCommand::Get).await?;
                }
                if total as u64 + node.entities().tells_dropped() - d0 >= n as u64 {
                    break total;
                }
                tokio::task::yield_now().await;
            };
            let all = t.elapsed();
            println!(
                "round {round}: sent {n} in {sent:?}; delivered {total} ({:.0}/s), dropped {} by full mailboxes",
                total as f64 / all.as_secs_f64(),
                node.entities().tells_dropped() - d0
            );
        }
        node.stop().await;
        anyhow::Ok(())
    })
}
