//! Section 1 (sink path) and 5 (where the time goes): the real ingest use case over the real
//! PostgreSQL adapter, no broker, against naive inserts and binary COPY of the same rows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::try_join_all;
use orders_cache::DashCache;
use orders_domain::{
    CachedOrder, Fence, FetchedBatch, IngestService, OrderCache, OrderRepository, PartitionLeases,
    ReceivedMessage, UnknownFields,
};
use orders_postgres::{PgConfig, PgLeases, PgRepository};
use serde::Serialize;

use crate::data::{Dataset, Plan, fetched_batches};
use crate::db::{self, BenchDb};
use crate::stats::{CpuSplit, cpu_seconds, median};

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Rate {
    /// Wall-clock seconds of each repetition, in round order.
    pub(crate) runs_secs: Vec<f64>,
    pub(crate) orders: u64,
    pub(crate) rows: u64,
}

impl Rate {
    pub(crate) fn secs(&self) -> f64 {
        median(&self.runs_secs)
    }
    pub(crate) fn orders_per_sec(&self) -> f64 {
        self.orders as f64 / self.secs()
    }
    pub(crate) fn rows_per_sec(&self) -> f64 {
        self.rows as f64 / self.secs()
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct SinkResults {
    pub(crate) streams: usize,
    pub(crate) batches: usize,
    pub(crate) mean_batch_orders: f64,
    pub(crate) ours: Rate,
    /// Ours as a replica runs it: each batch also fenced on its partition's lease epoch, and
    /// its new orders announced to the other replicas (NOTIFY).
    pub(crate) replica: Rate,
    pub(crate) naive: Rate,
    /// Per round: ours' rate over COPY's (n streams), in round order. Their median is the
    /// headline ([`SinkResults::ours_vs_copy`]).
    pub(crate) ours_vs_copy_runs: Vec<f64>,
    /// Per round: the replica's rate over ours'.
    pub(crate) replica_vs_ours_runs: Vec<f64>,
    pub(crate) copy_1: Rate,
    pub(crate) copy_n: Rate,
    /// CPU seconds of PostgreSQL and of this process in each run of ours, and of COPY (n
    /// streams): on 2 shared cores the rate follows the CPU each variant costs.
    pub(crate) ours_cpu: Vec<CpuSplit>,
    pub(crate) copy_cpu: Vec<CpuSplit>,
    pub(crate) profile: Profile,
}

/// A cache of `capacity` orders, full, as a service's is once it has run a while: each order
/// stored then evicts one, and the memory freed is reused. (Into an empty cache, the first
/// `capacity` orders of a process also pay for new memory, which the kernel faults in and
/// zeroes: a start-up cost, not the path's.) Its entries are messages, as the orders the
/// service ingested and nobody read yet are cached. Every entry is a buffer of its own, as
/// stored orders' are, and it is made on the runtime's worker threads, as the service makes
/// its entries: mimalloc gives memory back to the heap of the thread that allocated it, so
/// entries made on this (non-worker) thread would send every eviction's memory away from the
/// workers that store the next orders.
async fn full_cache(capacity: usize, messages: &Arc<Vec<Bytes>>) -> anyhow::Result<Arc<DashCache>> {
    const TASKS: usize = 4;
    let cache = Arc::new(DashCache::new(capacity));
    let fills = (0..TASKS).map(|t| {
        let (cache, messages) = (Arc::clone(&cache), Arc::clone(messages));
        tokio::spawn(async move {
            for i in (t..capacity).step_by(TASKS) {
                let message = Bytes::copy_from_slice(&messages[i % messages.len()]);
                let entry = ReceivedMessage::new(message, UnknownFields::Keep);
                cache.insert(&format!("cached-{i}"), CachedOrder::Message(entry));
            }
            anyhow::Ok(())
        })
    });
    for filled in try_join_all(fills).await? {
        filled?;
    }
    Ok(cache)
}

/// The plan's batches, each stream's made in a task on the runtime's worker threads, as a
/// source's fetches are: the records' buffers are then allocated by the threads that cache
/// them and, at eviction, free them (see [`full_cache`]).
async fn fetched_on_workers(
    payloads: &Arc<Vec<Bytes>>,
    plan: &Plan,
) -> anyhow::Result<Vec<Vec<FetchedBatch>>> {
    Ok(
        try_join_all(plan.iter().enumerate().map(|(partition, batches)| {
            let (payloads, batches) = (Arc::clone(payloads), batches.clone());
            tokio::spawn(async move { fetched_batches(&payloads, partition, &batches) })
        }))
        .await?,
    )
}

/// Median CPU µs per order of PostgreSQL and of this process over `runs`.
pub(crate) fn cpu_us_per_order(runs: &[CpuSplit], orders: u64) -> (f64, f64) {
    let per = |f: fn(&CpuSplit) -> f64| {
        median(
            &runs
                .iter()
                .map(|c| f(c) * 1e6 / orders as f64)
                .collect::<Vec<_>>(),
        )
    };
    (per(|c| c.database), per(|c| c.this_process))
}

/// Where the sink path's time goes (CPU of this process; the database works in its own).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Profile {
    /// Process CPU seconds during the median `ours` run.
    pub(crate) cpu_secs: f64,
    /// Wall seconds of that run.
    pub(crate) wall_secs: f64,
    /// One thread, all messages: JSON decoding plus validation (`decode_order`).
    pub(crate) decode_validate_secs: f64,
    /// Of which: validation alone (`validate_order` on decoded orders).
    pub(crate) validate_secs: f64,
    /// One thread, all messages: the JSON and tag each order's first read makes of its cached
    /// message (`ReceivedMessage::to_json`). Not on this path: ingest caches the message.
    pub(crate) first_read_json_secs: f64,
    /// Summed over streams: `prepare` (decode + validate + sort into orders/rejections).
    pub(crate) prepare_secs: f64,
    /// Summed over streams: the repository's transaction (the cache fill runs beside it).
    pub(crate) store_secs: f64,
}

impl SinkResults {
    /// Ours / COPY (n streams): the median of the rounds' ratios, each of two runs back to back.
    /// Not the ratio of the two median rates, which may take them from different rounds, and so
    /// compare runs made at different speeds of a shared machine.
    pub(crate) fn ours_vs_copy(&self) -> f64 {
        median(&self.ours_vs_copy_runs)
    }

