use std::time::Duration;

/// Longest a session may sit idle inside a transaction. The repository's transactions never
/// wait on anything but the server, so only a stalled client gets there.
const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how to connect.
#[derive(Clone)]
pub struct PgConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub dbname: String,
    /// Connections in the pool (ingestion uses one per partition at a time, reads share it).
    pub pool_size: usize,
    /// How long to wait for a connection (from the pool or a new one) before giving up.
    pub connect_timeout: Duration,
    /// Server-side `statement_timeout` of every statement; a repository call also gives up
    /// (client side) a few seconds after it, see [`PgConfig::query_timeout`].
    pub statement_timeout: Duration,
}

impl std::fmt::Debug for PgConfig {
    // The password stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("dbname", &self.dbname)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for PgConfig {
    fn default() -> Self {
        Self {
            host: "localhost".into(),
            port: 5432,
            user: "postgres".into(),
            password: "postgres".into(),
            dbname: "orders_db".into(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
        }
    }
}

impl PgConfig {
    pub(crate) fn tokio_postgres(&self) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .password(&self.password)
            .dbname(&self.dbname)
            .application_name("orders")
            .connect_timeout(self.connect_timeout)
            // The server ends a statement that runs (or waits for a lock) too long: 57014,
            // which the repository reports as transient.
            // And a session left idle inside a transaction (its process paused or hung, e.g. a
            // replica under SIGSTOP) is ended, so its row locks do not hold up the replica that
            // takes its partitions over.
            .options(format!(
                "-c statement_timeout={} -c idle_in_transaction_session_timeout={}",
                self.statement_timeout.as_millis(),
                IDLE_IN_TRANSACTION_TIMEOUT.as_millis()
            ))
            // A peer that vanished (host down, cable cut) is noticed on an idle connection
            // within about 20 s, and unacknowledged data gives up after the query timeout.
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(2)
            .tcp_user_timeout(self.query_timeout());
        c
    }

    /// Client-side bound on one repository call: the statement timeout plus time for the
    /// server's own cancellation to arrive first (a whole batch is several statements, but
    /// each is far below the bound).
    pub fn query_timeout(&self) -> Duration {
        self.statement_timeout + Duration::from_secs(5)
    }

    /// `user@host:port/dbname`, for messages.
    pub fn display(&self) -> String {
        format!("{}@{}:{}/{}", self.user, self.host, self.port, self.dbname)
    }
}
