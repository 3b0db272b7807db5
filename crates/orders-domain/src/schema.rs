//! The JSON Schema (draft 2020-12) of the order message, generated from the model.
//!
//! The checked-in copy is `schema/order.json` (served at `/schema/order.json`); a test fails
//! when the model changes and the copy does not (`ORDERS_BLESS=1` rewrites it). Change
//! [`SCHEMA_VERSION`] with the model: major for a change that refuses what was accepted.
//!
//! What the schema says, the service enforces: types, required fields, lengths, ranges,
//! patterns, and no NUL in text or field names. What it cannot say, the service enforces
//! alone: totals that add up (`payment.amount`, `payment.goods_total`), every item's
//! `track_number` equal to the order's, timestamps in the years 1..=9999 without leap seconds,
//! the message's size, integers written without a fraction (`1.0` is an integer to JSON
//! Schema), and the nesting and content of unknown fields.

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value};

use crate::model::Order;

/// The version of the message schema, in its `$id`.
pub const SCHEMA_VERSION: &str = "1.0.0";

/// A string without NUL (the service refuses NUL in text: PostgreSQL cannot store it).
const NO_NUL: &str = "^[^\\u0000]*$";

/// The schema of the order message, as `schema/order.json` holds it (pretty-printed, with a
/// final newline).
pub fn order_schema_json() -> String {
    let mut text = serde_json::to_string_pretty(&order_schema()).unwrap_or_default();
    text.push('\n');
    text
}

/// The schema of the order message.
pub fn order_schema() -> Value {
    let generator = SchemaSettings::draft2020_12().into_generator();
    let schema = generator.into_root_schema_for::<Order>();
    let mut root = schema.to_value();
    if let Value::Object(map) = &mut root {
        let mut head = Map::new();
        head.insert(
            "$schema".into(),
            map.remove("$schema").unwrap_or(Value::Null),
        );
        head.insert(
            "$id".into(),
            Value::String(format!("urn:orders:schema:order:{SCHEMA_VERSION}")),
        );
        head.insert(
            "title".into(),
            Value::String(format!("Order message {SCHEMA_VERSION}")),
        );
        head.insert(
            "description".into(),
            Value::String(
                "One order as a producer writes it to the orders topic. Fields not listed \
                 here are kept and served back in place under UNKNOWN_FIELDS=keep (the \
                 default) and make the message not_order under UNKNOWN_FIELDS=reject. Rules \
                 JSON Schema cannot express (totals, track numbers, size) are in the README."
                    .into(),
            ),
        );
        map.remove("title");
        map.remove("description");
        head.append(map);
        *map = head;
    }
    finish(&mut root);
    root
}

/// Unknown fields are allowed (the default policy keeps them), field names and text may not
/// hold NUL.
fn finish(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.get("type") == Some(&Value::String("object".into())) {
                map.remove("additionalProperties");
                map.insert(
                    "propertyNames".into(),
                    serde_json::json!({"pattern": NO_NUL}),
                );
            }
            // What serde refuses past the Rust type's bounds.
            let max = match map.get("format").and_then(Value::as_str) {
                Some("int64") => Some(Value::from(i64::MAX)),
                Some("int32") => Some(Value::from(i32::MAX)),
                _ => None,
            };
            if let Some(max) = max
                && !map.contains_key("maximum")
            {
                map.insert("maximum".into(), max);
            }
            if map.get("type") == Some(&Value::String("string".into()))
                && !map.contains_key("pattern")
            {
                map.insert("pattern".into(), Value::String(NO_NUL.into()));
            }
            map.values_mut().for_each(finish);
        }
        Value::Array(a) => a.iter_mut().for_each(finish),
        _ => {}
    }
}
