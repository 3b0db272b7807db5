//! Decoding and validation of raw messages into orders.
//!
//! Every failure names the field path (`items[2].total_price`) and the rule it broke, so a
//! rejected message can be fixed by whoever produced it.

use std::borrow::Cow;
use std::fmt;

use serde::Serialize;
use validator::{Validate, ValidationError, ValidationErrors, ValidationErrorsKind};

use crate::model::Order;
use crate::unknown::{MAX_UNKNOWN_DEPTH, RawFields, UnknownFields, json_depth, json_has_nul};

/// Longest accepted `order_uid`.
pub const MAX_ORDER_UID_LEN: usize = 64;
/// Most items an order may have.
pub const MAX_ITEMS: usize = 1000;
/// Default bound on a raw message, checked before parsing.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Broken rules kept (and shown) per message; the rest are only counted. A crafted order can
/// break thousands (one per item), and each error costs memory, log and storage.
pub const MAX_REPORTED_ERRORS: usize = 20;
/// Longest rejection detail, in bytes: what is logged and stored in `rejected_messages.detail`.
pub const MAX_DETAIL_BYTES: usize = 4096;
/// Longest excerpt of a field's value quoted in a rule.
const MAX_QUOTED_CHARS: usize = 64;

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
    #[error("order is invalid: {0}")]
    Invalid(Violations),
}

/// The rules an order breaks: the first [`MAX_REPORTED_ERRORS`] by path, and how many in all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violations {
    pub errors: Vec<FieldError>,
    pub total: usize,
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        if self.total > self.errors.len() {
            write!(f, " (and {} more)", self.total - self.errors.len())?;
        }
        Ok(())
    }
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

/// Turns a raw message value into a valid order, or says precisely why not; a field the model
/// does not know makes it `not_order` (policy `reject`).
pub fn decode_order(value: Option<&[u8]>, max_bytes: usize) -> Result<Order, DecodeError> {
    decode_order_with(value, max_bytes, UnknownFields::Reject)
}

/// [`decode_order`] with a policy for fields the model does not know. Under
/// [`UnknownFields::Keep`] they are kept in the order (see [`crate::unknown`]); every known
/// field keeps every rule it has.
pub fn decode_order_with(
    value: Option<&[u8]>,
    max_bytes: usize,
    unknown: UnknownFields,
) -> Result<Order, DecodeError> {
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
    let order = match unknown {
        UnknownFields::Reject => parse_order(text)?,
        UnknownFields::Keep => parse_order_keeping(text)?,
    };
    // NUL reaches a decoded string only through the escape `\u0000` (JSON has no raw control
    // characters in strings), so a message without a backslash cannot hold one: one scan of
    // the message instead of one per text field.
    let may_hold_nul = bytes.contains(&b'\\');
    check_order(&order, may_hold_nul).map_err(DecodeError::Invalid)?;
    Ok(order)
}

/// JSON text to `Order`, with the path of the offending field in the error.
pub fn parse_order(text: &str) -> Result<Order, DecodeError> {
    // Fast path: plain serde_json. Tracking the field path costs about as much as the parse
    // itself, so it is paid only for messages that fail (parsed a second time for the error).
    if let Ok(order) = serde_json::from_str::<Order>(text) {
        return Ok(order);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    match serde_path_to_error::deserialize::<_, Order>(&mut de) {
        // The fast path refused it, yet the value is an order: what follows the value is not
        // whitespace. A message is exactly one JSON value, so this is not JSON (and a second
        // order after the first must not be lost silently behind a stored first one).
        Ok(_) => Err(DecodeError::NotJson(clip(&de.end().err().map_or_else(
            || "trailing characters".to_owned(),
            |e| e.to_string(),
        )))),
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            match inner.classify() {
                serde_json::error::Category::Data => {
                    Err(DecodeError::NotOrder(clip(&if path == "." {
                        inner.to_string()
                    } else {
                        format!("{path}: {inner}")
                    })))
                }
                // A number too large even for a float is well-formed JSON that this order
                // cannot hold: name the field, like any other wrong number.
                _ if inner.to_string().starts_with("number out of range") && path != "." => {
                    Err(DecodeError::NotOrder(clip(&format!("{path}: {inner}"))))
                }
                _ => Err(DecodeError::NotJson(clip(&inner.to_string()))),
            }
        }
    }
}

