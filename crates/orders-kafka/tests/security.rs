#![allow(clippy::unwrap_used, clippy::expect_used)]
//! TLS and SASL against real brokers of their own (`scripts/secure-up.sh`): tansu behind a TLS
//! terminator (stunnel) advertising the TLS port, tansu with `--authentication` (SCRAM users
//! made with `tansu user create`), and both at once. What is produced is fetched back; a
//! refusal is quick, names the setting to check and never shows the password.

mod common;

use std::time::{Duration, Instant};

use orders_domain::OrderSource;
use orders_kafka::{
    KafkaConfig, KafkaError, KafkaSecurity, KafkaSource, OrderProducer, SaslMechanism,
    SecurityProtocol,
};
use orders_postgres::testing::SecureStack;
use orders_security::Secret;

fn config(broker: String, topic: &str, security: KafkaSecurity) -> KafkaConfig {
    KafkaConfig {
        brokers: vec![broker],
        security,
        ..common::kafka_config("", topic)
    }
}

fn tls(s: &SecureStack, ca: &str) -> KafkaSecurity {
    KafkaSecurity::new(SecurityProtocol::Ssl, None, None, None, Some(s.path(ca))).unwrap()
}

/// SCRAM with the user made for `mechanism` (`orders256` or `orders512`).
fn scram(
    s: &SecureStack,
    protocol: SecurityProtocol,
    mechanism: SaslMechanism,
    password: Option<Secret>,
) -> KafkaSecurity {
    let (user, file) = match mechanism {
        SaslMechanism::ScramSha256 => (
            "SECURE_KAFKA_SCRAM256_USER",
            "SECURE_KAFKA_SCRAM256_PASSWORD_FILE",
        ),
        _ => (
            "SECURE_KAFKA_SCRAM512_USER",
            "SECURE_KAFKA_SCRAM512_PASSWORD_FILE",
        ),
    };
    KafkaSecurity::new(
        protocol,
        Some(mechanism),
        Some(s.get(user)),
        Some(password.unwrap_or_else(|| s.secret(file))),
        protocol.tls().then(|| s.path("SECURE_CA")),
    )
    .unwrap()
}

