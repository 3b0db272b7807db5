//! Sample orders: the reference message and deterministic generated ones with consistent
//! totals, for the producer, the tests and the benchmarks.

use chrono::{DateTime, TimeZone, Utc};

use compact_str::format_compact;

use crate::model::{Delivery, Item, Order, Payment, Text};
use crate::unknown::Extra;

/// The reference order (`fixtures/order.json`).
pub fn reference_order() -> Order {
    // The fixture is part of the source tree and checked by tests: failing here is a build bug.
    #[allow(clippy::expect_used)]
    serde_json::from_str(crate::REFERENCE_ORDER_JSON).expect("fixtures/order.json is a valid order")
}

/// A valid order with `items` items whose uid is `{prefix}{n}`; the same inputs give the same order.
pub fn generated_order(prefix: &str, n: u64, items: usize) -> Order {
    let uid = format_compact!("{prefix}{n}");
    let track = format_compact!("TRK{n:010}");
    let items: Vec<Item> = (0..items.max(1))
        .map(|i| {
            let price = 100 + ((n as i64 * 7 + i as i64 * 13) % 5000);
            let sale = ((n + i as u64) % 50) as i32;
            Item {
                chrt_id: 9_000_000 + n as i64 + i as i64,
                track_number: track.clone(),
                price,
                rid: format_compact!("rid{n}x{i}"),
                name: format_compact!("Item {i} of order {n}"),
                sale,
                size: "0".into(),
                total_price: price * (100 - sale as i64) / 100,
                nm_id: 2_000_000 + i as i64,
                brand: "Vivienne Sabo".into(),
                status: 202,
                extra: Extra::NONE,
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
            address: format_compact!("Ploshad Mira {}", n % 100),
            region: "Kraiot".into(),
            email: "test@gmail.com".into(),
            extra: Extra::NONE,
        },
        payment: Payment {
            transaction: uid,
            request_id: Text::default(),
            currency: "USD".into(),
            provider: "wbpay".into(),
            amount: goods_total + delivery_cost,
            payment_dt: 1_637_907_727 + n as i64,
            bank: "alpha".into(),
            delivery_cost,
            goods_total,
            custom_fee: 0,
            extra: Extra::NONE,
        },
        items,
        locale: "en".into(),
        internal_signature: Text::default(),
        customer_id: format_compact!("customer{}", n % 1000),
        delivery_service: "meest".into(),
        shardkey: format_compact!("{}", n % 10),
        sm_id: 99,
        date_created: created,
        oof_shard: "1".into(),
        extra: Extra::NONE,
    }
}

/// [`generated_order`] with fields the model does not know at every depth (the order, its
/// delivery, its payment, each item), as a producer that has evolved its message sends them:
/// nested values, a number beyond `f64` precision, an exponent, escapes, `null`. Serialized,
/// it is that message; decoded under policy `keep`, it is this order again.
pub fn order_with_unknown_fields(prefix: &str, n: u64, items: usize) -> Order {
    let mut o = generated_order(prefix, n, items);
    // The values are literals, each one JSON value: building them cannot fail.
    #[allow(clippy::expect_used)]
    let extra = |fields: &[(&str, &str)]| {
        Extra::from_fields(fields.iter().copied()).expect("literal unknown fields")
    };
    o.extra = extra(&[
        ("loyalty_points", "12"),
        (
            "campaign",
            r#"{"id":"spring","tags":["a","b"],"weight":1.50,"nested":{"deep":[[1],[2,{"x":null}]]}}"#,
        ),
        (
            "precise",
            "123456789012345678901234567890.123456789012345678901",
        ),
    ]);
    o.delivery.extra = extra(&[("floor", "3"), ("geo", r#"{"lat":55.7558,"lon":37.6173}"#)]);
    o.payment.extra = extra(&[("installments", "null"), ("fx_rate", "1E-7")]);
    for (i, item) in o.items.iter_mut().enumerate() {
        item.extra = extra(&[
            ("gift_wrap", if i % 2 == 0 { "true" } else { "false" }),
            ("note", r#""fragile \u00e9 \"quoted\" \\ é""#),
        ]);
    }
    o
}

/// Items per generated order, by `n % 3`: the mix the producer, the tests and the benchmarks use.
pub const ITEM_MIX: [usize; 3] = [1, 3, 10];

/// [`generated_order`] with [`ITEM_MIX`] items.
pub fn mixed_order(prefix: &str, n: u64) -> Order {
    generated_order(prefix, n, ITEM_MIX[(n % 3) as usize])
}

/// An order under the default size bound that breaks one rule per item and quotes a long
/// field in each: 1,000 items whose `track_number` differs from the order's 600,000-character
/// one. It once made the service build gigabytes of error text (issue 14, item 1).
pub fn many_errors_message() -> Vec<u8> {
    let mut o = reference_order();
    o.order_uid = "many-errors-order".into();
    o.track_number = "T".repeat(600_000).into();
    let item = o.items[0].clone();
    o.items = vec![item; crate::validation::MAX_ITEMS];
    serde_json::to_vec(&o).unwrap_or_default()
}

/// One message of each kind the service must reject, with the reason it must be rejected for:
/// tombstone, empty, not UTF-8, not JSON, JSON that is not an order, an invalid order
/// (totals that do not add up), an oversize one (over the default 1 MiB bound), and crafted
/// ones: an order with bytes after it, two orders in one message, NUL in a text field and in
/// an unknown field's name, and [`many_errors_message`].
pub fn invalid_messages() -> Vec<(crate::RejectReason, Option<Vec<u8>>)> {
    use crate::RejectReason as R;
    let mut bad_total = reference_order();
    bad_total.order_uid = "invalid-total-order".into();
    bad_total.payment.amount = 1;
    let reference = crate::REFERENCE_ORDER_JSON.trim_end();
    let mut oversize = crate::REFERENCE_ORDER_JSON.as_bytes().to_vec();
    oversize.resize(crate::validation::DEFAULT_MAX_MESSAGE_BYTES + 10, b' ');
    vec![
        (R::Tombstone, None),
        (R::Empty, Some(vec![])),
        (R::NotUtf8, Some(vec![0xff, 0xfe, 0xfd])),
        (R::NotJson, Some(b"{\"order_uid\": ".to_vec())),
        (R::NotOrder, Some(b"{\"hello\": \"world\"}".to_vec())),
        (R::Invalid, serde_json::to_vec(&bad_total).ok()),
        (R::Oversize, Some(oversize)),
        (
            R::NotJson,
            Some(format!("{reference} trailing").into_bytes()),
        ),
        (
            R::NotJson,
            Some(format!("{reference}{reference}").into_bytes()),
        ),
        (
            R::Invalid,
            Some(
                reference
                    .replacen("\"Test Testov\"", "\"Test\\u0000Testov\"", 1)
                    .into_bytes(),
            ),
        ),
        (
            R::NotOrder,
            Some(
                reference
                    .replacen('{', "{\"x\\u0000y\": 1, ", 1)
                    .into_bytes(),
            ),
        ),
        (R::Invalid, Some(many_errors_message())),
    ]
}