/// The fields of each object of the order, as the model names them. A test checks them against
/// the model's own serialization.
pub const ORDER_FIELDS: [&str; 14] = [
    "order_uid",
    "track_number",
    "entry",
    "delivery",
    "payment",
    "items",
    "locale",
    "internal_signature",
    "customer_id",
    "delivery_service",
    "shardkey",
    "sm_id",
    "date_created",
    "oof_shard",
];
pub const DELIVERY_FIELDS: [&str; 7] =
    ["name", "phone", "zip", "city", "address", "region", "email"];
pub const PAYMENT_FIELDS: [&str; 10] = [
    "transaction",
    "request_id",
    "currency",
    "provider",
    "amount",
    "payment_dt",
    "bank",
    "delivery_cost",
    "goods_total",
    "custom_fee",
];
pub const ITEM_FIELDS: [&str; 11] = [
    "chrt_id",
    "track_number",
    "price",
    "rid",
    "name",
    "sale",
    "size",
    "total_price",
    "nm_id",
    "brand",
    "status",
];

/// Unknown fields split off one object: name and exact text, in order.
type Unknown<'a> = Vec<(String, &'a serde_json::value::RawValue)>;

/// The unknown fields found at each depth of a message.
#[derive(Default)]
struct Unknowns<'a> {
    order: Unknown<'a>,
    delivery: Unknown<'a>,
    payment: Unknown<'a>,
    /// By item index.
    items: Vec<(usize, Unknown<'a>)>,
}

impl Unknowns<'_> {
    fn is_empty(&self) -> bool {
        self.order.is_empty()
            && self.delivery.is_empty()
            && self.payment.is_empty()
            && self.items.is_empty()
    }
}

fn push_key(out: &mut String, k: &str) {
    // A `&str` always serializes.
    out.push_str(&serde_json::to_string(k).unwrap_or_default());
    out.push(':');
}

/// Writes the known members of the object `fields` to `out` as one JSON object (nested known
/// objects through `nested`), and returns the unknown ones. A repeated unknown name, or one
/// holding NUL, makes the message `not_order` (a repeated known name is left for serde, which
/// refuses it the same way).
fn split_object<'a>(
    fields: RawFields<'a>,
    known: &[&str],
    path: &dyn Fn(&str) -> String,
    out: &mut String,
    mut nested: impl FnMut(
        &str,
        &'a serde_json::value::RawValue,
        &mut String,
    ) -> Result<bool, DecodeError>,
) -> Result<Unknown<'a>, DecodeError> {
    let mut unknown: Unknown<'a> = Vec::new();
    out.push('{');
    let mut first = true;
    for (k, v) in fields.0 {
        if !known.contains(&k.as_str()) {
            if k.contains('\0') {
                return Err(DecodeError::NotOrder(clip(&format!(
                    "{}: field name {} contains NUL",
                    path(""),
                    quote(&k)
                ))));
            }
            if unknown.iter().any(|(n, _)| *n == k) {
                return Err(DecodeError::NotOrder(clip(&format!(
                    "{}: duplicate field `{}`",
                    path(&k),
                    escape_control(&k)
                ))));
            }
            unknown.push((k, v));
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        push_key(out, &k);
        if !nested(&k, v, out)? {
            out.push_str(v.get());
        }
    }
    out.push('}');
    Ok(unknown)
}

