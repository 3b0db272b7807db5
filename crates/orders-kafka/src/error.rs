use std::time::Duration;

use orders_domain::SourceError;
use rskafka::client::error::{Error as RsError, ProtocolError};

/// Failures of this adapter outside the port calls (set-up, producing).
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// `detail` is the client's error down to its root cause (never a password); `hint` says
    /// which setting to check; a `permanent` failure (credentials, TLS) is not retried soon.
    #[error("cannot connect to the Kafka broker at {brokers} over {security}: {detail}{}", .hint.map(|h| format!(" ({h})")).unwrap_or_default())]
    Connect {
        brokers: String,
        security: String,
        detail: String,
        hint: Option<&'static str>,
        permanent: bool,
    },
    #[error("Kafka settings: {0}")]
    Config(String),
    #[error("Kafka TLS settings: {0}")]
    Tls(#[from] orders_security::TlsError),
    #[error("topic {0:?} does not exist (start with --create-topic to create it in development)")]
    UnknownTopic(String),
    #[error("Kafka request failed while {context}: {source}")]
    Request {
        context: &'static str,
        #[source]
        source: RsError,
    },
    #[error("the Kafka broker at {brokers} did not answer within {after:?}{}", .hint.map(|h| format!(" ({h})")).unwrap_or_default())]
    Timeout {
        brokers: String,
        after: Duration,
        hint: Option<&'static str>,
    },
}

impl KafkaError {
    /// Retrying with the same settings cannot fix it (credentials, TLS, settings that do not
    /// fit): callers wait long between attempts, or give up.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Connect { permanent, .. } => *permanent,
            Self::Config(_) | Self::Tls(_) => true,
            Self::UnknownTopic(_) | Self::Request { .. } | Self::Timeout { .. } => false,
        }
    }
}

/// No answer in time from the brokers of `config`.
pub(crate) fn timeout_error(config: &crate::KafkaConfig) -> KafkaError {
    KafkaError::Timeout {
        brokers: config.brokers.join(","),
        after: config.call_timeout(),
        // A plaintext listener reads a TLS hello as the start of a huge request and waits.
        hint: config.security.protocol.tls().then_some(
            "no answer to the TLS handshake either: if this listener is not TLS, set KAFKA_SECURITY_PROTOCOL to PLAINTEXT or SASL_PLAINTEXT",
        ),
    }
}

/// A failed connection: the client's words, what to check, and whether waiting can help.
pub(crate) fn connect_error(config: &crate::KafkaConfig, e: &RsError) -> KafkaError {
    let (hint, permanent) = connect_hint(&config.security, e);
    KafkaError::Connect {
        brokers: config.brokers.join(","),
        security: config.security.describe(),
        detail: chain(e),
        hint,
        permanent,
    }
}

fn connect_hint(
    security: &crate::KafkaSecurity,
    e: &(dyn std::error::Error + 'static),
) -> (Option<&'static str>, bool) {
    let permanent = find_cause::<rskafka::ConnectionError>(e).is_some_and(|c| c.is_permanent());
    if find_cause::<rskafka::SaslError>(e).is_some() && permanent {
        return (
            Some(
                "the broker refused the SASL login: check KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD and KAFKA_SASL_MECHANISM",
            ),
            true,
        );
    }
    // tokio-rustls wraps rustls' error in an io::Error, whose source() skips it.
    let mut io_kind = None;
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            io_kind.get_or_insert(io.kind());
            if let Some(tls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return match tls {
                    rustls::Error::InvalidCertificate(_) => (
                        Some(
                            "the broker's certificate was refused: check KAFKA_SSL_CA_LOCATION (the CA that signed it) and that KAFKA_BROKER names a host the certificate holds",
                        ),
                        true,
                    ),
                    _ => (
                        Some(
                            "the TLS handshake failed: is this a TLS listener? check KAFKA_SECURITY_PROTOCOL",
                        ),
                        true,
                    ),
                };
            }
        }
        cur = err.source();
    }
    use std::io::ErrorKind::{BrokenPipe, ConnectionRefused, ConnectionReset, UnexpectedEof};
    let hint = match io_kind {
        Some(ConnectionRefused) => Some("nothing accepts connections there: check KAFKA_BROKER"),
        Some(UnexpectedEof | ConnectionReset | BrokenPipe) if !security.protocol.tls() => Some(
            "the broker closed the connection: if its listener expects TLS, set KAFKA_SECURITY_PROTOCOL to SSL or SASL_SSL",
        ),
        Some(UnexpectedEof | ConnectionReset | BrokenPipe) if !security.protocol.sasl() => Some(
            "the broker closed the connection: if its listener expects SASL, set KAFKA_SECURITY_PROTOCOL to SASL_SSL",
        ),
        _ => None,
    };
    (hint, permanent)
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

/// `e` and its sources, each text once (see [`orders_domain::Chain`]).
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    orders_domain::Chain(e).to_string()
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
