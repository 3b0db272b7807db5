#![allow(clippy::unwrap_used)]
//! TLS to a real PostgreSQL with `ssl = on` and a pg_hba.conf of `hostssl` lines only, whose
//! certificate comes from a throwaway CA and names `localhost` only (`scripts/secure-up.sh`).
//! Each `DB_SSLMODE` level as libpq means it; refusals are quick, permanent and say which
//! setting to check, without the password.

use std::time::{Duration, Instant};

use orders_postgres::testing::{SecureStack, try_sql_client};
use orders_postgres::{PgConfig, PgError, PgRepository, PgTls, SslMode};
use orders_security::Secret;

fn stack() -> SecureStack {
    SecureStack::load()
}

/// Connects (and migrates) as the service does, then asks the server whether this session is
/// encrypted.
async fn connects_encrypted(config: &PgConfig) -> bool {
    let repo = PgRepository::connect(config)
        .await
        .unwrap_or_else(|e| panic!("{config:?}: {e}"));
    orders_domain::OrderRepository::ping(&repo).await.unwrap();
    let client = try_sql_client(config).await.unwrap();
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// The refusal of `config`: quick (not retried), permanent, with the password nowhere.
async fn refused(config: &PgConfig) -> String {
    let started = Instant::now();
    let e = PgRepository::connect(config)
        .await
        .expect_err("this connection must be refused");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a refusal is not retried: took {:?}",
        started.elapsed()
    );
    assert!(e.is_permanent(), "{e}");
    assert!(matches!(e, PgError::Connect { .. }), "{e}");
    let text = e.to_string();
    assert!(!text.contains(config.password.expose()), "{text}");
    text
}

#[tokio::test]
async fn verify_full_connects_encrypted() {
    assert!(connects_encrypted(&stack().postgres()).await);
}

#[tokio::test]
async fn verify_full_refuses_a_certificate_for_another_host() {
    // The certificate names `localhost` only.
    let config = PgConfig {
        host: "127.0.0.1".into(),
        ..stack().postgres()
    };
    let e = refused(&config).await;
    assert!(
        e.contains("certificate not valid for name \"127.0.0.1\""),
        "{e}"
    );
    assert!(e.contains("DB_SSLROOTCERT") && e.contains("DB_HOST"), "{e}");
    assert!(
        e.contains("127.0.0.1") && e.contains("sslmode=verify-full"),
        "{e}"
    );
}

#[tokio::test]
async fn verify_full_refuses_a_certificate_from_another_ca() {
    let s = stack();
    let mut config = s.postgres();
    config.tls.root_cert = Some(s.path("SECURE_OTHER_CA"));
    let e = refused(&config).await;
    assert!(e.contains("UnknownIssuer"), "{e}");
    assert!(e.contains("DB_SSLROOTCERT"), "{e}");
}

#[tokio::test]
async fn verify_ca_checks_the_ca_but_not_the_host_name() {
    let s = stack();
    let mut config = PgConfig {
        host: "127.0.0.1".into(),
        ..s.postgres()
    };
    config.tls.mode = SslMode::VerifyCa;
    assert!(connects_encrypted(&config).await);
    config.tls.root_cert = Some(s.path("SECURE_OTHER_CA"));
    assert!(refused(&config).await.contains("UnknownIssuer"));
}

#[tokio::test]
async fn require_and_prefer_encrypt_without_a_ca() {
    for mode in [SslMode::Require, SslMode::Prefer] {
        let config = PgConfig {
            host: "127.0.0.1".into(),
            tls: PgTls {
                mode,
                ..PgTls::default()
            },
            ..stack().postgres()
        };
        assert!(connects_encrypted(&config).await, "{mode:?}");
    }
    // libpq: `require` with a root certificate checks the chain.
    let s = stack();
    let mut config = s.postgres();
    config.tls.mode = SslMode::Require;
    config.tls.root_cert = Some(s.path("SECURE_OTHER_CA"));
    assert!(refused(&config).await.contains("UnknownIssuer"));
}

#[tokio::test]
async fn disable_against_a_tls_only_server_fails_clearly() {
    let mut config = stack().postgres();
    config.tls.mode = SslMode::Disable;
    let e = refused(&config).await;
    assert!(e.contains("no encryption"), "{e}");
    assert!(
        e.contains("the server accepts only TLS connections: set DB_SSLMODE to require"),
        "{e}"
    );
}

#[tokio::test]
async fn a_client_certificate_authenticates() {
    let s = stack();
    let mut config = PgConfig {
        user: s.get("SECURE_PG_CERT_USER"),
        // `cert` authentication asks for no password.
        password: Secret::new("unused"),
        ..s.postgres()
    };
    let without = refused(&config).await;
    assert!(without.contains("DB_SSLCERT"), "{without}");
    config.tls.client_cert = Some(s.path("SECURE_CLIENT_CERT"));
    config.tls.client_key = Some(s.path("SECURE_CLIENT_KEY"));
    assert!(connects_encrypted(&config).await);
}

#[tokio::test]
async fn a_wrong_password_names_the_setting_not_the_value() {
    let config = PgConfig {
        password: Secret::new("WRONG-pw-4c1d"),
        ..stack().postgres()
    };
    let e = refused(&config).await;
    assert!(e.contains("password authentication failed"), "{e}");
    assert!(e.contains("check DB_USER and DB_PASSWORD"), "{e}");
}

#[tokio::test]
async fn a_database_url_with_verify_full_connects() {
    let s = stack();
    let pg = s.postgres();
    let url = format!(
        "postgresql://{}:{}@localhost:{}/orders_db?sslmode=verify-full&sslrootcert={}",
        pg.user,
        pg.password.expose(),
        pg.port,
        s.get("SECURE_CA")
    );
    // Everything comes from the URL: the defaults would reach the shared plaintext server.
    let config = PgConfig {
        pool_size: 2,
        ..PgConfig::default()
    }
    .with_url(&Secret::new(url))
    .unwrap();
    assert_eq!(
        (config.port, config.tls.mode),
        (pg.port, SslMode::VerifyFull)
    );
    assert!(connects_encrypted(&config).await);
}

#[tokio::test]
async fn a_missing_ca_file_names_its_setting() {
    let mut config = stack().postgres();
    config.tls.root_cert = Some("/nonexistent/ca.pem".into());
    let e = PgRepository::connect(&config).await.unwrap_err();
    assert!(e.is_permanent());
    let e = e.to_string();
    assert!(
        e.contains("cannot read DB_SSLROOTCERT (/nonexistent/ca.pem)"),
        "{e}"
    );
}
