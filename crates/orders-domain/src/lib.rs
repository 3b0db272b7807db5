//! The heart of the orders service: the [`Order`] model and its validation, the ports
//! ([`OrderRepository`], [`OrderCache`], [`OrderSource`]) and the use cases
//! ([`IngestService`], [`QueryService`]).
//!
//! Invariant: this crate does no I/O. It talks to the world only through the port traits.

pub mod error;
pub mod ingest;
pub mod model;
pub mod order_json;
pub mod ports;
pub mod query;
pub mod sample;
pub mod schema;
pub mod stored_json;
pub mod unknown;
pub mod validation;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use error::{Chain, QueryError, RepositoryError, SourceError};
pub use ingest::{IngestReport, IngestService, ReplayReport};
pub use model::{Delivery, Item, Order, OrderSummary, Payment, Text};
pub use order_json::{
    CachedOrder, ENTITY_TAG_LEN, MessageJsonError, OrderJson, ReceivedMessage, entity_tag,
};
pub use ports::{
    AcceptedOrder, CacheStats, Fence, FetchedBatch, Membership, OrderCache, OrderRepository,
    OrderSource, PAYLOAD_EXCERPT_BYTES, PartitionLease, PartitionLeases, PartitionOffset,
    PayloadDigest, Position, RawMessage, RecordMark, RejectedFilter, RejectedMessage, Rejection,
    StartOffset, StoreBatch, StoreOutcome, StoreSeq, StoredJson, WARM_PAGE, fair_share,
};
pub use query::{MissStats, QueryService};
pub use unknown::{Extra, UnknownFields};
pub use validation::{
    DecodeError, FieldError, RejectReason, Violations, decode_order, decode_order_with,
    is_valid_order_uid, validate_order,
};

/// The reference order message, shipped with the project.
pub const REFERENCE_ORDER_JSON: &str = include_str!("../../../fixtures/order.json");

/// The JSON Schema of the order message as checked in (`schema/order.json`); a test checks
/// that it is what [`schema::order_schema`] generates from the model.
pub const ORDER_SCHEMA_JSON: &str = include_str!("../../../schema/order.json");
