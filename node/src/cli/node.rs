//! `shoal node`: run one node until SIGINT/SIGTERM, then leave gracefully.

use shoal_membership::FailureDetectorSettings;
use shoal_transport::{CertDir, Environment};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::config::NodeConfig;
use crate::node::Node;

use super::NodeArgs;

pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let env = Environment::real();
    let identity = CertDir::new(&args.certs).load_identity(&args.name, env.clock.as_ref())?;
    let mut config = NodeConfig::new(args.name.clone(), args.listen);
    config.advertise = args.advertise;
    config.seeds = args.seeds.clone();
    config.cluster_id = args.cluster_id.clone();
    config.gossip_interval = args.gossip_interval;
    config.leave_grace = args.gossip_interval * 6;
    config.data_dir = args.data_dir.clone();
    config.bootstrap = args.bootstrap;
    config.down_after = args.down_after;
    if args.shards == 0 {
        anyhow::bail!("--shards must be at least 1");
    }
    config.shards = args.shards;
    if args.replicas == 0 {
        anyhow::bail!("--replicas must be at least 1");
    }
    config.replicas = args.replicas;
    config.failure_detector = FailureDetectorSettings {
        phi_threshold: args.phi_threshold,
        ..FailureDetectorSettings::default()
    };
    config.advertise_addr().map_err(anyhow::Error::msg)?;
    for seed in &config.seeds {
        shoal_membership::validate_seed(seed).map_err(anyhow::Error::msg)?;
    }
    // Bind HTTP before joining, so a taken port fails before the cluster sees this node.
    let http = match args.http {
        Some(addr) => Some(crate::http::bind(addr).await?),
        None => None,
    };
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;

    let memory_only = config.data_dir.is_none();
    let node = Node::start(config, identity, env).await?;
    if memory_only {
        warn!(
            node = %node.name(),
            "no --data-dir: membership state and shard replicas are kept in memory; after a restart this node cannot vote in its previous place and its replicas are lost (restart it under a new name)"
        );
    }
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http_task = http.map(|listener| {
        let addr = listener.local_addr().ok();
        info!(node = %node.name(), http = ?addr, "HTTP admin API listening");
        tokio::spawn(crate::http::serve(node.clone(), listener, async {
            let _ = http_stopped.await;
        }))
    });

    let which = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
    };
    info!(node = %node.name(), signal = which, "stopping: leaving the cluster gracefully (send the signal again to stop at once)");
    tokio::select! {
        _ = node.leave() => {}
        _ = sigterm.recv() => warn!("second signal: stopping without finishing the leave"),
        _ = sigint.recv() => warn!("second signal: stopping without finishing the leave"),
    }
    let _ = stop_http.send(());
    if let Some(task) = http_task {
        let _ = task.await;
    }
    Ok(())
}
