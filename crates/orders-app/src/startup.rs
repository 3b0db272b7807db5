//! Wiring and lifecycle: [`Application::build`] connects, migrates and binds (port 0 in tests);
//! [`Application::run_until_stopped`] serves and consumes until told to stop, then shuts down
//! in order: stop accepting, finish in-flight requests and the current batch, close the pools.
//!
//! Two pools on the same database: one for ingestion (`DB_POOL_SIZE`), one for reads
//! (`DB_READ_POOL_SIZE`: cache misses, `/orders`, warm-up, readiness). A flood of reads of
//! unknown uids then waits on the read pool only, and ingestion never queues behind it.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use orders_cache::DashCache;
use orders_domain::{Chain, IngestService, OrderCache, OrderRepository, OrderSource, QueryService};
use orders_http::{Check, HttpConfig, HttpMetrics, HttpState, QueryCollector, Readiness};
use orders_kafka::{Assignment, Consumer, ConsumerConfig, ConsumerMetrics, KafkaSource};
use orders_postgres::{Announcement, CommitListener, PgLeases, PgRepository};
use tokio::sync::{OnceCell, watch};
use tokio::task::JoinHandle;

use crate::config::Settings;

/// A built, bound, not yet running service.
pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
    repo: PgRepository,
    read_repo: PgRepository,
    query: QueryService,
    ingest: IngestService,
    source: Arc<OnceCell<Arc<KafkaSource>>>,
    kafka: orders_kafka::KafkaConfig,
    kafka_error: Arc<std::sync::Mutex<Option<String>>>,
    consumer_metrics: ConsumerMetrics,
    /// This replica's id among the topic's consumers (partition leases, cache sync).
    member_id: String,
    assignment: Assignment,
    settings: Settings,
    shutdown_tx: watch::Sender<bool>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Asks a running [`Application`] to shut down gracefully (like SIGTERM).
#[derive(Debug, Clone)]
pub struct ShutdownHandle(watch::Sender<bool>);

impl ShutdownHandle {
    pub fn shutdown(&self) {
        let _ = self.0.send(true);
    }
}

#[derive(Debug)]
struct AppReadiness {
    /// The read pool: readiness is about serving reads.
    repo: PgRepository,
    cache: Arc<DashCache>,
    source: Arc<OnceCell<Arc<KafkaSource>>>,
    /// Why the last attempt to connect to the brokers failed, for `/readyz`.
    kafka_error: Arc<std::sync::Mutex<Option<String>>>,
    consume: bool,
    assignment: Assignment,
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[async_trait]
impl Readiness for AppReadiness {
    async fn checks(&self) -> Vec<Check> {
        let warm = self.cache.stats().warmed_up;
        let mut checks = vec![Check {
            name: "cache_warmup",
            ok: warm,
            required: true,
            reason: (!warm).then(|| "warming the cache from PostgreSQL".to_owned()),
        }];
        checks.push(probe("postgres", true, self.repo.ping()).await);
        // Reads need no broker: an unreachable one degrades ingestion, not readiness.
        if self.consume {
            checks.push(match self.source.get() {
                None => {
                    let last = self
                        .kafka_error
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .clone();
                    Check {
                        name: "kafka",
                        ok: false,
                        required: false,
                        reason: Some(match last {
                            Some(e) => format!("not connected to the broker yet: {e}"),
                            None => "not connected to the broker yet".into(),
                        }),
                    }
                }
                Some(source) => probe("kafka", false, source.partitions()).await,
            });
        }
        checks
    }

