use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures::pin_mut;
use orders_domain::{
    AcceptedOrder, Delivery, Item, Order, OrderRepository, OrderSummary, PayloadDigest, Payment,
    Position, RecordMark, RejectReason, RejectedFilter, RejectedMessage, RepositoryError,
    StoreBatch, StoreOutcome, StoreSeq,
};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{IsolationLevel, NoTls, Row};

use crate::config::PgConfig;
use crate::error::{PgError, map_pg, map_pool};
use crate::migrate::migrate;

/// The PostgreSQL repository: a connection pool and the statements of the contract.
#[derive(Clone)]
pub struct PgRepository {
    pool: Pool,
    target: String,
    /// Longest wait for one repository call's answers (client side: it also ends a call on a
    /// connection that went silent without closing, which no server-side timeout sees).
    query_timeout: Duration,
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
                source: "timed out".into(),
            })?
            .map_err(|e| PgError::Connect {
                target: repo.target.clone(),
                source: Box::new(e),
            })?;
        migrate(&mut client).await?;
        Ok(repo)
    }

    /// Builds the pool without connecting (connections are made on first use).
    pub fn connect_lazy(config: &PgConfig) -> Result<Self, PgError> {
        let target = config.display();
        let manager = Manager::from_config(
            config.tokio_postgres(),
            NoTls,
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
                source: Box::new(e),
            })?;
        Ok(Self {
            pool,
            target,
            query_timeout: config.query_timeout(),
        })
    }

    /// A connection from the pool; waiting for one is bounded by the pool's wait timeout.
    async fn client(&self) -> Result<deadpool_postgres::Object, RepositoryError> {
        self.pool.get().await.map_err(map_pool)
    }

    /// The result of a call made on `client` under [`Self::query_timeout`]. A call that timed
    /// out leaves its connection in an unknown state (maybe half-open, maybe mid-transaction),
    /// so it is taken out of the pool and closed, and the caller retries on a fresh one.
    fn settle<T>(
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

    /// Closes the pool: idle connections are dropped, new `get`s fail.
    pub fn close(&self) {
        self.pool.close();
    }

    /// Pool status for metrics: (size, available).
    pub fn pool_status(&self) -> (usize, usize) {
        let s = self.pool.status();
        (s.size, s.available)
    }
}

const INSERT_ORDERS: &str = "
INSERT INTO orders (order_uid, track_number, entry, locale, internal_signature, customer_id,
    delivery_service, shardkey, sm_id, date_created, oof_shard,
    source_topic, source_partition, source_offset)
SELECT a, b, c, d, e, f, g, h, i, j, k, $12::text, p, o FROM
    UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
           $8::text[], $9::int8[], $10::timestamptz[], $11::text[], $13::int4[], $14::int8[])
        AS u(a, b, c, d, e, f, g, h, i, j, k, p, o)
ON CONFLICT (order_uid) DO NOTHING
RETURNING order_uid";

// The children of newly inserted orders go in with binary COPY: they cannot conflict (their
// order row was inserted by this transaction), and COPY costs PostgreSQL the least per row.
const COPY_DELIVERIES: &str = "COPY deliveries (order_uid, name, phone, zip, city, address, \
    region, email) FROM STDIN (FORMAT binary)";
const DELIVERY_TYPES: [Type; 8] = [
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
];

const COPY_PAYMENTS: &str = "COPY payments (order_uid, transaction, request_id, currency, \
    provider, amount, payment_dt, bank, delivery_cost, goods_total, custom_fee) \
    FROM STDIN (FORMAT binary)";
const PAYMENT_TYPES: [Type; 11] = [
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::INT8,
];

const COPY_ITEMS: &str = "COPY items (order_uid, position, chrt_id, track_number, price, rid, \
    name, sale, size, total_price, nm_id, brand, status) FROM STDIN (FORMAT binary)";
const ITEM_TYPES: [Type; 13] = [
    Type::TEXT,
    Type::INT4,
    Type::INT8,
    Type::TEXT,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::INT4,
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::TEXT,
    Type::INT4,
];

const INSERT_REJECTED: &str = "
INSERT INTO rejected_messages (topic, partition, \"offset\", reason, detail, payload,
    payload_size, payload_sha256)
SELECT $1::text, u.* FROM UNNEST($2::int4[], $3::int8[], $4::text[], $5::text[], $6::bytea[],
    $7::int8[], $8::text[]) AS u";

