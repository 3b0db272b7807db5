#![allow(clippy::unwrap_used)]
//! Property tests at the limits (issue 14): the reference order is changed ONE field at a time
//! and the exact outcome is asserted: acceptance, the exact list of broken paths (`invalid`,
//! including the cross-field rules the change breaks), or `not_order` naming the field's path.
//!
//! The cases come from tables (every field of the order, delivery, payment and `items[0]`) and
//! from proptest strategies drawn with a fixed seed (`TestRunner::deterministic`), so the set is
//! the same on every run. The expected outcome is computed from the rules as the model states
//! them (lengths in characters, charsets, NUL, ranges, the totals with checked arithmetic),
//! never from the code under test.

use std::collections::BTreeSet;

use orders_domain::validation::{DEFAULT_MAX_MESSAGE_BYTES, decode_order};
use orders_domain::{DecodeError, REFERENCE_ORDER_JSON, UnknownFields, decode_order_with};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};

/// How many cases [`one_field_at_a_time`] checks. Adding cases means raising this; a change
/// that silently drops some fails the test.
const EXPECTED_CASES: usize = 1382;

/// Random strings drawn per field and per length (max and max+1).
const DRAWS: usize = 12;

/// One multibyte character of each UTF-8 width.
const WIDE: [char; 3] = ['ж', '€', '𝄞'];

/// The reference order's track number, which every item must repeat.
const REF_TRACK: &str = "WBILMTESTTRACK";

/// Marks where a raw JSON number (one `serde_json::Value` cannot hold) is spliced in.
const RAW: &str = "\u{1}raw-number\u{1}";

fn fixture() -> Value {
    serde_json::from_str(REFERENCE_ORDER_JSON).unwrap()
}

/// `pointer` (`/items/0/price`) as the validator and serde_path_to_error name it
/// (`items[0].price`).
fn path_of(pointer: &str) -> String {
    pointer
        .trim_start_matches('/')
        .replace("/0/", "[0].")
        .replace('/', ".")
}

#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// Accepted; the order serializes the field as this value.
    Ok(Value),
    /// Refused as invalid with exactly these paths, sorted as the code sorts them.
    Invalid(Vec<String>),
    /// Refused as not an order, the detail naming this path.
    NotOrder(String),
}

struct Case {
    label: String,
    pointer: &'static str,
    message: Vec<u8>,
    expect: Expect,
}

fn message_with(pointer: &str, new: Value) -> Vec<u8> {
    let mut v = fixture();
    *v.pointer_mut(pointer).unwrap() = new;
    serde_json::to_vec(&v).unwrap()
}

/// The reference order with `raw` (JSON text) as the value at `pointer`.
fn message_with_raw(pointer: &str, raw: &str) -> Vec<u8> {
    let text = String::from_utf8(message_with(pointer, json!(RAW))).unwrap();
    let quoted = serde_json::to_string(RAW).unwrap();
    assert_eq!(text.matches(&quoted).count(), 1);
    text.replace(&quoted, raw).into_bytes()
}

fn invalid(mut paths: Vec<String>) -> Expect {
    if paths.is_empty() {
        panic!("use Expect::Ok for an accepted value");
    }
    // The code sorts by path (a stable sort); equal paths are interchangeable here.
    paths.sort();
    Expect::Invalid(paths)
}

// ---------------------------------------------------------------------------------------------
// Text fields

#[derive(Debug, Clone, Copy, PartialEq)]
enum Charset {
    /// Any text without NUL.
    Free,
    /// `order_uid`: 1..=64 of [A-Za-z0-9_-] (its own rule, no separate length rule).
    OrderUid,
    /// Printable ASCII without spaces.
    Token,
    /// '+' and 5..=20 ASCII digits (no separate length rule).
    Phone,
    /// 3 upper-case ASCII letters (no separate length rule).
    Currency,
    /// An email address; whether a value is one is stated by each email case.
    Email,
}

#[derive(Debug, Clone, Copy)]
struct TextField {
    pointer: &'static str,
    /// `length(min, max)` in characters, where the field has that rule.
    length: Option<(usize, usize)>,
    charset: Charset,
}

const fn text(pointer: &'static str, min: usize, max: usize) -> TextField {
    TextField {
        pointer,
        length: Some((min, max)),
        charset: Charset::Free,
    }
}

