//! An order's JSON written straight from its stored fields, without building an [`Order`].
//!
//! Warm-up turns every stored order into the JSON the API serves. Decoding each row into an
//! `Order` (a `String` per field) only to serialize it again cost about as much as the read
//! itself; writing from fields borrowed from the rows costs a fraction of that. The bytes are
//! exactly those of `serde_json::to_vec(&order)` (field order, `flatten`ed unknown fields,
//! string escaping, number and date forms): the property test below holds the two together.
//!
//! [`Order`]: crate::model::Order

use chrono::{DateTime, SecondsFormat, Utc};

use crate::model::{Delivery, Item, Order, Payment, Text};
use crate::unknown::{Extra, RawFields};

/// An order's own fields and its delivery's and payment's, as storage returns them.
#[derive(Debug, Clone, Copy)]
pub struct OrderFields<'a> {
    pub order_uid: &'a str,
    pub track_number: &'a str,
    pub entry: &'a str,
    pub delivery: DeliveryFields<'a>,
    pub payment: PaymentFields<'a>,
    pub locale: &'a str,
    pub internal_signature: &'a str,
    pub customer_id: &'a str,
    pub delivery_service: &'a str,
    pub shardkey: &'a str,
    pub sm_id: i64,
    pub date_created: DateTime<Utc>,
    pub oof_shard: &'a str,
    /// The unknown fields as storage keeps them ([`crate::Extra::to_json_object`]); `None`
    /// when there are none.
    pub extra: Option<&'a str>,
}

#[derive(Debug, Clone, Copy)]
pub struct DeliveryFields<'a> {
    pub name: &'a str,
    pub phone: &'a str,
    pub zip: &'a str,
    pub city: &'a str,
    pub address: &'a str,
    pub region: &'a str,
    pub email: &'a str,
    pub extra: Option<&'a str>,
}

#[derive(Debug, Clone, Copy)]
pub struct PaymentFields<'a> {
    pub transaction: &'a str,
    pub request_id: &'a str,
    pub currency: &'a str,
    pub provider: &'a str,
    pub amount: i64,
    pub payment_dt: i64,
    pub bank: &'a str,
    pub delivery_cost: i64,
    pub goods_total: i64,
    pub custom_fee: i64,
    pub extra: Option<&'a str>,
}

#[derive(Debug, Clone, Copy)]
pub struct ItemFields<'a> {
    pub chrt_id: i64,
    pub track_number: &'a str,
    pub price: i64,
    pub rid: &'a str,
    pub name: &'a str,
    pub sale: i32,
    pub size: &'a str,
    pub total_price: i64,
    pub nm_id: i64,
    pub brand: &'a str,
    pub status: i32,
    pub extra: Option<&'a str>,
}

/// Stored unknown fields (`None`: none) as the model keeps them.
fn extra(stored: Option<&str>) -> Result<Extra, serde_json::Error> {
    stored.map_or(Ok(Extra::NONE), Extra::from_json_object)
}

impl OrderFields<'_> {
    /// The owned order these fields describe, with `items` (stored as rows of their own).
    /// Fails only when stored unknown fields are not a JSON object.
    pub fn to_order(&self, items: Vec<Item>) -> Result<Order, serde_json::Error> {
        let (d, p) = (&self.delivery, &self.payment);
        Ok(Order {
            order_uid: Text::from(self.order_uid),
            track_number: Text::from(self.track_number),
            entry: Text::from(self.entry),
            delivery: Delivery {
                name: Text::from(d.name),
                phone: Text::from(d.phone),
                zip: Text::from(d.zip),
                city: Text::from(d.city),
                address: Text::from(d.address),
                region: Text::from(d.region),
                email: Text::from(d.email),
                extra: extra(d.extra)?,
            },
            payment: Payment {
                transaction: Text::from(p.transaction),
                request_id: Text::from(p.request_id),
                currency: Text::from(p.currency),
                provider: Text::from(p.provider),
                amount: p.amount,
                payment_dt: p.payment_dt,
                bank: Text::from(p.bank),
                delivery_cost: p.delivery_cost,
                goods_total: p.goods_total,
                custom_fee: p.custom_fee,
                extra: extra(p.extra)?,
            },
            items,
            locale: Text::from(self.locale),
            internal_signature: Text::from(self.internal_signature),
            customer_id: Text::from(self.customer_id),
            delivery_service: Text::from(self.delivery_service),
            shardkey: Text::from(self.shardkey),
            sm_id: self.sm_id,
            date_created: self.date_created,
            oof_shard: Text::from(self.oof_shard),
            extra: extra(self.extra)?,
        })
    }
}

