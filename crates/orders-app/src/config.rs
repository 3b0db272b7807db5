//! Settings: flags, environment variables and an optional `config.env`, in that order of
//! precedence. `orders --help` lists every one with its variable and default.

use std::time::Duration;

use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};
use orders_domain::{RejectReason, UnknownFields};
use orders_kafka::KafkaSecurityArgs;
use orders_postgres::SslMode;
use orders_security::{Secret, resolve_secret};

#[derive(Debug, Parser)]
#[command(
    name = "orders",
    version,
    about = "Order ingestion service: consumes orders from Kafka into PostgreSQL exactly once and serves them over HTTP.",
    after_help = "Settings are read from flags, then environment variables, then config.env (in the working directory or the nearest parent that has one). Boolean settings take true/false, yes/no, on/off or 1/0."
)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Inspect and replay rejected messages.
    #[command(subcommand)]
    Rejected(RejectedCommand),
    /// Per partition of KAFKA_TOPIC: the stored next offset, the high watermark and the lag.
    Partitions,
}

#[derive(Debug, Subcommand)]
pub enum RejectedCommand {
    /// List rejected messages: position, reason and a payload excerpt.
    List {
        /// Only this reason (see `orders rejected counts`; e.g. not_json, invalid, duplicate).
        #[arg(long, value_parser = parse_reason)]
        reason: Option<RejectReason>,
        /// Most rows to print.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Only rows with an id above this one: the next page starts after the last id shown.
        #[arg(long)]
        after_id: Option<i64>,
    },
    /// Count rejected messages by reason.
    Counts,
    /// Re-ingest stored payloads with the current rules: those now valid become orders (and
    /// leave the rejected table) in one transaction; the others stay as they are.
    Replay {
        #[arg(long, value_parser = parse_reason)]
        reason: Option<RejectReason>,
        /// The policy for unknown fields to replay with (default: UNKNOWN_FIELDS). `keep` turns
        /// not_order rows that failed only on unknown fields into orders.
        #[arg(long, value_parser = parse_unknown_fields)]
        unknown_fields: Option<UnknownFields>,
    },
}

