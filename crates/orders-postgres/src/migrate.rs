//! A deliberately small migration runner: numbered SQL files from `migrations/`, embedded in the
//! binary, applied in order inside one transaction under an advisory lock (so two instances
//! starting at once do not race), each recorded in `schema_migrations`. Re-running is a no-op.

use crate::error::PgError;

/// `(version, name, sql)`, in order.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../../migrations/0001_initial.sql"),
    ),
    (
        2,
        "rejected_payload_digest",
        include_str!("../../../migrations/0002_rejected_payload_digest.sql"),
    ),
    (
        3,
        "log_identity",
        include_str!("../../../migrations/0003_log_identity.sql"),
    ),
    (
        5,
        "unknown_fields",
        include_str!("../../../migrations/0005_unknown_fields.sql"),
    ),
];

/// Arbitrary constant key for `pg_advisory_xact_lock`.
const LOCK_KEY: i64 = 0x6f72_6465_7273; // "orders"

/// Applies the migrations not applied yet; returns the versions applied now.
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<Vec<i32>, PgError> {
    let q = |context| move |source| PgError::Query { context, source };
    let tx = client
        .transaction()
        .await
        .map_err(q("starting the migration transaction"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(q("taking the migration lock"))?;
    // `IF NOT EXISTS` on an existing table is a NOTICE, logged on every start and every
    // operator command otherwise.
    tx.batch_execute(
        "SET LOCAL client_min_messages = warning;
         CREATE TABLE IF NOT EXISTS schema_migrations (
            version integer PRIMARY KEY,
            name text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .map_err(q("creating schema_migrations"))?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM schema_migrations", &[])
        .await
        .map_err(q("reading schema_migrations"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut now = Vec::new();
    for &(version, name, sql) in MIGRATIONS {
        if applied.contains(&version) {
            continue;
        }
        let failed = |source| PgError::Migration {
            version,
            name,
            source,
        };
        tx.batch_execute(sql).await.map_err(failed)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&version, &name],
        )
        .await
        .map_err(failed)?;
        tracing::info!(version, name, "applied migration");
        now.push(version);
    }
    tx.commit().await.map_err(q("committing migrations"))?;
    Ok(now)
}