/// Compare-and-set of the batch's offsets: a partition with an expected offset moves only if
/// it still holds it; one expected to have none is inserted only if still absent. Returns how
/// many moved: fewer than asked means another writer got there first (fenced). Run first in
/// the transaction, so a concurrent writer of the same partition waits here on the row (or
/// the insert) and is fenced before it writes anything.
const ADVANCE_OFFSETS: &str = "
WITH u AS (SELECT * FROM UNNEST($2::int4[], $3::int8[], $4::int8[], $5::int8[], $6::int8[])
        AS u(p, next, expected, mark_offset, mark_digest)),
inserted AS (
    INSERT INTO consumer_offsets (topic, partition, next_offset, mark_offset, mark_digest)
    SELECT $1::text, p, next, mark_offset, mark_digest FROM u WHERE expected IS NULL
    ON CONFLICT (topic, partition) DO NOTHING
    RETURNING 1),
moved AS (
    UPDATE consumer_offsets c SET next_offset = u.next, updated_at = now(),
        mark_offset = coalesce(u.mark_offset, c.mark_offset),
        mark_digest = coalesce(u.mark_digest, c.mark_digest)
    FROM u
    WHERE c.topic = $1::text AND c.partition = u.p AND c.next_offset = u.expected
    RETURNING 1)
SELECT (SELECT count(*) FROM inserted) + (SELECT count(*) FROM moved)";

/// Columns of `order_from_row`; the number of them is the index of any column added after.
const ORDER_COLUMNS: usize = 28;
const SELECT_ORDER_COLUMNS: &str = "
SELECT o.order_uid, o.track_number, o.entry, o.locale, o.internal_signature, o.customer_id,
       o.delivery_service, o.shardkey, o.sm_id, o.date_created, o.oof_shard,
       d.name, d.phone, d.zip, d.city, d.address, d.region, d.email,
       p.transaction, p.request_id, p.currency, p.provider, p.amount, p.payment_dt, p.bank,
       p.delivery_cost, p.goods_total, p.custom_fee";
const FROM_ORDERS: &str =
    "FROM orders o JOIN deliveries d USING (order_uid) JOIN payments p USING (order_uid)";

const SELECT_ITEM_COLUMNS: &str = "
SELECT order_uid, chrt_id, track_number, price, rid, name, sale, size, total_price, nm_id, brand,
       status
FROM items";

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
        }
        c
    }
}

type Params<'a> = Vec<&'a (dyn ToSql + Sync)>;

/// A binary `COPY … FROM STDIN` into this transaction (the statement is prepared once per
/// connection).
async fn copy_writer(
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &str,
    types: &[Type],
    what: &'static str,
) -> Result<BinaryCopyInWriter, RepositoryError> {
    let stmt = tx.prepare_cached(sql).await.map_err(|e| map_pg(what, e))?;
    let sink = tx.copy_in(&stmt).await.map_err(|e| map_pg(what, e))?;
    Ok(BinaryCopyInWriter::new(sink, types))
}

async fn insert_children(
    tx: &deadpool_postgres::Transaction<'_>,
    orders: &[&AcceptedOrder],
) -> Result<(), RepositoryError> {
    if orders.is_empty() {
        return Ok(());
    }
    let w = copy_writer(tx, COPY_DELIVERIES, &DELIVERY_TYPES, "copying deliveries").await?;
    pin_mut!(w);
    for a in orders {
        let (o, d) = (&a.order, &a.order.delivery);
        w.as_mut()
            .write(&[
                &o.order_uid,
                &d.name,
                &d.phone,
                &d.zip,
                &d.city,
                &d.address,
                &d.region,
                &d.email,
            ])
            .await
            .map_err(|e| map_pg("copying deliveries", e))?;
    }
    w.finish()
        .await
        .map_err(|e| map_pg("copying deliveries", e))?;

    let w = copy_writer(tx, COPY_PAYMENTS, &PAYMENT_TYPES, "copying payments").await?;
    pin_mut!(w);
    for a in orders {
        let (o, p) = (&a.order, &a.order.payment);
        w.as_mut()
            .write(&[
                &o.order_uid,
                &p.transaction,
                &p.request_id,
                &p.currency,
                &p.provider,
                &p.amount,
                &p.payment_dt,
                &p.bank,
                &p.delivery_cost,
                &p.goods_total,
                &p.custom_fee,
            ])
            .await
            .map_err(|e| map_pg("copying payments", e))?;
    }
    w.finish()
        .await
        .map_err(|e| map_pg("copying payments", e))?;

    let w = copy_writer(tx, COPY_ITEMS, &ITEM_TYPES, "copying items").await?;
    pin_mut!(w);
    for a in orders {
        let o = &a.order;
        for (i, it) in o.items.iter().enumerate() {
            // The index in the message; MAX_ITEMS keeps it far inside i32.
            let position = i as i32;
            w.as_mut()
                .write(&[
                    &o.order_uid,
                    &position,
                    &it.chrt_id,
                    &it.track_number,
                    &it.price,
                    &it.rid,
                    &it.name,
                    &it.sale,
                    &it.size,
                    &it.total_price,
                    &it.nm_id,
                    &it.brand,
                    &it.status,
                ])
                .await
                .map_err(|e| map_pg("copying items", e))?;
        }
    }
    w.finish().await.map_err(|e| map_pg("copying items", e))?;
    Ok(())
}