    /// The replica / ours, as [`Self::ours_vs_copy`].
    pub(crate) fn replica_vs_ours(&self) -> f64 {
        median(&self.replica_vs_ours_runs)
    }
}

impl Profile {
    pub(crate) fn decode_share(&self) -> f64 {
        self.decode_validate_secs / self.cpu_secs
    }
}

pub(crate) struct SinkRun {
    pub(crate) wall: Duration,
    pub(crate) cpu: f64,
    pub(crate) prepare: Duration,
    pub(crate) store: Duration,
}

/// The service's path: `IngestService::prepare` then `store`, one task per stream (as the
/// consumer runs one loop per partition, see [`stream_like_a_partition`]), pool and cache as
/// the service configures them.
pub(crate) async fn ours(
    config: &PgConfig,
    batches: Vec<Vec<FetchedBatch>>,
    cache: Arc<DashCache>,
    replica: bool,
) -> anyhow::Result<SinkRun> {
    let mut repo = PgRepository::connect(config).await?;
    // As a replica: one lease per stream (partition), claimed up front like the consumer's.
    let mut epochs: Vec<Option<i64>> = vec![None; batches.len()];
    if replica {
        repo = repo.announce_commits("bench");
        let leases = PgLeases::new(repo.clone(), "bench");
        let partitions: Vec<i32> = (0..batches.len() as i32).collect();
        leases
            .heartbeat("bench", &partitions, Duration::from_secs(600))
            .await?;
        for l in leases.claim("bench", partitions.len()).await? {
            epochs[l.partition as usize] = Some(l.epoch);
        }
    }
    let repo_dyn: Arc<dyn OrderRepository> = Arc::new(repo.clone());
    let cache: Arc<dyn OrderCache> = cache;
    let ingest = IngestService::new(repo_dyn, cache);
    let cpu0 = cpu_seconds();
    let started = Instant::now();
    let tasks = batches
        .into_iter()
        .zip(epochs)
        .map(|(stream, lease_epoch)| {
            let ingest = ingest.clone();
            tokio::spawn(stream_like_a_partition(ingest, stream, lease_epoch))
        });
    let mut run = SinkRun {
        wall: Duration::ZERO,
        cpu: 0.0,
        prepare: Duration::ZERO,
        store: Duration::ZERO,
    };
    for r in try_join_all(tasks).await? {
        let (p, s) = r?;
        run.prepare += p;
        run.store += s;
    }
    run.wall = started.elapsed();
    run.cpu = cpu_seconds() - cpu0;
    repo.close();
    Ok(run)
}

/// One stream as the consumer stores a partition: each batch's offset moves on from the last
/// one's, fenced like the consumer's; the next batch is prepared on another task while one is
/// stored, and a committed batch's orders go into the cache on another task while the next is
/// stored. Returns the time spent in `prepare` (on its tasks) and in the repository's commit.
async fn stream_like_a_partition(
    ingest: IngestService,
    stream: Vec<FetchedBatch>,
    lease_epoch: Option<i64>,
) -> anyhow::Result<(Duration, Duration)> {
    let (mut prepare, mut store) = (Duration::ZERO, Duration::ZERO);
    let mut committed = None;
    let mut batches = stream.into_iter().map(|b| {
        let fence = Fence {
            expected: committed,
            lease_epoch,
        };
        committed = Some(b.next_offset);
        (b, fence)
    });
    let prepare_on_a_task = |(batch, fence): (FetchedBatch, Fence)| {
        let ingest = ingest.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            (ingest.prepare("bench", batch, fence), t.elapsed())
        })
    };
    let mut ahead = batches.next().map(prepare_on_a_task);
    let mut fill: Option<tokio::task::JoinHandle<()>> = None;
    while let Some(prepared) = ahead.take() {
        let (prepared, took) = prepared.await?;
        prepare += took;
        ahead = batches.next().map(prepare_on_a_task);
        let t = Instant::now();
        let (report, outcome) = ingest.store_uncached(&prepared).await?;
        store += t.elapsed();
        anyhow::ensure!(
            report.rejected.is_empty(),
            "rejections: {:?}",
            report.rejected
        );
        if let Some(f) = fill.take() {
            f.await?;
        }
        let ingest = ingest.clone();
        fill = Some(tokio::spawn(async move {
            ingest.cache_stored(&prepared, &outcome);
        }));
    }
    if let Some(f) = fill {
        f.await?;
    }
    Ok((prepare, store))
}

