//! The order as it arrives on the topic and as the API returns it.
//!
//! Field names and JSON types follow the reference message (`fixtures/order.json`) exactly.
//! The derived `Deserialize` refuses unknown fields (policy `reject`, and the fast path of
//! every parse); under policy `keep` they are split off first and kept in each struct's
//! `extra` (see [`crate::unknown`]), which is written back in place when the order is
//! serialized. The JSON Schema of the message is derived from these types ([`crate::schema`]).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use validator::Validate;

use crate::unknown::Extra;
use crate::validation::{
    text_len, validate_currency, validate_email, validate_order_uid, validate_phone, validate_token,
};

/// The model's text: inline up to 24 bytes, on the heap beyond. Nearly every field of an
/// order is that short, so decoding one allocates for none of them. With `String` each field
/// was an allocation (about 40 for an order of 5 items), made by the task that decodes the
/// batch and freed by whichever thread drops it, and frees from another thread are mimalloc's
/// dear path (see ARCHITECTURE.md).
pub type Text = compact_str::CompactString;

/// One order with its delivery, payment and items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Validate, JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Order {
    #[validate(custom(function = "validate_order_uid"))]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,64}$"))]
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = r"^[A-Za-z0-9_-]{1,64}$",
            min_length = 1,
            max_length = 64,
            example = "b563feb7b2b84b6test"
        )
    )]
    pub order_uid: Text,
    #[validate(length(min = 1, max = 64), custom(function = "validate_token"))]
    #[schemars(regex(pattern = r"^[!-~]*$"))]
    pub track_number: Text,
    #[validate(custom(function = "text_len::<1, 32>"))]
    #[schemars(length(min = 1, max = 32))]
    pub entry: Text,
    #[validate(nested)]
    pub delivery: Delivery,
    #[validate(nested)]
    pub payment: Payment,
    #[validate(length(min = 1, max = 1000), nested)]
    #[serde(deserialize_with = "items_presized")]
    pub items: Vec<Item>,
    #[validate(custom(function = "text_len::<1, 16>"))]
    #[schemars(length(min = 1, max = 16))]
    pub locale: Text,
    /// May be empty.
    #[validate(custom(function = "text_len::<0, 256>"))]
    #[schemars(length(max = 256))]
    pub internal_signature: Text,
    #[validate(custom(function = "text_len::<1, 128>"))]
    #[schemars(length(min = 1, max = 128))]
    pub customer_id: Text,
    #[validate(custom(function = "text_len::<1, 64>"))]
    #[schemars(length(min = 1, max = 64))]
    pub delivery_service: Text,
    #[validate(custom(function = "text_len::<1, 16>"))]
    #[schemars(length(min = 1, max = 16))]
    pub shardkey: Text,
    #[validate(range(min = 0))]
    pub sm_id: i64,
    /// RFC 3339 on the wire; kept in UTC with microsecond precision (PostgreSQL `timestamptz`).
    #[serde(with = "rfc3339")]
    #[schemars(schema_with = "date_time_schema")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime, example = "2021-11-26T06:22:19Z"))]
    pub date_created: DateTime<Utc>,
    #[validate(custom(function = "text_len::<1, 16>"))]
    #[schemars(length(min = 1, max = 16))]
    pub oof_shard: Text,
    /// Fields the model does not know (policy `keep`), written back in place.
    #[serde(flatten, skip_deserializing)]
    #[schemars(skip)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub extra: Extra,
}

/// Where the order goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Validate, JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    #[validate(custom(function = "text_len::<1, 256>"))]
    #[schemars(length(min = 1, max = 256))]
    pub name: Text,
    #[validate(custom(function = "validate_phone"))]
    #[schemars(regex(pattern = r"^\+[0-9]{5,20}$"))]
    pub phone: Text,
    #[validate(custom(function = "text_len::<1, 32>"))]
    #[schemars(length(min = 1, max = 32))]
    pub zip: Text,
    #[validate(custom(function = "text_len::<1, 128>"))]
    #[schemars(length(min = 1, max = 128))]
    pub city: Text,
    #[validate(custom(function = "text_len::<1, 512>"))]
    #[schemars(length(min = 1, max = 512))]
    pub address: Text,
    #[validate(custom(function = "text_len::<1, 128>"))]
    #[schemars(length(min = 1, max = 128))]
    pub region: Text,
    #[validate(length(min = 3, max = 254), custom(function = "validate_email"))]
    #[schemars(email)]
    pub email: Text,
    /// Fields the model does not know (policy `keep`), written back in place.
    #[serde(flatten, skip_deserializing)]
    #[schemars(skip)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub extra: Extra,
}

/// How the order was paid. Money is in minor units (integers), never floats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Validate, JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Payment {
    #[validate(custom(function = "text_len::<1, 128>"))]
    #[schemars(length(min = 1, max = 128))]
    pub transaction: Text,
    /// May be empty.
    #[validate(custom(function = "text_len::<0, 128>"))]
    #[schemars(length(max = 128))]
    pub request_id: Text,
    #[validate(custom(function = "validate_currency"))]
    #[schemars(regex(pattern = r"^[A-Z]{3}$"))]
    pub currency: Text,
    #[validate(custom(function = "text_len::<1, 64>"))]
    #[schemars(length(min = 1, max = 64))]
    pub provider: Text,
    #[validate(range(min = 0))]
    pub amount: i64,
    /// Unix seconds.
    #[validate(range(min = 0))]
    pub payment_dt: i64,
    #[validate(custom(function = "text_len::<1, 64>"))]
    #[schemars(length(min = 1, max = 64))]
    pub bank: Text,
    #[validate(range(min = 0))]
    pub delivery_cost: i64,
    #[validate(range(min = 0))]
    pub goods_total: i64,
    #[validate(range(min = 0))]
    pub custom_fee: i64,
    /// Fields the model does not know (policy `keep`), written back in place.
    #[serde(flatten, skip_deserializing)]
    #[schemars(skip)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub extra: Extra,
}