impl ItemFields<'_> {
    /// The owned item these fields describe. Fails only when stored unknown fields are not a
    /// JSON object.
    pub fn to_item(&self) -> Result<Item, serde_json::Error> {
        Ok(Item {
            chrt_id: self.chrt_id,
            track_number: Text::from(self.track_number),
            price: self.price,
            rid: Text::from(self.rid),
            name: Text::from(self.name),
            sale: self.sale,
            size: Text::from(self.size),
            total_price: self.total_price,
            nm_id: self.nm_id,
            brand: Text::from(self.brand),
            status: self.status,
            extra: extra(self.extra)?,
        })
    }
}

/// Writes the order's JSON into `out` (cleared first), its items in the order given. Fails
/// only when stored unknown fields are not a JSON object.
pub fn write_order_json<'a>(
    out: &mut Vec<u8>,
    o: &OrderFields<'_>,
    items: impl IntoIterator<Item = ItemFields<'a>>,
) -> Result<(), serde_json::Error> {
    out.clear();
    let mut w = Object::open(out);
    w.str("order_uid", o.order_uid);
    w.str("track_number", o.track_number);
    w.str("entry", o.entry);

    let d = &o.delivery;
    w.key("delivery");
    let mut dw = Object::open(w.out);
    dw.str("name", d.name);
    dw.str("phone", d.phone);
    dw.str("zip", d.zip);
    dw.str("city", d.city);
    dw.str("address", d.address);
    dw.str("region", d.region);
    dw.str("email", d.email);
    dw.extra(d.extra)?;
    dw.close();

    let p = &o.payment;
    w.key("payment");
    let mut pw = Object::open(w.out);
    pw.str("transaction", p.transaction);
    pw.str("request_id", p.request_id);
    pw.str("currency", p.currency);
    pw.str("provider", p.provider);
    pw.int("amount", p.amount);
    pw.int("payment_dt", p.payment_dt);
    pw.str("bank", p.bank);
    pw.int("delivery_cost", p.delivery_cost);
    pw.int("goods_total", p.goods_total);
    pw.int("custom_fee", p.custom_fee);
    pw.extra(p.extra)?;
    pw.close();

    w.key("items");
    w.out.push(b'[');
    for (n, i) in items.into_iter().enumerate() {
        if n > 0 {
            w.out.push(b',');
        }
        let mut iw = Object::open(w.out);
        iw.int("chrt_id", i.chrt_id);
        iw.str("track_number", i.track_number);
        iw.int("price", i.price);
        iw.str("rid", i.rid);
        iw.str("name", i.name);
        iw.int("sale", i64::from(i.sale));
        iw.str("size", i.size);
        iw.int("total_price", i.total_price);
        iw.int("nm_id", i.nm_id);
        iw.str("brand", i.brand);
        iw.int("status", i64::from(i.status));
        iw.extra(i.extra)?;
        iw.close();
    }
    w.out.push(b']');

    w.str("locale", o.locale);
    w.str("internal_signature", o.internal_signature);
    w.str("customer_id", o.customer_id);
    w.str("delivery_service", o.delivery_service);
    w.str("shardkey", o.shardkey);
    w.int("sm_id", o.sm_id);
    // As `model::rfc3339` writes it.
    w.str(
        "date_created",
        &o.date_created.to_rfc3339_opts(SecondsFormat::AutoSi, true),
    );
    w.str("oof_shard", o.oof_shard);
    w.extra(o.extra)?;
    w.close();
    Ok(())
}

/// Writes `o`'s JSON into `out` (cleared first): the bytes of `serde_json::to_vec(o)`,
/// written through [`write_order_json`] (its fields borrowed), which escapes strings a chunk
/// at a time and costs about half of serde's generic path. The cache stores this for every
/// ingested order.
pub fn write_order(out: &mut Vec<u8>, o: &Order) -> Result<(), serde_json::Error> {
    with_fields(o, |fields, items| write_order_json(out, fields, items))
}

