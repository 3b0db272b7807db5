use std::sync::LazyLock;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use orders_domain::{Chain, OrderSummary, QueryError, RepositoryError, StoreSeq};
use prometheus::Encoder;
use serde::{Deserialize, Serialize};

use crate::HttpState;

const INDEX_HTML: &str = include_str!("../../../static/index.html");
const APP_JS: &str = include_str!("../../../static/app.js");
const STYLE_CSS: &str = include_str!("../../../static/style.css");
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// An order never changes once stored, so a client or proxy may keep it as long as it likes.
pub(crate) const ORDER_CACHE_CONTROL: HeaderValue =
    HeaderValue::from_static("public, max-age=31536000, immutable");
/// Errors (a 404 above all: the order may be stored a moment later) are never cached.
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
/// What every 503 tells the client to wait, in seconds.
pub(crate) const RETRY_AFTER_SECS: u32 = 1;
/// The methods every route answers.
pub(crate) const ALLOWED: HeaderValue = HeaderValue::from_static("GET, HEAD");

/// The JSON body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody<'a> {
    /// Machine-readable code, e.g. `not_found`, `invalid_order_uid`, `unavailable`.
    error: &'a str,
    /// For humans.
    message: String,
}

/// An API error: status, machine-readable code, human message.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// What went wrong underneath (a storage error's whole chain): logged by the middleware
    /// with the request's id, never sent to the client.
    cause: Option<String>,
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
        response.insert_header((header::CACHE_CONTROL, NO_STORE));
        // Every 503 says when to come back, whatever its cause (shed load, store down).
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS));
        }
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            response.insert_header((header::ALLOW, ALLOWED));
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
            cause: None,
        }
    }

    /// 500 `internal`: a fault of the service, never of the request (details go to the log).
    fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    /// The cause to log, if any, and whether it is an error (else a warning).
    pub(crate) fn cause(&self) -> Option<(&str, bool)> {
        self.cause
            .as_deref()
            .map(|c| (c, self.status != StatusCode::SERVICE_UNAVAILABLE))
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
            QueryError::Overloaded { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many reads of uncached orders at once; retry shortly",
            ),
            QueryError::Repository(e) => e.into(),
        }
    }
}

impl From<RepositoryError> for ApiError {
    fn from(e: RepositoryError) -> Self {
        // The details go to the log (the middleware's, with the request's id), not to the
        // client.
        let cause = Some(Chain(&e).to_string());
        if e.is_transient() {
            ApiError {
                cause,
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the order store is unavailable; retry shortly",
                )
            }
        } else {
            ApiError {
                cause,
                ..ApiError::internal()
            }
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
    Err(no_route())
}

/// The uid in a path under the route prefix `/order` (`OrderRoute`): the one segment after
/// it, if the path is exactly that.
pub(crate) fn order_uid(req: &HttpRequest) -> Option<&str> {
    req.match_info()
        .unprocessed()
        .strip_prefix('/')
        .filter(|uid| !uid.is_empty() && !uid.contains('/'))
}

/// The 404 of a path no route serves.
pub(crate) fn no_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no_route", "no such endpoint")
}

/// A route exists but not for this method: 405 with `Allow`.
pub(crate) async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route answers GET and HEAD only",
    ))
}

/// Whether `If-None-Match` names `etag` (or is `*`): weak comparison, as RFC 9110 asks for
/// this header, so `W/"x"` matches `"x"`.
fn none_match(req: &HttpRequest, etag: &[u8]) -> bool {
    let Some(value) = req.headers().get(header::IF_NONE_MATCH) else {
        return false;
    };
    value.as_bytes().split(|&b| b == b',').any(|tag| {
        let tag = tag.trim_ascii();
        tag == b"*" || tag.strip_prefix(b"W/").unwrap_or(tag) == etag
    })
}

/// 304 with the validators and caching headers a 200 would carry, no body.
fn not_modified(etag: HeaderValue, cache_control: HeaderValue) -> HttpResponse {
    HttpResponse::NotModified()
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, cache_control))
        .finish()
}

