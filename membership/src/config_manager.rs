//! The configuration manager: runs the Paxos acceptor for this node, proposes the changes
//! gossip calls for, learns committed configurations and acts on them.
//!
//! - Acceptor: `Prepare`/`Accept` requests are answered by `paxos::accept` against the
//!   durable state, which is stored before the answer leaves.
//! - Proposer: the coordinator (the live member with the smallest name) proposes as soon as
//!   gossip calls for a change; any other member takes over if a change stays pending, after
//!   a jittered delay. A failed attempt backs off with jitter from the node RNG.
//! - Learner: a committed configuration arrives in a `Commit` (sent by the proposer to the old
//!   and new members), or is fetched from a member that gossips a newer epoch. It is checked
//!   (the quorum is a majority of the previous members, and it builds on the epoch this node
//!   knows) before it is stored and acted on: this node becomes `up` when it is a member, and
//!   rejoins as a new generation if it finds itself removed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use shoal_transport::{NodeRng, Peer, ServiceId, Transport};
use tokio::sync::{broadcast, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::{Instrument, debug, error, info, warn};

use crate::changes::{Change, Why, apply, desired_changes};
use crate::configuration::{Committed, ConfigMember, Configuration, MemberId};
use crate::durable::DurableCell;
use crate::membership::{Inner, MembershipError};
use crate::paxos::{
    Ballot, ConfigRequest, ConfigResponse, DurableState, Refusal, choose_value, vote_durably,
};
use crate::status::{NodeStatus, keys};
use crate::view::{ConfigView, MembershipView};

/// The transport service of the configuration protocol.
pub const CONFIG_SERVICE: ServiceId = ServiceId(1);

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) struct ConfigManager {
    membership: Weak<Inner>,
    transport: Transport,
    rng: NodeRng,
    cell: Arc<dyn DurableCell>,
    name: String,
    state: std::sync::Mutex<DurableState>,
    committed_tx: watch::Sender<Option<Committed>>,
    commits: broadcast::Sender<Committed>,
    tasks: std::sync::Mutex<Vec<AbortHandle>>,
    max_round: AtomicU64,
    warned: std::sync::Mutex<HashSet<String>>,
    /// What the view shows about proposals.
    proposing: std::sync::Mutex<Option<String>>,
    pending: std::sync::Mutex<Vec<String>>,
}

impl ConfigManager {
    /// Loads the durable state. Errors name the place and say what to do.
    pub(crate) fn new(
        membership: Weak<Inner>,
        transport: Transport,
        rng: NodeRng,
        cell: Arc<dyn DurableCell>,
    ) -> Result<Arc<Self>, (String, String)> {
        let state = match cell.load() {
            Ok(None) => DurableState::default(),
            Ok(Some(bytes)) => postcard::from_bytes(&bytes).map_err(|e| {
                (
                    cell.describe(),
                    format!("it is not a Shoal membership state ({e}); move it away to start this node afresh"),
                )
            })?,
            Err(e) => return Err((cell.describe(), e.to_string())),
        };
        let name = transport.name().to_string();
        let committed = state.committed.clone();
        let (committed_tx, _) = watch::channel(committed);
        let (commits, _) = broadcast::channel(64);
        Ok(Arc::new(Self {
            membership,
            transport,
            rng,
            cell,
            name,
            state: std::sync::Mutex::new(state),
            committed_tx,
            commits,
            tasks: std::sync::Mutex::new(Vec::new()),
            max_round: AtomicU64::new(0),
            warned: std::sync::Mutex::new(HashSet::new()),
            proposing: std::sync::Mutex::new(None),
            pending: std::sync::Mutex::new(Vec::new()),
        }))
    }

    fn persist(&self, state: &DurableState) -> Result<(), String> {
        let bytes = postcard::to_allocvec(state).map_err(|e| e.to_string())?;
        self.cell.store(&bytes).map_err(|e| {
            format!(
                "cannot store the membership state in {}: {e}",
                self.cell.describe()
            )
        })
    }

    /// Takes a generation for a new incarnation: the clock's milliseconds, but always above
    /// every generation this state has run as. Recorded durably before use.
    pub(crate) fn claim_generation(&self, clock_ms: u64) -> Result<u64, MembershipError> {
        let mut st = lock(&self.state);
        let (generation, next) = st.claim_generation(clock_ms);
        self.persist(&next)
            .map_err(|reason| MembershipError::State {
                place: self.cell.describe(),
                reason,
            })?;
        *st = next;
        Ok(generation)
    }