pub(crate) async fn count_orders(config: &PgConfig) -> anyhow::Result<i64> {
    Ok(db::client(config)
        .await?
        .query_one("SELECT count(*) FROM orders", &[])
        .await?
        .get(0))
}

/// The sink section's variants, each on a fresh database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    CopyN,
    Copy1,
    Ours,
    Replica,
    Naive,
}

impl Variant {
    /// A round's order; odd rounds run it backwards. Ours sits between the two variants it is
    /// compared with (COPY, n streams, and the replica), so each comparison is of two runs back
    /// to back, and which of the pair goes first alternates. The machine's speed drifts from
    /// one round to the next (PostgreSQL's CPU for the same COPY moved by up to a third between
    /// rounds of one run), much less within a pair.
    const ROUND: [Self; 5] = [
        Self::Copy1,
        Self::CopyN,
        Self::Ours,
        Self::Replica,
        Self::Naive,
    ];

    fn round(round: usize) -> [Self; 5] {
        let mut order = Self::ROUND;
        if round % 2 == 1 {
            order.reverse();
        }
        order
    }

    /// Its name in the report.
    fn label(self, streams: usize) -> String {
        match self {
            Self::CopyN => format!("COPY ({streams} streams)"),
            Self::Copy1 => "COPY (1 stream)".to_owned(),
            Self::Ours => "ours".to_owned(),
            Self::Replica => "ours as a replica".to_owned(),
            Self::Naive => "naive".to_owned(),
        }
    }
}