fn order_from_row(row: &Row) -> Order {
    Order {
        order_uid: row.get(0),
        track_number: row.get(1),
        entry: row.get(2),
        locale: row.get(3),
        internal_signature: row.get(4),
        customer_id: row.get(5),
        delivery_service: row.get(6),
        shardkey: row.get(7),
        sm_id: row.get(8),
        date_created: row.get(9),
        oof_shard: row.get(10),
        delivery: Delivery {
            name: row.get(11),
            phone: row.get(12),
            zip: row.get(13),
            city: row.get(14),
            address: row.get(15),
            region: row.get(16),
            email: row.get(17),
        },
        payment: Payment {
            transaction: row.get(18),
            request_id: row.get(19),
            currency: row.get(20),
            provider: row.get(21),
            amount: row.get(22),
            payment_dt: row.get(23),
            bank: row.get(24),
            delivery_cost: row.get(25),
            goods_total: row.get(26),
            custom_fee: row.get(27),
        },
        items: Vec::new(),
    }
}

/// The item of a `SELECT_ITEM_COLUMNS` row (its column 0, the order's uid, is left to the caller).
fn item_from_row(row: &Row) -> Item {
    Item {
        chrt_id: row.get(1),
        track_number: row.get(2),
        price: row.get(3),
        rid: row.get(4),
        name: row.get(5),
        sale: row.get(6),
        size: row.get(7),
        total_price: row.get(8),
        nm_id: row.get(9),
        brand: row.get(10),
        status: row.get(11),
    }
}

#[async_trait]
impl OrderRepository for PgRepository {
    async fn store_batch(&self, batch: &StoreBatch) -> Result<StoreOutcome, RepositoryError> {
        let mut client = self.client().await?;
        let result = tokio::time::timeout(self.query_timeout, async {
            let tx = client
                .transaction()
                .await
                .map_err(|e| map_pg("starting a transaction", e))?;

            if !batch.offsets.is_empty() {
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
                let stmt = tx
                    .prepare_cached(ADVANCE_OFFSETS)
                    .await
                    .map_err(|e| map_pg("preparing offsets", e))?;
                let moved: i64 = tx
                    .query_one(
                        &stmt,
                        &[
                            &batch.topic,
                            &parts,
                            &next,
                            &expected,
                            &mark_offset,
                            &mark_digest,
                        ],
                    )
                    .await
                    .map_err(|e| map_pg("storing consumer offsets", e))?
                    .get(0);
                if moved != batch.offsets.len() as i64 {
                    // Dropping `tx` rolls it back: nothing of the batch is kept.
                    let stale = batch.offsets[0];
                    return Err(RepositoryError::Fenced {
                        topic: batch.topic.clone(),
                        partition: stale.partition,
                        expected: stale.expected,
                    });
                }
            }

            if !batch.superseded_rejections.is_empty() {
                tx.execute(
                    "DELETE FROM rejected_messages WHERE id = ANY($1)",
                    &[&batch.superseded_rejections],
                )
                .await
                .map_err(|e| map_pg("deleting replayed rejections", e))?;
            }

            // Sorted by uid so that concurrent partition transactions take row locks in one order
            // (no deadlocks between them).
            let mut sorted: Vec<&AcceptedOrder> = batch.orders.iter().collect();
            sorted.sort_unstable_by(|a, b| a.order.order_uid.cmp(&b.order.order_uid));
            let mut outcome = StoreOutcome::default();
            let mut duplicates: Vec<&AcceptedOrder> = Vec::new();
            if !sorted.is_empty() {
                let c = OrderColumns::new(&sorted);
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
                ];
                let rows = tx
                    .query(&stmt, &p)
                    .await
                    .map_err(|e| map_pg("inserting orders", e))?;
                let inserted: HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
                let (new, dup): (Vec<&AcceptedOrder>, Vec<&AcceptedOrder>) = sorted
                    .into_iter()
                    .partition(|a| inserted.contains(&a.order.order_uid));
                insert_children(&tx, &new).await?;
                outcome.stored = new.iter().map(|a| a.order.order_uid.clone()).collect();
                outcome.duplicates = dup
                    .iter()
                    .map(|a| (a.order.order_uid.clone(), a.position.clone()))
                    .collect();
                duplicates = dup;
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

            tx.commit()
                .await
                .map_err(|e| map_pg("committing a batch", e))?;
            Ok(outcome)
        })
        .await;
        self.settle(client, result)
    }

