//! A bounded memo for the writer: hot process keys and interned strings.
//!
//! The store's truth is on disk; this cache only saves B-tree look-ups for the keys a
//! busy node repeats (the same daemons, the same paths). It holds at most `2 × cap`
//! entries in two generations: new entries go to the young map; when it is full the
//! old generation is dropped and the young one takes its place, and a hit in the old
//! generation is promoted. That is a cheap approximation of LRU whose memory does not
//! depend on how long the node has been running.
//!
//! The writer's maps hash with [`SeededHasher`]: a multiply-rotate hash of the key's
//! words — a few cycles for the integer keys that dominate (process keys, ids,
//! addresses), where SipHash was a twentieth of the ingest CPU — seeded per process
//! from the standard library's random keys, so that no fixed set of pids or addresses
//! collides.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};

/// A [`HashMap`] hashed with [`SeededHasher`].
pub(crate) type FastMap<K, V> = HashMap<K, V, SeededState>;

/// Builds [`SeededHasher`]s with this process's seed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SeededState(u64);

impl Default for SeededState {
    fn default() -> Self {
        use std::sync::OnceLock;
        static SEED: OnceLock<u64> = OnceLock::new();
        SeededState(*SEED.get_or_init(|| {
            std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64) | 1
        }))
    }
}

impl BuildHasher for SeededState {
    type Hasher = SeededHasher;

    fn build_hasher(&self) -> SeededHasher {
        SeededHasher(self.0)
    }
}

/// Multiply-rotate over 64-bit words, finished with a xor-shift-multiply so that the
/// high bits hashbrown uses depend on every input bit.
pub(crate) struct SeededHasher(u64);

const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for SeededHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        // Byte by byte: a copy of a variable length is a call to memcpy, which was
        // most of the cost of hashing the short strings the writer interns.
        let word = rest
            .iter()
            .enumerate()
            .fold(0u64, |w, (i, &b)| w | (u64::from(b) << (8 * i)));
        self.write_u64(word ^ ((rest.len() as u64) << 59));
    }

    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }

    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v).wrapping_mul(MULTIPLIER).rotate_left(29);
    }

    fn write_u128(&mut self, v: u128) {
        self.write_u64(v as u64);
        self.write_u64((v >> 64) as u64);
    }

    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }

    fn finish(&self) -> u64 {
        let x = self.0 ^ (self.0 >> 31);
        let x = x.wrapping_mul(MULTIPLIER);
        x ^ (x >> 29)
    }
}

pub(crate) struct BoundedCache<K, V> {
    young: FastMap<K, V>,
    old: FastMap<K, V>,
    cap: usize,
}

impl<K: Hash + Eq, V: Clone> BoundedCache<K, V> {
    pub(crate) fn new(cap: usize) -> Self {
        BoundedCache {
            young: FastMap::default(),
            old: FastMap::default(),
            cap: cap.max(1),
        }
    }

    pub(crate) fn get<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized + ToOwned<Owned = K>,
    {
        if let Some(v) = self.young.get(key) {
            return Some(v.clone());
        }
        let v = self.old.remove(key)?;
        self.insert(key.to_owned(), v.clone());
        Some(v)
    }

    pub(crate) fn insert(&mut self, key: K, value: V) {
        if self.young.len() >= self.cap && !self.young.contains_key(&key) {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(key, value);
    }

    pub(crate) fn clear(&mut self) {
        self.young.clear();
        self.old.clear();
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

#[cfg(test)]
mod tests {
    use super::BoundedCache;

    #[test]
    fn never_holds_more_than_twice_its_cap() {
        let mut cache = BoundedCache::new(100);
        for i in 0..10_000u64 {
            cache.insert(i, i);
            assert!(cache.len() <= 200);
        }
        assert_eq!(cache.get(&9_999), Some(9_999));
    }

    #[test]
    fn the_seeded_hash_spreads_neighbouring_keys() {
        use std::hash::BuildHasher;
        let state = super::SeededState::default();
        let mut buckets = [0u32; 64];
        // hashbrown takes the top 7 bits as its tag and the low bits as the bucket.
        for pid in 0..64_000u32 {
            buckets[(state.hash_one(pid) & 63) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (800..1200).contains(&n)),
            "{buckets:?}"
        );
        // 10,000 keys: with 1,000 even an ideal hash leaves one of the 128 tags unused
        // in ~5 % of seeds (128 × (127/128)^1000 ≈ 0.05) — that made this test flaky;
        // with 10,000 the chance is ~10^-32.
        let tags: std::collections::HashSet<u64> =
            (0..10_000u64).map(|i| state.hash_one(i) >> 57).collect();
        assert_eq!(tags.len(), 128, "every tag value is used");
        assert_ne!(state.hash_one("/bin/sh"), state.hash_one("/bin/sh\0"));
    }
}
