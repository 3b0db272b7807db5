//! Orders as the API and the warm-up read them.

use std::collections::HashMap;

use deadpool_postgres::Object;
use orders_domain::{
    Delivery, Extra, Item, Order, OrderSummary, Payment, RepositoryError, StoreSeq,
};
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

/// The unknown fields stored in column `i` (NULL: none).
fn extra_at(row: &Row, i: usize) -> Result<Extra, RepositoryError> {
    match row.get::<_, Option<&str>>(i) {
        None => Ok(Extra::NONE),
        Some(text) => Extra::from_json_object(text)
            .map_err(|e| RepositoryError::other("reading the unknown fields of an order", e)),
    }
}

fn order_from_row(row: &Row) -> Result<Order, RepositoryError> {
    Ok(Order {
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
            extra: extra_at(row, 29)?,
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
            extra: extra_at(row, 30)?,
        },
        items: Vec::new(),
        extra: extra_at(row, 28)?,
    })
}

/// The item of a `SELECT_ITEM_COLUMNS` row (its column 0, the order's uid, is left to the caller).
fn item_from_row(row: &Row) -> Result<Item, RepositoryError> {
    Ok(Item {
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
        extra: extra_at(row, 12)?,
    })
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
