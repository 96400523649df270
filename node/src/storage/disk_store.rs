//! Replicas on disk: redb files under `<data-dir>/replicas/`, one per stripe.
//!
//! Why redb (see `docs/STORAGE.md`): a pure-Rust embedded B-tree with copy-on-write pages and
//! checksummed commit slots, so a crash at any point leaves the last committed transaction;
//! one writer per file, which is what group commit wants; no background threads and no
//! dependencies. Records carry their own checksum as well, because redb verifies page
//! checksums only when it repairs a file, not on every read.
//!
//! Striping (shard `s` in file `s % stripes`) bounds what one broken file takes down, and
//! lets stripes sync in parallel. redb's calls block, so they run on tokio's blocking pool:
//! the one place the node leaves its runtime's threads, and never in the simulator, which
//! uses [`super::MemStore`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::record::{entity_key, parse_entity_key, seal, unseal};
use super::{Loaded, Record, ReplicaStore, ShardMeta, StoreError, Version, Write};
use crate::entity::EntityRef;

/// Entity key → sealed [`Record`].
const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
/// Entity key → sealed [`Version`]: what start-up reads, without the states.
const VERSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("versions");
/// Shard → sealed [`ShardMeta`].
const META: TableDefinition<u32, &[u8]> = TableDefinition::new("meta");

/// Default number of stripe files.
pub const DEFAULT_STRIPES: usize = 8;

/// One stripe file.
struct Stripe {
    path: PathBuf,
    state: Mutex<StripeState>,
}

enum StripeState {
    Open(Arc<Database>),
    /// It could not be opened at start-up: its shards stay out of service.
    Broken(StoreError),
    /// An I/O error happened (a full disk...). redb refuses every later call on that
    /// database ("Previous I/O error occurred. Please close and re-open the database"), so
    /// the file is opened again on its next use: once the disk has room, it works again.
    Reopen,
}

impl Stripe {
    fn open(path: PathBuf) -> Self {
        let state = match Database::create(&path) {
            Ok(db) => StripeState::Open(Arc::new(db)),
            Err(e) => StripeState::Broken(open_error(&path, e)),
        };
        Self {
            path,
            state: Mutex::new(state),
        }
    }

    /// Runs `f` on the stripe's database, opening the file again first if an I/O error
    /// happened since it was opened. Blocks: call it on the blocking pool.
    fn with_db<T>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let db = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            match &*st {
                StripeState::Open(db) => db.clone(),
                StripeState::Broken(e) => return Err(e.clone()),
                StripeState::Reopen => match Database::create(&self.path) {
                    Ok(db) => {
                        let db = Arc::new(db);
                        *st = StripeState::Open(db.clone());
                        db
                    }
                    Err(e) => return Err(open_error(&self.path, e)),
                },
            }
        };
        let result = f(&db);
        if let Err(StoreError::Io(_)) = &result {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if matches!(&*st, StripeState::Open(current) if Arc::ptr_eq(current, &db)) {
                *st = StripeState::Reopen;
            }
        }
        result
    }
}

fn open_error(path: &Path, e: redb::DatabaseError) -> StoreError {
    match redb::Error::from(e) {
        redb::Error::Corrupted(m) => StoreError::Corrupt(format!("{}: {m}", path.display())),
        other => StoreError::Io(format!("{}: {other}", path.display())),
    }
}

/// See the module documentation.
pub struct DiskStore {
    dir: PathBuf,
    stripes: Vec<Arc<Stripe>>,
}

impl std::fmt::Debug for DiskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

/// redb reports corruption as `Corrupted`; everything else is an I/O problem.
fn classify(e: redb::Error) -> StoreError {
    match e {
        redb::Error::Corrupted(m) => StoreError::Corrupt(m),
        other => StoreError::Io(other.to_string()),
    }
}

