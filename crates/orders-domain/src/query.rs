//! The query use case: cache first, then the repository (filling the cache), and warm-up.
//!
//! Cache misses are the expensive path (a repository round trip), and a client can cause as
//! many as it likes by asking for uids that do not exist. So the miss path is bounded and
//! shared: at most `max_concurrent_misses` repository reads run at once (one more is refused
//! with [`QueryError::Overloaded`], never queued), and concurrent misses for the same uid share
//! one read ("single flight"), without ever answering "not found" for an order that was
//! committed before the request arrived (see [`QueryService::order_json`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared, WeakShared};
use serde::Serialize;

use crate::error::{QueryError, RepositoryError};
use crate::model::OrderSummary;
use crate::order_json::{CachedOrder, OrderJson};
use crate::ports::{OrderCache, OrderRepository, StoreSeq};
use crate::validation::is_valid_order_uid;

/// Repository reads for cache misses that may run at once unless configured otherwise.
pub const DEFAULT_MAX_CONCURRENT_MISSES: usize = 64;

/// Most summaries one call returns.
pub const MAX_RECENT: usize = 500;

/// Repository reads at once when caching orders another replica committed.
const COMMITTED_READS: usize = 4;

pub use crate::ports::WARM_PAGE;

/// Reads orders for the API.
#[derive(Debug, Clone)]
pub struct QueryService {
    repo: Arc<dyn OrderRepository>,
    cache: Arc<dyn OrderCache>,
    misses: Arc<Misses>,
}

/// Counters of the miss path, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MissStats {
    /// Repository reads running now, or queued behind a running read of the same uid (each
    /// holds one of the `limit` slots).
    pub in_flight: usize,
    /// Most repository reads that may run at once.
    pub limit: usize,
    /// Repository reads started since start-up.
    pub queries: u64,
    /// Misses that joined a read another miss of the same uid had queued.
    pub shared: u64,
    /// Misses refused with [`QueryError::Overloaded`].
    pub rejected: u64,
}

/// What a flight yields: the order's JSON, `None` when not stored, or the read's error.
type FlightOutput = Result<Option<OrderJson>, Arc<RepositoryError>>;
type Flight = Shared<BoxFuture<'static, FlightOutput>>;

/// The newest flight for a uid.
struct FlightSlot {
    /// Tells a finished flight whether the slot is still its own.
    id: u64,
    /// Set just before the flight's repository read begins; a request may join only while it
    /// is unset, so every requester's snapshot is taken after it arrived.
    started: Arc<AtomicBool>,
    /// Weak, so the map never keeps alive a flight that every requester has abandoned.
    flight: WeakShared<BoxFuture<'static, FlightOutput>>,
}

/// The state of the miss path, shared by the clones of a [`QueryService`].
struct Misses {
    limit: usize,
    in_flight: AtomicUsize,
    next_id: AtomicU64,
    /// The newest flight by uid, while one is in progress.
    flights: Mutex<HashMap<Box<str>, FlightSlot>>,
    queries: AtomicU64,
    shared: AtomicU64,
    rejected: AtomicU64,
}

impl std::fmt::Debug for Misses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Misses")
            .field("limit", &self.limit)
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Misses {
    fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            in_flight: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            flights: Mutex::new(HashMap::new()),
            queries: AtomicU64::new(0),
            shared: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    /// One of the `limit` read slots, or `None` when all are taken (no waiting: a full miss
    /// path refuses rather than queues).
    fn try_acquire(self: &Arc<Self>) -> Option<MissPermit> {
        let mut current = self.in_flight.load(Ordering::Relaxed);
        loop {
            if current >= self.limit {
                return None;
            }
            match self.in_flight.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(MissPermit(self.clone())),
                Err(now) => current = now,
            }
        }
    }
}

/// A read slot, given back when the flight holding it ends or is abandoned.
struct MissPermit(Arc<Misses>);

