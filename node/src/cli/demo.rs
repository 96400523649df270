//! `shoal demo`: a local 3-node cluster that shows membership at work.
//!
//! Generates certificates in a temporary directory, starts three `shoal node` processes on
//! loopback, and narrates: convergence, a SIGKILL and its detection, the restart and rejoin
//! with a new generation, values written through one node's gateway and read through another,
//! a fourth node joining and the shards (with their values) that move to it, the primary of a
//! set of keys killed (the keys stay readable and writable from their replicas) and restarted
//! (it catches up), then a graceful stop of everything. Every figure printed is measured,
//! nothing is scripted.

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
    println!();

    // 4. Entities: write through one node, read through another.
    entities(cluster, &mut n).await
}

/// Writes kv values through n1's gateway, reads them through n2, shows where they live, then
/// adds a fourth node and shows the shards (and values) that move to it.
async fn entities(cluster: &mut LocalCluster, n: &mut Narrator) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let fruits = [
        "apple",
        "banana",
        "cherry",
        "date",
        "elderberry",
        "fig",
        "grape",
        "kiwi",
        "lemon",
        "mango",
        "nectarine",
        "orange",
    ];
    n.say(format!(
        "writing {} values through n1's gateway: PUT /kv/{{fruit}}",
        fruits.len()
    ));
    for (i, fruit) in fruits.iter().enumerate() {
        let url = format!("{}/kv/{fruit}", base(cluster, "n1")?);
        let resp = http
            .put(&url)
            .json(&serde_json::json!({ "stock": (i + 1) * 10 }))
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "PUT {url}: {}", resp.status());
    }
    let shards = shard_table(cluster, &http, "n1").await?;
    n.say("reading them back through n2 (each lives on the owner of its shard):");
    for fruit in fruits {
        let v: serde_json::Value = http
            .get(format!("{}/kv/{fruit}", base(cluster, "n2")?))
            .send()
            .await?
            .json()
            .await?;
        println!(
            "          {fruit:<11} = {:<16} lives on {}",
            v["value"].to_string(),
            primary_of(&shards, fruit)
        );
    }
    let before = cluster.cluster_info("n1").await?.shards;
    n.say(format!("shards per node before: {before:?}"));

    n.say("adding a fourth node, n4, seeded with n1");
    cluster.add_node("n4", &["n1"])?;
    cluster.start("n4")?;
    let t = Instant::now();
    watch(cluster, n, &["n1", "n4"], |_, info| {
        info.config_members.len() == 4 && info.shards.get("n4").is_some_and(|&s| s > 0)
    })
    .await
    .context("n4 did not join")?;
    let after = cluster.cluster_info("n1").await?.shards;
    let moved = after.get("n4").copied().unwrap_or(0);
    n.say(format!(
        "n4 joined in {:.1}s and owns {moved} of {} shards ({:.0}%, ideal 25%); shards per node after: {after:?}",
        t.elapsed().as_secs_f64(),
        shards.len(),
        100.0 * moved as f64 / shards.len().max(1) as f64
    ));
    let shards_after = shard_table(cluster, &http, "n1").await?;
    n.say("reading every value through n4: the moved ones came over with their state");
    for fruit in fruits {
        let resp = http
            .get(format!("{}/kv/{fruit}", base(cluster, "n4")?))
            .send()
            .await?;
        let status = resp.status();
        let v: serde_json::Value = resp.json().await.unwrap_or_default();
        let (was, now) = (primary_of(&shards, fruit), primary_of(&shards_after, fruit));
        println!(
            "          {fruit:<11} = {:<16} {}",
            if status.is_success() {
                v["value"].to_string()
            } else {
                format!("HTTP {status}")
            },
            if was == now {
                format!("stays on {now}")
            } else {
                format!("moved {was} -> {now}")
            }
        );
    }
    failover(cluster, n, &http, &fruits).await
}

