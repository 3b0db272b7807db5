//! In-memory fakes of the ports and the repository conformance suite.
//!
//! The suite is run against [`InMemoryRepository`] here and against every real adapter in the
//! adapter's own tests (see `repository_conformance_tests!`), so both honour one contract.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;

use crate::error::RepositoryError;
use crate::model::{Order, OrderSummary};
use crate::order_json::{CachedOrder, OrderJson};
use crate::ports::{
    CacheStats, OrderCache, OrderRepository, RecordMark, RejectedFilter, RejectedMessage,
    StoreBatch, StoreOutcome, StoreSeq,
};
use crate::validation::RejectReason;

#[derive(Debug, Default)]
struct MemState {
    orders: HashMap<String, (i64, Order)>,
    seq: i64,
    offsets: BTreeMap<(String, i32), i64>,
    marks: BTreeMap<(String, i32), RecordMark>,
    rejected: Vec<RejectedMessage>,
    next_rejected_id: i64,
}

/// An `OrderRepository` in memory, for domain tests. Fails every call while `set_down(true)`.
#[derive(Debug, Default)]
pub struct InMemoryRepository {
    state: Mutex<MemState>,
    down: std::sync::atomic::AtomicBool,
}

impl InMemoryRepository {
    pub fn new() -> Self {
        Self::default()
    }

    /// Simulates an outage: every call fails with `Unavailable` until set back.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    fn check(&self) -> Result<std::sync::MutexGuard<'_, MemState>, RepositoryError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(RepositoryError::Unavailable {
                context: "simulated outage".into(),
                source: None,
            });
        }
        self.state.lock().map_err(|_| RepositoryError::Other {
            context: "poisoned".into(),
            source: None,
        })
    }
}

fn storage_constraints(order: &Order) -> Result<(), RepositoryError> {
    let p = &order.payment;
    let money = [
        p.amount,
        p.delivery_cost,
        p.goods_total,
        p.custom_fee,
        p.payment_dt,
    ];
    let bad_item = order
        .items
        .iter()
        .any(|i| i.price < 0 || i.total_price < 0 || !(0..=100).contains(&i.sale));
    // PostgreSQL `text` cannot hold NUL (JSON shows it as \u0000).
    let nul = serde_json::to_string(order).is_ok_and(|j| j.contains("\\u0000"));
    if money.iter().any(|v| *v < 0) || bad_item || nul {
        return Err(RepositoryError::Constraint(format!(
            "order {} breaks a storage constraint",
            order.order_uid
        )));
    }
    Ok(())
}

#[async_trait]
impl OrderRepository for InMemoryRepository {
    async fn store_batch(&self, batch: &StoreBatch) -> Result<StoreOutcome, RepositoryError> {
        let mut st = self.check()?;
        // Stricter than a database could be: a batch that mixes topics breaks the contract.
        let topics = batch.orders.iter().map(|a| &a.position.topic);
        if let Some(t) = topics
            .chain(batch.rejections.iter().map(|r| &r.position.topic))
            .find(|t| **t != batch.topic)
        {
            return Err(RepositoryError::other(
                "storing a batch",
                format!(
                    "batch of topic {:?} holds a message of topic {t:?}",
                    batch.topic
                ),
            ));
        }
        for o in &batch.offsets {
            if o.lease_epoch.is_some() {
                // Leases live with an adapter's partition assignment, which this fake has not.
                return Err(RepositoryError::other(
                    "storing a batch",
                    "the in-memory repository does not check lease epochs",
                ));
            }
            let stored = st.offsets.get(&(batch.topic.clone(), o.partition)).copied();
            if stored != o.expected {
                return Err(RepositoryError::Fenced {
                    topic: batch.topic.clone(),
                    partition: o.partition,
                    expected: o.expected,
                });
            }
        }
        for a in &batch.orders {
            storage_constraints(&a.order)?;
        }
        if let Some(r) = batch.rejections.iter().find(|r| r.detail.contains('\0')) {
            return Err(RepositoryError::Constraint(format!(
                "rejection detail at offset {} holds NUL",
                r.position.offset
            )));
        }
        let mut outcome = StoreOutcome::default();
        st.rejected
            .retain(|r| !batch.superseded_rejections.contains(&r.id));
        let mut new_rejections = Vec::new();
        for a in &batch.orders {
            if st.orders.contains_key(a.order.order_uid.as_str()) {
                outcome
                    .duplicates
                    .push((a.order.order_uid.clone(), a.position.clone()));
                new_rejections.push((
                    a.position.clone(),
                    RejectReason::Duplicate.as_str().to_owned(),
                    format!("order_uid {:?} is already stored", a.order.order_uid),
                    Some(a.payload.clone()),
                    None,
                ));
            } else {
                st.seq += 1;
                let seq = st.seq;
                st.orders
                    .insert(a.order.order_uid.to_string(), (seq, a.order.clone()));
                outcome.stored.push(a.order.order_uid.clone());
            }
        }
        for r in &batch.rejections {
            new_rejections.push((
                r.position.clone(),
                r.reason.as_str().to_owned(),
                r.detail.clone(),
                r.payload.clone(),
                r.truncated.clone(),
            ));
        }
        for (position, reason, detail, payload, truncated) in new_rejections {
            st.next_rejected_id += 1;
            let id = st.next_rejected_id;
            st.rejected.push(RejectedMessage {
                id,
                position,
                reason,
                detail,
                payload,
                truncated,
                received_at: Utc::now(),
            });
        }
        for o in &batch.offsets {
            st.offsets
                .insert((batch.topic.clone(), o.partition), o.next_offset);
            if let Some(mark) = o.mark {
                st.marks.insert((batch.topic.clone(), o.partition), mark);
            }
        }
        Ok(outcome)
    }