/// Produces three messages over `config`'s connection (creating the topic) and reads them back
/// through a [`KafkaSource`] with the same settings.
async fn round_trip(config: &KafkaConfig) {
    let mut producer = OrderProducer::connect(config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let values: Vec<Option<Vec<u8>>> = (0..3).map(|i| Some(format!("m{i}").into_bytes())).collect();
    producer.send(values.clone()).await.unwrap();
    let source = KafkaSource::connect(config.clone()).await.unwrap();
    let mut got = Vec::new();
    for p in source.partitions().await.unwrap() {
        let mut offset = 0;
        loop {
            let batch = source.fetch(p, offset).await.unwrap();
            got.extend(
                batch
                    .records
                    .into_iter()
                    .map(|r| r.value.map(|v| v.to_vec())),
            );
            offset = batch.next_offset;
            if offset >= batch.high_watermark {
                break;
            }
        }
    }
    got.sort();
    assert_eq!(got, values);
}

/// The connection error for `config`, with how long it took.
async fn refused(config: &KafkaConfig) -> (KafkaError, Duration) {
    let started = Instant::now();
    let e = KafkaSource::connect(config.clone())
        .await
        .expect_err("this connection must be refused");
    (e, started.elapsed())
}

#[tokio::test]
async fn ssl_verifies_the_broker_and_carries_messages() {
    let s = SecureStack::load();
    let topic = common::unique_topic("tls");
    round_trip(&config(
        s.get("SECURE_KAFKA_TLS"),
        &topic,
        tls(&s, "SECURE_CA"),
    ))
    .await;
}

#[tokio::test]
async fn ssl_refuses_a_broker_certificate_from_another_ca() {
    let s = SecureStack::load();
    let c = config(
        s.get("SECURE_KAFKA_TLS"),
        "unused",
        tls(&s, "SECURE_OTHER_CA"),
    );
    let (e, took) = refused(&c).await;
    assert!(e.is_permanent(), "{e}");
    assert!(took < Duration::from_secs(2), "not retried: took {took:?}");
    let e = e.to_string();
    assert!(e.contains("UnknownIssuer"), "{e}");
    assert!(e.contains("check KAFKA_SSL_CA_LOCATION"), "{e}");
    assert!(
        e.contains(&s.get("SECURE_KAFKA_TLS")) && e.contains("over SSL"),
        "{e}"
    );
}

#[tokio::test]
async fn ssl_refuses_a_broker_reached_by_a_name_its_certificate_lacks() {
    let s = SecureStack::load();
    // The certificate names `localhost` only.
    let broker = s.get("SECURE_KAFKA_TLS").replace("localhost", "127.0.0.1");
    let (e, _) = refused(&config(broker, "unused", tls(&s, "SECURE_CA"))).await;
    assert!(e.is_permanent(), "{e}");
    let e = e.to_string();
    assert!(
        e.contains("certificate not valid for name \"127.0.0.1\""),
        "{e}"
    );
    assert!(
        e.contains("KAFKA_BROKER names a host the certificate holds"),
        "{e}"
    );
}

#[tokio::test]
async fn plaintext_against_a_tls_listener_says_to_use_tls() {
    let s = SecureStack::load();
    let (e, _) = refused(&config(
        s.get("SECURE_KAFKA_TLS"),
        "unused",
        KafkaSecurity::default(),
    ))
    .await;
    let e = e.to_string();
    assert!(
        e.contains("if its listener expects TLS, set KAFKA_SECURITY_PROTOCOL to SSL or SASL_SSL"),
        "{e}"
    );
}

#[tokio::test]
async fn ssl_against_a_plaintext_listener_fails_clearly() {
    let s = SecureStack::load();
    // The SASL broker's listener is plaintext.
    let (e, took) = refused(&config(
        s.get("SECURE_KAFKA_SASL"),
        "unused",
        tls(&s, "SECURE_CA"),
    ))
    .await;
    let text = e.to_string();
    assert!(text.contains("KAFKA_SECURITY_PROTOCOL"), "{text}");
    assert!(took < Duration::from_secs(5), "took {took:?}: {text}");
}

#[tokio::test]
async fn scram_sha_256_and_512_log_in_and_carry_messages() {
    let s = SecureStack::load();
    for mechanism in [SaslMechanism::ScramSha256, SaslMechanism::ScramSha512] {
        let topic = common::unique_topic("scram");
        let security = scram(&s, SecurityProtocol::SaslPlaintext, mechanism, None);
        round_trip(&config(s.get("SECURE_KAFKA_SASL"), &topic, security)).await;
    }
}

#[tokio::test]
async fn sasl_ssl_logs_in_over_a_verified_tls_connection() {
    let s = SecureStack::load();
    let topic = common::unique_topic("sasl-ssl");
    let security = scram(
        &s,
        SecurityProtocol::SaslSsl,
        SaslMechanism::ScramSha512,
        None,
    );
    round_trip(&config(s.get("SECURE_KAFKA_SASL_TLS"), &topic, security)).await;
}

#[tokio::test]
async fn a_wrong_password_is_refused_at_once_and_never_shown() {
    let s = SecureStack::load();
    for protocol in [SecurityProtocol::SaslPlaintext, SecurityProtocol::SaslSsl] {
        let broker = if protocol.tls() {
            s.get("SECURE_KAFKA_SASL_TLS")
        } else {
            s.get("SECURE_KAFKA_SASL")
        };
        let wrong = Secret::new("wrong-Pa55word-91f3");
        let security = scram(
            &s,
            protocol,
            SaslMechanism::ScramSha256,
            Some(wrong.clone()),
        );
        let c = KafkaConfig {
            // Without the patch the refusal is retried until this deadline.
            request_deadline: Duration::from_secs(10),
            ..config(broker, "unused", security)
        };
        let (e, took) = refused(&c).await;
        assert!(e.is_permanent(), "{e}");
        assert!(took < Duration::from_secs(2), "retried: took {took:?}: {e}");
        for text in [e.to_string(), format!("{e:?}"), format!("{c:?}")] {
            assert!(!text.contains(wrong.expose()), "{text}");
        }
        let e = e.to_string();
        assert!(
            e.contains("the broker refused the SASL login: check KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD and KAFKA_SASL_MECHANISM"),
            "{e}"
        );
        assert!(e.contains("(SCRAM-SHA-256 as orders256)"), "{e}");
    }
}

#[tokio::test]
async fn a_user_made_for_the_other_scram_mechanism_is_refused() {
    let s = SecureStack::load();
    // orders256's credentials, offered with SCRAM-SHA-512.
    let security = KafkaSecurity::new(
        SecurityProtocol::SaslPlaintext,
        Some(SaslMechanism::ScramSha512),
        Some(s.get("SECURE_KAFKA_SCRAM256_USER")),
        Some(s.secret("SECURE_KAFKA_SCRAM256_PASSWORD_FILE")),
        None,
    )
    .unwrap();
    let (e, _) = refused(&config(s.get("SECURE_KAFKA_SASL"), "unused", security)).await;
    assert!(e.is_permanent(), "{e}");
    assert!(e.to_string().contains("check KAFKA_SASL_USERNAME"), "{e}");
}
