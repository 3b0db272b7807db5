use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use orders_domain::{
    Chain, Fence, FetchedBatch, IngestService, OrderSource, PartitionLeases, Position, RecordMark,
    RejectReason, Rejection, RepositoryError, SourceError, StartOffset, StoreBatch, StoreOutcome,
};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::Instrument;

mod leased;

use crate::error::{FetchFailed, UndecodableBatch, chain, find_cause};
use crate::metrics::ConsumerMetrics;

/// Timing of the consumer loops.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// How often to look for partitions added to the topic.
    pub discovery_interval: Duration,
    /// First and longest wait between retries after an error.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// With leases: how long a member stays alive (and keeps its partitions) after its last
    /// heartbeat. Heartbeats come every fifth of it.
    pub lease_ttl: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            discovery_interval: Duration::from_secs(10),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            lease_ttl: Duration::from_secs(5),
        }
    }
}

impl ConsumerConfig {
    /// Time between heartbeats: a fifth of the lease, so that four can be missed.
    pub fn heartbeat_interval(&self) -> Duration {
        (self.lease_ttl / 5).max(Duration::from_millis(50))
    }
}

/// The partitions a consumer owns now, shared with whoever reports on it (`/readyz`).
#[derive(Debug, Clone, Default)]
pub struct Assignment {
    inner: Arc<RwLock<AssignmentState>>,
}

#[derive(Debug, Default)]
struct AssignmentState {
    member_id: Option<String>,
    owned: BTreeMap<i32, Option<i64>>,
    members: usize,
}

impl Assignment {
    /// Partitions owned now, each with its lease epoch (`None`: consumed without a lease).
    pub fn owned(&self) -> Vec<(i32, Option<i64>)> {
        self.read(|s| s.owned.iter().map(|(p, e)| (*p, *e)).collect())
    }
    /// This consumer's member id, when it consumes under leases.
    pub fn member_id(&self) -> Option<String> {
        self.read(|s| s.member_id.clone())
    }
    /// Live members at the last heartbeat (0 before the first, or without leases).
    pub fn members(&self) -> usize {
        self.read(|s| s.members)
    }
    fn read<T>(&self, f: impl FnOnce(&AssignmentState) -> T) -> T {
        f(&self
            .inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }
    fn write(&self, f: impl FnOnce(&mut AssignmentState)) {
        f(&mut self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    }
}

/// Consumes every partition of the source's topic into the ingest use case.
#[derive(Debug, Clone)]
pub struct Consumer {
    source: Arc<dyn OrderSource>,
    ingest: IngestService,
    metrics: Option<ConsumerMetrics>,
    config: ConsumerConfig,
    leases: Option<Arc<dyn PartitionLeases>>,
    assignment: Assignment,
    /// Woken when another member joins or releases leases: rebalance now rather than on the
    /// next heartbeat.
    nudge: Option<Arc<tokio::sync::Notify>>,
}

/// Exponential backoff that resets on success.
struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    fn new(c: &ConsumerConfig) -> Self {
        Self {
            min: c.backoff_min,
            max: c.backoff_max,
            current: c.backoff_min,
        }
    }
    fn next(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        d
    }
    fn reset(&mut self) {
        self.current = self.min;
    }
}

/// Sleeps unless shutdown comes first; returns false on shutdown.
async fn pause(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    let stopped = tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown.wait_for(|s| *s) => true,
    };
    !stopped && !*shutdown.borrow()
}

impl Consumer {
    pub fn new(
        source: Arc<dyn OrderSource>,
        ingest: IngestService,
        config: ConsumerConfig,
    ) -> Self {
        Self {
            source,
            ingest,
            metrics: None,
            config,
            leases: None,
            assignment: Assignment::default(),
            nudge: None,
        }
    }

