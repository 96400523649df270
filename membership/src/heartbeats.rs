//! A phi estimate per peer, for operators: how suspicious the silence of each node is.
//!
//! chitchat's own failure detector keeps its phi values private, so this one watches the same
//! heartbeats (as the membership's watch loop sees them, once per gossip round or liveness
//! change) and computes phi the way chitchat does: the time since the last heartbeat divided
//! by the mean interval between heartbeats, the mean smoothed towards the configured initial
//! interval while few samples exist. It decides nothing; liveness stays chitchat's.
//!
//! No hash maps here: each new std `HashMap` draws fresh hash keys, which shifts the keys of
//! every map created after it and so changes the simulator's runs (see `docs/SIMULATION.md`).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// Intervals kept per peer.
const WINDOW: usize = 100;
/// Weight of the prior interval in the mean, as in chitchat (additive smoothing).
const PRIOR_WEIGHT: f64 = 5.0;

struct Peer {
    heartbeat: u64,
    last: Instant,
    intervals: VecDeque<f64>,
    /// The last [`Heartbeats::sweep`] round gossip still held this incarnation.
    seen: u64,
}

pub(crate) struct Heartbeats {
    prior: Duration,
    /// Longer intervals are gaps (a partition, a pause), not the heartbeat rate.
    max_interval: Duration,
    /// By name, then generation: a restarted node's old incarnation stays in gossip for a
    /// while next to its new one. Nested so that a lookup by `&str` allocates nothing: this
    /// runs for every node in gossip on every gossip round.
    peers: BTreeMap<String, BTreeMap<u64, Peer>>,
    round: u64,
}

impl Heartbeats {
    pub(crate) fn new(prior: Duration, max_interval: Duration) -> Self {
        Self {
            prior,
            max_interval,
            peers: BTreeMap::new(),
            round: 0,
        }
    }

    /// Records the heartbeat counters gossip holds now: `(name, generation, heartbeat)` of
    /// every peer incarnation. Incarnations gossip no longer holds are forgotten.
    pub(crate) fn sweep<'a>(
        &mut self,
        now: Instant,
        states: impl IntoIterator<Item = (&'a str, u64, u64)>,
    ) {
        self.round += 1;
        for (name, generation, heartbeat) in states {
            self.observe(name, generation, heartbeat, now);
        }
        let round = self.round;
        self.peers.retain(|_, incarnations| {
            incarnations.retain(|_, p| p.seen == round);
            !incarnations.is_empty()
        });
    }

    fn observe(&mut self, name: &str, generation: u64, heartbeat: u64, now: Instant) {
        let round = self.round;
        let incarnations = match self.peers.get_mut(name) {
            Some(i) => i,
            None => self.peers.entry(name.to_string()).or_default(),
        };
        let p = incarnations.entry(generation).or_insert_with(|| Peer {
            heartbeat,
            last: now,
            intervals: VecDeque::new(),
            seen: round,
        });
        p.seen = round;
        if heartbeat > p.heartbeat {
            let interval = now.duration_since(p.last);
            if interval <= self.max_interval {
                if p.intervals.len() == WINDOW {
                    p.intervals.pop_front();
                }
                p.intervals.push_back(interval.as_secs_f64());
            }
            p.heartbeat = heartbeat;
            p.last = now;
        }
    }

    /// Phi of every peer by name: of its incarnation heard from last, once it has at least
    /// one interval.
    pub(crate) fn phi(&self, now: Instant) -> Vec<(String, f64)> {
        self.peers
            .iter()
            .filter_map(|(name, incarnations)| {
                let p = incarnations.values().max_by_key(|p| p.last)?;
                (!p.intervals.is_empty()).then(|| {
                    let n = p.intervals.len() as f64;
                    let sum: f64 = p.intervals.iter().sum();
                    let mean = (sum + PRIOR_WEIGHT * self.prior.as_secs_f64()) / (n + PRIOR_WEIGHT);
                    let elapsed = now.duration_since(p.last).as_secs_f64();
                    (name.clone(), elapsed / mean)
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn phi_grows_with_silence_and_resets_on_a_heartbeat() {
        let second = Duration::from_secs(1);
        let mut hb = Heartbeats::new(second, 4 * second);
        let t0 = Instant::now();
        for i in 0..10u64 {
            hb.sweep(t0 + second * i as u32, [("n2", 7, i)]);
        }
        let last = t0 + second * 9;
        let phi = |hb: &Heartbeats, at| hb.phi(at)[0].1;
        assert!((phi(&hb, last + second) - 1.0).abs() < 1e-9);
        assert!((phi(&hb, last + second * 8) - 8.0).abs() < 1e-9);
        hb.sweep(last + second * 8, [("n2", 7, 10)]);
        assert_eq!(phi(&hb, last + second * 8), 0.0);
        // The 8 s gap is above the maximum interval: it did not change the mean.
        assert!((phi(&hb, last + second * 9) - 1.0).abs() < 1e-9);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_generation_is_tracked_apart_from_the_old_one() {
        let second = Duration::from_secs(1);
        let mut hb = Heartbeats::new(second, 4 * second);
        let t0 = Instant::now();
        hb.sweep(t0, [("n2", 1, 5)]);
        hb.sweep(t0 + second, [("n2", 1, 6)]);
        assert_eq!(hb.phi(t0 + second).len(), 1);
        // The old incarnation is still in gossip; the new one is heard from.
        for i in 2..5u32 {
            hb.sweep(t0 + second * i, [("n2", 1, 6), ("n2", 2, u64::from(i))]);
        }
        let phi = hb.phi(t0 + second * 5);
        assert_eq!(phi.len(), 1);
        assert!((phi[0].1 - 1.0).abs() < 1e-9, "{phi:?}");
        // Once gossip forgets the old one, so does the estimate; then the node itself.
        hb.sweep(t0 + second * 5, [("n2", 2, 5)]);
        assert_eq!(hb.peers["n2"].len(), 1);
        hb.sweep(t0 + second * 6, []);
        assert!(hb.peers.is_empty());
    }
}
