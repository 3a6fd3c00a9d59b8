//! The hit map of L1: `quick_cache` keyed by (generation, key), weighed in bytes, swept of
//! expired entries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::{Entry, Inner};

/// An L1 key: the generation and the caller's key. Looked up through [`KeyRef`], so a hit
/// allocates nothing (the old `format!("{generation}:{key}")` did on every read).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct L1Key {
    pub(crate) generation: u64,
    pub(crate) key: Box<str>,
}

/// A borrowed [`L1Key`]; the derived `Hash` feeds the same `u64` then `str` as `L1Key`'s.
#[derive(Debug, Clone, Copy, Hash)]
pub(crate) struct KeyRef<'a> {
    pub(crate) generation: u64,
    pub(crate) key: &'a str,
}

impl quick_cache::Equivalent<L1Key> for KeyRef<'_> {
    fn equivalent(&self, owned: &L1Key) -> bool {
        self.generation == owned.generation && self.key == &*owned.key
    }
}

impl KeyRef<'_> {
    pub(crate) fn to_owned_key(self) -> L1Key {
        L1Key {
            generation: self.generation,
            key: self.key.into(),
        }
    }
}

/// Bytes an entry is charged against `max_bytes`: key, value and a fixed overhead.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EntryWeight;

impl quick_cache::Weighter<L1Key, Entry> for EntryWeight {
    fn weight(&self, key: &L1Key, entry: &Entry) -> u64 {
        let bytes = key.key.len() + entry.value.as_ref().map_or(0, Bytes::len) + ENTRY_OVERHEAD;
        u64::try_from(bytes).unwrap_or(u64::MAX)
    }
}

pub(crate) type HitMap = quick_cache::sync::Cache<L1Key, Entry, EntryWeight>;

/// Fixed cost charged per entry besides key and value (the maps' own bookkeeping).
const ENTRY_OVERHEAD: usize = 96;
/// How often expired L1 entries nobody reads are dropped (a read drops its own at once).
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// The hit map for `max_bytes`: shards of at least 4 MiB (quick_cache splits the bound evenly,
/// and an entry larger than its shard's share is never kept), at most 16.
pub(crate) fn hit_map(max_bytes: u64) -> HitMap {
    let shards = usize::try_from((max_bytes >> 22).clamp(1, 16)).unwrap_or(1);
    let items = usize::try_from((max_bytes / 1024).clamp(64, 1 << 20)).unwrap_or(1 << 20);
    let options = quick_cache::OptionsBuilder::new()
        .shards(shards)
        .estimated_items_capacity(items)
        .weight_capacity(max_bytes)
        .build();
    match options {
        Ok(options) => HitMap::with_options(
            options,
            EntryWeight,
            quick_cache::DefaultHashBuilder::default(),
            quick_cache::sync::DefaultLifecycle::default(),
        ),
        // every field is set and in range (max_bytes is validated at start-up)
        Err(_) => HitMap::with_weighter(items, max_bytes, EntryWeight),
    }
}

/// Drops expired entries every [`SWEEP_EVERY`] until the cache is gone: reads skip them
/// anyway, this only gives their bytes back.
pub(crate) fn spawn_sweeper(inner: &Arc<Inner>) {
    let weak = Arc::downgrade(inner);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(SWEEP_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Some(inner) = weak.upgrade() else { return };
            let now = Instant::now();
            inner.l1.retain(|_, entry| entry.expires > now);
        }
    });
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn a_borrowed_key_finds_its_owned_entry() {
        let hasher = quick_cache::DefaultHashBuilder::default();
        let lookup = KeyRef {
            generation: 3,
            key: "q:1",
        };
        assert_eq!(
            hasher.hash_one(lookup),
            hasher.hash_one(lookup.to_owned_key())
        );
        let map = hit_map(1 << 20);
        let now = Instant::now();
        let entry = Entry {
            value: Some(Bytes::from_static(b"v")),
            started: now,
            expires: now + Duration::from_secs(60),
        };
        map.insert(lookup.to_owned_key(), entry);
        assert!(map.get(&lookup).is_some());
        let other_generation = KeyRef {
            generation: 4,
            ..lookup
        };
        assert!(map.get(&other_generation).is_none());
        assert_eq!(map.weight(), 3 + 1 + ENTRY_OVERHEAD as u64);
    }

    #[test]
    fn the_smallest_cache_still_holds_an_entry_of_its_size() {
        // one shard: quick_cache's even split must not make a 600-byte entry unstorable
        let map = hit_map(1024);
        let now = Instant::now();
        let entry = Entry {
            value: Some(Bytes::from(vec![0u8; 600])),
            started: now,
            expires: now + Duration::from_secs(60),
        };
        let key = KeyRef {
            generation: 0,
            key: "big",
        };
        map.insert(key.to_owned_key(), entry);
        assert!(map.get(&key).is_some());
    }
}
