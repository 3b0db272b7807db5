use orders_domain::RepositoryError;
use tokio_postgres::error::SqlState;

/// Failures of this adapter outside the repository calls (set-up, migrations).
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// `hint` says which setting to check; `permanent` failures (authentication, TLS, the
    /// server's rules) do not pass by waiting, so start-up does not retry them.
    /// `detail` is the driver's error with all its causes (the server's own words, the TLS
    /// library's reason), which never include the password.
    #[error("cannot connect to PostgreSQL at {target}: {detail}{}", .hint.map(|h| format!(" ({h})")).unwrap_or_default())]
    Connect {
        target: String,
        detail: String,
        hint: Option<&'static str>,
        permanent: bool,
    },
    #[error("{setting}: {reason}")]
    Config {
        setting: &'static str,
        reason: String,
    },
    #[error("PostgreSQL TLS settings: {0}")]
    Tls(#[from] orders_security::TlsError),
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        version: i32,
        name: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(
        "migration {version} ({name}) was changed after it was applied: the database recorded \
         checksum {recorded}, the binary's file has {current}. Applied migrations must never be \
         edited; restore the file and put the change in a new migration"
    )]
    MigrationChanged {
        version: i32,
        name: String,
        recorded: String,
        current: String,
    },
    #[error("PostgreSQL error while {context}: {source}")]
    Query {
        context: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
}

impl PgError {
    /// A failure that retrying with the same settings cannot fix.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Connect { permanent, .. } => *permanent,
            Self::Config { .. } | Self::Tls(_) | Self::MigrationChanged { .. } => true,
            Self::Migration { .. } | Self::Query { .. } => false,
        }
    }
}

/// A failed connection attempt: the driver's words down to the root cause, what to check, and
/// whether waiting could help.
pub(crate) fn connect_error(target: String, e: deadpool_postgres::PoolError) -> PgError {
    let (hint, permanent) = connect_hint(&e);
    // The pool's own words ("Error occurred while creating a new object") add nothing.
    let detail = match &e {
        deadpool_postgres::PoolError::Backend(pg) => chain(pg),
        other => chain(other),
    };
    PgError::Connect {
        target,
        detail,
        hint,
        permanent,
    }
}

/// `e` and its sources, each text once (see [`orders_domain::Chain`]).
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    orders_domain::Chain(e).to_string()
}

/// What to check when a connection cannot be made, and whether waiting could help.
fn connect_hint(e: &(dyn std::error::Error + 'static)) -> (Option<&'static str>, bool) {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(pg) = err.downcast_ref::<tokio_postgres::Error>()
            && let Some(db) = pg.as_db_error()
        {
            let code = db.code();
            if *code == SqlState::INVALID_PASSWORD {
                return (
                    Some("check DB_USER and DB_PASSWORD (or the credentials in DATABASE_URL)"),
                    true,
                );
            }
            if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
                return if db.message().contains("no encryption") {
                    (
                        Some(
                            "the server accepts only TLS connections: set DB_SSLMODE to require, verify-ca or verify-full",
                        ),
                        true,
                    )
                } else {
                    (
                        Some(
                            "the server refuses this user from this host: check DB_USER, DB_SSLCERT/DB_SSLKEY and the server's pg_hba.conf",
                        ),
                        true,
                    )
                };
            }
            // A database may still be being created (by an init job): worth waiting for.
            if *code == SqlState::INVALID_CATALOG_NAME {
                return (Some("check DB_NAME"), false);
            }
        }
        // tokio-rustls wraps rustls' error in an io::Error, whose source() skips it.
        let tls = err.downcast_ref::<rustls::Error>().or_else(|| {
            err.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(tls) = tls {
            return match tls {
                rustls::Error::InvalidCertificate(_) => (
                    Some(
                        "the server's certificate was refused: check DB_SSLROOTCERT (the CA that signed it) and DB_HOST (the name it must hold), or DB_SSLMODE",
                    ),
                    true,
                ),
                _ => (
                    Some("the TLS handshake failed: check DB_SSLMODE, DB_SSLCERT and DB_SSLKEY"),
                    true,
                ),
            };
        }
        if err.to_string() == "server does not support TLS" {
            return (
                Some(
                    "the server offers no TLS: enable ssl on the server or set DB_SSLMODE to prefer or disable",
                ),
                true,
            );
        }
        cur = err.source();
    }
    (None, false)
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
