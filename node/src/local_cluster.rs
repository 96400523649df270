//! A cluster of real `shoal node` processes on loopback, with generated certificates.
//!
//! `shoal demo` drives one, and so do the real-process tests: real sockets, real signals,
//! real processes, which the simulator cannot cover. Children are killed when the cluster is
//! dropped, so nothing outlives a demo or a failed test.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shoal_transport::CertDir;
use tempfile::TempDir;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::api::ClusterInfo;

/// One node of a local cluster.
#[derive(Debug)]
pub struct LocalNode {
    pub name: String,
    /// QUIC (gossip and data) address.
    pub listen: SocketAddr,
    /// HTTP admin address.
    pub http: SocketAddr,
    pub seeds: Vec<SocketAddr>,
    pub certs: PathBuf,
    pub cluster_id: String,
    /// Durable state of the node.
    pub data_dir: PathBuf,
    /// stdout and stderr of the process.
    pub log: PathBuf,
    child: Option<Child>,
}

impl LocalNode {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }
}

/// The `shoal node` command line of a node on this machine (what follows the binary).
pub(crate) struct NodeFlags<'a> {
    pub name: &'a str,
    pub listen: SocketAddr,
    pub http: SocketAddr,
    pub certs: &'a Path,
    pub data_dir: &'a Path,
    pub seeds: &'a [SocketAddr],
    /// `None`: the node's default.
    pub cluster_id: Option<&'a str>,
    pub gossip_interval: Duration,
    pub down_after: Option<Duration>,
    pub replicas: Option<u32>,
}

impl NodeFlags<'_> {
    pub(crate) fn args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        let mut flag = |name: &str, value: std::ffi::OsString| {
            args.push(name.into());
            args.push(value);
        };
        let text = |v: &dyn std::fmt::Display| v.to_string().into();
        let duration = |d: Duration| humantime::format_duration(d).to_string().into();
        flag("--name", text(&self.name));
        flag("--listen", text(&self.listen));
        flag("--http", text(&self.http));
        flag("--certs", self.certs.into());
        flag("--data-dir", self.data_dir.into());
        flag("--gossip-interval", duration(self.gossip_interval));
        if let Some(id) = self.cluster_id {
            flag("--cluster-id", id.into());
        }
        if let Some(d) = self.down_after {
            flag("--down-after", duration(d));
        }
        if let Some(r) = self.replicas {
            flag("--replicas", text(&r));
        }
        if !self.seeds.is_empty() {
            let seeds: Vec<String> = self.seeds.iter().map(|s| s.to_string()).collect();
            flag("--seeds", seeds.join(",").into());
        }
        let mut all = vec!["node".into()];
        all.extend(args);
        all
    }
}

/// Local `shoal node` processes sharing a certificate directory.
pub struct LocalCluster {
    binary: PathBuf,
    root: PathBuf,
    _tmp: Option<TempDir>,
    certs: CertDir,
    cluster_id: String,
    gossip_interval: Duration,
    down_after: Duration,
    /// `--replicas` for the founding node (`None`: the default).
    replicas: Option<u32>,
    nodes: BTreeMap<String, LocalNode>,
    http: reqwest::Client,
}

impl LocalCluster {
    /// A cluster in a fresh temporary directory (removed on drop), with its own CA.
    pub fn in_temp_dir(binary: impl Into<PathBuf>) -> anyhow::Result<Self> {
        let tmp = tempfile::Builder::new().prefix("shoal-").tempdir()?;
        let mut cluster = Self::in_dir(binary, tmp.path())?;
        cluster._tmp = Some(tmp);
        Ok(cluster)
    }