    async fn get(&self, order_uid: &str) -> Result<Option<Order>, RepositoryError> {
        Ok(self.check()?.orders.get(order_uid).map(|(_, o)| o.clone()))
    }

    async fn recent(
        &self,
        before: Option<StoreSeq>,
        limit: usize,
    ) -> Result<Vec<(StoreSeq, Order)>, RepositoryError> {
        let st = self.check()?;
        let before = before.map_or(i64::MAX, |s| s.0);
        let mut all: Vec<_> = st
            .orders
            .values()
            .filter(|(seq, _)| *seq < before)
            .collect();
        all.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
        Ok(all
            .into_iter()
            .take(limit)
            .map(|(seq, o)| (StoreSeq(*seq), o.clone()))
            .collect())
    }

    async fn recent_summaries(
        &self,
        before: Option<StoreSeq>,
        limit: usize,
    ) -> Result<Vec<(StoreSeq, OrderSummary)>, RepositoryError> {
        Ok(self
            .recent(before, limit)
            .await?
            .into_iter()
            .map(|(seq, o)| {
                let summary = OrderSummary {
                    items: o.items.len() as i64,
                    amount: o.payment.amount,
                    currency: o.payment.currency.to_string(),
                    date_created: o.date_created,
                    order_uid: o.order_uid.into_string(),
                };
                (seq, summary)
            })
            .collect())
    }

    async fn stored_offsets(&self, topic: &str) -> Result<BTreeMap<i32, i64>, RepositoryError> {
        Ok(self
            .check()?
            .offsets
            .iter()
            .filter(|((t, _), _)| t == topic)
            .map(|((_, p), o)| (*p, *o))
            .collect())
    }

    async fn offset_marks(
        &self,
        topic: &str,
    ) -> Result<BTreeMap<i32, RecordMark>, RepositoryError> {
        Ok(self
            .check()?
            .marks
            .iter()
            .filter(|((t, _), _)| t == topic)
            .map(|((_, p), m)| (*p, *m))
            .collect())
    }

    async fn rejected(
        &self,
        filter: &RejectedFilter,
    ) -> Result<Vec<RejectedMessage>, RepositoryError> {
        Ok(self
            .check()?
            .rejected
            .iter()
            .filter(|r| filter.reason.is_none_or(|want| r.reason == want.as_str()))
            .filter(|r| filter.after_id.is_none_or(|after| r.id > after))
            .filter(|r| filter.up_to_id.is_none_or(|last| r.id <= last))
            .take(filter.limit)
            .cloned()
            .collect())
    }

    async fn last_rejected_id(&self) -> Result<Option<i64>, RepositoryError> {
        Ok(self.check()?.rejected.iter().map(|r| r.id).max())
    }

    async fn rejected_counts(&self) -> Result<BTreeMap<String, i64>, RepositoryError> {
        let mut counts = BTreeMap::new();
        for r in &self.check()?.rejected {
            *counts.entry(r.reason.clone()).or_default() += 1;
        }
        Ok(counts)
    }

    async fn ping(&self) -> Result<(), RepositoryError> {
        self.check().map(|_| ())
    }
}

/// A tiny FIFO-bounded cache for domain tests.
#[derive(Debug)]
pub struct InMemoryCache {
    inner: Mutex<(HashMap<String, CachedOrder>, VecDeque<String>, CacheStats)>,
}

impl InMemoryCache {
    pub fn new(capacity: usize) -> Self {
        let stats = CacheStats {
            capacity,
            ..CacheStats::default()
        };
        Self {
            inner: Mutex::new((HashMap::new(), VecDeque::new(), stats)),
        }
    }
}

impl OrderCache for InMemoryCache {
    fn get(&self, order_uid: &str) -> Option<CachedOrder> {
        let mut g = self.inner.lock().ok()?;
        let hit = g.0.get(order_uid).cloned();
        if hit.is_some() {
            g.2.hits += 1;
        } else {
            g.2.misses += 1;
        }
        hit
    }

    fn contains(&self, order_uid: &str) -> bool {
        self.inner.lock().is_ok_and(|g| g.0.contains_key(order_uid))
    }

