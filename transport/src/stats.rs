//! Counters of a transport's activity, for metrics: connections, bytes on the wire, gossip.
//!
//! Counting never changes what the transport does, so the simulator's traces are the same
//! with or without anyone reading them.

use std::sync::atomic::{AtomicU64, Ordering};

use chitchat::ChitchatMessage;
use tokio::time::Instant;

/// Gossip sends closer together than this belong to one round: chitchat sends a round's
/// messages (to up to three live peers, a dead one and a seed) at the same moment.
const SAME_ROUND: std::time::Duration = std::time::Duration::from_millis(10);

/// What [`crate::Transport::stats`] returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Live QUIC connections.
    pub connections: u64,
    /// Connections established since start (dialed or accepted).
    pub connections_opened: u64,
    /// UDP payload bytes sent and received, over every connection since start.
    pub sent_bytes: u64,
    pub received_bytes: u64,
    /// Gossip rounds this node started (the moments it sent gossip requests).
    pub gossip_rounds: u64,
    /// Gossip messages sent and received (requests and answers).
    pub gossip_sent: u64,
    pub gossip_received: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub connections_opened: AtomicU64,
    /// Bytes of connections already closed (live ones are read from quinn).
    pub closed_sent: AtomicU64,
    pub closed_received: AtomicU64,
    pub gossip_rounds: AtomicU64,
    pub gossip_sent: AtomicU64,
    pub gossip_received: AtomicU64,
    last_round: std::sync::Mutex<Option<Instant>>,
}

impl Counters {
    pub(crate) fn connection_closed(&self, quic: &quinn::Connection) {
        let s = quic.stats();
        self.closed_sent
            .fetch_add(s.udp_tx.bytes, Ordering::Relaxed);
        self.closed_received
            .fetch_add(s.udp_rx.bytes, Ordering::Relaxed);
    }

    pub(crate) fn gossip_sent(&self, msg: &ChitchatMessage) {
        self.count_gossip(matches!(msg, ChitchatMessage::Syn { .. }), Instant::now());
    }

    /// One gossip message sent at `now`; a request (`Syn`) after a pause starts a round.
    fn count_gossip(&self, request: bool, now: Instant) {
        self.gossip_sent.fetch_add(1, Ordering::Relaxed);
        if request {
            let mut last = self.last_round.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_none_or(|t| now.duration_since(t) > SAME_ROUND) {
                self.gossip_rounds.fetch_add(1, Ordering::Relaxed);
                *last = Some(now);
            }
        }
    }

    pub(crate) fn snapshot<'a>(
        &self,
        live: impl Iterator<Item = &'a quinn::Connection>,
    ) -> TransportStats {
        let mut stats = TransportStats {
            connections: 0,
            connections_opened: self.connections_opened.load(Ordering::Relaxed),
            sent_bytes: self.closed_sent.load(Ordering::Relaxed),
            received_bytes: self.closed_received.load(Ordering::Relaxed),
            gossip_rounds: self.gossip_rounds.load(Ordering::Relaxed),
            gossip_sent: self.gossip_sent.load(Ordering::Relaxed),
            gossip_received: self.gossip_received.load(Ordering::Relaxed),
        };
        for quic in live {
            let s = quic.stats();
            stats.connections += 1;
            stats.sent_bytes += s.udp_tx.bytes;
            stats.received_bytes += s.udp_rx.bytes;
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_sent_together_are_one_round() {
        let c = Counters::default();
        let t0 = Instant::now();
        // A round: requests to three peers at once, and an answer to someone else's round.
        for _ in 0..3 {
            c.count_gossip(true, t0);
        }
        c.count_gossip(false, t0 + SAME_ROUND * 2);
        // The next round, one gossip interval later.
        c.count_gossip(true, t0 + std::time::Duration::from_millis(500));
        c.count_gossip(true, t0 + std::time::Duration::from_millis(501));
        let s = c.snapshot(std::iter::empty());
        assert_eq!((s.gossip_rounds, s.gossip_sent), (2, 6));
    }
}
