//! The query use case: cache first, then the repository (filling the cache), and warm-up.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::error::{QueryError, RepositoryError};
use crate::model::OrderSummary;
use crate::ports::{OrderCache, OrderRepository};
use crate::validation::is_valid_order_uid;

/// Most summaries one call returns.
pub const MAX_RECENT: usize = 500;

/// Orders read per repository call during warm-up.
pub const WARM_PAGE: usize = 1_000;

/// Reads orders for the API.
#[derive(Debug, Clone)]
pub struct QueryService {
    repo: Arc<dyn OrderRepository>,
    cache: Arc<dyn OrderCache>,
}

impl QueryService {
    pub fn new(repo: Arc<dyn OrderRepository>, cache: Arc<dyn OrderCache>) -> Self {
        Self { repo, cache }
    }

    /// The order's JSON: from the cache, else from the repository (then cached).
    pub async fn order_json(&self, order_uid: &str) -> Result<Bytes, QueryError> {
        if !is_valid_order_uid(order_uid) {
            return Err(QueryError::InvalidUid);
        }
        if let Some(json) = self.cache.get(order_uid) {
            return Ok(json);
        }
        let order = self
            .repo
            .get(order_uid)
            .await?
            .ok_or(QueryError::NotFound)?;
        let json = order
            .to_json_bytes()
            .map_err(|e| RepositoryError::other("serializing a stored order", e))?;
        self.cache.insert(order_uid, json.clone());
        Ok(json)
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

    /// Loads the most recent orders (up to the cache's capacity) into the cache, oldest first
    /// so that the newest are the last to be evicted. Returns how many were loaded.
    ///
    /// Reads in pages of [`WARM_PAGE`] orders and keeps only their JSON (what the cache holds
    /// anyway), so memory never holds more than one page of decoded orders.
    pub async fn warm_up(&self) -> Result<usize, RepositoryError> {
        let started = Instant::now();
        let capacity = self.cache.capacity();
        let mut newest_first: Vec<(String, Bytes)> = Vec::new();
        let mut before = None;
        while newest_first.len() < capacity {
            let want = WARM_PAGE.min(capacity - newest_first.len());
            let page = self.repo.recent(before, want).await?;
            let got = page.len();
            before = page.last().map(|(seq, _)| *seq);
            for (_, order) in page {
                let json = order
                    .to_json_bytes()
                    .map_err(|e| RepositoryError::other("serializing a stored order", e))?;
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
