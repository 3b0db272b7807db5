//! Fields the model does not know: the policy for them, and how they are kept.
//!
//! Producers evolve their messages by adding optional fields. Under [`UnknownFields::Keep`] an
//! order with fields the model does not know (at any depth: the order, its delivery, its
//! payment, each item) is stored with them, and served with them in place: the JSON served
//! equals the JSON received, field for field. Each unknown field's value is kept as the exact
//! JSON text it arrived as ([`RawValue`]), so nothing is lost, not even a number's precision.
//!
//! An order without unknown fields pays nothing for this: [`Extra`] is then one null pointer,
//! its parse is the plain one, and its serialization writes nothing more.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// What happens to an order with fields the model does not know (`UNKNOWN_FIELDS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum UnknownFields {
    /// Rejected as `not_order`, naming the first unknown field.
    Reject,
    /// Stored with the order and served back in place. The day-one default: a producer adding
    /// an optional field neither stops ingestion nor loses the field.
    #[default]
    Keep,
}

impl UnknownFields {
    pub const ALL: [UnknownFields; 2] = [Self::Reject, Self::Keep];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reject => "reject",
            Self::Keep => "keep",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for UnknownFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Deepest nesting of an unknown field's value that is kept (the value itself is level 1).
/// JSON text is otherwise skipped without a depth limit, and PostgreSQL's JSON parser is
/// recursive: a value nested thousands deep would fail the whole batch in the database.
pub const MAX_UNKNOWN_DEPTH: usize = 64;

/// The unknown fields of one JSON object of the order, in the order they arrived: `None` (one
/// null pointer, no allocation) when there are none, which is the common case.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Extra(Option<Box<ExtraFields>>);

/// Name and exact JSON text of each unknown field; names are unique.
#[derive(Clone)]
struct ExtraFields(Vec<(String, Box<RawValue>)>);

impl PartialEq for ExtraFields {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(&other.0)
                .all(|((ka, va), (kb, vb))| ka == kb && va.get() == vb.get())
    }
}

impl Eq for ExtraFields {}

impl fmt::Debug for Extra {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Extra {
    /// No unknown fields.
    pub const NONE: Extra = Extra(None);

    /// From `(name, JSON text)` pairs in order. Fails on a value that is not one JSON value or
    /// on a repeated name.
    pub fn from_fields<K: Into<String>, V: Into<String>>(
        fields: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, serde_json::Error> {
        let mut out = Vec::new();
        for (k, v) in fields {
            let k = k.into();
            if out.iter().any(|(n, _): &(String, Box<RawValue>)| *n == k) {
                return Err(de::Error::custom(format_args!("duplicate field `{k}`")));
            }
            out.push((k, RawValue::from_string(v.into())?));
        }
        Ok(Self::from_vec(out))
    }

    pub(crate) fn from_raw(fields: Vec<(String, &RawValue)>) -> Self {
        Self::from_vec(fields.into_iter().map(|(k, v)| (k, v.to_owned())).collect())
    }

    fn from_vec(fields: Vec<(String, Box<RawValue>)>) -> Self {
        if fields.is_empty() {
            Self(None)
        } else {
            Self(Some(Box::new(ExtraFields(fields))))
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |f| f.0.len())
    }

    /// Each unknown field's name and exact JSON text, in the order they arrived.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .flat_map(|f| f.0.iter().map(|(k, v)| (k.as_str(), v.get())))
    }

    /// The fields as one JSON object (`{"name":value,...}`, each value its exact text), as
    /// storage keeps it; `None` when there are none.
    pub fn to_json_object(&self) -> Option<String> {
        let fields = self.0.as_ref()?;
        let cap = fields.0.iter().map(|(k, v)| k.len() + v.get().len() + 4);
        let mut out = String::with_capacity(cap.sum::<usize>() + 2);
        out.push('{');
        for (i, (k, v)) in fields.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            // A `String` always serializes.
            out.push_str(&serde_json::to_string(k).unwrap_or_default());
            out.push(':');
            out.push_str(v.get());
        }
        out.push('}');
        Some(out)
    }

    /// The inverse of [`Self::to_json_object`]: each value's text is kept exactly.
    pub fn from_json_object(text: &str) -> Result<Self, serde_json::Error> {
        let fields: RawFields<'_> = serde_json::from_str(text)?;
        Ok(Self::from_vec(
            fields
                .0
                .into_iter()
                .map(|(k, v)| (k, v.to_owned()))
                .collect(),
        ))
    }
}

/// Written in place: each unknown field becomes one more entry of the object that holds it
/// (the field is `#[serde(flatten)]` for serialization only).
impl Serialize for Extra {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            None => s.serialize_none(),
            Some(fields) => {
                let mut map = s.serialize_map(Some(fields.0.len()))?;
                for (k, v) in &fields.0 {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

/// The members of one JSON object, each value as its raw text, in order. Repeated names are
/// refused, as serde refuses a repeated known field.
pub(crate) struct RawFields<'a>(pub(crate) Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for RawFields<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = RawFields<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(String, &'a RawValue)> = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    let v: &'a RawValue = map.next_value()?;
                    out.push((k, v));
                }
                Ok(RawFields(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// How deeply `raw` (one JSON value) nests arrays and objects; a scalar is 0.
pub(crate) fn json_depth(raw: &str) -> usize {
    let (mut depth, mut max, mut in_str, mut escaped) = (0usize, 0usize, false, false);
    for b in raw.bytes() {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Does the JSON value `raw` hold NUL in a string or a member name? A cheap scan first: NUL
/// can only be written `\u0000` in JSON text.
pub(crate) fn json_has_nul(raw: &str) -> bool {
    fn walk(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(a) => a.iter().any(walk),
            serde_json::Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || walk(v)),
            _ => false,
        }
    }
    if !raw.contains("\\u0000") {
        return false;
    }
    // Depth is bounded by MAX_UNKNOWN_DEPTH before this runs, within serde_json's limit.
    serde_json::from_str::<serde_json::Value>(raw).map_or(true, |v| walk(&v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_costs_one_pointer() {
        assert_eq!(std::mem::size_of::<Extra>(), std::mem::size_of::<usize>());
    }

    #[test]
    fn object_text_round_trips_exactly() {
        let e = Extra::from_fields([
            (
                "big",
                "123456789012345678901234567890.000000000000000000001",
            ),
            ("nested", "{\"a\": [1, 2.50, {\"b\": null}]}"),
            ("é\"", "\"\\u00e9\""),
        ])
        .unwrap();
        let text = e.to_json_object().unwrap();
        assert_eq!(Extra::from_json_object(&text).unwrap(), e);
        assert!(text.contains("123456789012345678901234567890.000000000000000000001"));
    }

    #[test]
    fn depth_and_nul() {
        assert_eq!(json_depth("1"), 0);
        assert_eq!(json_depth("\"[[[\""), 0);
        assert_eq!(json_depth("[[{\"a\":[]}]]"), 4);
        assert_eq!(json_depth("\"\\\"[\""), 0);
        assert!(!json_has_nul("\"\\\\u0000\""));
        assert!(json_has_nul("\"a\\u0000\""));
        assert!(json_has_nul("{\"\\u0000\":1}"));
    }
}