    pub(crate) fn committed_watch(&self) -> watch::Receiver<Option<Committed>> {
        self.committed_tx.subscribe()
    }

    pub(crate) fn commits(&self) -> broadcast::Receiver<Committed> {
        self.commits.subscribe()
    }

    pub(crate) fn abort(&self) {
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
    }

    fn spawn(self: &Arc<Self>, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(fut.in_current_span()).abort_handle();
        let mut tasks = lock(&self.tasks);
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }

    /// Bootstraps if told to and nothing is stored, then starts serving and driving.
    pub(crate) fn start(self: &Arc<Self>) {
        let Some(inner) = self.membership.upgrade() else {
            return;
        };
        let bootstrap = inner.config.bootstraps();
        let me = ConfigMember {
            id: MemberId::new(self.name.clone(), inner.generation()),
            addr: inner.config.advertise_addr,
        };
        let stored = lock(&self.state).committed.clone();
        match stored {
            Some(c) => info!(
                node = %self.name,
                epoch = c.epoch(),
                members = %c.config.describe(),
                "resuming from the stored configuration"
            ),
            None if bootstrap => {
                let lineage = self.rng.next_u64();
                let genesis = Committed::genesis(Configuration::genesis_with(
                    lineage,
                    me,
                    inner.config.placement,
                ));
                let mut st = lock(&self.state);
                let mut next = st.clone();
                next.adopt(genesis.clone());
                match self.persist(&next) {
                    Ok(()) => {
                        *st = next;
                        drop(st);
                        info!(
                            node = %self.name,
                            epoch = 1,
                            members = %genesis.config.describe(),
                            lineage = %format!("{lineage:x}"),
                            "bootstrapped a new cluster: epoch 1 with this node alone"
                        );
                        self.committed_tx.send_replace(Some(genesis.clone()));
                        let _ = self.commits.send(genesis);
                    }
                    Err(e) => error!(node = %self.name, error = %e, "cannot bootstrap"),
                }
            }
            None => {
                info!(node = %self.name, "joining: waiting to be added to the cluster's configuration")
            }
        }
        let inbox = self.transport.register(CONFIG_SERVICE, 256);
        let me = self.clone();
        self.spawn(async move { me.serve(inbox).await });
        let me = self.clone();
        self.spawn(async move { me.drive().await });
    }

    async fn serve(
        self: Arc<Self>,
        mut inbox: tokio::sync::mpsc::Receiver<shoal_transport::Inbound>,
    ) {
        while let Some(msg) = inbox.recv().await {
            let req: ConfigRequest = match msg.decode() {
                Ok(r) => r,
                Err(e) => {
                    warn!(peer = %msg.from, error = %e, "undecodable configuration request");
                    msg.reply_error(format!("undecodable configuration request: {e}"));
                    continue;
                }
            };
            let reply = match &req {
                ConfigRequest::Prepare { .. } | ConfigRequest::Accept { .. } => self.acceptor(&req),
                ConfigRequest::Commit(c) => {
                    self.learn(c.clone(), &msg.from.name).await;
                    ConfigResponse::Ack
                }
                ConfigRequest::Fetch => {
                    ConfigResponse::Current(lock(&self.state).committed.clone())
                }
            };
            msg.reply(&reply);
        }
    }

    /// The acceptor, with the durable state stored before the reply.
    fn acceptor(&self, req: &ConfigRequest) -> ConfigResponse {
        if let ConfigRequest::Prepare { ballot, .. } | ConfigRequest::Accept { ballot, .. } = req {
            self.max_round.fetch_max(ballot.round, Ordering::Relaxed);
        }
        let mut st = lock(&self.state);
        let reply = vote_durably(&mut st, &self.name, req, |next| self.persist(next));
        if let ConfigResponse::Refused(Refusal::Unavailable(e)) = &reply {
            error!(node = %self.name, error = %e, "refusing to vote: the vote could not be made durable");
        }
        reply
    }

