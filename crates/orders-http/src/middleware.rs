//! Per-request span with a request id, plus request metrics by route and status.

use std::future::{Ready, ready};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::Method;
use actix_web::http::header::{HeaderName, HeaderValue};
use futures::future::LocalBoxFuture;
use tracing::Instrument;

use crate::metrics::HttpMetrics;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

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
        // Keep a caller's id (a proxy's) so logs line up across services; otherwise a number
        // of our own. Either way a `HeaderValue` built once: no string formatting per request.
        let id = req
            .headers()
            .get(&REQUEST_ID)
            .filter(|v| v.len() <= 64 && v.to_str().is_ok())
            .cloned()
            .unwrap_or_else(|| HeaderValue::from(NEXT_ID.fetch_add(1, Ordering::Relaxed)));
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
                tracing::debug!(
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