const TEXT_FIELDS: [TextField; 26] = [
    TextField {
        pointer: "/order_uid",
        length: None,
        charset: Charset::OrderUid,
    },
    TextField {
        pointer: "/track_number",
        length: Some((1, 64)),
        charset: Charset::Token,
    },
    text("/entry", 1, 32),
    text("/locale", 1, 16),
    text("/internal_signature", 0, 256),
    text("/customer_id", 1, 128),
    text("/delivery_service", 1, 64),
    text("/shardkey", 1, 16),
    text("/oof_shard", 1, 16),
    text("/delivery/name", 1, 256),
    TextField {
        pointer: "/delivery/phone",
        length: None,
        charset: Charset::Phone,
    },
    text("/delivery/zip", 1, 32),
    text("/delivery/city", 1, 128),
    text("/delivery/address", 1, 512),
    text("/delivery/region", 1, 128),
    TextField {
        pointer: "/delivery/email",
        length: Some((3, 254)),
        charset: Charset::Email,
    },
    text("/payment/transaction", 1, 128),
    text("/payment/request_id", 0, 128),
    TextField {
        pointer: "/payment/currency",
        length: None,
        charset: Charset::Currency,
    },
    text("/payment/provider", 1, 64),
    text("/payment/bank", 1, 64),
    // Also must equal the order's track_number (which the cases here leave unchanged).
    text("/items/0/track_number", 1, 64),
    text("/items/0/rid", 1, 128),
    text("/items/0/name", 1, 256),
    text("/items/0/size", 1, 32),
    text("/items/0/brand", 1, 256),
];

/// Does `v` pass the field's charset rule? `email` is the case's own statement for emails.
fn charset_ok(charset: Charset, v: &str, email: bool) -> bool {
    match charset {
        Charset::Free => true,
        Charset::OrderUid => {
            (1..=64).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        }
        Charset::Token => v.bytes().all(|b| b.is_ascii_graphic()),
        Charset::Phone => v
            .strip_prefix('+')
            .is_some_and(|d| (5..=20).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit())),
        Charset::Currency => v.len() == 3 && v.bytes().all(|b| b.is_ascii_uppercase()),
        Charset::Email => email,
    }
}

/// The outcome of `field = v` on the reference order. For emails, `email` says whether `v` is
/// an email address; for other fields it is ignored.
fn text_expect(field: &TextField, v: &str, email: bool) -> Expect {
    let path = path_of(field.pointer);
    let mut paths = vec![];
    if let Some((min, max)) = field.length
        && !(min..=max).contains(&v.chars().count())
    {
        paths.push(path.clone());
    }
    if !charset_ok(field.charset, v, email) {
        paths.push(path.clone());
    }
    if v.contains('\0') {
        paths.push(path.clone());
    }
    // Every item repeats the order's track_number: changing either side breaks the item's.
    if matches!(field.pointer, "/track_number" | "/items/0/track_number") && v != REF_TRACK {
        paths.push("items[0].track_number".into());
    }
    if paths.is_empty() {
        Expect::Ok(json!(v))
    } else {
        invalid(paths)
    }
}

fn text_case(cases: &mut Vec<Case>, field: &TextField, what: &str, v: &str, email: bool) {
    cases.push(Case {
        label: format!(
            "{} = {what} ({} chars, {} bytes)",
            path_of(field.pointer),
            v.chars().count(),
            v.len()
        ),
        pointer: field.pointer,
        message: message_with(field.pointer, json!(v)),
        expect: text_expect(field, v, email),
    });
}

fn repeat(c: char, n: usize) -> String {
    std::iter::repeat_n(c, n).collect()
}

/// Draws `n` values of `strategy` from a runner with a fixed seed.
fn draw<S: Strategy>(runner: &mut TestRunner, strategy: S, n: usize) -> Vec<S::Value> {
    (0..n)
        .map(|_| strategy.new_tree(runner).unwrap().current())
        .collect()
}

/// A multibyte character of any UTF-8 width (2, 3 or 4 bytes), never ASCII, never NUL.
fn wide_char() -> impl Strategy<Value = char> {
    prop_oneof![
        proptest::char::range('\u{80}', '\u{7FF}'),
        proptest::char::range('\u{800}', '\u{D7FF}'),
        proptest::char::range('\u{E000}', '\u{FFFF}'),
        proptest::char::range('\u{10000}', '\u{10FFFF}'),
    ]
}

fn wide_string(chars: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(wide_char(), chars).prop_map(String::from_iter)
}

