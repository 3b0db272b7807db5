//! The ingest use case: raw messages in, orders and rejections stored with the next offset in
//! one repository call, then the committed orders into the cache.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use crate::error::RepositoryError;
use crate::model::{Order, Text};
use crate::order_json::{CachedOrder, ReceivedMessage};
use crate::ports::{
    AcceptedOrder, Fence, FetchedBatch, OrderCache, OrderRepository, PartitionOffset, Position,
    RecordMark, RejectedFilter, Rejection, StoreBatch, StoreOutcome,
};
use crate::unknown::UnknownFields;
use crate::validation::{DEFAULT_MAX_MESSAGE_BYTES, RejectReason, decode_order_with};

/// Default bound on a rejected payload kept whole: well above the default
/// `MAX_MESSAGE_BYTES`, so that raising that limit and replaying `oversize` rows still works.
pub const DEFAULT_REJECTED_PAYLOAD_MAX_BYTES: usize = 16 * 1024 * 1024;

/// What one ingest step did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Orders newly stored.
    pub stored: usize,
    /// Messages rejected, by reason (duplicates included).
    pub rejected: BTreeMap<RejectReason, usize>,
    /// Offsets committed with the batch.
    pub offsets: Vec<PartitionOffset>,
}

/// What a replay of rejected messages did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    pub examined: usize,
    pub stored: usize,
    pub duplicates: usize,
    pub still_rejected: usize,
    /// Valid orders the store refused (a storage constraint): left as they were, counted in
    /// `still_rejected` too.
    pub refused: usize,
}

/// Halves of a replay batch; its orders and superseded ids are index-aligned.
fn split_replay(mut batch: StoreBatch) -> (StoreBatch, StoreBatch) {
    let mid = batch.orders.len() / 2;
    let second = StoreBatch {
        topic: batch.topic.clone(),
        orders: batch.orders.split_off(mid),
        superseded_rejections: batch.superseded_rejections.split_off(mid),
        ..StoreBatch::default()
    };
    (batch, second)
}

/// Told what ingestion stored, for metrics; the adapter decides how to count (and how to
/// bound its labels: the names come from producers).
pub trait IngestObserver: Send + Sync + std::fmt::Debug {
    /// An order was stored with fields the model does not know: the path of each, once
    /// (`loyalty_points`, `delivery.floor`, `items[].gift_wrap`: items are not told apart).
    fn stored_with_unknown_fields(&self, paths: &[String]);
}

/// The paths of an order's unknown fields, each once, as [`IngestObserver`] gets them.
pub fn unknown_field_paths(order: &Order) -> Vec<String> {
    let mut paths: Vec<String> = Vec::new();
    let mut add = |p: String| {
        if !paths.contains(&p) {
            paths.push(p);
        }
    };
    order.extra.iter().for_each(|(k, _)| add(k.to_owned()));
    order
        .delivery
        .extra
        .iter()
        .for_each(|(k, _)| add(format!("delivery.{k}")));
    order
        .payment
        .extra
        .iter()
        .for_each(|(k, _)| add(format!("payment.{k}")));
    for item in &order.items {
        item.extra
            .iter()
            .for_each(|(k, _)| add(format!("items[].{k}")));
    }
    paths
}

/// Rejected rows replayed per transaction.
const REPLAY_PAGE: usize = 500;

/// Sorts messages into orders and rejections and stores them atomically.
#[derive(Debug, Clone)]
pub struct IngestService {
    repo: Arc<dyn OrderRepository>,
    cache: Arc<dyn OrderCache>,
    max_message_bytes: usize,
    rejected_payload_max_bytes: usize,
    unknown_fields: UnknownFields,
    observer: Option<Arc<dyn IngestObserver>>,
}

impl IngestService {
    pub fn new(repo: Arc<dyn OrderRepository>, cache: Arc<dyn OrderCache>) -> Self {
        Self {
            repo,
            cache,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            rejected_payload_max_bytes: DEFAULT_REJECTED_PAYLOAD_MAX_BYTES,
            unknown_fields: UnknownFields::default(),
            observer: None,
        }
    }

    /// What to do with fields the model does not know (default: keep them).
    pub fn with_unknown_fields(mut self, policy: UnknownFields) -> Self {
        self.unknown_fields = policy;
        self
    }

    pub fn unknown_fields(&self) -> UnknownFields {
        self.unknown_fields
    }

