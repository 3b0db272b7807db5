//! Decoding and validation of raw messages into orders.
//!
//! Every failure names the field path (`items[2].total_price`) and the rule it broke, so a
//! rejected message can be fixed by whoever produced it.

use std::borrow::Cow;
use std::fmt;

use serde::Serialize;
use validator::{Validate, ValidationError, ValidationErrors, ValidationErrorsKind};

use crate::model::Order;

/// Longest accepted `order_uid`.
pub const MAX_ORDER_UID_LEN: usize = 64;
/// Most items an order may have.
pub const MAX_ITEMS: usize = 1000;
/// Default bound on a raw message, checked before parsing.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// One broken rule at one place in the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Path such as `payment.amount` or `items[2].total_price`.
    pub path: String,
    /// What the rule says, e.g. `length must be 1..=64`.
    pub rule: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.rule)
    }
}

/// Why a raw message is not an order. The variant is the rejection reason recorded in
/// `rejected_messages.reason` and in the `orders_messages_rejected_total{reason}` metric.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A Kafka tombstone: the record has no value at all.
    #[error("message has no value (tombstone)")]
    Tombstone,
    #[error("message value is empty")]
    Empty,
    #[error("message is {size} bytes, over the limit of {limit} bytes")]
    Oversize { size: usize, limit: usize },
    #[error("message is not UTF-8: {0}")]
    NotUtf8(String),
    #[error("message is not JSON: {0}")]
    NotJson(String),
    /// Well-formed JSON whose shape is not an order (missing/unknown field, wrong type).
    #[error("message is not an order: {0}")]
    NotOrder(String),
    #[error("order is invalid: {}", join(.0))]
    Invalid(Vec<FieldError>),
}

fn join(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl DecodeError {
    /// Stable, low-cardinality name of the rejection reason.
    pub fn reason(&self) -> RejectReason {
        match self {
            Self::Tombstone => RejectReason::Tombstone,
            Self::Empty => RejectReason::Empty,
            Self::Oversize { .. } => RejectReason::Oversize,
            Self::NotUtf8(_) => RejectReason::NotUtf8,
            Self::NotJson(_) => RejectReason::NotJson,
            Self::NotOrder(_) => RejectReason::NotOrder,
            Self::Invalid(_) => RejectReason::Invalid,
        }
    }
}

/// Every reason a message can be rejected for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    Tombstone,
    Empty,
    Oversize,
    NotUtf8,
    NotJson,
    NotOrder,
    Invalid,
    /// The `order_uid` is already stored (a re-send); the stored order is kept unchanged.
    Duplicate,
    /// Valid by the domain's rules, but the store refused it (a storage constraint); kept here
    /// so that it is not lost and can be replayed once the cause is fixed.
    StorageRefused,
    /// A record batch the Kafka client could not decode (a corrupt or unsupported payload, a
    /// timestamp out of range): recorded once, at the batch's first offset with its offset range
    /// in `detail` and no payload, so that the partition moves past it.
    Undecodable,
}

