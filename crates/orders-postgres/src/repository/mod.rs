//! `PgRepository`: the pool, the call timeout, and the `OrderRepository` contract, whose
//! statements live by concern: `write` (a batch transaction: the offset compare-and-set,
//! orders and their children, rejections), `read` (orders for the API and warm-up),
//! `offsets` (where each partition stands) and `rejected` (the rejected rows).

mod copy;
mod offsets;
mod read;
mod rejected;
mod write;

pub(crate) use write::COMMITS_CHANNEL;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use orders_domain::{
    Order, OrderRepository, OrderSummary, RecordMark, RejectedFilter, RejectedMessage,
    RepositoryError, StoreBatch, StoreOutcome, StoreSeq, StoredJson, WARM_PAGE,
};
use tokio::time::timeout;

use crate::config::PgConfig;
use crate::error::{PgError, connect_error, map_pool};
use crate::migrate::migrate;

/// A pool's state, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    /// Connections open.
    pub size: usize,
    /// Connections idle.
    pub available: usize,
    /// Tasks waiting for a connection.
    pub waiting: usize,
    /// Most connections the pool opens.
    pub max_size: usize,
}

/// The PostgreSQL repository: a connection pool and the statements of the contract.
#[derive(Clone)]
pub struct PgRepository {
    pool: Pool,
    target: String,
    /// Longest wait for one repository call's answers (client side: it also ends a call on a
    /// connection that went silent without closing, which no server-side timeout sees).
    query_timeout: Duration,
    /// Set: each batch announces its new orders on [`write::COMMITS_CHANNEL`] under this
    /// origin (so other replicas can cache them).
    announce: Option<std::sync::Arc<str>>,
    /// Whether batches try COPY for their orders (not after a recent conflict).
    orders_copy: std::sync::Arc<write::OrdersCopy>,
}

impl std::fmt::Debug for PgRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgRepository")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl PgRepository {
    /// Builds the pool, checks that the database answers, and applies pending migrations.
    pub async fn connect(config: &PgConfig) -> Result<Self, PgError> {
        let repo = Self::connect_lazy(config)?;
        let mut client = tokio::time::timeout(config.connect_timeout, repo.pool.get())
            .await
            .map_err(|_| PgError::Connect {
                target: repo.target.clone(),
                detail: "timed out".into(),
                hint: Some("no answer in time: is DB_HOST:DB_PORT reachable?"),
                permanent: false,
            })?
            .map_err(|e| connect_error(repo.target.clone(), e))?;
        migrate(&mut client).await?;
        Ok(repo)
    }

    /// Builds the pool without connecting (connections are made on first use).
    pub fn connect_lazy(config: &PgConfig) -> Result<Self, PgError> {
        let target = config.display();
        let manager = Manager::from_config(
            config.tokio_postgres(),
            config.tls_connector()?,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .wait_timeout(Some(config.connect_timeout))
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.connect_timeout))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| PgError::Connect {
                target: target.clone(),
                detail: e.to_string(),
                hint: None,
                permanent: true,
            })?;
        Ok(Self {
            pool,
            target,
            query_timeout: config.query_timeout(),
            announce: None,
            orders_copy: Default::default(),
        })
    }

    /// Makes every committed batch announce its new orders to [`crate::CommitListener`]s,
    /// under `origin` (listeners skip their own origin's announcements). The announcement
    /// is part of the batch transaction: delivered if and only if the batch commits.
    pub fn announce_commits(mut self, origin: &str) -> Self {
        self.announce = Some(origin.into());
        self
    }

    /// A connection from the pool; waiting for one is bounded by the pool's wait timeout.
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, RepositoryError> {
        self.pool.get().await.map_err(map_pool)
    }

    /// The result of a call made on `client` under [`Self::query_timeout`]. A call that timed
    /// out leaves its connection in an unknown state (maybe half-open, maybe mid-transaction),
    /// so it is taken out of the pool and closed, and the caller retries on a fresh one.
    pub(crate) fn settle<T>(
        &self,
        client: deadpool_postgres::Object,
        result: Result<Result<T, RepositoryError>, tokio::time::error::Elapsed>,
    ) -> Result<T, RepositoryError> {
        result.unwrap_or_else(|_| {
            drop(deadpool_postgres::Object::take(client));
            Err(RepositoryError::Unavailable {
                context: format!(
                    "no answer from PostgreSQL at {} within {:?}; dropped the connection",
                    self.target, self.query_timeout
                ),
                source: None,
            })
        })
    }

    /// Longest wait for one call's answers.
    pub(crate) fn query_timeout(&self) -> Duration {
        self.query_timeout
    }

    /// Closes the pool: idle connections are dropped, new `get`s fail.
    pub fn close(&self) {
        self.pool.close();
    }

    /// Pool status for metrics.
    pub fn pool_status(&self) -> PoolStatus {
        let s = self.pool.status();
        PoolStatus {
            size: s.size,
            available: s.available,
            waiting: s.waiting,
            max_size: s.max_size,
        }
    }
}

