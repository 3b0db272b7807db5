#![allow(clippy::unwrap_used)]
//! The message's JSON Schema (issue 13): generated from the model, checked in as
//! `schema/order.json`, and in agreement with the service: what the service accepts validates,
//! and what it refuses does not, wherever JSON Schema can express the rule.

use std::path::PathBuf;

use orders_domain::sample::{
    generated_order, invalid_messages, mixed_order, order_with_unknown_fields,
};
use orders_domain::schema::{SCHEMA_VERSION, order_schema, order_schema_json};
use orders_domain::validation::DEFAULT_MAX_MESSAGE_BYTES;
use orders_domain::{ORDER_SCHEMA_JSON, RejectReason, UnknownFields, decode_order_with};
use serde_json::{Value, json};

fn validator() -> jsonschema::Validator {
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&order_schema())
        .unwrap()
}

fn accepted(bytes: &[u8]) -> bool {
    decode_order_with(Some(bytes), DEFAULT_MAX_MESSAGE_BYTES, UnknownFields::Keep).is_ok()
}

/// The checked-in file is what the model generates; `ORDERS_BLESS=1` rewrites it.
#[test]
fn the_checked_in_schema_is_what_the_model_generates() {
    let generated = order_schema_json();
    if std::env::var_os("ORDERS_BLESS").is_some() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schema/order.json");
        std::fs::write(path, &generated).unwrap();
        return;
    }
    assert!(
        ORDER_SCHEMA_JSON == generated,
        "schema/order.json is not what the model generates: run \
         `ORDERS_BLESS=1 cargo test -p orders-domain --test schema` (and change SCHEMA_VERSION)"
    );
}

#[test]
fn the_schema_is_draft_2020_12_valid_and_versioned() {
    let schema = order_schema();
    assert_eq!(
        schema["$schema"],
        json!("https://json-schema.org/draft/2020-12/schema")
    );
    assert!(
        schema["$id"].as_str().unwrap().ends_with(SCHEMA_VERSION),
        "{}",
        schema["$id"]
    );
    jsonschema::meta::validate(&schema).unwrap();
}

#[test]
fn the_reference_and_generated_orders_validate() {
    let v = validator();
    let reference: Value = serde_json::from_str(orders_domain::REFERENCE_ORDER_JSON).unwrap();
    assert!(
        v.is_valid(&reference),
        "{:?}",
        v.iter_errors(&reference).next()
    );
    for n in 0..300 {
        for order in [
            mixed_order("schema-", n),
            generated_order("max-items-", n, orders_domain::validation::MAX_ITEMS),
            // Unknown fields are allowed: the default policy keeps them.
            order_with_unknown_fields("unknown-", n, 2),
        ] {
            let value = serde_json::to_value(&order).unwrap();
            assert!(accepted(&serde_json::to_vec(&value).unwrap()));
            assert!(v.is_valid(&value), "{:?}", v.iter_errors(&value).next());
        }
    }
}

/// Each invalid kind the producer sends (`orders-producer --invalid`): refused by the service,
/// and by the schema too wherever it is JSON and the rule is one JSON Schema can express.
#[test]
fn every_invalid_kind_the_producer_sends_fails_where_json_schema_can_say_so() {
    let v = validator();
    let mut refused_by_schema = 0;
    for (reason, value) in invalid_messages() {
        let Some(bytes) = value else { continue };
        assert!(!accepted(&bytes), "{reason}");
        let Ok(instance) = serde_json::from_slice::<Value>(&bytes) else {
            // Not one JSON value (empty, not UTF-8, broken, trailing bytes): no schema applies.
            assert!(
                matches!(
                    reason,
                    RejectReason::Empty | RejectReason::NotUtf8 | RejectReason::NotJson
                ),
                "{reason}"
            );
            continue;
        };
        let expressible = match reason {
            // Totals that do not add up: arithmetic across fields, which JSON Schema lacks.
            // Oversize: the reference order padded with spaces; size is not in the schema.
            RejectReason::Oversize => false,
            RejectReason::Invalid if instance["payment"]["amount"] == json!(1) => false,
            _ => true,
        };
        assert_eq!(
            !v.is_valid(&instance),
            expressible,
            "{reason}: {:?}",
            v.iter_errors(&instance).next().map(|e| e.to_string())
        );
        refused_by_schema += usize::from(expressible);
    }
    // not_order, NUL in text, NUL in a field name, the many-errors order.
    assert_eq!(refused_by_schema, 4);
}

