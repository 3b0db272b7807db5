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
        let json = Bytes::from(
            serde_json::to_vec(&order)
                .map_err(|e| RepositoryError::other("serializing a stored order", e))?,
        );
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
    pub async fn warm_up(&self) -> Result<usize, RepositoryError> {
        let started = Instant::now();
        let orders = self.repo.recent(self.cache.capacity()).await?;
        let loaded = orders.len();
        for order in orders.iter().rev() {
            let json = serde_json::to_vec(order)
                .map_err(|e| RepositoryError::other("serializing a stored order", e))?;
            self.cache.insert(&order.order_uid, Bytes::from(json));
        }
        self.cache.mark_warmed(loaded, started.elapsed());
        Ok(loaded)
    }
}