impl Drop for MissPermit {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Removes a flight's map entry when the flight ends or is dropped, if the entry is still its.
struct FlightEntry {
    misses: Arc<Misses>,
    uid: Box<str>,
    id: u64,
}

impl Drop for FlightEntry {
    fn drop(&mut self) {
        if let Ok(mut flights) = self.misses.flights.lock()
            && flights
                .get(&self.uid)
                .is_some_and(|slot| slot.id == self.id)
        {
            flights.remove(&self.uid);
        }
    }
}

/// A copy of a shared flight's error for one of its requesters (`RepositoryError` is not
/// `Clone`; its kind, which decides the HTTP status, is kept, and the original is the source).
fn copy_error(e: &Arc<RepositoryError>) -> RepositoryError {
    match &**e {
        RepositoryError::Unavailable { context, .. } => RepositoryError::Unavailable {
            context: context.clone(),
            source: Some(Box::new(e.clone())),
        },
        RepositoryError::Constraint(message) => RepositoryError::Constraint(message.clone()),
        RepositoryError::Fenced {
            topic,
            partition,
            expected,
        } => RepositoryError::Fenced {
            topic: topic.clone(),
            partition: *partition,
            expected: *expected,
        },
        RepositoryError::LeaseLost {
            topic,
            partition,
            epoch,
        } => RepositoryError::LeaseLost {
            topic: topic.clone(),
            partition: *partition,
            epoch: *epoch,
        },
        RepositoryError::Other { context, .. } => RepositoryError::Other {
            context: context.clone(),
            source: Some(Box::new(e.clone())),
        },
    }
}

impl QueryService {
    pub fn new(repo: Arc<dyn OrderRepository>, cache: Arc<dyn OrderCache>) -> Self {
        Self {
            repo,
            cache,
            misses: Arc::new(Misses::new(DEFAULT_MAX_CONCURRENT_MISSES)),
        }
    }

    /// At most `limit` repository reads for cache misses at once (at least 1); a miss beyond
    /// that gets [`QueryError::Overloaded`].
    #[must_use]
    pub fn with_max_concurrent_misses(mut self, limit: usize) -> Self {
        self.misses = Arc::new(Misses::new(limit));
        self
    }

    /// The miss path's counters.
    pub fn miss_stats(&self) -> MissStats {
        let m = &self.misses;
        MissStats {
            in_flight: m.in_flight.load(Ordering::Relaxed),
            limit: m.limit,
            queries: m.queries.load(Ordering::Relaxed),
            shared: m.shared.load(Ordering::Relaxed),
            rejected: m.rejected.load(Ordering::Relaxed),
        }
    }

    /// The order's JSON: from the cache, else from the repository (then cached).
    ///
    /// Misses for the same uid share one repository read, but only one that has not started
    /// yet: a read already running may have taken its snapshot before this request arrived,
    /// just before the order was committed, and its "not found" would then be a wrong 404.
    /// So a miss that finds a read running queues the NEXT read of that uid (or joins the one
    /// already queued), which starts when the running one ends. If the running one found the
    /// order, the next one answers with it without a query (orders never change); otherwise it
    /// asks the repository, after every one of its requesters arrived. A flood of one unknown
    /// uid so costs one read per read's duration, not one per request.
    pub async fn order_json(&self, order_uid: &str) -> Result<OrderJson, QueryError> {
        if !is_valid_order_uid(order_uid) {
            return Err(QueryError::InvalidUid);
        }
        match self.cache.get(order_uid) {
            Some(CachedOrder::Json(json)) => return Ok(json),
            // Its first read since it was ingested: made into its JSON once, for every read
            // after this one.
            Some(CachedOrder::Message(message)) => match message.to_json() {
                Ok(json) => {
                    self.cache.resolve(order_uid, json.clone());
                    return Ok(json);
                }
                Err(e) => tracing::error!(order_uid, error = %e,
                    "a cached message does not make its JSON; reading the order from the repository"),
            },
            None => {}
        }
        match self.flight(order_uid)?.await {
            Ok(Some(json)) => Ok(json),
            Ok(None) => Err(QueryError::NotFound),
            Err(e) => Err(QueryError::Repository(copy_error(&e))),
        }
    }

