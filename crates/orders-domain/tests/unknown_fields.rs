#![allow(clippy::unwrap_used)]
//! Fields the model does not know (issue 13): kept losslessly and served back in place under
//! `keep`, refused as before under `reject`, and never a way around a known field's rules.

use orders_domain::sample::{generated_order, order_with_unknown_fields, reference_order};
use orders_domain::validation::{
    DEFAULT_MAX_MESSAGE_BYTES, DELIVERY_FIELDS, ITEM_FIELDS, ORDER_FIELDS, PAYMENT_FIELDS,
};
use orders_domain::{DecodeError, Extra, RejectReason, UnknownFields, decode_order_with};
use proptest::prelude::*;
use serde_json::{Value, json};

fn keep(bytes: &[u8]) -> Result<orders_domain::Order, DecodeError> {
    decode_order_with(Some(bytes), DEFAULT_MAX_MESSAGE_BYTES, UnknownFields::Keep)
}

fn reject(bytes: &[u8]) -> Result<orders_domain::Order, DecodeError> {
    decode_order_with(
        Some(bytes),
        DEFAULT_MAX_MESSAGE_BYTES,
        UnknownFields::Reject,
    )
}

fn fixture() -> Value {
    serde_json::from_str(orders_domain::REFERENCE_ORDER_JSON).unwrap()
}

#[test]
fn the_known_field_lists_are_the_models() {
    let v = serde_json::to_value(reference_order()).unwrap();
    let keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    let sorted = |l: &[&str]| {
        let mut l: Vec<String> = l.iter().map(|s| (*s).to_owned()).collect();
        l.sort();
        l
    };
    assert_eq!(keys(&v), sorted(&ORDER_FIELDS));
    assert_eq!(keys(&v["delivery"]), sorted(&DELIVERY_FIELDS));
    assert_eq!(keys(&v["payment"]), sorted(&PAYMENT_FIELDS));
    assert_eq!(keys(&v["items"][0]), sorted(&ITEM_FIELDS));
}

