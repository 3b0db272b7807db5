//! Kafka for the orders service, on the pure-Rust `rskafka` client.
//!
//! - [`KafkaSource`]: the [`OrderSource`](orders_domain::OrderSource) port over one topic.
//! - [`Consumer`]: one loop per partition that fetches, hands each batch to the ingest use case
//!   (which commits orders, rejections and the next offset in one transaction), and retries
//!   with backoff. Offsets are never committed anywhere else.
//! - [`OrderProducer`]: batched produce, for the producer tool and tests.
//!
//! Invariant: no offset is stored except through `IngestService`, after the batch is handed
//! off; every partition runs independently of the others.

#[cfg(feature = "cli")]
mod cli;
mod config;
mod consumer;
mod error;
mod metrics;
mod producer;
mod source;

#[cfg(feature = "cli")]
pub use cli::KafkaSecurityArgs;
pub use config::{KafkaConfig, KafkaSecurity, SaslCredentials, SaslMechanism, SecurityProtocol};
pub use consumer::{Assignment, Consumer, ConsumerConfig};
pub use error::KafkaError;
pub use metrics::ConsumerMetrics;
pub use producer::OrderProducer;
pub use source::KafkaSource;