    fn consumer(&self) -> Option<serde_json::Value> {
        if !self.consume {
            return None;
        }
        let partitions: Vec<serde_json::Value> = self
            .assignment
            .owned()
            .into_iter()
            .map(|(partition, epoch)| serde_json::json!({"partition": partition, "lease_epoch": epoch}))
            .collect();
        Some(serde_json::json!({
            "member_id": self.assignment.member_id(),
            "members": self.assignment.members(),
            "partitions_owned": partitions.len(),
            "partitions": partitions,
        }))
    }
}

/// Runs one dependency check, bounded by [`PROBE_TIMEOUT`].
async fn probe<T, E: std::fmt::Display>(
    name: &'static str,
    required: bool,
    check: impl std::future::Future<Output = Result<T, E>>,
) -> Check {
    let reason = match tokio::time::timeout(PROBE_TIMEOUT, check).await {
        Ok(Ok(_)) => None,
        // The summary only: the body of /readyz is no place for the driver's own message.
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
    };
    Check {
        name,
        ok: reason.is_none(),
        required,
        reason,
    }
}

/// Both pools' state at scrape time, one gauge per figure with `pool` `ingest` or `read`:
/// `orders_db_pool_size` (connections open), `orders_db_pool_available` (idle),
/// `orders_db_pool_waiting` (tasks waiting for a connection), `orders_db_pool_max_size`.
#[derive(Debug)]
struct PoolCollector {
    pools: [(&'static str, PgRepository); 2],
    descs: Vec<prometheus::core::Desc>,
}

const POOL_GAUGES: [(&str, &str); 4] = [
    (
        "orders_db_pool_size",
        "PostgreSQL connections open, by pool",
    ),
    (
        "orders_db_pool_available",
        "PostgreSQL connections idle in the pool, by pool",
    ),
    (
        "orders_db_pool_waiting",
        "Tasks waiting for a PostgreSQL connection, by pool",
    ),
    (
        "orders_db_pool_max_size",
        "Most connections of the pool, by pool",
    ),
];

impl PoolCollector {
    fn new(ingest: PgRepository, read: PgRepository) -> prometheus::Result<Self> {
        let descs = POOL_GAUGES
            .iter()
            .map(|(name, help)| {
                prometheus::core::Desc::new(
                    (*name).into(),
                    (*help).into(),
                    vec!["pool".into()],
                    Default::default(),
                )
            })
            .collect::<prometheus::Result<_>>()?;
        Ok(Self {
            pools: [("ingest", ingest), ("read", read)],
            descs,
        })
    }
}

impl prometheus::core::Collector for PoolCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let mut out = Vec::new();
        let status: Vec<_> = self
            .pools
            .iter()
            .map(|(name, repo)| (*name, repo.pool_status()))
            .collect();
        for (i, (name, help)) in POOL_GAUGES.iter().enumerate() {
            let Ok(gauge) =
                prometheus::IntGaugeVec::new(prometheus::Opts::new(*name, *help), &["pool"])
            else {
                continue;
            };
            for (pool, s) in &status {
                let v = [s.size, s.available, s.waiting, s.max_size][i];
                gauge
                    .with_label_values(&[pool])
                    .set(i64::try_from(v).unwrap_or(i64::MAX));
            }
            out.extend(prometheus::core::Collector::collect(&gauge));
        }
        out
    }
}

/// Connects to PostgreSQL (and migrates), retrying until `timeout`.
pub async fn connect_database(settings: &Settings) -> anyhow::Result<PgRepository> {
    let config = settings.postgres()?;
    let deadline = Instant::now() + Duration::from_secs(settings.db_startup_timeout_secs);
    loop {
        match PgRepository::connect(&config).await {
            Ok(repo) => return Ok(repo),
            // Credentials, TLS and the server's rules do not change by waiting: say so now.
            Err(e) if e.is_permanent() => return Err(e.into()),
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(error = %Chain(&e), "database not available yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "giving up after {} s (DB_STARTUP_TIMEOUT_SECS)",
                        settings.db_startup_timeout_secs
                    )
                });
            }
        }
    }
}

impl Application {
    /// Connects to the database, applies migrations, binds the HTTP listener. Nothing runs yet.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let member_id = orders_postgres::member_id();
        let repo = connect_database(&settings).await?;
        let repo = if settings.cache_sync {
            repo.announce_commits(&member_id)
        } else {
            repo
        };
        // Same database, already migrated and reachable: connections are made on first use.
        let read_repo = PgRepository::connect_lazy(&settings.postgres_read()?)
            .context("building the read pool")?;
        let cache = Arc::new(DashCache::with_max_bytes(
            usize::try_from(settings.cache_capacity).unwrap_or(usize::MAX),
            usize::try_from(settings.cache_max_bytes).unwrap_or(usize::MAX),
        ));
        let repo_dyn: Arc<dyn OrderRepository> = Arc::new(repo.clone());
        let read_repo_dyn: Arc<dyn OrderRepository> = Arc::new(read_repo.clone());
        let cache_dyn: Arc<dyn OrderCache> = cache.clone();
        let query = QueryService::new(read_repo_dyn, cache_dyn.clone()).with_max_concurrent_misses(
            usize::try_from(settings.max_concurrent_misses).unwrap_or(usize::MAX),
        );
        let registry = prometheus::Registry::new();
        let unknown_field_metrics = crate::metrics::UnknownFieldMetrics::register(&registry)
            .context("registering unknown-field metrics")?;
        let ingest = settings
            .ingest(repo_dyn, cache_dyn)
            .with_observer(Arc::new(unknown_field_metrics));