    /// A cluster whose certificates and logs live in `dir`, with a new CA.
    pub fn in_dir(binary: impl Into<PathBuf>, dir: &Path) -> anyhow::Result<Self> {
        let certs = CertDir::new(dir.join("certs"));
        certs.init_ca("local").context("creating the cluster CA")?;
        Ok(Self {
            binary: binary.into(),
            root: dir.to_path_buf(),
            _tmp: None,
            certs,
            cluster_id: "shoal".into(),
            gossip_interval: Duration::from_millis(500),
            down_after: Duration::from_secs(10),
            replicas: None,
            nodes: BTreeMap::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()?,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn certs(&self) -> &CertDir {
        &self.certs
    }

    pub fn set_gossip_interval(&mut self, interval: Duration) {
        self.gossip_interval = interval;
    }

    /// How long a dead member stays in the configuration before it is removed.
    pub fn set_down_after(&mut self, down_after: Duration) {
        self.down_after = down_after;
    }

    /// Copies of each shard (`--replicas`), for a cluster founded from now on.
    pub fn set_replicas(&mut self, replicas: u32) {
        self.replicas = Some(replicas);
    }

    pub fn node(&self, name: &str) -> anyhow::Result<&LocalNode> {
        self.nodes
            .get(name)
            .with_context(|| format!("no node {name} in this cluster"))
    }

    pub fn names(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    /// Adds a node with a certificate from this cluster's CA, seeded with the named nodes.
    pub fn add_node(&mut self, name: &str, seeds: &[&str]) -> anyhow::Result<&LocalNode> {
        self.certs.issue(name)?;
        let certs = self.certs.path().to_path_buf();
        let cluster_id = self.cluster_id.clone();
        self.add_node_with(name, seeds, certs, cluster_id)
    }

    /// Adds a node with its own certificate directory and cluster id (to test nodes that
    /// must not get in).
    pub fn add_node_with(
        &mut self,
        name: &str,
        seeds: &[&str],
        certs: PathBuf,
        cluster_id: String,
    ) -> anyhow::Result<&LocalNode> {
        let seeds = seeds
            .iter()
            .map(|s| Ok(self.node(s)?.listen))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let (listen, http) = self.fresh_ports()?;
        let node = LocalNode {
            name: name.to_string(),
            listen,
            http,
            seeds,
            certs,
            cluster_id,
            data_dir: self.root.join("data").join(name),
            log: self.root.join(format!("{name}.log")),
            child: None,
        };
        self.nodes.insert(name.to_string(), node);
        self.node(name)
    }

    /// A free UDP and a free TCP port that no node of this cluster uses. The OS readily hands
    /// a port it just gave out and got back again to the next `bind(0)` (CI saw two nodes
    /// given one HTTP port: the second could not bind it and stopped).
    fn fresh_ports(&self) -> anyhow::Result<(SocketAddr, SocketAddr)> {
        let taken = |a: SocketAddr| {
            self.nodes
                .values()
                .any(|n| n.listen.port() == a.port() || n.http.port() == a.port())
        };
        for _ in 0..1000 {
            let (listen, http) = (free_udp_port()?, free_tcp_port()?);
            if listen.port() != http.port() && !taken(listen) && !taken(http) {
                return Ok((listen, http));
            }
        }
        bail!("no free loopback ports")
    }

    /// Starts (or restarts) the node's process. Its output is appended to its log file.
    pub fn start(&mut self, name: &str) -> anyhow::Result<()> {
        let binary = self.binary.clone();
        let (gossip_interval, down_after, replicas) =
            (self.gossip_interval, self.down_after, self.replicas);
        let node = self
            .nodes
            .get_mut(name)
            .with_context(|| format!("no node {name}"))?;
        if node.child.is_some() {
            bail!("node {name} is already running");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .with_context(|| format!("opening {}", node.log.display()))?;
        let mut cmd = Command::new(&binary);
        let flags = NodeFlags {
            name: &node.name,
            listen: node.listen,
            http: node.http,
            certs: &node.certs,
            data_dir: &node.data_dir,
            seeds: &node.seeds,
            cluster_id: Some(&node.cluster_id),
            gossip_interval,
            down_after: Some(down_after),
            replicas,
        };
        cmd.args(flags.args())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        node.child = Some(child);
        Ok(())
    }

    /// SIGKILL: the process dies without a word.
    pub async fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let node = self
            .nodes
            .get_mut(name)
            .with_context(|| format!("no node {name}"))?;
        if let Some(mut child) = node.child.take() {
            child.start_kill()?;
            child.wait().await?;
        }
        Ok(())
    }

    /// SIGTERM, then waits for the process to exit (it leaves gracefully first).
    pub async fn terminate(&mut self, name: &str, within: Duration) -> anyhow::Result<ExitStatus> {
        let node = self
            .nodes
            .get_mut(name)
            .with_context(|| format!("no node {name}"))?;
        let mut child = node
            .child
            .take()
            .with_context(|| format!("node {name} is not running"))?;
        if let Some(pid) = child.id() {
            kill(Pid::from_raw(pid as i32), Signal::SIGTERM)?;
        }
        match tokio::time::timeout(within, child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                child.start_kill()?;
                bail!("node {name} did not exit within {within:?} after SIGTERM")
            }
        }
    }

    /// Stops every running node with SIGTERM, all at once, and waits for them (SIGKILL for
    /// any that hangs).
    pub async fn stop_all(&mut self) {
        let mut children: Vec<Child> = self
            .nodes
            .values_mut()
            .filter_map(|n| n.child.take())
            .collect();
        for child in &children {
            if let Some(pid) = child.id() {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
        }
        for child in &mut children {
            if tokio::time::timeout(Duration::from_secs(15), child.wait())
                .await
                .is_err()
            {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
    }

    /// The last `lines` lines of the node's log (for failure messages).
    pub fn log_tail(&self, name: &str, lines: usize) -> String {
        let Ok(node) = self.node(name) else {
            return String::new();
        };
        let text = std::fs::read_to_string(&node.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `GET /cluster` of the node.
    pub async fn cluster_info(&self, name: &str) -> anyhow::Result<ClusterInfo> {
        let node = self.node(name)?;
        fetch_cluster(&self.http, node.http).await
    }

    /// Polls the node's `/cluster` until `pred` holds; fails after `within` with what it saw.
    pub async fn wait_for(
        &self,
        name: &str,
        within: Duration,
        what: &str,
        pred: impl Fn(&ClusterInfo) -> bool,
    ) -> anyhow::Result<ClusterInfo> {
        let deadline = Instant::now() + within;
        loop {
            let last = match self.cluster_info(name).await {
                Ok(info) if pred(&info) => return Ok(info),
                Ok(info) => format!("{info:?}"),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                let log = self.log_tail(name, 20);
                bail!(
                    "{name}: not {what} within {within:?}; last seen: {last}\nlast lines of {name}'s log:\n{log}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `GET http://addr/cluster`.
pub async fn fetch_cluster(
    client: &reqwest::Client,
    addr: SocketAddr,
) -> anyhow::Result<ClusterInfo> {
    let url = format!("http://{addr}/cluster");
    let resp = client.get(&url).send().await.map_err(|e| {
        // reqwest's chain repeats itself; the innermost cause says what happened.
        let mut cause: &dyn std::error::Error = &e;
        while let Some(next) = cause.source() {
            cause = next;
        }
        anyhow::anyhow!("cannot reach {url}: {cause}")
    })?;
    if !resp.status().is_success() {
        bail!("{url} answered {}", resp.status());
    }
    Ok(resp.json().await?)
}

fn free_udp_port() -> anyhow::Result<SocketAddr> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?)
}

fn free_tcp_port() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}
