//! This node's copy of one shard: its promises ([`ShardMeta`]), every entity's version, a
//! digest of the whole, and the records written but not yet durable.
//!
//! Records merge by version: a record replaces the one held only if its version is newer.
//! Since every version is written once, by the one primary of its epoch, merging is
//! idempotent and order-free, and a replica's versions never go back.
//!
//! The digest is the XOR of a hash of every `(entity, version)`: two replicas with the same
//! digest hold the same versions, so an install or a recovery between them moves nothing.

use std::collections::{BTreeMap, HashMap};

use crate::entity::EntityRef;
use crate::storage::{LoadedShard, Record, ShardMeta, Version, Write};

/// Writes that make changes to a replica durable, with the versions they carry: once the
/// commit is durable those count as stored (`Runtime::stored`).
#[derive(Debug, Default)]
pub(crate) struct StoreBatch {
    pub writes: Vec<Write>,
    pub synced: Vec<(EntityRef, Version)>,
}

impl StoreBatch {
    /// Queues the write of `entity`'s `record`.
    pub fn record(&mut self, shard: u32, entity: EntityRef, record: Record) {
        self.synced.push((entity.clone(), record.version));
        self.writes.push(Write::Entity {
            shard,
            entity,
            record,
        });
    }
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct ReplicaShard {
    pub meta: ShardMeta,
    index: BTreeMap<EntityRef, Version>,
    digest: u64,
    /// Written here but not yet durable: reads see these first.
    unsynced: HashMap<EntityRef, Record>,
    /// Set when storage failed for this shard: it is out of service here.
    pub failed: Option<String>,
}

fn entry_hash(entity: &EntityRef, v: Version) -> u64 {
    // One call over a stack buffer for the usual short address (same bytes, same hash).
    let (kind, id) = (entity.kind.as_bytes(), entity.id.as_bytes());
    let len = kind.len() + 1 + id.len() + 16;
    if len <= 128 {
        let mut buf = [0u8; 128];
        buf[..kind.len()].copy_from_slice(kind);
        buf[kind.len()] = 0xff;
        let at = kind.len() + 1;
        buf[at..at + id.len()].copy_from_slice(id);
        buf[at + id.len()..at + id.len() + 8].copy_from_slice(&v.epoch.to_le_bytes());
        buf[at + id.len() + 8..len].copy_from_slice(&v.seq.to_le_bytes());
        return xxhash_rust::xxh3::xxh3_64(&buf[..len]);
    }
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(entity.kind.as_bytes());
    h.update(&[0xff]);
    h.update(entity.id.as_bytes());
    h.update(&v.epoch.to_le_bytes());
    h.update(&v.seq.to_le_bytes());
    h.digest()
}

impl ReplicaShard {
    pub fn from_loaded(loaded: LoadedShard) -> Self {
        let digest = loaded
            .index
            .iter()
            .fold(0, |d, (e, v)| d ^ entry_hash(e, *v));
        Self {
            meta: loaded.meta,
            index: loaded.index,
            digest,
            unsynced: HashMap::new(),
            failed: None,
        }
    }

