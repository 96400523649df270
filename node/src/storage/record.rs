//! What is stored: versions, entity records, per-shard metadata, and how they are encoded
//! on disk (postcard with an xxh3 checksum, so a flipped bit is an error, not a wrong value).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::entity::EntityRef;

/// The version of an entity's state: the epoch of the primary that wrote it and that
/// primary's sequence number for the shard. Versions of one shard are totally ordered, and
/// each is written by exactly one primary, once.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Version {
    pub epoch: u64,
    pub seq: u64,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.epoch, self.seq)
    }
}

/// An entity's stored state at a version; `None` is a tombstone (the entity is back to its
/// default state), kept so that a deletion replicates like any other write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub version: Version,
    pub state: Option<Bytes>,
}

impl Record {
    pub fn size(&self) -> usize {
        self.state.as_ref().map_or(0, |s| s.len()) + 16
    }
}

/// A replica's promises for one shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMeta {
    /// The newest epoch this replica accepted for the shard: writes of older epochs are
    /// refused (fencing).
    pub promised: u64,
    /// The newest epoch whose primary completed installing the shard here: this replica
    /// then held everything that epoch's primary had recovered.
    pub installed: u64,
    /// In epoch `installed`, every write up to this sequence number is here.
    pub applied: u64,
}

/// One write of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Entity {
        shard: u32,
        entity: EntityRef,
        record: Record,
    },
    Meta {
        shard: u32,
        meta: ShardMeta,
    },
}

impl Write {
    pub fn shard(&self) -> u32 {
        match self {
            Write::Entity { shard, .. } | Write::Meta { shard, .. } => *shard,
        }
    }
}

/// Postcard bytes followed by their xxh3-64 checksum.
pub(crate) fn seal<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = postcard::to_allocvec(value).unwrap_or_default();
    let sum = xxhash_rust::xxh3::xxh3_64(&bytes);
    bytes.extend_from_slice(&sum.to_le_bytes());
    bytes
}

/// Checks and decodes what [`seal`] wrote; `what` names it in the error.
pub(crate) fn unseal<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
    what: &str,
) -> Result<T, StoreError> {
    let corrupt = |why: &str| StoreError::Corrupt(format!("{what}: {why}"));
    if bytes.len() < 8 {
        return Err(corrupt("record too short"));
    }
    let (body, sum) = bytes.split_at(bytes.len() - 8);
    let mut expected = [0u8; 8];
    expected.copy_from_slice(sum);
    if xxhash_rust::xxh3::xxh3_64(body) != u64::from_le_bytes(expected) {
        return Err(corrupt("checksum mismatch"));
    }
    postcard::from_bytes(body).map_err(|e| corrupt(&e.to_string()))
}

/// The key of an entity record: the shard (big-endian, so a shard's records are one range)
/// then the entity.
pub(crate) fn entity_key(shard: u32, entity: &EntityRef) -> Vec<u8> {
    let mut key = shard.to_be_bytes().to_vec();
    key.extend(postcard::to_allocvec(entity).unwrap_or_default());
    key
}

/// Splits an entity key back into shard and entity.
pub(crate) fn parse_entity_key(key: &[u8]) -> Result<(u32, EntityRef), StoreError> {
    if key.len() < 4 {
        return Err(StoreError::Corrupt("entity key too short".into()));
    }
    let shard = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
    let entity = postcard::from_bytes(&key[4..])
        .map_err(|e| StoreError::Corrupt(format!("entity key of shard {shard}: {e}")))?;
    Ok((shard, entity))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_records_round_trip_and_detect_flipped_bits() {
        let r = Record {
            version: Version { epoch: 3, seq: 9 },
            state: Some(Bytes::from_static(b"hello")),
        };
        let mut bytes = seal(&r);
        assert_eq!(unseal::<Record>(&bytes, "r").unwrap(), r);
        bytes[2] ^= 0x10;
        let err = unseal::<Record>(&bytes, "kv/a").unwrap_err();
        assert!(err.to_string().contains("kv/a: checksum mismatch"), "{err}");
    }

    #[test]
    fn keys_group_a_shard_and_parse_back() {
        let e = EntityRef {
            kind: "kv".into(),
            id: "a".into(),
        };
        let k = entity_key(7, &e);
        assert_eq!(parse_entity_key(&k).unwrap(), (7, e.clone()));
        assert!(entity_key(7, &e) < entity_key(8, &e));
        assert!(parse_entity_key(&[1, 2]).is_err());
    }

    #[test]
    fn versions_order_by_epoch_then_sequence() {
        let v = |epoch, seq| Version { epoch, seq };
        assert!(v(2, 1) > v(1, 100));
        assert!(v(2, 2) > v(2, 1));
    }
}
