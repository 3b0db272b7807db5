use std::time::Duration;

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
            .connect_timeout(self.connect_timeout);
        c
    }

    /// `user@host:port/dbname`, for messages.
    pub fn display(&self) -> String {
        format!("{}@{}:{}/{}", self.user, self.host, self.port, self.dbname)
    }
}