/// Settings that cannot be used as given. Names the setting, never a secret's value.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Secret(#[from] orders_security::SecretError),
    #[error(transparent)]
    Postgres(#[from] orders_postgres::PgError),
    #[error(transparent)]
    Kafka(#[from] orders_kafka::KafkaError),
}

fn parse_sslmode(s: &str) -> Result<SslMode, String> {
    SslMode::parse(s).ok_or_else(|| {
        let all: Vec<_> = SslMode::ALL.iter().map(|m| m.as_str()).collect();
        format!("one of: {}", all.join(", "))
    })
}

fn parse_reason(s: &str) -> Result<RejectReason, String> {
    RejectReason::parse(s).ok_or_else(|| {
        let all: Vec<_> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
        format!("unknown reason {s:?}; one of: {}", all.join(", "))
    })
}

fn parse_unknown_fields(s: &str) -> Result<UnknownFields, String> {
    UnknownFields::parse(s).ok_or_else(|| format!("unknown policy {s:?}; one of: reject, keep"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// PostgreSQL host.
    #[arg(long, env = "DB_HOST", default_value = "localhost")]
    pub db_host: String,
    /// PostgreSQL port.
    #[arg(long, env = "DB_PORT", default_value_t = 5432)]
    pub db_port: u16,
    /// PostgreSQL user.
    #[arg(long, env = "DB_USER", default_value = "postgres")]
    pub db_user: String,
    /// PostgreSQL password (when neither it nor DB_PASSWORD_FILE is set: the local stack's,
    /// `postgres`).
    #[arg(long, env = "DB_PASSWORD", hide_env_values = true)]
    pub db_password: Option<Secret>,
    /// A file holding the PostgreSQL password (a mounted secret), instead of DB_PASSWORD.
    #[arg(long, env = "DB_PASSWORD_FILE")]
    pub db_password_file: Option<PathBuf>,
    /// PostgreSQL database.
    #[arg(long, env = "DB_NAME", default_value = "orders_db")]
    pub db_name: String,
    /// TLS to PostgreSQL, as libpq's sslmode: disable, prefer (TLS if offered), require
    /// (TLS, certificate not checked), verify-ca (signed by DB_SSLROOTCERT), verify-full (and
    /// naming DB_HOST).
    #[arg(long, env = "DB_SSLMODE", default_value = "prefer", value_parser = parse_sslmode)]
    pub db_sslmode: SslMode,
    /// CA certificates (PEM) that sign the server's certificate; unset or `system`: the
    /// system's roots. With prefer or require it makes libpq (and this service) check the chain.
    #[arg(long, env = "DB_SSLROOTCERT")]
    pub db_sslrootcert: Option<PathBuf>,
    /// Client certificate (PEM) for certificate authentication, with DB_SSLKEY.
    #[arg(long, env = "DB_SSLCERT")]
    pub db_sslcert: Option<PathBuf>,
    /// Private key (PEM) of DB_SSLCERT.
    #[arg(long, env = "DB_SSLKEY")]
    pub db_sslkey: Option<PathBuf>,
    /// A libpq URL (postgres://user:password@host:port/dbname?sslmode=…&sslrootcert=…),
    /// instead of DB_HOST, DB_PORT, DB_USER, DB_PASSWORD and DB_NAME: what it sets wins, what
    /// it leaves out comes from them.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret>,
    /// A file holding DATABASE_URL (a mounted secret).
    #[arg(long, env = "DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,
    /// Connections in the PostgreSQL pool.
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_pool_size: u32,
    /// Seconds to keep retrying the database at start-up before giving up (a refusal waiting
    /// cannot fix, such as a password, a certificate or pg_hba.conf, ends the start at once).
    #[arg(long, env = "DB_STARTUP_TIMEOUT_SECS", default_value_t = 30)]
    pub db_startup_timeout_secs: u64,
    /// Longest a statement may run, in seconds (PostgreSQL's statement_timeout); a call that
    /// gets no answer 5 s past it drops its connection and is retried.
    #[arg(long, env = "DB_STATEMENT_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub db_statement_timeout_secs: u64,

    /// Kafka bootstrap broker(s), comma-separated host:port.
    #[arg(long, env = "KAFKA_BROKER", default_value = "localhost:9092")]
    pub kafka_broker: String,
    /// Topic to consume orders from.
    #[arg(long, env = "KAFKA_TOPIC", default_value = "orders")]
    pub kafka_topic: String,
    #[command(flatten)]
    pub kafka_security: KafkaSecurityArgs,
    /// Create the topic when missing (development; off in production, where a missing topic is an error and a retry).
    #[arg(long, env = "CREATE_TOPIC", default_value_t = false, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub create_topic: bool,
    /// Partitions of a topic created by --create-topic.
    #[arg(long, env = "KAFKA_PARTITIONS", default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=1024))]
    pub kafka_partitions: i32,
    /// Most bytes per fetch (per partition).
    #[arg(long, env = "FETCH_MAX_BYTES", default_value_t = 4 * 1024 * 1024, value_parser = clap::value_parser!(i32).range(1024..))]
    pub fetch_max_bytes: i32,
    /// Longest wait for data in one fetch, in milliseconds.
    #[arg(long, env = "FETCH_MAX_WAIT_MS", default_value_t = 500)]
    pub fetch_max_wait_ms: u64,
    /// Messages larger than this are rejected as oversize before parsing.
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = 1024 * 1024)]
    pub max_message_bytes: usize,
    /// Rejected messages up to this size are stored whole (so raising MAX_MESSAGE_BYTES and
    /// replaying works); larger ones as their first 4 KiB with their size and SHA-256.
    #[arg(long, env = "REJECTED_PAYLOAD_MAX_BYTES", default_value_t = orders_domain::ingest::DEFAULT_REJECTED_PAYLOAD_MAX_BYTES)]
    pub rejected_payload_max_bytes: usize,
    /// Fields the order model does not know, at any depth: keep (store them and serve them back
    /// in place) or reject (the message is rejected as not_order).
    #[arg(long, env = "UNKNOWN_FIELDS", default_value = "keep", value_parser = parse_unknown_fields)]
    pub unknown_fields: UnknownFields,
    /// Consume the topic (turn off to serve reads only).
    #[arg(long, env = "CONSUME", default_value_t = true, action = clap::ArgAction::Set,
          value_parser = BoolishValueParser::new())]
    pub consume: bool,
    /// Replicas share the topic's partitions through leases in PostgreSQL: seconds a replica
    /// keeps its partitions after its last heartbeat (one every fifth of it). A replica that
    /// dies without stopping (kill -9, host lost) has its partitions taken over after this.
    #[arg(long, env = "LEASE_TTL_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub lease_ttl_secs: u64,

    /// Address to listen on.
    #[arg(long, env = "HTTP_HOST", default_value = "0.0.0.0")]
    pub http_host: String,
    /// Port to listen on (0 = any free port).
    #[arg(long, env = "HTTP_PORT", default_value_t = 8081)]
    pub http_port: u16,
    /// HTTP worker threads (0 = one per core).
    #[arg(long, env = "HTTP_WORKERS", default_value_t = 0)]
    pub http_workers: usize,

    /// Most orders kept in the cache (FIFO eviction).
    #[arg(long, env = "CACHE_CAPACITY", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub cache_capacity: u64,

    // The read path's bounds (issue 14: reads must not starve ingestion nor use unbounded
    // memory).
    /// Connections in the PostgreSQL pool for reads (cache misses, /orders, warm-up, readiness); DB_POOL_SIZE is ingestion's.
    #[arg(long, env = "DB_READ_POOL_SIZE", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_read_pool_size: u32,
    /// Most cache misses read from PostgreSQL at once; one more gets 503 with Retry-After.
    #[arg(long, env = "MAX_CONCURRENT_MISSES", default_value_t = orders_domain::query::DEFAULT_MAX_CONCURRENT_MISSES as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_concurrent_misses: u64,
    /// Most bytes of orders in the cache: their JSON, or their messages until first read (default: 1/8 of the memory limit, at most 1 GiB).
    #[arg(long, env = "CACHE_MAX_BYTES", default_value_t = default_cache_max_bytes(), value_parser = clap::value_parser!(u64).range(1..))]
    pub cache_max_bytes: u64,

    /// Cache the orders other replicas store, as they commit (PostgreSQL LISTEN/NOTIFY), so that
    /// their first read here is a hit too.
    #[arg(long, env = "CACHE_SYNC", default_value_t = true, action = clap::ArgAction::Set)]
    pub cache_sync: bool,

    /// Seconds that shutdown may take (in-flight requests, the current batch) before exiting anyway.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECS", default_value_t = 10)]
    pub shutdown_timeout_secs: u64,

    /// Log filter (e.g. info, debug, orders_kafka=debug).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl Settings {
    /// The PostgreSQL settings: `DB_*`, then what `DATABASE_URL` says; secrets from their
    /// `_FILE`s.
    pub fn postgres(&self) -> Result<orders_postgres::PgConfig, SettingsError> {
        let password = resolve_secret(
            "DB_PASSWORD",
            self.db_password.as_ref(),
            self.db_password_file.as_deref(),
        )?
        .unwrap_or_else(|| Secret::new("postgres"));
        let config = orders_postgres::PgConfig {
            host: self.db_host.clone(),
            port: self.db_port,
            user: self.db_user.clone(),
            password,
            dbname: self.db_name.clone(),
            pool_size: self.db_pool_size as usize,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(self.db_statement_timeout_secs),
            tls: orders_postgres::PgTls {
                mode: self.db_sslmode,
                root_cert: self.db_sslrootcert.clone(),
                client_cert: self.db_sslcert.clone(),
                client_key: self.db_sslkey.clone(),
                require_channel_binding: false,
            },
        };
        let url = resolve_secret(
            "DATABASE_URL",
            self.database_url.as_ref(),
            self.database_url_file.as_deref(),
        )?;
        Ok(match url {
            Some(url) => config.with_url(&url)?,
            None => config,
        })
    }

    /// The ingest use case with this configuration's limits.
    pub fn ingest(
        &self,
        repo: std::sync::Arc<dyn orders_domain::OrderRepository>,
        cache: std::sync::Arc<dyn orders_domain::OrderCache>,
    ) -> orders_domain::IngestService {
        orders_domain::IngestService::new(repo, cache)
            .with_max_message_bytes(self.max_message_bytes)
            .with_rejected_payload_max_bytes(self.rejected_payload_max_bytes)
            .with_unknown_fields(self.unknown_fields)
    }

    pub fn kafka(&self) -> Result<orders_kafka::KafkaConfig, SettingsError> {
        Ok(orders_kafka::KafkaConfig {
            brokers: self
                .kafka_broker
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            topic: self.kafka_topic.clone(),
            fetch_max_bytes: self.fetch_max_bytes,
            fetch_max_wait: Duration::from_millis(self.fetch_max_wait_ms),
            create_topic_partitions: self.create_topic.then_some(self.kafka_partitions),
            security: self.kafka_security.resolve()?,
            ..orders_kafka::KafkaConfig::default()
        })
    }

    /// Defaults plus the environment, for tests and embedding (no flags).
    pub fn from_env() -> Result<Self, clap::Error> {
        Ok(Cli::try_parse_from(["orders"])?.settings)
    }
}