/// Free text with a `length(min, max)` rule.
fn free_text_cases(cases: &mut Vec<Case>, runner: &mut TestRunner, f: &TextField) {
    let (min, max) = f.length.unwrap();
    if f.pointer == "/items/0/track_number" {
        // The only value it may take: the order's (any other breaks the cross-field rule).
        text_case(cases, f, "the order's", REF_TRACK, false);
    }
    for c in WIDE {
        text_case(cases, f, &format!("{c:?} x max"), &repeat(c, max), false);
        text_case(
            cases,
            f,
            &format!("{c:?} x (max+1)"),
            &repeat(c, max + 1),
            false,
        );
        text_case(cases, f, &format!("{c:?} x 1"), &c.to_string(), false);
    }
    // min-1 where min is 1; "" where it is allowed.
    text_case(cases, f, "empty", "", false);
    text_case(cases, f, "NUL inside", "a\u{0}b", false);
    let nul_at_max = format!("\u{0}{}", repeat('𝄞', max - 1));
    text_case(cases, f, "NUL + 𝄞 x (max-1)", &nul_at_max, false);
    let nul_over_max = format!("{}\u{0}", repeat('ж', max));
    text_case(cases, f, "ж x max + NUL", &nul_over_max, false);
    // Every free-text minimum is 0 or 1, so "" above is either allowed or min-1.
    assert!(min <= 1, "{}: add a min-1 case", f.pointer);
    for (n, what) in [
        (max, "random multibyte x max"),
        (max + 1, "random multibyte x (max+1)"),
    ] {
        for v in draw(runner, wide_string(n), DRAWS) {
            text_case(cases, f, what, &v, false);
        }
    }
}

fn order_uid_cases(cases: &mut Vec<Case>, runner: &mut TestRunner, f: &TextField) {
    let uid = |n: usize| "A-z_09".chars().cycle().take(n).collect::<String>();
    text_case(cases, f, "[A-Za-z0-9_-] x 64", &uid(64), false);
    text_case(cases, f, "[A-Za-z0-9_-] x 65", &uid(65), false);
    text_case(cases, f, "one char", "x", false);
    for c in WIDE {
        text_case(cases, f, &format!("{c:?} x 1"), &c.to_string(), false);
        // 64 characters, more than 64 bytes.
        text_case(cases, f, &format!("{c:?} x 64"), &repeat(c, 64), false);
        // At most 64 bytes, but not ASCII.
        text_case(
            cases,
            f,
            &format!("{c:?} x fits 64 bytes"),
            &repeat(c, 64 / c.len_utf8()),
            false,
        );
    }
    for v in ["", "a b", "a.b", "a\u{0}b", "a/b", "é"] {
        text_case(cases, f, &format!("{v:?}"), v, false);
    }
    let allowed = "[A-Za-z0-9_-]";
    for (n, what) in [(64, "random x 64"), (65, "random x 65")] {
        for v in draw(
            runner,
            proptest::string::string_regex(&format!("{allowed}{{{n}}}")).unwrap(),
            DRAWS,
        ) {
            text_case(cases, f, what, &v, false);
        }
    }
    for v in draw(runner, (1usize..=64).prop_flat_map(wide_string), DRAWS) {
        text_case(cases, f, "random multibyte x 1..=64", &v, false);
    }
}

fn track_number_cases(cases: &mut Vec<Case>, runner: &mut TestRunner, f: &TextField) {
    text_case(cases, f, "unchanged", REF_TRACK, false);
    text_case(cases, f, "! x 64", &repeat('!', 64), false);
    text_case(cases, f, "~ x 65", &repeat('~', 65), false);
    for c in WIDE {
        text_case(cases, f, &format!("{c:?} x 64"), &repeat(c, 64), false);
        text_case(cases, f, &format!("{c:?} x 65"), &repeat(c, 65), false);
        text_case(cases, f, &format!("{c:?} x 1"), &c.to_string(), false);
    }
    for v in ["", "a b", "a\u{0}b", "TRACK\t1", "TRACK\u{7f}"] {
        text_case(cases, f, &format!("{v:?}"), v, false);
    }
    for (n, what) in [(64, "random graphic x 64"), (65, "random graphic x 65")] {
        for v in draw(
            runner,
            proptest::string::string_regex(&format!("[!-~]{{{n}}}")).unwrap(),
            DRAWS,
        ) {
            text_case(cases, f, what, &v, false);
        }
    }
    for v in draw(runner, wide_string(64), DRAWS) {
        text_case(cases, f, "random multibyte x 64", &v, false);
    }
}

