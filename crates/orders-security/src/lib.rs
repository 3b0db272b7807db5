//! What the adapters need to reach managed services, shared so that PostgreSQL and Kafka behave
//! alike:
//! - [`Secret`]: a password or URL with credentials that never prints (`Debug` redacts it and
//!   there is no `Display`), and [`resolve_secret`] for the `_FILE` form of a setting;
//! - [`client_config`]: a rustls client configuration (ring, no OpenSSL) from PEM files, with
//!   the levels of server verification libpq has ([`Verify`]).
//!
//! Invariant: no error or `Debug` output of this crate contains a secret's value; errors name
//! the setting (e.g. `DB_SSLROOTCERT`) and the file, never its content.

mod secret;
mod tls;

pub use secret::{Secret, SecretError, resolve_secret};
pub use tls::{TlsError, TlsFiles, Verify, client_config};
