//! [`OrderCache`] on a sharded concurrent map.
//!
//! Eviction policy: **FIFO by first insertion**. When a new uid would exceed the capacity, the
//! uid inserted longest ago is evicted. Orders are immutable once stored and clients mostly ask
//! for recent ones, so insertion order approximates recency well, and a hit never takes a lock
//! on shared state: the read path is one shard read-lock plus a `Bytes` clone (a refcount).
//!
//! Invariant: the number of entries never exceeds the capacity, and `hits + misses` equals the
//! number of `get` calls.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use orders_domain::{CacheStats, OrderCache};

/// The dashmap-backed cache.
#[derive(Debug)]
pub struct DashCache {
    map: DashMap<Box<str>, Bytes>,
    /// Insertion order of the uids in `map`; guarded separately so hits never touch it.
    fifo: Mutex<VecDeque<Box<str>>>,
    capacity: usize,
    /// Entries, published under the FIFO lock once an insert (and its eviction) is complete.
    /// `DashMap::len` sums shards one by one and can transiently over-count under concurrent
    /// remove+insert; this cannot.
    entries: AtomicUsize,
    bytes: AtomicUsize,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    warmup_loaded: AtomicUsize,
    warmup_millis: AtomicU64,
    warmed_up: AtomicBool,
}

impl DashCache {
    /// A cache holding at most `capacity` orders (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            map: DashMap::with_capacity(capacity.min(1 << 20)),
            fifo: Mutex::new(VecDeque::with_capacity(capacity.min(1 << 20))),
            capacity,
            entries: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            warmup_loaded: AtomicUsize::new(0),
            warmup_millis: AtomicU64::new(0),
            warmed_up: AtomicBool::new(false),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl OrderCache for DashCache {
    fn get(&self, order_uid: &str) -> Option<Bytes> {
        let hit = self.map.get(order_uid).map(|e| e.value().clone());
        let counter = if hit.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        hit
    }

    fn insert(&self, order_uid: &str, json: Bytes) {
        // The FIFO lock serialises inserts of new uids, which is what keeps the bound exact
        // under concurrent writers; reads never take it.
        let Ok(mut fifo) = self.fifo.lock() else {
            return;
        };
        let len = json.len();
        if !self.map.contains_key(order_uid) {
            // Make room first, so that even a concurrent `len()` never sees capacity + 1.
            // Only inserts (all under this lock) add keys, so the check above stays true.
            while fifo.len() >= self.capacity {
                let Some(victim) = fifo.pop_front() else {
                    break;
                };
                if let Some((_, old)) = self.map.remove(&victim) {
                    self.bytes.fetch_sub(old.len(), Ordering::Relaxed);
                    self.evictions.fetch_add(1, Ordering::Relaxed);
                }
            }
            fifo.push_back(order_uid.into());
        }
        self.bytes.fetch_add(len, Ordering::Relaxed);
        if let Some(old) = self.map.insert(order_uid.into(), json) {
            // Same uid again (read-through racing ingestion): replaced, not a new entry.
            self.bytes.fetch_sub(old.len(), Ordering::Relaxed);
        }
        self.entries.store(fifo.len(), Ordering::Release);
    }

    fn stats(&self) -> CacheStats {
        let hits = self.hits.load(Ordering::Relaxed);
        let misses = self.misses.load(Ordering::Relaxed);
        let total = hits + misses;
        CacheStats {
            size: self.len(),
            capacity: self.capacity,
            bytes: self.bytes.load(Ordering::Relaxed),
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

    fn mark_warmed(&self, loaded: usize, took: Duration) {
        self.warmup_loaded.store(loaded, Ordering::Relaxed);
        self.warmup_millis.store(
            u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.warmed_up.store(true, Ordering::Release);
    }
}
