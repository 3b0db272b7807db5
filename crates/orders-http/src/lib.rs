//! The HTTP side of the orders service, on actix-web.
//!
//! Routes: `GET /order/{order_uid}`, `GET /orders?limit=N&before=C`, `GET /cache/stats`,
//! `GET /healthz`, `GET /readyz`, `GET /metrics`, `GET /openapi.json`, `GET /schema/order.json`
//! (the message's JSON Schema), and the web page (`GET /`, `/static/*`, embedded). Every route
//! answers HEAD as GET, and any other method with 405 and `Allow`.
//!
//! Invariant: handlers only call the domain's [`QueryService`] and the [`Readiness`] probe;
//! bad input is a 4xx with a JSON body, never a 500.

mod handlers;
mod metrics;
mod middleware;
pub mod openapi;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::Server;
use actix_web::http::Method;
use actix_web::{App, HttpServer, guard, web};
use async_trait::async_trait;
use orders_domain::QueryService;

pub use metrics::{HttpMetrics, QueryCollector, latency_buckets};

/// One dependency's state for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Check {
    /// `cache_warmup`, `postgres` or `kafka`.
    pub name: &'static str,
    pub ok: bool,
    /// Whether serving reads needs it: a failing required check makes `/readyz` 503, a
    /// failing optional one (the consumer's broker) only `degraded`.
    pub required: bool,
    /// Why not, when not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What `/readyz` asks: is the service ready to serve (warm-up done, dependencies reachable)?
#[async_trait]
pub trait Readiness: Send + Sync + std::fmt::Debug {
    async fn checks(&self) -> Vec<Check>;
    /// What the consumer works on now (e.g. the partitions this replica owns), shown by
    /// `/readyz` as `consumer`; computed per request, so it must be cheap.
    fn consumer(&self) -> Option<serde_json::Value> {
        None
    }
}

/// How long a `/readyz` result is reused: probes from load balancers and orchestrators (or
/// anyone) then cost the database at most one ping per second.
pub const READY_TTL: Duration = Duration::from_secs(1);

/// The last readiness result, shared by all workers. The async lock is held while checking,
/// so concurrent requests after expiry wait for one check instead of each running their own.
#[derive(Debug, Default)]
pub(crate) struct ReadyCache {
    last: futures::lock::Mutex<Option<(Instant, Arc<Vec<Check>>)>>,
}

impl ReadyCache {
    /// The checks and their age: the cached ones if younger than [`READY_TTL`], else new ones.
    pub(crate) async fn get(&self, readiness: &dyn Readiness) -> (Arc<Vec<Check>>, Duration) {
        let mut last = self.last.lock().await;
        if let Some((at, checks)) = &*last
            && at.elapsed() < READY_TTL
        {
            return (checks.clone(), at.elapsed());
        }
        let checks = Arc::new(readiness.checks().await);
        *last = Some((Instant::now(), checks.clone()));
        (checks, Duration::ZERO)
    }
}

/// Everything the handlers need.
#[derive(Debug, Clone)]
pub struct HttpState {
    pub query: QueryService,
    pub readiness: Arc<dyn Readiness>,
    pub registry: prometheus::Registry,
    pub metrics: HttpMetrics,
    ready: Arc<ReadyCache>,
}

impl HttpState {
    pub fn new(
        query: QueryService,
        readiness: Arc<dyn Readiness>,
        registry: prometheus::Registry,
        metrics: HttpMetrics,
    ) -> Self {
        Self {
            query,
            readiness,
            registry,
            metrics,
            ready: Arc::new(ReadyCache::default()),
        }
    }
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Worker threads (0 = one per core).
    pub workers: usize,
    /// Seconds that in-flight requests get to finish on shutdown.
    pub shutdown_timeout_secs: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            workers: 0,
            shutdown_timeout_secs: 10,
        }
    }
}

