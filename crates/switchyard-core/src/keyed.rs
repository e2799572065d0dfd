//! A bounded map of per-key state, for the keyed variants of every layer.
//!
//! A keyed layer (a breaker per host, a bulkhead per tenant) must not let an unbounded key
//! space grow its memory. (The keyed rate limit keeps its keys in governor's store instead,
//! bounded by periodic cleanup.) [`KeyedMap`] keeps at most `max_keys` values
//! and, to make room, evicts by a rank the layer chooses (an idle bulkhead before a busy one,
//! a closed breaker before an open one), least recently used first within a rank.
//!
//! Lookups of existing keys take a shared read lock and write nothing shared but the entry's
//! own use mark; recency is a *generation* (the number of keys added so far), not a per-call
//! counter, so hits do not contend. Two entries used between the same two key arrivals tie.
//!
//! ```
//! use switchyard_core::keyed::KeyedMap;
//!
//! let map: KeyedMap<&str, u32> = KeyedMap::new(2);
//! let any = |_: &u32| Some(0); // every value may be evicted, all of one rank
//! map.get_or_insert_with(&"a", || 1, any);
//! map.get_or_insert_with(&"b", || 2, any);
//! map.get_or_insert_with(&"a", || unreachable!(), any); // a hit: "a" is now the newer
//! map.get_or_insert_with(&"c", || 3, any); // evicts "b"
//! assert_eq!(map.get(&"b"), None);
//! assert_eq!(map.len(), 2);
//! ```

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

struct Entry<V> {
    value: V,
    last_used: AtomicU64,
}

impl<V> Entry<V> {
    fn touch(&self, generation: u64) {
        if self.last_used.load(Ordering::Relaxed) != generation {
            self.last_used.store(generation, Ordering::Relaxed);
        }
    }
}

/// At most `max_keys` values by key, evicting by rank then least recent use.
pub struct KeyedMap<K, V> {
    map: RwLock<HashMap<K, Entry<V>>>,
    max_keys: usize,
    generation: AtomicU64,
}

impl<K, V> KeyedMap<K, V> {
    /// An empty map holding at most `max_keys` (at least 1) values.
    pub fn new(max_keys: usize) -> Self {
        Self {
            map: RwLock::new(HashMap::new()),
            max_keys: max_keys.max(1),
            generation: AtomicU64::new(0),
        }
    }

    /// The most values the map keeps.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// How many keys have a value now.
    pub fn len(&self) -> usize {
        crate::sync::read(&self.map).len()
    }

    /// Whether no key has a value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Hash + Eq + Clone, V: Clone> KeyedMap<K, V> {
    /// The value for `key`, if it has one now (does not count as a use).
    pub fn get(&self, key: &K) -> Option<V> {
        let map = crate::sync::read(&self.map);
        map.get(key).map(|e| e.value.clone())
    }

    /// Every value now, in no particular order.
    pub fn values(&self) -> Vec<V> {
        let map = crate::sync::read(&self.map);
        map.values().map(|e| e.value.clone()).collect()
    }

    /// The value for `key`, made by `make` on first use.
    ///
    /// When the map is full, one value is evicted first: the one with the lowest
    /// `rank(&value)`, least recently used among equals; a value ranked `None` is never
    /// evicted. Returns `None`, and keeps nothing, when the map is full and every value is
    /// ranked `None`. `make` runs outside the write lock (a value may be costly to build) and
    /// its result is dropped if another caller inserted the key first.
    pub fn get_or_insert_with(
        &self,
        key: &K,
        make: impl FnOnce() -> V,
        rank: impl Fn(&V) -> Option<u8>,
    ) -> Option<V> {
        {
            let map = crate::sync::read(&self.map);
            if let Some(entry) = map.get(key) {
                entry.touch(self.generation.load(Ordering::Relaxed));
                return Some(entry.value.clone());
            }
        }
        let fresh = make();
        let mut map = crate::sync::write(&self.map);
        if let Some(entry) = map.get(key) {
            entry.touch(self.generation.load(Ordering::Relaxed));
            return Some(entry.value.clone());
        }
        if map.len() >= self.max_keys {
            // A scan, under the write lock, paid once per new key beyond `max_keys`.
            let victim = map
                .iter()
                .filter_map(|(k, e)| {
                    Some(((rank(&e.value)?, e.last_used.load(Ordering::Relaxed)), k))
                })
                .min_by_key(|(order, _)| *order)
                .map(|(_, k)| k.clone());
            map.remove(&victim?);
        }
        // A new entry is marked with the generation before it and opens the next one, so an
        // entry used after it arrived ranks above it.
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        map.insert(
            key.clone(),
            Entry {
                value: fresh.clone(),
                last_used: AtomicU64::new(generation),
            },
        );
        Some(fresh)
    }
}

impl<K, V> fmt::Debug for KeyedMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedMap")
            .field("len", &self.len())
            .field("max_keys", &self.max_keys)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_ranks_go_first_and_unevictable_values_stay() {
        let map: KeyedMap<u32, u8> = KeyedMap::new(2);
        let rank = |v: &u8| (*v < 9).then_some(*v);
        map.get_or_insert_with(&1, || 5, rank);
        map.get_or_insert_with(&2, || 1, rank);
        // Key 2 is newer but ranked lower: it goes.
        map.get_or_insert_with(&3, || 9, rank);
        assert_eq!(
            (map.get(&1), map.get(&2), map.get(&3)),
            (Some(5), None, Some(9))
        );
        // 1 can go; then only unevictable values are left and a new key is refused.
        assert_eq!(map.get_or_insert_with(&4, || 9, rank), Some(9));
        assert_eq!(map.get_or_insert_with(&5, || 0, rank), None);
        assert_eq!(map.len(), 2);
    }

    #[test]
    fn a_key_raced_in_keeps_the_first_value() {
        let map: KeyedMap<u32, u8> = KeyedMap::new(4);
        map.get_or_insert_with(&1, || 1, |_| Some(0));
        assert_eq!(map.get_or_insert_with(&1, || 2, |_| Some(0)), Some(1));
        assert_eq!(map.values(), vec![1]);
    }
}
