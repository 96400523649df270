//! A node's membership: chitchat over the node's QUIC transport (who is alive, what each node
//! says about itself), a view kept up to date from it, the events derived from that view,
//! and the configuration manager that turns gossip into committed configurations.
//!
//! Gossip decides nothing on its own: a node is `up` only once a committed configuration
//! contains it. A node that learns it was removed (for example after a long partition)
//! rejoins as a new generation: its gossip identity is replaced while the handle, the view
//! and every subscription stay.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chitchat::{Chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use shoal_transport::{Environment, SharedClock, Transport};
use tokio::sync::{Mutex, broadcast, watch};
use tokio::task::AbortHandle;
use tracing::{Instrument, info, warn};

use crate::cluster_guard::ClusterGuard;
use crate::config::{MembershipConfig, validate_seed};
use crate::config_manager::ConfigManager;
use crate::configuration::{Committed, MemberId};
use crate::durable::DurableCell;
use crate::events::{EventTracker, MembershipEvent};
use crate::heartbeats::Heartbeats;
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
    #[error("the membership state in {place} cannot be used: {reason}")]
    State { place: String, reason: String },
}

/// A running membership. Cheap to clone.
#[derive(Clone)]
pub struct Membership {
    pub(crate) inner: Arc<Inner>,
}

/// One gossip identity: chitchat and the loop that watches it.
struct Incarnation {
    handle: ChitchatHandle,
    watcher: AbortHandle,
}

pub(crate) struct Inner {
    pub(crate) config: MembershipConfig,
    pub(crate) clock: SharedClock,
    gossip: Arc<dyn chitchat::transport::Transport>,
    incarnation: Mutex<Option<Incarnation>>,
    chitchat: std::sync::Mutex<Option<Arc<Mutex<Chitchat>>>>,
    self_id: std::sync::Mutex<ChitchatId>,
    pub(crate) view_tx: watch::Sender<MembershipView>,
    events: broadcast::Sender<MembershipEvent>,
    tracker: std::sync::Mutex<EventTracker>,
    /// Every key this node publishes, restored when it takes a new generation.
    keys: std::sync::Mutex<BTreeMap<String, String>>,
    pub(crate) configuration: OnceLock<Arc<ConfigManager>>,
    pub(crate) leaving: AtomicBool,
    stopped: AtomicBool,
    heartbeats: std::sync::Mutex<Heartbeats>,
    /// The latest events, oldest first, with when they happened (Unix ms).
    recent: std::sync::Mutex<VecDeque<(u64, MembershipEvent)>>,
}

