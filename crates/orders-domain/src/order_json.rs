//! [`OrderJson`]: an order serialized once, with the entity tag of those bytes; and
//! [`CachedOrder`]: what the cache holds for an order, that JSON or the message it came in.

use bytes::{BufMut, Bytes, BytesMut};

use crate::model::Order;
use crate::unknown::UnknownFields;
use crate::validation::{DecodeError, parse_order, parse_order_keeping};

/// Bytes of an entity tag: a quoted string of 32 lower-case hex digits (the XXH3 128-bit hash
/// of the bytes it tags), ready to be sent as an HTTP `ETag` header.
pub const ENTITY_TAG_LEN: usize = 34;

/// The strong entity tag of `bytes`: `"` + 32 hex digits + `"`. The same bytes always get the
/// same tag, on every replica and across versions (it is a digest of the bytes only), so a
/// client's cached copy stays valid everywhere.
///
/// XXH3, not a cryptographic digest: a tag only has to change when one order's JSON does, and
/// an order never changes (its JSON only with the service's format), so nobody gains from
/// forging a collision; SHA-256 cost a twentieth of the ingest path's CPU and a tenth of the
/// warm-up's. XXH3's output is fixed by its specification, so tags stay stable.
pub fn entity_tag(bytes: &[u8]) -> [u8; ENTITY_TAG_LEN] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = xxhash_rust::xxh3::xxh3_128(bytes).to_be_bytes();
    let mut tag = [b'"'; ENTITY_TAG_LEN];
    for (i, b) in digest.iter().enumerate() {
        tag[1 + 2 * i] = HEX[usize::from(b >> 4)];
        tag[2 + 2 * i] = HEX[usize::from(b & 0xf)];
    }
    tag
}

/// An order's JSON as the API serves it, with its entity tag computed once, when it is made
/// (before it enters the cache), never per request.
///
/// One buffer holds the tag and then the JSON, so a cache entry is one reference-counted
/// allocation, exactly sized, and a hit clones one reference count (splitting it into its two
/// parts touches only that same count).
#[derive(Clone, PartialEq, Eq)]
pub struct OrderJson {
    /// [`ENTITY_TAG_LEN`] bytes of tag, then the JSON.
    buf: Bytes,
}

impl std::fmt::Debug for OrderJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderJson")
            .field("etag", &String::from_utf8_lossy(self.etag()))
            .field("json_bytes", &self.json().len())
            .finish()
    }
}

impl OrderJson {
    /// Serializes `order` into this thread's scratch buffer, then tags a copy of exactly the
    /// size held (cached copies live long, and spare capacity would be held with them): one
    /// allocation per order, where serializing into a new `Vec` grew it about eight times.
    pub fn from_order(order: &Order) -> Result<Self, serde_json::Error> {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        /// Scratch capacity kept between orders; a larger order's buffer is freed after it.
        const KEEP: usize = 64 * 1024;
        SCRATCH.with(|scratch| {
            // Reentrancy (an order serialized while serializing one) cannot happen, but a
            // fresh buffer is the safe answer if it ever did.
            let mut fresh = Vec::new();
            let mut guard = scratch.try_borrow_mut();
            let buf = match guard.as_deref_mut() {
                Ok(buf) => buf,
                Err(_) => &mut fresh,
            };
            buf.clear();
            let written =
                crate::stored_json::write_order(buf, order).map(|()| Self::from_json(buf));
            if buf.capacity() > KEEP {
                *buf = Vec::new();
            }
            written
        })
    }

    /// Tags JSON that is already serialized.
    pub fn from_json(json: &[u8]) -> Self {
        let mut buf = BytesMut::with_capacity(ENTITY_TAG_LEN + json.len());
        buf.put_slice(&entity_tag(json));
        buf.put_slice(json);
        Self { buf: buf.freeze() }
    }

    /// The JSON.
    pub fn json(&self) -> &[u8] {
        &self.buf[ENTITY_TAG_LEN..]
    }

    /// The strong entity tag, quotes included (`"0123…"`).
    pub fn etag(&self) -> &[u8] {
        &self.buf[..ENTITY_TAG_LEN]
    }

    /// Bytes held in memory: tag and JSON.
    pub fn held_bytes(&self) -> usize {
        self.buf.len()
    }

    /// `(etag, json)` as two views of the same buffer (no copy).
    pub fn into_parts(self) -> (Bytes, Bytes) {
        let mut json = self.buf;
        let etag = json.split_to(ENTITY_TAG_LEN);
        (etag, json)
    }
}

/// What the cache holds for one order: the JSON it is served as, or the message it was
/// ingested from, which becomes that JSON at its first read.
///
/// The ingest path caches each order it stores as its message ([`CachedOrder::Message`]):
/// the message's buffer is already in memory, and most orders are never read while cached,
/// whereas serializing every order's JSON at ingest (into memory an eviction had left cold)
/// was a fifth of the path's CPU. The first read makes the JSON
/// ([`ReceivedMessage::to_json`], the same bytes as serializing the stored order) and puts it
/// in the message's place (`OrderCache::resolve`); every later read is a plain hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CachedOrder {
    /// The served JSON and its entity tag.
    Json(OrderJson),
    /// The message as received; its JSON is made at the first read.
    Message(ReceivedMessage),
}

