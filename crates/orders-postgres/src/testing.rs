//! One throwaway database per test, so tests run in parallel without sharing state.
//! Connection settings come from the usual `DB_*` variables; a missing server is a loud failure.

use crate::{PgConfig, PgRepository};

/// Settings from `DB_HOST`, `DB_PORT`, `DB_USER`, `DB_PASSWORD`, `DB_NAME` (defaults as the app).
pub fn config_from_env() -> PgConfig {
    let d = PgConfig::default();
    let var = |k: &str, def: String| std::env::var(k).unwrap_or(def);
    PgConfig {
        host: var("DB_HOST", d.host),
        port: var("DB_PORT", d.port.to_string()).parse().unwrap_or(d.port),
        user: var("DB_USER", d.user),
        password: std::env::var("DB_PASSWORD").map_or(d.password, orders_security::Secret::new),
        dbname: var("DB_NAME", d.dbname),
        pool_size: 8,
        ..d
    }
}

/// Creates a new, empty database named `orders_test_<random>` and returns its settings.
///
/// # Panics
/// When PostgreSQL is not reachable: tests must not pass without a real database. Run
/// `just db-up` (or `just test`, which does it).
pub async fn create_test_database() -> PgConfig {
    create_test_database_on(config_from_env()).await
}

/// As [`create_test_database`], on the server `admin` reaches (with its TLS settings).
///
/// # Panics
/// When that server is not reachable.
pub async fn create_test_database_on(admin: PgConfig) -> PgConfig {
    let name = format!("orders_test_{}", uuid::Uuid::new_v4().simple());
    let client = try_sql_client(&admin).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is not reachable at {} ({e}); start it with `just db-up`",
            admin.display()
        )
    });
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
    PgConfig {
        dbname: name,
        ..admin
    }
}

/// A migrated repository on a fresh database.
pub async fn test_repository() -> PgRepository {
    let config = create_test_database().await;
    PgRepository::connect(&config)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to test database {}: {e}", config.display()))
}

/// A plain SQL client on `config`'s database, for assertions and fault injection in tests.
/// Its connection task runs on the current runtime until the client is dropped.
///
/// # Panics
/// When the database is not reachable.
pub async fn sql_client(config: &PgConfig) -> tokio_postgres::Client {
    try_sql_client(config)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", config.display()))
}

/// A plain SQL client on `config`'s database, with `config`'s TLS settings, or why not.
pub async fn try_sql_client(
    config: &PgConfig,
) -> Result<tokio_postgres::Client, Box<dyn std::error::Error + Send + Sync>> {
    let (client, conn) = config
        .tokio_postgres()
        .connect(config.tls_connector()?)
        .await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// A database outage for whoever uses `dbname`: closed to new connections and its existing
/// connections cut. Ends when the returned guard's [`Outage::end`] is called.
///
/// # Panics
/// When PostgreSQL refuses the admin commands.
pub async fn database_outage(dbname: &str) -> Outage {
    let admin = sql_client(&config_from_env()).await;
    admin
        .batch_execute(&format!("ALTER DATABASE {dbname} ALLOW_CONNECTIONS false"))
        .await
        .unwrap_or_else(|e| panic!("cannot close {dbname}: {e}"));
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&dbname],
        )
        .await
        .unwrap_or_else(|e| panic!("cannot cut connections to {dbname}: {e}"));
    Outage {
        admin,
        dbname: dbname.to_owned(),
    }
}

/// An outage started by [`database_outage`].
#[derive(Debug)]
pub struct Outage {
    admin: tokio_postgres::Client,
    dbname: String,
}

impl Outage {
    /// Opens the database to connections again.
    ///
    /// # Panics
    /// When PostgreSQL refuses the admin command.
    pub async fn end(self) {
        let name = &self.dbname;
        self.admin
            .batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
            .await
            .unwrap_or_else(|e| panic!("cannot reopen {name}: {e}"));
    }
}

/// The servers of the managed-services tests, as `scripts/secure-up.sh` (run by `just
/// test-deps`) wrote them to `.local/secure/stack.env`: ports, certificate and secret files.
#[derive(Debug, Clone)]
pub struct SecureStack(std::collections::BTreeMap<String, String>);

impl SecureStack {
    /// # Panics
    /// When the file is missing: these tests must not pass without their servers.
    pub fn load() -> Self {
        let path = std::env::var("ORDERS_SECURE_STACK_ENV").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../.local/secure/stack.env").to_owned()
        });
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("{path}: {e}; start the TLS and SASL test servers with `just secure-up`")
        });
        Self(
            text.lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect(),
        )
    }

    /// # Panics
    /// When the file has no such key.
    pub fn get(&self, key: &str) -> String {
        self.0
            .get(key)
            .cloned()
            .unwrap_or_else(|| panic!("{key} missing from .local/secure/stack.env"))
    }

    pub fn path(&self, key: &str) -> std::path::PathBuf {
        self.get(key).into()
    }

    /// The content of the secret file named by `key`.
    pub fn secret(&self, key: &str) -> orders_security::Secret {
        orders_security::resolve_secret("TEST_SECRET", None, Some(&self.path(key)))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("{key}: empty"))
    }

    /// The TLS-only PostgreSQL with `verify-full` against the test CA, on `orders_db`.
    pub fn postgres(&self) -> PgConfig {
        PgConfig {
            host: self.get("SECURE_PG_HOST"),
            port: self
                .get("SECURE_PG_PORT")
                .parse()
                .unwrap_or_else(|e| panic!("{e}")),
            user: self.get("SECURE_PG_USER"),
            password: self.secret("SECURE_PG_PASSWORD_FILE"),
            dbname: "orders_db".into(),
            pool_size: 2,
            tls: crate::PgTls {
                mode: crate::SslMode::VerifyFull,
                root_cert: Some(self.path("SECURE_CA")),
                ..crate::PgTls::default()
            },
            ..PgConfig::default()
        }
    }
}