fn phone_cases(cases: &mut Vec<Case>, runner: &mut TestRunner, f: &TextField) {
    let digits = |n: usize| {
        format!(
            "+{}",
            "1234567890".chars().cycle().take(n).collect::<String>()
        )
    };
    for n in [0, 4, 5, 20, 21] {
        text_case(cases, f, &format!("+ and {n} digits"), &digits(n), false);
    }
    for v in [
        "",
        "12345678",
        "++12345",
        "+123 456",
        "+12\u{0}345",
        // Digits, but not ASCII ones: Arabic-Indic (2 bytes), full-width (3 bytes),
        // mathematical bold (4 bytes).
        "+٣٣٣٣٣",
        "+１２３４５",
        "+𝟏𝟐𝟑𝟒𝟓",
        // 5 characters, but 10 bytes: neither count matters, these are not digits.
        "+жжжжж",
    ] {
        text_case(cases, f, &format!("{v:?}"), v, false);
    }
    for c in WIDE {
        text_case(
            cases,
            f,
            &format!("+ and {c:?} x 20"),
            &format!("+{}", repeat(c, 20)),
            false,
        );
    }
    for v in draw(
        runner,
        proptest::string::string_regex(r"\+[0-9]{5,20}").unwrap(),
        DRAWS,
    ) {
        text_case(cases, f, "random + and 5..=20 digits", &v, false);
    }
    for v in draw(
        runner,
        proptest::string::string_regex(r"\+[0-9]{21,30}").unwrap(),
        DRAWS / 2,
    ) {
        text_case(cases, f, "random + and 21..=30 digits", &v, false);
    }
}

fn currency_cases(cases: &mut Vec<Case>, runner: &mut TestRunner, f: &TextField) {
    for v in [
        "EUR",
        "ZZZ",
        "usd",
        "Usd",
        "EU",
        "EURO",
        "",
        "U\u{0}D",
        "US1",
        // 3 bytes, 1 character.
        "€",
        // 3 characters, more bytes.
        "ЖЖЖ",
        "ÄBC",
        "𝄞𝄞𝄞",
    ] {
        text_case(cases, f, &format!("{v:?}"), v, false);
    }
    for v in draw(
        runner,
        proptest::string::string_regex("[A-Z]{3}").unwrap(),
        DRAWS / 2,
    ) {
        text_case(cases, f, "random [A-Z]{3}", &v, false);
    }
    for v in draw(runner, wide_string(3), DRAWS / 2) {
        text_case(cases, f, "random multibyte x 3", &v, false);
    }
}

fn email_cases(cases: &mut Vec<Case>, f: &TextField) {
    // 64 (the longest local part) + '@' + labels of 63 and dots: 254 and 255 characters.
    let local = repeat('a', 64);
    let domain = |n: usize| {
        let mut d = String::new();
        while d.len() < n {
            if !d.is_empty() {
                d.push('.');
            }
            let label = (n - d.len()).min(63);
            d.push_str(&repeat('b', label));
        }
        d
    };
    let max = format!("{local}@{}", domain(254 - 65));
    let over = format!("{local}@{}", domain(255 - 65));
    assert_eq!((max.chars().count(), over.chars().count()), (254, 255));
    let cases_here: [(&str, &str, bool); 13] = [
        ("longest address", &max, true),
        // Still an address, only too long.
        ("longest + 1", &over, true),
        ("shortest address", "a@b", true),
        ("2 characters", "a@", false),
        ("empty", "", false),
        ("NUL inside", "a\u{0}b", false),
        ("NUL in the local part", "a\u{0}b@example.com", false),
        ("multibyte local part", "жж@example.com", false),
        ("multibyte 4-byte local part", "𝄞@example.com", false),
        ("no @", "test.gmail.com", false),
        ("two @", "a@b@c", false),
        // An internationalised domain name: valid (it has a punycode form).
        ("IDN domain", "test@пример.рф", true),
        ("space", "te st@gmail.com", false),
    ];
    for (what, v, email) in cases_here {
        text_case(cases, f, what, v, email);
    }
    for c in WIDE {
        // Multibyte text is no address, at the length limit or over it.
        text_case(cases, f, &format!("{c:?} x 254"), &repeat(c, 254), false);
        text_case(cases, f, &format!("{c:?} x 255"), &repeat(c, 255), false);
        text_case(cases, f, &format!("{c:?} x 3"), &repeat(c, 3), false);
    }
}

// ---------------------------------------------------------------------------------------------
// Integer fields

#[derive(Debug, Clone, Copy)]
struct IntField {
    pointer: &'static str,
    min: i64,
    max: i64,
    /// i32 in the model (`sale`, `status`); i64 otherwise.
    is_i32: bool,
}

const fn int(pointer: &'static str) -> IntField {
    IntField {
        pointer,
        min: 0,
        max: i64::MAX,
        is_i32: false,
    }
}

