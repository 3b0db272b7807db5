//! [`OrderRepository`](orders_domain::OrderRepository) on PostgreSQL.
//!
//! Invariant: every write of a batch happens in one transaction (binary `COPY`, or multi-row
//! `UNNEST` inserts where rows may conflict); nothing outside this crate sees a
//! `tokio_postgres` type.

mod config;
mod error;
mod leases;
mod listener;
mod migrate;
mod repository;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{PgConfig, PgTls, SslMode};
pub use error::PgError;
pub use leases::{PartitionOwner, PgLeases, member_id};
pub use listener::{Announcement, CommitListener};
pub use migrate::{MIGRATIONS, checksum as migration_checksum, migrate};
pub use repository::{PgRepository, PoolStatus};
