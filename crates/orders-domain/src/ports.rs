//! The ports: what the domain needs from the outside world. Adapters implement them; the
//! contracts below are what an adapter author must honour (the conformance suite in
//! [`crate::testing`] checks the repository's).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Serialize;

use crate::error::{RepositoryError, SourceError};
use crate::model::{Order, OrderSummary, Text};
use crate::order_json::{CachedOrder, OrderJson};
use crate::validation::RejectReason;

/// Where a message sits in the log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Position {
    pub topic: Text,
    pub partition: i32,
    pub offset: i64,
}

/// A valid order together with where it came from and its original bytes (kept so that a
/// re-send can be recorded as a `duplicate` rejection with its payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedOrder {
    pub order: Order,
    pub position: Position,
    pub payload: Bytes,
}

/// A message that is not a valid order, with the reason it was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub position: Position,
    pub reason: RejectReason,
    /// Human-readable detail, e.g. `payment.amount: must equal ...`.
    pub detail: String,
    /// The raw value (`None` for a tombstone), or only its start when `truncated` is set.
    pub payload: Option<Bytes>,
    /// Set when the message was too large to keep whole: its size and digest.
    pub truncated: Option<PayloadDigest>,
}

/// What is kept of a payload too large to store whole, beside an excerpt of its start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PayloadDigest {
    /// Size of the whole message in bytes.
    pub size: i64,
    /// SHA-256 of the whole message, lower-case hex.
    pub sha256: String,
}

/// Bytes of a too-large payload kept as its excerpt.
pub const PAYLOAD_EXCERPT_BYTES: usize = 4096;

impl Rejection {
    /// A rejection whose detail is made fit to store and show (see
    /// [`crate::validation::bounded_detail`]), with the whole payload.
    pub fn new(
        position: Position,
        reason: RejectReason,
        detail: &str,
        payload: Option<Bytes>,
    ) -> Self {
        Self {
            position,
            reason,
            detail: crate::validation::bounded_detail(detail),
            payload,
            truncated: None,
        }
    }

    /// Keeps the payload whole up to `max_bytes`; past that, only its first
    /// [`PAYLOAD_EXCERPT_BYTES`] with the whole message's size and digest.
    pub fn cap_payload(mut self, max_bytes: usize) -> Self {
        if let Some(p) = &self.payload
            && p.len() > max_bytes
        {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(p);
            self.truncated = Some(PayloadDigest {
                size: i64::try_from(p.len()).unwrap_or(i64::MAX),
                sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
            });
            self.payload = Some(p.slice(..PAYLOAD_EXCERPT_BYTES.min(max_bytes)));
        }
        self
    }
}

/// The next offset to read from a partition, and the stored one it replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffset {
    pub partition: i32,
    pub next_offset: i64,
    /// The next offset this writer read from the store (`None`: none was stored). The batch
    /// commits only if it is still the stored one (compare-and-set), so a stale or concurrent
    /// writer can never commit a position twice nor move an offset backwards.
    pub expected: Option<i64>,
    /// The last record handled, to recognise the log on the next start; `None` keeps the
    /// stored one.
    pub mark: Option<RecordMark>,
    /// The epoch of the partition's lease this writer holds (see [`PartitionLeases`]). When
    /// set, the batch commits only while that lease is still the partition's current one,
    /// and a new grant of the lease waits for the commit; `None`: no lease is checked.
    pub lease_epoch: Option<i64>,
}

/// What a batch's offset must still match for the batch to commit: the stored next offset
/// its writer read, and the lease epoch it holds (if it consumes under a lease).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fence {
    pub expected: Option<i64>,
    pub lease_epoch: Option<i64>,
}

impl From<Option<i64>> for Fence {
    /// A fence on the stored offset only.
    fn from(expected: Option<i64>) -> Self {
        Self {
            expected,
            lease_epoch: None,
        }
    }
}

