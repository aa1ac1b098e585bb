//! What `beacon.db`'s writer keeps in memory of what it committed (the ids of `texts`,
//! visit states), so that most lookups cost no query.
//!
//! Each is a [`Bounded`] map: bounded by the bytes of its entries, not their number,
//! since clients choose how long their texts are and how many differ. A map that would
//! grow past its bound is emptied and starts again: a miss costs only the query it
//! saves, and nothing needs tracking which entry is the oldest.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

/// A map of at most `limit` bytes of entries, emptied when full (see the module doc).
#[derive(Debug)]
pub(crate) struct Bounded<K, V> {
    /// Each value with the bytes it was counted for.
    entries: HashMap<K, (V, usize), ahash::RandomState>,
    bytes: usize,
    limit: usize,
}

impl<K: Eq + Hash, V> Bounded<K, V> {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            entries: HashMap::default(),
            bytes: 0,
            limit,
        }
    }

    pub(crate) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.entries.get(key).map(|(value, _)| value)
    }

    /// Keeps `value`, which costs about `size` bytes, emptying the map first if it would
    /// not fit. An entry larger than the whole bound is not kept.
    pub(crate) fn insert(&mut self, key: K, value: V, size: usize) {
        if size > self.limit {
            self.remove(&key);
            return;
        }
        if self.bytes + size > self.limit {
            self.clear();
        }
        self.bytes += size;
        if let Some((_, old)) = self.entries.insert(key, (value, size)) {
            self.bytes -= old;
        }
    }

    pub(crate) fn remove<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        if let Some((_, size)) = self.entries.remove(key) {
            self.bytes -= size;
        }
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// The bytes of the entries kept.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_map_is_emptied_and_never_holds_more_than_its_bound() {
        let mut map = Bounded::new(100);
        for i in 0..50 {
            map.insert(i, i, 30);
            assert!(map.bytes() <= 100);
        }
        assert_eq!(map.len(), 2); // 48 and 49: the third emptied it
        assert_eq!(map.get(&49), Some(&49));
    }

    #[test]
    fn replacing_or_removing_an_entry_gives_its_bytes_back() {
        let mut map = Bounded::new(100);
        map.insert("a", 1, 40);
        map.insert("a", 2, 10);
        assert_eq!((map.bytes(), map.get("a")), (10, Some(&2)));
        map.insert("b", 3, 200); // larger than the bound: not kept
        assert_eq!((map.bytes(), map.get("b")), (10, None));
        map.remove("a");
        assert_eq!((map.bytes(), map.len()), (0, 0));
    }
}
