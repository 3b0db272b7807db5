//! Per-request span with a request id, request metrics by route and status, and the access
//! log line (target `orders_http::access`, INFO).

use std::future::{Ready, ready};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::Method;
use actix_web::http::header::{HeaderName, HeaderValue};
use futures::future::LocalBoxFuture;
use tracing::Instrument;

use crate::metrics::HttpMetrics;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A new UUID v7 (RFC 9562): 48 bits of Unix milliseconds, then 74 random bits. Unique across
/// restarts and replicas without coordination, and sortable by time. Built by hand from the
/// thread's RNG, so no lock is shared between workers.
fn new_request_id() -> HeaderValue {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let random: u128 = rand::random();
    let v = (u128::from(millis & 0xffff_ffff_ffff) << 80)
        | (0x7 << 76) // version
        | ((random & 0xfff) << 64) // rand_a
        | (0b10 << 62) // variant
        | ((random >> 12) & ((1 << 62) - 1)); // rand_b
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = uuid::Uuid::from_u128(v).hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("-"))
}

/// The method as a metric label: the standard methods by name, anything else `other`
/// (actix accepts any token as a method, so `curl -X ANYTHING` must not add a series).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

pub(crate) struct Observe {
    metrics: HttpMetrics,
}

impl Observe {
    pub(crate) fn new(metrics: HttpMetrics) -> Self {
        Self { metrics }
    }
}

impl<S, B> Transform<S, ServiceRequest> for Observe
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = ObserveMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(ObserveMiddleware {
            service,
            metrics: self.metrics.clone(),
        }))
    }
}

pub(crate) struct ObserveMiddleware<S> {
    service: S,
    metrics: HttpMetrics,
}

impl<S, B> Service<ServiceRequest> for ObserveMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let started = Instant::now();
        // Keep a caller's id (a proxy's) so logs line up across services; otherwise a UUID v7
        // of our own.
        let id = req
            .headers()
            .get(&REQUEST_ID)
            .filter(|v| !v.is_empty() && v.len() <= 64 && v.to_str().is_ok())
            .cloned()
            .unwrap_or_else(new_request_id);
        let span = tracing::info_span!(
            "http",
            request_id = id.to_str().unwrap_or_default(),
            method = %req.method(),
            path = req.path()
        );
        let metrics = self.metrics.clone();
        let fut = self.service.call(req);
        Box::pin(
            async move {
                let mut res = fut.await?;
                let status = res.status();
                {
                    let req = res.request();
                    // Every label value comes from a fixed set (route patterns, known methods,
                    // status codes), so no request can create series without end.
                    let route = req.match_pattern();
                    let labels = [
                        route.as_deref().unwrap_or("unmatched"),
                        method_label(req.method()),
                        status.as_str(),
                    ];
                    metrics.requests.with_label_values(&labels).inc();
                    metrics
                        .latency
                        .with_label_values(&labels)
                        .observe(started.elapsed().as_secs_f64());
                }
                res.headers_mut().insert(REQUEST_ID, id);
                // In the request's span (id, method, path). Off by default in text mode
                // (telemetry), where a line per request would drown the rest.
                tracing::info!(
                    target: "orders_http::access",
                    status = status.as_u16(),
                    micros = started.elapsed().as_micros() as u64,
                    "request"
                );
                Ok(res)
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_uuid_v7_and_unique() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        let u = uuid::Uuid::parse_str(a.to_str().unwrap_or_default()).expect("a UUID");
        assert_eq!(u.get_version_num(), 7);
        assert_eq!(u.get_variant(), uuid::Variant::RFC4122);
        let (secs, _) = u.get_timestamp().expect("v7 has a timestamp").to_unix();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        assert!(now.abs_diff(secs) <= 2, "{secs} vs {now}");
    }

    #[test]
    fn only_standard_methods_become_labels() {
        for (m, label) in [
            (Method::GET, "GET"),
            (Method::HEAD, "HEAD"),
            (Method::POST, "POST"),
            (Method::PUT, "PUT"),
            (Method::DELETE, "DELETE"),
            (Method::PATCH, "PATCH"),
            (Method::OPTIONS, "OPTIONS"),
            (Method::TRACE, "other"),
            (Method::CONNECT, "other"),
        ] {
            assert_eq!(method_label(&m), label);
        }
        for made_up in ["ANYTHING", "get", "X-1"] {
            let m = Method::from_bytes(made_up.as_bytes()).expect("a token");
            assert_eq!(method_label(&m), "other", "{made_up}");
        }
    }
}