impl DiskStore {
    /// Opens (creating them if needed) the stripe files in `dir`. A file that cannot be
    /// opened is reported by [`ReplicaStore::load`] for its shards; the others work.
    pub fn open(dir: &Path, stripes: usize) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| io(format!("{}: {e}", dir.display())))?;
        let stripes = (0..stripes.max(1))
            .map(|i| Arc::new(Stripe::open(dir.join(format!("replicas-{i}.redb")))))
            .collect();
        Ok(Self {
            dir: dir.to_path_buf(),
            stripes,
        })
    }

    fn load_stripe(db: &Database, loaded: &mut Loaded) -> Result<(), StoreError> {
        let tx = db.begin_read().map_err(|e| classify(e.into()))?;
        match tx.open_table(META) {
            Ok(t) => {
                for item in t.iter().map_err(|e| classify(e.into()))? {
                    let (k, v) = item.map_err(|e| classify(e.into()))?;
                    let shard = k.value();
                    match unseal::<ShardMeta>(v.value(), &format!("metadata of shard {shard}")) {
                        Ok(meta) => loaded.shards.entry(shard).or_default().meta = meta,
                        Err(e) => {
                            loaded.failed.insert(shard, e);
                        }
                    }
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(classify(e.into())),
        }
        match tx.open_table(VERSIONS) {
            Ok(t) => {
                for item in t.iter().map_err(|e| classify(e.into()))? {
                    let (k, v) = item.map_err(|e| classify(e.into()))?;
                    let (shard, entity) = parse_entity_key(k.value())?;
                    match unseal::<Version>(v.value(), &format!("version of {entity}")) {
                        Ok(version) => {
                            loaded
                                .shards
                                .entry(shard)
                                .or_default()
                                .index
                                .insert(entity, version);
                        }
                        Err(e) => {
                            loaded.failed.insert(shard, e);
                        }
                    }
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(classify(e.into())),
        }
        Ok(())
    }

    fn write_blocking(db: &Database, writes: &[Write]) -> Result<(), StoreError> {
        let mut tx = db.begin_write().map_err(|e| classify(e.into()))?;
        tx.set_durability(Durability::Immediate)
            .map_err(|e| io(e.to_string()))?;
        {
            let mut records = tx.open_table(RECORDS).map_err(|e| classify(e.into()))?;
            let mut versions = tx.open_table(VERSIONS).map_err(|e| classify(e.into()))?;
            let mut meta = tx.open_table(META).map_err(|e| classify(e.into()))?;
            for w in writes {
                match w {
                    Write::Entity {
                        shard,
                        entity,
                        record,
                    } => {
                        let key = entity_key(*shard, entity);
                        records
                            .insert(key.as_slice(), seal(record).as_slice())
                            .map_err(|e| classify(e.into()))?;
                        versions
                            .insert(key.as_slice(), seal(&record.version).as_slice())
                            .map_err(|e| classify(e.into()))?;
                    }
                    Write::Meta { shard, meta: m } => {
                        meta.insert(*shard, seal(m).as_slice())
                            .map_err(|e| classify(e.into()))?;
                    }
                }
            }
        }
        tx.commit().map_err(|e| classify(e.into()))
    }

    fn read_blocking(
        db: &Database,
        shard: u32,
        entity: &EntityRef,
    ) -> Result<Option<Record>, StoreError> {
        let tx = db.begin_read().map_err(|e| classify(e.into()))?;
        let table = match tx.open_table(RECORDS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(classify(e.into())),
        };
        let key = entity_key(shard, entity);
        match table.get(key.as_slice()).map_err(|e| classify(e.into()))? {
            Some(v) => {
                unseal::<Record>(v.value(), &format!("shard {shard}, record of {entity}")).map(Some)
            }
            None => Ok(None),
        }
    }
}

#[async_trait::async_trait]
impl ReplicaStore for DiskStore {
    fn stripes(&self) -> usize {
        self.stripes.len()
    }

    fn load(&self, shards: u32) -> Loaded {
        let mut loaded = Loaded::default();
        for (i, stripe) in self.stripes.iter().enumerate() {
            let result = stripe.with_db(|db| Self::load_stripe(db, &mut loaded));
            if let Err(e) = result {
                for s in (0..shards).filter(|s| *s as usize % self.stripes.len() == i) {
                    loaded.shards.remove(&s);
                    loaded.failed.insert(s, e.clone());
                }
            }
        }
        for s in loaded.failed.keys() {
            loaded.shards.remove(s);
        }
        loaded
    }

    async fn write(&self, stripe: usize, writes: Vec<Write>) -> Result<(), StoreError> {
        let stripe = self.stripes[stripe].clone();
        tokio::task::spawn_blocking(move || stripe.with_db(|db| Self::write_blocking(db, &writes)))
            .await
            .map_err(io)?
    }

    async fn read(&self, shard: u32, entity: &EntityRef) -> Result<Option<Record>, StoreError> {
        let stripe = self.stripes[shard as usize % self.stripes.len()].clone();
        let entity = entity.clone();
        tokio::task::spawn_blocking(move || {
            stripe.with_db(|db| Self::read_blocking(db, shard, &entity))
        })
        .await
        .map_err(io)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn e(id: &str) -> EntityRef {
        EntityRef::new("kv", id)
    }

    #[tokio::test]
    async fn records_and_metadata_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let record = Record {
            version: Version { epoch: 2, seq: 5 },
            state: Some(Bytes::from_static(b"state")),
        };
        {
            let store = DiskStore::open(dir.path(), 4).unwrap();
            store
                .write(
                    1,
                    vec![
                        Write::Entity {
                            shard: 5,
                            entity: e("a"),
                            record: record.clone(),
                        },
                        Write::Meta {
                            shard: 5,
                            meta: ShardMeta {
                                promised: 3,
                                installed: 2,
                                applied: 5,
                            },
                        },
                    ],
                )
                .await
                .unwrap();
        }
        let store = DiskStore::open(dir.path(), 4).unwrap();
        let loaded = store.load(16);
        assert!(loaded.failed.is_empty());
        assert_eq!(loaded.shards[&5].meta.promised, 3);
        assert_eq!(loaded.shards[&5].index[&e("a")], record.version);
        assert_eq!(store.read(5, &e("a")).await.unwrap(), Some(record));
        assert_eq!(store.read(5, &e("b")).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_garbage_stripe_takes_out_only_its_shards() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = DiskStore::open(dir.path(), 4).unwrap();
            for stripe in 0..4u32 {
                store
                    .write(
                        stripe as usize,
                        vec![Write::Meta {
                            shard: stripe,
                            meta: ShardMeta::default(),
                        }],
                    )
                    .await
                    .unwrap();
            }
        }
        std::fs::write(dir.path().join("replicas-2.redb"), vec![0xAB; 8192]).unwrap();
        let store = DiskStore::open(dir.path(), 4).unwrap();
        let loaded = store.load(16);
        let failed: Vec<u32> = loaded.failed.keys().copied().collect();
        assert_eq!(failed, vec![2, 6, 10, 14]);
        assert!(loaded.failed[&2].to_string().contains("replicas-2.redb"));
        assert!(loaded.shards.contains_key(&1));
        assert!(store.read(6, &e("x")).await.is_err());
        assert!(store.read(5, &e("x")).await.is_ok());
    }
}
