//! Live state moving to a joining node: 10 000 kv entities of 1 KiB on three
//! nodes (R = 3), a fourth joins; the figure is the time until it holds its whole share
//! (every replica it is given installed, every shard it is primary of served), join commit
//! included, split at the commit of the join (membership) and the state transfer after it.
//! Baseline: a bare quinn stream moving the same number of bytes (no disk).

use std::time::{Duration, Instant};

use shoal::Node;
use shoal::entity::builtin::{Kv, KvCommand};
use shoal::sharding::ShardId;
use shoal::transport::ClusterCa;

use super::Ctx;
use super::bare_quinn::BareQuinn;
use super::cluster::Cluster;
use crate::measure::runtime;
use crate::report::{Better, Row, Sample};

const WRITERS: usize = 64;

/// Writes `entities` kv entities of 1 KiB through the cluster's nodes.
async fn fill(c: &Cluster, entities: usize) -> anyhow::Result<()> {
    // A JSON string of 1 KiB (the kv kind stores JSON).
    let value = format!("\"{}\"", "x".repeat(1022));
    let per = entities.div_ceil(WRITERS);
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let node = c.nodes[w % c.nodes.len()].clone();
            let value = value.clone();
            tokio::spawn(async move {
                for i in (w * per)..((w + 1) * per).min(entities) {
                    node.ask::<Kv>(&format!("e{i}"), KvCommand::Put(value.clone()))
                        .await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Waits until `node` holds every replica the table gives it and serves every shard it is
/// primary of; returns the entities it holds and when its table first had it as a member
/// (the join committed and reached it: the state transfer starts there).
async fn holds_its_share(node: &Node) -> (usize, Instant) {
    let name = node.name().to_string();
    let mut committed = None;
    loop {
        if let Some((epoch, table)) = node.entities().table()
            && table.replicas_per_member().contains_key(name.as_str())
        {
            let committed = *committed.get_or_insert_with(Instant::now);
            let mine: Vec<u32> = (0..table.shards())
                .filter(|s| table.replicas(ShardId(*s)).any(|r| r == name))
                .collect();
            let installed = mine
                .iter()
                .all(|s| node.entities().replica_summary(ShardId(*s)).meta.installed >= epoch);
            let primaries = table
                .primaries_per_member()
                .get(name.as_str())
                .copied()
                .unwrap_or(0);
            if installed && node.entities().serving().len() == primaries {
                let held = mine
                    .iter()
                    .map(|s| node.entities().replica_summary(ShardId(*s)).entities)
                    .sum();
                return (held, committed);
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let entities = ctx.size(10_000, 2_000);
    let bare = BareQuinn::start()?;
    let (mut secs, mut rate, mut base_secs, mut base_rate) = (vec![], vec![], vec![], vec![]);
    let (mut join_secs, mut moving_secs) = (vec![], vec![]);
    for _ in 0..ctx.reps().min(3) {
        let rt = runtime();
        let (moved, took, joined) = rt.block_on(async {
            let ca = ClusterCa::generate("bench")?;
            let mut c = Cluster::start(&ca, 3, 3).await?;
            fill(&c, entities).await?;
            let t = Instant::now();
            let joiner = c.join(&ca, "n4", 3).await?;
            let (moved, committed) = holds_its_share(&joiner).await;
            let took = t.elapsed().as_secs_f64();
            c.stop().await;
            anyhow::Ok((moved, took, (committed - t).as_secs_f64()))
        })?;
        drop(rt);
        let mb = moved as f64 * 1024.0 / 1e6;
        secs.push(took);
        join_secs.push(joined);
        moving_secs.push(took - joined);
        rate.push(mb / (took - joined));
        let b = bare.bulk(moved * 1024)?;
        base_secs.push(b);
        base_rate.push(mb / b);
    }
    bare.stop();
    let figure = format!("{entities} entities of 1 KiB, 3 → 4 nodes");
    let throughput = Row::new(
        "handoff",
        &format!("{figure}, state transfer after the join commit"),
        "MB/s",
        Better::Higher,
        Sample::of(&rate),
    )
    .against("quinn bulk", Sample::of(&base_rate));
    let met = throughput.ratio.unwrap_or(0.0) >= 0.5;
    Ok(vec![
        Row::new("handoff", &figure, "s", Better::Lower, Sample::of(&secs))
            .against("quinn bulk", Sample::of(&base_secs)),
        Row::new(
            "handoff",
            "of which: start to join committed",
            "s",
            Better::Lower,
            Sample::of(&join_secs),
        ),
        Row::new(
            "handoff",
            "of which: join committed to share held and served",
            "s",
            Better::Lower,
            Sample::of(&moving_secs),
        )
        .against("quinn bulk", Sample::of(&base_secs)),
        throughput.target("≥ 0.5× quinn bulk", met),
    ])
}