impl CachedOrder {
    /// Bytes held in memory: the JSON and its tag, or the message.
    pub fn held_bytes(&self) -> usize {
        match self {
            Self::Json(json) => json.held_bytes(),
            Self::Message(message) => message.held_bytes(),
        }
    }

    /// The JSON to serve: as held, or made from the message (which does not change `self`).
    pub fn to_json(&self) -> Result<OrderJson, MessageJsonError> {
        match self {
            Self::Json(json) => Ok(json.clone()),
            Self::Message(message) => message.to_json(),
        }
    }
}

impl From<OrderJson> for CachedOrder {
    fn from(json: OrderJson) -> Self {
        Self::Json(json)
    }
}

/// A stored order's message, exactly as it was received, with the policy it was decoded
/// under: decoding it again gives the stored order.
#[derive(Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    payload: Bytes,
    unknown_fields: UnknownFields,
}

impl std::fmt::Debug for ReceivedMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceivedMessage")
            .field("payload_bytes", &self.payload.len())
            .field("unknown_fields", &self.unknown_fields)
            .finish()
    }
}

/// Why a cached message could not be made into its JSON (it decoded when it was stored, so
/// this is a bug; the query use case then reads the order from the repository).
#[derive(Debug, thiserror::Error)]
pub enum MessageJsonError {
    #[error("the cached message does not decode again: {0}")]
    Decode(#[from] DecodeError),
    #[error("cannot serialize the cached message's order: {0}")]
    Serialize(#[from] serde_json::Error),
}

impl ReceivedMessage {
    /// `payload` must be a message that decoded and validated under `unknown_fields` into
    /// the order stored under its uid (the ingest use case makes these). It is held as it is,
    /// without a copy: a source hands each record its own buffer, so holding it keeps nothing
    /// else alive.
    pub fn new(payload: Bytes, unknown_fields: UnknownFields) -> Self {
        Self {
            payload,
            unknown_fields,
        }
    }

    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Bytes held in memory: the message.
    pub fn held_bytes(&self) -> usize {
        self.payload.len()
    }

    /// The order's JSON, byte for byte what [`OrderJson::from_order`] makes of the stored
    /// order. Parsed without validating again: it was valid when it was stored.
    pub fn to_json(&self) -> Result<OrderJson, MessageJsonError> {
        let text =
            std::str::from_utf8(&self.payload).map_err(|e| DecodeError::NotUtf8(e.to_string()))?;
        let order = match self.unknown_fields {
            UnknownFields::Reject => parse_order(text)?,
            UnknownFields::Keep => parse_order_keeping(text)?,
        };
        Ok(OrderJson::from_order(&order)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_is_a_quoted_digest_of_the_json_and_the_parts_split_cleanly() {
        let a = OrderJson::from_json(br#"{"a":1}"#);
        let b = OrderJson::from_json(br#"{"a":2}"#);
        assert_eq!(a.json(), br#"{"a":1}"#);
        assert_eq!(a.etag(), entity_tag(br#"{"a":1}"#));
        assert_ne!(a.etag(), b.etag());
        let tag = std::str::from_utf8(a.etag()).expect("ascii");
        assert!(tag.starts_with('"') && tag.ends_with('"') && tag.len() == ENTITY_TAG_LEN);
        assert!(tag[1..33].bytes().all(|c| c.is_ascii_hexdigit()));
        // XXH3-128("") as the reference implementation gives it (`xxhsum -H2`): the tag is
        // stable, not per process.
        assert_eq!(&entity_tag(b""), b"\"99aa06d3014798d86001c324468d497f\"");
        let (etag, json) = a.clone().into_parts();
        assert_eq!((&etag[..], &json[..]), (a.etag(), a.json()));
        assert_eq!(a.held_bytes(), ENTITY_TAG_LEN + 7);
    }

    /// The cached JSON is serde's, byte for byte (`stored_json`'s property test holds the
    /// writer to it over generated orders; this holds `from_order` to the writer).
    #[test]
    fn from_order_serves_what_serde_writes() {
        use crate::sample::{mixed_order, order_with_unknown_fields, reference_order};
        let mut orders = vec![reference_order()];
        for n in 0..6 {
            orders.push(mixed_order("m-", n));
            orders.push(order_with_unknown_fields("u-", n, (n % 3 + 1) as usize));
        }
        for o in &orders {
            let cached = OrderJson::from_order(o).expect("serializable");
            let serde = serde_json::to_vec(o).expect("serializable");
            assert_eq!(
                String::from_utf8_lossy(cached.json()),
                String::from_utf8_lossy(&serde)
            );
            assert_eq!(cached.etag(), entity_tag(&serde));
        }
    }
}
