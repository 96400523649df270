//! The peer connection cache: per remote address, its live connections, the dial in
//! progress (shared by everyone who wants that peer) and the backoff after failures.
//!
//! The newest live connection is the one used for sending. A peer normally has one; two exist
//! for a while when both sides dial each other at once, or when a peer restarted and dialed us
//! before our old connection to it noticed. Both are served until they close.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::time::Instant;

use crate::connection::Conn;
use crate::error::ConnectError;
use crate::service::PeerInfo;

pub(crate) type DialOutcome = Option<Result<Arc<Conn>, ConnectError>>;

#[derive(Default)]
struct Slot {
    conns: Vec<Arc<Conn>>,
    dialing: Option<watch::Receiver<DialOutcome>>,
    failures: u32,
    retry_at: Option<Instant>,
}

pub(crate) enum Lookup {
    /// A live connection to the expected peer.
    Ready(Arc<Conn>),
    /// Someone else is dialing; wait for the outcome.
    Wait(watch::Receiver<DialOutcome>),
    /// The caller must dial; it owns the sender and must always report an outcome.
    Dial(watch::Sender<DialOutcome>, watch::Receiver<DialOutcome>),
    /// Dialing is held back until then.
    BackingOff(Instant),
    /// A live connection exists but to another node than expected.
    WrongPeer(String),
}

#[derive(Default)]
pub(crate) struct Peers {
    slots: Mutex<HashMap<SocketAddr, Slot>>,
}

impl Peers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Finds how to reach `addr`. With `dial_now`, a backoff in force is ignored.
    pub(crate) fn lookup(&self, addr: SocketAddr, expected: Option<&str>, now: Instant) -> Lookup {
        let mut slots = self.lock();
        let slot = slots.entry(addr).or_default();
        slot.conns.retain(|c| !c.is_closed());
        if let Some(conn) = slot.conns.last() {
            return match expected {
                Some(name) if name != conn.peer.name => Lookup::WrongPeer(conn.peer.name.clone()),
                _ => Lookup::Ready(conn.clone()),
            };
        }
        if let Some(rx) = &slot.dialing {
            return Lookup::Wait(rx.clone());
        }
        if let Some(at) = slot.retry_at
            && at > now
        {
            return Lookup::BackingOff(at);
        }
        let (tx, rx) = watch::channel(None);
        slot.dialing = Some(rx.clone());
        Lookup::Dial(tx, rx)
    }

    /// The newest live connection to `addr`, if any; never dials.
    pub(crate) fn live(&self, addr: SocketAddr) -> Option<Arc<Conn>> {
        let slots = self.lock();
        slots
            .get(&addr)?
            .conns
            .iter()
            .rev()
            .find(|c| !c.is_closed())
            .cloned()
    }

    /// Whether a dial to `addr` is held back right now.
    pub(crate) fn backing_off(&self, addr: SocketAddr, now: Instant) -> bool {
        let slots = self.lock();
        slots
            .get(&addr)
            .and_then(|s| s.retry_at)
            .is_some_and(|at| at > now)
    }

    /// Records an established connection (dialed or accepted).
    pub(crate) fn insert(&self, conn: Arc<Conn>) {
        let mut slots = self.lock();
        let slot = slots.entry(conn.peer.addr).or_default();
        slot.failures = 0;
        slot.retry_at = None;
        slot.conns.push(conn);
    }

    /// Ends the dial in progress to `addr`, successful or not.
    pub(crate) fn dial_finished(&self, addr: SocketAddr) {
        if let Some(slot) = self.lock().get_mut(&addr) {
            slot.dialing = None;
        }
    }

    /// Records a failed dial; returns the number of consecutive failures.
    pub(crate) fn dial_failed(&self, addr: SocketAddr) -> u32 {
        let mut slots = self.lock();
        let slot = slots.entry(addr).or_default();
        slot.dialing = None;
        slot.failures = slot.failures.saturating_add(1);
        slot.failures
    }

    pub(crate) fn set_retry_at(&self, addr: SocketAddr, at: Instant) {
        self.lock().entry(addr).or_default().retry_at = Some(at);
    }

    /// Forgets a closed connection.
    pub(crate) fn remove(&self, conn: &Conn) {
        let mut slots = self.lock();
        if let Some(slot) = slots.get_mut(&conn.peer.addr) {
            slot.conns.retain(|c| c.id != conn.id);
            if slot.conns.is_empty() && slot.dialing.is_none() && slot.retry_at.is_none() {
                slots.remove(&conn.peer.addr);
            }
        }
    }

    /// The peers with at least one live connection.
    pub(crate) fn connected(&self) -> Vec<PeerInfo> {
        let slots = self.lock();
        let mut peers: Vec<PeerInfo> = slots
            .values()
            .filter_map(|s| s.conns.iter().rev().find(|c| !c.is_closed()))
            .map(|c| c.peer.clone())
            .collect();
        peers.sort_by(|a, b| a.name.cmp(&b.name).then(a.addr.cmp(&b.addr)));
        peers
    }

    /// Every connection, forgotten: for shutdown, so no handle keeps quinn's connection
    /// state (and through it the socket) alive.
    pub(crate) fn take_all(&self) -> Vec<Arc<Conn>> {
        self.lock().drain().flat_map(|(_, s)| s.conns).collect()
    }

    /// Every connection.
    pub(crate) fn all_connections(&self) -> Vec<Arc<Conn>> {
        self.lock()
            .values()
            .flat_map(|s| s.conns.iter().cloned())
            .collect()
    }
}