/// JSON text to `Order`, keeping the fields the model does not know (policy `keep`). An order
/// without any takes the plain parse, as under `reject`; one with some is split into its known
/// members, parsed by the same strict rules, and given back its unknown ones.
pub fn parse_order_keeping(text: &str) -> Result<Order, DecodeError> {
    use serde_json::value::RawValue;
    if let Ok(order) = serde_json::from_str::<Order>(text) {
        return Ok(order);
    }
    let top: RawFields<'_> = match serde_json::from_str(text) {
        Ok(top) => top,
        // Not an object: the strict parse says what it is instead.
        Err(e) if e.classify() == serde_json::error::Category::Data => return parse_order(text),
        Err(e) => return Err(DecodeError::NotJson(clip(&e.to_string()))),
    };
    let mut known = String::with_capacity(text.len());
    let mut unknowns = Unknowns::default();
    let sub = |prefix: &'static str| {
        move |k: &str| {
            if k.is_empty() {
                prefix.to_owned()
            } else {
                format!("{prefix}.{k}")
            }
        }
    };
    let (mut delivery, mut payment, mut items) = (Vec::new(), Vec::new(), Vec::new());
    let order_unknown = split_object(
        top,
        &ORDER_FIELDS,
        &|k: &str| {
            if k.is_empty() {
                ".".to_owned()
            } else {
                k.to_owned()
            }
        },
        &mut known,
        |k, v, out| match k {
            "delivery" | "payment" => {
                let Ok(fields) = serde_json::from_str::<RawFields<'_>>(v.get()) else {
                    return Ok(false);
                };
                let (names, target): (&[&str], &mut Unknown<'_>) = if k == "delivery" {
                    (&DELIVERY_FIELDS, &mut delivery)
                } else {
                    (&PAYMENT_FIELDS, &mut payment)
                };
                let prefix = if k == "delivery" {
                    "delivery"
                } else {
                    "payment"
                };
                *target = split_object(fields, names, &sub(prefix), out, |_, _, _| Ok(false))?;
                Ok(true)
            }
            "items" => {
                let Ok(list) = serde_json::from_str::<Vec<&RawValue>>(v.get()) else {
                    return Ok(false);
                };
                out.push('[');
                for (i, item) in list.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    match serde_json::from_str::<RawFields<'_>>(item.get()) {
                        Ok(fields) => {
                            let path = move |k: &str| {
                                if k.is_empty() {
                                    format!("items[{i}]")
                                } else {
                                    format!("items[{i}].{k}")
                                }
                            };
                            let u = split_object(fields, &ITEM_FIELDS, &path, out, |_, _, _| {
                                Ok(false)
                            })?;
                            if !u.is_empty() {
                                items.push((i, u));
                            }
                        }
                        Err(_) => out.push_str(item.get()),
                    }
                }
                out.push(']');
                Ok(true)
            }
            _ => Ok(false),
        },
    )?;
    unknowns.order = order_unknown;
    unknowns.delivery = delivery;
    unknowns.payment = payment;
    unknowns.items = items;
    if unknowns.is_empty() {
        // Nothing unknown: the message fails for another reason, which the strict parse of
        // the original text names with its position.
        return parse_order(text);
    }
    let mut order = parse_order(&known).map_err(without_position)?;
    let keep = |u: Unknown<'_>| crate::unknown::Extra::from_raw(u);
    order.extra = keep(unknowns.order);
    order.delivery.extra = keep(unknowns.delivery);
    order.payment.extra = keep(unknowns.payment);
    for (i, u) in unknowns.items {
        if let Some(item) = order.items.get_mut(i) {
            item.extra = keep(u);
        }
    }
    Ok(order)
}

/// An error found in the rebuilt text of known fields: its line and column would point into
/// that text, not the message, so they are left out.
fn without_position(e: DecodeError) -> DecodeError {
    fn strip(s: String) -> String {
        match s.rfind(" at line ") {
            Some(i)
                if s[i + 9..]
                    .split(" column ")
                    .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) =>
            {
                s[..i].to_owned()
            }
            _ => s,
        }
    }
    match e {
        DecodeError::NotOrder(s) => DecodeError::NotOrder(strip(s)),
        DecodeError::NotJson(s) => DecodeError::NotJson(strip(s)),
        other => other,
    }
}

/// `text` fit for a rejection detail: control characters escaped (PostgreSQL refuses NUL in
/// `text`, and a terminal would act on escape sequences) and at most [`MAX_DETAIL_BYTES`] long,
/// keeping its start and its end (a serde message ends with the position of the error).
pub fn bounded_detail(text: &str) -> String {
    clip(text)
}

