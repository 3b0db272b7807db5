#![allow(clippy::unwrap_used)]
//! The ingest and query use cases over the in-memory fakes.

use std::sync::Arc;

use bytes::Bytes;
use orders_domain::sample::{generated_order, reference_order};
use orders_domain::testing::{InMemoryCache, InMemoryRepository};
use orders_domain::{
    FetchedBatch, IngestService, OrderCache, OrderRepository, QueryError, QueryService, RawMessage,
    RejectedFilter,
};

fn msg(offset: i64, value: Option<&[u8]>) -> RawMessage {
    RawMessage {
        offset,
        value: value.map(Bytes::copy_from_slice),
    }
}

fn json(order: &orders_domain::Order) -> Vec<u8> {
    serde_json::to_vec(order).unwrap()
}

fn setup() -> (
    Arc<InMemoryRepository>,
    Arc<InMemoryCache>,
    IngestService,
    QueryService,
) {
    let repo = Arc::new(InMemoryRepository::new());
    let cache = Arc::new(InMemoryCache::new(100));
    let ingest = IngestService::new(repo.clone(), cache.clone()).with_max_message_bytes(64 * 1024);
    let query = QueryService::new(repo.clone(), cache.clone());
    (repo, cache, ingest, query)
}

#[tokio::test]
async fn sorts_a_batch_into_orders_and_rejections_with_the_next_offset() {
    let (repo, cache, ingest, _) = setup();
    let a = generated_order("a", 1, 3);
    let mut invalid = generated_order("a", 2, 1);
    invalid.payment.amount += 1;
    let records = vec![
        msg(10, Some(&json(&a))),
        msg(11, None),
        msg(12, Some(b"")),
        msg(13, Some(&[0xc3, 0x28])),
        msg(14, Some(b"{\"order_uid\":")),
        msg(15, Some(b"{\"hello\":\"world\"}")),
        msg(16, Some(&json(&invalid))),
        msg(17, Some(&vec![b'x'; 70 * 1024])),
        msg(18, Some(&json(&a))),
    ];
    let report = ingest
        .ingest(
            "t",
            FetchedBatch {
                partition: 2,
                records,
                next_offset: 19,
                high_watermark: 19,
            },
        )
        .await
        .unwrap();
    assert_eq!(report.stored, 1);
    let reasons: Vec<_> = report
        .rejected
        .iter()
        .map(|(r, n)| (r.as_str(), *n))
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("tombstone", 1),
            ("empty", 1),
            ("oversize", 1),
            ("not_utf8", 1),
            ("not_json", 1),
            ("not_order", 1),
            ("invalid", 1),
            ("duplicate", 1)
        ]
    );
    assert_eq!(repo.stored_offsets("t").await.unwrap().get(&2), Some(&19));
    let rejected = repo
        .rejected(&RejectedFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let positions: Vec<_> = rejected
        .iter()
        .map(|r| (r.position.offset, r.reason.clone()))
        .collect();
    assert_eq!(positions.len(), 8);
    assert!(positions.contains(&(16, "invalid".into())));
    let invalid_row = rejected.iter().find(|r| r.position.offset == 16).unwrap();
    assert!(
        invalid_row.detail.contains("payment.amount"),
        "{}",
        invalid_row.detail
    );
    // Committed orders are in the cache; nothing else is.
    assert!(cache.get("a1").is_some());
    assert_eq!(cache.stats().size, 1);
}

