//! Section 3 (reads): the real service against bare actix-web servers with the same workers.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpResponse, HttpServer, web};
use bytes::Bytes;
use dashmap::DashMap;
use orders_app::{Application, Settings};
use orders_domain::{FetchedBatch, Order, RawMessage};
use serde::Serialize;

use crate::db::BenchDb;
use crate::load::{self, Load, LoadResult};

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ReadResults {
    pub(crate) workers: usize,
    pub(crate) connections: usize,
    pub(crate) uids: usize,
    pub(crate) rounds: usize,
    /// Bare actix-web handler answering a static 200 (the baseline).
    pub(crate) bare_static: LoadResult,
    /// Bare actix-web handler answering from a `DashMap` of the same JSON (no service layers).
    pub(crate) bare_dashmap: LoadResult,
    /// The service's `/healthz`: its middleware and metrics around a trivial handler.
    pub(crate) healthz: LoadResult,
    /// The service's `GET /order/{uid}`, every uid cached.
    pub(crate) cached: LoadResult,
    /// The service's `GET /order/{uid}` with a cache of one entry: read-through to PostgreSQL.
    pub(crate) miss: LoadResult,
    /// The service's page, `GET /`.
    pub(crate) page: LoadResult,
}

struct Bare {
    addr: SocketAddr,
    handle: ServerHandle,
}

/// A bare actix-web server on 127.0.0.1:0 with `workers` workers, no middleware.
fn bare(workers: usize, orders: Arc<DashMap<String, Bytes>>) -> anyhow::Result<Bare> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::from(orders.clone()))
            .route(
                "/static",
                web::get().to(|| async { HttpResponse::Ok().body("ok") }),
            )
            .route(
                "/order/{uid}",
                web::get().to(
                    |map: web::Data<DashMap<String, Bytes>>, uid: web::Path<String>| async move {
                        match map.get(uid.as_str()) {
                            Some(json) => HttpResponse::Ok()
                                .content_type("application/json")
                                .body(json.clone()),
                            None => HttpResponse::NotFound().finish(),
                        }
                    },
                ),
            )
    })
    .workers(workers)
    .disable_signals()
    .listen(listener)?
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    Ok(Bare { addr, handle })
}

struct Service {
    addr: SocketAddr,
    shutdown: orders_app::ShutdownHandle,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start_service(settings: Settings) -> anyhow::Result<Service> {
    let app = Application::build(settings).await?;
    let addr: SocketAddr = ([127, 0, 0, 1], app.port()).into();
    let shutdown = app.shutdown_handle();
    let task = tokio::spawn(app.run_until_stopped());
    // Ready = warm-up done.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let probe = Load {
            connections: 1,
            warmup: std::time::Duration::ZERO,
            duration: std::time::Duration::from_secs(5),
            max_requests_per_connection: 1,
        };
        let ok =
            tokio::task::block_in_place(|| load::run(addr, vec!["/readyz".into()], 200, &probe))
                .is_ok_and(|r| r.requests == 1 && r.unexpected == 0);
        if ok {
            return Ok(Service {
                addr,
                shutdown,
                task,
            });
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "service not ready within 120 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

impl Service {
    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.shutdown();
        self.task.await??;
        Ok(())
    }
}

/// Stores `orders` in the database through the service's own ingest path (one batch).
async fn store(db: &BenchDb, orders: &[Order]) -> anyhow::Result<()> {
    let repo = orders_postgres::PgRepository::connect(&db.config).await?;
    let ingest = orders_domain::IngestService::new(
        Arc::new(repo.clone()),
        Arc::new(orders_cache::DashCache::new(1)),
    );
    let records = orders
        .iter()
        .enumerate()
        .map(|(i, o)| {
            Ok(RawMessage {
                offset: i as i64,
                value: Some(Bytes::from(serde_json::to_vec(o)?)),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let n = records.len() as i64;
    let report = ingest
        .ingest(
            "bench",
            FetchedBatch {
                partition: 0,
                records,
                next_offset: n,
                high_watermark: n,
            },
        )
        .await?;
    anyhow::ensure!(report.stored == orders.len(), "stored {}", report.stored);
    repo.close();
    Ok(())
}

pub(crate) async fn run(
    base: &Settings,
    admin: &orders_postgres::PgConfig,
    orders: &[Order],
    load: &Load,
    rounds: usize,
) -> anyhow::Result<ReadResults> {
    let workers = if base.http_workers > 0 {
        base.http_workers
    } else {
        std::thread::available_parallelism().map_or(1, usize::from)
    };
    let db = BenchDb::create(admin).await?;
    store(&db, orders).await?;
    let uids: Vec<String> = orders.iter().map(|o| o.order_uid.to_string()).collect();
    let order_paths: Vec<String> = uids.iter().map(|u| format!("/order/{u}")).collect();
    let map: Arc<DashMap<String, Bytes>> = Arc::new(DashMap::new());
    for o in orders {
        map.insert(o.order_uid.to_string(), Bytes::from(serde_json::to_vec(o)?));
    }
    let bare = bare(workers, map)?;
    let settings = Settings {
        db_name: db.config.dbname.clone(),
        http_host: "127.0.0.1".into(),
        http_port: 0,
        http_workers: workers,
        consume: false,
        ..base.clone()
    };
    let service = start_service(settings.clone()).await?;
    let missing = start_service(Settings {
        cache_capacity: 1,
        ..settings
    })
    .await?;

    // Every endpoint once per round, rounds interleaved, so that a slow spell of the shared
    // machine hits all of them alike; the median round of each is reported.
    let targets: [(&str, SocketAddr, Vec<String>); 6] = [
        ("bare static 200", bare.addr, vec!["/static".into()]),
        ("bare dashmap lookup", bare.addr, order_paths.clone()),
        ("service /healthz", service.addr, vec!["/healthz".into()]),
        ("service cached /order", service.addr, order_paths.clone()),
        ("service cache-miss /order", missing.addr, order_paths),
        ("service page", service.addr, vec!["/".into()]),
    ];
    let mut runs: Vec<Vec<LoadResult>> = vec![Vec::new(); targets.len()];
    for round in 0..rounds.max(1) {
        for (i, (what, addr, paths)) in targets.iter().enumerate() {
            tracing::info!(round, what, "reads");
            // The generator runs on its own thread; keep this runtime's workers free meanwhile.
            let r = tokio::task::block_in_place(|| load::run(*addr, paths.clone(), 200, load))?;
            runs[i].push(r);
        }
    }
    bare.handle.stop(true).await;
    service.stop().await?;
    missing.stop().await?;
    db.drop_now().await?;
    let mut medians = runs.into_iter().map(|mut rs| {
        rs.sort_by(|a, b| a.rps().total_cmp(&b.rps()));
        let cpu = crate::stats::median(
            &rs.iter()
                .map(|r| r.server_cpu_us_per_request)
                .collect::<Vec<_>>(),
        );
        let mut mid = rs.swap_remove(rs.len() / 2);
        mid.server_cpu_us_per_request = cpu;
        mid
    });
    let mut next = || {
        medians
            .next()
            .ok_or_else(|| anyhow::anyhow!("missing read result"))
    };
    let (bare_static, bare_dashmap, healthz, cached, miss, page) =
        (next()?, next()?, next()?, next()?, next()?, next()?);
    Ok(ReadResults {
        workers,
        connections: load.connections,
        uids: uids.len(),
        rounds,
        bare_static,
        bare_dashmap,
        healthz,
        cached,
        miss,
        page,
    })
}