        let http_metrics = HttpMetrics::register(&registry).context("registering HTTP metrics")?;
        let consumer_metrics =
            ConsumerMetrics::register(&registry).context("registering consumer metrics")?;
        registry
            .register(Box::new(PoolCollector::new(
                repo.clone(),
                read_repo.clone(),
            )?))
            .context("registering pool metrics")?;
        QueryCollector::register(&registry, query.clone())
            .context("registering cache and read metrics")?;
        // process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ...
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .context("registering process metrics")?;

        // Settings that cannot work fail the start, before anything listens (the broker's only
        // when consuming: a read-only instance never connects to it).
        let kafka = if settings.consume {
            settings.kafka()?
        } else {
            orders_kafka::KafkaConfig::default()
        };
        let source = Arc::new(OnceCell::new());
        let assignment = Assignment::default();
        let kafka_error = Arc::new(std::sync::Mutex::new(None));
        let readiness = Arc::new(AppReadiness {
            repo: read_repo.clone(),
            cache: cache.clone(),
            source: source.clone(),
            kafka_error: kafka_error.clone(),
            consume: settings.consume,
            assignment: assignment.clone(),
        });
        let state = HttpState::new(query.clone(), readiness, registry, http_metrics);
        let addr = format!("{}:{}", settings.http_host, settings.http_port);
        let listener = TcpListener::bind(&addr).with_context(|| {
            format!(
                "cannot listen on {addr} (HTTP_HOST/HTTP_PORT); is another process using the port?"
            )
        })?;
        let port = listener.local_addr()?.port();
        let server = orders_http::serve(
            listener,
            state,
            &HttpConfig {
                workers: settings.http_workers,
                shutdown_timeout_secs: settings.shutdown_timeout_secs,
            },
        )?;
        let (shutdown_tx, _) = watch::channel(false);
        Ok(Self {
            port,
            server,
            repo,
            read_repo,
            query,
            ingest,
            source,
            kafka,
            kafka_error,
            consumer_metrics,
            member_id,
            assignment,
            settings,
            shutdown_tx,
        })
    }

    /// This replica's member id (the owner shown by `orders partitions`).
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shutdown_tx.clone())
    }

    /// Serves, warms the cache, then consumes; returns after a graceful shutdown, which starts
    /// on SIGINT/SIGTERM or through a [`ShutdownHandle`].
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            server,
            repo,
            read_repo,
            query,
            ingest,
            source,
            kafka,
            kafka_error,
            consumer_metrics,
            member_id,
            assignment,
            settings,
            shutdown_tx,
            ..
        } = self;
        let server_handle = server.handle();
        let server_task = tokio::spawn(server);
        tracing::info!(port = self.port, "listening");

        let nudge = Arc::new(tokio::sync::Notify::new());
        let sync_task = spawn_announcements(
            query.clone(),
            CommitListener::new(settings.postgres()?, &member_id),
            nudge.clone(),
            &settings.kafka_topic,
            settings.cache_sync,
            shutdown_tx.subscribe(),
        );
        let leases = PgLeases::new(repo.clone(), member_id);
        let consumer_task = spawn_background(
            query,
            ingest,
            Kafka {
                config: kafka,
                source,
                last_error: kafka_error,
                consume: settings.consume,
            },
            Background {
                metrics: consumer_metrics,
                leases: Arc::new(leases),
                assignment,
                nudge,
                lease_ttl: Duration::from_secs(settings.lease_ttl_secs),
            },
            shutdown_tx.subscribe(),
        );

        let mut stop = shutdown_tx.subscribe();
        tokio::select! {
            _ = stop.wait_for(|s| *s) => tracing::info!("shutdown requested"),
            signal = wait_for_signal() => {
                tracing::info!(signal, "signal received; shutting down");
                let _ = shutdown_tx.send(true);
            }
        }
        let bound = Duration::from_secs(settings.shutdown_timeout_secs);
        let graceful = async {
            // Stop accepting; in-flight requests finish. The consumer finishes its batch.
            tokio::join!(
                server_handle.stop(true),
                async {
                    let _ = consumer_task.await;
                },
                async {
                    let _ = sync_task.await;
                }
            );
            let _ = server_task.await;
        };
        if tokio::time::timeout(bound, graceful).await.is_err() {
            tracing::warn!(
                seconds = settings.shutdown_timeout_secs,
                "shutdown took too long; exiting anyway"
            );
        }
        repo.close();
        read_repo.close();
        tracing::info!("stopped");
        Ok(())
    }
}

