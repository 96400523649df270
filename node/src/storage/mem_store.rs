//! A replica store in memory with the crash semantics of a disk: a batch becomes durable
//! only when its (simulated) sync completes, so a node that crashes while a batch is syncing
//! loses it, exactly as with an fsync that never returned. The store outlives the node that
//! uses it: the simulator and tests keep it across a crash and hand it to the restarted node.
//!
//! Faults can be switched on to test their handling: a full disk, and corrupt records.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::record::{entity_key, parse_entity_key};
use super::{Loaded, LoadedShard, Record, ReplicaStore, ShardMeta, StoreError, Write};
use crate::entity::EntityRef;

/// Faults a [`MemStore`] can be told to have.
#[derive(Debug, Clone, Default)]
pub struct StoreFaults {
    /// Every write fails as if the disk were full.
    pub disk_full: bool,
    /// Reads of these shards' records fail as corrupt, and loading reports them failed.
    pub corrupt_shards: BTreeSet<u32>,
}

/// Called with every batch that becomes durable (the simulator's checkers watch versions).
pub type WriteObserver = Arc<dyn Fn(&[Write]) + Send + Sync>;

#[derive(Default)]
struct Data {
    meta: BTreeMap<u32, ShardMeta>,
    records: BTreeMap<Vec<u8>, Record>,
}

/// See the module documentation.
pub struct MemStore {
    data: Mutex<Data>,
    sync_delay: Duration,
    faults: Mutex<StoreFaults>,
    observer: Mutex<Option<WriteObserver>>,
}

impl std::fmt::Debug for MemStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemStore").finish_non_exhaustive()
    }
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new(Duration::from_micros(200))
    }
}

impl MemStore {
    /// A store whose syncs take `sync_delay` (of `tokio::time`).
    pub fn new(sync_delay: Duration) -> Self {
        Self {
            data: Mutex::new(Data::default()),
            sync_delay,
            faults: Mutex::new(StoreFaults::default()),
            observer: Mutex::new(None),
        }
    }

    pub fn set_faults(&self, faults: StoreFaults) {
        *self.faults.lock().unwrap_or_else(|e| e.into_inner()) = faults;
    }

    pub fn set_observer(&self, observer: WriteObserver) {
        *self.observer.lock().unwrap_or_else(|e| e.into_inner()) = Some(observer);
    }

    fn faults(&self) -> StoreFaults {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every durable record of `shard` (for checkers and tests).
    pub fn records(&self, shard: u32) -> Vec<(EntityRef, Record)> {
        let data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        let lo = shard.to_be_bytes().to_vec();
        data.records
            .range(lo..)
            .map_while(|(k, r)| match parse_entity_key(k) {
                Ok((s, e)) if s == shard => Some((e, r.clone())),
                _ => None,
            })
            .collect()
    }

    /// The durable metadata of `shard`.
    pub fn meta(&self, shard: u32) -> ShardMeta {
        let data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        data.meta.get(&shard).copied().unwrap_or_default()
    }
}

#[async_trait::async_trait]
impl ReplicaStore for MemStore {
    fn stripes(&self) -> usize {
        1
    }

    fn load(&self, shards: u32) -> Loaded {
        let faults = self.faults();
        let data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        let mut loaded = Loaded::default();
        for (s, meta) in &data.meta {
            loaded.shards.entry(*s).or_default().meta = *meta;
        }
        for (k, r) in &data.records {
            if let Ok((s, e)) = parse_entity_key(k) {
                loaded
                    .shards
                    .entry(s)
                    .or_insert_with(LoadedShard::default)
                    .index
                    .insert(e, r.version);
            }
        }
        for s in faults.corrupt_shards.iter().filter(|s| **s < shards) {
            loaded.shards.remove(s);
            loaded.failed.insert(
                *s,
                StoreError::Corrupt(format!("shard {s}: injected corruption")),
            );
        }
        loaded
    }

    async fn write(&self, _stripe: usize, writes: Vec<Write>) -> Result<(), StoreError> {
        tokio::time::sleep(self.sync_delay).await;
        if self.faults().disk_full {
            return Err(StoreError::Io("no space left on device (injected)".into()));
        }
        {
            let mut data = self.data.lock().unwrap_or_else(|e| e.into_inner());
            for w in &writes {
                match w {
                    Write::Entity {
                        shard,
                        entity,
                        record,
                    } => {
                        data.records
                            .insert(entity_key(*shard, entity), record.clone());
                    }
                    Write::Meta { shard, meta } => {
                        data.meta.insert(*shard, *meta);
                    }
                }
            }
        }
        let observer = self
            .observer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(o) = observer {
            o(&writes);
        }
        Ok(())
    }

    async fn read(&self, shard: u32, entity: &EntityRef) -> Result<Option<Record>, StoreError> {
        if self.faults().corrupt_shards.contains(&shard) {
            return Err(StoreError::Corrupt(format!(
                "shard {shard}: record of {entity} (injected corruption)"
            )));
        }
        let data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        Ok(data.records.get(&entity_key(shard, entity)).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Version;
    use bytes::Bytes;

    fn e(id: &str) -> EntityRef {
        EntityRef::new("kv", id)
    }

    fn put(shard: u32, id: &str, seq: u64) -> Write {
        Write::Entity {
            shard,
            entity: e(id),
            record: Record {
                version: Version { epoch: 1, seq },
                state: Some(Bytes::from(id.to_string())),
            },
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_counts_only_once_synced() {
        let store = Arc::new(MemStore::new(Duration::from_millis(5)));
        let s2 = store.clone();
        let pending = tokio::spawn(async move { s2.write(0, vec![put(1, "a", 1)]).await });
        tokio::time::sleep(Duration::from_millis(1)).await;
        // The node crashes mid-sync: the batch is lost.
        pending.abort();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(store.read(1, &e("a")).await.unwrap(), None);
        store.write(0, vec![put(1, "a", 2)]).await.unwrap();
        assert_eq!(
            store.read(1, &e("a")).await.unwrap().unwrap().version.seq,
            2
        );
        let loaded = store.load(4);
        assert_eq!(loaded.shards[&1].index[&e("a")].seq, 2);
        assert_eq!(store.records(1).len(), 1);
        assert!(store.records(0).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn injected_faults_are_clear_errors() {
        let store = MemStore::default();
        store.write(0, vec![put(2, "a", 1)]).await.unwrap();
        store.set_faults(StoreFaults {
            disk_full: true,
            corrupt_shards: [2].into(),
        });
        let err = store.write(0, vec![put(3, "b", 1)]).await.unwrap_err();
        assert!(err.to_string().contains("no space left"), "{err}");
        assert!(matches!(
            store.read(2, &e("a")).await,
            Err(StoreError::Corrupt(_))
        ));
        let loaded = store.load(4);
        assert!(loaded.failed.contains_key(&2));
        assert!(!loaded.shards.contains_key(&2));
    }
}