    /// The queued flight for `order_uid` to join, or a new one if a read slot is free: started
    /// at once when none is in progress, else queued behind the newest.
    fn flight(&self, order_uid: &str) -> Result<Flight, QueryError> {
        let misses = &self.misses;
        let mut flights = misses.flights.lock().map_err(|_| RepositoryError::Other {
            context: "the miss map's lock is poisoned".into(),
            source: None,
        })?;
        let mut before = None;
        if let Some(slot) = flights.get(order_uid)
            && let Some(flight) = slot.flight.upgrade()
        {
            // SeqCst with the store below: reading "not started" means the read begins after
            // this point, so after this request arrived.
            if !slot.started.load(Ordering::SeqCst) {
                misses.shared.fetch_add(1, Ordering::Relaxed);
                return Ok(flight);
            }
            before = Some(flight);
        }
        let Some(permit) = misses.try_acquire() else {
            // Unlock first: if `before` is the last handle of its flight, dropping it drops
            // the flight, whose entry guard takes this lock.
            drop(flights);
            drop(before);
            misses.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(QueryError::Overloaded {
                limit: misses.limit,
            });
        };
        let id = misses.next_id.fetch_add(1, Ordering::Relaxed);
        let started = Arc::new(AtomicBool::new(false));
        // The guards live in the future: dropped when it ends, or when every requester has
        // gone away (then the read is cancelled and its slot given back).
        let entry = FlightEntry {
            misses: misses.clone(),
            uid: order_uid.into(),
            id,
        };
        let repo = self.repo.clone();
        let cache = self.cache.clone();
        let counters = misses.clone();
        let start = started.clone();
        let flight = async move {
            let _permit = permit;
            if let Some(before) = before
                && let Ok(Some(json)) = before.await
            {
                // Found is found, whenever the snapshot was taken: orders never change.
                return Ok(Some(json));
            }
            start.store(true, Ordering::SeqCst);
            counters.queries.fetch_add(1, Ordering::Relaxed);
            let result = match repo.get(&entry.uid).await {
                Ok(Some(order)) => match OrderJson::from_order(&order) {
                    Ok(json) => {
                        cache.insert(&entry.uid, json.clone().into());
                        Ok(Some(json))
                    }
                    Err(e) => Err(RepositoryError::other("serializing a stored order", e)),
                },
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            };
            drop(entry);
            result.map_err(Arc::new)
        }
        .boxed()
        .shared();
        if let Some(weak) = flight.downgrade() {
            flights.insert(
                order_uid.into(),
                FlightSlot {
                    id,
                    started,
                    flight: weak,
                },
            );
        }
        Ok(flight)
    }

    /// Up to `limit` orders stored before `before` (from the newest when `None`), newest
    /// first, each with its [`StoreSeq`] (the last one's is the next page's `before`); `limit`
    /// is clamped to [`MAX_RECENT`].
    pub async fn recent(
        &self,
        before: Option<StoreSeq>,
        limit: usize,
    ) -> Result<Vec<(StoreSeq, OrderSummary)>, QueryError> {
        Ok(self
            .repo
            .recent_summaries(before, limit.clamp(1, MAX_RECENT))
            .await?)
    }

    pub fn cache(&self) -> &Arc<dyn OrderCache> {
        &self.cache
    }

    pub fn repository(&self) -> &Arc<dyn OrderRepository> {
        &self.repo
    }

    /// Caches orders committed elsewhere (by another replica), read from the repository, so
    /// that their first request is a hit here too. Uids already cached are skipped; reads run
    /// a few at a time, outside the request path's miss bound. Returns how many were cached.
    pub async fn cache_committed(&self, uids: &[String]) -> Result<usize, RepositoryError> {
        let missing: Vec<&String> = uids.iter().filter(|u| !self.cache.contains(u)).collect();
        let mut cached = 0;
        for chunk in missing.chunks(COMMITTED_READS) {
            let reads = futures::future::join_all(chunk.iter().map(|uid| {
                let repo = self.repo.clone();
                let uid = (*uid).clone();
                async move { repo.get(&uid).await }
            }))
            .await;
            for read in reads {
                if let Some(order) = read? {
                    let json = OrderJson::from_order(&order)
                        .map_err(|e| RepositoryError::other("serializing a stored order", e))?;
                    self.cache.insert(&order.order_uid, json.into());
                    cached += 1;
                }
            }
        }
        Ok(cached)
    }

