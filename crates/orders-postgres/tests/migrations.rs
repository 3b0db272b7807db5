#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Migrations cannot be forgotten or silently edited: every `migrations/*.sql` is embedded,
//! applied and recorded with its checksum, and a database whose applied migration differs
//! from the binary's file refuses to start.

use orders_postgres::testing::{create_test_database, sql_client};
use orders_postgres::{MIGRATIONS, PgError, PgRepository, migrate};

/// `(version, name, text)` of every file in `migrations/`, by version.
fn files_on_disk() -> Vec<(i32, String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .map(|p| {
            let stem = p.file_stem().unwrap().to_str().unwrap().to_owned();
            let (version, name) = stem
                .split_once('_')
                .unwrap_or_else(|| panic!("{stem}: expected NNNN_name.sql"));
            let version: i32 = version
                .parse()
                .unwrap_or_else(|_| panic!("{stem}: expected NNNN_name.sql"));
            (
                version,
                name.to_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    files.sort_by_key(|f| f.0);
    files
}

#[test]
fn every_migration_file_is_embedded_in_order_and_unchanged() {
    let files = files_on_disk();
    assert!(!files.is_empty());
    let embedded: Vec<_> = MIGRATIONS
        .iter()
        .map(|(v, n, sql)| (*v, (*n).to_owned(), (*sql).to_owned()))
        .collect();
    assert_eq!(
        embedded
            .iter()
            .map(|m| (m.0, m.1.clone()))
            .collect::<Vec<_>>(),
        files.iter().map(|f| (f.0, f.1.clone())).collect::<Vec<_>>(),
        "migrations/*.sql and orders_postgres::MIGRATIONS must list the same (version, name)s"
    );
    assert_eq!(embedded, files, "the embedded text is the file's");
    for (i, (v, _, _)) in files.iter().enumerate() {
        assert_eq!(*v, i as i32 + 1, "versions are 1, 2, 3, … without gaps");
    }
}

#[tokio::test]
async fn every_migration_is_applied_with_its_checksum_and_a_second_run_is_a_no_op() {
    let config = create_test_database().await;
    PgRepository::connect(&config).await.unwrap();
    let mut client = sql_client(&config).await;
    let recorded: Vec<(i32, String, String)> = client
        .query(
            "SELECT version, name, checksum FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let expected: Vec<_> = files_on_disk()
        .into_iter()
        .map(|(v, n, text)| (v, n, orders_postgres::migration_checksum(&text)))
        .collect();
    assert_eq!(recorded, expected);
    assert_eq!(migrate(&mut client).await.unwrap(), Vec::<i32>::new());
}

#[tokio::test]
async fn a_changed_applied_migration_stops_start_up_with_a_clear_error() {
    let config = create_test_database().await;
    PgRepository::connect(&config).await.unwrap();
    let client = sql_client(&config).await;
    // What an edit of 0002 after it was applied looks like from the database's side.
    client
        .execute(
            "UPDATE schema_migrations SET checksum = 'edited' WHERE version = 2",
            &[],
        )
        .await
        .unwrap();
    let err = PgRepository::connect(&config)
        .await
        .expect_err("must refuse");
    assert!(
        matches!(&err, PgError::MigrationChanged { version: 2, .. }),
        "{err:?}"
    );
    let message = err.to_string();
    for part in [
        "migration 2 (rejected_payload_digest) was changed after it was applied",
        "edited",
        "new migration",
    ] {
        assert!(message.contains(part), "{message}");
    }
}

#[tokio::test]
async fn a_database_migrated_before_checksums_gets_them_once() {
    let config = create_test_database().await;
    PgRepository::connect(&config).await.unwrap();
    let client = sql_client(&config).await;
    client
        .batch_execute("UPDATE schema_migrations SET checksum = NULL")
        .await
        .unwrap();
    PgRepository::connect(&config).await.unwrap();
    let missing: i64 = client
        .query_one(
            "SELECT count(*) FROM schema_migrations WHERE checksum IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(missing, 0);
    // And from then on they are checked.
    client
        .batch_execute("UPDATE schema_migrations SET checksum = 'x' WHERE version = 1")
        .await
        .unwrap();
    assert!(PgRepository::connect(&config).await.is_err());
}

/// Uids compare by bytes in every table (0006): the keys and the foreign keys' searches use
/// memcmp, not the database's collation, and the foreign keys are still in force.
#[tokio::test]
async fn order_uids_use_the_c_collation_and_keep_their_foreign_keys() {
    let config = create_test_database().await;
    PgRepository::connect(&config).await.unwrap();
    let client = sql_client(&config).await;
    let collations: Vec<(String, Option<String>)> = client
        .query(
            "SELECT table_name::text, collation_name::text FROM information_schema.columns
             WHERE column_name = 'order_uid'
               AND table_name IN ('orders', 'deliveries', 'payments', 'items')
             ORDER BY table_name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let c = Some("C".to_owned());
    assert_eq!(
        collations,
        vec![
            ("deliveries".into(), c.clone()),
            ("items".into(), c.clone()),
            ("orders".into(), c.clone()),
            ("payments".into(), c),
        ]
    );
    let foreign_keys: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND convalidated
               AND confrelid = 'orders'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(foreign_keys, 3);
    let orphan = client
        .execute(
            "INSERT INTO items (order_uid, position, chrt_id, track_number, price, rid, name,
                 sale, size, total_price, nm_id, brand, status)
             VALUES ('no-such-order', 0, 1, 't', 1, 'r', 'n', 0, '0', 1, 1, 'b', 200)",
            &[],
        )
        .await
        .expect_err("an item without its order");
    assert_eq!(
        orphan.code(),
        Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION)
    );
}