    /// Told about stored orders, for metrics.
    pub fn with_observer(mut self, observer: Arc<dyn IngestObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Rejected payloads over this many bytes are kept as an excerpt with size and digest.
    pub fn with_rejected_payload_max_bytes(mut self, max: usize) -> Self {
        self.rejected_payload_max_bytes = max;
        self
    }

    /// Messages over this many bytes are rejected as `oversize` before parsing.
    pub fn with_max_message_bytes(mut self, max: usize) -> Self {
        self.max_message_bytes = max;
        self
    }

    pub fn repository(&self) -> &Arc<dyn OrderRepository> {
        &self.repo
    }

    /// Decodes and validates a fetched batch into what must be stored, moving the partition's
    /// offset from `committed` (the stored next offset this caller read; `None` when none is
    /// stored) to the batch's next offset. Pure: no I/O.
    pub fn prepare(&self, topic: &str, batch: FetchedBatch, fence: impl Into<Fence>) -> StoreBatch {
        let fence = fence.into();
        let mark = batch.records.last().map(RecordMark::of);
        let mut orders = Vec::with_capacity(batch.records.len());
        let mut rejections = Vec::new();
        // Cloned per message: inline (no allocation) for a name of up to 24 bytes.
        let topic_text = Text::from(topic);
        for msg in batch.records {
            let position = Position {
                topic: topic_text.clone(),
                partition: batch.partition,
                offset: msg.offset,
            };
            match decode_order_with(
                msg.value.as_deref(),
                self.max_message_bytes,
                self.unknown_fields,
            ) {
                Ok(order) => orders.push(AcceptedOrder {
                    order,
                    position,
                    payload: msg.value.unwrap_or_default(),
                }),
                Err(err) => rejections.push(
                    Rejection::new(position, err.reason(), &err.to_string(), msg.value)
                        .cap_payload(self.rejected_payload_max_bytes),
                ),
            }
        }
        self.reject_repeated_uids(&mut orders, &mut rejections);
        StoreBatch {
            topic: topic.to_owned(),
            orders,
            rejections,
            offsets: vec![PartitionOffset {
                partition: batch.partition,
                next_offset: batch.next_offset,
                expected: fence.expected,
                mark,
                lease_epoch: fence.lease_epoch,
            }],
            superseded_rejections: Vec::new(),
        }
    }

    /// Same uid twice in one batch: the first wins, as across batches, and each later one
    /// becomes a `duplicate` rejection. Looked for after decoding, over the orders' own uids,
    /// so that the common batch (no repeat) copies none of them.
    fn reject_repeated_uids(
        &self,
        orders: &mut Vec<AcceptedOrder>,
        rejections: &mut Vec<Rejection>,
    ) {
        // foldhash, seeded per process: uids come from producers, and SipHash cost as much as
        // the rest of this check.
        let mut seen =
            HashSet::with_capacity_and_hasher(orders.len(), foldhash::fast::RandomState::default());
        let repeats: Vec<usize> = orders
            .iter()
            .enumerate()
            .filter(|(_, a)| !seen.insert(a.order.order_uid.as_str()))
            .map(|(i, _)| i)
            .collect();
        drop(seen);
        if repeats.is_empty() {
            return;
        }
        // One pass that moves each order once: removing the repeats one by one would move the
        // rest of the vector each time, quadratic in a batch a producer filled with one uid.
        let decoded = std::mem::replace(orders, Vec::with_capacity(orders.len() - repeats.len()));
        let mut repeats = repeats.into_iter().peekable();
        for (i, accepted) in decoded.into_iter().enumerate() {
            if repeats.next_if_eq(&i).is_none() {
                orders.push(accepted);
                continue;
            }
            rejections.push(
                Rejection::new(
                    accepted.position,
                    RejectReason::Duplicate,
                    &format!(
                        "order_uid {:?} already in this batch",
                        accepted.order.order_uid
                    ),
                    Some(accepted.payload),
                )
                .cap_payload(self.rejected_payload_max_bytes),
            );
        }
        // In the order of the log, as they were read.
        rejections.sort_by_key(|r| r.position.offset);
    }

    /// Stores a prepared batch and, once committed, caches its new orders. Borrowed, so that
    /// a caller retrying after a transient failure does not copy the batch.
    pub async fn store(&self, batch: &StoreBatch) -> Result<IngestReport, RepositoryError> {
        let (report, outcome) = self.store_uncached(batch).await?;
        self.cache_stored(batch, &outcome);
        Ok(report)
    }

    /// [`Self::store`] without the cache: the caller must pass the outcome to
    /// [`Self::cache_stored`]. Lets a consumer start storing its next batch while this one's
    /// orders go into the cache.
    pub async fn store_uncached(
        &self,
        batch: &StoreBatch,
    ) -> Result<(IngestReport, StoreOutcome), RepositoryError> {
        let outcome = self.repo.store_batch(batch).await?;
        let mut rejected: BTreeMap<RejectReason, usize> = BTreeMap::new();
        for r in &batch.rejections {
            *rejected.entry(r.reason).or_default() += 1;
        }
        if !outcome.duplicates.is_empty() {
            *rejected.entry(RejectReason::Duplicate).or_default() += outcome.duplicates.len();
            for (uid, pos) in &outcome.duplicates {
                tracing::warn!(order_uid = %uid, topic = %pos.topic, partition = pos.partition,
                    offset = pos.offset, "order re-sent with a stored uid; kept the stored one");
            }
        }
        for r in &batch.rejections {
            tracing::warn!(topic = %r.position.topic, partition = r.position.partition,
                offset = r.position.offset, reason = %r.reason, detail = %r.detail,
                "message rejected");
        }
        let report = IngestReport {
            stored: outcome.stored.len(),
            rejected,
            offsets: batch.offsets.clone(),
        };
        Ok((report, outcome))
    }

    /// Caches the orders of `batch` that `outcome` (its committed store) says are new.
    pub fn cache_stored(&self, batch: &StoreBatch, outcome: &StoreOutcome) {
        // The cache only ever sees committed orders. The repository stores each uid once, so
        // as many stored uids as the batch has orders means every order was stored: the
        // common case, which then looks up none of them.
        let stored: Option<HashSet<&str>> = (outcome.stored.len() != batch.orders.len())
            .then(|| outcome.stored.iter().map(Text::as_str).collect());
        for accepted in batch.orders.iter().filter(|a| {
            stored
                .as_ref()
                .is_none_or(|s| s.contains(a.order.order_uid.as_str()))
        }) {
            // As its message: the JSON is made at its first read (see `CachedOrder`).
            let message = ReceivedMessage::new(accepted.payload.clone(), self.unknown_fields);
            self.cache
                .insert(&accepted.order.order_uid, CachedOrder::Message(message));
            if let Some(observer) = &self.observer
                && accepted.order.has_unknown_fields()
            {
                observer.stored_with_unknown_fields(&unknown_field_paths(&accepted.order));
            }
        }
    }

    /// `prepare` then `store`, from the partition's offset as stored now (for tools and tests;
    /// a consumer passes the offset it read itself to `prepare`, so that it is fenced).
    pub async fn ingest(
        &self,
        topic: &str,
        batch: FetchedBatch,
    ) -> Result<IngestReport, RepositoryError> {
        let committed = self
            .repo
            .stored_offsets(topic)
            .await?
            .get(&batch.partition)
            .copied();
        self.store(&self.prepare(topic, batch, committed)).await
    }

    /// Re-validates stored rejected payloads with the current rules. Each now-valid message
    /// becomes an order and its rejected row is deleted in the same transaction (so a replay
    /// that is interrupted and run again neither loses nor duplicates anything); the others
    /// are left as they are. Offsets do not move.
    pub async fn replay(
        &self,
        reason: Option<RejectReason>,
    ) -> Result<ReplayReport, RepositoryError> {
        let mut report = ReplayReport::default();
        // Only the rows that exist now: a duplicate found on the way is recorded as a new row,
        // which this replay must not pick up again (it would never end).
        let Some(up_to_id) = self.repo.last_rejected_id().await? else {
            return Ok(report);
        };
        let mut after_id = None;
        loop {
            let rows = self
                .repo
                .rejected(&RejectedFilter {
                    reason,
                    after_id,
                    up_to_id: Some(up_to_id),
                    limit: REPLAY_PAGE,
                })
                .await?;
            let Some(last) = rows.last() else { break };
            after_id = Some(last.id);
            report.examined += rows.len();
            // One batch per topic: a batch never mixes topics (duplicates found while storing
            // are recorded under the batch's topic).
            let mut batches: BTreeMap<String, StoreBatch> = BTreeMap::new();
            let mut seen = HashSet::new();
            for row in rows {
                if row.truncated.is_some() {
                    // Only an excerpt was kept: nothing to decode.
                    report.still_rejected += 1;
                    continue;
                }
                let Ok(order) = decode_order_with(
                    row.payload.as_deref(),
                    self.max_message_bytes,
                    self.unknown_fields,
                ) else {
                    report.still_rejected += 1;
                    continue;
                };
                if !seen.insert(order.order_uid.clone()) {
                    report.still_rejected += 1;
                    continue;
                }
                let batch = batches
                    .entry(row.position.topic.to_string())
                    .or_insert_with(|| StoreBatch {
                        topic: row.position.topic.to_string(),
                        ..StoreBatch::default()
                    });
                batch.superseded_rejections.push(row.id);
                batch.orders.push(AcceptedOrder {
                    order,
                    position: row.position,
                    payload: row.payload.unwrap_or_default(),
                });
            }
            for batch in batches.into_values() {
                self.replay_batch(batch, &mut report).await?;
            }
        }
        Ok(report)
    }

    /// Stores one replay batch. A batch the store refuses for its content is split in halves
    /// until the refused row is alone; that row is left as it is (it stays rejected) and the
    /// others are stored, so one bad row never stops a replay.
    async fn replay_batch(
        &self,
        batch: StoreBatch,
        report: &mut ReplayReport,
    ) -> Result<(), RepositoryError> {
        let mut pending = vec![batch];
        while let Some(batch) = pending.pop() {
            match self.repo.store_batch(&batch).await {
                Ok(outcome) => {
                    report.stored += outcome.stored.len();
                    report.duplicates += outcome.duplicates.len();
                }
                Err(RepositoryError::Constraint(detail)) if batch.orders.len() > 1 => {
                    tracing::debug!(%detail, rows = batch.orders.len(), "replay batch refused; splitting it");
                    let (first, second) = split_replay(batch);
                    pending.push(second);
                    pending.push(first);
                }
                Err(RepositoryError::Constraint(detail)) => {
                    let id = batch.superseded_rejections.first().copied();
                    tracing::warn!(rejected_id = ?id, %detail,
                        "the store refuses this replayed order; leaving it rejected");
                    report.refused += 1;
                    report.still_rejected += 1;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
