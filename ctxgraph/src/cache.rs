//! A bounded memo for the writer: hot process keys and interned strings.
//!
//! The store's truth is on disk; this cache only saves B-tree look-ups for the keys a
//! busy node repeats (the same daemons, the same paths). It holds at most `2 × cap`
//! entries in two generations: new entries go to the young map; when it is full the
//! old generation is dropped and the young one takes its place, and a hit in the old
//! generation is promoted. That is a cheap approximation of LRU whose memory does not
//! depend on how long the node has been running.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

pub(crate) struct BoundedCache<K, V> {
    young: HashMap<K, V>,
    old: HashMap<K, V>,
    cap: usize,
}

impl<K: Hash + Eq, V: Clone> BoundedCache<K, V> {
    pub(crate) fn new(cap: usize) -> Self {
        BoundedCache {
            young: HashMap::new(),
            old: HashMap::new(),
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
}