const INT_FIELDS: [IntField; 12] = [
    int("/sm_id"),
    int("/payment/amount"),
    int("/payment/payment_dt"),
    int("/payment/delivery_cost"),
    int("/payment/goods_total"),
    int("/payment/custom_fee"),
    int("/items/0/chrt_id"),
    int("/items/0/price"),
    IntField {
        pointer: "/items/0/sale",
        min: 0,
        max: 100,
        is_i32: true,
    },
    int("/items/0/total_price"),
    int("/items/0/nm_id"),
    IntField {
        pointer: "/items/0/status",
        min: 0,
        max: i32::MAX as i64,
        is_i32: true,
    },
];

/// The numbers the cross-field rules read, as in the reference order.
#[derive(Debug, Clone, Copy)]
struct Totals {
    amount: i64,
    delivery_cost: i64,
    goods_total: i64,
    custom_fee: i64,
    /// Of the only item.
    total_price: i64,
}

impl Totals {
    fn reference() -> Self {
        let v = fixture();
        let n = |p: &str| v.pointer(p).unwrap().as_i64().unwrap();
        Self {
            amount: n("/payment/amount"),
            delivery_cost: n("/payment/delivery_cost"),
            goods_total: n("/payment/goods_total"),
            custom_fee: n("/payment/custom_fee"),
            total_price: n("/items/0/total_price"),
        }
    }

    /// The paths the totals rules report, computed with checked arithmetic: goods_total must
    /// equal the sum of the items' total_price, amount must equal goods_total + delivery_cost
    /// + custom_fee (an overflowing sum equals nothing).
    fn broken(&self) -> Vec<String> {
        let mut out = vec![];
        // One item: its total_price is the sum, which cannot overflow.
        if self.total_price != self.goods_total {
            out.push("payment.goods_total".into());
        }
        let expected = self
            .goods_total
            .checked_add(self.delivery_cost)
            .and_then(|s| s.checked_add(self.custom_fee));
        if expected != Some(self.amount) {
            out.push("payment.amount".into());
        }
        out
    }
}

/// The outcome of `field = v` (an integer that fits the field's type).
fn int_expect(field: &IntField, v: i64) -> Expect {
    let path = path_of(field.pointer);
    let mut paths = vec![];
    if v < field.min || v > field.max {
        paths.push(path.clone());
    }
    let mut t = Totals::reference();
    match field.pointer {
        "/payment/amount" => t.amount = v,
        "/payment/delivery_cost" => t.delivery_cost = v,
        "/payment/goods_total" => t.goods_total = v,
        "/payment/custom_fee" => t.custom_fee = v,
        "/items/0/total_price" => t.total_price = v,
        _ => {}
    }
    paths.extend(t.broken());
    if paths.is_empty() {
        Expect::Ok(json!(v))
    } else {
        invalid(paths)
    }
}

fn int_cases(cases: &mut Vec<Case>, runner: &mut TestRunner, f: &IntField) {
    let path = path_of(f.pointer);
    let (lo, hi) = if f.is_i32 {
        (i128::from(i32::MIN), i128::from(i32::MAX))
    } else {
        (i128::from(i64::MIN), i128::from(i64::MAX))
    };
    // The reference value first: for the totals it is the only one a single change may take.
    let reference = fixture().pointer(f.pointer).unwrap().as_i64().unwrap();
    let mut values: Vec<i128> = vec![
        i128::from(reference),
        0,
        1,
        -1,
        i128::from(f.min),
        i128::from(f.min) - 1,
        i128::from(f.max),
        i128::from(f.max) + 1,
        i128::from(i32::MAX),
        i128::from(i32::MAX) + 1,
        i128::from(i32::MIN),
        i128::from(i32::MIN) - 1,
        i128::from(i64::MAX),
        i128::from(i64::MAX) + 1,
        i128::from(i64::MIN),
        i128::from(i64::MIN) - 1,
        i128::from(u64::MAX),
        i128::from(u64::MAX) + 1,
    ];
    values.extend(draw(runner, any::<i64>().prop_map(i128::from), DRAWS / 2));
    let mut seen = BTreeSet::new();
    values.retain(|v| seen.insert(*v));
    for v in values {
        let (message, expect) = if (lo..=hi).contains(&v) {
            let v = i64::try_from(v).unwrap();
            (message_with(f.pointer, json!(v)), int_expect(f, v))
        } else {
            // Out of the field's type: the shape is wrong, whatever the rules say.
            (
                message_with_raw(f.pointer, &v.to_string()),
                Expect::NotOrder(path.clone()),
            )
        };
        cases.push(Case {
            label: format!("{path} = {v}"),
            pointer: f.pointer,
            message,
            expect,
        });
    }
    // Not integers: floats (even whole ones), numbers as strings, other types.
    for raw in [
        "1.5", "1.0", "-0.5", "1e2", "0.0", "\"12\"", "\"0\"", "null", "true", "[]", "{}",
    ] {
        cases.push(Case {
            label: format!("{path} = {raw}"),
            pointer: f.pointer,
            message: message_with_raw(f.pointer, raw),
            expect: Expect::NotOrder(path.clone()),
        });
    }
}