/// A record's offset and a digest of its value, stored with the partition's offset. After a
/// topic is deleted and re-created (or its log truncated), offsets repeat with other
/// messages; the record now at the mark's offset tells whether the log is still the one the
/// stored offset counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordMark {
    pub offset: i64,
    pub digest: i64,
}

impl RecordMark {
    /// The mark of `msg`: its offset and the first 8 bytes of the SHA-256 of its value (a
    /// tombstone's digest is 0). Stable across versions: it is stored.
    pub fn of(msg: &RawMessage) -> Self {
        use sha2::Digest;
        let digest = msg.value.as_deref().map_or(0, |v| {
            let d = sha2::Sha256::digest(v);
            i64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
        });
        Self {
            offset: msg.offset,
            digest,
        }
    }
}

/// Everything one ingestion step writes, in one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreBatch {
    /// The topic everything in the batch comes from: its offsets, and the position of every
    /// order and rejection (a batch never mixes topics).
    pub topic: String,
    /// Valid orders, unique by `order_uid` within the batch.
    pub orders: Vec<AcceptedOrder>,
    pub rejections: Vec<Rejection>,
    pub offsets: Vec<PartitionOffset>,
    /// Ids of `rejected_messages` rows this batch supersedes (a replay); deleted in the same
    /// transaction.
    pub superseded_rejections: Vec<i64>,
}

/// What `store_batch` did with the orders of a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreOutcome {
    /// Uids of the orders that were new and are now stored.
    pub stored: Vec<Text>,
    /// Positions and uids of orders whose uid was already stored; recorded as `duplicate`
    /// rejections in the same transaction, the stored order left unchanged.
    pub duplicates: Vec<(Text, Position)>,
}

/// A row of `rejected_messages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectedMessage {
    pub id: i64,
    pub position: Position,
    pub reason: String,
    pub detail: String,
    #[serde(skip)]
    pub payload: Option<Bytes>,
    /// Set when `payload` is only the start of the message.
    pub truncated: Option<PayloadDigest>,
    pub received_at: DateTime<Utc>,
}

/// Which rejected messages to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RejectedFilter {
    pub reason: Option<RejectReason>,
    /// Only rows with an id greater than this (for paging through replays).
    pub after_id: Option<i64>,
    /// Only rows with an id up to this one (a replay's bound: the rows that existed when it
    /// started, not the ones it records itself).
    pub up_to_id: Option<i64>,
    pub limit: usize,
}

/// Where an order stands in storage order (higher = stored later): a cursor for paging
/// through [`OrderRepository::recent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StoreSeq(pub i64);

/// Orders per page of [`OrderRepository::recent_json`]'s default (warm-up's reads).
pub const WARM_PAGE: usize = 1_000;

/// A stored order as warm-up caches it: its JSON, tagged ([`OrderRepository::recent_json`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredJson {
    pub seq: StoreSeq,
    pub order_uid: String,
    pub json: OrderJson,
}

/// Durable storage of orders, rejections and consumer offsets.
#[async_trait]
pub trait OrderRepository: Send + Sync + std::fmt::Debug {
    /// Stores a whole batch atomically: all of it or, on any error, none of it (no order, no
    /// rejection, no offset moves).
    ///
    /// - Orders whose `order_uid` is not stored yet MUST be stored with their delivery, payment
    ///   and items (items keep their order).
    /// - Orders whose `order_uid` is already stored MUST NOT change anything stored for that
    ///   uid; each MUST be recorded as a rejection with reason `duplicate` and be reported in
    ///   [`StoreOutcome::duplicates`].
    /// - Rejections MUST be stored with their position, reason, detail, payload and (for a
    ///   truncated payload) digest. A rejection at a position already recorded is recorded
    ///   again: positions repeat after a topic is re-created, and no rejection is ever dropped
    ///   (fencing, below, keeps a batch from being recorded twice).
    /// - Each offset MUST replace the stored next offset of `(batch.topic, partition)`, and
    ///   only if the stored one is still `expected` (none stored when `None`); otherwise the
    ///   whole batch MUST fail with [`RepositoryError::Fenced`] and keep nothing. Two
    ///   concurrent batches with the same `expected` commit at most one.
    /// - An offset with a `lease_epoch` MUST commit only while that epoch is the partition's
    ///   current lease epoch ([`PartitionLeases`]), else the whole batch MUST fail with
    ///   [`RepositoryError::LeaseLost`] and keep nothing; a grant of that lease to another
    ///   member MUST NOT take effect while such a batch is committing.
    /// - An order breaking a storage constraint (negative money, `sale` over 100) MUST fail the
    ///   whole batch with [`RepositoryError::Constraint`].
    /// - Transient failures (connection lost, pool exhausted, deadlock) MUST be reported as
    ///   [`RepositoryError::Unavailable`] so callers retry.
    async fn store_batch(&self, batch: &StoreBatch) -> Result<StoreOutcome, RepositoryError>;