impl RejectReason {
    pub const ALL: [RejectReason; 10] = [
        Self::Tombstone,
        Self::Empty,
        Self::Oversize,
        Self::NotUtf8,
        Self::NotJson,
        Self::NotOrder,
        Self::Invalid,
        Self::Duplicate,
        Self::StorageRefused,
        Self::Undecodable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tombstone => "tombstone",
            Self::Empty => "empty",
            Self::Oversize => "oversize",
            Self::NotUtf8 => "not_utf8",
            Self::NotJson => "not_json",
            Self::NotOrder => "not_order",
            Self::Invalid => "invalid",
            Self::Duplicate => "duplicate",
            Self::StorageRefused => "storage_refused",
            Self::Undecodable => "undecodable",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Turns a raw message value into a valid order, or says precisely why not.
pub fn decode_order(value: Option<&[u8]>, max_bytes: usize) -> Result<Order, DecodeError> {
    let bytes = value.ok_or(DecodeError::Tombstone)?;
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    if bytes.len() > max_bytes {
        return Err(DecodeError::Oversize {
            size: bytes.len(),
            limit: max_bytes,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| DecodeError::NotUtf8(e.to_string()))?;
    let order = parse_order(text)?;
    validate_order(&order).map_err(DecodeError::Invalid)?;
    Ok(order)
}

/// JSON text to `Order`, with the path of the offending field in the error.
pub fn parse_order(text: &str) -> Result<Order, DecodeError> {
    // Fast path: plain serde_json. Tracking the field path costs about as much as the parse
    // itself, so it is paid only for messages that fail (parsed a second time for the error).
    if let Ok(order) = serde_json::from_str::<Order>(text) {
        return Ok(order);
    }
    let de = &mut serde_json::Deserializer::from_str(text);
    match serde_path_to_error::deserialize::<_, Order>(de) {
        Ok(order) => Ok(order), // unreachable in practice: the fast path accepted nothing
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            match inner.classify() {
                serde_json::error::Category::Data => Err(DecodeError::NotOrder(if path == "." {
                    inner.to_string()
                } else {
                    format!("{path}: {inner}")
                })),
                _ => Err(DecodeError::NotJson(inner.to_string())),
            }
        }
    }
}

/// Checks every rule; returns all broken ones, sorted by path.
pub fn validate_order(order: &Order) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    if let Err(e) = order.validate() {
        flatten("", &e, &mut errors);
    }
    cross_field_rules(order, &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        errors.sort_by(|a, b| a.path.cmp(&b.path));
        Err(errors)
    }
}

/// Rules that relate several fields, which the derive cannot express.
fn cross_field_rules(order: &Order, errors: &mut Vec<FieldError>) {
    for (i, item) in order.items.iter().enumerate() {
        if item.track_number != order.track_number {
            errors.push(FieldError {
                path: format!("items[{i}].track_number"),
                rule: format!(
                    "must equal the order's track_number {:?}",
                    order.track_number
                ),
            });
        }
    }
    let p = &order.payment;
    let items_total = order
        .items
        .iter()
        .try_fold(0i64, |acc, it| acc.checked_add(it.total_price));
    match items_total {
        Some(sum) if sum != p.goods_total => errors.push(FieldError {
            path: "payment.goods_total".into(),
            rule: format!(
                "must equal the sum of items[].total_price ({sum}), is {}",
                p.goods_total
            ),
        }),
        None => errors.push(FieldError {
            path: "items".into(),
            rule: "sum of total_price overflows".into(),
        }),
        _ => {}
    }
    let expected = p
        .goods_total
        .checked_add(p.delivery_cost)
        .and_then(|v| v.checked_add(p.custom_fee));
    if expected != Some(p.amount) {
        errors.push(FieldError {
            path: "payment.amount".into(),
            rule: match expected {
                Some(e) => format!(
                    "must equal goods_total + delivery_cost + custom_fee ({e}), is {}",
                    p.amount
                ),
                None => "goods_total + delivery_cost + custom_fee overflows".into(),
            },
        });
    }
}

fn flatten(prefix: &str, errors: &ValidationErrors, out: &mut Vec<FieldError>) {
    for (field, kind) in errors.errors() {
        let path = if prefix.is_empty() {
            field.to_string()
        } else {
            format!("{prefix}.{field}")
        };
        match kind {
            ValidationErrorsKind::Field(list) => {
                out.extend(list.iter().map(|e| FieldError {
                    path: path.clone(),
                    rule: describe(e),
                }));
            }
            ValidationErrorsKind::Struct(inner) => flatten(&path, inner, out),
            ValidationErrorsKind::List(items) => {
                for (i, inner) in items {
                    flatten(&format!("{path}[{i}]"), inner, out);
                }
            }
        }
    }
}

fn describe(e: &ValidationError) -> String {
    if let Some(msg) = &e.message {
        return msg.to_string();
    }
    let param = |k: &str| e.params.get(k).map(ToString::to_string);
    match e.code.as_ref() {
        "length" => match (param("min"), param("max")) {
            (Some(min), Some(max)) => format!("length must be {min}..={max}"),
            (Some(min), None) => format!("length must be at least {min}"),
            (None, Some(max)) => format!("length must be at most {max}"),
            _ => "bad length".into(),
        },
        "range" => match (param("min"), param("max")) {
            (Some(min), Some(max)) => format!("must be in {min}..={max}"),
            (Some(min), None) => format!("must be >= {min}"),
            (None, Some(max)) => format!("must be <= {max}"),
            _ => "out of range".into(),
        },
        "email" => "must be an email address".into(),
        other => other.to_string(),
    }
}

fn rule(code: &'static str, message: &'static str) -> ValidationError {
    ValidationError::new(code).with_message(Cow::Borrowed(message))
}

/// Is `uid` a well-formed order id? Used by the API before any lookup.
pub fn is_valid_order_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= MAX_ORDER_UID_LEN
        && uid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub(crate) fn validate_order_uid(uid: &str) -> Result<(), ValidationError> {
    if is_valid_order_uid(uid) {
        Ok(())
    } else {
        Err(rule(
            "order_uid",
            "must be 1..=64 characters of [A-Za-z0-9_-]",
        ))
    }
}

/// Identifiers that end up in URLs and logs: printable ASCII without spaces.
pub(crate) fn validate_token(v: &str) -> Result<(), ValidationError> {
    if v.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(rule("token", "must be printable ASCII without spaces"))
    }
}

pub(crate) fn validate_phone(v: &str) -> Result<(), ValidationError> {
    let digits = v.strip_prefix('+').unwrap_or("");
    if (5..=20).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(rule("phone", "must be '+' followed by 5..=20 digits"))
    }
}

pub(crate) fn validate_currency(v: &str) -> Result<(), ValidationError> {
    if v.len() == 3 && v.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(rule("currency", "must be 3 upper-case letters (ISO 4217)"))
    }
}
