//! `shoal demo`: a local 3-node cluster that shows membership at work.
//!
//! Generates certificates in a temporary directory, starts three `shoal node` processes on
//! loopback, and narrates: convergence, a SIGKILL and its detection, the restart and rejoin
//! with a new generation, then a graceful stop of everything. Every figure printed is
//! measured, nothing is scripted.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;

use crate::api::ClusterInfo;
use crate::local_cluster::LocalCluster;

use super::status::table;

const NODES: [&str; 3] = ["n1", "n2", "n3"];
const STEP_LIMIT: Duration = Duration::from_secs(60);

struct Narrator {
    start: Instant,
    /// Last thing each node was reported to see, to print only changes.
    last: BTreeMap<String, String>,
}

impl Narrator {
    fn say(&self, msg: impl AsRef<str>) {
        println!(
            "[{:>5.1}s] {}",
            self.start.elapsed().as_secs_f64(),
            msg.as_ref()
        );
    }

    /// Prints what `observer` sees if it changed since last time.
    fn report(&mut self, observer: &str, info: &ClusterInfo) {
        let seen = describe(info);
        if self.last.get(observer) != Some(&seen) {
            self.say(format!("{observer} sees {seen}"));
            self.last.insert(observer.to_string(), seen);
        }
    }
}

fn describe(info: &ClusterInfo) -> String {
    let parts: Vec<String> = info
        .members
        .iter()
        .map(|m| {
            if m.live {
                format!("{} {}", m.name, m.status)
            } else {
                format!("{} FAILED", m.name)
            }
        })
        .collect();
    format!("epoch {} [{}]", info.epoch, parts.join(", "))
}

pub async fn run() -> anyhow::Result<()> {
    let binary = std::env::current_exe().context("locating the shoal binary")?;
    let mut cluster = LocalCluster::in_temp_dir(binary)?;
    let outcome = tokio::select! {
        r = script(&mut cluster) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    println!();
    println!("stopping every node with SIGTERM (each one leaves gracefully)…");
    cluster.stop_all().await;
    println!("all nodes stopped; removing {}", cluster.root().display());
    outcome
}

async fn script(cluster: &mut LocalCluster) -> anyhow::Result<()> {
    let mut n = Narrator {
        start: Instant::now(),
        last: BTreeMap::new(),
    };
    println!(
        "Shoal demo: three nodes on loopback; certificates and logs in {}\n",
        cluster.root().display()
    );
    cluster.add_node("n1", &[])?;
    cluster.add_node("n2", &["n1"])?;
    cluster.add_node("n3", &["n1"])?;
    n.say("cluster CA created; certificates issued to n1, n2, n3");
    for name in NODES {
        cluster.start(name)?;
        let node = cluster.node(name)?;
        let seeds = if node.seeds.is_empty() {
            "no seeds: it starts the cluster".to_string()
        } else {
            format!("seed {}", node.seeds[0])
        };
        n.say(format!(
            "started {name}: QUIC {}, HTTP {}, {seeds}",
            node.listen, node.http
        ));
    }

    // 1. Convergence.
    let t = Instant::now();
    watch(cluster, &mut n, &NODES, |_, info| info.up().len() == 3)
        .await
        .context("the cluster did not converge")?;
    n.say(format!(
        "converged: every node sees n1, n2, n3 live and up, members of one committed configuration ({:.1}s)",
        t.elapsed().as_secs_f64()
    ));
    println!("\n$ shoal status --http {}", cluster.node("n1")?.http);
    print!("{}", table(&cluster.cluster_info("n1").await?));
    println!();

    // 2. Failure detection.
    let old_generation = generation(cluster, "n1", "n3").await?;
    n.say("killing n3 with SIGKILL: no goodbye, the others must notice by themselves");
    cluster.kill("n3").await?;
    let t = Instant::now();
    let mut detected: BTreeMap<String, Duration> = BTreeMap::new();
    watch(cluster, &mut n, &["n1", "n2"], |observer, info| {
        let failed = info.member("n3").is_some_and(|m| !m.live);
        if failed && !detected.contains_key(observer) {
            detected.insert(observer.to_string(), t.elapsed());
        }
        failed
    })
    .await
    .context("the others did not detect the failure of n3")?;
    for (observer, after) in &detected {
        n.say(format!(
            "{observer} detected the failure of n3 {:.1}s after the kill",
            after.as_secs_f64()
        ));
    }

    // 3. Rejoin as a new generation.
    n.say("restarting n3 on the same address");
    cluster.start("n3")?;
    let t = Instant::now();
    watch(cluster, &mut n, &NODES, |_, info| {
        info.member("n3").is_some_and(|m| {
            m.live && m.status == "up" && m.member && m.generation > old_generation
        }) && info.up().len() == 3
    })
    .await
    .context("n3 did not rejoin")?;
    let new_generation = generation(cluster, "n1", "n3").await?;
    let epoch = cluster.cluster_info("n1").await?.epoch;
    n.say(format!(
        "n3 rejoined as generation {new_generation} (was {old_generation}); epoch {epoch} replaced its old incarnation; all nodes agree ({:.1}s)",
        t.elapsed().as_secs_f64()
    ));
    println!("\n$ shoal status --http {}", cluster.node("n2")?.http);
    print!("{}", table(&cluster.cluster_info("n2").await?));
    Ok(())
}

/// The generation of `name` as `observer` sees it.
async fn generation(cluster: &LocalCluster, observer: &str, name: &str) -> anyhow::Result<u64> {
    let info = cluster.cluster_info(observer).await?;
    info.member(name)
        .map(|m| m.generation)
        .with_context(|| format!("{observer} does not know {name}"))
}

/// Polls the observers' views, narrating changes, until `done` holds for all of them.
async fn watch(
    cluster: &LocalCluster,
    n: &mut Narrator,
    observers: &[&str],
    mut done: impl FnMut(&str, &ClusterInfo) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + STEP_LIMIT;
    loop {
        let mut all = true;
        for observer in observers {
            match cluster.cluster_info(observer).await {
                Ok(info) => {
                    n.report(observer, &info);
                    all &= done(observer, &info);
                }
                Err(_) => all = false,
            }
        }
        if all {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("gave up after {STEP_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
