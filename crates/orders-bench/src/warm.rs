//! Section 4 (warm-up and memory). Measured in a fresh child process (`orders-bench
//! warm-probe`) so that the resident-memory difference is the cache's alone.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use orders_cache::DashCache;
use orders_domain::{OrderCache, OrderRepository, QueryService};
use orders_postgres::{PgConfig, PgRepository};
use serde::{Deserialize, Serialize};

use crate::stats::{CpuSplit, median, rss_bytes};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WarmResults {
    pub(crate) orders: usize,
    /// `QueryService::warm_up` into an empty cache of that capacity.
    pub(crate) warm_secs: f64,
    /// Baseline: the same two queries the repository runs, rows fetched and dropped.
    pub(crate) select_secs: f64,
    /// CPU seconds of this process, and of every `postgres` process (other databases'
    /// sessions included: the server is shared), during the warm-up and during the SELECTs.
    pub(crate) warm_cpu: CpuSplit,
    pub(crate) select_cpu: CpuSplit,
    pub(crate) rss_before: u64,
    pub(crate) rss_after: u64,
    /// Mean size of a cached order's JSON (the least the cache must hold).
    pub(crate) json_bytes_per_order: f64,
}

impl WarmResults {
    pub(crate) fn rss_per_order(&self) -> f64 {
        self.rss_after.saturating_sub(self.rss_before) as f64 / self.orders as f64
    }
}

/// Rows of `query` with `params`, fetched as a stream and dropped one by one: the read alone,
/// with nothing kept.
async fn drain(
    sql: &tokio_postgres::Client,
    query: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> anyhow::Result<usize> {
    use futures::TryStreamExt;
    let rows = sql.query_raw(query, params.iter().copied()).await?;
    futures::pin_mut!(rows);
    let mut n = 0;
    while rows.try_next().await?.is_some() {
        n += 1;
    }
    Ok(n)
}

/// The baseline: the orders and items the warm-up reads, every column it reads (the unknown
/// fields' `extra` too), in one query each, rows fetched and dropped.
async fn select(sql: &tokio_postgres::Client, count: usize) -> anyhow::Result<usize> {
    let limit = count as i64;
    let orders = drain(
        sql,
        "SELECT o.order_uid, o.track_number, o.entry, o.locale, o.internal_signature,
                o.customer_id, o.delivery_service, o.shardkey, o.sm_id, o.date_created,
                o.oof_shard, d.name, d.phone, d.zip, d.city, d.address, d.region, d.email,
                p.transaction, p.request_id, p.currency, p.provider, p.amount,
                p.payment_dt, p.bank, p.delivery_cost, p.goods_total, p.custom_fee,
                o.extra::text, d.extra::text, p.extra::text, o.ingest_seq
         FROM orders o JOIN deliveries d USING (order_uid) JOIN payments p USING (order_uid)
         ORDER BY o.ingest_seq DESC LIMIT $1",
        &[&limit],
    )
    .await?;
    let items = drain(
        sql,
        "SELECT order_uid, chrt_id, track_number, price, rid, name, sale, size,
                total_price, nm_id, brand, status, extra::text
         FROM items JOIN (SELECT order_uid FROM orders ORDER BY ingest_seq DESC LIMIT $1) r
         USING (order_uid) ORDER BY order_uid, position",
        &[&limit],
    )
    .await?;
    Ok(orders + items)
}

/// The child's side: warm `count` orders from `config`'s database, print the results as JSON.
pub(crate) async fn probe(config: &PgConfig, count: usize) -> anyhow::Result<WarmResults> {
    let repo = PgRepository::connect(config).await?;
    let sql = crate::db::client(config).await?;
    let cache = Arc::new(DashCache::new(count));
    let repo_dyn: Arc<dyn OrderRepository> = Arc::new(repo.clone());
    let cache_dyn: Arc<dyn OrderCache> = cache.clone();
    let query = QueryService::new(repo_dyn, cache_dyn);
    let rss_before = rss_bytes();
    let cpu = CpuSplit::now();
    let t = Instant::now();
    let loaded = query.warm_up().await?;
    let warm_secs = t.elapsed().as_secs_f64();
    let warm_cpu = CpuSplit::now().since(cpu);
    let rss_after = rss_bytes();
    anyhow::ensure!(loaded == count, "warmed {loaded} of {count}");
    // The baseline after the warm-up, so that its freed memory does not flatter the RSS figure.
    select(&sql, count).await?;
    let cpu = CpuSplit::now();
    let t = Instant::now();
    select(&sql, count).await?;
    let select_secs = t.elapsed().as_secs_f64();
    let select_cpu = CpuSplit::now().since(cpu);
    let json = cache.stats().bytes;
    repo.close();
    Ok(WarmResults {
        orders: loaded,
        warm_secs,
        select_secs,
        warm_cpu,
        select_cpu,
        rss_before,
        rss_after,
        json_bytes_per_order: json as f64 / loaded as f64,
    })
}

/// The parent's side: runs the probe in a child process and reads its JSON line.
pub(crate) fn run(config: &PgConfig, count: usize) -> anyhow::Result<WarmResults> {
    let exe = std::env::current_exe()?;
    let out = std::process::Command::new(exe)
        .args(["warm-probe", "--count", &count.to_string()])
        .env("DB_HOST", &config.host)
        .env("DB_PORT", config.port.to_string())
        .env("DB_USER", &config.user)
        .env("DB_PASSWORD", config.password.expose())
        .env("DB_NAME", &config.dbname)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("starting the warm-up probe")?;
    anyhow::ensure!(
        out.status.success(),
        "warm-up probe failed ({})",
        out.status
    );
    serde_json::from_slice(&out.stdout).context("reading the warm-up probe's result")
}

/// Every run of the warm-up of one number of orders.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct WarmLine {
    pub(crate) orders: usize,
    pub(crate) runs: Vec<WarmResults>,
}

impl WarmLine {
    /// Per run, the warm-up's time over the SELECTs' (measured in the same process).
    pub(crate) fn ratios(&self) -> Vec<f64> {
        self.runs
            .iter()
            .map(|r| r.warm_secs / r.select_secs)
            .collect()
    }

    fn median_of(&self, f: impl Fn(&WarmResults) -> f64) -> f64 {
        median(&self.runs.iter().map(f).collect::<Vec<_>>())
    }

    pub(crate) fn warm_secs(&self) -> f64 {
        self.median_of(|r| r.warm_secs)
    }

    pub(crate) fn select_secs(&self) -> f64 {
        self.median_of(|r| r.select_secs)
    }

    pub(crate) fn rss_per_order(&self) -> f64 {
        self.median_of(WarmResults::rss_per_order)
    }

    pub(crate) fn json_bytes_per_order(&self) -> f64 {
        self.median_of(|r| r.json_bytes_per_order)
    }
}

/// The section: `repeat` rounds, each warming every count once (smallest first), each run in
/// a fresh child process.
pub(crate) fn run_all(
    config: &PgConfig,
    counts: &[usize],
    repeat: usize,
) -> anyhow::Result<Vec<WarmLine>> {
    let mut lines: Vec<WarmLine> = counts
        .iter()
        .map(|&orders| WarmLine {
            orders,
            runs: Vec::new(),
        })
        .collect();
    lines.sort_by_key(|l| l.orders);
    lines.dedup_by_key(|l| l.orders);
    for round in 0..repeat.max(1) {
        for line in &mut lines {
            tracing::info!(round, orders = line.orders, "warm-up");
            line.runs.push(run(config, line.orders)?);
        }
    }
    Ok(lines)
}