    pub fn digest(&self) -> u64 {
        self.digest
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn version(&self, entity: &EntityRef) -> Option<Version> {
        self.index.get(entity).copied()
    }

    /// Merges `entry` in (see [`ReplicaShard::apply`]) and, if it was newer, queues its
    /// write in `batch`.
    pub fn merge(&mut self, shard: u32, entry: super::Entry, batch: &mut StoreBatch) {
        let record = entry.record();
        if self.apply(&entry.entity, &record) {
            batch.record(shard, entry.entity, record);
        }
    }

    /// Merges `record` in if it is newer than what is held; says whether it was.
    pub fn apply(&mut self, entity: &EntityRef, record: &Record) -> bool {
        match self.index.get_mut(entity) {
            Some(v) if *v >= record.version => return false,
            Some(v) => {
                self.digest ^= entry_hash(entity, *v) ^ entry_hash(entity, record.version);
                *v = record.version;
            }
            None => {
                self.digest ^= entry_hash(entity, record.version);
                self.index.insert(entity.clone(), record.version);
            }
        }
        self.unsynced.insert(entity.clone(), record.clone());
        true
    }

    /// `entity` at `version` is durable now: reads may go to the store.
    pub fn synced(&mut self, entity: &EntityRef, version: Version) {
        if self
            .unsynced
            .get(entity)
            .is_some_and(|r| r.version == version)
        {
            self.unsynced.remove(entity);
        }
    }

    /// The record if it is not durable yet (else the store has it).
    pub fn unsynced(&self, entity: &EntityRef) -> Option<&Record> {
        self.unsynced.get(entity)
    }

    /// Every record written here but not durable yet (after a failed write, until it is
    /// written again).
    pub fn unsynced_records(&self) -> impl Iterator<Item = (&EntityRef, &Record)> {
        self.unsynced.iter()
    }

    /// Up to `limit` `(entity, version)` pairs after `after`, in entity order.
    pub fn versions(&self, after: Option<&EntityRef>, limit: usize) -> Vec<(EntityRef, Version)> {
        let range = match after {
            Some(a) => self
                .index
                .range::<EntityRef, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
            None => self.index.range::<EntityRef, _>(..),
        };
        range.take(limit).map(|(e, v)| (e.clone(), *v)).collect()
    }

    /// Every `(entity, version)`.
    pub fn index(&self) -> &BTreeMap<EntityRef, Version> {
        &self.index
    }
}

/// What a primary must do to bring a replica holding `theirs` level with `ours`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Diff {
    /// Ours is newer or theirs is missing: send ours.
    pub send: Vec<EntityRef>,
    /// Theirs is newer than ours, or only they have it: writes that were never acknowledged
    /// (their primary lost its place before a majority stored them). We write our state
    /// again under a new version, which then replaces theirs.
    pub restamp: Vec<EntityRef>,
}

/// Compares two `(entity, version)` lists.
pub(crate) fn diff(ours: &BTreeMap<EntityRef, Version>, theirs: &[(EntityRef, Version)]) -> Diff {
    let theirs: BTreeMap<&EntityRef, Version> = theirs.iter().map(|(e, v)| (e, *v)).collect();
    let mut d = Diff::default();
    for (e, v) in ours {
        match theirs.get(e) {
            Some(t) if t == v => {}
            Some(t) if t > v => d.restamp.push(e.clone()),
            _ => d.send.push(e.clone()),
        }
    }
    for e in theirs.keys() {
        if !ours.contains_key(*e) {
            d.restamp.push((*e).clone());
        }
    }
    d
}

/// Entities of `theirs` newer than ours (or that we lack): what a recovering primary pulls.
pub(crate) fn newer(
    ours: &BTreeMap<EntityRef, Version>,
    theirs: &[(EntityRef, Version)],
) -> Vec<EntityRef> {
    theirs
        .iter()
        .filter(|(e, v)| ours.get(e).is_none_or(|o| o < v))
        .map(|(e, _)| e.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn e(id: &str) -> EntityRef {
        EntityRef::new("kv", id)
    }

    fn rec(epoch: u64, seq: u64) -> Record {
        Record {
            version: Version { epoch, seq },
            state: Some(Bytes::from(format!("{epoch}.{seq}"))),
        }
    }

    #[test]
    fn entry_hashes_are_the_same_on_both_paths() {
        // Short addresses hash from a stack buffer, long ones streaming: same bytes, same
        // hash (replicas of different sizes compare digests).
        for n in [1usize, 90, 103, 104, 105, 500] {
            let entity = e(&"x".repeat(n));
            let v = Version { epoch: 3, seq: 9 };
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            h.update(b"kv");
            h.update(&[0xff]);
            h.update(entity.id.as_bytes());
            h.update(&3u64.to_le_bytes());
            h.update(&9u64.to_le_bytes());
            assert_eq!(entry_hash(&entity, v), h.digest(), "{n}");
        }
    }

    #[test]
    fn merging_keeps_the_newest_and_the_digest_follows_the_versions() {
        let mut a = ReplicaShard::default();
        let mut b = ReplicaShard::default();
        assert!(a.apply(&e("x"), &rec(1, 1)));
        assert!(a.apply(&e("x"), &rec(2, 1)));
        assert!(!a.apply(&e("x"), &rec(1, 9)), "older never replaces newer");
        assert!(a.apply(&e("y"), &rec(1, 2)));
        // Same versions, other order: same digest.
        assert!(b.apply(&e("y"), &rec(1, 2)));
        assert!(b.apply(&e("x"), &rec(2, 1)));
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.version(&e("x")), Some(Version { epoch: 2, seq: 1 }));
        assert!(b.apply(&e("z"), &rec(2, 2)));
        assert_ne!(a.digest(), b.digest());
        // Durable records leave the overlay, newer ones stay.
        assert!(a.unsynced(&e("x")).is_some());
        a.synced(&e("x"), Version { epoch: 1, seq: 1 });
        assert!(a.unsynced(&e("x")).is_some());
        a.synced(&e("x"), Version { epoch: 2, seq: 1 });
        assert!(a.unsynced(&e("x")).is_none());
    }

    #[test]
    fn from_loaded_rebuilds_the_same_digest() {
        let mut a = ReplicaShard::default();
        a.apply(&e("x"), &rec(3, 1));
        a.apply(&e("y"), &rec(3, 2));
        let loaded = LoadedShard {
            meta: ShardMeta::default(),
            index: a.index().clone(),
        };
        assert_eq!(ReplicaShard::from_loaded(loaded).digest(), a.digest());
    }

    #[test]
    fn pages_of_versions() {
        let mut a = ReplicaShard::default();
        for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
            a.apply(&e(id), &rec(1, i as u64 + 1));
        }
        let p1 = a.versions(None, 3);
        assert_eq!(p1.len(), 3);
        let p2 = a.versions(Some(&p1[2].0), 3);
        assert_eq!(p2, vec![(e("d"), Version { epoch: 1, seq: 4 })]);
    }

    #[test]
    fn diff_sends_ours_and_restamps_theirs() {
        let v = |epoch, seq| Version { epoch, seq };
        let ours: BTreeMap<EntityRef, Version> = [
            (e("same"), v(2, 1)),
            (e("ours-newer"), v(3, 1)),
            (e("only-ours"), v(3, 2)),
            (e("theirs-newer"), v(1, 1)),
        ]
        .into();
        let theirs = vec![
            (e("same"), v(2, 1)),
            (e("ours-newer"), v(2, 5)),
            (e("theirs-newer"), v(2, 9)),
            (e("only-theirs"), v(2, 7)),
        ];
        let d = diff(&ours, &theirs);
        assert_eq!(d.send, vec![e("only-ours"), e("ours-newer")]);
        assert_eq!(d.restamp, vec![e("theirs-newer"), e("only-theirs")]);
        assert_eq!(
            newer(&ours, &theirs),
            vec![e("theirs-newer"), e("only-theirs")]
        );
    }
}