    /// Adopts a committed configuration after checking it, and acts on it.
    async fn learn(&self, c: Committed, from: &str) {
        let Some(inner) = self.membership.upgrade() else {
            return;
        };
        let me = MemberId::new(self.name.clone(), inner.generation());
        let old = {
            let mut st = lock(&self.state);
            let current = st.epoch();
            if c.epoch() <= current {
                if c.epoch() == current
                    && st.config().is_some_and(|k| k.digest() != c.config.digest())
                {
                    error!(
                        node = %self.name, epoch = current, from,
                        "two different configurations for one epoch: this must never happen"
                    );
                }
                return;
            }
            if let Some(k) = st.config()
                && k.lineage != c.config.lineage
            {
                self.warn_lineage(from, c.config.lineage, k.lineage);
                return;
            }
            let mine = inner.config.placement.shards;
            if c.config.placement.shards != mine {
                if lock(&self.warned).insert(format!("shards/{}", c.config.placement.shards)) {
                    error!(
                        node = %self.name,
                        cluster_shards = c.config.placement.shards,
                        node_shards = mine,
                        "refusing to join: the cluster was created with {} shards and this node with {mine}; restart it with --shards {}",
                        c.config.placement.shards,
                        c.config.placement.shards
                    );
                }
                return;
            }
            if let Err(e) = c.verify_with_slack(st.config(), inner.config.quorum_slack) {
                warn!(node = %self.name, from, epoch = c.epoch(), reason = %e, "ignoring a configuration that is not proven committed");
                return;
            }
            let old = st.config().cloned();
            let mut next = st.clone();
            next.adopt(c.clone());
            if let Err(e) = self.persist(&next) {
                error!(node = %self.name, error = %e, "the new configuration could not be stored; using it in memory");
            }
            *st = next;
            old
        };
        info!(
            node = %self.name,
            epoch = c.epoch(),
            members = %c.config.describe(),
            quorum = c.quorum.len(),
            from,
            "configuration committed"
        );
        self.committed_tx.send_replace(Some(c.clone()));
        let _ = self.commits.send(c.clone());
        self.publish(&inner).await;
        let removed = old.as_ref().is_some_and(|o| o.contains(&me)) && !c.config.contains(&me);
        if removed && !inner.is_leaving() {
            self.rejoin(&inner, c.epoch()).await;
        } else {
            self.settle_status(&inner).await;
        }
    }

    fn warn_lineage(&self, peer: &str, theirs: u64, ours: u64) {
        if lock(&self.warned).insert(format!("{peer}/{theirs:x}")) {
            error!(
                node = %self.name,
                peer,
                their_lineage = %format!("{theirs:x}"),
                our_lineage = %format!("{ours:x}"),
                "a node of another cluster lineage: two nodes were bootstrapped with the same cluster id, and the two clusters will never merge (see README: two bootstrapped nodes)"
            );
        }
    }

    /// This node was removed: it stops being a member and comes back as a new generation.
    async fn rejoin(&self, inner: &Arc<Inner>, epoch: u64) {
        let old = inner.generation();
        let generation = match self.claim_generation(inner.clock.unix_millis()) {
            Ok(g) => g,
            Err(e) => {
                error!(node = %self.name, error = %e, "cannot rejoin");
                return;
            }
        };
        warn!(
            node = %self.name,
            epoch,
            old_generation = old,
            generation,
            "this node was removed from the cluster configuration (the others lost it for longer than down_after, e.g. during a partition): it stops serving and rejoins as a new generation"
        );
        inner
            .set_key(keys::STATUS, NodeStatus::Joining.as_str())
            .await;
        if let Err(e) = inner.start_incarnation(generation).await {
            error!(node = %self.name, error = %e, "could not restart gossip as a new generation");
        }
    }

    /// `up` when this incarnation is a member of the committed configuration.
    async fn settle_status(&self, inner: &Arc<Inner>) {
        if inner.is_leaving() {
            return;
        }
        let me = MemberId::new(self.name.clone(), inner.generation());
        let member = lock(&self.state).config().is_some_and(|c| c.contains(&me));
        let status = if member {
            NodeStatus::Up
        } else {
            NodeStatus::Joining
        };
        inner.set_key(keys::STATUS, status.as_str()).await;
    }

    /// Gossips the committed epoch, digest and lineage.
    async fn publish(&self, inner: &Arc<Inner>) {
        let Some(c) = lock(&self.state).config().cloned() else {
            return;
        };
        inner
            .set_key(keys::CONFIG_EPOCH, &c.epoch.to_string())
            .await;
        inner
            .set_key(keys::CONFIG_DIGEST, &format!("{:x}", c.digest()))
            .await;
        inner
            .set_key(keys::CONFIG_LINEAGE, &format!("{:x}", c.lineage))
            .await;
    }

