use std::time::Duration;

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
    #[error("the Kafka broker at {brokers} did not answer within {after:?}")]
    Timeout { brokers: String, after: Duration },
}

/// A broker call that did not answer in time (rskafka has no timeout of its own, so a
/// half-open connection would stall forever).
#[derive(Debug, thiserror::Error)]
#[error("no answer from the broker within {after:?} (partition {partition})")]
pub(crate) struct TimedOut {
    pub(crate) partition: i32,
    pub(crate) after: Duration,
}

/// A fetch that failed, with the partition's high watermark read on its own: the consumer keeps
/// the lag metric moving from it while the partition is stuck.
#[derive(Debug, thiserror::Error)]
#[error("high watermark {}", .high_watermark.map_or_else(|| "unknown".to_owned(), |h| h.to_string()))]
pub(crate) struct FetchFailed {
    pub(crate) high_watermark: Option<i64>,
    #[source]
    pub(crate) source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// A record batch the client cannot decode, at the offset being fetched. The consumer records
/// it as one `undecodable` rejection and moves past it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "undecodable record batch at offsets {first_offset}..={last_offset} of partition {partition}: {reason}"
)]
pub(crate) struct UndecodableBatch {
    pub(crate) partition: i32,
    pub(crate) first_offset: i64,
    pub(crate) last_offset: i64,
    pub(crate) reason: String,
}

/// The first error of type `T` in `e`'s chain of sources.
pub(crate) fn find_cause<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<T>() {
            return Some(t);
        }
        cur = err.source();
    }
    None
}

/// `e` and its sources, joined with ": " (a log line that says what went wrong, down to the
/// decoder's or the socket's own words).
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        let s = err.to_string();
        // rskafka's errors repeat their source in their own message.
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = err.source();
    }
    out
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