    fn insert(&self, order_uid: &str, entry: CachedOrder) {
        let Ok(mut g) = self.inner.lock() else { return };
        if g.0.insert(order_uid.to_owned(), entry).is_none() {
            g.1.push_back(order_uid.to_owned());
            if g.1.len() > g.2.capacity
                && let Some(old) = g.1.pop_front()
            {
                g.0.remove(&old);
                g.2.evictions += 1;
            }
        }
        g.2.size = g.0.len();
    }

    fn resolve(&self, order_uid: &str, json: OrderJson) {
        let Ok(mut g) = self.inner.lock() else { return };
        if let Some(entry @ CachedOrder::Message(_)) = g.0.get_mut(order_uid) {
            *entry = CachedOrder::Json(json);
        }
    }

    fn stats(&self) -> CacheStats {
        self.inner.lock().map(|g| g.2.clone()).unwrap_or_default()
    }

    fn capacity(&self) -> usize {
        self.stats().capacity
    }

    fn mark_warmed(&self, loaded: usize, took: Duration) {
        if let Ok(mut g) = self.inner.lock() {
            g.2.warmup_loaded = loaded;
            g.2.warmup_millis = took.as_millis() as u64;
            g.2.warmed_up = true;
        }
    }
}

/// The `OrderRepository` contract as executable checks. Each takes a fresh, empty repository.
pub mod conformance {
    // Test code: a failed expectation is a panic with the value in the message.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use bytes::Bytes;

    use crate::Order;
    use crate::error::RepositoryError;
    use crate::ports::{
        AcceptedOrder, OrderRepository, PartitionOffset, Position, RecordMark, RejectedFilter,
        Rejection, StoreBatch,
    };
    use crate::sample::{generated_order, reference_order};
    use crate::validation::RejectReason;

    const TOPIC: &str = "conformance";

    fn accepted(order: Order, partition: i32, offset: i64) -> AcceptedOrder {
        let payload = Bytes::from(serde_json::to_vec(&order).unwrap_or_default());
        AcceptedOrder {
            order,
            position: Position {
                topic: TOPIC.into(),
                partition,
                offset,
            },
            payload,
        }
    }

    /// A batch moving `partition` from `expected` (`None`: nothing stored yet) to `next_offset`.
    fn batch(
        orders: Vec<AcceptedOrder>,
        partition: i32,
        expected: Option<i64>,
        next_offset: i64,
    ) -> StoreBatch {
        StoreBatch {
            topic: TOPIC.into(),
            orders,
            rejections: vec![],
            offsets: vec![PartitionOffset {
                partition,
                next_offset,
                expected,
                mark: None,
                lease_epoch: None,
            }],
            superseded_rejections: vec![],
        }
    }