/// [`Variant::ROUND`] in words, for the report: "A, B, … and E".
pub(crate) fn round_in_words(streams: usize) -> String {
    let labels: Vec<String> = Variant::ROUND.iter().map(|v| v.label(streams)).collect();
    match labels.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => labels.concat(),
    }
}

pub(crate) struct SinkOptions {
    pub(crate) repeat: usize,
    pub(crate) naive_orders: usize,
    pub(crate) cache_capacity: usize,
}

/// Runs every variant `repeat` times on fresh databases. Returns the results and the database
/// of the last `ours` run (all orders stored; the warm-up section reads it), not dropped.
pub(crate) async fn run(
    admin: &PgConfig,
    data: &Dataset,
    plan: &Plan,
    opts: &SinkOptions,
) -> anyhow::Result<(SinkResults, BenchDb)> {
    let n = data.orders.len() as u64;
    let rows = Dataset::rows(&data.orders);
    let naive_n = opts.naive_orders.min(data.orders.len());
    let naive_rows = Dataset::rows(&data.orders[..naive_n]);
    let one_stream: Plan = vec![plan.iter().flatten().cloned().collect()];
    let streams = plan.len();
    let payloads = Arc::new(data.payloads.clone());
    // The full cache's entries are these messages, over and over (the dataset's mix).
    let cache_sample = Arc::new(data.payloads[..data.payloads.len().min(3_000)].to_vec());
    let mut ours_runs: Vec<SinkRun> = Vec::new();
    let (mut naive, mut copy_1, mut copy_n) = (Vec::new(), Vec::new(), Vec::new());
    let mut replica = Vec::new();
    let (mut ours_cpu, mut copy_cpu) = (Vec::new(), Vec::new());
    let mut keep = None;
    // Per round, ours / COPY (n streams) and the replica / ours: the spread beside the medians.
    let (mut ours_vs_copy, mut replica_vs_ours) = (Vec::new(), Vec::new());
    for round in 0..opts.repeat {
        let (mut ours_secs, mut copy_secs, mut replica_secs) = (0.0, 0.0, 0.0);
        for variant in Variant::round(round) {
            db::settle(admin).await?;
            tracing::info!(round, ?variant, "sink path");
            let db = BenchDb::create(admin).await?;
            match variant {
                Variant::CopyN => {
                    let cpu0 = CpuSplit::now();
                    copy_secs = db::copy(&db.config, &data.orders, plan)
                        .await?
                        .as_secs_f64();
                    copy_cpu.push(CpuSplit::now().since(cpu0));
                    copy_n.push(copy_secs);
                }
                Variant::Copy1 => copy_1.push(
                    db::copy(&db.config, &data.orders, &one_stream)
                        .await?
                        .as_secs_f64(),
                ),
                Variant::Ours | Variant::Replica => {
                    let replica_run = variant == Variant::Replica;
                    let batches = fetched_on_workers(&payloads, plan).await?;
                    let cache = full_cache(opts.cache_capacity, &cache_sample).await?;
                    let cpu0 = CpuSplit::now();
                    let run = ours(&db.config, batches, Arc::clone(&cache), replica_run).await?;
                    let cpu = CpuSplit::now().since(cpu0);
                    // Dropped after the measurement: freeing 100,000 entries is not the path's.
                    drop(cache);
                    let stored = count_orders(&db.config).await?;
                    anyhow::ensure!(
                        stored == n as i64,
                        "{variant:?} stored {stored} of {n} orders"
                    );
                    if replica_run {
                        replica_secs = run.wall.as_secs_f64();
                        replica.push(replica_secs);
                    } else {
                        ours_secs = run.wall.as_secs_f64();
                        ours_runs.push(run);
                        ours_cpu.push(cpu);
                    }
                }
                Variant::Naive => naive.push(
                    db::naive(&db.config, &data.orders[..naive_n], streams)
                        .await?
                        .as_secs_f64(),
                ),
            }
            // The last `ours` database is kept for the warm-up section.
            if variant == Variant::Ours {
                if let Some(old) = keep.replace(db) {
                    old.drop_now().await?;
                }
            } else {
                db.drop_now().await?;
            }
        }
        ours_vs_copy.push(copy_secs / ours_secs);
        replica_vs_ours.push(ours_secs / replica_secs);
    }
    let rate = |runs: Vec<f64>, orders, rows| Rate {
        runs_secs: runs,
        orders,
        rows,
    };
    // The profile comes from the median run of ours; the runs stay in round order, as every
    // other variant's (and their CPU splits) do.
    let mut by_wall: Vec<&SinkRun> = ours_runs.iter().collect();
    by_wall.sort_by_key(|r| r.wall);
    let profile = profile(data, by_wall[by_wall.len() / 2]);
    let batches = plan.iter().map(Vec::len).sum::<usize>();
    let results = SinkResults {
        streams,
        batches,
        mean_batch_orders: n as f64 / batches as f64,
        ours: rate(
            ours_runs.iter().map(|r| r.wall.as_secs_f64()).collect(),
            n,
            rows,
        ),
        replica: rate(replica, n, rows),
        naive: rate(naive, naive_n as u64, naive_rows),
        ours_vs_copy_runs: ours_vs_copy,
        replica_vs_ours_runs: replica_vs_ours,
        copy_1: rate(copy_1, n, rows),
        copy_n: rate(copy_n, n, rows),
        ours_cpu,
        copy_cpu,
        profile,
    };
    let db = keep.ok_or_else(|| anyhow::anyhow!("no sink run (repeat = 0?)"))?;
    Ok((results, db))
}