    async fn get(&self, order_uid: &str) -> Result<Option<Order>, RepositoryError> {
        let client = self.client().await?;
        let result = tokio::time::timeout(self.query_timeout, async {
            let order_sql = format!("{SELECT_ORDER_COLUMNS} {FROM_ORDERS} WHERE o.order_uid = $1");
            let items_sql = format!("{SELECT_ITEM_COLUMNS} WHERE order_uid = $1 ORDER BY position");
            let (order_stmt, items_stmt) = futures::try_join!(
                client.prepare_cached(&order_sql),
                client.prepare_cached(&items_sql)
            )
            .map_err(|e| map_pg("preparing get", e))?;
            // One round trip: the two queries are pipelined on the connection, the order's first,
            // so the items' snapshot is the later one and holds every item of a visible order
            // (an order and its items are committed together and never change).
            let uid: [&(dyn ToSql + Sync); 1] = [&order_uid];
            let (row, items) = futures::try_join!(
                client.query_opt(&order_stmt, &uid),
                client.query(&items_stmt, &uid)
            )
            .map_err(|e| map_pg("reading an order", e))?;
            Ok(row.map(|row| Order {
                items: items.iter().map(item_from_row).collect(),
                ..order_from_row(&row)
            }))
        })
        .await;
        self.settle(client, result)
    }

