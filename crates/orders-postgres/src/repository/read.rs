//! Orders as the API and the warm-up read them.

use std::collections::HashMap;

use deadpool_postgres::Object;
use orders_domain::stored_json::{
    DeliveryFields, ItemFields, OrderFields, PaymentFields, write_order_json,
};
use orders_domain::{Item, Order, OrderJson, OrderSummary, RepositoryError, StoreSeq, StoredJson};
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, Row};

use crate::error::map_pg;

/// Columns of `order_from_row`; the number of them is the index of any column added after.
const ORDER_COLUMNS: usize = 31;
// `extra` (unknown fields, NULL when none) as text: a json value's text is what was stored.
const SELECT_ORDER_COLUMNS: &str = "
SELECT o.order_uid, o.track_number, o.entry, o.locale, o.internal_signature, o.customer_id,
       o.delivery_service, o.shardkey, o.sm_id, o.date_created, o.oof_shard,
       d.name, d.phone, d.zip, d.city, d.address, d.region, d.email,
       p.transaction, p.request_id, p.currency, p.provider, p.amount, p.payment_dt, p.bank,
       p.delivery_cost, p.goods_total, p.custom_fee,
       o.extra::text, d.extra::text, p.extra::text";
const FROM_ORDERS: &str =
    "FROM orders o JOIN deliveries d USING (order_uid) JOIN payments p USING (order_uid)";

const SELECT_ITEM_COLUMNS: &str = "
SELECT order_uid, chrt_id, track_number, price, rid, name, sale, size, total_price, nm_id, brand,
       status, extra::text
FROM items";

/// The order of a `SELECT_ORDER_COLUMNS` row, its items left empty (the same columns as
/// [`order_fields`], which warm-up writes JSON from).
fn order_from_row(row: &Row) -> Result<Order, RepositoryError> {
    order_fields(row)
        .to_order(Vec::new())
        .map_err(|e| RepositoryError::other("reading the unknown fields of an order", e))
}

/// The item of a `SELECT_ITEM_COLUMNS` row (its column 0, the order's uid, is left to the caller).
fn item_from_row(row: &Row) -> Result<Item, RepositoryError> {
    item_fields(row)
        .to_item()
        .map_err(|e| RepositoryError::other("reading the unknown fields of an item", e))
}

pub(super) async fn get(
    client: &Object,
    order_uid: &str,
) -> Result<Option<Order>, RepositoryError> {
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
    let Some(row) = row else { return Ok(None) };
    Ok(Some(Order {
        items: items.iter().map(item_from_row).collect::<Result<_, _>>()?,
        ..order_from_row(&row)?
    }))
}

pub(super) async fn recent(
    client: &mut Object,
    before: Option<StoreSeq>,
    limit: usize,
) -> Result<Vec<(StoreSeq, Order)>, RepositoryError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let before = before.map_or(i64::MAX, |s| s.0);
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
        .map(|r| Ok((StoreSeq(r.get(ORDER_COLUMNS)), order_from_row(r)?)))
        .collect::<Result<_, RepositoryError>>()?;
    drop(rows);
    // By the page's uids: an index lookup per order, whatever the plan for the page.
    let uids: Vec<&str> = orders.iter().map(|(_, o)| o.order_uid.as_str()).collect();
    let q = format!("{SELECT_ITEM_COLUMNS} WHERE order_uid = ANY($1) ORDER BY order_uid, position");
    let rows = tx
        .query(&q, &[&uids])
        .await
        .map_err(|e| map_pg("reading recent items", e))?;
    // Rows come grouped by uid: find each group's order once, borrowing the uid from the
    // row (no allocation per item row).
    let index: HashMap<&str, usize> = uids.iter().enumerate().map(|(i, u)| (*u, i)).collect();
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
        items[slot].push(item_from_row(row)?);
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
}