    /// The stored order with this uid, exactly as it was stored, or `None`.
    async fn get(&self, order_uid: &str) -> Result<Option<Order>, RepositoryError>;

    /// Up to `limit` orders stored before `before` (from the newest when `None`), most
    /// recently stored first, each with its [`StoreSeq`]: the last one's is the next page's
    /// `before` (keyset paging, so a page costs the same however deep it is).
    async fn recent(
        &self,
        before: Option<StoreSeq>,
        limit: usize,
    ) -> Result<Vec<(StoreSeq, Order)>, RepositoryError>;

    /// What warm-up caches: up to `limit` orders stored before `before` (from the newest when
    /// `None`), most recently stored first, as the JSON the API serves, in pages (each newest
    /// first, each older than the one before). Each order's JSON MUST be byte-identical to
    /// [`OrderJson::from_order`] of the order [`Self::get`] returns. An adapter may read pages
    /// ahead or in parallel; dropping the stream stops the reading.
    ///
    /// The default reads [`Self::recent`] pages of [`WARM_PAGE`] and serializes each order.
    fn recent_json(
        &self,
        before: Option<StoreSeq>,
        limit: usize,
    ) -> BoxStream<'_, Result<Vec<StoredJson>, RepositoryError>> {
        futures::stream::try_unfold((before, limit), move |(before, left)| async move {
            if left == 0 {
                return Ok(None);
            }
            let want = WARM_PAGE.min(left);
            let page = self.recent(before, want).await?;
            let Some((last, _)) = page.last() else {
                return Ok(None);
            };
            let next = (Some(*last), if page.len() < want { 0 } else { left - want });
            let json = page
                .into_iter()
                .map(|(seq, order)| {
                    let json = OrderJson::from_order(&order)
                        .map_err(|e| RepositoryError::other("serializing a stored order", e))?;
                    Ok(StoredJson {
                        seq,
                        order_uid: order.order_uid.into_string(),
                        json,
                    })
                })
                .collect::<Result<Vec<_>, RepositoryError>>()?;
            Ok(Some((json, next)))
        })
        .boxed()
    }

    /// Like [`Self::recent`], but only a summary of each (the same keyset paging).
    async fn recent_summaries(
        &self,
        before: Option<StoreSeq>,
        limit: usize,
    ) -> Result<Vec<(StoreSeq, OrderSummary)>, RepositoryError>;

    /// Next offset to read per partition of `topic`, as last committed by `store_batch`.
    async fn stored_offsets(&self, topic: &str) -> Result<BTreeMap<i32, i64>, RepositoryError>;

    /// The last [`RecordMark`] stored per partition of `topic` (partitions without one are
    /// absent).
    async fn offset_marks(&self, topic: &str)
    -> Result<BTreeMap<i32, RecordMark>, RepositoryError>;

    /// Rejected messages, oldest first.
    async fn rejected(
        &self,
        filter: &RejectedFilter,
    ) -> Result<Vec<RejectedMessage>, RepositoryError>;

    /// Number of rejected messages per reason.
    async fn rejected_counts(&self) -> Result<BTreeMap<String, i64>, RepositoryError>;

    /// The highest id of a rejected message (ids only grow), `None` when there is none.
    async fn last_rejected_id(&self) -> Result<Option<i64>, RepositoryError>;

    /// Cheap liveness check of the store.
    async fn ping(&self) -> Result<(), RepositoryError>;
}

