//! [`OrderCache`] on a sharded concurrent map.
//!
//! Eviction policy: **FIFO by first insertion**. When a new uid would exceed the capacity (in
//! entries or in bytes of JSON), the uids inserted longest ago are evicted until both bounds
//! hold; an entry larger than the whole byte bound is not cached at all. Orders are immutable
//! once stored and clients mostly ask for recent ones, so insertion order approximates recency
//! well, and a hit never takes a lock on shared state: the read path is one shard read-lock
//! plus a [`CachedOrder`] clone (one refcount: a JSON entry's entity tag was computed before
//! insertion). An order the ingest path cached as its message is made into its JSON at its
//! first read, by the query use case, which hands it back through [`OrderCache::resolve`]:
//! the entry keeps its place in the FIFO.
//!
//! Invariant: the number of entries never exceeds the capacity, the bytes held (JSON and tags,
//! or messages) never exceed the byte bound, and `hits + misses` equals the number of `get`
//! calls.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use foldhash::fast::RandomState;
use orders_domain::{CacheStats, CachedOrder, OrderCache, OrderJson};
use smol_str::SmolStr;

/// A cached order's uid, as the map and the FIFO queue hold it: up to 23 bytes inline, so a
/// probe of the map compares it in the table's own memory. As an `Arc<str>` every probe
/// followed a pointer into one more cold cache line (a full cache's eviction and insert probe
/// entries nobody touched for a long time), and every insert allocated it. A longer uid is
/// one shared allocation, as before.
type Uid = SmolStr;

/// The dashmap-backed cache.
#[derive(Debug)]
pub struct DashCache {
    /// Keyed by foldhash, not SipHash: SipHash was a tenth of an insert's cost (an insert
    /// hashes three times). foldhash is seeded per process, which is the resistance to
    /// crafted collisions a map needs whose keys are validated uids of stored orders.
    map: DashMap<Uid, CachedOrder, RandomState>,
    /// Insertion order of the uids in `map`; guarded separately so hits never touch it.
    fifo: Mutex<VecDeque<Uid>>,
    capacity: usize,
    /// Most bytes held at once.
    max_bytes: usize,
    /// Entries, published under the FIFO lock once an insert (and its eviction) is complete.
    /// `DashMap::len` sums shards one by one and can transiently over-count under concurrent
    /// remove+insert; this cannot.
    entries: AtomicUsize,
    /// Bytes held (as [`CachedOrder::held_bytes`] counts them); changed only under the FIFO
    /// lock, so exact there.
    bytes: AtomicUsize,
    /// Striped: every hit adds one, from every HTTP worker at once.
    hits: StripedCounter,
    misses: AtomicU64,
    evictions: AtomicU64,
    warmup_loaded: AtomicUsize,
    warmup_millis: AtomicU64,
    warmed_up: AtomicBool,
}

impl DashCache {
    /// A cache holding at most `capacity` orders (at least 1), unbounded in bytes.
    pub fn new(capacity: usize) -> Self {
        Self::with_max_bytes(capacity, usize::MAX)
    }