#[test]
fn keep_stores_unknown_fields_at_every_depth_and_writes_them_back_in_place() {
    let order = order_with_unknown_fields("u-", 7, 3);
    let message = serde_json::to_vec(&order).unwrap();
    let decoded = keep(&message).unwrap();
    assert_eq!(decoded, order);
    assert!(decoded.has_unknown_fields());
    // Byte for byte: the same serializer wrote the message.
    assert_eq!(decoded.to_json_bytes().unwrap(), message);
    let text = String::from_utf8(message).unwrap();
    assert!(text.contains(r#""precise":123456789012345678901234567890.123456789012345678901"#));
    assert!(text.contains(r#""fx_rate":1E-7"#), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["loyalty_points"], json!(12));
    assert_eq!(v["delivery"]["floor"], json!(3));
    assert_eq!(v["payment"]["installments"], Value::Null);
    assert_eq!(v["items"][2]["gift_wrap"], json!(true));
    assert_eq!(v["items"][1]["note"], json!("fragile é \"quoted\" \\ é"));
}

#[test]
fn a_hand_written_message_comes_back_equal_field_for_field() {
    // Whitespace, unknown fields before, between and after known ones, nested and odd numbers.
    let text = orders_domain::REFERENCE_ORDER_JSON
        .replacen(
            "{",
            "{ \"first\" : { \"a\" : [ 1 , 2.50 , -0 , 1e400 ] } ,\n",
            1,
        )
        .replacen(
            "\"delivery\": {",
            "\"delivery\": {\"floor\": 3, \"x-y z\": \"\\ud83c\\udf89\",",
            1,
        )
        .replacen(
            "\"payment\": {",
            "\"payment\": {\"big\": 98765432109876543210987654321,",
            1,
        )
        .replacen("\"chrt_id\"", "\"gift\": {\"wrap\": true}, \"chrt_id\"", 1)
        .replacen(
            "\"oof_shard\"",
            "\"last\": [], \"empty\": {}, \"oof_shard\"",
            1,
        );
    let order = keep(text.as_bytes()).unwrap();
    let served = order.to_json_bytes().unwrap();
    let served_text = std::str::from_utf8(&served).unwrap();
    // Each unknown value exactly as received (1e400 is beyond f64: still kept as written).
    for raw in [
        "{ \"a\" : [ 1 , 2.50 , -0 , 1e400 ] }",
        "98765432109876543210987654321",
        "\"\\ud83c\\udf89\"",
    ] {
        assert!(served_text.contains(raw), "{raw} not in {served_text}");
    }
    let want: Value = serde_json::from_str(&text.replace("1e400", "1")).unwrap();
    let got: Value = serde_json::from_str(&served_text.replace("1e400", "1")).unwrap();
    assert_eq!(got, want);
    // The order read back is the one decoded: the round trip is stable.
    assert_eq!(keep(&served).unwrap(), order);
}

#[test]
fn reject_refuses_an_unknown_field_at_every_depth_as_before() {
    for (pointer, name) in [
        ("", "loyalty_points"),
        ("/delivery", "floor"),
        ("/payment", "fx_rate"),
        ("/items/0", "gift_wrap"),
    ] {
        let mut v = fixture();
        v.pointer_mut(pointer)
            .unwrap()
            .as_object_mut()
            .unwrap()
            .insert(name.into(), json!(1));
        let bytes = serde_json::to_vec(&v).unwrap();
        let err = reject(&bytes).unwrap_err();
        assert_eq!(err.reason(), RejectReason::NotOrder, "{err}");
        assert!(
            err.to_string().contains(&format!("unknown field `{name}`")),
            "{err}"
        );
        // And `decode_order` is `reject`.
        assert_eq!(
            orders_domain::decode_order(Some(&bytes), DEFAULT_MAX_MESSAGE_BYTES).unwrap_err(),
            err
        );
        let kept = keep(&bytes).unwrap();
        assert!(kept.has_unknown_fields());
    }
}

#[test]
fn an_order_without_unknown_fields_is_the_same_under_both_policies() {
    let message = serde_json::to_vec(&generated_order("same-", 1, 3)).unwrap();
    let (a, b) = (keep(&message).unwrap(), reject(&message).unwrap());
    assert_eq!(a, b);
    assert!(!a.has_unknown_fields());
    assert_eq!(a.to_json_bytes().unwrap(), message);
}

#[test]
fn a_repeated_unknown_field_is_not_an_order_like_a_repeated_known_one() {
    let text = orders_domain::REFERENCE_ORDER_JSON.replacen("{", "{\"x\": 1, \"x\": 2,", 1);
    let err = keep(text.as_bytes()).unwrap_err();
    assert_eq!(err.reason(), RejectReason::NotOrder);
    assert!(err.to_string().contains("duplicate field `x`"), "{err}");
    let text =
        orders_domain::REFERENCE_ORDER_JSON.replacen("{", "{\"x\": 1, \"locale\": \"en\",", 1);
    let err = keep(text.as_bytes()).unwrap_err();
    assert!(
        err.to_string().contains("duplicate field `locale`"),
        "{err}"
    );
}

#[test]
fn nul_in_an_unknown_field_name_is_not_an_order_under_both_policies() {
    let mut v = fixture();
    v["payment"]
        .as_object_mut()
        .unwrap()
        .insert("x\u{0}y".into(), json!(1));
    let bytes = serde_json::to_vec(&v).unwrap();
    for err in [keep(&bytes).unwrap_err(), reject(&bytes).unwrap_err()] {
        assert_eq!(err.reason(), RejectReason::NotOrder, "{err}");
        assert!(err.to_string().contains("payment"), "{err}");
        assert!(!err.to_string().contains('\0'));
    }
}

#[test]
fn nul_or_deep_nesting_in_an_unknown_value_is_invalid_with_its_path() {
    let mut v = fixture();
    v["items"][0]
        .as_object_mut()
        .unwrap()
        .insert("note".into(), json!({"a": ["b\u{0}"]}));
    let err = keep(&serde_json::to_vec(&v).unwrap()).unwrap_err();
    let DecodeError::Invalid(violations) = &err else {
        panic!("{err}")
    };
    assert_eq!(violations.errors[0].path, "items[0].note");

    let deep = |levels: usize| {
        let mut v = fixture();
        let nested = format!("{}{}", "[".repeat(levels), "]".repeat(levels));
        let mut text = serde_json::to_string(&v.take()).unwrap();
        text = text.replacen("{", &format!("{{\"deep\":{nested},"), 1);
        text
    };
    let at_limit = deep(orders_domain::unknown::MAX_UNKNOWN_DEPTH);
    assert!(keep(at_limit.as_bytes()).is_ok());
    let err = keep(deep(orders_domain::unknown::MAX_UNKNOWN_DEPTH + 1).as_bytes()).unwrap_err();
    let DecodeError::Invalid(violations) = &err else {
        panic!("{err}")
    };
    assert_eq!(violations.errors[0].path, "deep");
    // Far deeper than serde_json's own limit: still refused with the path, not as not_json.
    let err = keep(deep(100_000).as_bytes()).unwrap_err();
    assert_eq!(err.reason(), RejectReason::Invalid, "{err}");
}

#[test]
fn what_is_not_json_or_not_an_object_is_refused_as_before() {
    for (bytes, reason) in [
        (&b"{\"order_uid\": "[..], RejectReason::NotJson),
        (b"[1, 2]", RejectReason::NotOrder),
        (b"\"text\"", RejectReason::NotOrder),
        (b"{\"hello\": \"world\"}", RejectReason::NotOrder),
    ] {
        assert_eq!(keep(bytes).unwrap_err().reason(), reason);
        assert_eq!(reject(bytes).unwrap_err().reason(), reason);
    }
    // An order with unknown fields and bytes after it: not JSON (a message is one value).
    let text = format!(
        "{} trailing",
        serde_json::to_string(&order_with_unknown_fields("t-", 1, 1)).unwrap()
    );
    assert_eq!(
        keep(text.as_bytes()).unwrap_err().reason(),
        RejectReason::NotJson
    );
    // A known field of the wrong type, beside unknown ones: the field's path, no position
    // into text the producer never sent.
    let mut v = serde_json::to_value(order_with_unknown_fields("t-", 2, 1)).unwrap();
    v["payment"]["amount"] = json!("12");
    let err = keep(&serde_json::to_vec(&v).unwrap()).unwrap_err();
    let DecodeError::NotOrder(detail) = &err else {
        panic!("{err}")
    };
    assert!(detail.starts_with("payment.amount: "), "{detail}");
    assert!(!detail.contains(" at line "), "{detail}");
}

#[test]
fn extra_is_cheap_when_empty() {
    assert_eq!(
        std::mem::size_of::<Extra>(),
        std::mem::size_of::<usize>(),
        "one null pointer"
    );
    assert!(Extra::default().is_empty());
}

fn json_leaf() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("null".to_owned()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        // Numbers as producers may write them: beyond u64, with exponents and trailing zeros.
        "-?[1-9][0-9]{0,40}(\\.[0-9]{1,30})?([eE][+-]?[0-9]{1,3})?",
        any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
    ]
}

fn json_value() -> impl Strategy<Value = String> {
    json_leaf().prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4).prop_map(|m| {
                let members: Vec<String> = m
                    .into_iter()
                    .map(|(k, v)| format!("{}:{v}", serde_json::to_string(&k).unwrap()))
                    .collect();
                format!("{{{}}}", members.join(","))
            }),
        ]
    })
}

