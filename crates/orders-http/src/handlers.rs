use actix_web::http::StatusCode;
use actix_web::http::header::{self, CacheControl, CacheDirective, ContentType};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use orders_domain::{QueryError, RepositoryError};
use prometheus::Encoder;
use serde::{Deserialize, Serialize};

use crate::HttpState;

const INDEX_HTML: &str = include_str!("../../../static/index.html");
const APP_JS: &str = include_str!("../../../static/app.js");
const STYLE_CSS: &str = include_str!("../../../static/style.css");
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The JSON body of every error response.
#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
}

/// An API error: status, machine-readable code, human message.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds for a `Retry-After` header (load shedding).
    retry_after: Option<u32>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, secs));
        }
        response.json(ErrorBody {
            error: self.code,
            message: self.message.clone(),
        })
    }
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::InvalidUid => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_order_uid",
                "order_uid must be 1 to 64 characters of A-Z, a-z, 0-9, '-' or '_'",
            ),
            QueryError::NotFound => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no order with this order_uid",
            ),
            // Shed, not queued: the client retries in a second, by then the flood may be over
            // (and the misses in flight, which hold the slots, are done).
            QueryError::Overloaded { .. } => ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    "too many reads of uncached orders at once; retry shortly",
                )
            },
            QueryError::Repository(e) => e.into(),
        }
    }
}

impl From<RepositoryError> for ApiError {
    fn from(e: RepositoryError) -> Self {
        if e.is_transient() {
            tracing::warn!(error = %e, "storage unavailable");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the order store is unavailable; retry shortly",
            )
        } else {
            // The details go to the log, not to the client.
            tracing::error!(error = ?e, "storage error");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        }
    }
}

pub(crate) fn path_error(err: actix_web::error::PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_path", err.to_string()).into()
}

pub(crate) fn query_error(
    err: actix_web::error::QueryPayloadError,
    _: &HttpRequest,
) -> actix_web::Error {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_query", err.to_string()).into()
}

pub(crate) async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        "no such endpoint",
    ))
}

pub(crate) async fn order(
    state: web::Data<HttpState>,
    uid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let json = state.query.order_json(&uid).await?;
    Ok(HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(json))
}

#[derive(Debug, Deserialize)]
pub(crate) struct RecentParams {
    limit: Option<usize>,
}

pub(crate) async fn recent(
    state: web::Data<HttpState>,
    q: web::Query<RecentParams>,
) -> Result<HttpResponse, ApiError> {
    let limit = q.limit.unwrap_or(20);
    if limit == 0 || limit > orders_domain::query::MAX_RECENT {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_limit",
            format!("limit must be 1..={}", orders_domain::query::MAX_RECENT),
        ));
    }
    Ok(HttpResponse::Ok().json(state.query.recent(limit).await?))
}

pub(crate) async fn cache_stats(state: web::Data<HttpState>) -> HttpResponse {
    HttpResponse::Ok().json(state.query.cache().stats())
}

pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Ready (200) when every required check passes: `ready` if all pass, `degraded` if only
/// optional ones fail (the consumer's broker: reads do not need it). Otherwise 503
/// `not_ready`. The result is reused for [`crate::READY_TTL`], so probes cost the dependencies
/// at most one check per second however often they come.
pub(crate) async fn readyz(state: web::Data<HttpState>) -> HttpResponse {
    let (checks, age) = state.ready.get(state.readiness.as_ref()).await;
    let ready = checks.iter().all(|c| c.ok || !c.required);
    let status = match (ready, checks.iter().all(|c| c.ok)) {
        (false, _) => "not_ready",
        (true, false) => "degraded",
        (true, true) => "ready",
    };
    let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
    let body = serde_json::json!({"status": status, "age_ms": age_ms, "checks": &*checks});
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

pub(crate) async fn metrics(state: web::Data<HttpState>) -> Result<HttpResponse, ApiError> {
    let s = state.query.cache().stats();
    let c = &state.metrics.cache;
    let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    c.entries.set(s.size as i64);
    c.capacity.set(s.capacity as i64);
    c.bytes.set(s.bytes as i64);
    c.max_bytes
        .set(i64::try_from(s.max_bytes).unwrap_or(i64::MAX));
    c.hits.set(clamp(s.hits));
    c.misses.set(clamp(s.misses));
    c.evictions.set(clamp(s.evictions));
    c.warmup_loaded.set(s.warmup_loaded as i64);
    c.warmup_millis.set(clamp(s.warmup_millis));
    let m = state.query.miss_stats();
    let r = &state.metrics.reads;
    r.in_flight.set(m.in_flight as i64);
    r.limit.set(m.limit as i64);
    r.queries.set(clamp(m.queries));
    r.shared.set(clamp(m.shared));
    r.overloaded.set(clamp(m.rejected));
    let encoder = prometheus::TextEncoder::new();
    let mut buf = Vec::with_capacity(16 * 1024);
    encoder
        .encode(&state.registry.gather(), &mut buf)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok(HttpResponse::Ok()
        .content_type(encoder.format_type())
        .body(buf))
}

/// The JSON Schema of the order message, as checked in (`schema/order.json`).
pub(crate) async fn order_schema() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/schema+json")
        .insert_header(CacheControl(vec![CacheDirective::NoCache]))
        .body(orders_domain::ORDER_SCHEMA_JSON)
}

fn asset(body: &'static str, content_type: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(CacheControl(vec![CacheDirective::NoCache]))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

pub(crate) async fn index() -> HttpResponse {
    asset(INDEX_HTML, "text/html; charset=utf-8")
}

pub(crate) async fn app_js() -> HttpResponse {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

pub(crate) async fn style_css() -> HttpResponse {
    asset(STYLE_CSS, "text/css; charset=utf-8")
}
