//! The batch transaction: orders, their children by binary `COPY`, rejections, and the
//! offsets by compare-and-set (last when the orders go in by COPY, first when by INSERT; see
//! [`advance_offsets`]).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use deadpool_postgres::Object;
use orders_domain::{AcceptedOrder, RejectReason, RepositoryError, StoreBatch, StoreOutcome, Text};
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use super::copy::CopyRows;
use crate::error::map_pg;

const INSERT_ORDERS: &str = "
INSERT INTO orders (order_uid, track_number, entry, locale, internal_signature, customer_id,
    delivery_service, shardkey, sm_id, date_created, oof_shard,
    source_topic, source_partition, source_offset, extra)
SELECT a, b, c, d, e, f, g, h, i, j, k, $12::text, p, o, x FROM
    UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
           $8::text[], $9::int8[], $10::timestamptz[], $11::text[], $13::int4[], $14::int8[],
           $15::json[])
        AS u(a, b, c, d, e, f, g, h, i, j, k, p, o, x)
ON CONFLICT (order_uid) DO NOTHING";

// Orders go in by binary COPY too when no uid of the batch is stored yet, which is almost
// always: COPY costs PostgreSQL less per row than `INSERT … ON CONFLICT` (no speculative
// insertion, one WAL record per page instead of per row). A uid already stored makes the COPY
// fail (unique violation) and the whole transaction is run again with the INSERT.
const COPY_ORDERS: &str = "COPY orders (order_uid, track_number, entry, locale, \
    internal_signature, customer_id, delivery_service, shardkey, sm_id, date_created, \
    oof_shard, source_topic, source_partition, source_offset) FROM STDIN (FORMAT binary)";
const COPY_ORDERS_EXTRA: &str = "COPY orders (order_uid, track_number, entry, locale, \
    internal_signature, customer_id, delivery_service, shardkey, sm_id, date_created, \
    oof_shard, source_topic, source_partition, source_offset, extra) FROM STDIN (FORMAT binary)";

/// How many batches after a failed COPY (a uid already stored) go straight to the INSERT: a
/// replayed topic conflicts in every batch, and each failed COPY is work thrown away.
const INSERT_AFTER_CONFLICT: u32 = 64;

/// Whether the next batches should try COPY for their orders: shared by a repository's
/// connections, so a run of conflicts (a topic replayed from the start) costs each batch one
/// failed COPY at most once per [`INSERT_AFTER_CONFLICT`] batches.
#[derive(Debug, Default)]
pub(crate) struct OrdersCopy {
    insert_batches_left: std::sync::atomic::AtomicU32,
}

impl OrdersCopy {
    fn should_try(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.insert_batches_left
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
            .is_err()
    }

