use std::path::PathBuf;
use std::time::Duration;

use orders_security::Secret;

use crate::error::KafkaError;

/// How to reach the broker and read the topic.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `host:port` of one or more bootstrap brokers.
    pub brokers: Vec<String>,
    pub topic: String,
    /// Upper bound of one fetch, in bytes.
    pub fetch_max_bytes: i32,
    /// How long the broker may wait for data before answering an empty fetch.
    pub fetch_max_wait: Duration,
    /// Create the topic with this many partitions when it is missing (development only).
    pub create_topic_partitions: Option<i32>,
    /// How long one broker request may keep retrying before the error surfaces.
    pub request_deadline: Duration,
    /// TLS and SASL (plaintext by default).
    pub security: KafkaSecurity,
}

impl KafkaConfig {
    /// The longest any one broker call may take before it is abandoned as a stall (and its
    /// connection dropped): the retry deadline plus the broker's own wait in a fetch.
    pub fn call_timeout(&self) -> Duration {
        self.request_deadline + self.fetch_max_wait
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: vec!["localhost:9092".into()],
            topic: "orders".into(),
            fetch_max_bytes: 4 * 1024 * 1024,
            fetch_max_wait: Duration::from_millis(500),
            create_topic_partitions: None,
            request_deadline: Duration::from_secs(10),
            security: KafkaSecurity::default(),
        }
    }
}

/// `KAFKA_SECURITY_PROTOCOL`, with the names Kafka clients use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub const ALL: [Self; 4] = [
        Self::Plaintext,
        Self::Ssl,
        Self::SaslPlaintext,
        Self::SaslSsl,
    ];

    /// Case-insensitive, as Kafka clients read it.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "PLAINTEXT",
            Self::Ssl => "SSL",
            Self::SaslPlaintext => "SASL_PLAINTEXT",
            Self::SaslSsl => "SASL_SSL",
        }
    }

    pub fn tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    pub fn sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// `KAFKA_SASL_MECHANISM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl SaslMechanism {
    pub const ALL: [Self; 3] = [Self::Plain, Self::ScramSha256, Self::ScramSha512];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s.trim()))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// SASL credentials (`KAFKA_SASL_*`). `Debug` shows the password redacted.
#[derive(Debug, Clone)]
pub struct SaslCredentials {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: Secret,
}

/// TLS and SASL to the brokers: what `KAFKA_SECURITY_PROTOCOL` asks for, checked to fit
/// together by [`KafkaSecurity::new`].
#[derive(Debug, Clone, Default)]
pub struct KafkaSecurity {
    pub protocol: SecurityProtocol,
    /// Set exactly when the protocol is `SASL_*`.
    pub sasl: Option<SaslCredentials>,
    /// CA certificates (PEM) that sign the brokers' certificates; the system's roots when
    /// unset. Only with a TLS protocol.
    pub ca_location: Option<PathBuf>,
}

impl KafkaSecurity {
    /// The security settings, or which of them does not fit: SASL settings without a `SASL_*`
    /// protocol (or the other way round) and a CA without TLS are mistakes, not ignored.
    pub fn new(
        protocol: SecurityProtocol,
        mechanism: Option<SaslMechanism>,
        username: Option<String>,
        password: Option<Secret>,
        ca_location: Option<PathBuf>,
    ) -> Result<Self, KafkaError> {
        let bad = |reason: String| KafkaError::Config(reason);
        let p = protocol.as_str();
        if ca_location.is_some() && !protocol.tls() {
            return Err(bad(format!(
                "KAFKA_SSL_CA_LOCATION is set but KAFKA_SECURITY_PROTOCOL={p} does not use TLS (SSL or SASL_SSL do)"
            )));
        }
        let sasl = if protocol.sasl() {
            let names = SaslMechanism::ALL.map(SaslMechanism::as_str).join(", ");
            let mechanism = mechanism.ok_or_else(|| {
                bad(format!(
                    "KAFKA_SECURITY_PROTOCOL={p} needs KAFKA_SASL_MECHANISM ({names})"
                ))
            })?;
            let username = username.filter(|u| !u.is_empty()).ok_or_else(|| {
                bad(format!(
                    "KAFKA_SECURITY_PROTOCOL={p} needs KAFKA_SASL_USERNAME"
                ))
            })?;
            let password = password.ok_or_else(|| {
                bad(format!(
                    "KAFKA_SECURITY_PROTOCOL={p} needs KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE"
                ))
            })?;
            Some(SaslCredentials {
                mechanism,
                username,
                password,
            })
        } else {
            let set = [
                ("KAFKA_SASL_MECHANISM", mechanism.is_some()),
                ("KAFKA_SASL_USERNAME", username.is_some()),
                ("KAFKA_SASL_PASSWORD", password.is_some()),
            ];
            if let Some((name, _)) = set.iter().find(|(_, s)| *s) {
                return Err(bad(format!(
                    "{name} is set but KAFKA_SECURITY_PROTOCOL={p} does not use SASL (SASL_PLAINTEXT or SASL_SSL do)"
                )));
            }
            None
        };
        Ok(Self {
            protocol,
            sasl,
            ca_location,
        })
    }

    /// `SASL_SSL (SCRAM-SHA-512 as orders)`, for messages.
    pub fn describe(&self) -> String {
        match &self.sasl {
            Some(s) => format!(
                "{} ({} as {})",
                self.protocol.as_str(),
                s.mechanism.as_str(),
                s.username
            ),
            None => self.protocol.as_str().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_that_do_not_fit_are_named() {
        let err = |r: Result<KafkaSecurity, KafkaError>| r.unwrap_err().to_string();
        let pw = || Some(Secret::new("TOPSECRET"));
        let e = err(KafkaSecurity::new(
            SecurityProtocol::Plaintext,
            None,
            Some("u".into()),
            pw(),
            None,
        ));
        assert!(
            e.contains("KAFKA_SASL_USERNAME is set but KAFKA_SECURITY_PROTOCOL=PLAINTEXT"),
            "{e}"
        );
        let e = err(KafkaSecurity::new(
            SecurityProtocol::SaslSsl,
            None,
            Some("u".into()),
            pw(),
            None,
        ));
        assert!(
            e.contains("needs KAFKA_SASL_MECHANISM (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)"),
            "{e}"
        );
        let e = err(KafkaSecurity::new(
            SecurityProtocol::SaslPlaintext,
            Some(SaslMechanism::Plain),
            Some("u".into()),
            None,
            None,
        ));
        assert!(
            e.contains("KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE"),
            "{e}"
        );
        let e = err(KafkaSecurity::new(
            SecurityProtocol::SaslPlaintext,
            Some(SaslMechanism::Plain),
            Some("u".into()),
            pw(),
            Some("/ca.pem".into()),
        ));
        assert!(e.contains("KAFKA_SSL_CA_LOCATION is set"), "{e}");
        let ok = KafkaSecurity::new(
            SecurityProtocol::parse("sasl_ssl").unwrap(),
            SaslMechanism::parse("scram-sha-512"),
            Some("orders".into()),
            pw(),
            None,
        )
        .unwrap();
        assert_eq!(ok.describe(), "SASL_SSL (SCRAM-SHA-512 as orders)");
        assert!(!format!("{ok:?}").contains("TOPSECRET"));
    }
}
