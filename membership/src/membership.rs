//! A node's membership: chitchat running over the node's QUIC transport, a view kept up to
//! date from it, and the events derived from that view.
//!
//! Gossip reports who is alive and what each node says about itself; it decides nothing
//! about ownership. A node starts `joining` and publishes `up` once it has reached the
//! cluster (it sees a live peer) or when it has no seed but itself (the first node).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chitchat::{Chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use shoal_transport::{Clock, Transport};
use tokio::sync::{Mutex, broadcast, watch};
use tokio::task::AbortHandle;
use tracing::{info, warn};

use crate::cluster_guard::ClusterGuard;
use crate::config::{MembershipConfig, validate_seed};
use crate::events::{EventTracker, MembershipEvent};
use crate::status::{NodeStatus, PROTOCOL_VERSION, keys};
use crate::view::{Member, MembershipView};

#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("node name {config:?} does not match the certificate's {certificate:?}")]
    NameMismatch { config: String, certificate: String },
    #[error("{0}")]
    BadSeed(String),
    #[error("gossip could not start: {0}")]
    Gossip(anyhow::Error),
}

/// A running membership. Cheap to clone.
#[derive(Clone)]
pub struct Membership {
    inner: Arc<Inner>,
}

struct Inner {
    config: MembershipConfig,
    self_id: ChitchatId,
    handle: Mutex<Option<ChitchatHandle>>,
    chitchat: Arc<Mutex<Chitchat>>,
    view: watch::Receiver<MembershipView>,
    events: broadcast::Sender<MembershipEvent>,
    watcher: AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.watcher.abort();
        if let Ok(mut handle) = self.handle.try_lock()
            && let Some(h) = handle.take()
        {
            h.abort();
        }
    }
}

impl Membership {
    /// Starts gossiping through `transport`. The generation is the clock's Unix time in
    /// milliseconds, so every start is a new incarnation.
    pub async fn start(
        config: MembershipConfig,
        transport: &Transport,
        clock: &dyn Clock,
    ) -> Result<Self, MembershipError> {
        if config.node_name != transport.name() {
            return Err(MembershipError::NameMismatch {
                config: config.node_name.clone(),
                certificate: transport.name().to_string(),
            });
        }
        Self::start_with_gossip(config, &transport.gossip(), clock).await
    }

    /// Starts gossiping over any chitchat transport. Production uses [`Membership::start`]
    /// (gossip over the node's QUIC endpoint); the simulator's membership-only mode passes
    /// simulated datagrams to study large clusters without QUIC.
    pub async fn start_with_gossip(
        config: MembershipConfig,
        gossip: &dyn chitchat::transport::Transport,
        clock: &dyn Clock,
    ) -> Result<Self, MembershipError> {
        for seed in &config.seeds {
            validate_seed(seed).map_err(MembershipError::BadSeed)?;
        }
        let self_id = ChitchatId::new(
            config.node_name.clone(),
            clock.unix_millis(),
            config.advertise_addr,
        );
        let fd = &config.failure_detector;
        let chitchat_config = ChitchatConfig {
            chitchat_id: self_id.clone(),
            cluster_id: config.cluster_id.clone(),
            gossip_interval: config.gossip_interval,
            listen_addr: config.advertise_addr,
            seed_nodes: config.seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: fd.phi_threshold,
                sampling_window_size: 1000,
                max_interval: fd.max_interval,
                initial_interval: fd.initial_interval.unwrap_or(config.gossip_interval),
                dead_node_grace_period: fd.dead_node_grace_period,
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
        };
        let mut initial = vec![
            (keys::STATUS.to_string(), NodeStatus::Joining.to_string()),
            (keys::PROTOCOL.to_string(), PROTOCOL_VERSION.to_string()),
        ];
        if let Some(data) = config.data_addr.filter(|a| *a != config.advertise_addr) {
            initial.push((keys::DATA_ADDR.to_string(), data.to_string()));
        }
        initial.extend(config.extra_keys.iter().cloned());
        let guard = ClusterGuard::open(gossip, config.advertise_addr, config.cluster_id.clone())
            .await
            .map_err(MembershipError::Gossip)?;
        let handle = chitchat::spawn_chitchat(chitchat_config, initial, &guard)
            .await
            .map_err(MembershipError::Gossip)?;
        let chitchat = handle.chitchat();
        // From the first moment, the view holds this node itself.
        let first = {
            let c = chitchat.lock().await;
            build_view(&c, &self_id, &config.cluster_id, &HashMap::new())
        };
        let (view_tx, view) = watch::channel(first);
        let (events, _) = broadcast::channel(1024);
        let watcher = tokio::spawn(watch_loop(
            chitchat.clone(),
            self_id.clone(),
            config.clone(),
            view_tx,
            events.clone(),
        ))
        .abort_handle();
        info!(
            node = %config.node_name,
            generation = self_id.generation_id,
            addr = %config.advertise_addr,
            cluster = %config.cluster_id,
            seeds = ?config.seeds,
            "membership started"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                self_id,
                handle: Mutex::new(Some(handle)),
                chitchat,
                view,
                events,
                watcher,
            }),
        })
    }

    pub fn config(&self) -> &MembershipConfig {
        &self.inner.config
    }

    /// This incarnation's generation.
    pub fn generation(&self) -> u64 {
        self.inner.self_id.generation_id
    }

    /// The current view.
    pub fn view(&self) -> MembershipView {
        self.inner.view.borrow().clone()
    }

    /// A receiver that sees every new view.
    pub fn watch(&self) -> watch::Receiver<MembershipView> {
        self.inner.view.clone()
    }

    /// Events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<MembershipEvent> {
        self.inner.events.subscribe()
    }

    /// Publishes a key about this node.
    pub async fn set_key(&self, key: &str, value: &str) {
        self.inner
            .chitchat
            .lock()
            .await
            .self_node_state()
            .set(key, value);
    }

    /// Publishes a status.
    pub async fn set_status(&self, status: NodeStatus) {
        self.set_key(keys::STATUS, status.as_str()).await;
    }

    /// Graceful leave: publishes `leaving`, keeps gossiping for the leave grace so the rest
    /// of the cluster sees it, then stops gossip.
    pub async fn leave(&self) {
        info!(node = %self.inner.config.node_name, grace = ?self.inner.config.leave_grace, "leaving the cluster");
        self.set_status(NodeStatus::Leaving).await;
        tokio::time::sleep(self.inner.config.leave_grace).await;
        self.shutdown().await;
    }

    /// Stops gossip at once (no announcement: the others will report this node failed).
    pub async fn shutdown(&self) {
        self.inner.watcher.abort();
        if let Some(handle) = self.inner.handle.lock().await.take()
            && let Err(e) = handle.shutdown().await
        {
            warn!(error = %e, "gossip stopped with an error");
        }
    }
}