    fn conflicted(&self) {
        self.insert_batches_left
            .store(INSERT_AFTER_CONFLICT, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How a batch transaction inserts its orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OrdersBy {
    /// Binary COPY: fails on a uid already stored.
    Copy,
    /// `INSERT … ON CONFLICT DO NOTHING`: stores the new, reports the rest as duplicates.
    Insert,
}

/// Why a batch attempt ended without a commit.
enum Attempt {
    /// The orders COPY met a uid already stored: run the batch again with the INSERT.
    UidTaken,
    Failed(RepositoryError),
}

impl From<RepositoryError> for Attempt {
    fn from(e: RepositoryError) -> Self {
        Self::Failed(e)
    }
}

/// Which of a batch's uids this transaction stored: the rows that carry the batch's positions
/// (a message's position is stored once at most, so a row stored earlier never has one).
/// Asked only when the insert stored fewer orders than the batch has.
const STORED_POSITIONS: &str = "
SELECT order_uid, source_partition, source_offset FROM orders
WHERE order_uid = ANY($1) AND source_topic = $2";

// The children of newly inserted orders go in with binary COPY: they cannot conflict (their
// order row was inserted by this transaction), and COPY costs PostgreSQL the least per row.
// Each table has a second COPY with its `extra` column (unknown fields, policy `keep`), used
// only when an order of the batch has some there: a batch without them copies exactly the
// same bytes as before the column existed.
const COPY_DELIVERIES: &str = "COPY deliveries (order_uid, name, phone, zip, city, address, \
    region, email) FROM STDIN (FORMAT binary)";
const COPY_DELIVERIES_EXTRA: &str = "COPY deliveries (order_uid, name, phone, zip, city, \
    address, region, email, extra) FROM STDIN (FORMAT binary)";

const COPY_PAYMENTS: &str = "COPY payments (order_uid, transaction, request_id, currency, \
    provider, amount, payment_dt, bank, delivery_cost, goods_total, custom_fee) \
    FROM STDIN (FORMAT binary)";
const COPY_PAYMENTS_EXTRA: &str = "COPY payments (order_uid, transaction, request_id, \
    currency, provider, amount, payment_dt, bank, delivery_cost, goods_total, custom_fee, \
    extra) FROM STDIN (FORMAT binary)";

const COPY_ITEMS: &str = "COPY items (order_uid, position, chrt_id, track_number, price, rid, \
    name, sale, size, total_price, nm_id, brand, status) FROM STDIN (FORMAT binary)";
const COPY_ITEMS_EXTRA: &str = "COPY items (order_uid, position, chrt_id, track_number, price, \
    rid, name, sale, size, total_price, nm_id, brand, status, extra) FROM STDIN (FORMAT binary)";

const INSERT_REJECTED: &str = "
INSERT INTO rejected_messages (topic, partition, \"offset\", reason, detail, payload,
    payload_size, payload_sha256)
SELECT $1::text, u.* FROM UNNEST($2::int4[], $3::int8[], $4::text[], $5::text[], $6::bytea[],
    $7::int8[], $8::text[]) AS u";

/// Compare-and-set of the batch's offsets: a partition with an expected offset moves only if
/// it still holds it; one expected to have none is inserted only if still absent. Returns how
/// many moved: fewer than asked means another writer got there first (fenced).
///
/// A batch whose orders go in by COPY runs it last, just before the commit. The check and the
/// commit are one transaction either way, so a fenced batch (or one whose lease was lost)
/// keeps nothing: a concurrent writer of the same partition waits here on the row (or the
/// insert) until the first commits, then finds the offset moved and rolls back what it
/// wrote. A batch already committed (a retry after a lost acknowledgement) meets its own uids
/// in the COPY and is run again by INSERT, which runs this first: there, the orders this
/// transaction stored are told apart by their positions, which only holds if a fenced batch
/// writes nothing before this. Run first by COPY too, it cost PostgreSQL about a tenth more
/// CPU per order: after any statement before them, the COPYs' foreign-key checks spent three
/// times as long in `ResourceOwnerRememberTupleDesc` (`perf`, PostgreSQL 15; see
/// bench/results.md).
const ADVANCE_OFFSETS: &str = "
WITH u AS (SELECT * FROM UNNEST($2::int4[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], $7::int8[])
        AS u(p, next, expected, mark_offset, mark_digest, epoch)),
held AS (
    SELECT l.partition FROM partition_leases l JOIN u ON l.partition = u.p AND l.epoch = u.epoch
    WHERE l.topic = $1::text
    FOR SHARE OF l),
ok AS (SELECT u.* FROM u WHERE u.epoch IS NULL OR u.p IN (SELECT partition FROM held)),
inserted AS (
    INSERT INTO consumer_offsets (topic, partition, next_offset, mark_offset, mark_digest)
    SELECT $1::text, p, next, mark_offset, mark_digest FROM ok WHERE expected IS NULL
    ON CONFLICT (topic, partition) DO NOTHING
    RETURNING 1),
moved AS (
    UPDATE consumer_offsets c SET next_offset = ok.next, updated_at = now(),
        mark_offset = coalesce(ok.mark_offset, c.mark_offset),
        mark_digest = coalesce(ok.mark_digest, c.mark_digest)
    FROM ok
    WHERE c.topic = $1::text AND c.partition = ok.p AND c.next_offset = ok.expected
    RETURNING 1)
SELECT (SELECT count(*) FROM inserted) + (SELECT count(*) FROM moved),
       (SELECT count(*) FROM u) - (SELECT count(*) FROM ok)";

/// The channel on which committed batches announce their new orders (see
/// [`crate::CommitListener`]).
pub(crate) const COMMITS_CHANNEL: &str = "orders_committed";

/// Most bytes of one notification's payload (PostgreSQL's limit is 8000).
const NOTIFY_PAYLOAD_MAX: usize = 7900;

/// The payloads announcing `uids`: each is `origin` then uids, one per line, under the size
/// limit.
pub(crate) fn commit_payloads<'a>(
    origin: &str,
    uids: impl Iterator<Item = &'a str>,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for uid in uids {
        if !cur.is_empty() && cur.len() + 1 + uid.len() > NOTIFY_PAYLOAD_MAX {
            out.push(std::mem::take(&mut cur));
        }
        if cur.is_empty() {
            cur.push_str(origin);
        }
        cur.push('\n');
        cur.push_str(uid);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// JSON text written as it is into a `json` column (whose binary form is the text itself): the
/// unknown fields of one object, which the domain keeps as their exact text.
#[derive(Debug)]
struct JsonText(String);

impl ToSql for JsonText {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSON
    }

    to_sql_checked!();
}

/// The `extra` column's value for one object's unknown fields (NULL when none).
fn extra_json(extra: &orders_domain::Extra) -> Option<JsonText> {
    extra.to_json_object().map(JsonText)
}

/// The COPY statement of a table and its field count: with the `extra` column only if needed.
fn copy_statement(
    with_extra: bool,
    plain: &'static str,
    extra: &'static str,
    fields: i16,
) -> (&'static str, i16) {
    if with_extra {
        (extra, fields + 1)
    } else {
        (plain, fields)
    }
}

/// Column vectors for one table, built in one pass so the hot path allocates once per column.
#[derive(Default)]
struct OrderColumns<'a> {
    uid: Vec<&'a str>,
    track: Vec<&'a str>,
    entry: Vec<&'a str>,
    locale: Vec<&'a str>,
    sig: Vec<&'a str>,
    customer: Vec<&'a str>,
    dservice: Vec<&'a str>,
    shardkey: Vec<&'a str>,
    sm_id: Vec<i64>,
    created: Vec<DateTime<Utc>>,
    oof: Vec<&'a str>,
    partition: Vec<i32>,
    offset: Vec<i64>,
    extra: Vec<Option<JsonText>>,
}

impl<'a> OrderColumns<'a> {
    fn new(orders: &[&'a AcceptedOrder]) -> Self {
        let mut c = Self::default();
        for a in orders {
            let o = &a.order;
            c.uid.push(&o.order_uid);
            c.track.push(&o.track_number);
            c.entry.push(&o.entry);
            c.locale.push(&o.locale);
            c.sig.push(&o.internal_signature);
            c.customer.push(&o.customer_id);
            c.dservice.push(&o.delivery_service);
            c.shardkey.push(&o.shardkey);
            c.sm_id.push(o.sm_id);
            c.created.push(o.date_created);
            c.oof.push(&o.oof_shard);
            c.partition.push(a.position.partition);
            c.offset.push(a.position.offset);
            c.extra.push(extra_json(&o.extra));
        }
        c
    }
}

type Params<'a> = Vec<&'a (dyn ToSql + Sync)>;

async fn insert_children(
    tx: &deadpool_postgres::Transaction<'_>,
    orders: &[&AcceptedOrder],
) -> Result<(), RepositoryError> {
    if orders.is_empty() {
        return Ok(());
    }
    let what = "copying deliveries";
    let pg = |e| map_pg(what, e);
    let with_extra = orders.iter().any(|a| !a.order.delivery.extra.is_empty());
    let (sql, fields) = copy_statement(with_extra, COPY_DELIVERIES, COPY_DELIVERIES_EXTRA, 8);
    let mut w = CopyRows::start(tx, sql, what).await.map_err(pg)?;
    for a in orders {
        let (o, d) = (&a.order, &a.order.delivery);
        w.row(fields).await.map_err(pg)?;
        for f in [
            &o.order_uid,
            &d.name,
            &d.phone,
            &d.zip,
            &d.city,
            &d.address,
            &d.region,
            &d.email,
        ] {
            w.text(f);
        }
        if with_extra {
            w.json(d.extra.to_json_object().as_deref());
        }
    }
    w.finish_mapped().await?;

    let what = "copying payments";
    let pg = |e| map_pg(what, e);
    let with_extra = orders.iter().any(|a| !a.order.payment.extra.is_empty());
    let (sql, fields) = copy_statement(with_extra, COPY_PAYMENTS, COPY_PAYMENTS_EXTRA, 11);
    let mut w = CopyRows::start(tx, sql, what).await.map_err(pg)?;
    for a in orders {
        let (o, p) = (&a.order, &a.order.payment);
        w.row(fields).await.map_err(pg)?;
        w.text(&o.order_uid);
        w.text(&p.transaction);
        w.text(&p.request_id);
        w.text(&p.currency);
        w.text(&p.provider);
        w.int8(p.amount);
        w.int8(p.payment_dt);
        w.text(&p.bank);
        w.int8(p.delivery_cost);
        w.int8(p.goods_total);
        w.int8(p.custom_fee);
        if with_extra {
            w.json(p.extra.to_json_object().as_deref());
        }
    }
    w.finish_mapped().await?;

    let what = "copying items";
    let pg = |e| map_pg(what, e);
    let with_extra = orders
        .iter()
        .any(|a| a.order.items.iter().any(|it| !it.extra.is_empty()));
    let (sql, fields) = copy_statement(with_extra, COPY_ITEMS, COPY_ITEMS_EXTRA, 13);
    let mut w = CopyRows::start(tx, sql, what).await.map_err(pg)?;
    for a in orders {
        let o = &a.order;
        for (i, it) in o.items.iter().enumerate() {
            w.row(fields).await.map_err(pg)?;
            w.text(&o.order_uid);
            // The index in the message; MAX_ITEMS keeps it far inside i32.
            w.int4(i as i32);
            w.int8(it.chrt_id);
            w.text(&it.track_number);
            w.int8(it.price);
            w.text(&it.rid);
            w.text(&it.name);
            w.int4(it.sale);
            w.text(&it.size);
            w.int8(it.total_price);
            w.int8(it.nm_id);
            w.text(&it.brand);
            w.int4(it.status);
            if with_extra {
                w.json(it.extra.to_json_object().as_deref());
            }
        }
    }
    w.finish_mapped().await?;
    Ok(())
}

/// Binary COPY of `sorted` into `orders`. `Err(UidTaken)` when one of them is already stored
/// (the transaction is then aborted).
async fn copy_orders(
    tx: &deadpool_postgres::Transaction<'_>,
    topic: &str,
    sorted: &[&AcceptedOrder],
) -> Result<(), Attempt> {
    let what = "copying orders";
    let taken = |e: tokio_postgres::Error| {
        if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
            Attempt::UidTaken
        } else {
            Attempt::Failed(map_pg(what, e))
        }
    };
    let with_extra = sorted.iter().any(|a| !a.order.extra.is_empty());
    let (sql, fields) = copy_statement(with_extra, COPY_ORDERS, COPY_ORDERS_EXTRA, 14);
    let mut w = CopyRows::start(tx, sql, what).await.map_err(taken)?;
    for a in sorted {
        let o = &a.order;
        w.row(fields).await.map_err(taken)?;
        for f in [
            &o.order_uid,
            &o.track_number,
            &o.entry,
            &o.locale,
            &o.internal_signature,
            &o.customer_id,
            &o.delivery_service,
            &o.shardkey,
        ] {
            w.text(f);
        }
        w.int8(o.sm_id);
        w.timestamptz(&o.date_created);
        w.text(&o.oof_shard);
        w.text(topic);
        w.int4(a.position.partition);
        w.int8(a.position.offset);
        if with_extra {
            w.json(o.extra.to_json_object().as_deref());
        }
    }
    w.finish().await.map_err(taken)?;
    Ok(())
}

/// `notify`: the origin to announce the batch's new orders under on [`COMMITS_CHANNEL`]
/// (delivered to listeners only if and when the transaction commits). Orders go in by COPY
/// unless `copy` says a recent batch met a stored uid or the batch repeats a uid; a COPY that
/// meets a stored uid rolls the transaction back and the batch is stored again by INSERT.
pub(super) async fn store_batch(
    client: &mut Object,
    batch: &StoreBatch,
    notify: Option<&str>,
    copy: &OrdersCopy,
) -> Result<StoreOutcome, RepositoryError> {
    // Sorted by uid so that concurrent partition transactions take row locks in one order
    // (no deadlocks between them); stably, so that of a uid sent twice the first message is
    // the one stored.
    let mut sorted: Vec<&AcceptedOrder> = batch.orders.iter().collect();
    sorted.sort_by(|a, b| a.order.order_uid.cmp(&b.order.order_uid));
    let repeats_a_uid = sorted
        .windows(2)
        .any(|w| w[0].order.order_uid == w[1].order.order_uid);
    let mut copy_met_a_uid = false;
    if !repeats_a_uid && copy.should_try() {
        match attempt(client, batch, &sorted, notify, OrdersBy::Copy).await {
            Ok(outcome) => return Ok(outcome),
            Err(Attempt::Failed(e)) => return Err(e),
            Err(Attempt::UidTaken) => {
                tracing::debug!(
                    topic = %batch.topic,
                    "a uid of the batch is already stored; storing it again by INSERT"
                );
                copy_met_a_uid = true;
            }
        }
    }
    match attempt(client, batch, &sorted, notify, OrdersBy::Insert).await {
        Ok(outcome) => {
            // The next batches go to the INSERT only when this one really met stored uids (a
            // replayed topic). A COPY moves the offsets last, so a fenced writer's COPY can
            // meet the uids of the batch that fenced it; its INSERT is then fenced and ends
            // here as an error, and this process's other partitions keep the COPY.
            if copy_met_a_uid && !outcome.duplicates.is_empty() {
                copy.conflicted();
            }
            Ok(outcome)
        }
        Err(Attempt::Failed(e)) => Err(e),
        Err(Attempt::UidTaken) => Err(RepositoryError::Unavailable {
            context: "inserting orders: unique violation despite ON CONFLICT".into(),
            source: None,
        }),
    }
}

/// Moves the batch's offsets (compare-and-set, [`ADVANCE_OFFSETS`]) in `tx`: a fenced batch or
/// a lost lease fails the attempt, and dropping `tx` then rolls all of it back.
async fn advance_offsets(
    tx: &deadpool_postgres::Transaction<'_>,
    batch: &StoreBatch,
) -> Result<(), Attempt> {
    if batch.offsets.is_empty() {
        return Ok(());
    }
    let parts: Vec<i32> = batch.offsets.iter().map(|o| o.partition).collect();
    let next: Vec<i64> = batch.offsets.iter().map(|o| o.next_offset).collect();
    let expected: Vec<Option<i64>> = batch.offsets.iter().map(|o| o.expected).collect();
    let mark_offset: Vec<Option<i64>> = batch
        .offsets
        .iter()
        .map(|o| o.mark.map(|m| m.offset))
        .collect();
    let mark_digest: Vec<Option<i64>> = batch
        .offsets
        .iter()
        .map(|o| o.mark.map(|m| m.digest))
        .collect();
    let epochs: Vec<Option<i64>> = batch.offsets.iter().map(|o| o.lease_epoch).collect();
    let stmt = tx
        .prepare_cached(ADVANCE_OFFSETS)
        .await
        .map_err(|e| map_pg("preparing offsets", e))?;
    let row = tx
        .query_one(
            &stmt,
            &[
                &batch.topic,
                &parts,
                &next,
                &expected,
                &mark_offset,
                &mark_digest,
                &epochs,
            ],
        )
        .await
        .map_err(|e| map_pg("storing consumer offsets", e))?;
    let (moved, lease_lost): (i64, i64) = (row.get(0), row.get(1));
    if lease_lost > 0 {
        let lost = batch
            .offsets
            .iter()
            .find(|o| o.lease_epoch.is_some())
            .unwrap_or(&batch.offsets[0]);
        return Err(Attempt::Failed(RepositoryError::LeaseLost {
            topic: batch.topic.clone(),
            partition: lost.partition,
            epoch: lost.lease_epoch.unwrap_or_default(),
        }));
    }
    if moved != batch.offsets.len() as i64 {
        // Dropping `tx` rolls it back: nothing of the batch is kept.
        let stale = batch.offsets[0];
        return Err(Attempt::Failed(RepositoryError::Fenced {
            topic: batch.topic.clone(),
            partition: stale.partition,
            expected: stale.expected,
        }));
    }
    Ok(())
}

/// One batch transaction, its orders (`sorted`: the batch's, by uid) inserted `by` COPY or
/// INSERT.
async fn attempt(
    client: &mut Object,
    batch: &StoreBatch,
    sorted: &[&AcceptedOrder],
    notify: Option<&str>,
    by: OrdersBy,
) -> Result<StoreOutcome, Attempt> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| map_pg("starting a transaction", e))?;

    // By INSERT, first: which orders this transaction stored is then known by their positions
    // (a fenced batch never gets past here). By COPY, last: see `ADVANCE_OFFSETS`.
    if by == OrdersBy::Insert {
        advance_offsets(&tx, batch).await?;
    }

    if !batch.superseded_rejections.is_empty() {
        tx.execute(
            "DELETE FROM rejected_messages WHERE id = ANY($1)",
            &[&batch.superseded_rejections],
        )
        .await
        .map_err(|e| map_pg("deleting replayed rejections", e))?;
    }

    let mut outcome = StoreOutcome::default();
    let mut duplicates: Vec<&AcceptedOrder> = Vec::new();
    if !sorted.is_empty() && by == OrdersBy::Copy {
        copy_orders(&tx, &batch.topic, sorted).await?;
        insert_children(&tx, sorted).await?;
        outcome.stored = sorted.iter().map(|a| a.order.order_uid.clone()).collect();
    } else if !sorted.is_empty() {
        let c = OrderColumns::new(sorted);
        let stmt = tx
            .prepare_cached(INSERT_ORDERS)
            .await
            .map_err(|e| map_pg("preparing orders", e))?;
        let p: Params<'_> = vec![
            &c.uid,
            &c.track,
            &c.entry,
            &c.locale,
            &c.sig,
            &c.customer,
            &c.dservice,
            &c.shardkey,
            &c.sm_id,
            &c.created,
            &c.oof,
            &batch.topic,
            &c.partition,
            &c.offset,
            &c.extra,
        ];
        // The row count, not `RETURNING`: almost every batch stores all its orders, and
        // returning each uid cost both sides a row per order.
        let inserted = tx
            .execute(&stmt, &p)
            .await
            .map_err(|e| map_pg("inserting orders", e))?;
        let (new, dup): (Vec<&AcceptedOrder>, Vec<&AcceptedOrder>) =
            if inserted == sorted.len() as u64 {
                (sorted.to_vec(), Vec::new())
            } else {
                let rows = tx
                    .query(STORED_POSITIONS, &[&c.uid, &batch.topic])
                    .await
                    .map_err(|e| map_pg("finding the orders a batch stored", e))?;
                // Positions are NULL in rows that were not stored from the log.
                let ours: HashSet<(&str, Option<i32>, Option<i64>)> = rows
                    .iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2)))
                    .collect();
                sorted.iter().copied().partition(|a| {
                    ours.contains(&(
                        a.order.order_uid.as_str(),
                        Some(a.position.partition),
                        Some(a.position.offset),
                    ))
                })
            };
        insert_children(&tx, &new).await?;
        outcome.stored = new.iter().map(|a| a.order.order_uid.clone()).collect();
        outcome.duplicates = dup
            .iter()
            .map(|a| (a.order.order_uid.clone(), a.position.clone()))
            .collect();
        duplicates = dup;
    }
    if let Some(origin) = notify
        && !outcome.stored.is_empty()
    {
        let payloads = commit_payloads(origin, outcome.stored.iter().map(Text::as_str));
        tx.execute(
            "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p",
            &[&COMMITS_CHANNEL, &payloads],
        )
        .await
        .map_err(|e| map_pg("announcing new orders", e))?;
    }

    let n = batch.rejections.len() + duplicates.len();
    if n > 0 {
        let mut partitions = Vec::with_capacity(n);
        let mut offsets = Vec::with_capacity(n);
        let mut reasons = Vec::with_capacity(n);
        let mut details = Vec::with_capacity(n);
        let mut payloads: Vec<Option<&[u8]>> = Vec::with_capacity(n);
        let mut sizes: Vec<Option<i64>> = Vec::with_capacity(n);
        let mut digests: Vec<Option<&str>> = Vec::with_capacity(n);
        for r in &batch.rejections {
            partitions.push(r.position.partition);
            offsets.push(r.position.offset);
            reasons.push(r.reason.as_str());
            details.push(r.detail.clone());
            payloads.push(r.payload.as_deref());
            sizes.push(r.truncated.as_ref().map(|t| t.size));
            digests.push(r.truncated.as_ref().map(|t| t.sha256.as_str()));
        }
        for a in &duplicates {
            partitions.push(a.position.partition);
            offsets.push(a.position.offset);
            reasons.push(RejectReason::Duplicate.as_str());
            details.push(format!(
                "order_uid {:?} is already stored",
                a.order.order_uid
            ));
            payloads.push(Some(&a.payload));
            sizes.push(None);
            digests.push(None);
        }
        let stmt = tx
            .prepare_cached(INSERT_REJECTED)
            .await
            .map_err(|e| map_pg("preparing rejections", e))?;
        tx.execute(
            &stmt,
            &[
                &batch.topic,
                &partitions,
                &offsets,
                &reasons,
                &details,
                &payloads,
                &sizes,
                &digests,
            ],
        )
        .await
        .map_err(|e| map_pg("inserting rejected messages", e))?;
    }

    if by == OrdersBy::Copy {
        advance_offsets(&tx, batch).await?;
    }
    tx.commit()
        .await
        .map_err(|e| map_pg("committing a batch", e))?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::Ordering::Relaxed;

    use orders_domain::sample::generated_order;
    use orders_domain::{
        AcceptedOrder, OrderRepository, PartitionOffset, Position, RepositoryError, StoreBatch,
    };

    use crate::PgRepository;
    use crate::testing::create_test_database;

    /// A batch of `uids` (each `generated_order(uid, 0, 1)`) moving partition 0 from
    /// `expected` to `next`.
    fn batch(uids: &[&str], expected: Option<i64>, next: i64) -> StoreBatch {
        let orders = uids
            .iter()
            .enumerate()
            .map(|(i, uid)| {
                let order = generated_order(uid, 0, 1);
                AcceptedOrder {
                    payload: order.to_json_bytes().unwrap(),
                    order,
                    position: Position {
                        topic: "t".into(),
                        partition: 0,
                        offset: expected.unwrap_or(0) + i as i64,
                    },
                }
            })
            .collect();
        StoreBatch {
            topic: "t".into(),
            orders,
            offsets: vec![PartitionOffset {
                partition: 0,
                next_offset: next,
                expected,
                mark: None,
                lease_epoch: None,
            }],
            ..StoreBatch::default()
        }
    }

    fn inserting(repo: &PgRepository) -> u32 {
        repo.orders_copy.insert_batches_left.load(Relaxed)
    }

    /// Only a batch that really meets stored uids (a replayed topic) sends the next batches
    /// to the INSERT. A fenced writer's COPY meeting the uids of the batch that fenced it must
    /// not: it stores nothing, and the process's other partitions would pay for it.
    #[tokio::test]
    async fn only_a_stored_uid_met_by_a_committed_batch_pauses_the_copy() {
        let repo = PgRepository::connect(&create_test_database().await)
            .await
            .unwrap();
        repo.store_batch(&batch(&["a"], None, 1)).await.unwrap();
        assert_eq!(inserting(&repo), 0);

        // Stale: it read no offset, and its first uid is stored.
        let stale = repo.store_batch(&batch(&["a", "b"], None, 2)).await;
        assert!(
            matches!(stale, Err(RepositoryError::Fenced { .. })),
            "{stale:?}"
        );
        assert_eq!(inserting(&repo), 0, "a fenced batch changes nothing");

        // In turn, from where the partition is: `a` is a duplicate, `b` is new.
        let outcome = repo
            .store_batch(&batch(&["a", "b"], Some(1), 3))
            .await
            .unwrap();
        assert_eq!(outcome.stored, vec!["b0".to_owned()]);
        assert_eq!(inserting(&repo), super::INSERT_AFTER_CONFLICT);
    }
}