// ---------------------------------------------------------------------------------------------
// date_created

fn date_cases(cases: &mut Vec<Case>) {
    const P: &str = "/date_created";
    let accepted = [
        ("2021-11-26T06:22:19Z", "2021-11-26T06:22:19Z"),
        ("2021-11-26T09:22:19+03:00", "2021-11-26T06:22:19Z"),
        ("2021-11-26T01:22:19-05:00", "2021-11-26T06:22:19Z"),
        ("2021-11-26T11:52:19+05:30", "2021-11-26T06:22:19Z"),
        ("2021-11-26T06:22:19+00:00", "2021-11-26T06:22:19Z"),
        ("2021-11-26T06:22:19-00:00", "2021-11-26T06:22:19Z"),
        ("2021-11-27T06:21:19+23:59", "2021-11-26T06:22:19Z"),
        ("2021-11-25T06:23:19-23:59", "2021-11-26T06:22:19Z"),
        ("2021-11-26t06:22:19z", "2021-11-26T06:22:19Z"),
        // Kept to the microsecond (what PostgreSQL stores), truncated.
        (
            "2021-11-26T09:22:19.123456789+03:00",
            "2021-11-26T06:22:19.123456Z",
        ),
        ("2021-11-26T06:22:19.5Z", "2021-11-26T06:22:19.500Z"),
        ("2021-11-26T06:22:19.000000Z", "2021-11-26T06:22:19Z"),
        // A day that exists only in leap years, and the ends of the 4-digit range.
        ("2024-02-29T23:00:00-01:00", "2024-03-01T00:00:00Z"),
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),
        ("9999-12-31T23:59:59Z", "9999-12-31T23:59:59Z"),
        ("1970-01-01T00:00:00Z", "1970-01-01T00:00:00Z"),
    ];
    for (input, utc) in accepted {
        cases.push(Case {
            label: format!("date_created = {input:?}"),
            pointer: P,
            message: message_with(P, json!(input)),
            expect: Expect::Ok(json!(utc)),
        });
    }
    let refused = [
        json!("26.11.2021"),
        json!("2021-11-26"),
        json!("06:22:19Z"),
        json!("2021-11-26T06:22:19"),
        json!("2021-11-26T06:22Z"),
        json!("2021-11-26T06:22:19+0300"),
        json!("2021-11-26T06:22:19+03"),
        json!("2021-11-26T06:22:19 +03:00"),
        json!("2021-11-26T06:22:19+24:00"),
        json!("2021-13-26T06:22:19Z"),
        json!("2021-11-31T06:22:19Z"),
        json!("2021-02-29T06:22:19Z"),
        json!("2021-11-26T24:00:00Z"),
        json!("2021-11-26T06:60:19Z"),
        json!("21-11-26T06:22:19Z"),
        json!("+2021-11-26T06:22:19Z"),
        json!("12021-11-26T06:22:19Z"),
        json!("2021-11-26T06:22:19.Z"),
        json!("Fri, 26 Nov 2021 06:22:19 +0000"),
        json!("２０２１-11-26T06:22:19Z"),
        json!("2021-11-26T06:22:19Z\u{0}"),
        json!(""),
        json!(1_637_907_727),
        json!(null),
        json!([]),
    ];
    for bad in refused {
        cases.push(Case {
            label: format!("date_created = {bad}"),
            pointer: P,
            message: message_with(P, bad),
            expect: Expect::NotOrder("date_created".into()),
        });
    }
}

// ---------------------------------------------------------------------------------------------

fn all_cases() -> Vec<Case> {
    let mut runner = TestRunner::deterministic();
    let mut cases = vec![];
    for f in &TEXT_FIELDS {
        match f.charset {
            Charset::Free => free_text_cases(&mut cases, &mut runner, f),
            Charset::OrderUid => order_uid_cases(&mut cases, &mut runner, f),
            Charset::Token => track_number_cases(&mut cases, &mut runner, f),
            Charset::Phone => phone_cases(&mut cases, &mut runner, f),
            Charset::Currency => currency_cases(&mut cases, &mut runner, f),
            Charset::Email => email_cases(&mut cases, f),
        }
    }
    for f in &INT_FIELDS {
        int_cases(&mut cases, &mut runner, f);
    }
    date_cases(&mut cases);
    // The items list itself: none is too few, and the goods total no longer adds up.
    cases.push(Case {
        label: "items = []".into(),
        pointer: "/items",
        message: message_with("/items", json!([])),
        expect: invalid(vec!["items".into(), "payment.goods_total".into()]),
    });
    cases
}