/// Warm-up pages read at once, each on a connection of its own. PostgreSQL's work on the next
/// pages overlaps ours on the current one (on 2 cores: the server on one, the service on the
/// other); more than 3 gained nothing measurable.
const WARM_READS: usize = 3;

/// A spawned task that is cancelled when its handle is dropped (when warm-up stops reading,
/// the pages it read ahead are not finished for nothing).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> std::future::Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl PgRepository {
    /// One warm-up page on a pooled connection, under the call timeout.
    async fn json_page(&self, low: i64, high: i64) -> Result<Vec<StoredJson>, RepositoryError> {
        let client = self.client().await?;
        let result = timeout(self.query_timeout, read::json_page(&client, low, high)).await;
        self.settle(client, result)
    }
}

#[async_trait]
impl OrderRepository for PgRepository {
    async fn store_batch(&self, batch: &StoreBatch) -> Result<StoreOutcome, RepositoryError> {
        let mut client = self.client().await?;
        let result = timeout(
            self.query_timeout,
            write::store_batch(
                &mut client,
                batch,
                self.announce.as_deref(),
                &self.orders_copy,
            ),
        )
        .await;
        self.settle(client, result)
    }

    async fn get(&self, order_uid: &str) -> Result<Option<Order>, RepositoryError> {
        let client = self.client().await?;
        let result = timeout(self.query_timeout, read::get(&client, order_uid)).await;
        self.settle(client, result)
    }

    async fn recent(
        &self,
        before: Option<StoreSeq>,
        limit: usize,
    ) -> Result<Vec<(StoreSeq, Order)>, RepositoryError> {
        let mut client = self.client().await?;
        let result = timeout(self.query_timeout, read::recent(&mut client, before, limit)).await;
        self.settle(client, result)
    }

    /// The pages' boundaries first (one cheap query), then [`WARM_READS`] pages at a time,
    /// each a task of its own (its rows turned into JSON on any worker thread), yielded in
    /// order.
    fn recent_json(
        &self,
        before: Option<StoreSeq>,
        limit: usize,
    ) -> BoxStream<'_, Result<Vec<StoredJson>, RepositoryError>> {
        let repo = self.clone();
        futures::stream::once(async move {
            let client = repo.client().await?;
            let result = timeout(
                repo.query_timeout,
                read::warm_pages(&client, before, limit, WARM_PAGE),
            )
            .await;
            let pages = repo.settle(client, result)?;
            Ok::<_, RepositoryError>(
                futures::stream::iter(pages)
                    .map(move |(low, high)| {
                        let repo = repo.clone();
                        AbortOnDrop(tokio::spawn(async move { repo.json_page(low, high).await }))
                    })
                    .buffered(WARM_READS)
                    .map(|joined| {
                        joined.unwrap_or_else(|e| {
                            Err(RepositoryError::other("reading a warm-up page", e))
                        })
                    }),
            )
        })
        .try_flatten()
        .boxed()
    }

    async fn recent_summaries(
        &self,
        before: Option<StoreSeq>,
        limit: usize,
    ) -> Result<Vec<(StoreSeq, OrderSummary)>, RepositoryError> {
        let client = self.client().await?;
        let result = timeout(
            self.query_timeout,
            read::recent_summaries(&client, before, limit),
        )
        .await;
        self.settle(client, result)
    }

    async fn stored_offsets(&self, topic: &str) -> Result<BTreeMap<i32, i64>, RepositoryError> {
        let client = self.client().await?;
        let result = timeout(self.query_timeout, offsets::stored_offsets(&client, topic)).await;
        self.settle(client, result)
    }

    async fn offset_marks(
        &self,
        topic: &str,
    ) -> Result<BTreeMap<i32, RecordMark>, RepositoryError> {
        let client = self.client().await?;
        let result = timeout(self.query_timeout, offsets::offset_marks(&client, topic)).await;
        self.settle(client, result)
    }

    async fn rejected(
        &self,
        filter: &RejectedFilter,
    ) -> Result<Vec<RejectedMessage>, RepositoryError> {
        let client = self.client().await?;
        let result = timeout(self.query_timeout, rejected::rejected(&client, filter)).await;
        self.settle(client, result)
    }

    async fn last_rejected_id(&self) -> Result<Option<i64>, RepositoryError> {
        let client = self.client().await?;
        let result = timeout(self.query_timeout, rejected::last_rejected_id(&client)).await;
        self.settle(client, result)
    }

    async fn rejected_counts(&self) -> Result<BTreeMap<String, i64>, RepositoryError> {
        let client = self.client().await?;
        let result = timeout(self.query_timeout, rejected::rejected_counts(&client)).await;
        self.settle(client, result)
    }

    async fn ping(&self) -> Result<(), RepositoryError> {
        let client = self.client().await?;
        let result = timeout(self.query_timeout, read::ping(&client)).await;
        self.settle(client, result)
    }
}