    /// Loads the most recent orders (up to the cache's capacity, and up to its byte bound)
    /// into the cache, oldest first so that the newest are the last to be evicted. Returns how
    /// many were loaded.
    ///
    /// Takes the orders' JSON from the repository in pages ([`OrderRepository::recent_json`],
    /// which the adapter may read ahead or in parallel) and keeps only that (what the cache
    /// holds anyway). It stops at the first order that would take the total past the byte
    /// bound, rather than loading orders the cache would evict at once (an order larger than
    /// the whole bound is skipped: the cache would not keep it anyway, and the next older one
    /// is read in its place).
    pub async fn warm_up(&self) -> Result<usize, RepositoryError> {
        use futures::TryStreamExt;

        let started = Instant::now();
        let capacity = self.cache.capacity();
        let max_bytes = self.cache.max_bytes();
        let mut newest_first: Vec<(String, OrderJson)> = Vec::new();
        let mut bytes = 0usize;
        let mut before = None;
        'reads: while newest_first.len() < capacity {
            let want = capacity - newest_first.len();
            let mut got = 0usize;
            // Dropped at the end of this block: reading stops with it.
            let mut pages = self.repo.recent_json(before, want);
            while let Some(page) = pages.try_next().await? {
                for stored in page {
                    got += 1;
                    before = Some(stored.seq);
                    let held = stored.json.held_bytes();
                    if held > max_bytes {
                        continue;
                    }
                    if bytes.saturating_add(held) > max_bytes {
                        break 'reads;
                    }
                    bytes += held;
                    newest_first.push((stored.order_uid, stored.json));
                    if newest_first.len() == capacity {
                        break 'reads;
                    }
                }
            }
            // Fewer than asked for: nothing older is stored. As many (some were skipped as
            // too large): read on from the oldest one seen.
            if got < want {
                break;
            }
        }
        let loaded = newest_first.len();
        for (uid, json) in newest_first.into_iter().rev() {
            self.cache.insert(&uid, json.into());
        }
        self.cache.mark_warmed(loaded, started.elapsed());
        Ok(loaded)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! The miss path's bound and single flight, over the in-memory fakes with a repository
    //! whose `get` counts calls and waits at a gate the test opens.

    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use async_trait::async_trait;
    use bytes::Bytes;
    use tokio::sync::watch;

    use super::*;
    use crate::model::Order;
    use crate::ports::{
        AcceptedOrder, Position, RejectedFilter, RejectedMessage, StoreBatch, StoreOutcome,
        StoreSeq,
    };
    use crate::sample::generated_order;
    use crate::testing::{InMemoryCache, InMemoryRepository};

    #[derive(Debug)]
    struct Gated {
        inner: InMemoryRepository,
        gets: AtomicUsize,
        open: watch::Receiver<bool>,
    }

    #[async_trait]
    impl OrderRepository for Gated {
        async fn store_batch(&self, b: &StoreBatch) -> Result<StoreOutcome, RepositoryError> {
            self.inner.store_batch(b).await
        }
        async fn get(&self, uid: &str) -> Result<Option<Order>, RepositoryError> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            // The snapshot is taken now, before the wait: a slow query's view.
            let found = self.inner.get(uid).await;
            let _ = self.open.clone().wait_for(|o| *o).await;
            found
        }
        async fn recent(
            &self,
            before: Option<StoreSeq>,
            limit: usize,
        ) -> Result<Vec<(StoreSeq, Order)>, RepositoryError> {
            self.inner.recent(before, limit).await
        }
        async fn recent_summaries(
            &self,
            before: Option<StoreSeq>,
            limit: usize,
        ) -> Result<Vec<(StoreSeq, OrderSummary)>, RepositoryError> {
            self.inner.recent_summaries(before, limit).await
        }
        async fn stored_offsets(&self, t: &str) -> Result<BTreeMap<i32, i64>, RepositoryError> {
            self.inner.stored_offsets(t).await
        }
        async fn offset_marks(
            &self,
            t: &str,
        ) -> Result<BTreeMap<i32, crate::ports::RecordMark>, RepositoryError> {
            self.inner.offset_marks(t).await
        }
        async fn rejected(
            &self,
            f: &RejectedFilter,
        ) -> Result<Vec<RejectedMessage>, RepositoryError> {
            self.inner.rejected(f).await
        }
        async fn rejected_counts(&self) -> Result<BTreeMap<String, i64>, RepositoryError> {
            self.inner.rejected_counts().await
        }
        async fn last_rejected_id(&self) -> Result<Option<i64>, RepositoryError> {
            self.inner.last_rejected_id().await
        }
        async fn ping(&self) -> Result<(), RepositoryError> {
            self.inner.ping().await
        }
    }

