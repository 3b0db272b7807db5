#![allow(clippy::unwrap_used)]
//! Validation rules, one test per rule family, and property tests over generated orders.

use orders_domain::sample::{generated_order, reference_order};
use orders_domain::validation::{DEFAULT_MAX_MESSAGE_BYTES, decode_order};
use orders_domain::{DecodeError, Order, REFERENCE_ORDER_JSON, RejectReason, validate_order};
use proptest::prelude::*;
use serde_json::{Value, json};

fn fixture() -> Value {
    serde_json::from_str(REFERENCE_ORDER_JSON).unwrap()
}

fn decode_value(v: &Value) -> Result<Order, DecodeError> {
    decode_order(Some(v.to_string().as_bytes()), DEFAULT_MAX_MESSAGE_BYTES)
}

/// The paths of the broken rules.
fn invalid_paths(v: &Value) -> Vec<String> {
    match decode_value(v) {
        Err(DecodeError::Invalid(v)) => v.errors.into_iter().map(|e| e.path).collect(),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn with(mut v: Value, pointer: &str, new: Value) -> Value {
    *v.pointer_mut(pointer).unwrap() = new;
    v
}

#[test]
fn fixture_round_trips_to_identical_json() {
    let order: Order = serde_json::from_str(REFERENCE_ORDER_JSON).unwrap();
    assert_eq!(serde_json::to_value(&order).unwrap(), fixture());
    assert!(validate_order(&order).is_ok());
    assert_eq!(decode_value(&fixture()).unwrap(), reference_order());
}

#[test]
fn every_field_is_required() {
    let base = fixture();
    let mut pointers = vec![];
    for (k, v) in base.as_object().unwrap() {
        pointers.push(format!("/{k}"));
        if let Some(obj) = v.as_object() {
            pointers.extend(obj.keys().map(|kk| format!("/{k}/{kk}")));
        }
    }
    pointers.extend(
        base["items"][0]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| format!("/items/0/{k}")),
    );
    assert!(pointers.len() > 35, "all fixture fields covered");
    for p in pointers {
        let mut v = base.clone();
        let (parent, key) = p.rsplit_once('/').unwrap();
        v.pointer_mut(if parent.is_empty() { "" } else { parent })
            .unwrap()
            .as_object_mut()
            .unwrap()
            .remove(key);
        let err = decode_value(&v).unwrap_err();
        assert_eq!(err.reason(), RejectReason::NotOrder, "{p}: {err}");
        assert!(
            err.to_string().contains(&format!("missing field `{key}`")),
            "{p}: {err}"
        );
    }
}

#[test]
fn wrong_json_types_name_the_field() {
    let v = with(fixture(), "/items/0/price", json!("453"));
    let err = decode_value(&v).unwrap_err();
    assert_eq!(err.reason(), RejectReason::NotOrder);
    assert!(err.to_string().contains("items[0].price"), "{err}");
    let v = with(fixture(), "/payment", json!([]));
    assert!(
        decode_value(&v)
            .unwrap_err()
            .to_string()
            .contains("payment")
    );
}

#[test]
fn unknown_fields_are_rejected() {
    let mut v = fixture();
    v["delivery"]
        .as_object_mut()
        .unwrap()
        .insert("extra".into(), json!(1));
    let err = decode_value(&v).unwrap_err();
    assert_eq!(err.reason(), RejectReason::NotOrder);
    assert!(err.to_string().contains("unknown field `extra`"), "{err}");
}

#[test]
fn order_uid_rules() {
    for bad in ["", "has space", "semi;colon", "<script>", &"x".repeat(65)] {
        let v = with(fixture(), "/order_uid", json!(bad));
        assert_eq!(invalid_paths(&v), vec!["order_uid"], "{bad:?}");
    }
    let v = with(fixture(), "/order_uid", json!("A-z_09".repeat(10)));
    assert!(decode_value(&v).is_ok());
}

#[test]
fn empty_strings_only_where_allowed() {
    let v = with(
        with(fixture(), "/payment/request_id", json!("")),
        "/internal_signature",
        json!(""),
    );
    assert!(decode_value(&v).is_ok());
    for p in [
        "/entry",
        "/delivery/name",
        "/payment/bank",
        "/items/0/brand",
        "/customer_id",
    ] {
        let v = with(fixture(), p, json!(""));
        let want = p
            .trim_start_matches('/')
            .replace('/', ".")
            .replace(".0.", "[0].");
        assert_eq!(invalid_paths(&v), vec![want], "{p}");
    }
}

#[test]
fn long_strings_are_bounded() {
    let v = with(fixture(), "/delivery/address", json!("a".repeat(513)));
    assert_eq!(invalid_paths(&v), vec!["delivery.address"]);
}

#[test]
fn email_phone_currency_date() {
    assert_eq!(
        invalid_paths(&with(fixture(), "/delivery/email", json!("not-an-email"))),
        vec!["delivery.email"]
    );
    assert_eq!(
        invalid_paths(&with(fixture(), "/delivery/phone", json!("9720000000"))),
        vec!["delivery.phone"]
    );
    assert_eq!(
        invalid_paths(&with(fixture(), "/delivery/phone", json!("+97a0000000"))),
        vec!["delivery.phone"]
    );
    assert_eq!(
        invalid_paths(&with(fixture(), "/payment/currency", json!("usd"))),
        vec!["payment.currency"]
    );
    let err = decode_value(&with(fixture(), "/date_created", json!("26.11.2021"))).unwrap_err();
    assert_eq!(err.reason(), RejectReason::NotOrder);
    assert!(err.to_string().contains("date_created"), "{err}");
    // Offsets are accepted and normalised to UTC.
    let o = decode_value(&with(
        fixture(),
        "/date_created",
        json!("2021-11-26T09:22:19+03:00"),
    ))
    .unwrap();
    assert_eq!(o.date_created, reference_order().date_created);
}

#[test]
fn money_and_counts_are_non_negative() {
    let mut v = with(fixture(), "/items/0/price", json!(-1));
    assert_eq!(invalid_paths(&v), vec!["items[0].price"]);
    v = with(fixture(), "/sm_id", json!(-5));
    assert_eq!(invalid_paths(&v), vec!["sm_id"]);
    v = with(fixture(), "/items/0/sale", json!(101));
    assert_eq!(invalid_paths(&v), vec!["items[0].sale"]);
}

#[test]
fn items_count_and_track_number() {
    let v = with(fixture(), "/items", json!([]));
    let paths = invalid_paths(&v);
    assert!(paths.contains(&"items".to_string()), "{paths:?}");
    let v = with(fixture(), "/items/0/track_number", json!("OTHER"));
    assert_eq!(invalid_paths(&v), vec!["items[0].track_number"]);
    let mut big = generated_order("big", 1, 1001);
    assert!(
        validate_order(&big)
            .unwrap_err()
            .errors
            .iter()
            .any(|e| e.path == "items")
    );
    big.items.truncate(1000);
    big.payment.goods_total = big.items.iter().map(|i| i.total_price).sum();
    big.payment.amount = big.payment.goods_total + big.payment.delivery_cost;
    assert!(validate_order(&big).is_ok());
}

#[test]
fn totals_must_add_up() {
    let v = with(fixture(), "/payment/amount", json!(1818));
    assert_eq!(invalid_paths(&v), vec!["payment.amount"]);
    let v = with(
        with(fixture(), "/payment/goods_total", json!(318)),
        "/payment/amount",
        json!(1818),
    );
    assert_eq!(invalid_paths(&v), vec!["payment.goods_total"]);
}

#[test]
fn raw_message_kinds() {
    let limit = DEFAULT_MAX_MESSAGE_BYTES;
    assert_eq!(
        decode_order(None, limit).unwrap_err().reason(),
        RejectReason::Tombstone
    );
    assert_eq!(
        decode_order(Some(b""), limit).unwrap_err().reason(),
        RejectReason::Empty
    );
    assert_eq!(
        decode_order(Some(&[0xff, 0xfe]), limit)
            .unwrap_err()
            .reason(),
        RejectReason::NotUtf8
    );
    assert_eq!(
        decode_order(Some(b"{not json"), limit)
            .unwrap_err()
            .reason(),
        RejectReason::NotJson
    );
    assert_eq!(
        decode_order(Some(b"[1,2]"), limit).unwrap_err().reason(),
        RejectReason::NotOrder
    );
    assert_eq!(
        decode_order(Some(b"{\"a\":1}"), limit)
            .unwrap_err()
            .reason(),
        RejectReason::NotOrder
    );
    let big = vec![b' '; 101];
    let err = decode_order(Some(&big), 100).unwrap_err();
    assert_eq!(
        err,
        DecodeError::Oversize {
            size: 101,
            limit: 100
        }
    );
}

#[test]
fn all_errors_are_reported_together() {
    let v = with(
        with(fixture(), "/payment/currency", json!("us")),
        "/delivery/email",
        json!("nobody"),
    );
    assert_eq!(
        invalid_paths(&v),
        vec!["delivery.email", "payment.currency"]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn generated_orders_are_valid_and_round_trip(n in 0u64..u32::MAX as u64, items in 1usize..40, prefix in "[a-zA-Z0-9_-]{1,20}") {
        let order = generated_order(&prefix, n, items);
        prop_assert!(validate_order(&order).is_ok(), "{:?}", validate_order(&order));
        let json = serde_json::to_string(&order).unwrap();
        let back = decode_order(Some(json.as_bytes()), DEFAULT_MAX_MESSAGE_BYTES).unwrap();
        prop_assert_eq!(back, order);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_order(Some(&bytes), DEFAULT_MAX_MESSAGE_BYTES);
    }

    #[test]
    fn arbitrary_field_values_are_valid_when_rules_hold(
        name in "[^\u{0}]{1,256}",
        city in "[a-zA-Z ]{1,128}",
        price in 0i64..1_000_000,
        sale in 0i32..=100,
        fee in 0i64..10_000,
    ) {
        let mut order = reference_order();
        order.delivery.name = name.into();
        order.delivery.city = city.into();
        let item = &mut order.items[0];
        item.price = price;
        item.sale = sale;
        item.total_price = price * (100 - sale as i64) / 100;
        order.payment.goods_total = item.total_price;
        order.payment.custom_fee = fee;
        order.payment.amount = order.payment.goods_total + order.payment.delivery_cost + fee;
        prop_assert!(validate_order(&order).is_ok(), "{:?}", validate_order(&order));
        let json = serde_json::to_vec(&order).unwrap();
        prop_assert_eq!(decode_order(Some(&json), DEFAULT_MAX_MESSAGE_BYTES).unwrap(), order);
    }
}
