use orders_domain::SourceError;
use rskafka::client::error::{Error as RsError, ProtocolError};

/// Failures of this adapter outside the port calls (set-up, producing).
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("cannot connect to the Kafka broker at {brokers}: {source}")]
    Connect {
        brokers: String,
        #[source]
        source: RsError,
    },
    #[error("topic {0:?} does not exist (start with --create-topic to create it in development)")]
    UnknownTopic(String),
    #[error("Kafka request failed while {context}: {source}")]
    Request {
        context: &'static str,
        #[source]
        source: RsError,
    },
}

/// Maps an rskafka error into the domain's terms.
pub(crate) fn map_rs(
    context: &'static str,
    partition: i32,
    offset: i64,
    e: RsError,
) -> SourceError {
    match &e {
        RsError::ServerError {
            protocol_error: ProtocolError::OffsetOutOfRange,
            ..
        } => SourceError::OffsetOutOfRange { partition, offset },
        RsError::ServerError {
            protocol_error: ProtocolError::UnknownTopicOrPartition,
            ..
        } => SourceError::unavailable(
            format!("{context}: unknown topic or partition {partition}"),
            e,
        ),
        RsError::InvalidResponse(_) => SourceError::other(context, e),
        _ => SourceError::unavailable(context, e),
    }
}
