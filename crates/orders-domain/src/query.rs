//! The query use case: cache first, then the repository (filling the cache), and warm-up.
//!
//! Cache misses are the expensive path (a repository round trip), and a client can cause as
//! many as it likes by asking for uids that do not exist. So the miss path is bounded and
//! shared: at most `max_concurrent_misses` repository reads run at once (one more is refused
//! with [`QueryError::Overloaded`], never queued), and concurrent misses for the same uid share
//! one read ("single flight"), without ever answering "not found" for an order that was
//! committed before the request arrived (see [`QueryService::order_json`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared, WeakShared};
use serde::Serialize;

use crate::error::{QueryError, RepositoryError};
use crate::model::OrderSummary;
use crate::ports::{OrderCache, OrderRepository};
use crate::validation::is_valid_order_uid;

/// Repository reads for cache misses that may run at once unless configured otherwise.
pub const DEFAULT_MAX_CONCURRENT_MISSES: usize = 64;

/// Most summaries one call returns.
pub const MAX_RECENT: usize = 500;

/// Orders read per repository call during warm-up.
pub const WARM_PAGE: usize = 1_000;

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
    /// Repository reads running now.
    pub in_flight: usize,
    /// Most repository reads that may run at once.
    pub limit: usize,
    /// Repository reads started since start-up.
    pub queries: u64,
    /// Misses that joined a read another request had started.
    pub shared: u64,
    /// Misses refused with [`QueryError::Overloaded`].
    pub rejected: u64,
}

/// What a flight yields: the clock tick at which its repository read started, and the result.
type FlightOutput = (u64, Result<Option<Bytes>, Arc<RepositoryError>>);
type Flight = Shared<BoxFuture<'static, FlightOutput>>;