/// Calls `f` with `o`'s fields borrowed as storage would return them (its unknown fields as
/// JSON objects), and its items'.
fn with_fields<R>(
    o: &Order,
    f: impl FnOnce(&OrderFields<'_>, &mut dyn Iterator<Item = ItemFields<'_>>) -> R,
) -> R {
    // The unknown fields as storage keeps them (none in almost every order: no allocation).
    let extra_of = |e: &crate::Extra| e.to_json_object();
    let (order_extra, delivery_extra, payment_extra) = (
        extra_of(&o.extra),
        extra_of(&o.delivery.extra),
        extra_of(&o.payment.extra),
    );
    let items_extra: Vec<Option<String>> = if o.items.iter().any(|i| !i.extra.is_empty()) {
        o.items.iter().map(|i| extra_of(&i.extra)).collect()
    } else {
        Vec::new()
    };
    let d = &o.delivery;
    let p = &o.payment;
    let fields = OrderFields {
        order_uid: &o.order_uid,
        track_number: &o.track_number,
        entry: &o.entry,
        delivery: DeliveryFields {
            name: &d.name,
            phone: &d.phone,
            zip: &d.zip,
            city: &d.city,
            address: &d.address,
            region: &d.region,
            email: &d.email,
            extra: delivery_extra.as_deref(),
        },
        payment: PaymentFields {
            transaction: &p.transaction,
            request_id: &p.request_id,
            currency: &p.currency,
            provider: &p.provider,
            amount: p.amount,
            payment_dt: p.payment_dt,
            bank: &p.bank,
            delivery_cost: p.delivery_cost,
            goods_total: p.goods_total,
            custom_fee: p.custom_fee,
            extra: payment_extra.as_deref(),
        },
        locale: &o.locale,
        internal_signature: &o.internal_signature,
        customer_id: &o.customer_id,
        delivery_service: &o.delivery_service,
        shardkey: &o.shardkey,
        sm_id: o.sm_id,
        date_created: o.date_created,
        oof_shard: &o.oof_shard,
        extra: order_extra.as_deref(),
    };
    let mut items = o.items.iter().enumerate().map(|(n, i)| ItemFields {
        chrt_id: i.chrt_id,
        track_number: &i.track_number,
        price: i.price,
        rid: &i.rid,
        name: &i.name,
        sale: i.sale,
        size: &i.size,
        total_price: i.total_price,
        nm_id: i.nm_id,
        brand: &i.brand,
        status: i.status,
        extra: items_extra.get(n).and_then(Option::as_deref),
    });
    f(&fields, &mut items)
}

/// One JSON object being written: a comma before every member but the first.
struct Object<'o> {
    out: &'o mut Vec<u8>,
    first: bool,
}

impl<'o> Object<'o> {
    fn open(out: &'o mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, first: true }
    }