/// Acts on other replicas' announcements: caches the orders they commit (sent only with
/// `CACHE_SYNC`), and wakes the consumer when the topic's membership changed.
fn spawn_announcements(
    query: QueryService,
    listener: CommitListener,
    nudge: Arc<tokio::sync::Notify>,
    topic: &str,
    cache_sync: bool,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Announcement>(64);
    tokio::spawn(listener.run(tx, shutdown));
    let topic = topic.to_owned();
    tokio::spawn(async move {
        // Ends when the listener stops (shutdown) and drops its sender.
        while let Some(announced) = rx.recv().await {
            match announced {
                Announcement::Leases { topic: t } if t == topic => nudge.notify_one(),
                Announcement::Leases { .. } => {}
                Announcement::Orders(_) if !cache_sync => {}
                Announcement::Orders(uids) => match query.cache_committed(&uids).await {
                    Ok(n) => tracing::debug!(
                        announced = uids.len(),
                        cached = n,
                        "cached orders another replica stored"
                    ),
                    Err(e) => tracing::warn!(
                        error = %e,
                        "cannot cache orders another replica stored; they are read through on their first request"
                    ),
                },
            }
        }
    })
}

/// What the consumer runs with besides the use cases.
struct Background {
    metrics: ConsumerMetrics,
    leases: Arc<PgLeases>,
    assignment: Assignment,
    nudge: Arc<tokio::sync::Notify>,
    lease_ttl: Duration,
}

/// What the background task needs to reach the brokers.
struct Kafka {
    config: orders_kafka::KafkaConfig,
    source: Arc<OnceCell<Arc<KafkaSource>>>,
    last_error: Arc<std::sync::Mutex<Option<String>>>,
    consume: bool,
}

/// Between connection attempts the brokers refused for good (credentials, TLS): long enough
/// not to hammer them, short enough to pick up a fix made on their side.
const PERMANENT_RETRY_FIRST: Duration = Duration::from_secs(30);
const PERMANENT_RETRY_MAX: Duration = Duration::from_secs(300);

/// Warm-up, then (if enabled) connecting to Kafka and consuming, all stoppable by `shutdown`.
fn spawn_background(
    query: QueryService,
    ingest: IngestService,
    kafka_parts: Kafka,
    background: Background,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let Kafka {
        config: kafka,
        source: source_cell,
        last_error,
        consume,
    } = kafka_parts;
    tokio::spawn(async move {
        // Warm-up first: orders ingested meanwhile would otherwise be evicted by older ones.
        loop {
            match query.warm_up().await {
                Ok(n) => {
                    let s = query.cache().stats();
                    tracing::info!(loaded = n, millis = s.warmup_millis, "cache warmed up");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %Chain(&e), "cache warm-up failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.wait_for(|s| *s) => return,
                    }
                }
            }
        }
        if !consume {
            return;
        }
        let mut permanent_wait = PERMANENT_RETRY_FIRST;
        let source = loop {
            let attempt = async {
                let s = KafkaSource::connect(kafka.clone()).await?;
                s.ensure_topic().await?;
                Ok::<_, orders_kafka::KafkaError>(s)
            };
            let result = tokio::select! {
                r = attempt => r,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            let wait = match result {
                Ok(s) => break Arc::new(s),
                Err(e) if e.is_permanent() => {
                    let wait = permanent_wait;
                    permanent_wait = (permanent_wait * 2).min(PERMANENT_RETRY_MAX);
                    tracing::error!(
                        error = %e,
                        retry_in_secs = wait.as_secs(),
                        "Kafka refused the connection; retrying would not help until the setting named above is fixed"
                    );
                    *last_error
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e.to_string());
                    wait
                }
                Err(e) => {
                    tracing::warn!(error = %Chain(&e), "Kafka not available; retrying");
                    *last_error
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e.to_string());
                    Duration::from_secs(2)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        };
        *last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        let _ = source_cell.set(source.clone());
        let dyn_source: Arc<dyn OrderSource> = source;
        let config = ConsumerConfig {
            lease_ttl: background.lease_ttl,
            ..ConsumerConfig::default()
        };
        Consumer::new(dyn_source, ingest, config)
            .with_metrics(background.metrics)
            .reporting_to(background.assignment)
            .with_leases(background.leases)
            .woken_by(background.nudge)
            .run(shutdown)
            .await;
    })
}

async fn wait_for_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            },
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                "ctrl-c"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "ctrl-c"
    }
}