/// `CACHE_MAX_BYTES`'s default: an eighth of the memory this process may use (the cgroup's
/// limit when there is one, else the machine's total), at most 1 GiB; 256 MiB when neither
/// can be read. An eighth leaves room for the JSON's overhead in the map (about 10 %), the
/// rest of the service, and PostgreSQL or the broker on the same machine.
pub fn default_cache_max_bytes() -> u64 {
    const CAP: u64 = 1 << 30;
    const FALLBACK: u64 = 256 << 20;
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        let kib = s.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
        let kib: u64 = kib.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib * 1024)
    });
    // cgroup v2, then v1; "max" (or v1's huge number) means no limit.
    let limit = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok()?.trim().parse::<u64>().ok());
    match (total, limit) {
        (Some(t), Some(l)) => (t.min(l) / 8).min(CAP),
        (Some(m), None) | (None, Some(m)) => (m / 8).min(CAP),
        (None, None) => FALLBACK,
    }
}

impl Settings {
    /// The pool for reads: the same database as [`Self::postgres`], its own size.
    pub fn postgres_read(&self) -> Result<orders_postgres::PgConfig, SettingsError> {
        Ok(orders_postgres::PgConfig {
            pool_size: self.db_read_pool_size as usize,
            ..self.postgres()?
        })
    }
}