/// Unknown field names: anything the model does not know at that depth, without NUL.
fn unknown_fields() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::btree_map("[^\u{0}]{1,12}", json_value(), 0..4)
        .prop_map(|m| m.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any unknown fields at any depth: decoded under `keep`, served back with each value's
    /// exact text, and decoded again to the same order.
    #[test]
    fn any_unknown_fields_round_trip_exactly(
        top in unknown_fields(),
        delivery in unknown_fields(),
        payment in unknown_fields(),
        item in unknown_fields(),
        n in 0u64..1000,
    ) {
        let mut o = generated_order("p-", n, 2);
        let keep_unknown = |fields: Vec<(String, String)>, known: &[&str]| {
            Extra::from_fields(fields.into_iter().filter(|(k, _)| !known.contains(&k.as_str())))
                .unwrap()
        };
        o.extra = keep_unknown(top, &ORDER_FIELDS);
        o.delivery.extra = keep_unknown(delivery, &DELIVERY_FIELDS);
        o.payment.extra = keep_unknown(payment, &PAYMENT_FIELDS);
        o.items[1].extra = keep_unknown(item, &ITEM_FIELDS);
        let message = o.to_json_bytes().unwrap();
        let decoded = keep(&message).unwrap();
        prop_assert_eq!(&decoded, &o);
        prop_assert_eq!(decoded.to_json_bytes().unwrap(), message.clone());
        if o.has_unknown_fields() {
            prop_assert_eq!(reject(&message).unwrap_err().reason(), RejectReason::NotOrder);
        }
    }
}