    async fn recent(
        &self,
        before: Option<StoreSeq>,
        limit: usize,
    ) -> Result<Vec<(StoreSeq, Order)>, RepositoryError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let before = before.map_or(i64::MAX, |s| s.0);
        let mut client = self.client().await?;
        let result = tokio::time::timeout(self.query_timeout, async {
            // One snapshot for both queries, so every order comes with exactly its items.
            let tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(|e| map_pg("starting a read transaction", e))?;
            let q = format!(
                "{SELECT_ORDER_COLUMNS}, o.ingest_seq {FROM_ORDERS}
             WHERE o.ingest_seq < $2 ORDER BY o.ingest_seq DESC LIMIT $1"
            );
            let rows = tx
                .query(&q, &[&limit, &before])
                .await
                .map_err(|e| map_pg("reading recent orders", e))?;
            let mut orders: Vec<(StoreSeq, Order)> = rows
                .iter()
                .map(|r| (StoreSeq(r.get(ORDER_COLUMNS)), order_from_row(r)))
                .collect();
            drop(rows);
            // By the page's uids: an index lookup per order, whatever the plan for the page.
            let uids: Vec<&str> = orders.iter().map(|(_, o)| o.order_uid.as_str()).collect();
            let q = format!(
                "{SELECT_ITEM_COLUMNS} WHERE order_uid = ANY($1) ORDER BY order_uid, position"
            );
            let rows = tx
                .query(&q, &[&uids])
                .await
                .map_err(|e| map_pg("reading recent items", e))?;
            // Rows come grouped by uid: find each group's order once, borrowing the uid from the
            // row (no allocation per item row).
            let index: HashMap<&str, usize> =
                uids.iter().enumerate().map(|(i, u)| (*u, i)).collect();
            let mut items: Vec<Vec<Item>> = vec![Vec::new(); orders.len()];
            let mut current: Option<(&str, usize)> = None;
            for row in &rows {
                let uid: &str = row.get(0);
                let slot = match current {
                    Some((u, i)) if u == uid => i,
                    _ => {
                        let Some(&i) = index.get(uid) else { continue };
                        current = Some((uid, i));
                        i
                    }
                };
                items[slot].push(item_from_row(row));
            }
            drop(index);
            drop(uids);
            for ((_, o), its) in orders.iter_mut().zip(items) {
                o.items = its;
            }
            tx.commit()
                .await
                .map_err(|e| map_pg("ending a read transaction", e))?;
            Ok(orders)
        })
        .await;
        self.settle(client, result)
    }

    async fn recent_summaries(&self, limit: usize) -> Result<Vec<OrderSummary>, RepositoryError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let result = tokio::time::timeout(self.query_timeout, async {
            let rows = client
                .query(
                    "SELECT o.order_uid, o.date_created,
                        (SELECT count(*) FROM items i WHERE i.order_uid = o.order_uid),
                        p.amount, p.currency
                 FROM orders o JOIN payments p USING (order_uid)
                 ORDER BY o.ingest_seq DESC LIMIT $1",
                    &[&limit],
                )
                .await
                .map_err(|e| map_pg("reading recent order summaries", e))?;
            Ok(rows
                .iter()
                .map(|r| OrderSummary {
                    order_uid: r.get(0),
                    date_created: r.get(1),
                    items: r.get(2),
                    amount: r.get(3),
                    currency: r.get(4),
                })
                .collect())
        })
        .await;
        self.settle(client, result)
    }

    async fn stored_offsets(&self, topic: &str) -> Result<BTreeMap<i32, i64>, RepositoryError> {
        let client = self.client().await?;
        let result = tokio::time::timeout(self.query_timeout, async {
            let rows = client
                .query(
                    "SELECT partition, next_offset FROM consumer_offsets WHERE topic = $1",
                    &[&topic],
                )
                .await
                .map_err(|e| map_pg("reading consumer offsets", e))?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
        .await;
        self.settle(client, result)
    }

    async fn offset_marks(
        &self,
        topic: &str,
    ) -> Result<BTreeMap<i32, RecordMark>, RepositoryError> {
        let client = self.client().await?;
        let result = tokio::time::timeout(self.query_timeout, async {
            let rows = client
                .query(
                    "SELECT partition, mark_offset, mark_digest FROM consumer_offsets
                     WHERE topic = $1 AND mark_offset IS NOT NULL AND mark_digest IS NOT NULL",
                    &[&topic],
                )
                .await
                .map_err(|e| map_pg("reading offset marks", e))?;
            Ok(rows
                .iter()
                .map(|r| {
                    (
                        r.get(0),
                        RecordMark {
                            offset: r.get(1),
                            digest: r.get(2),
                        },
                    )
                })
                .collect())
        })
        .await;
        self.settle(client, result)
    }

    async fn rejected(
        &self,
        filter: &RejectedFilter,
    ) -> Result<Vec<RejectedMessage>, RepositoryError> {
        let client = self.client().await?;
        let result = tokio::time::timeout(self.query_timeout, async {
            let reason = filter.reason.map(RejectReason::as_str);
            let after = filter.after_id.unwrap_or(0);
            let up_to = filter.up_to_id.unwrap_or(i64::MAX);
            let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
            let rows = client
                .query(
                    "SELECT id, topic, partition, \"offset\", reason, detail, payload, received_at,
                        payload_size, payload_sha256
                 FROM rejected_messages
                 WHERE ($1::text IS NULL OR reason = $1) AND id > $2 AND id <= $4
                 ORDER BY id LIMIT $3",
                    &[&reason, &after, &limit, &up_to],
                )
                .await
                .map_err(|e| map_pg("reading rejected messages", e))?;
            Ok(rows
                .iter()
                .map(|r| RejectedMessage {
                    id: r.get(0),
                    position: Position {
                        topic: r.get(1),
                        partition: r.get(2),
                        offset: r.get(3),
                    },
                    reason: r.get(4),
                    detail: r.get(5),
                    payload: r.get::<_, Option<Vec<u8>>>(6).map(Bytes::from),
                    received_at: r.get(7),
                    truncated: match (r.get(8), r.get(9)) {
                        (Some(size), Some(sha256)) => Some(PayloadDigest { size, sha256 }),
                        _ => None,
                    },
                })
                .collect())
        })
        .await;
        self.settle(client, result)
    }

    async fn last_rejected_id(&self) -> Result<Option<i64>, RepositoryError> {
        let client = self.client().await?;
        let result = tokio::time::timeout(self.query_timeout, async {
            client
                .query_one("SELECT max(id) FROM rejected_messages", &[])
                .await
                .map(|r| r.get(0))
                .map_err(|e| map_pg("reading the last rejected id", e))
        })
        .await;
        self.settle(client, result)
    }

    async fn rejected_counts(&self) -> Result<BTreeMap<String, i64>, RepositoryError> {
        let client = self.client().await?;
        let result = tokio::time::timeout(self.query_timeout, async {
            let rows = client
                .query(
                    "SELECT reason, count(*) FROM rejected_messages GROUP BY reason",
                    &[],
                )
                .await
                .map_err(|e| map_pg("counting rejected messages", e))?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
        .await;
        self.settle(client, result)
    }

    async fn ping(&self) -> Result<(), RepositoryError> {
        let client = self.client().await?;
        let result = tokio::time::timeout(self.query_timeout, async {
            client
                .simple_query("SELECT 1")
                .await
                .map_err(|e| map_pg("pinging", e))?;
            Ok(())
        })
        .await;
        self.settle(client, result)
    }
}
