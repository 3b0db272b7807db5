//! The security settings as clap arguments, flattened into every binary that talks to the
//! brokers (`orders`, `orders-producer`), so they read the same names: the ones Kafka clients
//! use (`security.protocol` is `KAFKA_SECURITY_PROTOCOL`, and so on).

use std::path::PathBuf;

use orders_security::{Secret, resolve_secret};

use crate::config::{KafkaSecurity, SaslMechanism, SecurityProtocol};
use crate::error::KafkaError;

#[derive(Debug, Clone, clap::Args)]
pub struct KafkaSecurityArgs {
    /// How to talk to the brokers: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL (SASL over
    /// TLS).
    #[arg(long, env = "KAFKA_SECURITY_PROTOCOL", default_value = "PLAINTEXT", value_parser = parse_protocol)]
    pub kafka_security_protocol: SecurityProtocol,
    /// SASL mechanism, with SASL_*: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    #[arg(long, env = "KAFKA_SASL_MECHANISM", value_parser = parse_mechanism)]
    pub kafka_sasl_mechanism: Option<SaslMechanism>,
    /// SASL user name, with SASL_*.
    #[arg(long, env = "KAFKA_SASL_USERNAME")]
    pub kafka_sasl_username: Option<String>,
    /// SASL password, with SASL_*.
    #[arg(long, env = "KAFKA_SASL_PASSWORD", hide_env_values = true)]
    pub kafka_sasl_password: Option<Secret>,
    /// A file holding the SASL password (a mounted secret), instead of KAFKA_SASL_PASSWORD.
    #[arg(long, env = "KAFKA_SASL_PASSWORD_FILE")]
    pub kafka_sasl_password_file: Option<PathBuf>,
    /// CA certificates (PEM) that sign the brokers' certificates, with SSL or SASL_SSL
    /// (default: the system's roots). The host name in KAFKA_BROKER is always checked.
    #[arg(long, env = "KAFKA_SSL_CA_LOCATION")]
    pub kafka_ssl_ca_location: Option<PathBuf>,
}

impl KafkaSecurityArgs {
    /// The security settings, with the password read from its file when given that way.
    pub fn resolve(&self) -> Result<KafkaSecurity, KafkaError> {
        let password = resolve_secret(
            "KAFKA_SASL_PASSWORD",
            self.kafka_sasl_password.as_ref(),
            self.kafka_sasl_password_file.as_deref(),
        )
        .map_err(|e| KafkaError::Config(e.to_string()))?;
        KafkaSecurity::new(
            self.kafka_security_protocol,
            self.kafka_sasl_mechanism,
            self.kafka_sasl_username.clone(),
            password,
            self.kafka_ssl_ca_location.clone(),
        )
    }
}

fn parse_protocol(s: &str) -> Result<SecurityProtocol, String> {
    SecurityProtocol::parse(s).ok_or_else(|| {
        let all = SecurityProtocol::ALL.map(SecurityProtocol::as_str);
        format!("one of: {}", all.join(", "))
    })
}

fn parse_mechanism(s: &str) -> Result<SaslMechanism, String> {
    SaslMechanism::parse(s).ok_or_else(|| {
        let all = SaslMechanism::ALL.map(SaslMechanism::as_str);
        format!(
            "one of: {} (GSSAPI and OAUTHBEARER are not supported)",
            all.join(", ")
        )
    })
}