/// Warm-up's page boundaries: of the `limit` newest orders stored before `before`, the
/// `ingest_seq` of every `page`-th (the top of each page) and of the last one. An index-only
/// scan of `ingest_seq` (8 bytes an order), so that the pages can then be read in parallel.
const WARM_PAGE_TOPS: &str = "
SELECT ingest_seq, n FROM (
    SELECT ingest_seq, row_number() OVER (ORDER BY ingest_seq DESC) AS n
    FROM orders WHERE ingest_seq < $1 ORDER BY ingest_seq DESC LIMIT $2) s
WHERE (n - 1) % $3 = 0 OR n = $2
ORDER BY ingest_seq DESC";

/// The orders of one warm-up page (`ingest_seq` in `[$1, $2]`), newest first. Each delivery
/// and payment is fetched by its primary key (LATERAL ... LIMIT 1, which the planner cannot
/// turn into a join): as plain joins, the generic plan of this prepared statement hashed the
/// whole payments table for every page.
const WARM_ORDERS: &str = "
SELECT o.order_uid, o.track_number, o.entry, o.locale, o.internal_signature, o.customer_id,
       o.delivery_service, o.shardkey, o.sm_id, o.date_created, o.oof_shard,
       d.name, d.phone, d.zip, d.city, d.address, d.region, d.email,
       p.transaction, p.request_id, p.currency, p.provider, p.amount, p.payment_dt, p.bank,
       p.delivery_cost, p.goods_total, p.custom_fee,
       o.extra::text, d.extra::text, p.extra::text, o.ingest_seq
FROM orders o
CROSS JOIN LATERAL (
    SELECT name, phone, zip, city, address, region, email, extra
    FROM deliveries WHERE order_uid = o.order_uid LIMIT 1) d
CROSS JOIN LATERAL (
    SELECT transaction, request_id, currency, provider, amount, payment_dt, bank, delivery_cost,
           goods_total, custom_fee, extra
    FROM payments WHERE order_uid = o.order_uid LIMIT 1) p
WHERE o.ingest_seq BETWEEN $1 AND $2
ORDER BY o.ingest_seq DESC";

/// The items of one warm-up page, grouped by order (an index lookup per order: joined to
/// `orders` instead, the planner chose a scan of all items for every page).
const WARM_ITEMS: &str = "
SELECT order_uid, chrt_id, track_number, price, rid, name, sale, size, total_price, nm_id, brand,
       status, extra::text
FROM items
WHERE order_uid = ANY(ARRAY(SELECT order_uid FROM orders WHERE ingest_seq BETWEEN $1 AND $2))
ORDER BY order_uid, position";

/// Warm-up's pages, newest first, as inclusive `ingest_seq` ranges of about `page` orders
/// each, covering the `limit` newest orders stored before `before`.
pub(super) async fn warm_pages(
    client: &Object,
    before: Option<StoreSeq>,
    limit: usize,
    page: usize,
) -> Result<Vec<(i64, i64)>, RepositoryError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let page = i64::try_from(page.max(1)).unwrap_or(i64::MAX);
    let before = before.map_or(i64::MAX, |s| s.0);
    let stmt = client
        .prepare_cached(WARM_PAGE_TOPS)
        .await
        .map_err(|e| map_pg("preparing the warm-up's pages", e))?;
    let rows = client
        .query(&stmt, &[&before, &limit, &page])
        .await
        .map_err(|e| map_pg("reading the warm-up's pages", e))?;
    let tops: Vec<i64> = rows
        .iter()
        .filter(|r| (r.get::<_, i64>(1) - 1) % page == 0)
        .map(|r| r.get(0))
        .collect();
    // The oldest order to read; none when fewer than `limit` are stored (then the last page
    // reaches down to the first order).
    let floor = rows
        .iter()
        .find(|r| r.get::<_, i64>(1) == limit)
        .map_or(i64::MIN, |r| r.get(0));
    Ok(tops
        .iter()
        .enumerate()
        .map(|(k, &high)| (tops.get(k + 1).map_or(floor, |next| next + 1), high))
        .collect())
}

fn order_fields(row: &Row) -> OrderFields<'_> {
    OrderFields {
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
        delivery: DeliveryFields {
            name: row.get(11),
            phone: row.get(12),
            zip: row.get(13),
            city: row.get(14),
            address: row.get(15),
            region: row.get(16),
            email: row.get(17),
            extra: row.get(29),
        },
        payment: PaymentFields {
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
            extra: row.get(30),
        },
        extra: row.get(28),
    }
}

