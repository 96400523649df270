//! `shoal cluster up|down|status`: a local cluster of `shoal node` processes that outlives the
//! command, for trying Shoal out and for development.
//!
//! Everything lives in one directory: `certs/` (a new CA and a certificate per node),
//! `data/NAME/`, `logs/NAME.log`, and `cluster.json`, which records each node's process and
//! addresses so that `down` and `status` find them. Nodes run in their own process group, so a
//! Ctrl-C in the terminal that started them does not reach them.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use shoal_transport::CertDir;
use tokio::time::Instant;

use super::{ClusterDownArgs, ClusterStatusArgs, ClusterUpArgs};
use crate::local_cluster::{NodeFlags, fetch_cluster};

const STATE: &str = "cluster.json";
/// HTTP ports are the QUIC ports plus this.
const HTTP_OFFSET: u16 = 1000;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct NodeEntry {
    name: String,
    pid: u32,
    quic: SocketAddr,
    http: SocketAddr,
    log: PathBuf,
    data_dir: PathBuf,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    nodes: Vec<NodeEntry>,
}

impl State {
    fn path(dir: &Path) -> PathBuf {
        dir.join(STATE)
    }

    fn load(dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = Self::path(dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(serde_json::from_str(&text).with_context(|| {
                format!("{} is not a cluster state file", path.display())
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let path = Self::path(dir);
        std::fs::write(&path, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    fn running(&self) -> Vec<&NodeEntry> {
        self.nodes.iter().filter(|n| is_running(n)).collect()
    }
}

/// Whether the entry's process is alive and is still that node (not a reused pid).
fn is_running(n: &NodeEntry) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{}/cmdline", n.pid)) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let named = args
        .windows(2)
        .any(|w| w[0] == b"--name" && w[1] == n.name.as_bytes());
    // A zombie (exited, not yet reaped) has an empty command line.
    named && args.iter().any(|a| *a == b"node")
}

fn spinner(len: u64, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {pos}/{len} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

/// Fails with the port's name if it is taken.
fn check_free(quic: SocketAddr, http: SocketAddr) -> anyhow::Result<()> {
    UdpSocket::bind(quic)
        .with_context(|| format!("UDP port {quic} is in use: pick other ports with --base-port"))?;
    TcpListener::bind(http)
        .with_context(|| format!("TCP port {http} is in use: pick other ports with --base-port"))?;
    Ok(())
}

pub async fn up(args: ClusterUpArgs) -> anyhow::Result<()> {
    if args.nodes == 0 || args.nodes > 99 {
        bail!("--nodes must be between 1 and 99");
    }
    let dir = &args.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if let Some(state) = State::load(dir)? {
        let running = state.running();
        if !running.is_empty() {
            let names: Vec<&str> = running.iter().map(|n| n.name.as_str()).collect();
            bail!(
                "a cluster is already running in {} ({}); stop it with `shoal cluster down --dir {}`",
                dir.display(),
                names.join(", "),
                dir.display()
            );
        }
    }
    let last = u32::from(args.base_port) + args.nodes - 1 + u32::from(HTTP_OFFSET);
    if last > u32::from(u16::MAX) {
        bail!(
            "--base-port {} leaves no room for {} nodes",
            args.base_port,
            args.nodes
        );
    }
    let names: Vec<String> = (1..=args.nodes).map(|i| format!("n{i}")).collect();
    let addrs: Vec<(SocketAddr, SocketAddr)> = (0..args.nodes as u16)
        .map(|i| {
            let quic = args.base_port + i;
            (loopback(quic), loopback(quic + HTTP_OFFSET))
        })
        .collect();
    for (quic, http) in &addrs {
        check_free(*quic, *http)?;
    }

    let certs = CertDir::new(dir.join("certs"));
    if !certs.ca_cert_path().exists() {
        certs.init_ca("shoal local cluster")?;
    }
    for name in &names {
        if !certs.node_cert_path(name).exists() {
            certs.issue(name)?;
        }
    }
    std::fs::create_dir_all(dir.join("logs"))?;
    let binary = std::env::current_exe().context("finding the shoal binary")?;
    let mut state = State::default();
    for (i, name) in names.iter().enumerate() {
        let (quic, http) = addrs[i];
        let log_path = dir.join("logs").join(format!("{name}.log"));
        let data_dir = dir.join("data").join(name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        // n1 founds the cluster (or resumes it); the others join through the first two.
        let seeds: Vec<SocketAddr> = addrs[..i.min(2)].iter().map(|a| a.0).collect();
        let flags = NodeFlags {
            name,
            listen: quic,
            http,
            certs: certs.path(),
            data_dir: &data_dir,
            seeds: &seeds,
            cluster_id: None,
            gossip_interval: args.gossip_interval,
            down_after: None,
            replicas: args.replicas,
        };
        let mut cmd = Command::new(&binary);
        cmd.args(flags.args());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        state.nodes.push(NodeEntry {
            name: name.clone(),
            pid: child.id(),
            quic,
            http,
            log: log_path,
            data_dir,
        });
        // Recorded at once, so `down` can stop whatever started even if the rest fails.
        state.save(dir)?;
        if i == 0 {
            // Let the founder bind before the others dial it.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    wait_up(&state, Duration::from_secs(args.timeout)).await?;
    println!("{}", table(&state));
    println!("stop it with: shoal cluster down --dir {}", dir.display());
    Ok(())
}

/// Waits until the cluster has formed, with a progress bar: a node counts once it sees every
/// node of the cluster live and `up` (its `/cluster` view), which implies its own `/health`
/// says 200. Waiting only for each node's `/health` would return while the others still list it
/// as `joining`, so a `status` run at once would contradict `up`.
async fn wait_up(state: &State, within: Duration) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let bar = spinner(state.nodes.len() as u64, "nodes up");
    let deadline = Instant::now() + within;
    loop {
        let mut up = 0;
        for n in &state.nodes {
            if !is_running(n) {
                bar.abandon();
                let log = std::fs::read_to_string(&n.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                bail!(
                    "{} exited while starting; the end of {}:\n{}",
                    n.name,
                    n.log.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            let sees_all = fetch_cluster(&client, n.http).await.is_ok_and(|info| {
                let up = info.up();
                state.nodes.iter().all(|m| up.contains(&m.name.as_str()))
            });
            if sees_all {
                up += 1;
            }
        }
        bar.set_position(up);
        if up == state.nodes.len() as u64 {
            bar.finish_and_clear();
            return Ok(());
        }
        if Instant::now() >= deadline {
            bar.abandon();
            bail!(
                "only {up} of {} nodes are up after {within:?}; see the logs, or stop with `shoal cluster down`",
                state.nodes.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn table(state: &State) -> String {
    let mut out = format!(
        "{:<5} {:<17} {:<17} {:<27} {}\n",
        "NAME", "QUIC (UDP)", "HTTP", "DASHBOARD", "LOG"
    );
    for n in &state.nodes {
        out.push_str(&format!(
            "{:<5} {:<17} {:<17} {:<27} {}\n",
            n.name,
            n.quic.to_string(),
            n.http.to_string(),
            format!("http://{}/", n.http),
            n.log.display()
        ));
    }
    out
}

pub async fn down(args: ClusterDownArgs) -> anyhow::Result<()> {
    let dir = &args.dir;
    let Some(state) = State::load(dir)? else {
        bail!(
            "no cluster in {} (no {STATE}); start one with `shoal cluster up --dir {}`",
            dir.display(),
            dir.display()
        );
    };
    let running: Vec<NodeEntry> = state.running().into_iter().cloned().collect();
    if running.is_empty() {
        println!("no node of the cluster in {} is running", dir.display());
    }
    // SIGTERM: each node leaves gracefully, handing its shards over.
    for n in &running {
        let _ = kill(Pid::from_raw(n.pid as i32), Signal::SIGTERM);
    }
    let bar = spinner(running.len() as u64, "nodes stopped");
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    loop {
        let left: Vec<&NodeEntry> = running.iter().filter(|n| is_running(n)).collect();
        bar.set_position((running.len() - left.len()) as u64);
        if left.is_empty() {
            bar.finish_and_clear();
            break;
        }
        if Instant::now() >= deadline {
            bar.abandon();
            for n in &left {
                eprintln!(
                    "{} did not stop within {}s: killing it",
                    n.name, args.timeout
                );
                let _ = kill(Pid::from_raw(n.pid as i32), Signal::SIGKILL);
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if args.purge {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        println!("stopped {} nodes; removed {}", running.len(), dir.display());
    } else {
        std::fs::remove_file(State::path(dir))?;
        println!(
            "stopped {} nodes; their data stays in {} (`--purge` removes it)",
            running.len(),
            dir.display()
        );
    }
    Ok(())
}

pub async fn status(args: ClusterStatusArgs) -> anyhow::Result<()> {
    let Some(state) = State::load(&args.dir)? else {
        bail!("no cluster in {}", args.dir.display());
    };
    print!("{}", table(&state));
    let Some(live) = state.running().first().map(|n| n.http) else {
        bail!(
            "no node of the cluster in {} is running",
            args.dir.display()
        );
    };
    println!();
    super::status::run(super::StatusArgs {
        http: live,
        json: false,
    })
    .await
}
