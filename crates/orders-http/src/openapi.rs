//! The OpenAPI 3.1 document served at `/openapi.json`, generated from the handlers'
//! `#[utoipa::path]` annotations and the domain model's schemas (`orders-domain`'s `openapi`
//! feature), so it cannot drift from the code without a test (schemathesis, in
//! `orders-app/tests/contract.rs`) noticing.

use utoipa::OpenApi;
use utoipa::openapi::RefOr;

use crate::handlers;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "orders",
        description = "Orders ingested from Kafka into PostgreSQL, served from an in-memory cache. \
                       Every route answers GET and HEAD; any other method gets 405 with `Allow`. \
                       Errors have the body `{\"error\": code, \"message\": text}`; every response \
                       carries `x-request-id` (the caller's, or a new UUID v7).",
    ),
    paths(
        handlers::order,
        handlers::recent,
        handlers::cache_stats,
        handlers::healthz,
        handlers::readyz,
        handlers::metrics,
        handlers::openapi,
        handlers::order_schema,
        handlers::index,
        handlers::app_js,
        handlers::style_css,
    ),
    components(schemas(
        orders_domain::Order,
        orders_domain::Delivery,
        orders_domain::Payment,
        orders_domain::Item,
        orders_domain::OrderSummary,
        orders_domain::CacheStats,
        handlers::ErrorBody,
        handlers::Health,
        handlers::Ready,
        crate::Check,
    )),
    tags(
        (name = "orders", description = "Stored orders"),
        (name = "operations", description = "Health, readiness, metrics, cache counters, this document"),
        (name = "page", description = "The web page"),
    ),
)]
struct ApiDoc;

/// The document as pretty JSON, with the reference order as the example of an order.
pub fn document() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    let example: Option<serde_json::Value> =
        serde_json::from_str(orders_domain::REFERENCE_ORDER_JSON).ok();
    if let Some(item) = doc.paths.paths.get_mut("/order/{order_uid}") {
        for op in [item.get.as_mut(), item.head.as_mut()]
            .into_iter()
            .flatten()
        {
            if let Some(RefOr::T(ok)) = op.responses.responses.get_mut("200") {
                for content in ok.content.values_mut() {
                    content.example.clone_from(&example);
                }
            }
        }
    }
    doc.to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"internal\",\"message\":\"{e}\"}}"))
}