#[tokio::test]
async fn a_failed_store_moves_nothing_and_caches_nothing() {
    let (repo, cache, ingest, _) = setup();
    repo.set_down(true);
    let o = reference_order();
    let batch = FetchedBatch {
        partition: 0,
        records: vec![msg(0, Some(&json(&o)))],
        next_offset: 1,
        high_watermark: 1,
    };
    let err = ingest.ingest("t", batch.clone()).await.unwrap_err();
    assert!(err.is_transient());
    assert_eq!(cache.stats().size, 0);
    repo.set_down(false);
    assert!(repo.stored_offsets("t").await.unwrap().is_empty());
    // Retrying the same batch afterwards stores it once.
    assert_eq!(ingest.ingest("t", batch.clone()).await.unwrap().stored, 1);
    assert_eq!(repo.recent(None, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn query_reads_through_and_fills_the_cache() {
    let (repo, cache, ingest, query) = setup();
    let o = reference_order();
    ingest
        .ingest(
            "t",
            FetchedBatch {
                partition: 0,
                records: vec![msg(0, Some(&json(&o)))],
                next_offset: 1,
                high_watermark: 1,
            },
        )
        .await
        .unwrap();
    // A fresh cache (as after a restart) misses, reads through, then hits.
    let cold = Arc::new(InMemoryCache::new(10));
    let q = QueryService::new(repo.clone(), cold.clone());
    let body = q.order_json(&o.order_uid).await.unwrap();
    assert_eq!(
        serde_json::from_slice::<orders_domain::Order>(body.json()).unwrap(),
        o
    );
    q.order_json(&o.order_uid).await.unwrap();
    let s = cold.stats();
    assert_eq!((s.hits, s.misses, s.size), (1, 1, 1));
    assert!(matches!(
        query.order_json("bad uid").await,
        Err(QueryError::InvalidUid)
    ));
    assert!(matches!(
        query.order_json("unknown").await,
        Err(QueryError::NotFound)
    ));
    assert_eq!(cache.stats().size, 1);
}

#[tokio::test]
async fn warm_up_loads_the_newest_up_to_capacity() {
    let repo = Arc::new(InMemoryRepository::new());
    let seed_cache = Arc::new(InMemoryCache::new(1000));
    let ingest = IngestService::new(repo.clone(), seed_cache);
    let records = (0..20)
        .map(|n| msg(n, Some(&json(&generated_order("w", n as u64, 2)))))
        .collect();
    ingest
        .ingest(
            "t",
            FetchedBatch {
                partition: 0,
                records,
                next_offset: 20,
                high_watermark: 20,
            },
        )
        .await
        .unwrap();
    let cache = Arc::new(InMemoryCache::new(5));
    let q = QueryService::new(repo, cache.clone());
    assert_eq!(q.warm_up().await.unwrap(), 5);
    let s = cache.stats();
    assert!(s.warmed_up);
    assert_eq!((s.size, s.warmup_loaded, s.evictions), (5, 5, 0));
    for n in 15..20 {
        assert!(
            cache.get(&format!("w{n}")).is_some(),
            "w{n} is among the newest"
        );
    }
    assert!(cache.get("w14").is_none());
}

mod conformance_in_memory {
    use super::*;
    orders_domain::repository_conformance_tests!(async { InMemoryRepository::new() });
}

/// Warm-up reads page by page (2,500 stored, capacity 2,100: three pages of up to 1,000) and
/// still loads exactly the newest, oldest first: the next insert evicts the oldest of them.
#[tokio::test]
async fn warm_up_pages_through_the_newest_and_inserts_them_oldest_first() {
    let repo = Arc::new(InMemoryRepository::new());
    let records: Vec<RawMessage> = (0..2_500)
        .map(|i| msg(i, Some(&json(&generated_order("w", i as u64, 1)))))
        .collect();
    IngestService::new(repo.clone(), Arc::new(InMemoryCache::new(1)))
        .ingest(
            "t",
            FetchedBatch {
                partition: 0,
                records,
                next_offset: 2_500,
                high_watermark: 2_500,
            },
        )
        .await
        .unwrap();
    const {
        assert!(
            2_100 > orders_domain::query::WARM_PAGE * 2,
            "more than two pages"
        )
    };
    let cache = Arc::new(InMemoryCache::new(2_100));
    let query = QueryService::new(repo, cache.clone());
    assert_eq!(query.warm_up().await.unwrap(), 2_100);
    assert!(cache.get("w399").is_none(), "older than the newest 2,100");
    assert!(cache.get("w400").is_some() && cache.get("w2499").is_some());
    let Some(orders_domain::CachedOrder::Json(stored)) = cache.get("w1234") else {
        panic!("warm-up caches the JSON itself");
    };
    assert_eq!(stored.json(), &json(&generated_order("w", 1234, 1))[..]);
    assert_eq!(stored.etag(), orders_domain::entity_tag(stored.json()));
    cache.insert("new", orders_domain::OrderJson::from_json(b"{}").into());
    assert!(
        cache.get("w400").is_none(),
        "the oldest loaded is evicted first"
    );
    assert!(cache.get("w401").is_some());
}

/// `replay` re-checks stored rejections: the now-valid ones become orders and their rows go, in
/// one transaction per topic (rows of two topics here); the rest stay; a uid already stored is
/// recorded as a duplicate at its own position; a second replay stores nothing twice.
#[tokio::test]
async fn replay_stores_what_is_now_valid_once_per_topic() {
    use orders_domain::{Position, RejectReason, Rejection, StoreBatch};
    let (repo, _, ingest, _) = setup();
    let stored = generated_order("r", 9, 1);
    ingest
        .ingest(
            "ta",
            FetchedBatch {
                partition: 0,
                records: vec![msg(9, Some(&json(&stored)))],
                next_offset: 10,
                high_watermark: 10,
            },
        )
        .await
        .unwrap();
    // Rejections as an older rule set recorded them (the orders are valid today).
    let rejection = |topic: &str, offset: i64, payload: Vec<u8>| Rejection {
        position: Position {
            topic: topic.into(),
            partition: 0,
            offset,
        },
        reason: RejectReason::Invalid,
        detail: "an old rule".into(),
        payload: Some(Bytes::from(payload)),
        truncated: None,
    };
    for (topic, rejections) in [
        (
            "ta",
            vec![
                rejection("ta", 0, json(&generated_order("r", 0, 2))),
                rejection("ta", 1, b"{\"not\": \"an order\"}".to_vec()),
                rejection("ta", 2, json(&stored)),
            ],
        ),
        (
            "tb",
            vec![rejection("tb", 0, json(&generated_order("r", 1, 3)))],
        ),
        (
            "ta",
            vec![rejection("ta", 3, json(&generated_order("r", 2, 1)))],
        ),
    ] {
        repo.store_batch(&StoreBatch {
            topic: topic.into(),
            rejections,
            ..StoreBatch::default()
        })
        .await
        .unwrap();
    }

    let report = ingest.replay(None).await.unwrap();
    assert_eq!(
        (
            report.examined,
            report.stored,
            report.duplicates,
            report.still_rejected
        ),
        (5, 3, 1, 1)
    );
    for (uid, items) in [("r0", 2), ("r1", 3), ("r2", 1)] {
        let order = repo.get(uid).await.unwrap().unwrap();
        assert_eq!(order.items.len(), items);
    }
    let left = repo
        .rejected(&RejectedFilter {
            limit: 100,
            ..RejectedFilter::default()
        })
        .await
        .unwrap();
    let left: Vec<(String, i64, RejectReason)> = left
        .into_iter()
        .map(|r| {
            (
                r.position.topic.into_string(),
                r.position.offset,
                RejectReason::parse(&r.reason).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        left.len(),
        2,
        "the not-an-order row and the duplicate remain: {left:?}"
    );
    assert!(left.contains(&("ta".into(), 1, RejectReason::Invalid)));
    assert!(left.contains(&("ta".into(), 2, RejectReason::Duplicate)));

    let again = ingest.replay(None).await.unwrap();
    assert_eq!((again.examined, again.stored), (2, 0));
    assert_eq!(repo.recent(None, 100).await.unwrap().len(), 4);
}

/// An oversize message is kept whole up to the payload cap (so raising the message limit and
/// replaying works), and past the cap as an excerpt with its size and digest.
#[tokio::test]
async fn oversize_payloads_are_kept_up_to_the_cap_and_replayable() {
    let repo = Arc::new(InMemoryRepository::new());
    let cache = Arc::new(InMemoryCache::new(100));
    let mut big_order = generated_order("big-", 1, 200);
    big_order
        .items
        .iter_mut()
        .for_each(|i| i.name = "n".repeat(200).into());
    let big = json(&big_order);
    assert!(big.len() > 40 * 1024 && big.len() < 100 * 1024);
    let huge = vec![b' '; 300 * 1024];
    let strict = IngestService::new(repo.clone(), cache.clone())
        .with_max_message_bytes(16 * 1024)
        .with_rejected_payload_max_bytes(200 * 1024);
    strict
        .ingest(
            "t",
            FetchedBatch {
                partition: 0,
                records: vec![msg(0, Some(&big)), msg(1, Some(&huge))],
                next_offset: 2,
                high_watermark: 2,
            },
        )
        .await
        .unwrap();
    let rows = repo
        .rejected(&RejectedFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].payload.as_deref(), Some(&big[..]), "kept whole");
    assert_eq!(rows[0].truncated, None);
    assert_eq!(
        rows[1].payload.as_ref().map(Bytes::len),
        Some(orders_domain::PAYLOAD_EXCERPT_BYTES)
    );
    assert_eq!(rows[1].truncated.as_ref().map(|t| t.size), Some(300 * 1024));

    // The limit is raised: the whole one becomes an order, the excerpt stays rejected.
    let relaxed = IngestService::new(repo.clone(), cache).with_max_message_bytes(1024 * 1024);
    let report = relaxed.replay(None).await.unwrap();
    assert_eq!((report.stored, report.still_rejected), (1, 1));
    assert_eq!(repo.get("big-1").await.unwrap(), Some(big_order));
}

/// An ingested order is cached as its message; its first read serves exactly the JSON of the
/// stored order (the reference message is laid out otherwise: indented, its own key order),
/// and leaves that JSON in the cache for every later read.
#[tokio::test]
async fn an_ingested_order_is_cached_as_its_message_and_served_as_its_json() {
    use orders_domain::{CachedOrder, OrderJson};
    let (repo, cache, ingest, query) = setup();
    let reference = orders_domain::REFERENCE_ORDER_JSON.as_bytes();
    let unknown = orders_domain::sample::order_with_unknown_fields("u", 1, 2);
    let records = vec![msg(0, Some(reference)), msg(1, Some(&json(&unknown)))];
    ingest
        .ingest(
            "t",
            FetchedBatch {
                partition: 0,
                records,
                next_offset: 2,
                high_watermark: 2,
            },
        )
        .await
        .unwrap();
    for (uid, message) in [
        (reference_order().order_uid, reference.to_vec()),
        (unknown.order_uid.clone(), json(&unknown)),
    ] {
        match cache.get(&uid) {
            Some(CachedOrder::Message(m)) => assert_eq!(&m.payload()[..], &message[..]),
            other => panic!("{uid}: cached as {other:?}, not as its message"),
        }
        let stored = repo.get(&uid).await.unwrap().expect("stored");
        let expected = OrderJson::from_order(&stored).unwrap();
        assert_eq!(query.order_json(&uid).await.unwrap(), expected, "{uid}");
        assert_eq!(cache.get(&uid), Some(CachedOrder::Json(expected.clone())));
        assert_eq!(query.order_json(&uid).await.unwrap(), expected, "{uid}");
    }
    assert_ne!(
        reference,
        OrderJson::from_order(&reference_order()).unwrap().json(),
        "the reference message is not laid out as the served JSON"
    );
}

/// A uid repeated in one batch: the first is the order, each later one a `duplicate`
/// rejection carrying its own payload, and the rejections keep the log's order among the
/// others.
#[test]
fn a_uid_repeated_in_a_batch_keeps_the_first_and_rejects_the_rest_in_log_order() {
    let (_, _, ingest, _) = setup();
    let a = generated_order("a", 1, 1);
    let mut a_again = generated_order("a", 1, 3);
    a_again.locale = "ru".into();
    let b = generated_order("b", 1, 1);
    let batch = ingest.prepare(
        "t",
        FetchedBatch {
            partition: 0,
            records: vec![
                msg(1, Some(&json(&a))),
                msg(2, Some(&json(&a_again))),
                msg(3, Some(b"{}")),
                msg(4, Some(&json(&b))),
                msg(5, Some(&json(&a))),
            ],
            next_offset: 6,
            high_watermark: 6,
        },
        None,
    );
    let orders: Vec<_> = batch
        .orders
        .iter()
        .map(|o| {
            (
                o.position.offset,
                o.order.order_uid.as_str(),
                o.order.items.len(),
            )
        })
        .collect();
    assert_eq!(orders, vec![(1, "a1", 1), (4, "b1", 1)]);
    let rejections: Vec<_> = batch
        .rejections
        .iter()
        .map(|r| (r.position.offset, r.reason.as_str()))
        .collect();
    assert_eq!(
        rejections,
        vec![(2, "duplicate"), (3, "not_order"), (5, "duplicate")]
    );
    let second = &batch.rejections[0];
    assert_eq!(second.detail, r#"order_uid "a1" already in this batch"#);
    assert_eq!(
        second.payload.as_deref(),
        Some(json(&a_again).as_slice()),
        "the rejection keeps the repeat's own message"
    );
}

/// A batch of which only some orders are new: only those are cached. An order re-sent with a
/// stored uid that the cache does not hold (stored by another replica, or evicted) stays out.
#[tokio::test]
async fn only_the_orders_a_batch_stored_are_cached() {
    let (repo, cache, ingest, query) = setup();
    let elsewhere = IngestService::new(repo, Arc::new(InMemoryCache::new(100)));
    let a = generated_order("a", 1, 1);
    let fetched = |offset: i64, records: Vec<RawMessage>| FetchedBatch {
        partition: 0,
        records,
        next_offset: offset,
        high_watermark: offset,
    };
    elsewhere
        .ingest("t", fetched(1, vec![msg(0, Some(&json(&a)))]))
        .await
        .unwrap();
    assert!(cache.get("a1").is_none());
    let mut a_resent = generated_order("a", 1, 3);
    a_resent.locale = "ru".into();
    let b = generated_order("b", 1, 1);
    let report = ingest
        .ingest(
            "t",
            fetched(
                3,
                vec![msg(1, Some(&json(&a_resent))), msg(2, Some(&json(&b)))],
            ),
        )
        .await
        .unwrap();
    assert_eq!(report.stored, 1);
    assert!(cache.get("b1").is_some());
    assert!(
        cache.get("a1").is_none(),
        "the re-sent order was not stored"
    );
    let served = query.order_json("a1").await.unwrap();
    assert_eq!(
        serde_json::from_slice::<orders_domain::Order>(served.json()).unwrap(),
        a,
        "the stored order, not the re-sent one"
    );
}
