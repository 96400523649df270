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
}

pub(crate) struct Heartbeats {
    prior: Duration,
    /// Longer intervals are gaps (a partition, a pause), not the heartbeat rate.
    max_interval: Duration,
    /// By name and generation: a restarted node's old incarnation stays in gossip for a
    /// while next to its new one.
    peers: BTreeMap<(String, u64), Peer>,
}

impl Heartbeats {
    pub(crate) fn new(prior: Duration, max_interval: Duration) -> Self {
        Self {
            prior,
            max_interval,
            peers: BTreeMap::new(),
        }
    }

    /// Records the heartbeat counter of `name`'s incarnation `generation` as seen at `now`.
    pub(crate) fn observe(&mut self, name: &str, generation: u64, heartbeat: u64, now: Instant) {
        let key = (name.to_string(), generation);
        match self.peers.get_mut(&key) {
            Some(p) => {
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
            None => {
                self.peers.insert(
                    key,
                    Peer {
                        heartbeat,
                        last: now,
                        intervals: VecDeque::new(),
                    },
                );
            }
        }
    }

    /// Forgets incarnations not in `seen`.
    pub(crate) fn retain(&mut self, seen: &std::collections::BTreeSet<(&str, u64)>) {
        self.peers
            .retain(|(name, generation), _| seen.contains(&(name.as_str(), *generation)));
    }

    /// Phi of every peer by name: of its incarnation heard from last, once it has at least
    /// one interval.
    pub(crate) fn phi(&self, now: Instant) -> Vec<(String, f64)> {
        let mut latest: BTreeMap<&str, &Peer> = BTreeMap::new();
        for ((name, _), p) in &self.peers {
            match latest.get(name.as_str()) {
                Some(q) if q.last >= p.last => {}
                _ => {
                    latest.insert(name, p);
                }
            }
        }
        latest
            .into_iter()
            .filter(|(_, p)| !p.intervals.is_empty())
            .map(|(name, p)| {
                let n = p.intervals.len() as f64;
                let sum: f64 = p.intervals.iter().sum();
                let mean = (sum + PRIOR_WEIGHT * self.prior.as_secs_f64()) / (n + PRIOR_WEIGHT);
                let elapsed = now.duration_since(p.last).as_secs_f64();
                (name.to_string(), elapsed / mean)
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
            hb.observe("n2", 7, i, t0 + second * i as u32);
        }
        let last = t0 + second * 9;
        let phi = |hb: &Heartbeats, at| hb.phi(at)[0].1;
        assert!((phi(&hb, last + second) - 1.0).abs() < 1e-9);
        assert!((phi(&hb, last + second * 8) - 8.0).abs() < 1e-9);
        hb.observe("n2", 7, 10, last + second * 8);
        assert_eq!(phi(&hb, last + second * 8), 0.0);
        // The 8 s gap is above the maximum interval: it did not change the mean.
        assert!((phi(&hb, last + second * 9) - 1.0).abs() < 1e-9);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_generation_is_tracked_apart_from_the_old_one() {
        let second = Duration::from_secs(1);
        let mut hb = Heartbeats::new(second, 4 * second);
        let t0 = Instant::now();
        hb.observe("n2", 1, 5, t0);
        hb.observe("n2", 1, 6, t0 + second);
        assert_eq!(hb.phi(t0 + second).len(), 1);
        // The old incarnation is still in gossip; the new one is heard from.
        for i in 2..5u32 {
            hb.observe("n2", 1, 6, t0 + second * i);
            hb.observe("n2", 2, u64::from(i), t0 + second * i);
        }
        let phi = hb.phi(t0 + second * 5);
        assert_eq!(phi.len(), 1);
        assert!((phi[0].1 - 1.0).abs() < 1e-9, "{phi:?}");
        // Once gossip forgets the old one, so does the estimate.
        hb.retain(&[("n2", 2)].into_iter().collect());
        assert_eq!(hb.peers.len(), 1);
    }
}
