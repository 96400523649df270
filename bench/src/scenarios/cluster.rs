//! In-process clusters on loopback, each node with its own redb data directory: what the
//! replication and handoff scenarios measure.

use std::time::{Duration, Instant};

use shoal::entity::builtin::{Counter, CounterCommand};
use shoal::transport::ClusterCa;
use shoal::{Node, NodeBuilder, loopback};

use crate::measure::quantile;

pub struct Cluster {
    pub nodes: Vec<Node>,
    dirs: Vec<tempfile::TempDir>,
}

/// Failure detection is made slow: nothing in these scenarios crashes.
const NEVER_DOWN: Duration = Duration::from_secs(600);

impl Cluster {
    /// Starts `n` nodes at replication factor `replicas` and waits until they serve.
    pub async fn start(ca: &ClusterCa, n: usize, replicas: u32) -> anyhow::Result<Self> {
        let mut c = Self {
            nodes: Vec::new(),
            dirs: Vec::new(),
        };
        for i in 1..=n {
            c.join(ca, &format!("n{i}"), replicas).await?;
        }
        loopback::wait_serving(&c.nodes.iter().collect::<Vec<_>>()).await;
        Ok(c)
    }

    /// Starts one more node, seeded with the first, and returns it (without waiting).
    pub async fn join(
        &mut self,
        ca: &ClusterCa,
        name: &str,
        replicas: u32,
    ) -> anyhow::Result<Node> {
        let dir = tempfile::tempdir()?;
        let seeds: Vec<&Node> = self.nodes.iter().take(1).collect();
        let mut config = loopback::config(name, &seeds);
        config.gossip_interval = Duration::from_millis(200);
        config.replicas = replicas;
        config.down_after = NEVER_DOWN;
        config.data_dir = Some(dir.path().to_path_buf());
        let node = loopback::start(NodeBuilder::new(config), ca).await?;
        self.nodes.push(node.clone());
        self.dirs.push(dir);
        Ok(node)
    }

    pub async fn stop(self) {
        for n in &self.nodes {
            n.stop().await;
        }
        drop(self.dirs);
    }

    /// `clients` writers adding to counters of their own through every node for `secs`:
    /// (writes/s, p50, p99).
    pub async fn writes(&self, clients: usize, secs: f64) -> (f64, Duration, Duration) {
        let until = Instant::now() + Duration::from_secs_f64(secs);
        let tasks: Vec<_> = (0..clients)
            .map(|k| {
                let node = self.nodes[k % self.nodes.len()].clone();
                tokio::spawn(async move {
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
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap_or_default());
        }
        all.sort();
        (
            all.len() as f64 / secs,
            quantile(&all, 0.5),
            quantile(&all, 0.99),
        )
    }
}
