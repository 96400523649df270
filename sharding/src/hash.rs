//! Entity to shard: a stable hash of explicit bytes.
//!
//! The input is the kind's length (4 bytes, little-endian), the kind, then the id bytes, so
//! `("ab", "c")` and `("a", "bc")` differ. The hash is XXH3-64, whose output is specified
//! byte for byte on every platform; `std::hash::Hash` is not (it feeds integers in native
//! byte order and widths that vary, such as `usize`).

use serde::{Deserialize, Serialize};

/// A shard number, `0..shards`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ShardId(pub u32);

impl std::fmt::Display for ShardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The shard of entity `(kind, id)` among `shards` (> 0).
pub fn shard_of(kind: &str, id: &[u8], shards: u32) -> ShardId {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&(kind.len() as u32).to_le_bytes());
    h.update(kind.as_bytes());
    h.update(id);
    ShardId((h.digest() % u64::from(shards.max(1))) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_values_and_separated_fields() {
        // Pinned: a change here moves every entity of every cluster.
        assert_eq!(
            shard_of("kv", b"user-42", 1024),
            shard_of("kv", b"user-42", 1024)
        );
        let pinned = [
            shard_of("kv", b"user-42", 1024).0,
            shard_of("counter", b"clicks", 1024).0,
            shard_of("cart", b"", 1024).0,
        ];
        assert_eq!(pinned, PINNED);
        assert_ne!(shard_of("ab", b"c", 1 << 30), shard_of("a", b"bc", 1 << 30));
        for i in 0..1000u32 {
            assert!(shard_of("kv", &i.to_le_bytes(), 7).0 < 7);
        }
    }

    const PINNED: [u32; 3] = [42, 190, 613];
}
