//! Errors at the domain's boundary. Adapters map their own errors into these at the seam.

use thiserror::Error;

type Source = Box<dyn std::error::Error + Send + Sync>;

/// Shows an error with its whole source chain, outermost first (`a: b: c`, each text once), for logs: the
/// outer message says what failed, the innermost (PostgreSQL's own message, the I/O error)
/// says why. `tracing::warn!(error = %Chain(&e), ...)`.
#[derive(Debug, Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A source whose words are already shown is skipped: many errors (io::Error,
        // rskafka's) repeat their source in their own message.
        let mut out = self.0.to_string();
        let mut source = self.0.source();
        while let Some(s) = source {
            let text = s.to_string();
            if !out.contains(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            source = s.source();
        }
        f.write_str(&out)
    }
}

/// Failure of an [`crate::ports::OrderRepository`].
#[derive(Debug, Error)]
pub enum RepositoryError {
    /// The store cannot be reached or gave up for now (connection, pool timeout, deadlock).
    /// Retrying later may succeed.
    #[error("storage unavailable: {context}")]
    Unavailable {
        context: String,
        #[source]
        source: Option<Source>,
    },
    /// The partition's stored offset is not the one the batch expected: another writer (a
    /// replica that took the partition over, or this one's own earlier commit whose answer was
    /// lost) moved it. Nothing of the batch was kept; re-read the stored offset.
    #[error(
        "offset of {topic}/{partition} moved by another writer (expected {expected:?}); batch dropped"
    )]
    Fenced {
        topic: String,
        partition: i32,
        expected: Option<i64>,
    },
    /// The writer's lease on the partition is no longer the current one: the partition was
    /// given to another member (this one was paused or cut off past its lease). Nothing of
    /// the batch was kept; stop consuming the partition.
    #[error("lease on {topic}/{partition} (epoch {epoch}) is no longer held; batch dropped")]
    LeaseLost {
        topic: String,
        partition: i32,
        epoch: i64,
    },
    /// The data broke a storage constraint; retrying the same data will fail again.
    #[error("storage constraint violated: {0}")]
    Constraint(String),
    /// Anything else: a bug, corrupt data, a schema mismatch.
    #[error("storage error: {context}")]
    Other {
        context: String,
        #[source]
        source: Option<Source>,
    },
}

impl RepositoryError {
    /// Worth retrying unchanged?
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    pub fn unavailable(context: impl Into<String>, source: impl Into<Source>) -> Self {
        Self::Unavailable {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    pub fn other(context: impl Into<String>, source: impl Into<Source>) -> Self {
        Self::Other {
            context: context.into(),
            source: Some(source.into()),
        }
    }
}

/// Failure of an [`crate::ports::OrderSource`].
#[derive(Debug, Error)]
pub enum SourceError {
    /// The broker cannot be reached right now; retry with backoff.
    #[error("message source unavailable: {context}")]
    Unavailable {
        context: String,
        #[source]
        source: Option<Source>,
    },
    /// The requested offset is outside the log (removed by retention, or past the end).
    #[error("offset {offset} is out of range on partition {partition}")]
    OffsetOutOfRange { partition: i32, offset: i64 },
    /// The topic does not exist (and is not to be created).
    #[error("topic {0:?} does not exist")]
    UnknownTopic(String),
    #[error("message source error: {context}")]
    Other {
        context: String,
        #[source]
        source: Option<Source>,
    },
}

impl SourceError {
    pub fn unavailable(context: impl Into<String>, source: impl Into<Source>) -> Self {
        Self::Unavailable {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    pub fn other(context: impl Into<String>, source: impl Into<Source>) -> Self {
        Self::Other {
            context: context.into(),
            source: Some(source.into()),
        }
    }
}

/// Failure of the query use case.
#[derive(Debug, Error)]
pub enum QueryError {
    #[error("invalid order_uid: must be 1..=64 characters of [A-Za-z0-9_-]")]
    InvalidUid,
    #[error("order not found")]
    NotFound,
    /// Too many cache misses are already being read from the repository; the caller should
    /// retry shortly (HTTP answers 503 with `Retry-After`). Misses are bounded so that a flood
    /// of unknown uids cannot queue without end on the read pool.
    #[error("too many uncached reads in flight (limit {limit}); retry shortly")]
    Overloaded { limit: usize },
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_shows_every_cause_down_to_the_driver_s() {
        let driver = std::io::Error::other("FATAL: database \"orders\" does not exist");
        let e = RepositoryError::unavailable("getting a database connection", driver);
        assert_eq!(
            e.to_string(),
            "storage unavailable: getting a database connection"
        );
        assert_eq!(
            Chain(&e).to_string(),
            "storage unavailable: getting a database connection: FATAL: database \"orders\" does not exist"
        );
    }
}
