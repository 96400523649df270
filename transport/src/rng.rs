//! The node RNG: the one place Shoal draws randomness (jitter, ids, seeds for quinn).
//!
//! Production seeds it from the operating system; the simulator seeds it from the run's seed,
//! so the same seed makes the same choices.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};

/// A cheaply clonable, shared, seedable random number generator.
#[derive(Clone, Debug)]
pub struct NodeRng(Arc<Mutex<StdRng>>);

impl NodeRng {
    /// Seeded from the operating system.
    pub fn from_os() -> Self {
        Self::new(rand::make_rng::<StdRng>())
    }

    /// Seeded from `seed`: the same seed gives the same sequence.
    pub fn seeded(seed: u64) -> Self {
        Self::new(StdRng::seed_from_u64(seed))
    }

    fn new(rng: StdRng) -> Self {
        Self(Arc::new(Mutex::new(rng)))
    }

    fn with<T>(&self, f: impl FnOnce(&mut StdRng) -> T) -> T {
        // A poisoned lock only means another thread panicked mid-draw; the state is still a
        // valid RNG state.
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    pub fn next_u64(&self) -> u64 {
        self.with(|r| r.next_u64())
    }

    pub fn fill(&self, buf: &mut [u8]) {
        self.with(|r| r.fill_bytes(buf))
    }

    /// A uniformly random duration in `[d/2, d]`: "equal jitter", which spreads retries while
    /// keeping a floor.
    pub fn jitter(&self, d: Duration) -> Duration {
        let nanos = d.as_nanos().min(u64::MAX as u128) as u64;
        if nanos < 2 {
            return d;
        }
        let half = nanos / 2;
        Duration::from_nanos(half + self.with(|r| r.random_range(0..=half)))
    }

    /// A uniformly random value in `0..n` (`n > 0`).
    pub fn below(&self, n: u64) -> u64 {
        self.with(|r| r.random_range(0..n.max(1)))
    }

    /// A new independent generator seeded from this one.
    pub fn fork(&self) -> NodeRng {
        NodeRng::seeded(self.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_jitter_in_range() {
        let a = NodeRng::seeded(7);
        let b = NodeRng::seeded(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
            let j = a.jitter(Duration::from_millis(100));
            assert!(j >= Duration::from_millis(50) && j <= Duration::from_millis(100));
            b.jitter(Duration::from_millis(100));
        }
    }
}
