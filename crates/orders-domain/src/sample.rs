//! Sample orders: the reference message and deterministic generated ones with consistent
//! totals, for the producer, the tests and the benchmarks.

use chrono::{DateTime, TimeZone, Utc};

use crate::model::{Delivery, Item, Order, Payment};

/// The reference order (`fixtures/order.json`).
pub fn reference_order() -> Order {
    // The fixture is part of the source tree and checked by tests: failing here is a build bug.
    #[allow(clippy::expect_used)]
    serde_json::from_str(crate::REFERENCE_ORDER_JSON).expect("fixtures/order.json is a valid order")
}

/// A valid order with `items` items whose uid is `{prefix}{n}`; the same inputs give the same order.
pub fn generated_order(prefix: &str, n: u64, items: usize) -> Order {
    let uid = format!("{prefix}{n}");
    let track = format!("TRK{n:010}");
    let items: Vec<Item> = (0..items.max(1))
        .map(|i| {
            let price = 100 + ((n as i64 * 7 + i as i64 * 13) % 5000);
            let sale = ((n + i as u64) % 50) as i32;
            Item {
                chrt_id: 9_000_000 + n as i64 + i as i64,
                track_number: track.clone(),
                price,
                rid: format!("rid{n}x{i}"),
                name: format!("Item {i} of order {n}"),
                sale,
                size: "0".into(),
                total_price: price * (100 - sale as i64) / 100,
                nm_id: 2_000_000 + i as i64,
                brand: "Vivienne Sabo".into(),
                status: 202,
            }
        })
        .collect();
    let goods_total: i64 = items.iter().map(|i| i.total_price).sum();
    let delivery_cost = 500 + (n as i64 % 1000);
    let created: DateTime<Utc> = Utc
        .timestamp_opt(1_637_907_727 + n as i64, 0)
        .single()
        .unwrap_or_default();
    Order {
        order_uid: uid.clone(),
        track_number: track,
        entry: "WBIL".into(),
        delivery: Delivery {
            name: "Test Testov".into(),
            phone: "+9720000000".into(),
            zip: "2639809".into(),
            city: "Kiryat Mozkin".into(),
            address: format!("Ploshad Mira {}", n % 100),
            region: "Kraiot".into(),
            email: "test@gmail.com".into(),
        },
        payment: Payment {
            transaction: uid,
            request_id: String::new(),
            currency: "USD".into(),
            provider: "wbpay".into(),
            amount: goods_total + delivery_cost,
            payment_dt: 1_637_907_727 + n as i64,
            bank: "alpha".into(),
            delivery_cost,
            goods_total,
            custom_fee: 0,
        },
        items,
        locale: "en".into(),
        internal_signature: String::new(),
        customer_id: format!("customer{}", n % 1000),
        delivery_service: "meest".into(),
        shardkey: (n % 10).to_string(),
        sm_id: 99,
        date_created: created,
        oof_shard: "1".into(),
    }
}