/// `text` with its control characters (NUL, escape sequences, newlines) written as escapes,
/// so it is safe to store in `text` and to print to a terminal.
pub fn escape_control(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn clip(text: &str) -> String {
    // Room for the prefix `DecodeError` adds ("message is not an order: ").
    const MAX: usize = MAX_DETAIL_BYTES - 64;
    let escaped = escape_control(text);
    if escaped.len() <= MAX {
        return escaped.into_owned();
    }
    let keep = MAX / 2 - 32;
    let head = &escaped[..floor_char_boundary(&escaped, keep)];
    let tail = &escaped[ceil_char_boundary(&escaped, escaped.len() - keep)..];
    format!(
        "{head}…({} bytes left out)…{tail}",
        escaped.len() - head.len() - tail.len()
    )
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// A value quoted in a rule: at most [`MAX_QUOTED_CHARS`] characters, escaped.
fn quote(v: &str) -> String {
    match v.char_indices().nth(MAX_QUOTED_CHARS) {
        None => format!("{v:?}"),
        Some((end, _)) => format!("{:?}… ({} bytes)", &v[..end], v.len()),
    }
}

/// Checks every rule; returns the broken ones (the first [`MAX_REPORTED_ERRORS`] by path) and
/// how many there are.
pub fn validate_order(order: &Order) -> Result<(), Violations> {
    check_order(order, true)
}

/// [`validate_order`]; the text fields are searched for NUL only if `may_hold_nul`.
fn check_order(order: &Order, may_hold_nul: bool) -> Result<(), Violations> {
    let mut errors = Vec::new();
    if let Err(e) = order.validate() {
        flatten("", &e, &mut errors);
    }
    cross_field_rules(order, &mut errors);
    if may_hold_nul {
        text_rules(order, &mut errors);
    }
    unknown_rules(order, &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        // Every error is small (a path and a fixed rule or a bounded quote), and there are at
        // most a few per field of a message under the size limit, so all are sorted, then cut.
        errors.sort_by(|a, b| a.path.cmp(&b.path));
        let total = errors.len();
        errors.truncate(MAX_REPORTED_ERRORS);
        Err(Violations { errors, total })
    }
}

const NUL_RULE: &str = "must not contain NUL (\\u0000)";

/// Text that storage cannot hold: PostgreSQL `text` refuses NUL, so it is a broken rule of the
/// order (with its path), not a storage failure found later.
fn text_rules(o: &Order, errors: &mut Vec<FieldError>) {
    let mut check = |path: &dyn Fn() -> String, v: &str| {
        if v.contains('\0') {
            errors.push(FieldError {
                path: path(),
                rule: NUL_RULE.into(),
            });
        }
    };
    for (name, v) in [
        ("order_uid", &o.order_uid),
        ("track_number", &o.track_number),
        ("entry", &o.entry),
        ("locale", &o.locale),
        ("internal_signature", &o.internal_signature),
        ("customer_id", &o.customer_id),
        ("delivery_service", &o.delivery_service),
        ("shardkey", &o.shardkey),
        ("oof_shard", &o.oof_shard),
    ] {
        check(&|| name.to_owned(), v);
    }
    let d = &o.delivery;
    for (name, v) in [
        ("name", &d.name),
        ("phone", &d.phone),
        ("zip", &d.zip),
        ("city", &d.city),
        ("address", &d.address),
        ("region", &d.region),
        ("email", &d.email),
    ] {
        check(&|| format!("delivery.{name}"), v);
    }
    let p = &o.payment;
    for (name, v) in [
        ("transaction", &p.transaction),
        ("request_id", &p.request_id),
        ("currency", &p.currency),
        ("provider", &p.provider),
        ("bank", &p.bank),
    ] {
        check(&|| format!("payment.{name}"), v);
    }
    for (i, it) in o.items.iter().enumerate() {
        for (name, v) in [
            ("track_number", &it.track_number),
            ("rid", &it.rid),
            ("name", &it.name),
            ("size", &it.size),
            ("brand", &it.brand),
        ] {
            check(&|| format!("items[{i}].{name}"), v);
        }
    }
}

/// What is kept of an unknown field must be storable and servable as it came: no NUL (see
/// `text_rules`) and a bounded nesting (see [`MAX_UNKNOWN_DEPTH`]).
fn unknown_rules(o: &Order, errors: &mut Vec<FieldError>) {
    let mut check = |prefix: &dyn Fn() -> String, extra: &crate::unknown::Extra| {
        for (name, raw) in extra.iter() {
            let path = || {
                let p = prefix();
                if p.is_empty() {
                    name.to_owned()
                } else {
                    format!("{p}.{name}")
                }
            };
            if json_depth(raw) > MAX_UNKNOWN_DEPTH {
                errors.push(FieldError {
                    path: escape_control(&path()).into_owned(),
                    rule: format!("must not nest deeper than {MAX_UNKNOWN_DEPTH} levels"),
                });
            } else if json_has_nul(raw) {
                errors.push(FieldError {
                    path: escape_control(&path()).into_owned(),
                    rule: NUL_RULE.into(),
                });
            }
        }
    };
    if !o.extra.is_empty() {
        check(&String::new, &o.extra);
    }
    if !o.delivery.extra.is_empty() {
        check(&|| "delivery".to_owned(), &o.delivery.extra);
    }
    if !o.payment.extra.is_empty() {
        check(&|| "payment".to_owned(), &o.payment.extra);
    }
    for (i, it) in o.items.iter().enumerate() {
        if !it.extra.is_empty() {
            check(&|| format!("items[{i}]"), &it.extra);
        }
    }
}

/// Rules that relate several fields, which the derive cannot express.
fn cross_field_rules(order: &Order, errors: &mut Vec<FieldError>) {
    for (i, item) in order.items.iter().enumerate() {
        if item.track_number != order.track_number {
            errors.push(FieldError {
                path: format!("items[{i}].track_number"),
                rule: format!(
                    "must equal the order's track_number {}",
                    quote(&order.track_number)
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

/// validator's `length` rule for text (at least `MIN` and at most `MAX` characters, the same
/// error), without counting characters when the byte length settles it: a string has at most
/// as many characters as bytes, and at least a quarter as many. Counting was 3% of the sink
/// path's CPU; almost every field is settled by its byte length.
pub(crate) fn text_len<const MIN: u64, const MAX: u64>(s: &str) -> Result<(), ValidationError> {
    let bytes = s.len() as u64;
    let within = if bytes <= MAX && bytes.div_ceil(4) >= MIN {
        true
    } else {
        (MIN..=MAX).contains(&(s.chars().count() as u64))
    };
    if within {
        return Ok(());
    }
    let mut e = ValidationError::new("length");
    if MIN > 0 {
        e.add_param(Cow::Borrowed("min"), &MIN);
    }
    e.add_param(Cow::Borrowed("max"), &MAX);
    e.add_param(Cow::Borrowed("value"), &s);
    Err(e)
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

/// The common case of validator's email rule, checked without its regular expressions (they
/// were a tenth of validation's time): an ASCII user part of its allowed characters, at most
/// 64, and an ASCII domain of dot-separated labels of 1 to 63 letters, digits and inner
/// hyphens, at most 255. Everything it accepts, validator accepts (a test checks); anything
/// else (internationalised domains, address literals, invalid input) goes to validator.
fn plain_email(v: &str) -> bool {
    let Some((user, domain)) = v.rsplit_once('@') else {
        return false;
    };
    let user_ok = (1..=64).contains(&user.len())
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._!#$%&'*+/=?^`{|}~-".contains(&b));
    let label_ok = |l: &[u8]| {
        (1..=63).contains(&l.len())
            && l.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            && l[0] != b'-'
            && l[l.len() - 1] != b'-'
    };
    user_ok && domain.len() <= 255 && domain.as_bytes().split(|b| *b == b'.').all(label_ok)
}

/// An email address. validator's check accepts any text before a domain literal (`a@<x>[1.2.3.4]`),
/// so a domain with brackets, angle brackets or blanks is refused here first.
pub(crate) fn validate_email(v: &str) -> Result<(), ValidationError> {
    use validator::ValidateEmail;
    if plain_email(v) {
        return Ok(());
    }
    let domain = v.rsplit_once('@').map_or("", |(_, d)| d);
    let odd = |c: char| matches!(c, '[' | ']' | '<' | '>') || c.is_whitespace();
    if v.validate_email() && !domain.contains(odd) {
        Ok(())
    } else {
        Err(ValidationError::new("email"))
    }
}

pub(crate) fn validate_currency(v: &str) -> Result<(), ValidationError> {
    if v.len() == 3 && v.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(rule("currency", "must be 3 upper-case letters (ISO 4217)"))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use validator::{ValidateEmail, ValidateLength};

    use super::{plain_email, text_len};

    /// The NUL check runs only on messages with a backslash: whatever else a message escapes,
    /// a NUL in any text field is still found, with its path.
    #[test]
    fn a_nul_escape_is_found_beside_other_escapes() {
        let order = crate::sample::generated_order("nul-", 7, 2);
        for (field, text) in [
            ("items[1].name", r"a\u0000b"),
            ("delivery.city", r#"\"quoted\" \u0000"#),
        ] {
            let mut o = order.clone();
            let at = field.rsplit('.').next().unwrap_or_default();
            match field {
                "items[1].name" => o.items[1].name = "placeholder".into(),
                _ => o.delivery.city = "placeholder".into(),
            }
            let json = serde_json::to_string(&o).unwrap().replacen(
                &format!("\"{at}\":\"placeholder\""),
                &format!("\"{at}\":\"{text}\""),
                1,
            );
            let err = super::decode_order(Some(json.as_bytes()), 1 << 20).unwrap_err();
            let super::DecodeError::Invalid(v) = err else {
                panic!("{field}: {err}")
            };
            assert_eq!(v.errors.len(), 1, "{field}: {v:?}");
            assert_eq!(v.errors[0].path, field);
            assert_eq!(v.errors[0].rule, super::NUL_RULE);
        }
        // Escapes without NUL are fine.
        let mut o = order;
        o.delivery.city = "\"quoted\" \\ é".into();
        let json = serde_json::to_string(&o).unwrap();
        assert!(json.contains('\\'));
        assert!(super::decode_order(Some(json.as_bytes()), 1 << 20).is_ok());
    }

    /// validator's own `length(min = MIN, max = MAX)` on `s`, and its error's parameters.
    fn validators_length(s: &str, min: Option<u64>, max: u64) -> bool {
        s.to_owned().validate_length(min, Some(max), None)
    }

    /// `text_len` gives validator's verdict, with the error `describe` turns into the same
    /// words (`length must be 1..=4`, `length must be at most 4`).
    fn agree<const MIN: u64, const MAX: u64>(s: &str) -> Result<(), TestCaseError> {
        let min = (MIN > 0).then_some(MIN);
        let ours = text_len::<MIN, MAX>(s);
        prop_assert_eq!(ours.is_ok(), validators_length(s, min, MAX), "{:?}", s);
        if let Err(e) = ours {
            let words = super::describe(&e);
            let expected = match min {
                Some(m) => format!("length must be {m}..={MAX}"),
                None => format!("length must be at most {MAX}"),
            };
            prop_assert_eq!(words, expected);
        }
        Ok(())
    }

    /// The rule before the fast path: validator's, and no odd character in the domain.
    fn full_rule(v: &str) -> bool {
        let domain = v.rsplit_once('@').map_or("", |(_, d)| d);
        let odd = |c: char| matches!(c, '[' | ']' | '<' | '>') || c.is_whitespace();
        v.validate_email() && !domain.contains(odd)
    }

    #[test]
    fn the_fast_path_takes_ordinary_addresses_and_leaves_the_rest() {
        for ok in [
            "test@gmail.com",
            "a.b+c@sub.example-1.org",
            "x@y",
            "!#$%&'*+/=?^_`{|}~-.@a1",
        ] {
            assert!(plain_email(ok), "{ok}");
            assert!(full_rule(ok), "{ok}");
        }
        for other in [
            "",
            "no-at",
            "@example.com",
            "a@",
            "a@-x.com",
            "a@x-.com",
            "a@x..com",
            "a@x.com.",
            "a b@x.com",
            "a@[127.0.0.1]",
            "a@bücher.de",
            "a@b@c.com",
        ] {
            assert!(!plain_email(other), "{other}");
        }
        let long_label = format!("a@{}.com", "x".repeat(64));
        assert!(!plain_email(&long_label));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        /// Whatever the fast path accepts, the full rule accepts: the result of
        /// `validate_email` is unchanged by it.
        #[test]
        fn the_fast_path_accepts_nothing_the_full_rule_refuses(
            v in "[a-zA-Z0-9.@!#'*+=?^_`{|}~ \\[\\]<>ü-]{0,80}"
        ) {
            prop_assert!(!plain_email(&v) || full_rule(&v), "{v:?}");
        }

        /// Strings of 0 to 12 characters of 1 to 4 bytes each, on both sides of every
        /// bound the shortcut reasons about.
        #[test]
        fn text_len_agrees_with_validators_length(
            s in "[a-zé€😀]{0,12}"
        ) {
            agree::<0, 4>(&s)?;
            agree::<1, 4>(&s)?;
            agree::<3, 8>(&s)?;
            agree::<1, 1>(&s)?;
            agree::<5, 6>(&s)?;
        }

        #[test]
        fn addresses_shaped_like_the_rule_agree(
            user in "[a-z0-9.+_-]{0,70}",
            labels in prop::collection::vec("[a-z0-9-]{0,66}", 0..5),
        ) {
            let v = format!("{user}@{}", labels.join("."));
            prop_assert!(!plain_email(&v) || full_rule(&v), "{v:?}");
        }
    }
}
