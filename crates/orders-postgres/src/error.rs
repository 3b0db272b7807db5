use orders_domain::RepositoryError;
use tokio_postgres::error::SqlState;

/// Failures of this adapter outside the repository calls (set-up, migrations).
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("cannot connect to PostgreSQL at {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        version: i32,
        name: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("PostgreSQL error while {context}: {source}")]
    Query {
        context: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
}

/// Maps a driver error into the domain's terms: what is worth retrying, what is the data's fault.
pub(crate) fn map_pg(context: &'static str, e: tokio_postgres::Error) -> RepositoryError {
    let Some(code) = e.code() else {
        // No SQLSTATE: the connection broke or could not be used.
        return RepositoryError::unavailable(context, e);
    };
    let constraint = [
        SqlState::CHECK_VIOLATION,
        SqlState::NOT_NULL_VIOLATION,
        SqlState::FOREIGN_KEY_VIOLATION,
        SqlState::STRING_DATA_RIGHT_TRUNCATION,
        SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
        SqlState::CHARACTER_NOT_IN_REPERTOIRE,
        SqlState::UNTRANSLATABLE_CHARACTER,
    ];
    let transient = [
        SqlState::T_R_DEADLOCK_DETECTED,
        SqlState::T_R_SERIALIZATION_FAILURE,
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::TOO_MANY_CONNECTIONS,
        SqlState::CONNECTION_EXCEPTION,
        SqlState::CONNECTION_FAILURE,
        SqlState::QUERY_CANCELED,
        SqlState::LOCK_NOT_AVAILABLE,
    ];
    if constraint.contains(code) {
        let detail = e
            .as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or_default();
        RepositoryError::Constraint(format!("{context}: {detail}"))
    } else if transient.contains(code)
        || code.code().starts_with("08")
        || code.code().starts_with("57")
    {
        RepositoryError::unavailable(context, e)
    } else {
        RepositoryError::other(context, e)
    }
}

/// Not getting a connection is always "unavailable": whatever the cause (server down, database
/// closed to connections, pool exhausted), it may pass, and it says nothing about the data.
pub(crate) fn map_pool(e: deadpool_postgres::PoolError) -> RepositoryError {
    RepositoryError::unavailable("getting a database connection", e)
}