/// Counters of a cache, as reported by `/cache/stats`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CacheStats {
    pub size: usize,
    pub capacity: usize,
    /// Bytes held: JSON and entity tags, or messages not read yet.
    pub bytes: usize,
    /// Most bytes the cache holds (`usize::MAX` when unbounded in bytes).
    pub max_bytes: usize,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub hit_ratio: f64,
    pub warmup_loaded: usize,
    pub warmup_millis: u64,
    pub warmed_up: bool,
}

impl Default for CacheStats {
    fn default() -> Self {
        Self {
            size: 0,
            capacity: 0,
            bytes: 0,
            // No byte bound unless an adapter sets one.
            max_bytes: usize::MAX,
            hits: 0,
            misses: 0,
            evictions: 0,
            hit_ratio: 0.0,
            warmup_loaded: 0,
            warmup_millis: 0,
            warmed_up: false,
        }
    }
}

/// Recently used orders in memory ([`CachedOrder`]): as serialized JSON with its entity tag
/// ([`OrderJson`]), so that a hit costs no serialization and no hashing, or, for an order
/// just ingested, as its message until its first read makes that JSON.
///
/// Contract: bounded (never more than `capacity` entries, nor more than `max_bytes` bytes
/// held, as [`CachedOrder::held_bytes`] counts them); `get` counts a hit or a miss; `insert` of
/// a new uid may evict per the adapter's documented policy and counts evictions, and an entry
/// larger than `max_bytes` is not cached at all; only committed orders are inserted (the use
/// cases guarantee that).
pub trait OrderCache: Send + Sync + std::fmt::Debug {
    fn get(&self, order_uid: &str) -> Option<CachedOrder>;
    /// Whether `order_uid` is cached, without counting a hit or a miss.
    fn contains(&self, order_uid: &str) -> bool;
    fn insert(&self, order_uid: &str, entry: CachedOrder);
    /// Puts `json`, made from the cached message of `order_uid`, in that message's place,
    /// where the uid is still cached as a message (otherwise nothing). The entry keeps its
    /// place in the eviction order; if the JSON is larger than the message, older entries
    /// (or, when nothing else makes room, this one) are evicted to keep the byte bound.
    fn resolve(&self, order_uid: &str, json: OrderJson);
    fn stats(&self) -> CacheStats;
    fn capacity(&self) -> usize;
    /// Most bytes held at once (JSON and tags, or messages); warm-up loads no more than this.
    fn max_bytes(&self) -> usize {
        usize::MAX
    }
    /// Records the result of the start-up warm-up.
    fn mark_warmed(&self, loaded: usize, took: Duration);
}

/// One record as read from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    pub offset: i64,
    /// `None` for a tombstone. A stored order's value is cached as it is until the order's
    /// first read, so a source gives each record a buffer of its own (a slice of a larger
    /// buffer would keep all of that alive).
    pub value: Option<Bytes>,
}

/// One fetch from one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedBatch {
    pub partition: i32,
    pub records: Vec<RawMessage>,
    /// Offset to fetch next (one past the last record returned, or the requested offset).
    pub next_offset: i64,
    /// Partition's high watermark at fetch time (for lag).
    pub high_watermark: i64,
}

