//! The node clock: the one place Shoal reads wall-clock time.
//!
//! Durations and timeouts use `tokio::time` (which the simulator pauses and advances); the
//! wall clock is only needed for things that leave the process, such as generation ids and
//! certificate validity. Reading it through this object lets the simulator give each node its
//! own offset (clock skew) and keeps runs replayable.

use std::sync::Arc;
use std::time::Duration;

/// A source of wall-clock time, as a duration since the Unix epoch.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    fn unix_time(&self) -> Duration;

    /// Milliseconds since the Unix epoch.
    fn unix_millis(&self) -> u64 {
        self.unix_time().as_millis() as u64
    }
}

/// Shared handle to a node clock.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's clock; what real nodes use.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn unix_time(&self) -> Duration {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
    }
}

/// Adapts a node clock to rustls, so certificate checks in handshakes read the node clock too.
#[derive(Debug)]
pub(crate) struct RustlsTime(pub SharedClock);

impl rustls::time_provider::TimeProvider for RustlsTime {
    fn current_time(&self) -> Option<rustls::pki_types::UnixTime> {
        Some(rustls::pki_types::UnixTime::since_unix_epoch(
            self.0.unix_time(),
        ))
    }
}

/// Adapts a node clock to quinn, which reads wall-clock time for address-validation tokens.
#[derive(Debug)]
pub(crate) struct QuinnTime(pub SharedClock);

impl quinn::TimeSource for QuinnTime {
    fn now(&self) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + self.0.unix_time()
    }
}
