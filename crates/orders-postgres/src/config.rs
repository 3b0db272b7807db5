use std::path::PathBuf;
use std::time::Duration;

use orders_security::{Secret, TlsFiles, Verify};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::PgError;

/// libpq's `sslmode`, with libpq's meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Plaintext only.
    Disable,
    /// TLS when the server offers it, plaintext otherwise; the certificate is not checked
    /// (unless a root certificate is given, as in libpq). libpq's default.
    #[default]
    Prefer,
    /// TLS or nothing; the certificate is not checked (unless a root certificate is given).
    Require,
    /// TLS, and the certificate must chain to the root certificate (or the system's roots).
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host connected to.
    VerifyFull,
}

impl SslMode {
    pub const ALL: [Self; 5] = [
        Self::Disable,
        Self::Prefer,
        Self::Require,
        Self::VerifyCa,
        Self::VerifyFull,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// TLS to PostgreSQL: `DB_SSLMODE`, `DB_SSLROOTCERT`, `DB_SSLCERT`, `DB_SSLKEY`.
#[derive(Debug, Clone, Default)]
pub struct PgTls {
    pub mode: SslMode,
    /// CA certificates (PEM) to trust; unset (or `system`) means the system's roots.
    pub root_cert: Option<PathBuf>,
    /// A client certificate and key (PEM), for `cert` authentication. Both or neither.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// The server must prove it holds the certificate's key inside the SCRAM exchange
    /// (`channel_binding=require` in a `DATABASE_URL`).
    pub require_channel_binding: bool,
}

/// Longest a session may sit idle inside a transaction. The repository's transactions never
/// wait on anything but the server, so only a stalled client gets there.
const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how to connect.
#[derive(Clone)]
pub struct PgConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Secret,
    pub dbname: String,
    /// Connections in the pool (ingestion uses one per partition at a time, reads share it).
    pub pool_size: usize,
    /// How long to wait for a connection (from the pool or a new one) before giving up.
    pub connect_timeout: Duration,
    /// Server-side `statement_timeout` of every statement; a repository call also gives up
    /// (client side) a few seconds after it, see [`PgConfig::query_timeout`].
    pub statement_timeout: Duration,
    pub tls: PgTls,
}

impl std::fmt::Debug for PgConfig {
    // The password stays out of logs (Secret's Debug would redact it; it is left out whole).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("dbname", &self.dbname)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl Default for PgConfig {
    fn default() -> Self {
        Self {
            host: "localhost".into(),
            port: 5432,
            user: "postgres".into(),
            password: Secret::new("postgres"),
            dbname: "orders_db".into(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            tls: PgTls::default(),
        }
    }
}

/// `DATABASE_URL` query parameters this adapter understands (libpq's names).
const URL_PARAMS: &str = "sslmode, sslrootcert, sslcert, sslkey, channel_binding";

impl PgConfig {
    /// These settings with what a libpq URL (`DATABASE_URL`,
    /// `postgres://user:password@host:port/dbname?sslmode=verify-full&sslrootcert=/ca.pem`) says;
    /// what the URL leaves out stays as it is. Errors never quote the URL (it holds the
    /// password).
    pub fn with_url(mut self, url: &Secret) -> Result<Self, PgError> {
        let bad = |reason: String| PgError::Config {
            setting: "DATABASE_URL",
            reason,
        };
        let text = url.expose().trim();
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            return Err(bad(
                "expected a URL that starts with postgres:// or postgresql://".into(),
            ));
        }
        let (base, query) = text.split_once('?').unwrap_or((text, ""));
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value)
                .ok_or_else(|| bad(format!("the value of {key} is not valid percent-encoding")))?;
            match key {
                "sslmode" => {
                    self.tls.mode = SslMode::parse(&value).ok_or_else(|| {
                        bad(format!(
                            "sslmode {value:?} is not one of disable, prefer, require, verify-ca, verify-full"
                        ))
                    })?;
                }
                "sslrootcert" => self.tls.root_cert = Some(value.into()),
                "sslcert" => self.tls.client_cert = Some(value.into()),
                "sslkey" => self.tls.client_key = Some(value.into()),
                "channel_binding" => {
                    self.tls.require_channel_binding = match value.as_str() {
                        "require" => true,
                        "prefer" | "disable" => false,
                        _ => {
                            return Err(bad(format!(
                                "channel_binding {value:?} is not one of disable, prefer, require"
                            )));
                        }
                    }
                }
                _ => {
                    return Err(bad(format!(
                        "parameter {key:?} is not supported (supported: {URL_PARAMS})"
                    )));
                }
            }
        }
        // tokio-postgres parses the rest (percent-decoding included); its errors name the
        // part, not the value.
        let parsed: tokio_postgres::Config = base
            .parse()
            .map_err(|e: tokio_postgres::Error| bad(format!("not a valid URL: {e}")))?;
        match parsed.get_hosts() {
            [] => {}
            [tokio_postgres::config::Host::Tcp(host)] => self.host = host.clone(),
            [_] => return Err(bad("a Unix socket host is not supported".into())),
            _ => return Err(bad("several hosts are not supported; give one".into())),
        }
        match parsed.get_ports() {
            [] => {}
            [port] => self.port = *port,
            _ => return Err(bad("several ports are not supported; give one".into())),
        }
        if let Some(user) = parsed.get_user() {
            self.user = user.to_owned();
        }
        if let Some(password) = parsed.get_password() {
            let password = std::str::from_utf8(password)
                .map_err(|_| bad("the password is not UTF-8".into()))?;
            self.password = Secret::new(password);
        }
        if let Some(dbname) = parsed.get_dbname() {
            self.dbname = dbname.to_owned();
        }
        Ok(self)
    }

    pub(crate) fn tokio_postgres(&self) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .password(self.password.expose())
            .dbname(&self.dbname)
            .application_name("orders")
            .connect_timeout(self.connect_timeout)
            .ssl_mode(match self.tls.mode {
                SslMode::Disable => tokio_postgres::config::SslMode::Disable,
                SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
                // Verification is the TLS connector's (see `tls_connector`).
                SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                    tokio_postgres::config::SslMode::Require
                }
            })
            // The server ends a statement that runs (or waits for a lock) too long: 57014,
            // which the repository reports as transient.
            // And a session left idle inside a transaction (its process paused or hung, e.g. a
            // replica under SIGSTOP) is ended, so its row locks do not hold up the replica that
            // takes its partitions over.
            .options(format!(
                "-c statement_timeout={} -c idle_in_transaction_session_timeout={}",
                self.statement_timeout.as_millis(),
                IDLE_IN_TRANSACTION_TIMEOUT.as_millis()
            ))
            // A peer that vanished (host down, cable cut) is noticed on an idle connection
            // within about 20 s, and unacknowledged data gives up after the query timeout.
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(2)
            .tcp_user_timeout(self.query_timeout());
        if self.tls.require_channel_binding {
            c.channel_binding(tokio_postgres::config::ChannelBinding::Require);
        }
        c
    }

    /// The TLS connector for [`Self::tls`]: rustls, verifying the server as libpq's `sslmode`
    /// does. (With `disable` it is never used, and no file is read.)
    pub(crate) fn tls_connector(&self) -> Result<MakeRustlsConnect, PgError> {
        let tls = &self.tls;
        let verify = match tls.mode {
            SslMode::Disable => Verify::Nothing,
            // libpq: with a root certificate, `prefer` and `require` check the chain too.
            SslMode::Prefer | SslMode::Require if tls.root_cert.is_some() => Verify::Chain,
            SslMode::Prefer | SslMode::Require => Verify::Nothing,
            SslMode::VerifyCa => Verify::Chain,
            SslMode::VerifyFull => Verify::ChainAndHost,
        };
        let files = if tls.mode == SslMode::Disable {
            TlsFiles::default()
        } else {
            TlsFiles {
                ca: tls.root_cert.clone(),
                ca_setting: "DB_SSLROOTCERT",
                client_cert: tls.client_cert.clone(),
                client_cert_setting: "DB_SSLCERT",
                client_key: tls.client_key.clone(),
                client_key_setting: "DB_SSLKEY",
            }
        };
        Ok(MakeRustlsConnect::new(orders_security::client_config(
            verify, &files,
        )?))
    }

    /// Client-side bound on one repository call: the statement timeout plus time for the
    /// server's own cancellation to arrive first (a whole batch is several statements, but
    /// each is far below the bound).
    pub fn query_timeout(&self) -> Duration {
        self.statement_timeout + Duration::from_secs(5)
    }

    /// `user@host:port/dbname (sslmode=…)`, for messages (never the password).
    pub fn display(&self) -> String {
        format!(
            "{}@{}:{}/{} (sslmode={})",
            self.user,
            self.host,
            self.port,
            self.dbname,
            self.tls.mode.as_str()
        )
    }
}