    fn setup(limit: usize) -> (Arc<Gated>, QueryService, watch::Sender<bool>) {
        let (tx, rx) = watch::channel(false);
        let repo = Arc::new(Gated {
            inner: InMemoryRepository::new(),
            gets: AtomicUsize::new(0),
            open: rx,
        });
        let q = QueryService::new(repo.clone(), Arc::new(InMemoryCache::new(100)))
            .with_max_concurrent_misses(limit);
        (repo, q, tx)
    }

    async fn store(repo: &dyn OrderRepository, order: Order) {
        repo.store_batch(&StoreBatch {
            topic: "t".into(),
            orders: vec![AcceptedOrder {
                payload: Bytes::from(serde_json::to_vec(&order).unwrap()),
                order,
                position: Position {
                    topic: "t".into(),
                    partition: 0,
                    offset: 0,
                },
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    }

    /// Lets spawned requests run until they wait at the gate.
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn concurrent_misses_for_one_uid_share_one_read() {
        let (repo, q, open) = setup(4);
        store(repo.as_ref(), generated_order("o-", 1, 1)).await;
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let q = q.clone();
                tokio::spawn(async move { q.order_json("o-1").await })
            })
            .collect();
        settle().await;
        assert_eq!(repo.gets.load(Ordering::SeqCst), 1);
        open.send(true).unwrap();
        for t in tasks {
            assert!(t.await.unwrap().is_ok());
        }
        // "Found" is shared as is: one read for all hundred.
        assert_eq!(repo.gets.load(Ordering::SeqCst), 1);
        let s = q.miss_stats();
        // The first started a read; the second queued the next one, which the other 98 joined
        // and which answered with the first one's result.
        assert_eq!(
            (s.queries, s.shared, s.rejected, s.in_flight),
            (1, 98, 0, 0)
        );
    }

    #[tokio::test]
    async fn unknown_uid_floods_cost_two_reads_per_wave() {
        let (repo, q, open) = setup(4);
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let q = q.clone();
                tokio::spawn(async move { q.order_json("nope").await })
            })
            .collect();
        settle().await;
        open.send(true).unwrap();
        for t in tasks {
            assert!(matches!(t.await.unwrap(), Err(QueryError::NotFound)));
        }
        // The first read started before the others arrived; they shared the next one.
        assert_eq!(repo.gets.load(Ordering::SeqCst), 2);
        assert_eq!(q.miss_stats().in_flight, 0);
    }