/// The order, as stored. Strong `ETag` (computed when the order entered the cache) and
/// `Cache-Control: immutable`; `If-None-Match` with that tag gets 304.
#[utoipa::path(
    method(get, head),
    path = "/order/{order_uid}",
    tag = "orders",
    params(
        ("order_uid" = String, Path, description = "The order's id", example = "b563feb7b2b84b6test",
         pattern = r"^[A-Za-z0-9_-]{1,64}$", min_length = 1, max_length = 64),
        ("If-None-Match" = Option<String>, Header, description = "ETags the client holds; a match gets 304"),
    ),
    responses(
        (status = 200, description = "The order, with the same fields and shape as it arrived", body = orders_domain::Order,
         headers(
             ("ETag" = String, description = "Strong entity tag of the body"),
             ("Cache-Control" = String, description = "public, max-age=31536000, immutable"),
         )),
        (status = 304, description = "The client's copy (If-None-Match) is current",
         headers(("ETag" = String), ("Cache-Control" = String))),
        (status = 400, description = "Not a valid order_uid (`invalid_order_uid`, `bad_path`)", body = ErrorBody,
         headers(("Cache-Control" = String, description = "no-store"))),
        (status = 404, description = "No such order (`not_found`)", body = ErrorBody,
         headers(("Cache-Control" = String, description = "no-store"))),
        (status = 500, description = "A storage error that is not transient (`internal`)", body = ErrorBody),
        (status = 503, description = "Not cached and PostgreSQL unreachable (`unavailable`), or too many cache misses at once (`overloaded`)",
         body = ErrorBody, headers(("Retry-After" = u32, description = "Seconds"))),
    )
)]
pub(crate) async fn order(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    // Borrowed from the request (a `Path<String>` extractor would copy the uid, and the
    // `Data` extractor bump a shared reference count, on every request).
    let Some(state) = req.app_data::<web::Data<HttpState>>() else {
        return Err(ApiError::internal());
    };
    let Some(uid) = order_uid(&req) else {
        return Err(no_route());
    };
    let order = state.query.order_json(uid).await?;
    // Both parts share the cached buffer: no copy, and the tag is validated, not computed.
    let (etag, json) = order.into_parts();
    let Ok(etag) = HeaderValue::from_maybe_shared(etag) else {
        return Err(ApiError::internal());
    };
    if none_match(&req, etag.as_bytes()) {
        return Ok(not_modified(etag, ORDER_CACHE_CONTROL));
    }
    Ok(HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ))
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, ORDER_CACHE_CONTROL))
        .body(json))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RecentParams {
    /// How many summaries (1..=500).
    #[param(minimum = 1, maximum = 500, default = 20)]
    limit: Option<u32>,
    /// The cursor of the next page: the `before` of the previous page's `Link: rel="next"`.
    /// Opaque; pages by storage order, so a page costs the same at any depth.
    #[param(minimum = 1)]
    before: Option<i64>,
}