    /// `"name":` (names here are plain ASCII and need no escaping).
    fn key(&mut self, name: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    fn str(&mut self, name: &str, value: &str) {
        self.key(name);
        write_json_str(self.out, value);
    }

    fn int(&mut self, name: &str, value: i64) {
        self.key(name);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    /// The unknown fields in place, as `#[serde(flatten)]` writes them: each one more member,
    /// its name escaped, its value the exact text kept.
    fn extra(&mut self, stored: Option<&str>) -> Result<(), serde_json::Error> {
        let Some(text) = stored else { return Ok(()) };
        let fields: RawFields<'_> = serde_json::from_str(text)?;
        for (name, value) in fields.0 {
            if !self.first {
                self.out.push(b',');
            }
            self.first = false;
            write_json_str(self.out, &name);
            self.out.push(b':');
            self.out.extend_from_slice(value.get().as_bytes());
        }
        Ok(())
    }

    fn close(self) {
        self.out.push(b'}');
    }
}

/// Does `b` need escaping in a JSON string, as serde_json escapes (`"`, `\` and the control
/// characters below 0x20; not DEL, not non-ASCII)?
#[inline]
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// `s` as a JSON string, escaped exactly as serde_json does. Most strings need no escaping:
/// they are checked 16 bytes at a time (a loop without early exit, which the compiler turns
/// into vector compares) and copied whole.
fn write_json_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut clean = 0;
    for chunk in bytes.chunks(16) {
        if chunk.iter().fold(false, |any, &b| any | needs_escape(b)) {
            break;
        }
        clean += chunk.len();
    }
    out.extend_from_slice(&bytes[..clean]);
    let mut start = clean;
    for (i, &b) in bytes.iter().enumerate().skip(clean) {
        if !needs_escape(b) {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        start = i + 1;
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x09 => out.extend_from_slice(b"\\t"),
            0x0a => out.extend_from_slice(b"\\n"),
            0x0c => out.extend_from_slice(b"\\f"),
            0x0d => out.extend_from_slice(b"\\r"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;
    use crate::model::{Delivery, Item, Payment};
    use crate::sample::{mixed_order, order_with_unknown_fields, reference_order};
    use crate::unknown::Extra;

    /// What the warm-up writes for `o`: from its fields, as the repository hands them over
    /// (into a used buffer, as the repository reuses one per page).
    fn written(o: &Order) -> Vec<u8> {
        let mut out = b"left over from the previous order".to_vec();
        write_order(&mut out, o).unwrap();
        out
    }

    fn same_as_serde(o: &Order) {
        let expected = serde_json::to_vec(o).unwrap();
        let got = written(o);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&expected)
        );
    }

    #[test]
    fn samples_are_written_as_serde_writes_them() {
        same_as_serde(&reference_order());
        for n in 0..6 {
            same_as_serde(&mixed_order("m-", n));
            same_as_serde(&order_with_unknown_fields("u-", n, (n % 3 + 1) as usize));
        }
    }

    #[test]
    fn every_byte_that_needs_escaping_is_escaped_as_serde_escapes_it() {
        let all: String = (0u8..0x80).map(char::from).collect();
        for s in [
            all.as_str(),
            "",
            "\"",
            "\\",
            "é😀\u{7f}\u{2028}",
            "sixteen bytes ok\"then a quote",
        ] {
            let mut out = Vec::new();
            write_json_str(&mut out, s);
            assert_eq!(out, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn stored_unknown_fields_that_are_not_an_object_are_an_error() {
        let mut out = Vec::new();
        let mut w = Object::open(&mut out);
        assert!(w.extra(Some("[1]")).is_err());
        assert!(w.extra(Some("{\"a\":")).is_err());
    }

    /// Any text, weighted towards what needs escaping.
    fn text() -> impl Strategy<Value = Text> {
        prop_oneof![
            ".*",
            "[a-z0-9 ]{0,40}",
            "[\"\\\\\u{0}-\u{1f}\u{7f}éß😀a]{0,24}",
            Just(String::new()),
        ]
        .prop_map(Text::from)
    }

    /// A JSON value's text as a producer may have written it (spacing, exponents, escapes).
    fn raw_value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("1E-7".to_owned()),
            Just("123456789012345678901234567890.000000000000000000001".to_owned()),
            Just("[1, 2.50, {\"b\" : null}]".to_owned()),
            Just("\"\\u00e9 \\\"q\\\" \\\\\"".to_owned()),
            any::<i64>().prop_map(|n| n.to_string()),
            text().prop_map(|s| serde_json::to_string(&s).unwrap()),
        ]
    }

    fn extra() -> impl Strategy<Value = Extra> {
        prop_oneof![
            2 => Just(Extra::NONE),
            1 => proptest::collection::btree_map(text(), raw_value(), 1..4)
                .prop_map(|m| Extra::from_fields(m).unwrap()),
        ]
    }

    fn item() -> impl Strategy<Value = Item> {
        (
            (
                any::<i64>(),
                text(),
                any::<i64>(),
                text(),
                text(),
                any::<i32>(),
            ),
            (
                text(),
                any::<i64>(),
                any::<i64>(),
                text(),
                any::<i32>(),
                extra(),
            ),
        )
            .prop_map(
                |(
                    (chrt_id, track_number, price, rid, name, sale),
                    (size, total_price, nm_id, brand, status, extra),
                )| Item {
                    chrt_id,
                    track_number,
                    price,
                    rid,
                    name,
                    sale,
                    size,
                    total_price,
                    nm_id,
                    brand,
                    status,
                    extra,
                },
            )
    }

    fn delivery() -> impl Strategy<Value = Delivery> {
        (
            (text(), text(), text(), text()),
            (text(), text(), text(), extra()),
        )
            .prop_map(
                |((name, phone, zip, city), (address, region, email, extra))| Delivery {
                    name,
                    phone,
                    zip,
                    city,
                    address,
                    region,
                    email,
                    extra,
                },
            )
    }

    fn payment() -> impl Strategy<Value = Payment> {
        (
            (text(), text(), text(), text(), any::<i64>(), any::<i64>()),
            (text(), any::<i64>(), any::<i64>(), any::<i64>(), extra()),
        )
            .prop_map(
                |(
                    (transaction, request_id, currency, provider, amount, payment_dt),
                    (bank, delivery_cost, goods_total, custom_fee, extra),
                )| Payment {
                    transaction,
                    request_id,
                    currency,
                    provider,
                    amount,
                    payment_dt,
                    bank,
                    delivery_cost,
                    goods_total,
                    custom_fee,
                    extra,
                },
            )
    }

    /// Microseconds over the years 0001..=9999 (what is accepted and stored), with whole
    /// seconds and whole milliseconds often, for the shorter forms.
    fn date() -> impl Strategy<Value = DateTime<Utc>> {
        let first = Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap().timestamp();
        let last = Utc
            .with_ymd_and_hms(9999, 12, 31, 23, 59, 59)
            .unwrap()
            .timestamp();
        (
            first..=last,
            prop_oneof![Just(0u32), 0u32..1000, 0u32..1_000_000],
        )
            .prop_map(|(secs, frac)| {
                let nanos = if frac < 1000 {
                    frac * 1_000_000
                } else {
                    frac * 1000
                };
                DateTime::from_timestamp(secs, nanos.min(999_999_000)).unwrap()
            })
    }

    fn order() -> impl Strategy<Value = Order> {
        (
            (text(), text(), text(), delivery(), payment()),
            proptest::collection::vec(item(), 0..4),
            (text(), text(), text(), text(), text()),
            (any::<i64>(), date(), text(), extra()),
        )
            .prop_map(
                |(
                    (order_uid, track_number, entry, delivery, payment),
                    items,
                    (locale, internal_signature, customer_id, delivery_service, shardkey),
                    (sm_id, date_created, oof_shard, extra),
                )| Order {
                    order_uid,
                    track_number,
                    entry,
                    delivery,
                    payment,
                    items,
                    locale,
                    internal_signature,
                    customer_id,
                    delivery_service,
                    shardkey,
                    sm_id,
                    date_created,
                    oof_shard,
                    extra,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn written_from_fields_is_byte_identical_to_serde(o in order()) {
            let expected = serde_json::to_vec(&o).unwrap();
            prop_assert_eq!(written(&o), expected);
        }

        /// An order cached as its message is served, at its first read, exactly the JSON it
        /// would have been cached as at ingest, whatever the layout of the message.
        #[test]
        fn a_cached_message_makes_the_json_of_its_order(o in order(), pretty in any::<bool>()) {
            use crate::order_json::{OrderJson, ReceivedMessage};
            let message = if pretty {
                serde_json::to_vec_pretty(&o)
            } else {
                serde_json::to_vec(&o)
            }
            .unwrap();
            // Only messages that decode are ever stored, so cached (a field name with a NUL
            // does not: PostgreSQL's JSON cannot hold it).
            let text = std::str::from_utf8(&message).unwrap();
            let decoded = crate::validation::parse_order_keeping(text);
            prop_assume!(decoded.is_ok());
            let made = ReceivedMessage::new(message.into(), crate::UnknownFields::Keep)
                .to_json()
                .unwrap();
            prop_assert_eq!(&made, &OrderJson::from_order(&decoded.unwrap()).unwrap());
            prop_assert_eq!(made, OrderJson::from_order(&o).unwrap());
        }

        /// Reading an order back from storage (`to_order`, `to_item`) gives the order stored.
        #[test]
        fn fields_make_the_order_they_were_taken_from(o in order()) {
            let back = with_fields(&o, |fields, items| {
                let items = items.map(|i| i.to_item().unwrap()).collect();
                fields.to_order(items).unwrap()
            });
            prop_assert_eq!(back, o);
        }
    }
}
