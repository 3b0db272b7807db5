#![allow(clippy::unwrap_used)]
//! Behaviour and concurrency of the dashmap cache.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use orders_cache::DashCache;
use orders_domain::{
    CachedOrder, ENTITY_TAG_LEN, OrderCache, OrderJson, ReceivedMessage, UnknownFields,
};

fn body(n: usize) -> CachedOrder {
    OrderJson::from_json(format!("{{\"order_uid\":\"o{n}\"}}").as_bytes()).into()
}

/// A JSON entry holding `len` bytes in all (tag and JSON).
fn json(len: usize) -> OrderJson {
    OrderJson::from_json(&vec![b'x'; len - ENTITY_TAG_LEN])
}

fn held(len: usize) -> CachedOrder {
    json(len).into()
}

/// Bytes the entries `o0`..`o{n-1}` still cached hold, counted one by one.
fn held_by(c: &DashCache, n: usize) -> usize {
    (0..n)
        .filter_map(|i| c.get(&format!("o{i}")))
        .map(|b| b.held_bytes())
        .sum()
}

/// A message entry of `len` bytes (the cache never looks inside).
fn message(len: usize) -> CachedOrder {
    CachedOrder::Message(ReceivedMessage::new(
        Bytes::from(vec![b'm'; len]),
        UnknownFields::Keep,
    ))
}

#[test]
fn hits_misses_and_fifo_eviction() {
    let c = DashCache::new(3);
    for n in 0..3 {
        c.insert(&format!("o{n}"), body(n));
    }
    assert_eq!(c.get("o0"), Some(body(0)));
    c.insert("o3", body(3)); // evicts o0, the first inserted, even though it was just read
    assert_eq!(c.get("o0"), None);
    assert!(c.get("o3").is_some());
    c.insert("o3", body(3)); // same uid: no new entry, no eviction
    let s = c.stats();
    assert_eq!(
        (s.size, s.capacity, s.hits, s.misses, s.evictions),
        (3, 3, 2, 1, 1)
    );
    assert!((s.hit_ratio - 2.0 / 3.0).abs() < 1e-9);
    let expected_bytes: usize = (1..4).map(|n| body(n).held_bytes()).sum();
    assert_eq!(s.bytes, expected_bytes);
    assert!(!s.warmed_up);
    c.mark_warmed(3, Duration::from_millis(12));
    let s = c.stats();
    assert!(s.warmed_up);
    assert_eq!((s.warmup_loaded, s.warmup_millis), (3, 12));
}

#[test]
fn many_readers_and_writers_keep_the_bound_and_the_counts() {
    const CAP: usize = 500;
    const WRITERS: usize = 4;
    const PER_WRITER: usize = 5_000;
    const READERS: usize = 4;
    const READS: usize = 20_000;
    let c = Arc::new(DashCache::new(CAP));
    let mut handles = vec![];
    for w in 0..WRITERS {
        let c = c.clone();
        handles.push(thread::spawn(move || {
            for i in 0..PER_WRITER {
                let n = w * PER_WRITER + i;
                c.insert(&format!("o{n}"), body(n));
                assert!(c.len() <= CAP, "bound exceeded: {}", c.len());
            }
            0u64
        }));
    }
    for r in 0..READERS {
        let c = c.clone();
        handles.push(thread::spawn(move || {
            let mut found = 0u64;
            for i in 0..READS {
                let n = (i * 7 + r) % (WRITERS * PER_WRITER);
                if let Some(b) = c.get(&format!("o{n}")) {
                    assert_eq!(b, body(n), "a hit returns that uid's body");
                    found += 1;
                }
            }
            found
        }));
    }
    let mut total_found = 0;
    for h in handles {
        total_found += h.join().unwrap();
    }
    let s = c.stats();
    assert_eq!(s.size, CAP);
    assert_eq!(s.hits + s.misses, (READERS * READS) as u64);
    assert_eq!(s.hits, total_found);
    assert_eq!(s.evictions, (WRITERS * PER_WRITER - CAP) as u64);
    assert_eq!(
        s.bytes,
        (0..WRITERS * PER_WRITER)
            .filter(|n| c.get(&format!("o{n}")).is_some())
            .map(|n| body(n).held_bytes())
            .sum::<usize>()
    );
}

