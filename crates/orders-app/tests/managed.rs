#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The real binaries against managed-service set-ups (`scripts/secure-up.sh`): `orders` ingests
//! from SASL_SSL (SCRAM-SHA-512, verified TLS) into a TLS-only PostgreSQL (`verify-full`) with
//! only settings changed and both passwords read from files; a wrong Kafka password is
//! reported once with the setting to check, not retried in a storm; a refused PostgreSQL
//! connection ends the start at once; no secret shows in `--help`, `Debug`, logs or errors.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use orders_app::Cli;
use orders_postgres::testing::{SecureStack, create_test_database_on};

/// This build's `orders-producer` (a bin of another package, built by `cargo test --workspace`
/// but not by `-p orders-app`): built when missing or older than these settings.
fn producer_bin() -> String {
    static BUILT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = Path::new(env!("CARGO_BIN_EXE_orders")).parent().unwrap();
            let bin = dir.join("orders-producer");
            let current = Command::new(&bin).arg("--help").output().is_ok_and(|o| {
                String::from_utf8_lossy(&o.stdout).contains("KAFKA_SASL_PASSWORD_FILE")
            });
            if !current {
                let status = Command::new(option_env!("CARGO").unwrap_or("cargo"))
                    .args(["build", "--bin", "orders-producer"])
                    .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
                    .status()
                    .unwrap();
                assert!(status.success(), "cargo build --bin orders-producer failed");
            }
            bin.display().to_string()
        })
        .clone()
}

/// A scratch directory (no config.env above it) for a binary's working directory and logs.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "orders-managed-{name}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `bin` with none of the settings the test run's environment may carry (the justfile exports
/// `DB_*` and `KAFKA_*`), run in `dir`.
fn command(bin: &str, dir: &Path) -> Command {
    let mut c = Command::new(bin);
    for (k, _) in std::env::vars() {
        if k.starts_with("DB_") || k.starts_with("KAFKA_") || k.starts_with("DATABASE_URL") {
            c.env_remove(k);
        }
    }
    c.current_dir(dir).env("RUST_LOG", "info");
    c
}

/// The settings of the TLS-only PostgreSQL (`verify-full`, password from its file).
fn secure_db_env(c: &mut Command, s: &SecureStack, dbname: &str) {
    c.env("DB_HOST", s.get("SECURE_PG_HOST"))
        .env("DB_PORT", s.get("SECURE_PG_PORT"))
        .env("DB_USER", s.get("SECURE_PG_USER"))
        .env("DB_PASSWORD_FILE", s.get("SECURE_PG_PASSWORD_FILE"))
        .env("DB_NAME", dbname)
        .env("DB_SSLMODE", "verify-full")
        .env("DB_SSLROOTCERT", s.get("SECURE_CA"));
}