    /// A cache holding at most `capacity` orders (at least 1) and at most `max_bytes` bytes.
    pub fn with_max_bytes(capacity: usize, max_bytes: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            max_bytes,
            map: DashMap::with_capacity_and_hasher(capacity.min(1 << 20), RandomState::default()),
            fifo: Mutex::new(VecDeque::with_capacity(capacity.min(1 << 20))),
            capacity,
            entries: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            hits: StripedCounter::default(),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            warmup_loaded: AtomicUsize::new(0),
            warmup_millis: AtomicU64::new(0),
            warmed_up: AtomicBool::new(false),
        }
    }

    /// Evicts the entry inserted longest ago, under the FIFO lock whose queue is `fifo`,
    /// taking what it held off `bytes` (and the published count); returns its uid, or `None`
    /// when the cache is empty.
    fn evict_oldest(&self, fifo: &mut VecDeque<Uid>, bytes: &mut usize) -> Option<Uid> {
        let victim = fifo.pop_front()?;
        if let Some((_, old)) = self.map.remove(&victim) {
            *bytes -= old.held_bytes();
            self.bytes.store(*bytes, Ordering::Relaxed);
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        Some(victim)
    }

    pub fn len(&self) -> usize {
        self.entries.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl OrderCache for DashCache {
    fn get(&self, order_uid: &str) -> Option<CachedOrder> {
        let hit = self.map.get(order_uid).map(|e| e.value().clone());
        if hit.is_some() {
            self.hits.add_one();
        } else {
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    fn contains(&self, order_uid: &str) -> bool {
        self.map.contains_key(order_uid)
    }

    fn insert(&self, order_uid: &str, entry: CachedOrder) {
        let len = entry.held_bytes();
        // Never cached: it would evict everything and still not fit.
        if len > self.max_bytes {
            return;
        }
        // The FIFO lock serialises inserts, which is what keeps both bounds exact under
        // concurrent writers; reads never take it.
        let Ok(mut fifo) = self.fifo.lock() else {
            return;
        };
        // Same uid again (read-through racing ingestion): orders never change, so the entry
        // already holds this order. Only inserts (all under this lock) add keys.
        if self.map.contains_key(order_uid) {
            return;
        }
        // Make room first, so that even a concurrent `len()` or `stats()` never sees a bound
        // exceeded. `bytes` only changes under this lock, so it is exact here.
        let mut bytes = self.bytes.load(Ordering::Relaxed);
        while fifo.len() >= self.capacity || bytes + len > self.max_bytes {
            if self.evict_oldest(&mut fifo, &mut bytes).is_none() {
                break;
            }
        }
        let key = Uid::new(order_uid);
        fifo.push_back(key.clone());
        self.bytes.store(bytes + len, Ordering::Relaxed);
        self.map.insert(key, entry);
        self.entries.store(fifo.len(), Ordering::Release);
    }

    fn resolve(&self, order_uid: &str, json: OrderJson) {
        let Ok(mut fifo) = self.fifo.lock() else {
            return;
        };
        // Under the FIFO lock, like inserts and evictions: the entry cannot go meanwhile.
        let held = match self.map.get(order_uid) {
            Some(e) if matches!(e.value(), CachedOrder::Message(_)) => e.value().held_bytes(),
            _ => return,
        };
        let len = json.held_bytes();
        // Room first, if the JSON is the larger, as for an insert.
        let mut bytes = self.bytes.load(Ordering::Relaxed);
        while bytes - held + len > self.max_bytes {
            let Some(victim) = self.evict_oldest(&mut fifo, &mut bytes) else {
                break;
            };
            if *victim == *order_uid {
                // Nothing else made room: it went itself.
                self.entries.store(fifo.len(), Ordering::Release);
                return;
            }
        }
        self.entries.store(fifo.len(), Ordering::Release);
        if let Some(mut entry) = self.map.get_mut(order_uid) {
            self.bytes.store(bytes - held + len, Ordering::Relaxed);
            *entry = CachedOrder::Json(json);
        }
    }

    fn stats(&self) -> CacheStats {
        let hits = self.hits.sum();
        let misses = self.misses.load(Ordering::Relaxed);
        let total = hits + misses;
        CacheStats {
            size: self.len(),
            capacity: self.capacity,
            bytes: self.bytes.load(Ordering::Relaxed),
            max_bytes: self.max_bytes,
            hits,
            misses,
            evictions: self.evictions.load(Ordering::Relaxed),
            hit_ratio: if total == 0 {
                0.0
            } else {
                hits as f64 / total as f64
            },
            warmup_loaded: self.warmup_loaded.load(Ordering::Relaxed),
            warmup_millis: self.warmup_millis.load(Ordering::Relaxed),
            warmed_up: self.warmed_up.load(Ordering::Acquire),
        }
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    fn mark_warmed(&self, loaded: usize, took: Duration) {
        self.warmup_loaded.store(loaded, Ordering::Relaxed);
        self.warmup_millis.store(
            u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.warmed_up.store(true, Ordering::Release);
    }
}

/// A counter that many threads add to without sharing a cache line: each thread adds to one
/// of [`StripedCounter::SLOTS`] slots (its own, mostly), and reading sums them. A single
/// atomic that every HTTP worker increments on every cache hit moves its cache line between
/// cores each time: a few percent of a cached read.
#[derive(Debug, Default)]
struct StripedCounter {
    slots: [Slot; StripedCounter::SLOTS],
}

/// One slot, alone on its cache line (128 bytes: adjacent-line prefetch pairs lines).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot(AtomicU64);

impl StripedCounter {
    const SLOTS: usize = 16;

    /// This thread's slot: handed out round robin at the thread's first add.
    fn slot() -> usize {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed) % StripedCounter::SLOTS;
        }
        SLOT.with(|s| *s)
    }

    fn add_one(&self) {
        self.slots[Self::slot()].0.fetch_add(1, Ordering::Relaxed);
    }

    fn sum(&self) -> u64 {
        self.slots
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_striped_counter_counts_every_add_from_every_thread() {
        let counter = std::sync::Arc::new(StripedCounter::default());
        let threads: Vec<_> = (0..20)
            .map(|_| {
                let c = counter.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| c.add_one()))
            })
            .collect();
        for t in threads {
            t.join().expect("no panic");
        }
        assert_eq!(counter.sum(), 20_000);
        // More threads than slots: some share one, and they still add up.
        assert!(
            counter
                .slots
                .iter()
                .all(|s| s.0.load(Ordering::Relaxed) >= 1000)
        );
    }
}