/// `%XX` decoding of a URL query value (`+` is left alone, as libpq does).
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_sets_what_it_says_and_keeps_the_rest() {
        let base = PgConfig {
            password: Secret::new("from-db-password"),
            ..PgConfig::default()
        };
        let url = Secret::new(
            "postgresql://app%40x:p%40ss@db.example.com:6543/orders?sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20file.pem",
        );
        let c = base.clone().with_url(&url).unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.user.as_str(), c.dbname.as_str()),
            ("db.example.com", 6543, "app@x", "orders")
        );
        assert_eq!(c.password.expose(), "p@ss");
        assert_eq!(c.tls.mode, SslMode::VerifyFull);
        assert_eq!(c.tls.root_cert, Some(PathBuf::from("/etc/ca file.pem")));

        // No password in the URL: DB_PASSWORD (or its _FILE) fills it in.
        let c = base
            .clone()
            .with_url(&Secret::new("postgres://app@db/orders"))
            .unwrap();
        assert_eq!((c.port, c.password.expose()), (5432, "from-db-password"));
    }

    #[test]
    fn url_errors_never_quote_the_url() {
        for url in [
            "mysql://u:TOPSECRET@h/db",
            "postgres://u:TOPSECRET@h/db?sslmode=sometimes",
            "postgres://u:TOPSECRET@h/db?sslpassword=x",
            "postgres://u:TOPSECRET@h:notaport/db",
            "postgres://u:TOPSECRET@h1,h2/db",
        ] {
            let e = PgConfig::default()
                .with_url(&Secret::new(url))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("DATABASE_URL: "), "{e}");
            assert!(!e.contains("TOPSECRET"), "{e}");
        }
    }

    #[test]
    fn debug_and_display_leave_the_password_out() {
        let c = PgConfig {
            password: Secret::new("TOPSECRET"),
            ..PgConfig::default()
        };
        assert!(!format!("{c:?}").contains("TOPSECRET"));
        assert!(!c.display().contains("TOPSECRET"));
    }
}
