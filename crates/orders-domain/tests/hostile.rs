#![allow(clippy::unwrap_used)]
//! Crafted messages (issue 14, items 0, 1 and 5): each must be refused for the right reason,
//! with a bounded detail that PostgreSQL can store.

use orders_domain::validation::{
    DEFAULT_MAX_MESSAGE_BYTES, MAX_DETAIL_BYTES, MAX_REPORTED_ERRORS, decode_order,
};
use orders_domain::{DecodeError, REFERENCE_ORDER_JSON, RejectReason};
use serde_json::{Value, json};

fn fixture() -> Value {
    serde_json::from_str(REFERENCE_ORDER_JSON).unwrap()
}

fn decode(bytes: &[u8]) -> Result<orders_domain::Order, DecodeError> {
    decode_order(Some(bytes), DEFAULT_MAX_MESSAGE_BYTES)
}

#[test]
fn bytes_after_a_valid_order_are_not_json() {
    let order = REFERENCE_ORDER_JSON.trim_end();
    for tail in [" trailing", "x", "{}", "1", "\"s\"", "null"] {
        let text = format!("{order}{tail}");
        let err = decode(text.as_bytes()).unwrap_err();
        assert_eq!(err.reason(), RejectReason::NotJson, "tail {tail:?}: {err}");
    }
    // Two orders back to back: neither is stored, the message is not one JSON value.
    let two = format!("{order}{order}");
    assert_eq!(
        decode(two.as_bytes()).unwrap_err().reason(),
        RejectReason::NotJson
    );
    // Trailing whitespace is fine.
    let spaced = format!("{order} \n\t\r\n");
    assert!(decode(spaced.as_bytes()).is_ok());
}

#[test]
fn validation_output_is_bounded() {
    let message = orders_domain::sample::many_errors_message();
    assert!(message.len() < DEFAULT_MAX_MESSAGE_BYTES);
    let err = decode(&message).unwrap_err();
    let DecodeError::Invalid(violations) = &err else {
        panic!("expected invalid, got {err}")
    };
    assert!(violations.errors.len() <= MAX_REPORTED_ERRORS);
    // Every item's track_number, the order's own (too long) and the totals: all counted.
    assert!(violations.total > 1000, "total {}", violations.total);
    let detail = err.to_string();
    assert!(
        detail.len() <= MAX_DETAIL_BYTES,
        "detail is {} bytes",
        detail.len()
    );
    assert!(
        detail.contains(&format!(
            "{} more",
            violations.total - violations.errors.len()
        )),
        "{detail}"
    );
}

#[test]
fn serde_errors_quoting_huge_values_are_bounded() {
    // A huge string where a number belongs, and a huge unknown field name.
    let v = with(fixture(), "/sm_id", json!("9".repeat(500_000)));
    let err = decode(&serde_json::to_vec(&v).unwrap()).unwrap_err();
    assert_eq!(err.reason(), RejectReason::NotOrder);
    assert!(
        err.to_string().len() <= MAX_DETAIL_BYTES,
        "{}",
        err.to_string().len()
    );
    assert!(err.to_string().contains("sm_id"), "{err}");

    let mut v = fixture();
    v.as_object_mut()
        .unwrap()
        .insert("k".repeat(500_000), json!(1));
    let err = decode(&serde_json::to_vec(&v).unwrap()).unwrap_err();
    assert_eq!(err.reason(), RejectReason::NotOrder);
    assert!(err.to_string().len() <= MAX_DETAIL_BYTES);
}

fn with(mut v: Value, pointer: &str, new: Value) -> Value {
    *v.pointer_mut(pointer).unwrap() = new;
    v
}

#[test]
fn nul_in_text_is_invalid_with_its_path() {
    for (pointer, path) in [
        ("/delivery/name", "delivery.name"),
        ("/items/0/name", "items[0].name"),
        ("/payment/request_id", "payment.request_id"),
        ("/internal_signature", "internal_signature"),
        ("/locale", "locale"),
    ] {
        let v = with(fixture(), pointer, json!("a\u{0}b"));
        let err = decode(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        let DecodeError::Invalid(violations) = &err else {
            panic!("{pointer}: expected invalid, got {err}")
        };
        let paths: Vec<&str> = violations.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, vec![path], "{err}");
        assert!(!err.to_string().contains('\0'));
    }
}

#[test]
fn nul_in_an_unknown_field_name_never_reaches_the_detail() {
    let mut v = fixture();
    v["delivery"]
        .as_object_mut()
        .unwrap()
        .insert("x\u{0}y".into(), json!(1));
    let err = decode(&serde_json::to_vec(&v).unwrap()).unwrap_err();
    assert_eq!(err.reason(), RejectReason::NotOrder);
    let detail = err.to_string();
    assert!(!detail.contains('\0'), "{detail:?}");
    assert!(detail.contains("delivery"), "{detail}");
}

#[test]
fn every_sample_invalid_message_is_rejected_for_its_reason() {
    for (reason, value) in orders_domain::sample::invalid_messages() {
        let err = decode_order(value.as_deref(), DEFAULT_MAX_MESSAGE_BYTES).unwrap_err();
        assert_eq!(err.reason(), reason, "{err}");
        let detail = err.to_string();
        assert!(detail.len() <= MAX_DETAIL_BYTES && !detail.contains('\0'));
    }
}