    /// Sends `req` to every member of `config` (this node answers itself), concurrently, and
    /// collects the answers until `enough` says so or every member answered (or timed out):
    /// a dead member must not hold up a decision a majority already made.
    async fn ask_all(
        self: &Arc<Self>,
        config: &Configuration,
        req: ConfigRequest,
        timeout: Duration,
        enough: impl Fn(&[(ConfigMember, Result<ConfigResponse, String>)]) -> bool,
    ) -> Vec<(ConfigMember, Result<ConfigResponse, String>)> {
        let mut set = tokio::task::JoinSet::new();
        let mut out = Vec::new();
        for m in &config.members {
            if m.id.name == self.name {
                out.push((m.clone(), Ok(self.acceptor(&req))));
                continue;
            }
            let transport = self.transport.clone();
            let (m, req) = (m.clone(), req.clone());
            set.spawn(async move {
                let peer = Peer::named(m.id.name.clone(), m.addr);
                let r = transport
                    .request::<_, ConfigResponse>(peer, CONFIG_SERVICE, &req, timeout)
                    .await
                    .map_err(|e| e.to_string());
                (m, r)
            });
        }
        while !enough(&out) {
            match set.join_next().await {
                Some(Ok(r)) => out.push(r),
                Some(Err(_)) => {}
                None => break,
            }
        }
        out
    }

    /// One Paxos attempt for the next epoch, proposing `changes` (or whatever value an
    /// earlier ballot may already have had accepted).
    async fn propose(self: &Arc<Self>, changes: &[Change]) -> Result<Committed, String> {
        let (inner_cfg, slack, readiness, view) = {
            let inner = self.membership.upgrade().ok_or("stopped")?;
            (
                inner.config.config_request_timeout,
                inner.config.quorum_slack,
                inner.config.shard_readiness,
                inner.view(),
            )
        };
        let (cur, promised_round) = {
            let st = lock(&self.state);
            let cur = st.committed.clone().ok_or("no configuration yet")?;
            (cur, st.promised.as_ref().map_or(0, |b| b.round))
        };
        let epoch = cur.epoch() + 1;
        let round = self.max_round.load(Ordering::Relaxed).max(promised_round) + 1;
        self.max_round.fetch_max(round, Ordering::Relaxed);
        let ballot = Ballot {
            round,
            proposer: self.name.clone(),
        };
        let need = cur.config.majority().saturating_sub(slack).max(1);
        let summary: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
        *lock(&self.proposing) = Some(format!(
            "epoch {epoch}, ballot {ballot}: {}",
            summary.join("; ")
        ));
        debug!(node = %self.name, epoch, %ballot, changes = ?summary, "proposing");

        let enough = |wanted: fn(&ConfigResponse) -> bool| {
            move |got: &[(ConfigMember, Result<ConfigResponse, String>)]| {
                got.iter()
                    .any(|(_, r)| matches!(r, Ok(ConfigResponse::Refused(Refusal::Decided(_)))))
                    || got
                        .iter()
                        .filter(|(_, r)| r.as_ref().is_ok_and(wanted))
                        .count()
                        >= need
            }
        };
        let replies = self
            .ask_all(
                &cur.config,
                ConfigRequest::Prepare {
                    epoch,
                    ballot: ballot.clone(),
                },
                inner_cfg,
                enough(|r| matches!(r, ConfigResponse::Promise { .. })),
            )
            .await;
        let mut promises = Vec::new();
        for (member, reply) in replies {
            match reply {
                Ok(ConfigResponse::Promise { accepted, .. }) => promises.push(accepted),
                Ok(ConfigResponse::Refused(Refusal::Decided(c))) => {
                    self.learn(c, &member.id.name).await;
                    return Err(format!("epoch {epoch} was already decided"));
                }
                Ok(ConfigResponse::Refused(Refusal::Promised(b))) => {
                    self.max_round.fetch_max(b.round, Ordering::Relaxed);
                }
                Ok(ConfigResponse::Refused(Refusal::Behind { .. })) => {
                    self.send_commit(&member, cur.clone());
                }
                _ => {}
            }
        }
        if promises.len() < need {
            return Err(format!(
                "{} promises for epoch {epoch}, {need} needed",
                promises.len()
            ));
        }
        let mut own = apply(&cur.config, changes);
        if readiness && !settled(&cur.config, &view) {
            own.keep_history(&cur.config);
        }
        let value = choose_value(&promises, own);

        let replies = self
            .ask_all(
                &cur.config,
                ConfigRequest::Accept {
                    epoch,
                    ballot,
                    value: value.clone(),
                },
                inner_cfg,
                enough(|r| matches!(r, ConfigResponse::Accepted { .. })),
            )
            .await;
        let mut quorum = Vec::new();
        for (member, reply) in replies {
            match reply {
                Ok(ConfigResponse::Accepted { from }) => quorum.push(from),
                Ok(ConfigResponse::Refused(Refusal::Decided(c))) => {
                    self.learn(c, &member.id.name).await;
                    return Err(format!("epoch {epoch} was already decided"));
                }
                Ok(ConfigResponse::Refused(Refusal::Promised(b))) => {
                    self.max_round.fetch_max(b.round, Ordering::Relaxed);
                }
                _ => {}
            }
        }
        if quorum.len() < need {
            return Err(format!(
                "{} accepts for epoch {epoch}, {need} needed",
                quorum.len()
            ));
        }
        let committed = Committed {
            config: value,
            prev_members: cur.config.members.iter().map(|m| m.id.clone()).collect(),
            prev_digest: Some(cur.config.digest()),
            quorum,
        };
        self.learn(committed.clone(), &self.name).await;
        let mut tell: Vec<ConfigMember> = cur.config.members.clone();
        tell.extend(committed.config.members.iter().cloned());
        tell.sort();
        tell.dedup();
        for m in tell.iter().filter(|m| m.id.name != self.name) {
            self.send_commit(m, committed.clone());
        }
        Ok(committed)
    }