/// Events [`Membership::recent_events`] keeps.
const RECENT_EVENTS: usize = 100;

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(m) = self.configuration.get() {
            m.abort();
        }
        if let Ok(mut current) = self.incarnation.try_lock()
            && let Some(inc) = current.take()
        {
            inc.watcher.abort();
            inc.handle.abort();
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Membership {
    /// Starts gossip and the configuration protocol through `transport`. `cell` keeps the
    /// protocol's durable state (a file under the data directory, or memory).
    pub async fn start(
        config: MembershipConfig,
        transport: &Transport,
        env: &Environment,
        cell: Arc<dyn DurableCell>,
    ) -> Result<Self, MembershipError> {
        if config.node_name != transport.name() {
            return Err(MembershipError::NameMismatch {
                config: config.node_name.clone(),
                certificate: transport.name().to_string(),
            });
        }
        let membership = Self::prepare(config, Arc::new(transport.gossip()), env.clock.clone())?;
        let manager = ConfigManager::new(
            Arc::downgrade(&membership.inner),
            transport.clone(),
            env.rng.clone(),
            cell,
        )
        .map_err(|(place, reason)| MembershipError::State { place, reason })?;
        let generation = manager.claim_generation(env.clock.unix_millis())?;
        let _ = membership.inner.configuration.set(manager.clone());
        membership.start_incarnation(generation).await?;
        manager.start();
        Ok(membership)
    }

    /// Starts gossip only, over any chitchat transport, without the configuration protocol:
    /// the simulator's membership-only mode, for large clusters. Nodes stay `joining`.
    pub async fn start_with_gossip(
        config: MembershipConfig,
        gossip: Arc<dyn chitchat::transport::Transport>,
        clock: SharedClock,
    ) -> Result<Self, MembershipError> {
        let generation = clock.unix_millis();
        let membership = Self::prepare(config, gossip, clock)?;
        membership.start_incarnation(generation).await?;
        Ok(membership)
    }

    fn prepare(
        config: MembershipConfig,
        gossip: Arc<dyn chitchat::transport::Transport>,
        clock: SharedClock,
    ) -> Result<Self, MembershipError> {
        for seed in &config.seeds {
            validate_seed(seed).map_err(MembershipError::BadSeed)?;
        }
        let mut keys = BTreeMap::new();
        keys.insert(keys::STATUS.to_string(), NodeStatus::Joining.to_string());
        keys.insert(keys::PROTOCOL.to_string(), PROTOCOL_VERSION.to_string());
        keys.insert(
            keys::SHARDS.to_string(),
            config.placement.shards.to_string(),
        );
        if let Some(data) = config.data_addr.filter(|a| *a != config.advertise_addr) {
            keys.insert(keys::DATA_ADDR.to_string(), data.to_string());
        }
        keys.extend(config.extra_keys.iter().cloned());
        let (view_tx, _) = watch::channel(MembershipView {
            cluster_id: config.cluster_id.clone(),
            self_name: config.node_name.clone(),
            members: Vec::new(),
            configuration: None,
        });
        let (events, _) = broadcast::channel(1024);
        let self_id = ChitchatId::new(config.node_name.clone(), 0, config.advertise_addr);
        let fd = &config.failure_detector;
        let heartbeats = Heartbeats::new(
            fd.initial_interval.unwrap_or(config.gossip_interval),
            fd.max_interval.unwrap_or(config.gossip_interval * 4),
        );
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                clock,
                gossip,
                incarnation: Mutex::new(None),
                chitchat: std::sync::Mutex::new(None),
                self_id: std::sync::Mutex::new(self_id),
                view_tx,
                events,
                tracker: std::sync::Mutex::new(EventTracker::new()),
                keys: std::sync::Mutex::new(keys),
                configuration: OnceLock::new(),
                leaving: AtomicBool::new(false),
                stopped: AtomicBool::new(false),
                heartbeats: std::sync::Mutex::new(heartbeats),
                recent: std::sync::Mutex::new(VecDeque::new()),
            }),
        })
    }

    /// Starts chitchat as `generation`, replacing the running incarnation if any.
    pub(crate) async fn start_incarnation(&self, generation: u64) -> Result<(), MembershipError> {
        self.inner.start_incarnation(generation).await
    }

    pub fn config(&self) -> &MembershipConfig {
        &self.inner.config
    }

    /// This incarnation's generation.
    pub fn generation(&self) -> u64 {
        lock(&self.inner.self_id).generation_id
    }

    /// This incarnation as a configuration member id.
    pub fn self_id(&self) -> MemberId {
        MemberId::new(self.inner.config.node_name.clone(), self.generation())
    }

    /// The current view.
    pub fn view(&self) -> MembershipView {
        self.inner.view_tx.borrow().clone()
    }

    /// The committed configuration's epoch and whether this node sees a majority of its
    /// members, read in place: every entity command asks, and a whole view is many clones.
    pub fn majority(&self) -> Option<(u64, bool)> {
        self.inner
            .view_tx
            .borrow()
            .configuration
            .as_ref()
            .map(|c| (c.epoch, c.in_majority))
    }

    /// The failure detector's suspicion of each peer: phi, the time since its last heartbeat
    /// over the mean interval between its heartbeats (see `heartbeats.rs`). chitchat reports a
    /// node failed once this passes the configured threshold.
    pub fn phi(&self) -> Vec<(String, f64)> {
        lock(&self.inner.heartbeats).phi(tokio::time::Instant::now())
    }

    /// The latest membership events this node saw (at most 100), oldest first, each with its
    /// time in Unix milliseconds.
    pub fn recent_events(&self) -> Vec<(u64, MembershipEvent)> {
        lock(&self.inner.recent).iter().cloned().collect()
    }

    /// A receiver that sees every new view.
    pub fn watch(&self) -> watch::Receiver<MembershipView> {
        self.inner.view_tx.subscribe()
    }

    /// Events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<MembershipEvent> {
        self.inner.events.subscribe()
    }

    /// The committed configuration, as it changes (None until one is known; always None in
    /// gossip-only mode).
    pub fn configuration(&self) -> watch::Receiver<Option<Committed>> {
        match self.inner.configuration.get() {
            Some(m) => m.committed_watch(),
            None => watch::channel(None).1,
        }
    }

    /// Every configuration this node learns is committed, in order, from now on.
    pub fn commits(&self) -> broadcast::Receiver<Committed> {
        match self.inner.configuration.get() {
            Some(m) => m.commits(),
            None => broadcast::channel(1).1,
        }
    }

    /// Publishes a key about this node (kept across generations).
    pub async fn set_key(&self, key: &str, value: &str) {
        self.inner.set_key(key, value).await;
    }

    /// Graceful leave: [`Membership::announce_leave`], then stops.
    pub async fn leave(&self) {
        self.announce_leave().await;
        self.shutdown().await;
    }

    /// Publishes `leaving` and waits until a committed configuration no longer holds this
    /// node or the leave grace runs out, gossiping meanwhile. Returns whether it was removed.
    /// Gossip goes on until [`Membership::shutdown`].
    pub async fn announce_leave(&self) -> bool {
        let grace = self.inner.config.leave_grace;
        info!(node = %self.inner.config.node_name, ?grace, "leaving the cluster");
        self.inner.leaving.store(true, Ordering::SeqCst);
        self.inner
            .set_key(keys::STATUS, NodeStatus::Leaving.as_str())
            .await;
        let me = self.self_id();
        let mut configs = self.configuration();
        let removed = async {
            let _ = configs
                .wait_for(|c| c.as_ref().is_none_or(|c| !c.config.contains(&me)))
                .await;
        };
        // Stay at least a few gossip rounds so the announcement spreads.
        let spread = tokio::time::sleep(self.inner.config.gossip_interval * 3);
        let (_, outcome) = tokio::join!(spread, tokio::time::timeout(grace, removed));
        match outcome {
            Ok(()) => {
                info!(node = %me, "removed from the configuration");
                true
            }
            Err(_) => {
                warn!(
                    node = %me,
                    "no configuration without this node was committed within the leave grace (no majority reachable?); the others will remove it after down_after"
                );
                false
            }
        }
    }

    /// Stops gossip and the configuration protocol at once (no announcement: the others will
    /// report this node failed).
    pub async fn shutdown(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        if let Some(m) = self.inner.configuration.get() {
            m.abort();
        }
        let current = self.inner.incarnation.lock().await.take();
        if let Some(inc) = current {
            inc.watcher.abort();
            if let Err(e) = inc.handle.shutdown().await {
                warn!(error = %e, "gossip stopped with an error");
            }
        }
    }
}