    #[tokio::test]
    async fn an_order_committed_during_a_read_is_found_by_later_arrivals() {
        let (repo, q, open) = setup(4);
        let early = {
            let q = q.clone();
            tokio::spawn(async move { q.order_json("late-1").await })
        };
        settle().await; // its read saw nothing and waits
        store(repo.as_ref(), generated_order("late-", 1, 1)).await;
        let late = {
            let q = q.clone();
            tokio::spawn(async move { q.order_json("late-1").await })
        };
        settle().await; // queued behind the read that may have missed the commit
        assert_eq!(q.miss_stats().in_flight, 2);
        open.send(true).unwrap();
        assert!(matches!(early.await.unwrap(), Err(QueryError::NotFound)));
        assert!(late.await.unwrap().is_ok(), "committed before it arrived");
        assert_eq!(repo.gets.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn misses_beyond_the_limit_are_refused_not_queued() {
        let (repo, q, open) = setup(3);
        // u0 running, u0's next read queued, u1 running: three slots.
        let mut handles = Vec::new();
        for uid in ["u0", "u0", "u1"] {
            let q = q.clone();
            handles.push(tokio::spawn(async move { q.order_json(uid).await }));
            settle().await;
        }
        assert!(matches!(
            q.order_json("one-more").await,
            Err(QueryError::Overloaded { limit: 3 })
        ));
        // Joining the queued read of u0 needs no slot.
        let joiner = {
            let q = q.clone();
            tokio::spawn(async move { q.order_json("u0").await })
        };
        settle().await;
        let s = q.miss_stats();
        assert_eq!((s.in_flight, s.limit, s.rejected, s.shared), (3, 3, 1, 1));
        open.send(true).unwrap();
        for t in handles {
            assert!(matches!(t.await.unwrap(), Err(QueryError::NotFound)));
        }
        assert!(matches!(joiner.await.unwrap(), Err(QueryError::NotFound)));
        assert_eq!(q.miss_stats().in_flight, 0, "slots given back");
        assert_eq!(repo.gets.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn an_abandoned_read_gives_its_slot_back_and_leaves_no_flight() {
        let (_repo, q, open) = setup(1);
        let task = {
            let q = q.clone();
            tokio::spawn(async move { q.order_json("gone").await })
        };
        settle().await;
        assert_eq!(q.miss_stats().in_flight, 1);
        task.abort(); // the client went away
        let _ = task.await;
        assert_eq!(q.miss_stats().in_flight, 0);
        assert!(q.misses.flights.lock().unwrap().is_empty());
        open.send(true).unwrap();
        assert!(matches!(
            q.order_json("gone").await,
            Err(QueryError::NotFound)
        ));
    }

    /// A cache with a byte bound (the in-memory one has none).
    #[derive(Debug)]
    struct Bounded(InMemoryCache, usize);
    impl OrderCache for Bounded {
        fn get(&self, uid: &str) -> Option<CachedOrder> {
            self.0.get(uid)
        }
        fn contains(&self, uid: &str) -> bool {
            self.0.contains(uid)
        }
        fn insert(&self, uid: &str, entry: CachedOrder) {
            self.0.insert(uid, entry);
        }
        fn resolve(&self, uid: &str, json: OrderJson) {
            self.0.resolve(uid, json);
        }
        fn stats(&self) -> crate::ports::CacheStats {
            self.0.stats()
        }
        fn capacity(&self) -> usize {
            self.0.capacity()
        }
        fn max_bytes(&self) -> usize {
            self.1
        }
        fn mark_warmed(&self, loaded: usize, took: Duration) {
            self.0.mark_warmed(loaded, took);
        }
    }

    #[tokio::test]
    async fn warm_up_stops_at_the_byte_bound() {
        let repo = Arc::new(InMemoryRepository::new());
        for n in 0..10 {
            store(repo.as_ref(), generated_order("w-", n, 1)).await;
        }
        let one = OrderJson::from_order(&generated_order("w-", 9, 1))
            .unwrap()
            .held_bytes();
        // Room for three and a half of them.
        let cache = Arc::new(Bounded(InMemoryCache::new(100), one * 3 + one / 2));
        let q = QueryService::new(repo, cache.clone());
        assert_eq!(q.warm_up().await.unwrap(), 3);
        assert!(cache.get("w-9").is_some() && cache.get("w-7").is_some());
        assert!(cache.get("w-6").is_none());
    }

    #[tokio::test]
    async fn warm_up_skips_an_order_larger_than_the_bound_and_reads_an_older_one_instead() {
        let repo = Arc::new(InMemoryRepository::new());
        for n in 0..(WARM_PAGE as u64 + 10) {
            let mut o = generated_order("s-", n, 1);
            if n == WARM_PAGE as u64 + 5 {
                o.delivery.address = "x".repeat(5_000_000).into();
            }
            store(repo.as_ref(), o).await;
        }
        // Capacity for exactly the newest page; one of its orders is too large to cache.
        let cache = Arc::new(Bounded(InMemoryCache::new(WARM_PAGE), 3_000_000));
        let q = QueryService::new(repo, cache.clone());
        assert_eq!(q.warm_up().await.unwrap(), WARM_PAGE);
        assert!(cache.get(&format!("s-{}", WARM_PAGE + 5)).is_none());
        // The newest order that fits is cached, and one older than the page in its place.
        assert!(cache.get(&format!("s-{}", WARM_PAGE + 9)).is_some());
        assert!(cache.get("s-9").is_some() && cache.get("s-10").is_some());
        assert!(cache.get("s-8").is_none());
    }
}