fn with(pointer: &str, new: Option<Value>) -> Value {
    let mut v: Value = serde_json::from_str(orders_domain::REFERENCE_ORDER_JSON).unwrap();
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let target = v.pointer_mut(parent).unwrap();
    match (target, new) {
        (Value::Object(m), Some(new)) => {
            m.insert(key.into(), new);
        }
        (Value::Object(m), None) => {
            m.remove(key);
        }
        (Value::Array(a), Some(new)) => a[key.parse::<usize>().unwrap()] = new,
        (Value::Array(a), None) => {
            a.remove(key.parse::<usize>().unwrap());
        }
        _ => unreachable!(),
    }
    v
}

/// One broken rule at a time, each of a kind the schema states: the service and the schema
/// both refuse it. (The one-field-at-a-time property tests in `limits.rs` hold the service to
/// every rule; this holds the schema to the same kinds.)
#[test]
fn single_rule_violations_fail_the_schema_and_the_service() {
    let v = validator();
    let mut cases: Vec<(String, Value)> = Vec::new();
    let missing = [
        "/order_uid",
        "/track_number",
        "/delivery",
        "/items",
        "/date_created",
        "/delivery/email",
        "/payment/amount",
        "/items/0/chrt_id",
        "/items/0/status",
    ];
    for p in missing {
        cases.push((format!("{p} missing"), with(p, None)));
    }
    let bad: [(&str, Value); 26] = [
        ("/order_uid", json!("")),
        ("/order_uid", json!("has space")),
        ("/order_uid", json!("x".repeat(65))),
        ("/track_number", json!("T R")),
        ("/track_number", json!("T".repeat(65))),
        ("/entry", json!("")),
        ("/locale", json!("x".repeat(17))),
        ("/internal_signature", json!("x".repeat(257))),
        ("/sm_id", json!(-1)),
        ("/sm_id", json!("99")),
        ("/sm_id", json!(9_223_372_036_854_775_808u64)),
        ("/date_created", json!("yesterday")),
        ("/date_created", json!(1_637_907_727)),
        ("/delivery/phone", json!("9720000000")),
        ("/delivery/phone", json!("+12")),
        ("/delivery/email", json!("not-an-email")),
        ("/delivery/name", json!("a\u{0}b")),
        ("/payment/currency", json!("usd")),
        ("/payment/amount", json!(-5)),
        ("/payment/amount", json!(1.5)),
        ("/payment/request_id", json!(null)),
        ("/items", json!([])),
        ("/items/0/sale", json!(101)),
        ("/items/0/status", json!(2_147_483_648u64)),
        ("/items/0", json!("item")),
        ("/payment", json!([])),
    ];
    for (p, value) in bad {
        cases.push((format!("{p} = {value:.40}"), with(p, Some(value))));
    }
    let mut too_many = with("/items", None);
    let item: Value =
        serde_json::from_str::<Value>(orders_domain::REFERENCE_ORDER_JSON).unwrap()["items"][0]
            .clone();
    too_many["items"] = Value::Array(vec![item; orders_domain::validation::MAX_ITEMS + 1]);
    cases.push(("1001 items".into(), too_many));
    for (label, instance) in cases {
        assert!(
            !accepted(&serde_json::to_vec(&instance).unwrap()),
            "{label}: the service accepts it"
        );
        assert!(!v.is_valid(&instance), "{label}: the schema accepts it");
    }
}