/// One line of the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Validate, JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Item {
    #[validate(range(min = 0))]
    pub chrt_id: i64,
    #[validate(custom(function = "text_len::<1, 64>"))]
    #[schemars(length(min = 1, max = 64))]
    pub track_number: Text,
    #[validate(range(min = 0))]
    pub price: i64,
    #[validate(custom(function = "text_len::<1, 128>"))]
    #[schemars(length(min = 1, max = 128))]
    pub rid: Text,
    #[validate(custom(function = "text_len::<1, 256>"))]
    #[schemars(length(min = 1, max = 256))]
    pub name: Text,
    /// Discount in percent.
    #[validate(range(min = 0, max = 100))]
    pub sale: i32,
    #[validate(custom(function = "text_len::<1, 32>"))]
    #[schemars(length(min = 1, max = 32))]
    pub size: Text,
    #[validate(range(min = 0))]
    pub total_price: i64,
    #[validate(range(min = 0))]
    pub nm_id: i64,
    #[validate(custom(function = "text_len::<1, 256>"))]
    #[schemars(length(min = 1, max = 256))]
    pub brand: Text,
    #[validate(range(min = 0))]
    pub status: i32,
    /// Fields the model does not know (policy `keep`), written back in place.
    #[serde(flatten, skip_deserializing)]
    #[schemars(skip)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub extra: Extra,
}

/// A short line for lists of recent orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrderSummary {
    pub order_uid: String,
    #[serde(with = "rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime, example = "2021-11-26T06:22:19Z"))]
    pub date_created: DateTime<Utc>,
    pub items: i64,
    pub amount: i64,
    pub currency: String,
}

/// `date_created` in the JSON Schema: the wire form, RFC 3339.
fn date_time_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "format": "date-time"})
}

/// RFC 3339 in and out, normalised to UTC and truncated to what PostgreSQL stores, so a value
/// read back from the database serializes exactly like the one that was ingested.
pub(crate) mod rfc3339 {
    use chrono::{DateTime, Datelike, SecondsFormat, SubsecRound, Timelike, Utc};
    use serde::{Deserializer, Serializer, de};

    pub(crate) fn serialize<S: Serializer>(v: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        d.deserialize_str(Rfc3339)
    }

    /// Parses the text where the deserializer has it: serde's `Cow<str>` would copy it into
    /// a `String` first (it never borrows), an allocation per message.
    struct Rfc3339;

    impl de::Visitor<'_> for Rfc3339 {
        type Value = DateTime<Utc>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an RFC 3339 timestamp")
        }

        fn visit_str<E: de::Error>(self, raw: &str) -> Result<DateTime<Utc>, E> {
            parse(raw)
        }
    }

    fn parse<E: de::Error>(raw: &str) -> Result<DateTime<Utc>, E> {
        let t = DateTime::parse_from_rfc3339(raw)
            .map(|t| t.with_timezone(&Utc).trunc_subsecs(6))
            .map_err(|e| de::Error::custom(format_args!("not an RFC 3339 timestamp ({e})")))?;
        // What is accepted must serialize back to RFC 3339 and be stored as it is: a year
        // outside 1..=9999 in UTC has no RFC 3339 form, and PostgreSQL turns a leap second
        // into the next minute.
        if !(1..=9999).contains(&t.year()) {
            return Err(de::Error::custom(
                "timestamp outside the years 0001..=9999 (in UTC)",
            ));
        }
        if t.nanosecond() >= 1_000_000_000 {
            return Err(de::Error::custom("leap seconds are not supported"));
        }
        Ok(t)
    }
}

impl Order {
    /// Has the order (or its delivery, payment or an item) fields the model does not know?
    pub fn has_unknown_fields(&self) -> bool {
        !(self.extra.is_empty()
            && self.delivery.extra.is_empty()
            && self.payment.extra.is_empty()
            && self.items.iter().all(|i| i.extra.is_empty()))
    }

    /// The order as JSON, allocated to its exact size: cached copies live long, and the spare
    /// capacity `serde_json::to_vec` leaves (up to half) would be held with them.
    pub fn to_json_bytes(&self) -> Result<bytes::Bytes, serde_json::Error> {
        Ok(bytes::Bytes::from(
            serde_json::to_vec(self)?.into_boxed_slice(),
        ))
    }
}

/// How many items a decoded order's vector has room for before it grows. JSON gives no
/// length up front, so serde's `Vec` starts empty and reallocates (moving every item) at 4
/// and 8; the vector lives only until its batch is stored.
const ITEMS_PRESIZE: usize = 8;

/// `items` as serde decodes a `Vec`, with room for [`ITEMS_PRESIZE`] items from the start.
fn items_presized<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Item>, D::Error> {
    struct Items;
    impl<'de> serde::de::Visitor<'de> for Items {
        type Value = Vec<Item>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a sequence")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<Item>, A::Error> {
            let room = seq
                .size_hint()
                .unwrap_or(ITEMS_PRESIZE)
                .min(crate::validation::MAX_ITEMS);
            let mut items = Vec::with_capacity(room);
            while let Some(item) = seq.next_element()? {
                items.push(item);
            }
            Ok(items)
        }
    }
    d.deserialize_seq(Items)
}
