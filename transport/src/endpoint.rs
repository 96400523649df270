//! The node's QUIC endpoint: one per node, serving gossip and every data-plane message.
//!
//! [`Transport`] is the handle the rest of the node holds. It dials peers through the
//! connection cache (one dial per peer at a time, backoff with jitter after failures), sends
//! one-way messages and requests as frames, and delivers what arrives to registered services
//! and to chitchat. Dropping the last handle aborts every task of the transport.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use chitchat::{ChitchatMessage, Serializable};
use quinn::{IdleTimeout, VarInt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio::time::Instant;
use tracing::{debug, trace, warn};

use crate::backoff::Backoff;
use crate::connection::{self, Conn, close_code};
use crate::environment::Environment;
use crate::error::{ConnectError, RequestError, SendError, TransportError};
use crate::events::{Direction, TransportEvent};
use crate::frame::{DEFAULT_MAX_FRAME_SIZE, Frame, STREAM_GOSSIP, encode};
use crate::gossip::GossipTransport;
use crate::identity::NodeIdentity;
use crate::peers::{Lookup, Peers};
use crate::service::{Inbound, PeerInfo, ServiceId};
use crate::stats::{Counters, TransportStats};
use crate::tasks::TaskSet;
use crate::tls;

/// Settings of a transport. [`TransportConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// UDP address to bind.
    pub listen: SocketAddr,
    /// Largest frame accepted or sent; larger ones close the connection (default 16 MiB).
    pub max_frame_size: usize,
    /// A connection that hears nothing for this long is closed (default 10 s).
    pub idle_timeout: Duration,
    /// Keep-alive interval, well under the idle timeout (default 2 s).
    pub keep_alive: Duration,
    /// Limit on one dial, handshake included (default 5 s).
    pub connect_timeout: Duration,
    /// Wait between failed dials to the same peer.
    pub backoff: Backoff,
    /// A gossip message not delivered within this is dropped (default 3 s).
    pub gossip_send_timeout: Duration,
    /// Gossip messages in flight at once across all peers; more are dropped (default 1024).
    pub max_inflight_gossip: usize,
}

impl TransportConfig {
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            idle_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(5),
            backoff: Backoff::default(),
            gossip_send_timeout: Duration::from_secs(3),
            max_inflight_gossip: 1024,
        }
    }
}

/// Where to send: an address, and optionally the node name expected there (checked against
/// the peer's certificate).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer {
    pub addr: SocketAddr,
    pub name: Option<String>,
}

impl Peer {
    pub fn named(name: impl Into<String>, addr: SocketAddr) -> Self {
        Self {
            addr,
            name: Some(name.into()),
        }
    }
}

impl From<SocketAddr> for Peer {
    fn from(addr: SocketAddr) -> Self {
        Self { addr, name: None }
    }
}

impl From<&PeerInfo> for Peer {
    fn from(p: &PeerInfo) -> Self {
        Self::named(p.name.clone(), p.addr)
    }
}

#[derive(Default)]
pub(crate) struct Services {
    map: RwLock<HashMap<ServiceId, mpsc::Sender<Inbound>>>,
}

impl Services {
    pub(crate) fn get(&self, id: ServiceId) -> Option<mpsc::Sender<Inbound>> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .filter(|tx| !tx.is_closed())
            .cloned()
    }
}

/// State shared by the transport handle and its tasks.
pub(crate) struct Shared {
    name: String,
    endpoint: quinn::Endpoint,
    client_config: quinn::ClientConfig,
    pub(crate) config: TransportConfig,
    env: Environment,
    pub(crate) peers: Peers,
    pub(crate) services: Services,
    pub(crate) tasks: TaskSet,
    events: broadcast::Sender<TransportEvent>,
    gossip_tx: mpsc::Sender<(SocketAddr, ChitchatMessage)>,
    pub(crate) gossip_rx: Mutex<Option<mpsc::Receiver<(SocketAddr, ChitchatMessage)>>>,
    gossip_permits: Arc<Semaphore>,
    next_conn_id: AtomicU64,
    local_addr: SocketAddr,
    pub(crate) counters: Counters,
}

impl Shared {
    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn emit(&self, event: TransportEvent) {
        let _ = self.events.send(event);
    }

    pub(crate) fn deliver_gossip(&self, from: SocketAddr, msg: ChitchatMessage) {
        self.counters
            .gossip_received
            .fetch_add(1, Ordering::Relaxed);
        if self.gossip_tx.try_send((from, msg)).is_err() {
            debug!(%from, "gossip inbox full or closed; message dropped");
        }
    }