#[test]
fn the_byte_bound_evicts_fifo_and_refuses_what_cannot_fit() {
    let sized = |_: usize, len: usize| held(len);
    // Room for ten entries, but only 250 bytes.
    let c = DashCache::with_max_bytes(10, 250);
    for n in 0..3 {
        c.insert(&format!("o{n}"), sized(n, 100));
    }
    // Two fit; the third pushed out the first.
    let s = c.stats();
    assert_eq!(
        (s.size, s.bytes, s.max_bytes, s.evictions),
        (2, 200, 250, 1)
    );
    assert_eq!(c.get("o0"), None);
    // One big entry evicts as many as it needs, oldest first.
    c.insert("big", sized(0, 240));
    let s = c.stats();
    assert_eq!((s.size, s.bytes, s.evictions), (1, 240, 3));
    assert!(c.get("big").is_some());
    // Larger than the whole bound: not cached, nothing evicted for it.
    c.insert("huge", sized(0, 251));
    assert_eq!(c.get("huge"), None);
    let s = c.stats();
    assert_eq!((s.size, s.bytes, s.evictions), (1, 240, 3));
    // The same uid again changes nothing.
    c.insert("big", sized(0, 240));
    assert_eq!(c.stats().bytes, 240);
}

#[test]
fn concurrent_writers_keep_the_byte_bound() {
    const MAX: usize = 10_000;
    let c = Arc::new(DashCache::with_max_bytes(1_000_000, MAX));
    let handles: Vec<_> = (0..4)
        .map(|w| {
            let c = c.clone();
            thread::spawn(move || {
                for i in 0..5_000 {
                    let n = w * 5_000 + i;
                    c.insert(&format!("o{n}"), held(50 + n % 200));
                    let s = c.stats();
                    assert!(s.bytes <= MAX, "byte bound exceeded: {}", s.bytes);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let s = c.stats();
    assert_eq!(s.bytes, held_by(&c, 20_000));
    assert!(s.bytes <= MAX && s.bytes > MAX - 250, "{s:?}");
}

#[test]
fn a_resolved_message_keeps_its_place_and_the_bytes_count_its_json() {
    let c = DashCache::new(3);
    for n in 0..3 {
        c.insert(&format!("o{n}"), message(100 + n));
    }
    assert_eq!(c.stats().bytes, 100 + 101 + 102);
    c.resolve("o0", json(80));
    assert_eq!(
        c.get("o0"),
        Some(held(80)),
        "the JSON took the message's place"
    );
    assert_eq!(c.stats().bytes, 80 + 101 + 102);
    // Resolving again, or an uid not cached, changes nothing.
    c.resolve("o0", json(90));
    c.resolve("nope", json(90));
    assert_eq!(c.get("o0"), Some(held(80)));
    let s = c.stats();
    assert_eq!((s.size, s.bytes, s.evictions), (3, 80 + 101 + 102, 0));
    // Still the oldest: the next insert evicts it, not the younger messages.
    c.insert("o3", message(100));
    assert_eq!(c.get("o0"), None);
    assert!(matches!(c.get("o1"), Some(CachedOrder::Message(_))));
    assert_eq!(c.stats().bytes, 101 + 102 + 100);
}

#[test]
fn a_json_larger_than_its_message_evicts_older_entries_then_itself_to_keep_the_byte_bound() {
    let c = DashCache::with_max_bytes(10, 300);
    for n in 0..3 {
        c.insert(&format!("o{n}"), message(100));
    }
    // 100 more bytes for o2: o0 goes, o1 stays.
    c.resolve("o2", json(200));
    let s = c.stats();
    assert_eq!((s.size, s.bytes, s.evictions), (2, 300, 1));
    assert_eq!(c.get("o0"), None);
    assert_eq!(c.get("o2"), Some(held(200)));
    // o1 is the oldest, and its JSON needs everything: o1 goes itself, o2 is kept.
    c.resolve("o1", json(250));
    let s = c.stats();
    assert_eq!((s.size, s.bytes, s.evictions), (1, 200, 2));
    assert_eq!(c.get("o1"), None);
    // A JSON larger than the whole bound evicts everything up to itself and is not kept.
    c.insert("o3", message(50));
    c.resolve("o3", json(301));
    let s = c.stats();
    assert_eq!((s.size, s.bytes, s.evictions), (0, 0, 4));
}

#[test]
fn concurrent_inserts_and_resolves_keep_both_bounds_and_an_exact_byte_count() {
    const MAX: usize = 20_000;
    const CAP: usize = 150;
    let c = Arc::new(DashCache::with_max_bytes(CAP, MAX));
    let handles: Vec<_> = (0..4)
        .map(|w| {
            let c = c.clone();
            thread::spawn(move || {
                for i in 0..5_000 {
                    let n = w * 5_000 + i;
                    c.insert(&format!("o{n}"), message(50 + n % 100));
                    // Resolve a recent one, its JSON sometimes larger, sometimes smaller.
                    let r = n.saturating_sub(3);
                    c.resolve(&format!("o{r}"), json(40 + r % 150));
                    let s = c.stats();
                    assert!(s.bytes <= MAX && s.size <= CAP, "bound exceeded: {s:?}");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let s = c.stats();
    assert_eq!(s.bytes, held_by(&c, 20_000));
    assert!(s.size <= CAP);
    assert_eq!(
        (0..20_000)
            .filter(|n| c.get(&format!("o{n}")).is_some())
            .count(),
        s.size
    );
}