/// Fields the model does not know, spliced in at every depth of a compact message (where that
/// object is still an object).
const UNKNOWN_AT: [(&str, &str); 4] = [
    ("{", "{\"zz_top\":{\"n\":[1,2.50,null]},"),
    ("\"delivery\":{", "\"delivery\":{\"zz_floor\":3,"),
    ("\"payment\":{", "\"payment\":{\"zz_risk\":\"low\","),
    ("\"items\":[{", "\"items\":[{\"zz_gift\":true,"),
];

fn with_unknown_fields(message: &[u8]) -> Vec<u8> {
    let mut text = String::from_utf8(message.to_vec()).unwrap();
    for (at, with) in UNKNOWN_AT {
        text = text.replacen(at, with, 1);
    }
    text.into_bytes()
}

/// What went wrong with `case`, if anything.
fn check(case: &Case) -> Option<String> {
    check_with(case, &case.message, UnknownFields::Reject)
}

/// `case` decoded from `message` under `policy`.
fn check_with(case: &Case, message: &[u8], policy: UnknownFields) -> Option<String> {
    let got = decode_order_with(Some(message), DEFAULT_MAX_MESSAGE_BYTES, policy);
    match (&case.expect, got) {
        (Expect::Ok(want), Ok(order)) => {
            let value = serde_json::to_value(&order).unwrap();
            if value.pointer(case.pointer) != Some(want) {
                return Some(format!(
                    "accepted, but the field reads back as {:?}, not {want}",
                    value.pointer(case.pointer)
                ));
            }
            if policy == UnknownFields::Keep
                && (value.pointer("/zz_top/n/1") != Some(&json!(2.5))
                    || value.pointer("/delivery/zz_floor") != Some(&json!(3)))
            {
                return Some(format!(
                    "accepted, but the unknown fields are lost: {value}"
                ));
            }
            // What is accepted serializes to an order that is accepted again, unchanged.
            let again = decode_order_with(
                Some(&order.to_json_bytes().unwrap()),
                DEFAULT_MAX_MESSAGE_BYTES,
                policy,
            );
            (again.as_ref() != Ok(&order))
                .then(|| format!("accepted, but does not round-trip: {again:?}"))
        }
        (Expect::Invalid(want), Err(DecodeError::Invalid(v))) => {
            let got: Vec<&str> = v.errors.iter().map(|e| e.path.as_str()).collect();
            (got != *want || v.total != want.len() || v.errors.iter().any(|e| e.rule.is_empty()))
                .then(|| format!("invalid at {got:?} (total {}), want {want:?}: {v}", v.total))
        }
        (Expect::NotOrder(path), Err(DecodeError::NotOrder(detail))) => (!detail
            .starts_with(&format!("{path}: ")))
        .then(|| format!("not_order, but the detail does not name {path}: {detail}")),
        (want, got) => Some(format!("want {want:?}, got {got:?}")),
    }
}

