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
use orders_domain::{IngestService, OrderCache, OrderRepository, OrderSource, QueryService};
use orders_http::{Check, HttpConfig, HttpMetrics, HttpState, Readiness};
use orders_kafka::{Consumer, ConsumerConfig, ConsumerMetrics, KafkaSource};
use orders_postgres::PgRepository;
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
    consumer_metrics: ConsumerMetrics,
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
    consume: bool,
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
                None => Check {
                    name: "kafka",
                    ok: false,
                    required: false,
                    reason: Some("not connected to the broker yet".into()),
                },
                Some(source) => probe("kafka", false, source.partitions()).await,
            });
        }
        checks
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

/// Both pools' state at scrape time: `orders_db_pool_connections{pool, state}` with `state`
/// `size` (open) or `available` (idle).
#[derive(Debug)]
struct PoolCollector {
    pools: [(&'static str, PgRepository); 2],
    desc: prometheus::core::Desc,
}

impl PoolCollector {
    fn new(ingest: PgRepository, read: PgRepository) -> prometheus::Result<Self> {
        Ok(Self {
            pools: [("ingest", ingest), ("read", read)],
            desc: prometheus::core::Desc::new(
                "orders_db_pool_connections".into(),
                "PostgreSQL pool connections by pool (ingest, read) and state (size, available)"
                    .into(),
                vec!["pool".into(), "state".into()],
                Default::default(),
            )?,
        })
    }
}

impl prometheus::core::Collector for PoolCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let Ok(gauge) = prometheus::IntGaugeVec::new(
            prometheus::Opts::new(self.desc.fq_name.clone(), self.desc.help.clone()),
            &["pool", "state"],
        ) else {
            return Vec::new();
        };
        for (name, repo) in &self.pools {
            let (size, available) = repo.pool_status();
            gauge.with_label_values(&[name, "size"]).set(size as i64);
            gauge
                .with_label_values(&[name, "available"])
                .set(available as i64);
        }
        prometheus::core::Collector::collect(&gauge)
    }
}

/// Connects to PostgreSQL (and migrates), retrying until `timeout`.
pub async fn connect_database(settings: &Settings) -> anyhow::Result<PgRepository> {
    let config = settings.postgres();
    let deadline = Instant::now() + Duration::from_secs(settings.db_startup_timeout_secs);
    loop {
        match PgRepository::connect(&config).await {
            Ok(repo) => return Ok(repo),
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(error = %e, "database not available yet; retrying");
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
        let repo = connect_database(&settings).await?;
        // Same database, already migrated and reachable: connections are made on first use.
        let read_repo = PgRepository::connect_lazy(&settings.postgres_read())
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

        let source = Arc::new(OnceCell::new());
        let readiness = Arc::new(AppReadiness {
            repo: read_repo.clone(),
            cache: cache.clone(),
            source: source.clone(),
            consume: settings.consume,
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
            consumer_metrics,
            settings,
            shutdown_tx,
        })
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
            consumer_metrics,
            settings,
            shutdown_tx,
            ..
        } = self;
        let server_handle = server.handle();
        let server_task = tokio::spawn(server);
        tracing::info!(port = self.port, "listening");

        let consumer_task = spawn_background(
            query,
            ingest,
            source,
            consumer_metrics,
            &settings,
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
            tokio::join!(server_handle.stop(true), async {
                let _ = consumer_task.await;
            });
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

/// Warm-up, then (if enabled) connecting to Kafka and consuming, all stoppable by `shutdown`.
fn spawn_background(
    query: QueryService,
    ingest: IngestService,
    source_cell: Arc<OnceCell<Arc<KafkaSource>>>,
    metrics: ConsumerMetrics,
    settings: &Settings,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let kafka = settings.kafka();
    let consume = settings.consume;
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
                    tracing::warn!(error = %e, "cache warm-up failed; retrying");
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
            match result {
                Ok(s) => break Arc::new(s),
                Err(e) => {
                    tracing::warn!(error = %e, "Kafka not available; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                        _ = shutdown.wait_for(|s| *s) => return,
                    }
                }
            }
        };
        let _ = source_cell.set(source.clone());
        let dyn_source: Arc<dyn OrderSource> = source;
        Consumer::new(dyn_source, ingest, ConsumerConfig::default())
            .with_metrics(metrics)
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