    /// Returns a connection to `peer`, dialing if needed. Concurrent callers share one dial.
    /// With `wait_backoff`, waits out a backoff in force instead of failing at once.
    pub(crate) async fn connection(
        self: &Arc<Self>,
        peer: &Peer,
        wait_backoff: bool,
    ) -> Result<Arc<Conn>, ConnectError> {
        loop {
            let mut rx = match self
                .peers
                .lookup(peer.addr, peer.name.as_deref(), Instant::now())
            {
                Lookup::Ready(conn) => return Ok(conn),
                Lookup::WrongPeer(actual) => {
                    return Err(ConnectError::WrongPeer {
                        addr: peer.addr,
                        expected: peer.name.clone().unwrap_or_default(),
                        actual,
                    });
                }
                Lookup::BackingOff(at) => {
                    if !wait_backoff {
                        return Err(ConnectError::BackingOff {
                            addr: peer.addr,
                            retry_in: at.saturating_duration_since(Instant::now()),
                        });
                    }
                    tokio::time::sleep_until(at).await;
                    continue;
                }
                Lookup::Wait(rx) => rx,
                Lookup::Dial(tx, rx) => {
                    let shared = self.clone();
                    let peer = peer.clone();
                    self.tasks.spawn(async move { shared.dial(peer, tx).await });
                    rx
                }
            };
            let outcome = match rx.wait_for(Option::is_some).await {
                Ok(v) => v.clone(),
                // The dialing task was aborted: the transport is going away.
                Err(_) => return Err(ConnectError::Shutdown),
            };
            match outcome {
                Some(Ok(conn)) if conn.is_closed() => continue,
                Some(Ok(conn)) => match &peer.name {
                    Some(expected) if *expected != conn.peer.name => {
                        return Err(ConnectError::WrongPeer {
                            addr: peer.addr,
                            expected: expected.clone(),
                            actual: conn.peer.name.clone(),
                        });
                    }
                    _ => return Ok(conn),
                },
                Some(Err(e)) => return Err(e),
                None => return Err(ConnectError::Shutdown),
            }
        }
    }

    async fn dial(
        self: Arc<Self>,
        peer: Peer,
        tx: tokio::sync::watch::Sender<crate::peers::DialOutcome>,
    ) {
        let addr = peer.addr;
        let server_name = peer.name.as_deref().unwrap_or(tls::ANY_PEER);
        let attempt = async {
            let connecting = self
                .endpoint
                .connect_with(self.client_config.clone(), addr, server_name)
                .map_err(|e| ConnectError::Failed {
                    addr,
                    reason: e.to_string(),
                })?;
            match tokio::time::timeout(self.config.connect_timeout, connecting).await {
                Err(_) => Err(ConnectError::Timeout { addr }),
                Ok(Err(e)) => Err(ConnectError::Failed {
                    addr,
                    reason: e.to_string(),
                }),
                Ok(Ok(quic)) => connection::start(&self, quic, Direction::Outgoing).ok_or(
                    ConnectError::Failed {
                        addr,
                        reason: "peer refused by protocol checks".into(),
                    },
                ),
            }
        };
        let outcome = attempt.await;
        match &outcome {
            Ok(_) => self.peers.dial_finished(addr),
            Err(e) => {
                let failures = self.peers.dial_failed(addr);
                let delay = self.config.backoff.delay(failures, &self.env.rng);
                self.peers.set_retry_at(addr, Instant::now() + delay);
                debug!(%addr, failures, ?delay, error = %e, "dial failed; backing off");
            }
        }
        let _ = tx.send(Some(outcome));
    }

    /// Sends one gossip message on its own stream, in the background. Never waits: a slow
    /// or unreachable peer costs one task and one permit until the send timeout, never a
    /// stall of gossip to the others.
    pub(crate) fn send_gossip(self: &Arc<Self>, to: SocketAddr, msg: ChitchatMessage) {
        let to = connection::canonical(to);
        if self.peers.live(to).is_none() && self.peers.backing_off(to, Instant::now()) {
            trace!(%to, "peer backing off; gossip message dropped");
            return;
        }
        let Ok(permit) = self.gossip_permits.clone().try_acquire_owned() else {
            debug!(%to, "too many gossip messages in flight; message dropped");
            return;
        };
        self.counters.gossip_sent(&msg);
        let mut buf = Vec::with_capacity(1 + msg.serialized_len());
        buf.push(STREAM_GOSSIP);
        msg.serialize(&mut buf);
        let shared = self.clone();
        self.tasks.spawn(async move {
            let _permit = permit;
            let send = async {
                let conn = shared
                    .connection(&Peer::from(to), false)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut stream = conn.quic.open_uni().await.map_err(|e| e.to_string())?;
                stream.write_all(&buf).await.map_err(|e| e.to_string())?;
                stream.finish().map_err(|e| e.to_string())?;
                Ok::<_, String>(())
            };
            match tokio::time::timeout(shared.config.gossip_send_timeout, send).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => trace!(%to, error = %e, "gossip message not sent"),
                Err(_) => trace!(%to, "gossip message timed out"),
            }
        });
    }
}