    /// Tells `member` about a committed configuration, in the background.
    fn send_commit(self: &Arc<Self>, member: &ConfigMember, c: Committed) {
        let transport = self.transport.clone();
        let peer = Peer::named(member.id.name.clone(), member.addr);
        self.spawn(async move {
            let _ = transport
                .request::<_, ConfigResponse>(
                    peer,
                    CONFIG_SERVICE,
                    &ConfigRequest::Commit(c),
                    Duration::from_secs(2),
                )
                .await;
        });
    }

    /// Fetches a newer configuration from a live member that gossips one.
    async fn catch_up(self: &Arc<Self>, view: &MembershipView, timeout: Duration) {
        let (mine, lineage) = {
            let st = lock(&self.state);
            (st.epoch(), st.config().map(|c| c.lineage))
        };
        for m in view.live() {
            if let (Some(ours), Some(theirs)) = (lineage, m.lineage.as_deref()) {
                let theirs = u64::from_str_radix(theirs, 16).unwrap_or_default();
                if theirs != ours {
                    self.warn_lineage(&m.name, theirs, ours);
                    continue;
                }
            }
        }
        let source = view
            .live()
            .filter(|m| m.name != self.name)
            .filter(|m| m.config_epoch.unwrap_or(0) > mine)
            .filter(|m| {
                lineage
                    .is_none_or(|ours| m.lineage.as_deref() == Some(format!("{ours:x}").as_str()))
            })
            .max_by_key(|m| m.config_epoch);
        let Some(source) = source else { return };
        let peer = Peer::named(source.name.clone(), source.addr);
        match self
            .transport
            .request::<_, ConfigResponse>(peer, CONFIG_SERVICE, &ConfigRequest::Fetch, timeout)
            .await
        {
            Ok(ConfigResponse::Current(Some(c))) => self.learn(c, &source.name).await,
            Ok(_) => {}
            Err(e) => {
                debug!(node = %self.name, from = %source.name, error = %e, "fetching the configuration failed")
            }
        }
    }