/// Per-stage timers on one thread over the whole dataset.
fn profile(data: &Dataset, run: &SinkRun) -> Profile {
    let max = orders_domain::validation::DEFAULT_MAX_MESSAGE_BYTES;
    let t = Instant::now();
    let mut ok = 0usize;
    for p in &data.payloads {
        ok += usize::from(orders_domain::decode_order(Some(p), max).is_ok());
    }
    let decode_validate = t.elapsed();
    assert_eq!(ok, data.payloads.len(), "generated orders are valid");
    let t = Instant::now();
    for o in &data.orders {
        std::hint::black_box(orders_domain::validate_order(o).is_ok());
    }
    let validate = t.elapsed();
    let t = Instant::now();
    let mut bytes = 0usize;
    for p in &data.payloads {
        let message = ReceivedMessage::new(p.clone(), UnknownFields::Keep);
        bytes += message.to_json().map_or(0, |j| j.json().len());
    }
    std::hint::black_box(bytes);
    let first_read_json = t.elapsed();
    Profile {
        cpu_secs: run.cpu,
        wall_secs: run.wall.as_secs_f64(),
        decode_validate_secs: decode_validate.as_secs_f64(),
        validate_secs: validate.as_secs_f64(),
        first_read_json_secs: first_read_json.as_secs_f64(),
        prepare_secs: run.prepare.as_secs_f64(),
        store_secs: run.store.as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::{Variant, round_in_words};

    /// The report's sentence on the round order comes from the order itself.
    #[test]
    fn the_report_names_the_round_order_as_it_runs() {
        assert_eq!(
            round_in_words(3),
            "COPY (1 stream), COPY (3 streams), ours, ours as a replica and naive"
        );
    }

    /// Every round runs each variant once, ours right beside COPY (n streams) and the replica
    /// (the two it is compared with), and which of each pair goes first alternates.
    #[test]
    fn ours_runs_beside_the_variants_it_is_compared_with_and_the_first_of_each_pair_alternates() {
        let at = |order: &[Variant], v: Variant| order.iter().position(|&x| x == v).unwrap();
        for round in 0..4 {
            let order = Variant::round(round);
            for v in Variant::ROUND {
                assert_eq!(order.iter().filter(|&&x| x == v).count(), 1, "{v:?} once");
            }
            let ours = at(&order, Variant::Ours);
            for pair in [Variant::CopyN, Variant::Replica] {
                assert_eq!(at(&order, pair).abs_diff(ours), 1, "{pair:?} beside ours");
            }
            let copy_first = at(&order, Variant::CopyN) < ours;
            assert_eq!(copy_first, round % 2 == 0, "round {round}");
        }
    }
}