    /// Store the reference order, read it back: the same JSON.
    pub async fn fixture_round_trip(repo: &dyn OrderRepository) {
        let order = reference_order();
        let out = repo
            .store_batch(&batch(vec![accepted(order.clone(), 0, 0)], 0, None, 1))
            .await
            .unwrap();
        assert_eq!(out.stored, vec![order.order_uid.clone()]);
        assert!(out.duplicates.is_empty());
        let back = repo
            .get(&order.order_uid)
            .await
            .unwrap()
            .expect("stored order is found");
        assert_eq!(back, order);
        let original: serde_json::Value =
            serde_json::from_str(crate::REFERENCE_ORDER_JSON).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), original);
        assert_eq!(repo.get("no-such-order").await.unwrap(), None);
    }

    /// Generated orders with many items keep every field and the item order.
    pub async fn many_items_round_trip(repo: &dyn OrderRepository) {
        let orders: Vec<_> = (0..20)
            .map(|n| generated_order("many-", n, 1 + (n as usize % 12)))
            .collect();
        let acc = orders
            .iter()
            .enumerate()
            .map(|(i, o)| accepted(o.clone(), 1, i as i64))
            .collect();
        repo.store_batch(&batch(acc, 1, None, 20)).await.unwrap();
        for o in &orders {
            assert_eq!(repo.get(&o.order_uid).await.unwrap().as_ref(), Some(o));
        }
    }

    /// Orders with fields the model does not know, at every depth, mixed in one batch with
    /// orders without: each read back (one by one and by `recent`) exactly as stored, its
    /// unknown fields' text unchanged.
    pub async fn unknown_fields_round_trip(repo: &dyn OrderRepository) {
        use crate::sample::order_with_unknown_fields;
        let orders: Vec<Order> = (0..12)
            .map(|n| {
                if n % 3 == 0 {
                    generated_order("plain-", n, 2)
                } else {
                    order_with_unknown_fields("unknown-", n, 1 + (n as usize % 4))
                }
            })
            .collect();
        let acc = orders
            .iter()
            .enumerate()
            .map(|(i, o)| accepted(o.clone(), 2, i as i64))
            .collect();
        repo.store_batch(&batch(acc, 2, None, 12)).await.unwrap();
        for o in &orders {
            let back = repo.get(&o.order_uid).await.unwrap().expect("stored");
            assert_eq!(&back, o);
            assert_eq!(back.to_json_bytes().unwrap(), o.to_json_bytes().unwrap());
        }
        let recent = repo.recent(None, 100).await.unwrap();
        assert_eq!(recent.len(), orders.len());
        for (_, o) in recent {
            assert!(orders.contains(&o), "{}", o.order_uid);
        }
    }

    /// `recent_json` (warm-up's read) gives each order's JSON exactly as serializing the
    /// order `get` returns would (unknown fields, characters to escape, dates), newest first,
    /// over several pages, bounded by `limit` and continuing from `before`.
    pub async fn recent_json_is_the_served_json(repo: &dyn OrderRepository) {
        use futures::TryStreamExt;

        use crate::ports::StoredJson;
        use crate::sample::order_with_unknown_fields;
        const ORDERS: usize = 2_345;
        let odd = "quote \" backslash \\ tab \t newline \n control \u{1}\u{1f} del \u{7f} é 😀";
        let orders: Vec<Order> = (0..ORDERS as u64)
            .map(|n| {
                let mut o = match n % 5 {
                    0 => order_with_unknown_fields("json-", n, 1 + (n as usize % 4)),
                    _ => generated_order("json-", n, 1 + (n as usize % 11)),
                };
                if n % 7 == 0 {
                    o.delivery.name = odd.into();
                    o.items[0].name = compact_str::format_compact!("{odd} {n}");
                    o.internal_signature = crate::Text::default();
                }
                o
            })
            .collect();
        for (b, chunk) in orders.chunks(500).enumerate() {
            let first = (b * 500) as i64;
            let acc = chunk
                .iter()
                .enumerate()
                .map(|(i, o)| accepted(o.clone(), 3, first + i as i64))
                .collect();
            let expected = (b > 0).then_some(first);
            repo.store_batch(&batch(acc, 3, expected, first + chunk.len() as i64))
                .await
                .unwrap();
        }
        let read = |before, limit| async move {
            let pages: Vec<Vec<StoredJson>> =
                repo.recent_json(before, limit).try_collect().await.unwrap();
            pages.into_iter().flatten().collect::<Vec<_>>()
        };
        let all = read(None, usize::MAX).await;
        let uids: Vec<&str> = all.iter().map(|s| s.order_uid.as_str()).collect();
        // In storage order, as `recent` gives it (a batch may store its orders in any order).
        let recent = repo.recent(None, ORDERS + 1).await.unwrap();
        let newest_first: Vec<&str> = recent.iter().map(|(_, o)| o.order_uid.as_str()).collect();
        assert_eq!(uids, newest_first);
        assert_eq!(all.len(), ORDERS);
        assert!(all.windows(2).all(|w| w[0].seq > w[1].seq));
        for s in &all {
            let order = repo.get(&s.order_uid).await.unwrap().expect("stored");
            let served = crate::order_json::OrderJson::from_order(&order).unwrap();
            assert_eq!(
                String::from_utf8_lossy(s.json.json()),
                String::from_utf8_lossy(served.json()),
            );
            assert_eq!(s.json, served, "{}: the tag too", s.order_uid);
        }
        // Bounded, and continued from the last one read.
        let first = read(None, 1_500).await;
        assert_eq!(first, all[..1_500]);
        let next = read(Some(first[1_499].seq), 700).await;
        assert_eq!(next, all[1_500..2_200]);
        let rest = read(Some(next[699].seq), 1_000).await;
        assert_eq!(rest, all[2_200..]);
        // Stopping early is fine: the first page only.
        let mut pages = repo.recent_json(None, usize::MAX);
        assert!(!pages.try_next().await.unwrap().unwrap().is_empty());
        drop(pages);
        assert!(read(Some(all[ORDERS - 1].seq), 10).await.is_empty());
    }

    /// Re-storing an order (even with other content) changes nothing stored and is reported
    /// as a duplicate rejection.
    pub async fn restore_is_idempotent(repo: &dyn OrderRepository) {
        let order = reference_order();
        repo.store_batch(&batch(vec![accepted(order.clone(), 0, 0)], 0, None, 1))
            .await
            .unwrap();
        let mut changed = order.clone();
        changed.items[0].name = "Changed".into();
        changed.delivery.city = "Elsewhere".into();
        let out = repo
            .store_batch(&batch(
                vec![accepted(order.clone(), 0, 1), accepted(changed, 0, 2)],
                0,
                Some(1),
                3,
            ))
            .await
            .unwrap();
        assert!(out.stored.is_empty(), "nothing new is stored: {out:?}");
        assert_eq!(out.duplicates.len(), 2);
        assert_eq!(repo.get(&order.order_uid).await.unwrap(), Some(order));
        assert_eq!(repo.recent(None, 10).await.unwrap().len(), 1);
        let dups = repo
            .rejected(&RejectedFilter {
                reason: Some(RejectReason::Duplicate),
                after_id: None,
                up_to_id: None,
                limit: 10,
            })
            .await
            .unwrap();
        let offsets: Vec<i64> = dups.iter().map(|r| r.position.offset).collect();
        assert_eq!(offsets, vec![1, 2]);
        assert_eq!(repo.stored_offsets(TOPIC).await.unwrap().get(&0), Some(&3));
    }

    /// A batch mixing new uids, a stored one and a uid sent twice stores each new uid once,
    /// from its first message, and records the others as duplicates at their positions.
    pub async fn a_mixed_batch_stores_the_new_and_records_the_rest(repo: &dyn OrderRepository) {
        let stored = generated_order("mixed-stored", 1, 1);
        repo.store_batch(&batch(vec![accepted(stored.clone(), 0, 0)], 0, None, 1))
            .await
            .unwrap();
        let first = generated_order("mixed-twice", 2, 2);
        let mut second = first.clone();
        second.delivery.city = "Second".into();
        let new = generated_order("mixed-new", 3, 1);
        let out = repo
            .store_batch(&batch(
                vec![
                    accepted(first.clone(), 0, 1),
                    accepted(stored.clone(), 0, 2),
                    accepted(new.clone(), 0, 3),
                    accepted(second, 0, 4),
                ],
                0,
                Some(1),
                5,
            ))
            .await
            .unwrap();
        let mut stored_uids = out.stored.clone();
        stored_uids.sort();
        let mut want = vec![first.order_uid.clone(), new.order_uid.clone()];
        want.sort();
        assert_eq!(stored_uids, want, "{out:?}");
        let mut dup_offsets: Vec<i64> = out.duplicates.iter().map(|(_, p)| p.offset).collect();
        dup_offsets.sort();
        assert_eq!(dup_offsets, vec![2, 4], "{out:?}");
        // The first message of the twice-sent uid is the one kept.
        assert_eq!(repo.get(&first.order_uid).await.unwrap(), Some(first));
        assert_eq!(repo.get(&new.order_uid).await.unwrap(), Some(new));
        assert_eq!(repo.recent(None, 10).await.unwrap().len(), 3);
    }

    /// A batch of distinct uids, megabytes long, one of which (the first in uid order) is
    /// already stored: the new ones are stored and the stored one recorded as a duplicate.
    /// An adapter that writes optimistically (PostgreSQL's COPY) meets the conflict while it is
    /// still sending; the batch after it is stored too.
    pub async fn a_long_batch_meeting_a_stored_uid_stores_the_rest(repo: &dyn OrderRepository) {
        let stored = generated_order("long-", 1000, 2);
        repo.store_batch(&batch(vec![accepted(stored.clone(), 0, 0)], 0, None, 1))
            .await
            .unwrap();
        let mut orders = vec![accepted(stored.clone(), 0, 1)];
        orders.extend(
            (1001..1800).map(|n| accepted(generated_order("long-", n, 2), 0, n as i64 - 998)),
        );
        let out = repo
            .store_batch(&batch(orders, 0, Some(1), 802))
            .await
            .unwrap();
        assert_eq!(out.stored.len(), 799, "{:?}", out.duplicates);
        assert!(!out.stored.contains(&stored.order_uid));
        assert_eq!(out.duplicates.len(), 1);
        assert_eq!(out.duplicates[0].0, stored.order_uid);
        assert_eq!(out.duplicates[0].1.offset, 1);
        let last = generated_order("long-", 1799, 2);
        assert_eq!(repo.get(&last.order_uid).await.unwrap(), Some(last));
        let all = RejectedFilter {
            limit: 100,
            ..RejectedFilter::default()
        };
        let rejected = repo.rejected(&all).await.unwrap();
        assert_eq!(rejected.len(), 1, "{rejected:?}");
        assert_eq!(rejected[0].reason, RejectReason::Duplicate.as_str());

        let next = generated_order("long-", 1800, 2);
        let out = repo
            .store_batch(&batch(
                vec![accepted(next.clone(), 0, 802)],
                0,
                Some(802),
                803,
            ))
            .await
            .unwrap();
        assert_eq!(out.stored, vec![next.order_uid.clone()]);
        assert_eq!(repo.get(&next.order_uid).await.unwrap(), Some(next));
        assert_eq!(repo.recent(None, 2000).await.unwrap().len(), 801);
    }

    /// A batch that fails part-way (an order breaking a storage constraint after others were
    /// written) commits nothing: no orders, no rejections, no offsets.
    pub async fn failed_batch_commits_nothing(repo: &dyn OrderRepository) {
        repo.store_batch(&batch(
            vec![accepted(generated_order("ok-", 0, 1), 0, 0)],
            0,
            None,
            1,
        ))
        .await
        .unwrap();
        let good = generated_order("atomic-", 1, 3);
        let mut bad = generated_order("atomic-", 2, 3);
        bad.payment.amount = -1;
        let mut b = batch(
            vec![accepted(good.clone(), 0, 1), accepted(bad.clone(), 0, 2)],
            0,
            Some(1),
            4,
        );
        b.rejections.push(Rejection {
            position: Position {
                topic: TOPIC.into(),
                partition: 0,
                offset: 3,
            },
            reason: RejectReason::NotJson,
            detail: "x".into(),
            payload: Some(Bytes::from_static(b"{")),
            truncated: None,
        });
        let err = repo
            .store_batch(&b)
            .await
            .expect_err("a constraint violation fails the batch");
        assert!(matches!(err, RepositoryError::Constraint(_)), "got {err:?}");
        assert_eq!(repo.get(&good.order_uid).await.unwrap(), None);
        assert_eq!(repo.get(&bad.order_uid).await.unwrap(), None);
        assert_eq!(repo.stored_offsets(TOPIC).await.unwrap().get(&0), Some(&1));
        assert!(
            repo.rejected(&RejectedFilter {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .is_empty()
        );
        assert_eq!(repo.recent(None, 10).await.unwrap().len(), 1);
    }

    /// Rejections and offsets are stored with the orders.
    pub async fn rejections_and_offsets_stored(repo: &dyn OrderRepository) {
        let mut b = batch(
            vec![accepted(generated_order("rj-", 1, 2), 2, 10)],
            2,
            None,
            13,
        );
        b.offsets.push(PartitionOffset {
            partition: 5,
            next_offset: 7,
            expected: None,
            mark: Some(RecordMark {
                offset: 6,
                digest: -42,
            }),
            lease_epoch: None,
        });
        b.rejections = vec![
            Rejection {
                position: Position {
                    topic: TOPIC.into(),
                    partition: 2,
                    offset: 11,
                },
                reason: RejectReason::Tombstone,
                detail: "message has no value (tombstone)".into(),
                payload: None,
                truncated: None,
            },
            Rejection {
                position: Position {
                    topic: TOPIC.into(),
                    partition: 2,
                    offset: 12,
                },
                reason: RejectReason::NotUtf8,
                detail: "bad bytes".into(),
                payload: Some(Bytes::from_static(&[0xff, 0xfe, 0x00])),
                truncated: None,
            },
        ];
        repo.store_batch(&b).await.unwrap();
        // The same batch again (a retry whose first commit did happen): fenced, nothing kept.
        let err = repo.store_batch(&b).await.expect_err("fenced");
        assert!(matches!(err, RepositoryError::Fenced { .. }), "got {err:?}");
        let offsets = repo.stored_offsets(TOPIC).await.unwrap();
        assert_eq!(
            offsets.into_iter().collect::<Vec<_>>(),
            vec![(2, 13), (5, 7)]
        );
        let marks = repo.offset_marks(TOPIC).await.unwrap();
        assert_eq!(
            marks.into_iter().collect::<Vec<_>>(),
            vec![(
                5,
                RecordMark {
                    offset: 6,
                    digest: -42
                }
            )]
        );
        assert!(
            repo.stored_offsets("another-topic")
                .await
                .unwrap()
                .is_empty()
        );
        let mut all = repo
            .rejected(&RejectedFilter {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        all.sort_by_key(|r| r.position.clone());
        let summary: Vec<_> = all
            .iter()
            .map(|r| {
                (
                    r.position.partition,
                    r.position.offset,
                    r.reason.as_str(),
                    r.payload.clone(),
                )
            })
            .collect();
        // The fenced second store recorded nothing (no spurious duplicate).
        assert_eq!(
            summary,
            vec![
                (2, 11, "tombstone", None),
                (
                    2,
                    12,
                    "not_utf8",
                    Some(Bytes::from_static(&[0xff, 0xfe, 0x00]))
                ),
            ]
        );
        let counts = repo.rejected_counts().await.unwrap();
        assert_eq!(counts.get("tombstone"), Some(&1));
        assert_eq!(counts.get("not_utf8"), Some(&1));
        assert_eq!(counts.get("duplicate"), None);
        let only = repo
            .rejected(&RejectedFilter {
                reason: Some(RejectReason::Tombstone),
                after_id: None,
                up_to_id: None,
                limit: 10,
            })
            .await
            .unwrap();
        assert_eq!(only.len(), 1);
    }

    /// `recent` is newest first and bounded; summaries agree.
    pub async fn most_recent_first(repo: &dyn OrderRepository) {
        for n in 0..5u64 {
            let o = generated_order("recent-", n, 1 + n as usize);
            let expected = (n > 0).then_some(n as i64);
            repo.store_batch(&batch(
                vec![accepted(o, 0, n as i64)],
                0,
                expected,
                n as i64 + 1,
            ))
            .await
            .unwrap();
        }
        let page = repo.recent(None, 3).await.unwrap();
        let uids: Vec<_> = page.iter().map(|(_, o)| o.order_uid.as_str()).collect();
        assert_eq!(uids, vec!["recent-4", "recent-3", "recent-2"]);
        assert!(page.windows(2).all(|w| w[0].0 > w[1].0), "newest first");
        // The next page starts below the last one's position and ends at the oldest.
        let next = repo.recent(Some(page[2].0), 3).await.unwrap();
        let uids: Vec<_> = next.iter().map(|(_, o)| o.order_uid.as_str()).collect();
        assert_eq!(uids, vec!["recent-1", "recent-0"]);
        assert_eq!(
            next[0].1,
            generated_order("recent-", 1, 2),
            "whole order, items included"
        );
        let sums = repo.recent_summaries(None, 2).await.unwrap();
        assert_eq!(sums.len(), 2);
        assert_eq!(sums[0].1.order_uid, "recent-4");
        assert_eq!(sums[0].1.items, 5);
        assert_eq!(
            sums[0].1.amount,
            generated_order("recent-", 4, 5).payment.amount
        );
        // Summaries page like orders: same positions, the next page below the last one.
        assert_eq!(sums[0].0, page[0].0);
        let rest = repo.recent_summaries(Some(sums[1].0), 10).await.unwrap();
        let uids: Vec<_> = rest.iter().map(|(_, s)| s.order_uid.as_str()).collect();
        assert_eq!(uids, vec!["recent-2", "recent-1", "recent-0"]);
        assert_eq!(repo.recent(None, 100).await.unwrap().len(), 5);
        repo.ping().await.unwrap();
    }

    /// What a replay relies on: `last_rejected_id` bounds a listing (`up_to_id`), and the
    /// rejections a batch supersedes go in the same transaction as its orders (or not at all).
    pub async fn superseded_rejections_go_with_the_orders(repo: &dyn OrderRepository) {
        assert_eq!(repo.last_rejected_id().await.unwrap(), None);
        let ok = generated_order("sup-", 1, 2);
        let mut bad = generated_order("sup-", 2, 1);
        bad.items[0].sale = 101; // a storage constraint
        let payload = |o: &Order| Some(Bytes::from(serde_json::to_vec(o).unwrap_or_default()));
        let mut b = batch(vec![], 0, None, 3);
        b.rejections = [(0, payload(&ok)), (1, payload(&bad)), (2, None)]
            .into_iter()
            .map(|(offset, payload)| Rejection {
                position: Position {
                    topic: TOPIC.into(),
                    partition: 0,
                    offset,
                },
                reason: RejectReason::Invalid,
                detail: "an old rule".into(),
                payload,
                truncated: None,
            })
            .collect();
        repo.store_batch(&b).await.unwrap();
        let list = |up_to_id| async move {
            repo.rejected(&RejectedFilter {
                up_to_id,
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap()
        };
        let rows = list(None).await;
        assert_eq!(rows.len(), 3);
        let last = repo.last_rejected_id().await.unwrap();
        assert_eq!(last, rows.iter().map(|r| r.id).max());
        assert_eq!(list(Some(rows[1].id)).await.len(), 2, "bounded by up_to_id");

        // Refused by storage: the superseded row stays.
        let mut refused = batch(vec![accepted(bad, 0, 1)], 0, None, 3);
        refused.superseded_rejections = vec![rows[1].id];
        refused.offsets.clear();
        assert!(matches!(
            repo.store_batch(&refused).await,
            Err(RepositoryError::Constraint(_))
        ));
        assert_eq!(list(None).await.len(), 3);
        // Stored: the row goes in the same step.
        let mut replayed = batch(vec![accepted(ok.clone(), 0, 0)], 0, None, 3);
        replayed.superseded_rejections = vec![rows[0].id];
        replayed.offsets.clear();
        repo.store_batch(&replayed).await.unwrap();
        let left: Vec<i64> = list(None).await.iter().map(|r| r.position.offset).collect();
        assert_eq!(left, vec![1, 2]);
        assert_eq!(repo.get(&ok.order_uid).await.unwrap(), Some(ok));
    }

    /// A truncated payload keeps its excerpt, size and digest; text with NUL is refused as a
    /// constraint (PostgreSQL `text` cannot hold it), never as a transient failure.
    pub async fn truncated_payloads_and_nul(repo: &dyn OrderRepository) {
        let big = Bytes::from(vec![b'x'; 10_000]);
        let mut b = batch(vec![], 0, None, 1);
        b.rejections = vec![
            Rejection::new(
                Position {
                    topic: TOPIC.into(),
                    partition: 0,
                    offset: 0,
                },
                RejectReason::Oversize,
                "too big",
                Some(big.clone()),
            )
            .cap_payload(1_000),
        ];
        repo.store_batch(&b).await.unwrap();
        let rows = repo
            .rejected(&RejectedFilter {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].payload.as_deref(), Some(&big[..1_000]));
        let digest = rows[0].truncated.clone().expect("a digest");
        assert_eq!(digest.size, 10_000);
        // sha256sum of 10,000 'x' bytes.
        assert_eq!(
            digest.sha256,
            "e4ee97ec252749d2096447e849628d0d7734f51700416eefbb33574bf0b3ee75"
        );

        let mut bad = generated_order("nul-", 1, 1);
        bad.delivery.city = "a\u{0}b".into();
        let err = repo
            .store_batch(&batch(vec![accepted(bad, 0, 1)], 0, Some(1), 2))
            .await
            .expect_err("NUL in text is refused");
        assert!(matches!(err, RepositoryError::Constraint(_)), "got {err:?}");
    }

    /// Two writers that read the same stored offset: one commits, the other's whole batch
    /// (orders, rejections, offsets) rolls back as fenced, and the offset never moves back.
    pub async fn concurrent_writers_are_fenced(repo: &dyn OrderRepository) {
        let first = |prefix: &str, expected, next| {
            let mut b = batch(
                vec![accepted(generated_order(prefix, 1, 1), 3, 0)],
                3,
                expected,
                next,
            );
            b.rejections.push(Rejection::new(
                Position {
                    topic: TOPIC.into(),
                    partition: 3,
                    offset: 1,
                },
                RejectReason::Empty,
                "empty",
                Some(Bytes::new()),
            ));
            b
        };
        let (a, b) = (first("fence-a-", None, 2), first("fence-b-", None, 2));
        let (ra, rb) = futures::join!(repo.store_batch(&a), repo.store_batch(&b));
        let (won, lost) = match (&ra, &rb) {
            (Ok(_), Err(e)) => ("fence-a-1", e),
            (Err(e), Ok(_)) => ("fence-b-1", e),
            other => panic!("exactly one must commit: {other:?}"),
        };
        assert!(matches!(lost, RepositoryError::Fenced { .. }), "{lost:?}");
        assert!(
            !lost.is_transient(),
            "a fenced batch is dropped, not retried"
        );
        let loser = if won == "fence-a-1" {
            "fence-b-1"
        } else {
            "fence-a-1"
        };
        assert!(repo.get(won).await.unwrap().is_some());
        assert_eq!(repo.get(loser).await.unwrap(), None, "nothing of the loser");
        let rejected = repo
            .rejected(&RejectedFilter {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(rejected.len(), 1, "one rejection, the winner's");
        assert_eq!(repo.stored_offsets(TOPIC).await.unwrap().get(&3), Some(&2));

        // A stale writer (it read 0, the offset is at 2 now) is fenced too, even moving forward,
        // and keeps nothing of its batch (an adapter may check the offset after writing it).
        let stale = batch(
            vec![accepted(generated_order("fence-stale-", 1, 2), 3, 2)],
            3,
            Some(0),
            5,
        );
        assert!(matches!(
            repo.store_batch(&stale).await,
            Err(RepositoryError::Fenced { .. })
        ));
        assert_eq!(repo.get("fence-stale-1").await.unwrap(), None);
        // The current owner goes on.
        repo.store_batch(&batch(vec![], 3, Some(2), 3))
            .await
            .unwrap();
        assert_eq!(repo.stored_offsets(TOPIC).await.unwrap().get(&3), Some(&3));
    }

    /// After a topic is re-created its positions repeat: a rejection at a position already
    /// recorded is recorded again, never dropped; a batch without a mark keeps the stored one.
    pub async fn repeated_positions_keep_every_rejection(repo: &dyn OrderRepository) {
        let rejection = |detail: &str| {
            Rejection::new(
                Position {
                    topic: TOPIC.into(),
                    partition: 4,
                    offset: 0,
                },
                RejectReason::NotJson,
                detail,
                Some(Bytes::from_static(b"{")),
            )
        };
        let mut first = batch(vec![], 4, None, 1);
        first.rejections.push(rejection("old log"));
        first.offsets[0].mark = Some(RecordMark {
            offset: 0,
            digest: 7,
        });
        repo.store_batch(&first).await.unwrap();
        // The log was re-created: offset 0 again, another message.
        let mut again = batch(vec![], 4, Some(1), 1);
        again.rejections.push(rejection("new log"));
        repo.store_batch(&again).await.unwrap();
        let details: Vec<String> = repo
            .rejected(&RejectedFilter {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.detail)
            .collect();
        assert_eq!(details, vec!["old log", "new log"]);
        assert_eq!(
            repo.offset_marks(TOPIC).await.unwrap().get(&4),
            Some(&RecordMark {
                offset: 0,
                digest: 7
            })
        );
    }

    /// Generates one `#[tokio::test]` per conformance check; `$make` is an async expression
    /// that yields a fresh, empty repository.
    #[macro_export]
    macro_rules! repository_conformance_tests {
        ($make:expr) => {
            $crate::repository_conformance_tests!(@each $make;
                fixture_round_trip, many_items_round_trip, restore_is_idempotent,
                failed_batch_commits_nothing, rejections_and_offsets_stored, most_recent_first,
                superseded_rejections_go_with_the_orders, truncated_payloads_and_nul,
                concurrent_writers_are_fenced, repeated_positions_keep_every_rejection,
                unknown_fields_round_trip, a_mixed_batch_stores_the_new_and_records_the_rest,
                a_long_batch_meeting_a_stored_uid_stores_the_rest,
                recent_json_is_the_served_json);
        };
        (@each $make:expr; $($name:ident),*) => {
            $(
                #[tokio::test]
                async fn $name() {
                    let repo = $make.await;
                    $crate::testing::conformance::$name(&repo).await;
                }
            )*
        };
    }
}