/// Summaries of the most recently stored orders, newest first, one page at a time: a full
/// page carries `Link: </orders?limit=N&before=C>; rel="next"`. The page changes as orders
/// arrive, so it is `Cache-Control: no-cache` with a strong `ETag` of its body: a client that
/// polls sends `If-None-Match` and gets 304 until a new order changes the page.
#[utoipa::path(
    method(get, head),
    path = "/orders",
    tag = "orders",
    params(
        RecentParams,
        ("If-None-Match" = Option<String>, Header, description = "ETags the client holds; a match gets 304"),
    ),
    responses(
        (status = 200, description = "Up to `limit` summaries, newest first", body = Vec<OrderSummary>,
         headers(
             ("Link" = String, description = "The next page, `<…>; rel=\"next\"`, when this one is full"),
             ("ETag" = String, description = "Strong entity tag of the body"),
             ("Cache-Control" = String, description = "no-cache"),
         )),
        (status = 304, description = "The client's copy (If-None-Match) is current",
         headers(("ETag" = String), ("Cache-Control" = String))),
        (status = 400, description = "`limit` out of 1..=500 (`bad_limit`), `before` below 1 (`bad_cursor`), or not numbers (`bad_query`)", body = ErrorBody),
        (status = 500, description = "A storage error that is not transient (`internal`)", body = ErrorBody),
        (status = 503, description = "PostgreSQL unreachable (`unavailable`)", body = ErrorBody,
         headers(("Retry-After" = u32, description = "Seconds"))),
    )
)]
pub(crate) async fn recent(
    req: HttpRequest,
    state: web::Data<HttpState>,
    q: web::Query<RecentParams>,
) -> Result<HttpResponse, ApiError> {
    let limit = q.limit.unwrap_or(20) as usize;
    if limit == 0 || limit > orders_domain::query::MAX_RECENT {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_limit",
            format!("limit must be 1..={}", orders_domain::query::MAX_RECENT),
        ));
    }
    if q.before.is_some_and(|b| b < 1) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_cursor",
            "before must be a cursor from a Link header (1 or more)",
        ));
    }
    let page = state.query.recent(q.before.map(StoreSeq), limit).await?;
    let summaries: Vec<&OrderSummary> = page.iter().map(|(_, s)| s).collect();
    let body = serde_json::to_vec(&summaries).map_err(|_| ApiError::internal())?;
    let etag = HeaderValue::from_bytes(&orders_domain::entity_tag(&body))
        .map_err(|_| ApiError::internal())?;
    if none_match(&req, etag.as_bytes()) {
        return Ok(not_modified(etag, RECENT_CACHE_CONTROL));
    }
    let mut response = HttpResponse::Ok();
    response
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, RECENT_CACHE_CONTROL));
    // A short page is the last one; a full one may be too, then the next is empty.
    if page.len() == limit
        && let Some((last, _)) = page.last()
    {
        response.insert_header((
            header::LINK,
            format!("</orders?limit={limit}&before={}>; rel=\"next\"", last.0),
        ));
    }
    Ok(response
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ))
        .body(body))
}

/// `/orders` changes whenever an order arrives: caches may keep a page but must revalidate it.
const RECENT_CACHE_CONTROL: HeaderValue = HeaderValue::from_static("no-cache");

/// The cache's counters.
#[utoipa::path(
    method(get, head),
    path = "/cache/stats",
    tag = "operations",
    responses((status = 200, description = "Cache size, bounds, counters and warm-up", body = orders_domain::CacheStats)),
)]
pub(crate) async fn cache_stats(state: web::Data<HttpState>) -> HttpResponse {
    HttpResponse::Ok().json(state.query.cache().stats())
}

/// `/healthz`'s body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Health {
    /// Always `ok`.
    status: &'static str,
}

/// Liveness: 200 while the process serves.
#[utoipa::path(
    method(get, head),
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process serves", body = Health)),
)]
pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

/// `/readyz`'s body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Ready<'a> {
    /// `ready`, `degraded` (an optional check fails) or `not_ready`.
    status: &'static str,
    /// How old the checks are, in milliseconds (they are reused for a second).
    age_ms: u64,
    #[schema(value_type = Vec<crate::Check>)]
    checks: &'a [crate::Check],
    /// What this replica consumes now (present when it consumes): its member id, the live
    /// members, and the partitions it owns with their lease epochs.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    consumer: Option<serde_json::Value>,
}

/// Ready (200) when every required check passes: `ready` if all pass, `degraded` if only
/// optional ones fail (the consumer's broker: reads do not need it). Otherwise 503
/// `not_ready`. The result is reused for [`crate::READY_TTL`], so probes cost the dependencies
/// at most one check per second however often they come.
#[utoipa::path(
    method(get, head),
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready (`ready`), or serving reads without the broker (`degraded`)", body = Ready),
        (status = 503, description = "Not ready (`not_ready`): warm-up running or PostgreSQL unreachable", body = Ready,
         headers(("Retry-After" = u32, description = "Seconds"))),
    )
)]
pub(crate) async fn readyz(state: web::Data<HttpState>) -> HttpResponse {
    let (checks, age) = state.ready.get(state.readiness.as_ref()).await;
    let ready = checks.iter().all(|c| c.ok || !c.required);
    let status = match (ready, checks.iter().all(|c| c.ok)) {
        (false, _) => "not_ready",
        (true, false) => "degraded",
        (true, true) => "ready",
    };
    let body = Ready {
        status,
        age_ms: u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
        checks: &checks,
        consumer: state.readiness.consumer(),
    };
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS))
            .insert_header((header::CACHE_CONTROL, NO_STORE))
            .json(body)
    }
}