#[test]
fn one_field_at_a_time() {
    let cases = all_cases();
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| check(c).map(|why| format!("{}: {why}", c.label)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert!(cases.len() >= 1000);
    assert_eq!(cases.len(), EXPECTED_CASES, "cases added or lost");
}

/// An unknown field never relaxes a known one: every case above, with fields the model does
/// not know at every depth and the policy `keep`, has exactly the same outcome (and an accepted
/// one keeps the unknown fields).
#[test]
fn one_field_at_a_time_with_unknown_fields_kept() {
    let cases = all_cases();
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| {
            let message = with_unknown_fields(&c.message);
            assert_ne!(message, c.message);
            check_with(c, &message, UnknownFields::Keep).map(|why| format!("{}: {why}", c.label))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert_eq!(cases.len(), EXPECTED_CASES);
}

/// Every leaf of the reference order (each field of the order, delivery, payment and
/// `items[0]`) is changed by some case, and each outcome kind occurs.
#[test]
fn every_field_is_covered() {
    fn leaves(v: &Value, at: String, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => m
                .iter()
                .for_each(|(k, v)| leaves(v, format!("{at}/{k}"), out)),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .for_each(|(i, v)| leaves(v, format!("{at}/{i}"), out)),
            _ => {
                out.insert(at);
            }
        }
    }
    let mut want = BTreeSet::new();
    leaves(&fixture(), String::new(), &mut want);
    assert_eq!(want.len(), 39);
    let cases = all_cases();
    let changed: BTreeSet<String> = cases.iter().map(|c| c.pointer.to_owned()).collect();
    let missing: Vec<&String> = want.difference(&changed).collect();
    assert!(missing.is_empty(), "fields no case changes: {missing:?}");
    for f in &TEXT_FIELDS {
        let mine: Vec<&Case> = cases.iter().filter(|c| c.pointer == f.pointer).collect();
        assert!(
            mine.iter().any(|c| matches!(c.expect, Expect::Ok(_)))
                && mine.iter().any(|c| matches!(c.expect, Expect::Invalid(_))),
            "{}: both accepted and refused values",
            f.pointer
        );
    }
    for f in &INT_FIELDS {
        let mine: Vec<&Case> = cases.iter().filter(|c| c.pointer == f.pointer).collect();
        for kind in [
            |e: &Expect| matches!(e, Expect::Ok(_)),
            |e: &Expect| matches!(e, Expect::Invalid(_)),
            |e: &Expect| matches!(e, Expect::NotOrder(_)),
        ] {
            assert!(mine.iter().any(|c| kind(&c.expect)), "{}", f.pointer);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Defects found by the cases above (issue 14). Each test states the wanted behaviour and fails
// today; it is ignored so the suite stays green until `src/` is fixed, then the `ignore` goes.

fn decode_with(pointer: &str, v: Value) -> Result<orders_domain::Order, DecodeError> {
    decode_order(Some(&message_with(pointer, v)), DEFAULT_MAX_MESSAGE_BYTES)
}

/// A timestamp whose offset moves it out of years 0000..=9999 in UTC is accepted and stored,
/// but serialized as `-0001-12-31T23:59:00Z` / `+10000-01-01T00:00:59Z`, which is not RFC 3339:
/// the API and the cache serve JSON that the service itself refuses as `not_order`.
#[test]
fn accepted_dates_round_trip_at_the_ends_of_the_year_range() {
    for d in ["0000-01-01T00:00:00+00:01", "9999-12-31T23:59:59-00:01"] {
        if let Ok(order) = decode_with("/date_created", json!(d)) {
            let again = decode_order(
                Some(&order.to_json_bytes().unwrap()),
                DEFAULT_MAX_MESSAGE_BYTES,
            );
            assert_eq!(again.as_ref(), Ok(&order), "{d}");
        }
    }
}

/// chrono accepts second 60 at the end of any minute; PostgreSQL (through postgres-types'
/// microseconds since 2000-01-01) stores it as the next minute, so the order read back from the
/// database (`06:23:00Z`) differs from the one ingested and cached (`06:22:60Z`).
#[test]
fn accepted_dates_are_what_postgresql_stores() {
    for d in ["2021-11-26T06:22:60Z", "2016-12-31T23:59:60.5Z"] {
        if let Ok(order) = decode_with("/date_created", json!(d)) {
            assert!(
                order.date_created.timestamp_subsec_nanos() < 1_000_000_000,
                "{d} kept as a leap second: {}",
                order.date_created
            );
        }
    }
}

/// validator 0.20's email rule matches an address literal (`[1.2.3.4]`) at the END of the
/// domain without anchoring its start, so any text before it passes: multibyte text, markup,
/// spaces.
#[test]
fn email_domain_literal_is_the_whole_domain() {
    for e in ["a@жжж[1.2.3.4]", "a@<script>[1.2.3.4]", "a@ [::1]"] {
        assert_eq!(
            decode_with("/delivery/email", json!(e)).unwrap_err(),
            DecodeError::Invalid(orders_domain::Violations {
                errors: vec![orders_domain::FieldError {
                    path: "delivery.email".into(),
                    rule: "must be an email address".into(),
                }],
                total: 1,
            }),
            "{e}"
        );
    }
}

/// A JSON number beyond f64 (`1e400`) is valid JSON (RFC 8259 sets no range), yet it is
/// refused as `not_json` without the path, where every other wrong number is `not_order` with it.
#[test]
fn numbers_beyond_f64_name_the_field() {
    let message = message_with_raw("/payment/amount", "1e400");
    match decode_order(Some(&message), DEFAULT_MAX_MESSAGE_BYTES) {
        Err(DecodeError::NotOrder(detail)) => assert!(detail.starts_with("payment.amount: ")),
        other => panic!("want not_order naming payment.amount, got {other:?}"),
    }
}