/// Kills the primary of the most fruits, shows them readable and writable from the
/// surviving replicas, restarts it and shows it catching up.
async fn failover(
    cluster: &mut LocalCluster,
    n: &mut Narrator,
    http: &reqwest::Client,
    fruits: &[&str],
) -> anyhow::Result<()> {
    let shards = shard_table(cluster, http, "n1").await?;
    let mut by_node: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for f in fruits {
        by_node.entry(primary_of(&shards, f)).or_default().push(f);
    }
    let (victim, keys) = by_node
        .iter()
        .filter(|(node, _)| node.as_str() != "n1")
        .max_by_key(|(_, keys)| keys.len())
        .map(|(node, keys)| (node.clone(), keys.clone()))
        .context("no node but n1 is primary of any fruit")?;
    let old_generation = generation(cluster, "n1", &victim).await?;
    n.say(format!(
        "killing {victim} with SIGKILL: it is the primary of {}; each also has copies on two other nodes",
        keys.join(", ")
    ));
    cluster.kill(&victim).await?;
    let t = Instant::now();
    let deadline = t + STEP_LIMIT;
    let mut unavailable_seen = false;
    let mut pending: Vec<&str> = keys.clone();
    let mut values = BTreeMap::new();
    while !pending.is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{pending:?} were not readable {STEP_LIMIT:?} after the kill"
        );
        let mut still = Vec::new();
        for fruit in pending {
            let resp = http
                .get(format!("{}/kv/{fruit}", base(cluster, "n1")?))
                .send()
                .await;
            match resp {
                Ok(r) if r.status().is_success() => {
                    let v: serde_json::Value = r.json().await.unwrap_or_default();
                    values.insert(fruit, v["value"].clone());
                }
                _ => {
                    if !unavailable_seen {
                        n.say(format!(
                            "{fruit} answers 503 for now: {victim} is still a member (until it has been unreachable for down_after, 10 s)"
                        ));
                        unavailable_seen = true;
                    }
                    still.push(fruit);
                }
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let epoch = cluster.cluster_info("n1").await?.epoch;
    n.say(format!(
        "{victim} removed in epoch {epoch}; its keys are served again {:.1}s after the kill, from the surviving replicas:",
        t.elapsed().as_secs_f64()
    ));
    for (fruit, v) in &values {
        println!("          {fruit:<11} = {v}");
    }
    n.say("writing them again through n2 while it is down: stock + 1");
    for (fruit, v) in &values {
        let stock = v["stock"].as_u64().unwrap_or(0) + 1;
        let resp = http
            .put(format!("{}/kv/{fruit}", base(cluster, "n2")?))
            .json(&serde_json::json!({ "stock": stock }))
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "PUT {fruit}: {}", resp.status());
        println!(
            "          {fruit:<11} = {{\"stock\":{stock}}}  acknowledged by a majority of its replicas"
        );
    }

    n.say(format!(
        "restarting {victim} with its data directory: it rejoins as a new generation and its replicas catch up"
    ));
    cluster.start(&victim)?;
    let t = Instant::now();
    watch(cluster, n, &["n1", victim.as_str()], |_, info| {
        info.member(&victim)
            .is_some_and(|m| m.member && m.generation > old_generation)
            && info.shards.get(&victim).is_some_and(|&s| s > 0)
    })
    .await
    .with_context(|| format!("{victim} did not rejoin"))?;
    // Its replicas are installed once the shards' primaries have sent what it missed.
    let epoch = cluster.cluster_info("n1").await?.epoch;
    let mut held = (0, 0, 0);
    while Instant::now() < t + STEP_LIMIT {
        let mine = shard_table(cluster, http, &victim).await?;
        let here: Vec<&crate::api::ReplicaHere> =
            mine.iter().filter_map(|s| s.here.as_ref()).collect();
        held = (
            here.len(),
            here.iter().filter(|h| h.installed >= epoch).count(),
            here.iter().map(|h| h.entities).sum::<usize>(),
        );
        if held.0 > 0 && held.1 == held.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    n.say(format!(
        "{victim} is back ({:.1}s): {} replicas, {} of them up to date in epoch {epoch}, {} entities on its disk",
        t.elapsed().as_secs_f64(),
        held.0,
        held.1,
        held.2
    ));
    n.say(format!(
        "reading the keys through {victim}: the writes it missed are there"
    ));
    for fruit in &keys {
        let v: serde_json::Value = http
            .get(format!("{}/kv/{fruit}", base(cluster, &victim)?))
            .send()
            .await?
            .json()
            .await?;
        println!("          {fruit:<11} = {}", v["value"]);
    }
    Ok(())
}

/// The HTTP base URL of `name`'s gateway.
fn base(cluster: &LocalCluster, name: &str) -> anyhow::Result<String> {
    Ok(format!("http://{}", cluster.node(name)?.http))
}

/// `GET /shards` of `node`.
async fn shard_table(
    cluster: &LocalCluster,
    http: &reqwest::Client,
    node: &str,
) -> anyhow::Result<Vec<crate::api::ShardInfo>> {
    let url = format!("{}/shards", base(cluster, node)?);
    Ok(http.get(url).send().await?.json().await?)
}

/// The primary of kv entity `key` in `table`.
fn primary_of(table: &[crate::api::ShardInfo], key: &str) -> String {
    let shard = shoal_sharding::shard_of("kv", key.as_bytes(), table.len() as u32);
    table
        .get(shard.0 as usize)
        .map(|s| s.primary.clone())
        .unwrap_or_default()
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
