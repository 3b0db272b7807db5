//! A deliberately small migration runner: numbered SQL files from `migrations/`, embedded in the
//! binary, applied in order inside one transaction under an advisory lock (so two instances
//! starting at once do not race), each recorded in `schema_migrations` with the SHA-256 of its
//! text. Re-running is a no-op.
//!
//! An applied migration is never edited: at every start the recorded checksum of each applied
//! migration must equal the embedded file's, or start-up stops with
//! [`PgError::MigrationChanged`] (the database was built by other SQL than the binary carries;
//! add a new migration instead). Rows recorded before checksums existed get the current file's
//! checksum once (trust on first sight). A recorded version this binary does not know (a newer
//! binary applied it) is logged, not refused, so an older instance of a rolling update keeps
//! running. `tests/migrations.rs` checks that every `migrations/*.sql` is listed here.

use sha2::Digest;

use crate::error::PgError;

/// `(version, name, sql)`, in order. A new file in `migrations/` goes at the end with the next
/// version; its checksum is computed from `sql`, nothing else is needed.
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
        4,
        "partition_leases",
        include_str!("../../../migrations/0004_partition_leases.sql"),
    ),
    (
        5,
        "unknown_fields",
        include_str!("../../../migrations/0005_unknown_fields.sql"),
    ),
    (
        6,
        "uid_collation",
        include_str!("../../../migrations/0006_uid_collation.sql"),
    ),
];

/// Arbitrary constant key for `pg_advisory_xact_lock`.
const LOCK_KEY: i64 = 0x6f72_6465_7273; // "orders"

/// The SHA-256 of a migration's text, lower-case hex, as recorded in `schema_migrations`.
pub fn checksum(sql: &str) -> String {
    sha2::Sha256::digest(sql.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Applies the migrations not applied yet; returns the versions applied now. Fails without
/// applying anything when an applied migration's text changed.
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
            applied_at timestamptz NOT NULL DEFAULT now());
         ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum text",
    )
    .await
    .map_err(q("creating schema_migrations"))?;
    let applied: Vec<(i32, String, Option<String>)> = tx
        .query(
            "SELECT version, name, checksum FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .map_err(q("reading schema_migrations"))?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    for (version, name, recorded) in &applied {
        let Some(&(_, _, sql)) = MIGRATIONS.iter().find(|(v, _, _)| v == version) else {
            tracing::warn!(
                version,
                name,
                "the database has a migration this binary does not know (applied by a newer version?)"
            );
            continue;
        };
        let current = checksum(sql);
        match recorded {
            Some(recorded) if *recorded != current => {
                return Err(PgError::MigrationChanged {
                    version: *version,
                    name: name.clone(),
                    recorded: recorded.clone(),
                    current,
                });
            }
            Some(_) => {}
            None => {
                tx.execute(
                    "UPDATE schema_migrations SET checksum = $2 WHERE version = $1",
                    &[version, &current],
                )
                .await
                .map_err(q("recording a migration's checksum"))?;
            }
        }
    }
    let mut now = Vec::new();
    for &(version, name, sql) in MIGRATIONS {
        if applied.iter().any(|(v, _, _)| *v == version) {
            continue;
        }
        let failed = |source| PgError::Migration {
            version,
            name,
            source,
        };
        tx.batch_execute(sql).await.map_err(failed)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&version, &name, &checksum(sql)],
        )
        .await
        .map_err(failed)?;
        tracing::info!(version, name, "applied migration");
        now.push(version);
    }
    tx.commit().await.map_err(q("committing migrations"))?;
    Ok(now)
}
