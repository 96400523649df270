//! One node, the built-in counter: `tell` throughput and `ask` round trips, next to the same
//! work on raw tokio channels (the floor) and on actix, ractor and kameo.

use std::time::{Duration, Instant};

use shoal::entity::builtin::{Counter, CounterCommand};
use shoal::transport::ClusterCa;
use shoal::{Node, NodeBuilder, loopback};

use super::Ctx;
use super::peers::{PEERS, Work};
use super::shoal_asks;
use crate::measure::{micros, quantile, runtime};
use crate::report::{Better, Row, Sample};

/// A node on loopback (in-memory store) and the runtime that drives it.
pub struct LocalNode {
    pub rt: tokio::runtime::Runtime,
    pub node: Node,
}

impl LocalNode {
    pub fn start() -> anyhow::Result<Self> {
        let rt = runtime();
        let node = rt.block_on(async {
            let ca = ClusterCa::generate("bench")?;
            let node =
                loopback::start(NodeBuilder::new(loopback::config("bench", &[])), &ca).await?;
            loopback::wait_serving(&[&node]).await;
            anyhow::Ok(node)
        })?;
        Ok(Self { rt, node })
    }

    /// Delivered messages per second (`Add(1)` told, done when every counter shows its
    /// share), and the share dropped by a full mailbox.
    fn tell(&self, w: &Work) -> anyhow::Result<(f64, f64)> {
        let node = &self.node;
        self.rt.block_on(async {
            let dropped = || node.entities().tells_dropped();
            let before = dropped();
            let t = Instant::now();
            for i in 0..w.messages {
                node.tell::<Counter>(&w.keys[i % w.keys.len()], CounterCommand::Add(1));
            }
            shoal_asks::delivered(node, w.keys, w.messages as u64, t, dropped, before).await
        })
    }

    fn timed_asks(&self, w: &Work) -> anyhow::Result<Vec<Duration>> {
        self.rt
            .block_on(shoal_asks::timed(&self.node, w.keys, w.messages))
    }

    fn ask_rate(&self, w: &Work, callers: usize) -> anyhow::Result<f64> {
        self.rt
            .block_on(shoal_asks::rate(&self.node, w.keys, w.messages, callers))
    }

    pub fn stop(self) {
        self.rt.block_on(self.node.stop());
    }
}

/// Keys `{prefix}-0 .. {prefix}-{n-1}`.
fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

pub fn tell(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let shoal = LocalNode::start()?;
    let messages = ctx.size(1_000_000, 200_000);
    let mut rows = Vec::new();
    for entities in [1usize, 100_000] {
        let (mut ours, mut drops) = (Vec::new(), Vec::new());
        let mut theirs: Vec<Vec<f64>> = vec![Vec::new(); PEERS.len()];
        // A warm-up round, then measured rounds; each round runs everyone once, in turn,
        // on fresh counters.
        for rep in 0..=ctx.reps() {
            let ks = keys(&format!("t{entities}r{rep}"), entities);
            let w = Work {
                keys: &ks,
                messages,
            };
            let (ours_now, lost) = shoal.tell(&w)?;
            let theirs_now: Vec<f64> = PEERS.iter().map(|p| (p.tell)(&w)).collect();
            if rep > 0 {
                ours.push(ours_now);
                drops.push(lost);
                for (all, now) in theirs.iter_mut().zip(theirs_now) {
                    all.push(now);
                }
            }
        }
        let figure = format!(
            "{entities} entit{}",
            if entities == 1 { "y" } else { "ies" }
        );
        for (peer, samples) in PEERS.iter().zip(&theirs) {
            let row = Row::new(
                "local-tell",
                &figure,
                "messages/s",
                Better::Higher,
                Sample::of(&ours),
            )
            .against(peer.name, Sample::of(samples));
            let ratio = row.ratio.unwrap_or(0.0);
            rows.push(if peer.name == "tokio mpsc" {
                row.target("≥ 0.5× the tokio floor", ratio >= 0.5)
            } else {
                row.target(format!("faster than {}", peer.name), ratio > 1.0)
            });
        }
        rows.push(Row::new(
            "local-tell",
            &format!("{figure}, dropped by a full mailbox"),
            "share of sent",
            Better::Lower,
            Sample::of(&drops),
        ));
    }
    shoal.stop();
    Ok(rows)
}

pub fn ask(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let shoal = LocalNode::start()?;
    let ks = keys("ask", 1000);
    let sequential = Work {
        keys: &ks,
        messages: ctx.size(100_000, 20_000),
    };
    let concurrent = Work {
        keys: &ks,
        messages: ctx.size(640_000, 64_000),
    };
    let peers: Vec<_> = PEERS.iter().filter(|p| p.ask.is_some()).collect();
    let (mut p50, mut p99, mut rate) = (Vec::new(), Vec::new(), Vec::new());
    let mut theirs: Vec<[Vec<f64>; 3]> = vec![Default::default(); peers.len()];
    for rep in 0..=ctx.reps() {
        let lat = shoal.timed_asks(&sequential)?;
        let r = shoal.ask_rate(&concurrent, 64)?;
        let mut now = Vec::new();
        for p in &peers {
            let mut l = (p.ask.expect("filtered"))(&sequential);
            l.sort();
            let r = (p.ask_throughput.expect("filtered"))(&concurrent, 64);
            now.push([micros(quantile(&l, 0.5)), micros(quantile(&l, 0.99)), r]);
        }
        if rep > 0 {
            p50.push(micros(quantile(&lat, 0.5)));
            p99.push(micros(quantile(&lat, 0.99)));
            rate.push(r);
            for (all, n) in theirs.iter_mut().zip(now) {
                for i in 0..3 {
                    all[i].push(n[i]);
                }
            }
        }
    }
    let mut rows = Vec::new();
    for (p, t) in peers.iter().zip(&theirs) {
        rows.push(
            Row::new(
                "local-ask",
                "p50, 1 caller",
                "µs",
                Better::Lower,
                Sample::of(&p50),
            )
            .against(p.name, Sample::of(&t[0])),
        );
        rows.push(
            Row::new(
                "local-ask",
                "p99, 1 caller",
                "µs",
                Better::Lower,
                Sample::of(&p99),
            )
            .against(p.name, Sample::of(&t[1])),
        );
        rows.push(
            Row::new(
                "local-ask",
                "64 callers",
                "asks/s",
                Better::Higher,
                Sample::of(&rate),
            )
            .against(p.name, Sample::of(&t[2])),
        );
    }
    shoal.stop();
    Ok(rows)
}