impl Inner {
    pub(crate) fn generation(&self) -> u64 {
        lock(&self.self_id).generation_id
    }

    pub(crate) fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::SeqCst)
    }

    pub(crate) fn view(&self) -> MembershipView {
        self.view_tx.borrow().clone()
    }

    pub(crate) async fn set_key(&self, key: &str, value: &str) {
        {
            let mut keys = lock(&self.keys);
            if keys.get(key).map(String::as_str) == Some(value) {
                return;
            }
            keys.insert(key.to_string(), value.to_string());
        }
        let chitchat = lock(&self.chitchat).clone();
        if let Some(c) = chitchat {
            c.lock().await.self_node_state().set(key, value);
        }
    }

    pub(crate) async fn start_incarnation(
        self: &Arc<Self>,
        generation: u64,
    ) -> Result<(), MembershipError> {
        let mut current = self.incarnation.lock().await;
        if let Some(old) = current.take() {
            old.watcher.abort();
            let _ = old.handle.shutdown().await;
        }
        if self.stopped.load(Ordering::SeqCst) {
            return Ok(());
        }
        let config = &self.config;
        let self_id = ChitchatId::new(config.node_name.clone(), generation, config.advertise_addr);
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
                max_interval: fd.max_interval.unwrap_or(config.gossip_interval * 4),
                initial_interval: fd.initial_interval.unwrap_or(config.gossip_interval),
                dead_node_grace_period: fd.dead_node_grace_period,
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
        };
        let initial: Vec<(String, String)> = lock(&self.keys)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let guard = ClusterGuard::open(
            self.gossip.as_ref(),
            config.advertise_addr,
            config.cluster_id.clone(),
        )
        .await
        .map_err(MembershipError::Gossip)?;
        let handle = chitchat::spawn_chitchat(chitchat_config, initial, &guard)
            .await
            .map_err(MembershipError::Gossip)?;
        let chitchat = handle.chitchat();
        *lock(&self.self_id) = self_id.clone();
        *lock(&self.chitchat) = Some(chitchat.clone());
        // From the first moment, the view holds this node itself.
        {
            let c = chitchat.lock().await;
            let members = build_members(&c, &self_id, &HashMap::new());
            self.view_tx.send_modify(|v| v.members = members);
        }
        let watcher = tokio::spawn(
            watch_loop(Arc::downgrade(self), chitchat, self_id.clone()).in_current_span(),
        )
        .abort_handle();
        *current = Some(Incarnation { handle, watcher });
        info!(
            node = %config.node_name,
            generation,
            addr = %config.advertise_addr,
            cluster = %config.cluster_id,
            seeds = ?config.seeds,
            "gossip started"
        );
        Ok(())
    }

    fn publish_events(&self, members: Vec<Member>) {
        let mut new_events = Vec::new();
        self.view_tx.send_if_modified(|v| {
            if v.members == members {
                return false;
            }
            v.members = members;
            new_events = lock(&self.tracker).update(v);
            true
        });
        if !new_events.is_empty() {
            let now = self.clock.unix_millis();
            let mut recent = lock(&self.recent);
            for event in &new_events {
                if recent.len() == RECENT_EVENTS {
                    recent.pop_front();
                }
                recent.push_back((now, event.clone()));
            }
        }
        for event in new_events {
            log_event(&event, &self.config.node_name);
            let _ = self.events.send(event);
        }
    }
}

