//! The simulated node clock: simulated time since the start of the run, from a fixed
//! epoch, plus the node's offset (clock skew).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use shoal_transport::Clock;
use tokio::time::Instant;

/// 2026-01-01T00:00:00Z: every run starts its wall clock here.
pub const EPOCH: Duration = Duration::from_secs(1_767_225_600);

#[derive(Debug, Clone)]
pub struct SimClock {
    start: Instant,
    offset_ms: Arc<AtomicI64>,
}

impl SimClock {
    pub fn new(start: Instant) -> Self {
        Self {
            start,
            offset_ms: Arc::new(AtomicI64::new(0)),
        }
    }

    /// Sets the node's skew: positive runs ahead, negative behind.
    pub fn set_offset_ms(&self, ms: i64) {
        self.offset_ms.store(ms, Ordering::SeqCst);
    }

    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::SeqCst)
    }
}

impl Clock for SimClock {
    fn unix_time(&self) -> Duration {
        let base = EPOCH + self.start.elapsed();
        let off = self.offset_ms();
        if off >= 0 {
            base + Duration::from_millis(off as u64)
        } else {
            base.saturating_sub(Duration::from_millis(off.unsigned_abs()))
        }
    }
}