/// Where a partition's consumption starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOffset {
    /// The stored offset is still in the log.
    Stored(i64),
    /// Nothing stored: the earliest offset in the log.
    Earliest(i64),
    /// The stored offset was removed by retention (or is past the end); restarting at the
    /// earliest available offset.
    Reset { stored: i64, earliest: i64 },
    /// The record at the stored mark's offset is another one: the topic was re-created or its
    /// log truncated, so the stored offset counts in a log that is gone. Restarting at the
    /// earliest offset of the new log.
    Recreated { stored: i64, earliest: i64 },
}

impl StartOffset {
    pub fn offset(self) -> i64 {
        match self {
            Self::Stored(o) | Self::Earliest(o) => o,
            Self::Reset { earliest, .. } | Self::Recreated { earliest, .. } => earliest,
        }
    }
}

/// A partitioned log of order messages.
///
/// Contract: `fetch` returns records in offset order starting at or after `offset`, never
/// commits anything itself; transient failures are [`SourceError::Unavailable`].
#[async_trait]
pub trait OrderSource: Send + Sync + std::fmt::Debug {
    fn topic(&self) -> &str;
    /// The topic's partitions now.
    async fn partitions(&self) -> Result<Vec<i32>, SourceError>;
    /// Resolves where to start on `partition` given the stored next offset and the mark of
    /// the last record handled (checked against the record now at its offset).
    async fn start_offset(
        &self,
        partition: i32,
        stored: Option<i64>,
        mark: Option<RecordMark>,
    ) -> Result<StartOffset, SourceError>;
    /// The next batch at `offset`; waits up to the adapter's max wait when there is nothing.
    async fn fetch(&self, partition: i32, offset: i64) -> Result<FetchedBatch, SourceError>;
}

/// A lease on one partition, held by one member at a time. `epoch` grows with every grant and
/// release: a writer's epoch is current only while its lease is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PartitionLease {
    pub partition: i32,
    pub epoch: i64,
}

/// One heartbeat's view of a topic's consumers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    /// Ids of the live members (this one included), sorted.
    pub members: Vec<String>,
    /// The leases this member holds now.
    pub held: Vec<PartitionLease>,
}

/// Partition assignment among the replicas consuming one topic: members that heartbeat, and
/// one lease per partition. A member is alive until `ttl` after its last heartbeat (measured
/// on the store's clock); the leases of a member that is not alive are free to claim.
///
/// Contract: at most one member holds a partition's lease at a time; every grant and release
/// changes its epoch; `claim` takes only free leases (unowned, or owned by a member that is
/// not alive) and never one whose commit is in flight.
#[async_trait]
pub trait PartitionLeases: Send + Sync + std::fmt::Debug {
    /// This member's id (unique among the topic's members).
    fn member_id(&self) -> &str;
    /// Marks this member alive for `ttl` from now, records the topic's `partitions`, and
    /// returns the live members and this member's leases.
    async fn heartbeat(
        &self,
        topic: &str,
        partitions: &[i32],
        ttl: Duration,
    ) -> Result<Membership, RepositoryError>;
    /// Claims up to `n` free leases of `topic` (lowest partitions first); returns the new ones.
    async fn claim(&self, topic: &str, n: usize) -> Result<Vec<PartitionLease>, RepositoryError>;
    /// Gives a lease up (its partition's loop has stopped). A lease no longer held is ignored.
    async fn release(&self, topic: &str, lease: PartitionLease) -> Result<(), RepositoryError>;
    /// Releases every lease of this member and leaves the topic's members.
    async fn leave(&self, topic: &str) -> Result<(), RepositoryError>;
}

/// How many of `partitions` the member `me` should hold among the live `members` (sorted):
/// each holds the floor or the ceiling of `partitions / members`, the first ones in sorted
/// order the ceiling. Every member computes the same split from the same membership. A
/// member that is not in the list (not registered yet) gets none.
pub fn fair_share(members: &[String], me: &str, partitions: usize) -> usize {
    let Some(i) = members.iter().position(|m| m == me) else {
        return 0;
    };
    let n = members.len();
    partitions / n + usize::from(i < partitions % n)
}