/// SASL_SSL with SCRAM-SHA-512 (password from its file), or `password_file` instead.
fn sasl_env(
    c: &mut Command,
    s: &SecureStack,
    topic: &str,
    tls: bool,
    password_file: Option<&Path>,
) {
    let file = password_file.map_or_else(
        || s.get("SECURE_KAFKA_SCRAM512_PASSWORD_FILE"),
        |p| p.display().to_string(),
    );
    c.env("KAFKA_TOPIC", topic)
        .env("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
        .env("KAFKA_SASL_USERNAME", s.get("SECURE_KAFKA_SCRAM512_USER"))
        .env("KAFKA_SASL_PASSWORD_FILE", file);
    if tls {
        c.env("KAFKA_BROKER", s.get("SECURE_KAFKA_SASL_TLS"))
            .env("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
            .env("KAFKA_SSL_CA_LOCATION", s.get("SECURE_CA"));
    } else {
        c.env("KAFKA_BROKER", s.get("SECURE_KAFKA_SASL"))
            .env("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT");
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Every secret of the secure stack, and `extra`, is absent from `text`.
fn assert_no_secret(s: &SecureStack, text: &str, extra: &[&str]) {
    let stack = [
        "SECURE_PG_PASSWORD_FILE",
        "SECURE_KAFKA_SCRAM256_PASSWORD_FILE",
        "SECURE_KAFKA_SCRAM512_PASSWORD_FILE",
    ]
    .map(|k| s.secret(k).expose().to_owned());
    for secret in stack
        .iter()
        .map(String::as_str)
        .chain(extra.iter().copied())
    {
        assert!(!text.contains(secret), "a secret is in:\n{text}");
    }
}

async fn wait_for_order(base: &str, uid: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/order/{uid}")).await
            && r.status() == 200
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "order {uid} not served within 90 s; log:\n{}",
            read_log(log)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Kafka over TLS only (`SSL`), through the stunnel in front of a plain tansu.
fn ssl_env(c: &mut Command, s: &SecureStack, topic: &str) {
    c.env("KAFKA_TOPIC", topic)
        .env("KAFKA_BROKER", s.get("SECURE_KAFKA_TLS"))
        .env("KAFKA_SECURITY_PROTOCOL", "SSL")
        .env("KAFKA_SSL_CA_LOCATION", s.get("SECURE_CA"));
}

#[tokio::test]
async fn the_service_ingests_over_sasl_ssl_into_tls_postgres_with_only_settings_changed() {
    let s = SecureStack::load();
    ingests_with(&s, "sasl-ssl", &|c: &mut Command, topic: &str| {
        sasl_env(c, &s, topic, true, None);
    })
    .await;
}

#[tokio::test]
async fn the_service_ingests_over_ssl_into_tls_postgres() {
    let s = SecureStack::load();
    ingests_with(&s, "ssl", &|c: &mut Command, topic: &str| {
        ssl_env(c, &s, topic)
    })
    .await;
}

/// `orders` and `orders-producer` with `kafka` applied to both (and the TLS-only PostgreSQL):
/// six orders go in and are served.
async fn ingests_with(s: &SecureStack, name: &str, kafka: &dyn Fn(&mut Command, &str)) {
    let db = create_test_database_on(s.postgres()).await;
    let topic = format!(
        "test-managed-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let dir = scratch(name);
    let log = dir.join("orders.log");
    let port = common::free_port();
    let mut orders = command(env!("CARGO_BIN_EXE_orders"), &dir);
    secure_db_env(&mut orders, s, &db.dbname);
    kafka(&mut orders, &topic);
    let _service = common::Service(
        orders
            .env("CREATE_TOPIC", "true")
            .env("HTTP_HOST", "127.0.0.1")
            .env("HTTP_PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");

    // The producer, with the same settings, sends the reference order and five more.
    let deadline = Instant::now() + Duration::from_secs(60);
    let out = loop {
        let mut producer = command(&producer_bin(), &dir);
        kafka(&mut producer, &topic);
        let out = producer
            .args(["--count", "5", "--prefix", "managed-", "--wait-secs", "5"])
            .output()
            .unwrap();
        // The service creates the topic once it is connected.
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "orders-producer: {stdout}\n{stderr}");
    assert!(stdout.contains("6 messages in"), "{stdout}");
    assert_no_secret(s, &format!("{stdout}{stderr}"), &[]);

    wait_for_order(&base, "b563feb7b2b84b6test", &log).await;
    wait_for_order(&base, "managed-4", &log).await;
    let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
    let body = ready.text().await.unwrap();
    assert!(body.contains(r#""status":"ready""#), "{body}");

    // What the service stored went through the TLS connection.
    let sql = orders_postgres::testing::sql_client(&db).await;
    let n: i64 = sql
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 6);
    let ssl: bool = sql
        .query_one(
            "SELECT bool_and(ssl) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)
             WHERE datname = current_database() AND application_name = 'orders'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "every connection of the service is encrypted");
    assert_no_secret(s, &read_log(&log), &[]);
}

#[tokio::test]
async fn a_wrong_kafka_password_is_reported_once_with_the_setting_not_retried_in_a_storm() {
    let s = SecureStack::load();
    let db = create_test_database_on(s.postgres()).await;
    let dir = scratch("wrong-password");
    let wrong = "wrong-pw-8d1e0c";
    let pw_file = dir.join("kafka-password");
    std::fs::write(&pw_file, format!("{wrong}\n")).unwrap();
    let log = dir.join("orders.log");
    let port = common::free_port();
    let mut orders = command(env!("CARGO_BIN_EXE_orders"), &dir);
    secure_db_env(&mut orders, &s, &db.dbname);
    sasl_env(&mut orders, &s, "orders", false, Some(&pw_file));
    let service = common::Service(
        orders
            .env("HTTP_HOST", "127.0.0.1")
            .env("HTTP_PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");

    // Reads are served meanwhile; /readyz says what is wrong with the broker.
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        if let Ok(r) = reqwest::get(format!("{base}/readyz")).await {
            let body = r.text().await.unwrap();
            if body.contains("check KAFKA_SASL_USERNAME") {
                break body;
            }
        }
        assert!(Instant::now() < deadline, "log:\n{}", read_log(&log));
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(body.contains(r#""status":"degraded""#), "{body}");
    // Long enough for a storm: the old client retried for 10 s, then every 2 s.
    tokio::time::sleep(Duration::from_secs(8)).await;
    drop(service);
    let text = read_log(&log);
    let refusals = text.matches("Kafka refused the connection").count();
    let attempts = text.matches("Failed to connect to broker").count();
    assert_eq!(
        (refusals, attempts),
        (1, 1),
        "one login attempt in 8 s:\n{text}"
    );
    assert!(
        text.contains("the broker refused the SASL login: check KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD and KAFKA_SASL_MECHANISM"),
        "{text}"
    );
    assert!(
        text.contains(&s.get("SECURE_KAFKA_SASL")),
        "names the endpoint:\n{text}"
    );
    assert_no_secret(&s, &format!("{text}{body}"), &[wrong]);

    // The producer gives up at once instead of waiting out --wait-secs.
    let bin = producer_bin();
    let started = Instant::now();
    let mut producer = command(&bin, &dir);
    sasl_env(&mut producer, &s, "orders", true, Some(&pw_file));
    let out = producer.args(["--wait-secs", "60"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(10), "{stderr}");
    assert!(stderr.contains("check KAFKA_SASL_USERNAME"), "{stderr}");
    assert_no_secret(&s, &stderr, &[wrong]);
}

#[tokio::test]
async fn a_refused_postgres_connection_ends_the_start_at_once_with_the_setting() {
    let s = SecureStack::load();
    let dir = scratch("refused");
    // sslmode=disable against a server with hostssl lines only, through DATABASE_URL.
    let password = s.secret("SECURE_PG_PASSWORD_FILE");
    let url = format!(
        "postgres://postgres:{}@localhost:{}/orders_db?sslmode=disable",
        password.expose(),
        s.get("SECURE_PG_PORT")
    );
    let started = Instant::now();
    let out = command(env!("CARGO_BIN_EXE_orders"), &dir)
        .env("DATABASE_URL", &url)
        .env("DB_STARTUP_TIMEOUT_SECS", "30")
        .arg("migrate")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "not retried for DB_STARTUP_TIMEOUT_SECS: {stderr}"
    );
    assert!(stderr.contains("no encryption"), "{stderr}");
    assert!(stderr.contains("set DB_SSLMODE to require"), "{stderr}");
    assert!(
        stderr.contains("localhost:") && stderr.contains("sslmode=disable"),
        "{stderr}"
    );
    assert_no_secret(&s, &stderr, &[]);

    // The same URL with verify-full works.
    let url = url.replace(
        "sslmode=disable",
        &format!("sslmode=verify-full&sslrootcert={}", s.get("SECURE_CA")),
    );
    let out = command(env!("CARGO_BIN_EXE_orders"), &dir)
        .env("DATABASE_URL", &url)
        .arg("migrate")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("sslmode=verify-full"), "{stdout}");
    assert_no_secret(&s, &stdout, &[]);
}

#[test]
fn secrets_never_reach_help_debug_or_setting_errors() {
    let (db_pw, url_pw, kafka_pw) = ("db-S3CRET-1", "url-S3CRET-2", "kafka-S3CRET-3");
    let url = format!("postgres://app:{url_pw}@db.example.com/orders?sslmode=verify-full");
    let dir = scratch("help");
    for bin in [env!("CARGO_BIN_EXE_orders").to_owned(), producer_bin()] {
        let out = command(&bin, &dir)
            .env("DB_PASSWORD", db_pw)
            .env("DATABASE_URL", &url)
            .env("KAFKA_SASL_PASSWORD", kafka_pw)
            .arg("--help")
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success());
        assert!(help.contains("KAFKA_SASL_PASSWORD_FILE"), "{help}");
        for secret in [db_pw, url_pw, kafka_pw] {
            assert!(
                !help.contains(secret),
                "{bin} --help shows a secret:\n{help}"
            );
        }
    }

    // Debug of the parsed settings and of the configurations made from them.
    let cli = Cli::try_parse_from([
        "orders",
        "--db-password",
        db_pw,
        "--database-url",
        &url,
        "--kafka-security-protocol",
        "SASL_SSL",
        "--kafka-sasl-mechanism",
        "PLAIN",
        "--kafka-sasl-username",
        "u",
        "--kafka-sasl-password",
        kafka_pw,
    ])
    .unwrap();
    // DB_PASSWORD and DATABASE_URL at once are fine: the URL's password wins.
    let pg = cli.settings.postgres().unwrap();
    assert_eq!(pg.password.expose(), url_pw);
    let kafka = cli.settings.kafka().unwrap();
    for text in [
        format!("{cli:?}"),
        format!("{pg:?}"),
        format!("{kafka:?}"),
        pg.display(),
    ] {
        for secret in [db_pw, url_pw, kafka_pw] {
            assert!(!text.contains(secret), "{text}");
        }
    }

    // A secret and its _FILE at once: refused, named, not shown.
    let out = command(&producer_bin(), &dir)
        .env("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
        .env("KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
        .env("KAFKA_SASL_USERNAME", "u")
        .env("KAFKA_SASL_PASSWORD", kafka_pw)
        .env("KAFKA_SASL_PASSWORD_FILE", "/run/secrets/kafka")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("KAFKA_SASL_PASSWORD and KAFKA_SASL_PASSWORD_FILE are both set"),
        "{stderr}"
    );
    assert!(!stderr.contains(kafka_pw), "{stderr}");
}
