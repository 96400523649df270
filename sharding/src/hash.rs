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
    let len = (kind.len() as u32).to_le_bytes();
    // Most addresses are short: hash them in one call from a stack buffer (the streaming
    // hasher gives the same value for the same bytes, at several times the cost).
    let mut buf = [0u8; 128];
    let total = 4 + kind.len() + id.len();
    let digest = if total <= buf.len() {
        buf[..4].copy_from_slice(&len);
        buf[4..4 + kind.len()].copy_from_slice(kind.as_bytes());
        buf[4 + kind.len()..total].copy_from_slice(id);
        xxhash_rust::xxh3::xxh3_64(&buf[..total])
    } else {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(&len);
        h.update(kind.as_bytes());
        h.update(id);
        h.digest()
    };
    ShardId((digest % u64::from(shards.max(1))) as u32)
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
        // Long addresses take the streaming path; it must agree with the one-shot hash.
        for n in [100usize, 124, 125, 200, 5000] {
            let id = vec![b'x'; n];
            let mut whole = (2u32).to_le_bytes().to_vec();
            whole.extend_from_slice(b"kv");
            whole.extend_from_slice(&id);
            let want = xxhash_rust::xxh3::xxh3_64(&whole) % (1 << 20);
            assert_eq!(u64::from(shard_of("kv", &id, 1 << 20).0), want, "{n}");
        }
    }

    const PINNED: [u32; 3] = [42, 190, 613];
}