/// Prometheus text format.
#[utoipa::path(
    method(get, head),
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4", content_type = "text/plain; version=0.0.4", body = String),
        (status = 500, description = "The metrics could not be encoded", body = ErrorBody),
    )
)]
pub(crate) async fn metrics(state: web::Data<HttpState>) -> Result<HttpResponse, ApiError> {
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
#[utoipa::path(
    method(get, head),
    path = "/schema/order.json",
    tag = "operations",
    responses((status = 200, description = "The JSON Schema (draft 2020-12) of the order message", content_type = "application/schema+json", body = Object)),
)]
pub(crate) async fn order_schema() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/schema+json")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(orders_domain::ORDER_SCHEMA_JSON)
}

/// The OpenAPI 3.1 document of these routes.
#[utoipa::path(
    method(get, head),
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "This document", content_type = "application/json", body = Object)),
)]
pub(crate) async fn openapi() -> HttpResponse {
    static DOC: LazyLock<String> = LazyLock::new(crate::openapi::document);
    HttpResponse::Ok()
        .content_type("application/json")
        .body(DOC.as_str())
}

/// An embedded file with its strong entity tag, computed once.
struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: HeaderValue,
}

impl Asset {
    fn new(body: &'static str, content_type: &'static str) -> Self {
        let tag = orders_domain::entity_tag(body.as_bytes());
        Self {
            body,
            content_type,
            etag: HeaderValue::from_bytes(&tag).unwrap_or(HeaderValue::from_static("\"\"")),
        }
    }

    /// `no-cache`: the browser revalidates each time (a new version shows at once), and a
    /// current copy costs a 304 without a body.
    fn respond(&self, req: &HttpRequest) -> HttpResponse {
        const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");
        if none_match(req, self.etag.as_bytes()) {
            return not_modified(self.etag.clone(), NO_CACHE);
        }
        HttpResponse::Ok()
            .content_type(self.content_type)
            .insert_header((header::ETAG, self.etag.clone()))
            .insert_header((header::CACHE_CONTROL, NO_CACHE))
            .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
            .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
            .body(self.body)
    }
}

static INDEX: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(INDEX_HTML, "text/html; charset=utf-8"));
static SCRIPT: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(APP_JS, "text/javascript; charset=utf-8"));
static STYLE: LazyLock<Asset> = LazyLock::new(|| Asset::new(STYLE_CSS, "text/css; charset=utf-8"));

/// The web page (embedded; `ETag`, revalidated with `If-None-Match`).
#[utoipa::path(
    method(get, head),
    path = "/",
    tag = "page",
    responses(
        (status = 200, description = "The page", content_type = "text/html", body = String, headers(("ETag" = String))),
        (status = 304, description = "The client's copy is current"),
    )
)]
pub(crate) async fn index(req: HttpRequest) -> HttpResponse {
    INDEX.respond(&req)
}

/// The page's script.
#[utoipa::path(
    method(get, head),
    path = "/static/app.js",
    tag = "page",
    responses(
        (status = 200, description = "The script", content_type = "text/javascript", body = String, headers(("ETag" = String))),
        (status = 304, description = "The client's copy is current"),
    )
)]
pub(crate) async fn app_js(req: HttpRequest) -> HttpResponse {
    SCRIPT.respond(&req)
}

/// The page's style sheet.
#[utoipa::path(
    method(get, head),
    path = "/static/style.css",
    tag = "page",
    responses(
        (status = 200, description = "The style sheet", content_type = "text/css", body = String, headers(("ETag" = String))),
        (status = 304, description = "The client's copy is current"),
    )
)]
pub(crate) async fn style_css(req: HttpRequest) -> HttpResponse {
    STYLE.respond(&req)
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn if_none_match_uses_weak_comparison_and_star() {
        let tag = b"\"abc\"";
        for (header, expected) in [
            ("\"abc\"", true),
            ("W/\"abc\"", true),
            ("\"x\", \"abc\"", true),
            ("*", true),
            ("\"abcd\"", false),
            ("abc", false),
        ] {
            let req = TestRequest::default()
                .insert_header((header::IF_NONE_MATCH, header))
                .to_http_request();
            assert_eq!(none_match(&req, tag), expected, "{header}");
        }
        assert!(!none_match(&TestRequest::default().to_http_request(), tag));
    }
}