/// Recomputes the members after every gossip round or liveness change, and emits events.
/// The view is updated before the events go out, so whoever reacts to an event reads a view
/// that includes it.
async fn watch_loop(
    inner: std::sync::Weak<Inner>,
    chitchat: Arc<Mutex<Chitchat>>,
    self_id: ChitchatId,
) {
    let Some(gossip_interval) = inner.upgrade().map(|i| i.config.gossip_interval) else {
        return;
    };
    let mut live_rx = chitchat.lock().await.live_nodes_watcher();
    let mut tick = tokio::time::interval(gossip_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When each incarnation was last seen live (a round counter).
    let mut last_live: HashMap<ChitchatId, u64> = HashMap::new();
    let mut round: u64 = 0;
    loop {
        let (members, this) = {
            let c = chitchat.lock().await;
            round += 1;
            for id in c.live_nodes() {
                last_live.insert(id.clone(), round);
            }
            let Some(this) = inner.upgrade() else { return };
            observe_heartbeats(&c, &self_id, &this.heartbeats);
            (build_members(&c, &self_id, &last_live), this)
        };
        // Not held across the wait below: a dropped membership ends this loop.
        this.publish_events(members);
        drop(this);
        tokio::select! {
            changed = live_rx.changed() => if changed.is_err() { return },
            _ = tick.tick() => {}
        }
    }
}

/// Feeds every peer's heartbeat counter to the phi estimate.
fn observe_heartbeats(
    c: &Chitchat,
    self_id: &ChitchatId,
    heartbeats: &std::sync::Mutex<Heartbeats>,
) {
    let peers = c
        .node_states()
        .iter()
        .filter(|(id, _)| id.node_id != self_id.node_id)
        .map(|(id, state)| {
            (
                &id.node_id[..],
                id.generation_id,
                u64::from(state.heartbeat()),
            )
        });
    lock(heartbeats).sweep(tokio::time::Instant::now(), peers);
}

/// Every incarnation that was ever confirmed alive (a node merely heard of, whose heartbeats
/// the failure detector has not judged yet, is not shown), one per name: a live incarnation
/// if there is one, else the one live most recently. Generations are not trusted to grow:
/// they come from wall clocks, which can step back between restarts.
fn build_members(
    c: &Chitchat,
    self_id: &ChitchatId,
    last_live: &HashMap<ChitchatId, u64>,
) -> Vec<Member> {
    let live: HashSet<&ChitchatId> = c.live_nodes().collect();
    // name -> (rank, member); higher rank wins.
    let mut by_name: BTreeMap<String, ((bool, u64, u64), Member)> = BTreeMap::new();
    for (id, state) in c.node_states() {
        let is_self = id == self_id;
        let is_live = is_self || live.contains(id);
        let seen = if is_self {
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
            config_epoch: state.get(keys::CONFIG_EPOCH).and_then(|v| v.parse().ok()),
            lineage: state.get(keys::CONFIG_LINEAGE).map(str::to_string),
            shards: state.get(keys::SHARDS).and_then(|v| v.parse().ok()),
            shards_ready: state.get(keys::SHARDS_READY).and_then(|v| v.parse().ok()),
        };
        let rank = (is_live, seen, id.generation_id);
        match by_name.get(&member.name) {
            Some((best, _)) if *best >= rank => {}
            _ => {
                by_name.insert(member.name.clone(), (rank, member));
            }
        }
    }
    by_name.into_values().map(|(_, m)| m).collect()
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