/// The state of the miss path, shared by the clones of a [`QueryService`].
struct Misses {
    limit: usize,
    in_flight: AtomicUsize,
    /// A logical clock: a miss takes a tick when it arrives, a flight one just before its
    /// repository read. Comparing the two tells whether the read's snapshot may predate the
    /// request (see `order_json`).
    clock: AtomicU64,
    next_id: AtomicU64,
    /// Flights in progress by uid, with an id so that a finished flight removes only its own
    /// entry. Weak, so the map never keeps a flight alive that every requester has abandoned.
    flights: Mutex<HashMap<Box<str>, (u64, WeakShared<BoxFuture<'static, FlightOutput>>)>>,
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
            // Starts at 1 so that every tick is greater than the initial 0.
            clock: AtomicU64::new(1),
            next_id: AtomicU64::new(0),
            flights: Mutex::new(HashMap::new()),
            queries: AtomicU64::new(0),
            shared: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    fn tick(&self) -> u64 {
        // SeqCst: the ticks of requests and flights form one total order, which is what the
        // "did this read start after I arrived" comparison relies on.
        self.clock.fetch_add(1, Ordering::SeqCst)
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
            && flights.get(&self.uid).is_some_and(|(id, _)| *id == self.id)
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
    /// Misses for the same uid share one repository read. A request may join a read that was
    /// already running when it arrived, so that read's snapshot may predate an order committed
    /// just before the request: its "not found" is not an answer for that request. Such a
    /// joiner asks again, and the read it then starts or joins began after it arrived (the
    /// stale flight had already left the map), so it never answers 404 for an order committed
    /// before it arrived. "Found" is always safe to share: orders never change. Errors are
    /// shared too; they say nothing about existence. Under a flood of one unknown uid this
    /// costs at most two reads per wave of requests instead of one per request.
    pub async fn order_json(&self, order_uid: &str) -> Result<Bytes, QueryError> {
        if !is_valid_order_uid(order_uid) {
            return Err(QueryError::InvalidUid);
        }
        if let Some(json) = self.cache.get(order_uid) {
            return Ok(json);
        }
        let arrived = self.misses.tick();
        loop {
            let flight = self.flight(order_uid)?;
            let (started, result) = flight.await;
            match result {
                Ok(Some(json)) => return Ok(json),
                Ok(None) if started > arrived => return Err(QueryError::NotFound),
                // Started before this request arrived: the order may have been committed in
                // between. Ask again (the finished flight is no longer in the map).
                Ok(None) => continue,
                Err(e) => return Err(QueryError::Repository(copy_error(&e))),
            }
        }
    }

    /// The flight in progress for `order_uid`, or a new one if a read slot is free.
    fn flight(&self, order_uid: &str) -> Result<Flight, QueryError> {
        let misses = &self.misses;
        let mut flights = misses.flights.lock().map_err(|_| RepositoryError::Other {
            context: "the miss map's lock is poisoned".into(),
            source: None,
        })?;
        if let Some(flight) = flights.get(order_uid).and_then(|(_, weak)| weak.upgrade()) {
            misses.shared.fetch_add(1, Ordering::Relaxed);
            return Ok(flight);
        }
        let Some(permit) = misses.try_acquire() else {
            misses.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(QueryError::Overloaded {
                limit: misses.limit,
            });
        };
        let id = misses.next_id.fetch_add(1, Ordering::Relaxed);
        // Both guards live in the future: dropped when it ends, or when every requester has
        // gone away (then the read is cancelled and its slot given back).
        let entry = FlightEntry {
            misses: misses.clone(),
            uid: order_uid.into(),
            id,
        };
        let repo = self.repo.clone();
        let cache = self.cache.clone();
        let clock = misses.clone();
        let flight = async move {
            let _permit = permit;
            let started = clock.tick();
            clock.queries.fetch_add(1, Ordering::Relaxed);
            let result = match repo.get(&entry.uid).await {
                Ok(Some(order)) => match order.to_json_bytes() {
                    Ok(json) => {
                        cache.insert(&entry.uid, json.clone());
                        Ok(Some(json))
                    }
                    Err(e) => Err(RepositoryError::other("serializing a stored order", e)),
                },
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            };
            // Out of the map before anyone sees the result: a request that finds no flight
            // starts one after this point.
            drop(entry);
            (started, result.map_err(Arc::new))
        }
        .boxed()
        .shared();
        if let Some(weak) = flight.downgrade() {
            flights.insert(order_uid.into(), (id, weak));
        }
        Ok(flight)
    }

    /// The most recent orders, newest first; `limit` is clamped to [`MAX_RECENT`].
    pub async fn recent(&self, limit: usize) -> Result<Vec<OrderSummary>, QueryError> {
        Ok(self
            .repo
            .recent_summaries(limit.clamp(1, MAX_RECENT))
            .await?)
    }

    pub fn cache(&self) -> &Arc<dyn OrderCache> {
        &self.cache
    }

    pub fn repository(&self) -> &Arc<dyn OrderRepository> {
        &self.repo
    }

    /// Loads the most recent orders (up to the cache's capacity, and up to its byte bound)
    /// into the cache, oldest first so that the newest are the last to be evicted. Returns how
    /// many were loaded.
    ///
    /// Reads in pages of [`WARM_PAGE`] orders and keeps only their JSON (what the cache holds
    /// anyway), so memory never holds more than one page of decoded orders. It stops at the
    /// first order that would take the total past the byte bound, rather than loading orders
    /// the cache would evict at once (an order larger than the whole bound is skipped: the
    /// cache would not keep it anyway).
    pub async fn warm_up(&self) -> Result<usize, RepositoryError> {
        let started = Instant::now();
        let capacity = self.cache.capacity();
        let max_bytes = self.cache.max_bytes();
        let mut newest_first: Vec<(String, Bytes)> = Vec::new();
        let mut bytes = 0usize;
        let mut before = None;
        'pages: while newest_first.len() < capacity {
            let want = WARM_PAGE.min(capacity - newest_first.len());
            let page = self.repo.recent(before, want).await?;
            let got = page.len();
            before = page.last().map(|(seq, _)| *seq);
            for (_, order) in page {
                let json = order
                    .to_json_bytes()
                    .map_err(|e| RepositoryError::other("serializing a stored order", e))?;
                if json.len() > max_bytes {
                    continue;
                }
                if bytes.saturating_add(json.len()) > max_bytes {
                    break 'pages;
                }
                bytes += json.len();
                newest_first.push((order.order_uid, json));
            }
            if got < want {
                break;
            }
        }
        let loaded = newest_first.len();
        for (uid, json) in newest_first.into_iter().rev() {
            self.cache.insert(&uid, json);
        }
        self.cache.mark_warmed(loaded, started.elapsed());
        Ok(loaded)
    }
}