    pub fn with_metrics(mut self, metrics: ConsumerMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Shares the topic with other replicas: this consumer takes only the partitions whose
    /// lease it holds, a fair share of them (see [`orders_domain::fair_share`]), and every
    /// batch commits only while its lease is current. Without leases it consumes every
    /// partition (one replica).
    pub fn with_leases(mut self, leases: Arc<dyn PartitionLeases>) -> Self {
        self.assignment
            .write(|s| s.member_id = Some(leases.member_id().to_owned()));
        self.leases = Some(leases);
        self
    }

    /// Keeps `assignment` up to date with the partitions this consumer owns (call before
    /// [`Self::with_leases`]).
    pub fn reporting_to(mut self, assignment: Assignment) -> Self {
        self.assignment = assignment;
        self
    }

    /// With leases: `nudge` is notified when the membership changed elsewhere (a member joined
    /// or released leases), and the consumer rebalances at once.
    pub fn woken_by(mut self, nudge: Arc<tokio::sync::Notify>) -> Self {
        self.nudge = Some(nudge);
        self
    }

    /// The partitions this consumer owns, kept up to date while it runs.
    pub fn assignment(&self) -> Assignment {
        self.assignment.clone()
    }

    /// Runs until `shutdown` turns true: discovers partitions (again every
    /// `discovery_interval`) and runs one independent loop per partition. On shutdown each loop
    /// finishes the batch transaction it is in (commit or rollback, never half) and stops.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        match self.leases.clone() {
            Some(leases) => self.run_leased(leases, shutdown).await,
            None => self.run_all(shutdown).await,
        }
    }

    /// Every partition, without leases.
    async fn run_all(self, mut shutdown: watch::Receiver<bool>) {
        let topic = self.source.topic().to_owned();
        let mut tasks = JoinSet::new();
        let mut running: HashMap<i32, ()> = HashMap::new();
        let mut backoff = Backoff::new(&self.config);
        loop {
            if *shutdown.borrow() {
                break;
            }
            let wait = match self.source.partitions().await {
                Ok(partitions) => {
                    backoff.reset();
                    for p in partitions {
                        if running.insert(p, ()).is_none() {
                            tracing::info!(%topic, partition = p, "consuming partition");
                            let this = self.clone();
                            let rx = shutdown.clone();
                            let span = tracing::info_span!("partition", %topic, partition = p);
                            self.assignment.write(|s| {
                                s.owned.insert(p, None);
                            });
                            if let Some(m) = &self.metrics {
                                m.partitions_owned.set(running.len() as i64);
                            }
                            tasks.spawn(
                                async move { this.run_partition(p, None, rx).await }
                                    .instrument(span),
                            );
                        }
                    }
                    self.config.discovery_interval
                }
                Err(SourceError::UnknownTopic(t)) => {
                    tracing::error!(topic = %t, "topic does not exist; create it (or start with --create-topic in development); retrying");
                    self.count_error("unknown_topic");
                    backoff.next().max(Duration::from_secs(1))
                }
                Err(e) => {
                    tracing::warn!(error = %chain(&e), "cannot list partitions; retrying");
                    self.count_error("broker");
                    backoff.next()
                }
            };
            if !pause(wait, &mut shutdown).await {
                break;
            }
        }
        while let Some(res) = tasks.join_next().await {
            if let Err(e) = res {
                tracing::error!(error = %e, "partition task failed");
            }
        }
        tracing::info!(%topic, "consumer stopped");
    }

    fn count_reset(&self, reason: &str) {
        if let Some(m) = &self.metrics {
            m.offset_resets.with_label_values(&[reason]).inc();
        }
    }

    fn count_error(&self, kind: &str) {
        if let Some(m) = &self.metrics {
            m.errors.with_label_values(&[kind]).inc();
        }
    }

    /// Where to start, and the stored offset the first commit must replace (its fence):
    /// retried until the database and broker answer. `None` on shutdown.
    async fn resolve_start(
        &self,
        partition: i32,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<(i64, Option<i64>)> {
        let topic = self.source.topic();
        let mut backoff = Backoff::new(&self.config);
        loop {
            let repo = self.ingest.repository();
            let stored =
                match futures::try_join!(repo.stored_offsets(topic), repo.offset_marks(topic)) {
                    Ok((offsets, marks)) => (
                        offsets.get(&partition).copied(),
                        marks.get(&partition).copied(),
                    ),
                    Err(e) => {
                        tracing::warn!(error = %Chain(&e), "cannot read stored offsets; retrying");
                        self.count_error("database");
                        if !pause(backoff.next(), shutdown).await {
                            return None;
                        }
                        continue;
                    }
                };
            let (stored, mark) = stored;
            match self.source.start_offset(partition, stored, mark).await {
                Ok(start) => {
                    match start {
                        StartOffset::Stored(o) => {
                            tracing::info!(offset = o, "resuming at the stored offset")
                        }
                        StartOffset::Earliest(o) => {
                            tracing::info!(offset = o, "no stored offset; starting at the earliest")
                        }
                        StartOffset::Reset { stored, earliest } => {
                            tracing::warn!(
                                stored,
                                earliest,
                                "stored offset is no longer in the log (retention?); restarting at the earliest available offset"
                            );
                            self.count_reset("retention");
                        }
                        StartOffset::Recreated { stored, earliest } => {
                            tracing::warn!(
                                stored,
                                earliest,
                                "the record at the stored position is another one: the topic was re-created or its log truncated; restarting at the earliest offset of the new log"
                            );
                            self.count_reset("recreated");
                        }
                    }
                    return Some((start.offset(), stored));
                }
                Err(e) => {
                    tracing::warn!(error = %chain(&e), "cannot resolve the start offset; retrying");
                    self.count_error("broker");
                    if !pause(backoff.next(), shutdown).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Consumes one partition until `shutdown` (its stop signal) turns true, or until its
    /// lease (`epoch`) is found lost.
    async fn run_partition(
        self,
        partition: i32,
        epoch: Option<i64>,
        mut shutdown: watch::Receiver<bool>,
    ) -> PartitionEnd {
        let mut fills = CacheFill::default();
        let end = self
            .consume_partition(partition, epoch, &mut fills, &mut shutdown)
            .await;
        // The partition's committed orders are all in the cache before it is given up.
        fills.wait().await;
        end
    }

    async fn consume_partition(
        &self,
        partition: i32,
        epoch: Option<i64>,
        fills: &mut CacheFill,
        shutdown: &mut watch::Receiver<bool>,
    ) -> PartitionEnd {
        let label = partition.to_string();
        'resolve: loop {
            let Some((mut offset, mut committed)) = self.resolve_start(partition, shutdown).await
            else {
                return PartitionEnd::Stopped;
            };
            let mut backoff = Backoff::new(&self.config);
            // The fetch of the next batch, started while the previous one was being stored.
            let mut ahead: Option<Fetch<'_>> = None;
            // The batch `ahead` holds, prepared (decoded, validated) on another task while the
            // previous batch was stored, so that the database waits less between batches.
            let mut ahead_prepared: Option<JoinHandle<StoreBatch>> = None;
            loop {
                let fetch = ahead
                    .take()
                    .unwrap_or_else(|| self.source.fetch(partition, offset));
                // Shutdown first: the batch fetched ahead is often ready already, and an
                // unbiased select would then start storing it half the time after a stop.
                let fetched = tokio::select! {
                    biased;
                    _ = shutdown.wait_for(|s| *s) => return PartitionEnd::Stopped,
                    r = fetch => r,
                };
                let batch = match fetched {
                    Ok(b) => b,
                    Err(SourceError::OffsetOutOfRange { .. }) => {
                        tracing::warn!(offset, "offset out of range; resolving the start again");
                        continue 'resolve;
                    }
                    Err(e) => {
                        if let Some(bad) = find_cause::<UndecodableBatch>(&e) {
                            let fence = Fence {
                                expected: committed,
                                lease_epoch: epoch,
                            };
                            match self.pass_undecodable(bad, fence, shutdown).await {
                                Committed::Stored => {
                                    offset = bad.last_offset.saturating_add(1);
                                    committed = Some(offset);
                                    backoff.reset();
                                    self.set_next_offset(&label, offset);
                                    continue;
                                }
                                Committed::Fenced => continue 'resolve,
                                Committed::LeaseLost => return PartitionEnd::LeaseLost,
                                Committed::Stopped | Committed::Refused(_) => {
                                    return PartitionEnd::Stopped;
                                }
                            }
                        }
                        if let (Some(m), Some(high_watermark)) = (
                            &self.metrics,
                            find_cause::<FetchFailed>(&e).and_then(|f| f.high_watermark),
                        ) {
                            m.lag
                                .with_label_values(&[&label])
                                .set(high_watermark - offset);
                        }
                        tracing::warn!(offset, error = %chain(&e), "fetch failed; retrying");
                        self.count_error("broker");
                        if !pause(backoff.next(), shutdown).await {
                            return PartitionEnd::Stopped;
                        }
                        continue;
                    }
                };
                let prepared_early = ahead_prepared.take();
                backoff.reset();
                if let Some(m) = &self.metrics {
                    m.lag
                        .with_label_values(&[&label])
                        .set(batch.high_watermark - batch.next_offset);
                }
                // A fetch of only transaction markers or aborted records has no records but
                // moves the offset: that is stored too, or a restart would read them again
                // (and the stored offset would never reach the high watermark).
                if batch.records.is_empty() && batch.next_offset <= offset {
                    continue;
                }
                let next = batch.next_offset;
                // Fetch the next batch while this one is stored, so that the broker and the
                // database work at the same time. Nothing is committed out of order: the
                // fetched batch is only stored after this one. Once fetched, a batch is stored
                // before shutdown is honoured: it commits or (on shutdown during a retry wait)
                // is dropped uncommitted, never half-stored.
                let mut next_fetch = self.source.fetch(partition, next);
                let mut next_result = None;
                let fence = Fence {
                    expected: committed,
                    lease_epoch: epoch,
                };
                let store = self.store(batch, fence, prepared_early, fills, shutdown);
                tokio::pin!(store);
                let stored = loop {
                    tokio::select! {
                        ok = &mut store => break ok,
                        r = &mut next_fetch, if next_result.is_none() => {
                            if let Ok(b) = &r
                                && !b.records.is_empty()
                            {
                                // Prepared for the fence it will have if this batch commits;
                                // otherwise it is dropped with the fetch.
                                let fence = Fence {
                                    expected: Some(next),
                                    lease_epoch: epoch,
                                };
                                ahead_prepared = Some(self.prepare_ahead(b.clone(), fence));
                            }
                            next_result = Some(r);
                        }
                    }
                };
                match stored {
                    Committed::Stored => {}
                    // Another writer moved the offset: where this loop stands is stale.
                    Committed::Fenced => continue 'resolve,
                    Committed::LeaseLost => return PartitionEnd::LeaseLost,
                    Committed::Stopped | Committed::Refused(_) => return PartitionEnd::Stopped,
                }
                offset = next;
                committed = Some(next);
                ahead = Some(match next_result {
                    Some(r) => Box::pin(std::future::ready(r)),
                    None => next_fetch,
                });
                self.set_next_offset(&label, offset);
            }
        }
    }

    /// `IngestService::prepare` on a task of its own (a clone of the batch: its records are
    /// shared buffers).
    fn prepare_ahead(&self, batch: FetchedBatch, fence: Fence) -> JoinHandle<StoreBatch> {
        let ingest = self.ingest.clone();
        let topic = self.source.topic().to_owned();
        tokio::spawn(async move { ingest.prepare(&topic, batch, fence) })
    }

    fn set_next_offset(&self, label: &str, offset: i64) {
        if let Some(m) = &self.metrics {
            m.next_offset.with_label_values(&[label]).set(offset);
        }
    }

    /// Records a batch the source cannot decode as one `undecodable` rejection, in the same
    /// transaction as the offset past it. Returns that offset, or `None` on shutdown.
    async fn pass_undecodable(
        &self,
        bad: &UndecodableBatch,
        fence: Fence,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Committed {
        let topic = self.source.topic();
        let records = bad
            .last_offset
            .saturating_sub(bad.first_offset)
            .saturating_add(1);
        tracing::warn!(
            first_offset = bad.first_offset,
            last_offset = bad.last_offset,
            reason = %bad.reason,
            "record batch cannot be decoded; recording it as rejected and moving past it"
        );
        let next_offset = bad.last_offset.saturating_add(1);
        let prepared = StoreBatch {
            topic: topic.to_owned(),
            orders: vec![],
            rejections: vec![Rejection::new(
                Position {
                    topic: topic.into(),
                    partition: bad.partition,
                    offset: bad.first_offset,
                },
                RejectReason::Undecodable,
                &format!(
                    "offsets {}..={} ({records} record{}): {}",
                    bad.first_offset,
                    bad.last_offset,
                    if records == 1 { "" } else { "s" },
                    bad.reason
                ),
                None,
            )],
            offsets: vec![orders_domain::PartitionOffset {
                partition: bad.partition,
                next_offset,
                expected: fence.expected,
                mark: None,
                lease_epoch: fence.lease_epoch,
            }],
            superseded_rejections: vec![],
        };
        let span = tracing::info_span!(
            "batch",
            first_offset = bad.first_offset,
            records,
            next_offset
        );
        let mut backoff = Backoff::new(&self.config);
        loop {
            match self.commit(&prepared, &span, shutdown, |_| {}).await {
                end @ (Committed::Stored
                | Committed::Stopped
                | Committed::Fenced
                | Committed::LeaseLost) => return end,
                Committed::Refused(_) => {
                    // Nothing smaller to isolate: retry, loudly, without moving the offset.
                    tracing::error!(parent: &span, "the store refuses to record a rejection");
                    if !pause(backoff.next(), shutdown).await {
                        return Committed::Stopped;
                    }
                }
            }
        }
    }

    /// Commits one prepared batch, retrying transient failures. `stored` gets the outcome of
    /// the commit that succeeded.
    async fn commit(
        &self,
        prepared: &StoreBatch,
        span: &tracing::Span,
        shutdown: &mut watch::Receiver<bool>,
        stored: impl FnOnce(StoreOutcome),
    ) -> Committed {
        let mut backoff = Backoff::new(&self.config);
        loop {
            let started = Instant::now();
            match self
                .ingest
                .store_uncached(prepared)
                .instrument(span.clone())
                .await
            {
                Ok((report, outcome)) => {
                    if let Some(m) = &self.metrics {
                        m.commit_seconds.observe(started.elapsed().as_secs_f64());
                        m.batches.inc();
                        m.ingested.inc_by(report.stored as u64);
                        for (reason, n) in &report.rejected {
                            m.rejected
                                .with_label_values(&[reason.as_str()])
                                .inc_by(*n as u64);
                        }
                    }
                    tracing::debug!(parent: span, stored = report.stored, "batch committed");
                    stored(outcome);
                    return Committed::Stored;
                }
                Err(RepositoryError::Fenced { .. }) => {
                    tracing::warn!(parent: span, "the partition's offset was moved by another writer; dropping the batch and re-reading where the partition stands");
                    if let Some(m) = &self.metrics {
                        m.fenced.inc();
                    }
                    return Committed::Fenced;
                }
                Err(RepositoryError::LeaseLost { .. }) => {
                    tracing::warn!(parent: span, "this replica's lease on the partition lapsed and the partition was given to another; dropping the batch and giving the partition up");
                    if let Some(m) = &self.metrics {
                        m.fenced.inc();
                    }
                    return Committed::LeaseLost;
                }
                Err(RepositoryError::Constraint(detail)) => {
                    tracing::warn!(parent: span, %detail, "store refused the batch; isolating the message");
                    self.count_error("constraint");
                    return Committed::Refused(detail);
                }
                Err(e) => {
                    tracing::warn!(parent: span, error = %Chain(&e), "storing the batch failed; retrying without moving the offset");
                    self.count_error("database");
                    if !pause(backoff.next(), shutdown).await {
                        return Committed::Stopped;
                    }
                }
            }
        }
    }

    /// Stores one fetched batch, retrying transient failures. A batch the store refuses for
    /// its content is split in halves until the refused message is alone; that one is then
    /// recorded as `storage_refused` so that it neither blocks the partition nor gets lost.
    /// `committed` is the stored offset the batch moves on from (its fence). Ends `Stored`,
    /// `Stopped` (shutdown during a retry wait) or `Fenced`; in the last two, the part of the
    /// batch not yet committed is dropped.
    ///
    /// `early`: the batch prepared ahead (for `fence`), if it was. The new orders of each
    /// committed part go into the cache on a task of their own (`fills`), so that the next
    /// batch's commit need not wait for them.
    async fn store(
        &self,
        batch: FetchedBatch,
        fence: Fence,
        mut early: Option<JoinHandle<StoreBatch>>,
        fills: &mut CacheFill,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Committed {
        let epoch = fence.lease_epoch;
        // (batch, Some(reason)) = a single message the store refused, to record as rejected.
        let mut pending: Vec<(FetchedBatch, Option<String>)> = vec![(batch, None)];
        // The stored offset each part moves on from: parts commit in offset order.
        let mut committed = fence.expected;
        // Waits between attempts to record a rejection the store keeps refusing.
        let mut backoff = Backoff::new(&self.config);
        while let Some((batch, refused_detail)) = pending.pop() {
            let span = tracing::info_span!(
                "batch",
                first_offset = batch.records.first().map(|r| r.offset),
                records = batch.records.len(),
                next_offset = batch.next_offset
            );
            let part_fence = Fence {
                expected: committed,
                lease_epoch: epoch,
            };
            let ready = match early.take() {
                Some(handle) => match handle.await {
                    Ok(p) if fenced_as(&p, part_fence) => Some(p),
                    Ok(_) => None,
                    Err(e) => {
                        tracing::error!(parent: &span, error = %e, "preparing the batch ahead failed; preparing it again");
                        None
                    }
                },
                None => None,
            };
            let prepared = match &refused_detail {
                None => ready.unwrap_or_else(|| {
                    self.ingest
                        .prepare(self.source.topic(), batch.clone(), part_fence)
                }),
                Some(detail) => refused_store_batch(
                    self.source.topic(),
                    &batch,
                    detail,
                    Fence {
                        expected: committed,
                        lease_epoch: epoch,
                    },
                ),
            };
            let mut outcome = None;
            match self
                .commit(&prepared, &span, shutdown, |o| outcome = Some(o))
                .await
            {
                Committed::Stored => {
                    committed = Some(batch.next_offset);
                    if let Some(outcome) = outcome {
                        fills.start(&self.ingest, prepared, outcome).await;
                    }
                }
                end @ (Committed::Stopped | Committed::Fenced | Committed::LeaseLost) => {
                    return end;
                }
                Committed::Refused(detail) => {
                    if batch.records.len() > 1 {
                        let (first, second) = split(batch);
                        // Stack: the first half is stored first, keeping offsets in order.
                        pending.push((second, None));
                        pending.push((first, None));
                    } else if refused_detail.is_none() {
                        pending.push((batch, Some(detail)));
                    } else {
                        // Even the rejection was refused: nothing sensible left but to
                        // retry, loudly, without moving the offset.
                        tracing::error!(parent: &span, "the store refuses to record a rejection");
                        if !pause(backoff.next(), shutdown).await {
                            return Committed::Stopped;
                        }
                        pending.push((batch, refused_detail));
                    }
                }
            }
        }
        Committed::Stored
    }
}

/// Whether `batch` was prepared for `fence` (a batch prepared ahead assumed the batch before
/// it would commit).
fn fenced_as(batch: &StoreBatch, fence: Fence) -> bool {
    batch
        .offsets
        .iter()
        .all(|o| o.expected == fence.expected && o.lease_epoch == fence.lease_epoch)
}

/// A partition's cache fill: the new orders of its last committed batch, put into the cache
/// on a task of their own while the partition's next batch is stored. The cache only ever
/// sees committed orders; a read that comes before its order's fill finds it in the database.
#[derive(Default)]
struct CacheFill(Option<JoinHandle<()>>);

impl CacheFill {
    /// Starts the fill of a committed batch, after the previous one has finished (it had the
    /// whole commit to do so): fills never pile up.
    async fn start(&mut self, ingest: &IngestService, batch: StoreBatch, outcome: StoreOutcome) {
        self.wait().await;
        if batch.orders.is_empty() {
            return;
        }
        let ingest = ingest.clone();
        self.0 = Some(tokio::spawn(async move {
            ingest.cache_stored(&batch, &outcome);
        }));
    }

    async fn wait(&mut self) {
        if let Some(fill) = self.0.take()
            && let Err(e) = fill.await
        {
            tracing::error!(error = %e, "caching a committed batch failed");
        }
    }
}

/// How a commit ended.
enum Committed {
    Stored,
    /// The store refused the batch for its content (the detail says why).
    Refused(String),
    /// Shutdown came during a retry wait; nothing was committed.
    Stopped,
    /// The stored offset was not the one this loop read: another writer moved it. Nothing
    /// was committed; re-read where the partition stands.
    Fenced,
    /// The lease this loop consumes under is no longer current. Nothing was committed; the
    /// partition belongs to another replica now.
    LeaseLost,
}

/// Why a partition loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PartitionEnd {
    /// Asked to stop (shutdown or rebalance); the batch in flight was committed or dropped.
    Stopped,
    /// Its lease was found lost.
    LeaseLost,
}

/// A fetch in flight (what the source's async-trait `fetch` returns).
type Fetch<'a> = Pin<Box<dyn Future<Output = Result<FetchedBatch, SourceError>> + Send + 'a>>;

fn split(batch: FetchedBatch) -> (FetchedBatch, FetchedBatch) {
    let mut records = batch.records;
    let second = records.split_off(records.len() / 2);
    let mid = second.first().map_or(batch.next_offset, |r| r.offset);
    (
        FetchedBatch {
            partition: batch.partition,
            records,
            next_offset: mid,
            high_watermark: batch.high_watermark,
        },
        FetchedBatch {
            partition: batch.partition,
            records: second,
            ..batch
        },
    )
}

/// The batch's messages recorded as `storage_refused` rejections, with the next offset.
fn refused_store_batch(
    topic: &str,
    batch: &FetchedBatch,
    detail: &str,
    fence: Fence,
) -> StoreBatch {
    StoreBatch {
        topic: topic.to_owned(),
        orders: vec![],
        rejections: batch
            .records
            .iter()
            .map(|r| {
                Rejection::new(
                    Position {
                        topic: topic.into(),
                        partition: batch.partition,
                        offset: r.offset,
                    },
                    RejectReason::StorageRefused,
                    detail,
                    r.value.clone(),
                )
            })
            .collect(),
        offsets: vec![orders_domain::PartitionOffset {
            partition: batch.partition,
            next_offset: batch.next_offset,
            expected: fence.expected,
            mark: batch.records.last().map(RecordMark::of),
            lease_epoch: fence.lease_epoch,
        }],
        superseded_rejections: vec![],
    }
}