/// Recomputes the view after every gossip round or liveness change, promotes this node to
/// `up` when it has reached the cluster, and emits events.
async fn watch_loop(
    chitchat: Arc<Mutex<Chitchat>>,
    self_id: ChitchatId,
    config: MembershipConfig,
    view_tx: watch::Sender<MembershipView>,
    events: broadcast::Sender<MembershipEvent>,
) {
    let mut live_rx = chitchat.lock().await.live_nodes_watcher();
    let mut tick = tokio::time::interval(config.gossip_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tracker = EventTracker::new();
    // When each incarnation was last seen live (a round counter).
    let mut last_live: HashMap<ChitchatId, u64> = HashMap::new();
    let mut round: u64 = 0;
    let alone = config
        .seeds
        .iter()
        .all(|s| s.parse::<SocketAddr>().ok() == Some(config.advertise_addr));
    loop {
        let view = {
            let mut c = chitchat.lock().await;
            round += 1;
            for id in c.live_nodes() {
                last_live.insert(id.clone(), round);
            }
            let view = build_view(&c, &self_id, &config.cluster_id, &last_live);
            let me = view.member(&config.node_name);
            let joining = me.is_some_and(|m| m.status == NodeStatus::Joining);
            let reached = alone || view.live().any(|m| m.name != config.node_name);
            if joining && reached {
                c.self_node_state()
                    .set(keys::STATUS, NodeStatus::Up.as_str());
                build_view(&c, &self_id, &config.cluster_id, &last_live)
            } else {
                view
            }
        };
        let new_events = tracker.update(&view);
        // The view first, so that whoever reacts to an event reads a view that includes it.
        view_tx.send_if_modified(|current| {
            if *current != view {
                *current = view;
                true
            } else {
                false
            }
        });
        for event in new_events {
            log_event(&event, &config.node_name);
            let _ = events.send(event);
        }
        tokio::select! {
            changed = live_rx.changed() => if changed.is_err() { return },
            _ = tick.tick() => {}
        }
    }
}

/// The view: every incarnation that was ever confirmed alive (a node merely heard of, whose
/// heartbeats the failure detector has not judged yet, is not shown), one per name: a live
/// incarnation if there is one, else the one live most recently. Generations are not trusted
/// to grow: they come from wall clocks, which can step back between restarts.
fn build_view(
    c: &Chitchat,
    self_id: &ChitchatId,
    cluster_id: &str,
    last_live: &HashMap<ChitchatId, u64>,
) -> MembershipView {
    let live: HashSet<&ChitchatId> = c.live_nodes().collect();
    // name -> (rank, member); higher rank wins.
    let mut by_name: BTreeMap<String, ((bool, u64, u64), Member)> = BTreeMap::new();
    for (id, state) in c.node_states() {
        let is_live = id == self_id || live.contains(id);
        let seen = if id == self_id {
            u64::MAX
        } else {
            match last_live.get(id) {
                Some(tick) => *tick,
                None => continue,
            }
        };
        let member = Member {
            name: id.node_id.to_string(),
            addr: id.gossip_advertise_addr,
            generation: id.generation_id,
            status: state
                .get(keys::STATUS)
                .map(NodeStatus::parse)
                .unwrap_or(NodeStatus::Joining),
            live: is_live,
            protocol: state.get(keys::PROTOCOL).and_then(|v| v.parse().ok()),
            data_addr: state.get(keys::DATA_ADDR).and_then(|v| v.parse().ok()),
        };
        let rank = (is_live, seen, id.generation_id);
        match by_name.get(&member.name) {
            Some((best, _)) if *best >= rank => {}
            _ => {
                by_name.insert(member.name.clone(), (rank, member));
            }
        }
    }
    MembershipView {
        cluster_id: cluster_id.to_string(),
        self_name: self_id.node_id.to_string(),
        members: by_name.into_values().map(|(_, m)| m).collect(),
    }
}

fn log_event(event: &MembershipEvent, observer: &str) {
    let m = event.member();
    let kind = event.kind();
    match event {
        MembershipEvent::Failed { .. } => warn!(
            observer, event = kind, node = %m.name, generation = m.generation, addr = %m.addr,
            "member failed: the failure detector lost it"
        ),
        MembershipEvent::Rejoined {
            previous_generation,
            ..
        } => info!(
            observer, event = kind, node = %m.name, generation = m.generation,
            previous_generation, addr = %m.addr, "member rejoined as a new generation"
        ),
        _ => info!(
            observer, event = kind, node = %m.name, generation = m.generation, addr = %m.addr,
            status = %m.status, "member {kind}"
        ),
    }
}
