//! The seams between a node and the world: sockets, wall clock, randomness.
//!
//! Production uses [`Environment::real`]. The simulator builds one per simulated node with
//! simulated sockets, an offset clock and a seeded RNG; nothing else in the node touches the
//! world, which is what makes a simulated run replayable.

use std::sync::Arc;

use crate::clock::{SharedClock, SystemClock};
use crate::rng::NodeRng;
use crate::socket::{SocketProvider, UdpSockets};

#[derive(Clone)]
pub struct Environment {
    pub sockets: Arc<dyn SocketProvider>,
    pub clock: SharedClock,
    pub rng: NodeRng,
}

impl Environment {
    /// Real UDP sockets, the system clock, an RNG seeded by the operating system.
    pub fn real() -> Self {
        Self {
            sockets: Arc::new(UdpSockets),
            clock: Arc::new(SystemClock),
            rng: NodeRng::from_os(),
        }
    }
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Environment")
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}