    /// The proposer and learner loop.
    async fn drive(self: Arc<Self>) {
        let Some((gossip_interval, timeout, down_after, mut view_rx)) =
            self.membership.upgrade().map(|i| {
                (
                    i.config.gossip_interval,
                    i.config.config_request_timeout,
                    i.config.down_after,
                    i.view_tx.subscribe(),
                )
            })
        else {
            return;
        };
        let mut tick = tokio::time::interval(gossip_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut down_since: HashMap<MemberId, Instant> = HashMap::new();
        let mut pending_since: Option<Instant> = None;
        let mut takeover = gossip_interval * 4 + self.rng.jitter(gossip_interval * 8);
        let mut not_before = Instant::now();
        // When a member last came back after being seen down: right after a partition heals,
        // members come back one by one as the failure detector hears from them again, and a
        // proposer that regains a majority must not remove the ones not heard from yet.
        let mut last_recovery: Option<Instant> = None;
        if let Some(inner) = self.membership.upgrade() {
            self.publish(&inner).await;
            self.settle_status(&inner).await;
        }
        loop {
            tokio::select! {
                changed = view_rx.changed() => if changed.is_err() { return },
                _ = tick.tick() => {}
            }
            let Some(inner) = self.membership.upgrade() else {
                return;
            };
            let view = inner.view();
            let me = MemberId::new(self.name.clone(), inner.generation());
            drop(inner);
            self.catch_up(&view, timeout).await;
            let now = Instant::now();
            let Some(config) = lock(&self.state).config().cloned() else {
                self.show(&view, None, now);
                continue;
            };
            // Down tracking for the members of the configuration.
            down_since.retain(|id, _| config.contains(id));
            for m in &config.members {
                let live = m.id == me
                    || view
                        .member(&m.id.name)
                        .is_some_and(|v| v.live && v.generation == m.id.generation);
                if live {
                    if down_since.remove(&m.id).is_some() {
                        last_recovery = Some(now);
                    }
                } else {
                    down_since.entry(m.id.clone()).or_insert(now);
                }
            }
            let mut changes = desired_changes(&config, &view, &down_since, now, down_after);
            if last_recovery.is_some_and(|t| now.duration_since(t) < gossip_interval * 6) {
                changes.retain(|c| {
                    !matches!(
                        c,
                        Change::Remove {
                            why: Why::Down(_),
                            ..
                        }
                    )
                });
            }
            *lock(&self.pending) = changes.iter().map(|c| c.to_string()).collect();
            self.show(&view, Some(&config), now);
            if changes.is_empty() {
                pending_since = None;
                continue;
            }
            let since = *pending_since.get_or_insert(now);
            let voter = lock(&self.state).acceptor_slot(&self.name).is_some();
            // A member's vote may come from a newer incarnation of it (a restart with its
            // data keeps its place), so count names that are live, whatever the generation.
            let name_live =
                |name: &str| name == self.name || view.member(name).is_some_and(|v| v.live);
            let live_voters: Vec<&str> = config
                .members
                .iter()
                .map(|m| m.id.name.as_str())
                .filter(|n| name_live(n))
                .collect();
            let slack = self
                .membership
                .upgrade()
                .map_or(0, |i| i.config.quorum_slack);
            let reachable = live_voters.len() >= config.majority().saturating_sub(slack).max(1);
            let coordinator = live_voters.iter().min().copied();
            let my_turn =
                coordinator == Some(self.name.as_str()) || now.duration_since(since) >= takeover;
            if !(voter && reachable && my_turn && now >= not_before) {
                tracing::trace!(
                    node = %self.name, voter, reachable, my_turn, ?coordinator,
                    pending = ?lock(&self.pending), "not proposing"
                );
                continue;
            }
            match self.propose(&changes).await {
                Ok(c) => {
                    debug!(node = %self.name, epoch = c.epoch(), "proposal committed");
                    pending_since = None;
                    takeover = gossip_interval * 4 + self.rng.jitter(gossip_interval * 8);
                }
                Err(e) => {
                    debug!(node = %self.name, reason = %e, "proposal did not commit; backing off");
                    not_before = Instant::now() + self.rng.jitter(gossip_interval * 4);
                }
            }
            *lock(&self.proposing) = None;
        }
    }

    /// Updates the configuration part of the view.
    fn show(&self, view: &MembershipView, config: Option<&Configuration>, _now: Instant) {
        let Some(inner) = self.membership.upgrade() else {
            return;
        };
        let summary = config.map(|c| {
            let live = c
                .members
                .iter()
                .filter(|m| {
                    m.id.name == self.name
                        || view
                            .member(&m.id.name)
                            .is_some_and(|v| v.live && v.generation == m.id.generation)
                })
                .count();
            ConfigView {
                epoch: c.epoch,
                lineage: format!("{:x}", c.lineage),
                digest: format!("{:x}", c.digest()),
                members: c.members.iter().map(|m| m.id.clone()).collect(),
                in_majority: live >= c.majority(),
                pending: lock(&self.pending).clone(),
                proposing: lock(&self.proposing).clone(),
            }
        });
        inner.view_tx.send_if_modified(|v| {
            if v.configuration != summary {
                v.configuration = summary;
                true
            } else {
                false
            }
        });
    }
}

/// Whether every member of `config` reported (in gossip) that it serves every shard it is
/// primary for in `config`'s epoch: then no shard's newest copy can be older than that
/// epoch, and the next configuration's history can start there.
fn settled(config: &Configuration, view: &MembershipView) -> bool {
    config.members.iter().all(|m| {
        view.member(&m.id.name).is_some_and(|v| {
            v.generation == m.id.generation && v.shards_ready.is_some_and(|r| r >= config.epoch)
        })
    })
}