/// Adds the routes to an actix `ServiceConfig` (used by [`serve`] and by embedding services).
pub fn configure(state: HttpState) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(state))
            .app_data(web::PathConfig::default().error_handler(handlers::path_error))
            .app_data(web::QueryConfig::default().error_handler(handlers::query_error))
            .service(readable("/", handlers::index))
            .service(readable("/static/app.js", handlers::app_js))
            .service(readable("/static/style.css", handlers::style_css))
            .service(OrderRoute)
            .service(readable("/orders", handlers::recent))
            .service(readable("/cache/stats", handlers::cache_stats))
            .service(readable("/healthz", handlers::healthz))
            .service(readable("/readyz", handlers::readyz))
            .service(readable("/metrics", handlers::metrics))
            .service(readable("/openapi.json", handlers::openapi))
            .service(readable("/schema/order.json", handlers::order_schema))
            .default_service(web::to(handlers::not_found));
    }
}

/// A read-only resource: GET and HEAD (the same handler; actix sends no body for HEAD), any
/// other method 405 with `Allow: GET, HEAD` and the JSON error body.
fn readable<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    // Named after its pattern: the request metrics take the route label from the name,
    // which a request borrows (its matched pattern would be built per request).
    // One route for both methods, with a guard that only compares: actix's method guards
    // (`web::get()`) record each method they check in the request's extensions, two
    // allocations per request, for an `Allow` header that `method_not_allowed` sets itself.
    web::resource(path)
        .name(path)
        .route(
            web::route()
                .guard(guard::fn_guard(|ctx| {
                    matches!(ctx.head().method, Method::GET | Method::HEAD)
                }))
                .to(handler),
        )
        .default_service(web::to(handlers::method_not_allowed))
}

/// The route label (and name) of `GET /order/{order_uid}`.
const ORDER_ROUTE: &str = "/order/{order_uid}";

/// `/order/{order_uid}` matched as the static prefix `/order` and the rest read by
/// [`handlers::order`]: a pattern with a `{segment}` is matched by a regular expression in
/// actix (about 5% of a cached read's CPU in `perf`), a prefix by comparing bytes. It answers
/// as the resource did: GET and HEAD, any other method 405 with `Allow`, and a path that is
/// not `/order/` and one segment (`/order`, `/order/`, `/order/a/b`) the JSON 404 of an
/// unknown route. Its name (the route label of the request metrics) is the pattern.
struct OrderRoute;

impl actix_web::dev::HttpServiceFactory for OrderRoute {
    fn register(self, config: &mut actix_web::dev::AppService) {
        let mut rdef = actix_web::dev::ResourceDef::prefix("/order");
        rdef.set_name(ORDER_ROUTE);
        config.register_service(
            rdef,
            None,
            actix_web::dev::fn_service(|req: actix_web::dev::ServiceRequest| async move {
                let (req, _payload) = req.into_parts();
                let answer = match *req.method() {
                    _ if handlers::order_uid(&req).is_none() => Err(handlers::no_route()),
                    Method::GET | Method::HEAD => handlers::order(req.clone()).await,
                    _ => handlers::method_not_allowed().await,
                };
                let res = answer.unwrap_or_else(actix_web::HttpResponse::from_error);
                Ok::<_, actix_web::Error>(actix_web::dev::ServiceResponse::new(req, res))
            }),
            None,
        );
    }
}

/// Starts the server on an already-bound listener (port 0 in tests). Stops accepting on
/// `Server::stop(true)` and gives in-flight requests `shutdown_timeout_secs`.
pub fn serve(
    listener: TcpListener,
    state: HttpState,
    config: &HttpConfig,
) -> std::io::Result<Server> {
    let metrics = state.metrics.clone();
    let mut server = HttpServer::new(move || {
        App::new()
            .wrap(middleware::Observe::new(metrics.clone()))
            .configure(configure(state.clone()))
    })
    // Signals are the app's business: it decides when to stop.
    .disable_signals()
    .shutdown_timeout(config.shutdown_timeout_secs);
    if config.workers > 0 {
        server = server.workers(config.workers);
    }
    Ok(server.listen(listener)?.run())
}