async fn accept_loop(shared: Arc<Shared>) {
    while let Some(incoming) = shared.endpoint.accept().await {
        let s = shared.clone();
        shared.tasks.spawn(async move {
            let remote = incoming.remote_address();
            let connecting = match incoming.accept() {
                Ok(c) => c,
                Err(e) => {
                    debug!(%remote, error = %e, "incoming connection refused");
                    return;
                }
            };
            match tokio::time::timeout(s.config.connect_timeout, connecting).await {
                Ok(Ok(quic)) => {
                    connection::start(&s, quic, Direction::Incoming);
                }
                Ok(Err(e)) => warn!(
                    %remote,
                    error = %e,
                    "refused a connection: handshake failed (is the peer's certificate from this cluster's CA?)"
                ),
                Err(_) => debug!(%remote, "incoming handshake timed out"),
            }
        });
    }
}

fn quic_transport_config(c: &TransportConfig) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(IdleTimeout::try_from(c.idle_timeout).ok());
    t.keep_alive_interval(Some(c.keep_alive));
    t.max_concurrent_bidi_streams(VarInt::from_u32(0));
    t.max_concurrent_uni_streams(VarInt::from_u32(256));
    t.stream_receive_window(VarInt::from_u32(8 * 1024 * 1024));
    t.receive_window(VarInt::from_u32(32 * 1024 * 1024));
    t.send_window(32 * 1024 * 1024);
    t.datagram_receive_buffer_size(None);
    Arc::new(t)
}

/// The node's transport. Cheap to clone; the last clone dropped stops everything.
#[derive(Clone)]
pub struct Transport {
    shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        drop(self.0.tasks.abort_all());
        self.0
            .endpoint
            .close(VarInt::from_u32(close_code::SHUTDOWN), b"node stopped");
    }
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("name", &self.shared.name)
            .field("local_addr", &self.shared.local_addr)
            .finish()
    }
}

