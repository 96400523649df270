//! Reconnection backoff: exponential with jitter, capped.

use std::time::Duration;

use crate::rng::NodeRng;

/// Delay before the n-th retry: `initial * 2^(n-1)`, capped at `max`, then jittered into
/// `[d/2, d]` so that peers that lost a node at the same moment do not redial in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// The delay after `failures` consecutive failures (`failures >= 1`).
    pub fn delay(&self, failures: u32, rng: &NodeRng) -> Duration {
        let exp = failures.saturating_sub(1).min(20);
        let d = self.initial.saturating_mul(1u32 << exp).min(self.max);
        rng.jitter(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let rng = NodeRng::seeded(1);
        assert!(b.delay(1, &rng) <= Duration::from_millis(100));
        let d3 = b.delay(3, &rng);
        assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
        for n in 5..40 {
            let d = b.delay(n, &rng);
            assert!(d >= Duration::from_millis(500) && d <= Duration::from_secs(1));
        }
    }
}