/// The item of a `SELECT_ITEM_COLUMNS` row, borrowed.
fn item_fields(row: &Row) -> ItemFields<'_> {
    ItemFields {
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
        extra: row.get(12),
    }
}

/// One warm-up page (`ingest_seq` in `[low, high]`) as the JSON the API serves, written
/// straight from the rows (no `Order` in between; [`write_order_json`] writes what serde
/// writes for the `Order` that [`get`] returns).
///
/// Both queries go out at once on the connection (one round trip), without a transaction:
/// the items query runs after the orders query, so its snapshot holds every item of every
/// order the first one saw (an order and its items are committed together and never
/// change); items of an order committed in between have no order row here and are ignored.
pub(super) async fn json_page(
    client: &Object,
    low: i64,
    high: i64,
) -> Result<Vec<StoredJson>, RepositoryError> {
    let (orders_stmt, items_stmt) = futures::try_join!(
        client.prepare_cached(WARM_ORDERS),
        client.prepare_cached(WARM_ITEMS)
    )
    .map_err(|e| map_pg("preparing the warm-up's queries", e))?;
    let range: [&(dyn ToSql + Sync); 2] = [&low, &high];
    let (orders, items) = futures::try_join!(
        client.query(&orders_stmt, &range),
        client.query(&items_stmt, &range)
    )
    .map_err(|e| map_pg("reading a warm-up page", e))?;
    // Each order's item rows: contiguous, since they come sorted by uid.
    let mut by_uid: HashMap<&str, std::ops::Range<usize>> = HashMap::with_capacity(orders.len());
    let mut start = 0;
    while start < items.len() {
        let uid: &str = items[start].get(0);
        let end = items[start..]
            .iter()
            .position(|r| r.get::<_, &str>(0) != uid)
            .map_or(items.len(), |n| start + n);
        by_uid.insert(uid, start..end);
        start = end;
    }
    let mut page = Vec::with_capacity(orders.len());
    let mut buf = Vec::with_capacity(8 * 1024);
    for row in &orders {
        let fields = order_fields(row);
        let its = by_uid.get(fields.order_uid).cloned().unwrap_or(0..0);
        write_order_json(&mut buf, &fields, items[its].iter().map(item_fields))
            .map_err(|e| RepositoryError::other("reading the unknown fields of an order", e))?;
        page.push(StoredJson {
            seq: StoreSeq(row.get(ORDER_COLUMNS)),
            order_uid: fields.order_uid.to_owned(),
            json: OrderJson::from_json(&buf),
        });
    }
    Ok(page)
}

pub(super) async fn recent_summaries(
    client: &Object,
    before: Option<StoreSeq>,
    limit: usize,
) -> Result<Vec<(StoreSeq, OrderSummary)>, RepositoryError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    // Keyset paging on ingest_seq (its unique index): a page costs the same at any depth.
    let before = before.map_or(i64::MAX, |s| s.0);
    let rows = client
        .query(
            "SELECT o.ingest_seq, o.order_uid, o.date_created,
                    (SELECT count(*) FROM items i WHERE i.order_uid = o.order_uid),
                    p.amount, p.currency
             FROM orders o JOIN payments p USING (order_uid)
             WHERE o.ingest_seq < $1
             ORDER BY o.ingest_seq DESC LIMIT $2",
            &[&before, &limit],
        )
        .await
        .map_err(|e| map_pg("reading recent order summaries", e))?;
    Ok(rows
        .iter()
        .map(|r| {
            let summary = OrderSummary {
                order_uid: r.get(1),
                date_created: r.get(2),
                items: r.get(3),
                amount: r.get(4),
                currency: r.get(5),
            };
            (StoreSeq(r.get(0)), summary)
        })
        .collect())
}

pub(super) async fn ping(client: &Object) -> Result<(), RepositoryError> {
    client
        .simple_query("SELECT 1")
        .await
        .map_err(|e| map_pg("pinging", e))?;
    Ok(())
}
