//! Two nodes on loopback: `a` tells and asks counters whose shards `b` owns (R = 1, so the
//! figure is messaging, not replication), next to a bare quinn connection carrying frames of
//! the same size: the transport's ceiling.

use std::time::{Duration, Instant};

use bytes::Bytes;
use shoal::entity::builtin::{Counter, CounterCommand};
use shoal::entity::wire::{EntityRef, EntityRequest};
use shoal::sharding::shard_of;
use shoal::transport::ClusterCa;
use shoal::{Node, NodeBuilder, loopback};

use super::Ctx;
use super::bare_quinn::BareQuinn;
use super::shoal_asks;
use crate::measure::{micros, quantile, runtime};
use crate::report::{Better, Row, Sample};

struct Pair {
    rt: tokio::runtime::Runtime,
    a: Node,
    b: Node,
}

impl Pair {
    fn start() -> anyhow::Result<Self> {
        let rt = runtime();
        let (a, b) = rt.block_on(async {
            let ca = ClusterCa::generate("bench")?;
            let start = |name: &str, seeds: &[&Node]| {
                let mut config = loopback::config(name, seeds);
                config.replicas = 1;
                config.gossip_interval = Duration::from_millis(200);
                loopback::start(NodeBuilder::new(config), &ca)
            };
            let a = start("a", &[]).await?;
            let b = start("b", &[&a]).await?;
            loopback::wait_serving(&[&a, &b]).await;
            anyhow::Ok((a, b))
        })?;
        Ok(Self { rt, a, b })
    }

    /// `n` counter ids whose primary is `b`, named `{prefix}-…`.
    fn keys_on_b(&self, prefix: &str, n: usize) -> Vec<String> {
        let (_, table) = self.a.entities().table().expect("a shard table");
        (0..)
            .map(|i| format!("{prefix}-{i}"))
            .filter(|id| {
                table.primary(shard_of("counter", id.as_bytes(), table.shards())) == Some("b")
            })
            .take(n)
            .collect()
    }

    /// Delivered tells per second, and the share of tells dropped by a full queue (tells
    /// are at most once; every one sent is either delivered or counted as dropped).
    fn tell(&self, keys: &[String], messages: usize) -> anyhow::Result<(f64, f64)> {
        let (a, b) = (&self.a, &self.b);
        self.rt.block_on(async {
            let dropped = || a.entities().tells_dropped() + b.entities().tells_dropped();
            let dropped_before = dropped();
            let t = Instant::now();
            for i in 0..messages {
                a.tell::<Counter>(&keys[i % keys.len()], CounterCommand::Add(1));
            }
            shoal_asks::delivered(b, keys, messages as u64, t, dropped, dropped_before).await
        })
    }

    fn timed_asks(&self, keys: &[String], n: usize) -> anyhow::Result<Vec<Duration>> {
        self.rt.block_on(shoal_asks::timed(&self.a, keys, n))
    }

    fn ask_rate(&self, keys: &[String], n: usize, callers: usize) -> anyhow::Result<f64> {
        self.rt
            .block_on(shoal_asks::rate(&self.a, keys, n, callers))
    }

    fn stop(self) {
        self.rt.block_on(async {
            self.a.stop().await;
            self.b.stop().await;
        });
    }
}

/// Bytes of the frame carrying a tell of `Add(1)` to counter `id`: the length prefix, the
/// frame's variant and service, the body's length and the encoded request.
fn tell_frame_len(id: &str) -> anyhow::Result<usize> {
    let command = postcard::to_allocvec(&CounterCommand::Add(1))?;
    let req = EntityRequest {
        target: EntityRef::new("counter", id),
        command: Bytes::from(command),
        chain: Vec::new(),
        epoch: 2,
        forwarded: false,
    };
    let body = postcard::to_allocvec(&req)?.len();
    Ok(4 + 1 + 1 + 1 + body)
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let shoal = Pair::start()?;
    let bare = BareQuinn::start()?;
    // A million tells: the lane to `b` fills while `a` tells faster than `b` takes them in,
    // and what does not fit is dropped and counted (reported as a row of its own).
    let messages = ctx.size(1_000_000, 100_000);
    let asks = ctx.size(20_000, 4_000);
    let concurrent = ctx.size(320_000, 32_000);
    let ask_keys = shoal.keys_on_b("ask", 1000);
    let len = tell_frame_len(&ask_keys[0])?;
    let mut m: [Vec<f64>; 11] = Default::default();
    for rep in 0..=ctx.reps() {
        let keys = shoal.keys_on_b(&format!("tell{rep}"), 1000);
        let (delivered, dropped) = shoal.tell(&keys, messages)?;
        let now = [delivered, bare.tell(messages, len)?];
        let ours = shoal.timed_asks(&ask_keys, asks)?;
        let theirs = bare.timed_asks(asks, len)?;
        let rates = [
            shoal.ask_rate(&ask_keys, concurrent, 64)?,
            bare.ask_rate(concurrent, len, 64)?,
        ];
        if rep == 0 {
            continue;
        }
        let values = [
            now[0],
            now[1],
            micros(quantile(&ours, 0.5)),
            micros(quantile(&theirs, 0.5)),
            micros(quantile(&ours, 0.99)),
            micros(quantile(&theirs, 0.99)),
            rates[0],
            rates[1],
            now[0] * len as f64 / 1e6,
            now[1] * len as f64 / 1e6,
            dropped,
        ];
        for (all, v) in m.iter_mut().zip(values) {
            all.push(v);
        }
    }
    shoal.stop();
    bare.stop();
    let base = "bare quinn";
    let tell = Row::new(
        "remote",
        &format!("tell, {len}-byte frames, 1000 entities"),
        "messages/s",
        Better::Higher,
        Sample::of(&m[0]),
    )
    .against(base, Sample::of(&m[1]));
    let tell_ok = tell.ratio.unwrap_or(0.0) >= 0.5 && tell.shoal.median >= 1e6;
    let p50 = Row::new(
        "remote",
        "ask p50, 1 caller",
        "µs",
        Better::Lower,
        Sample::of(&m[2]),
    )
    .against(base, Sample::of(&m[3]));
    let p50_ok = p50.shoal.median <= 100.0;
    let p99 = Row::new(
        "remote",
        "ask p99, 1 caller",
        "µs",
        Better::Lower,
        Sample::of(&m[4]),
    )
    .against(base, Sample::of(&m[5]));
    let p99_ok = p99.shoal.median <= 1000.0;
    Ok(vec![
        tell.target("≥ 0.5× bare quinn and ≥ 1 M messages/s", tell_ok),
        Row::new(
            "remote",
            "tell, payload rate",
            "MB/s",
            Better::Higher,
            Sample::of(&m[8]),
        )
        .against(base, Sample::of(&m[9])),
        Row::new(
            "remote",
            "tell, dropped by full queues",
            "share of sent",
            Better::Lower,
            Sample::of(&m[10]),
        ),
        p50.target("≤ 100 µs", p50_ok),
        p99.target("≤ 1 ms", p99_ok),
        Row::new(
            "remote",
            "ask, 64 callers",
            "asks/s",
            Better::Higher,
            Sample::of(&m[6]),
        )
        .against(base, Sample::of(&m[7])),
    ])
}
