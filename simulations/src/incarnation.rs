//! A crashed process writes nothing more. The simulator hands each incarnation of a node
//! handles on its "disk" that stop working the moment it crashes: whatever of the crashed
//! incarnation still runs (a workload ask holds the `Node` for up to its timeout) can no
//! longer write over what the next incarnation writes (found by `chaos` seed 559).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use shoal::entity::EntityRef;
use shoal::membership::{DurableCell, MemCell};
use shoal::storage::{Loaded, MemStore, Record, ReplicaStore, StoreError, Write};

/// Whether an incarnation is still running; cleared by its crash.
#[derive(Debug, Clone)]
pub struct Alive(Arc<AtomicBool>);

impl Alive {
    pub fn new() -> Self {
        Self(Arc::new(AtomicBool::new(true)))
    }

    pub fn crash(&self) {
        self.0.store(false, Ordering::Release);
    }

    fn is_alive(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

impl Default for Alive {
    fn default() -> Self {
        Self::new()
    }
}

/// The replica store as one incarnation sees it: after its crash, writes never complete.
pub struct IncarnationStore {
    pub inner: Arc<MemStore>,
    pub alive: Alive,
}

#[async_trait::async_trait]
impl ReplicaStore for IncarnationStore {
    fn stripes(&self) -> usize {
        self.inner.stripes()
    }

    fn load(&self, shards: u32) -> Loaded {
        self.inner.load(shards)
    }

    async fn write(&self, stripe: usize, writes: Vec<Write>) -> Result<(), StoreError> {
        if !self.alive.is_alive() {
            return std::future::pending().await;
        }
        self.inner.write(stripe, writes).await
    }

    async fn read(&self, shard: u32, entity: &EntityRef) -> Result<Option<Record>, StoreError> {
        self.inner.read(shard, entity).await
    }
}

/// The membership cell as one incarnation sees it: after its crash, stores fail.
pub struct IncarnationCell {
    pub inner: MemCell,
    pub alive: Alive,
}

impl DurableCell for IncarnationCell {
    fn load(&self) -> io::Result<Option<Vec<u8>>> {
        self.inner.load()
    }

    fn store(&self, bytes: &[u8]) -> io::Result<()> {
        if !self.alive.is_alive() {
            return Err(io::Error::other("this incarnation crashed"));
        }
        self.inner.store(bytes)
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}