impl Transport {
    /// Binds the endpoint through `env`'s socket seam and starts accepting connections.
    pub async fn bind(
        config: TransportConfig,
        identity: NodeIdentity,
        env: Environment,
    ) -> Result<Self, TransportError> {
        let socket = env
            .sockets
            .bind(config.listen)
            .map_err(|cause| TransportError::Bind {
                addr: config.listen,
                cause,
            })?;
        let reset_key = ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            &identity.derived_secret("shoal/1 quic stateless reset"),
        );
        let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(reset_key));
        // Connection ids validated with a key stable across restarts, so that a restarted node
        // recognises packets for its previous incarnation's connections and answers them with
        // a stateless reset (which the reset key above makes valid).
        let cid_key = u64::from_le_bytes(
            identity.derived_secret("shoal/1 quic connection ids")[..8]
                .try_into()
                .unwrap_or_default(),
        );
        endpoint_config.cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        });
        let mut seed = [0u8; 32];
        env.rng.fill(&mut seed);
        endpoint_config.rng_seed(Some(seed));
        let params = quic_transport_config(&config);
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(tls::server_crypto(
            &identity,
            env.clock.clone(),
        )?));
        server_config.transport_config(params.clone());
        server_config.time_source(Arc::new(crate::clock::QuinnTime(env.clock.clone())));
        let mut client_config =
            quinn::ClientConfig::new(Arc::new(tls::client_crypto(&identity, env.clock.clone())?));
        client_config.transport_config(params);
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            endpoint_config,
            Some(server_config),
            socket,
            Arc::new(crate::quinn_runtime::SpannedRuntime::current()),
        )
        .map_err(TransportError::Endpoint)?;
        let local_addr = endpoint.local_addr().map_err(TransportError::Endpoint)?;
        let (events, _) = broadcast::channel(1024);
        let (gossip_tx, gossip_rx) = mpsc::channel(4096);
        let shared = Arc::new(Shared {
            name: identity.name().to_string(),
            endpoint,
            client_config,
            gossip_permits: Arc::new(Semaphore::new(config.max_inflight_gossip)),
            config,
            env,
            peers: Peers::default(),
            services: Services::default(),
            tasks: TaskSet::new(),
            events,
            gossip_tx,
            gossip_rx: Mutex::new(Some(gossip_rx)),
            next_conn_id: AtomicU64::new(1),
            local_addr,
            counters: Counters::default(),
        });
        shared.tasks.spawn(accept_loop(shared.clone()));
        Ok(Self {
            _owner: Arc::new(Owner(shared.clone())),
            shared,
        })
    }

    /// This node's name (from its certificate).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    pub fn config(&self) -> &TransportConfig {
        &self.shared.config
    }

    /// chitchat's transport over this endpoint. Only one gossip socket can be open at a time.
    pub fn gossip(&self) -> GossipTransport {
        GossipTransport::new(self.shared.clone())
    }

    /// Connection events from now on.
    pub fn events(&self) -> broadcast::Receiver<TransportEvent> {
        self.shared.events.subscribe()
    }

    /// Connection, byte and gossip counts since start.
    pub fn stats(&self) -> TransportStats {
        let conns = self.shared.peers.all_connections();
        self.shared
            .counters
            .snapshot(conns.iter().filter(|c| !c.is_closed()).map(|c| &c.quic))
    }

    /// Peers with a live connection.
    pub fn connected_peers(&self) -> Vec<PeerInfo> {
        self.shared.peers.connected()
    }

    /// Registers `service` and returns its inbox. Registering again replaces the inbox.
    pub fn register(&self, service: ServiceId, capacity: usize) -> mpsc::Receiver<Inbound> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.shared
            .services
            .map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(service, tx);
        rx
    }

    /// Connects to `peer` now (or returns the live connection), waiting out any backoff.
    pub async fn connect(&self, peer: impl Into<Peer>) -> Result<PeerInfo, ConnectError> {
        let conn = self.shared.connection(&peer.into(), true).await?;
        Ok(conn.peer.clone())
    }

    /// Sends a one-way message. Waits for a connection (not for a backoff) and for room in
    /// the peer's outbound queue; delivery is not confirmed.
    pub async fn send<T: Serialize>(
        &self,
        peer: impl Into<Peer>,
        service: ServiceId,
        msg: &T,
    ) -> Result<(), SendError> {
        let body = postcard::to_allocvec(msg).map_err(|e| SendError::Encode(e.into()))?;
        self.send_bytes(peer, service, body.into()).await
    }

    /// [`Transport::send`] with an already encoded body.
    pub async fn send_bytes(
        &self,
        peer: impl Into<Peer>,
        service: ServiceId,
        body: Bytes,
    ) -> Result<(), SendError> {
        let frame = encode(
            &Frame::Message { service, body },
            self.shared.config.max_frame_size,
        )?;
        let conn = self.shared.connection(&peer.into(), false).await?;
        conn.push(frame).await.map_err(SendError::ConnectionLost)
    }

    /// Sends a request and waits for its reply, at most `timeout` in all (dialing included).
    pub async fn request<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        peer: impl Into<Peer>,
        service: ServiceId,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RequestError> {
        let body = postcard::to_allocvec(req).map_err(|e| RequestError::Encode(e.into()))?;
        let reply = self
            .request_bytes(peer, service, body.into(), timeout)
            .await?;
        Ok(postcard::from_bytes(&reply)?)
    }

    /// [`Transport::request`] with an already encoded body and reply.
    pub async fn request_bytes(
        &self,
        peer: impl Into<Peer>,
        service: ServiceId,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, RequestError> {
        let peer = peer.into();
        let work = async {
            let conn = self.shared.connection(&peer, true).await?;
            let (id, rx, _guard) = conn.register_request();
            let frame = encode(
                &Frame::Request { id, service, body },
                self.shared.config.max_frame_size,
            )?;
            conn.push(frame)
                .await
                .map_err(RequestError::ConnectionLost)?;
            match rx.await {
                Ok(Ok(reply)) => Ok(reply),
                Ok(Err(remote)) => Err(RequestError::Remote(remote)),
                Err(_) => Err(RequestError::ConnectionLost(conn.peer.addr)),
            }
        };
        tokio::time::timeout(timeout, work)
            .await
            .unwrap_or(Err(RequestError::Timeout(timeout)))
    }

    /// Closes every connection with an orderly close and waits (at most 1 s) for the peers
    /// to be told, then stops all tasks and gives the UDP port back, even while this handle
    /// or a connection lives on.
    pub async fn shutdown(&self) {
        let conns = self.shared.peers.take_all();
        for conn in &conns {
            conn.quic.close(
                VarInt::from_u32(close_code::SHUTDOWN),
                b"node shutting down",
            );
        }
        self.shared.endpoint.close(
            VarInt::from_u32(close_code::SHUTDOWN),
            b"node shutting down",
        );
        let _ =
            tokio::time::timeout(Duration::from_secs(1), self.shared.endpoint.wait_idle()).await;
        // Aborted tasks drop what they hold (connections among it) only when next polled.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.shared.tasks.stop_all()).await;
        drop(conns);
        // Give the port back now. quinn keeps the old socket as a fallback until traffic
        // arrives on the new one, so the second swap is what drops it.
        for _ in 0..2 {
            let released = Arc::new(crate::socket::Released::new(self.shared.local_addr));
            if let Err(e) = self.shared.endpoint.rebind_abstract(released) {
                debug!(error = %e, "could not release the socket");
            }
        }
    }
}
