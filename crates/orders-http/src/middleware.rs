//! Per-request span with a request id, request metrics by route and status, and the access
//! log line (target `orders_http::access`, INFO).

use std::cell::RefCell;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready as ready_poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use bytes::{BufMut, BytesMut};
use prometheus::{Histogram, IntCounter};
use tracing::Instrument;
use tracing::instrument::Instrumented;

use crate::handlers::ApiError;
use crate::metrics::{HttpMetrics, HttpShard};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Text length of a request id of ours (a hyphenated UUID).
const ID_LEN: usize = uuid::fmt::Hyphenated::LENGTH;
/// Request ids per buffer: their header values share one allocation.
const IDS_PER_BUFFER: usize = 256;

/// A new UUID v7 (RFC 9562): 48 bits of Unix milliseconds, then 74 random bits. Unique across
/// restarts and replicas without coordination, and sortable by time. Built by hand from the
/// thread's RNG, so no lock is shared between workers.
fn new_uuid_v7() -> uuid::Uuid {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let random: u128 = rand::random();
    let v = (u128::from(millis & 0xffff_ffff_ffff) << 80)
        | (0x7 << 76) // version
        | ((random & 0xfff) << 64) // rand_a
        | (0b10 << 62) // variant
        | ((random >> 12) & ((1 << 62) - 1)); // rand_b
    uuid::Uuid::from_u128(v)
}

/// Request ids as header values, written into a buffer that [`IDS_PER_BUFFER`] of them share
/// (each holds a reference to it), so a request costs no allocation of its own for its id.
#[derive(Default)]
struct RequestIds {
    buf: BytesMut,
}

impl RequestIds {
    fn next(&mut self) -> HeaderValue {
        if self.buf.capacity() < ID_LEN {
            self.buf = BytesMut::with_capacity(ID_LEN * IDS_PER_BUFFER);
        }
        let mut text = [0u8; ID_LEN];
        self.buf.put_slice(
            new_uuid_v7()
                .hyphenated()
                .encode_lower(&mut text)
                .as_bytes(),
        );
        HeaderValue::from_maybe_shared(self.buf.split_to(ID_LEN).freeze())
            .unwrap_or(HeaderValue::from_static("-"))
    }
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

/// One series of the request metrics, resolved from its labels once.
struct Series {
    route: Box<str>,
    method: &'static str,
    status: StatusCode,
    requests: IntCounter,
    latency: Histogram,
}

/// Most series a worker keeps resolved; past it (an unlikely mix of routes, methods and
/// statuses) the labels are looked up per request, as before.
const MAX_RESOLVED: usize = 64;

/// A worker's own state: its resolved series (a hit finds its series in a short list instead
/// of hashing three labels under the shared vector's lock) and its id buffer. Workers are
/// single-threaded, hence `RefCell`.
struct Worker {
    metrics: HttpShard,
    series: RefCell<Vec<Series>>,
    ids: RefCell<RequestIds>,
}

impl Worker {
    fn record(&self, route: &str, method: &'static str, status: StatusCode, secs: f64) {
        let mut series = self.series.borrow_mut();
        let found = series
            .iter()
            .position(|s| s.status == status && s.method == method && &*s.route == route);
        let i = match found {
            Some(i) => i,
            None => {
                let labels = [route, method, status.as_str()];
                let requests = self.metrics.requests.with_label_values(&labels);
                let latency = self.metrics.latency.with_label_values(&labels);
                if series.len() >= MAX_RESOLVED {
                    requests.inc();
                    latency.observe(secs);
                    return;
                }
                series.push(Series {
                    route: route.into(),
                    method,
                    status,
                    requests,
                    latency,
                });
                series.len() - 1
            }
        };
        series[i].requests.inc();
        series[i].latency.observe(secs);
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

    // Called once per worker.
    fn new_transform(&self, service: S) -> Self::Future {
        // A worker's own series: no atomic shared with the other workers per request.
        let Ok(shard) = self.metrics.shard() else {
            tracing::error!("cannot create a worker's HTTP metric series");
            return ready(Err(()));
        };
        ready(Ok(ObserveMiddleware {
            service,
            worker: Rc::new(Worker {
                metrics: shard,
                series: RefCell::new(Vec::new()),
                ids: RefCell::new(RequestIds::default()),
            }),
        }))
    }
}

pub(crate) struct ObserveMiddleware<S> {
    service: S,
    worker: Rc<Worker>,
}

impl<S, B> Service<ServiceRequest> for ObserveMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = ObserveFuture<S::Future>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let started = Instant::now();
        // Keep a caller's id (a proxy's) so logs line up across services; otherwise a UUID v7
        // of our own.
        let id = match req
            .headers()
            .get(&REQUEST_ID)
            .filter(|v| !v.is_empty() && v.len() <= 64 && v.to_str().is_ok())
        {
            Some(theirs) => theirs.clone(),
            None => self.worker.ids.borrow_mut().next(),
        };
        let method = method_label(req.method());
        // At DEBUG: at the default level a span per request would cost more than the rest of
        // a cached read's own work (its fields are formatted when it is created). The access
        // line and the logged errors carry the id themselves. Fields by `Display`: the text
        // formatter then copies them as they are (`Debug` would quote and escape them).
        let span = tracing::debug_span!(
            "http",
            request_id = %id.to_str().unwrap_or_default(),
            method = %method,
            path = %req.path()
        );
        ObserveFuture {
            inner: self.service.call(req).instrument(span),
            done: Some(Done {
                started,
                id,
                method,
                worker: self.worker.clone(),
            }),
        }
    }
}

/// What [`ObserveFuture`] does with the response.
struct Done {
    started: Instant,
    id: HeaderValue,
    method: &'static str,
    worker: Rc<Worker>,
}

impl Done {
    fn finish<B>(self, res: &mut ServiceResponse<B>) {
        let status = res.status();
        // Every label value comes from a fixed set (route names, which are the patterns;
        // known methods; status codes), so no request can create series without end.
        // `match_name` borrows; `match_pattern` would build a String.
        let route = res.request().match_name().unwrap_or("unmatched");
        self.worker.record(
            route,
            self.method,
            status,
            self.started.elapsed().as_secs_f64(),
        );
        let id = self.id.to_str().unwrap_or_default();
        let path = res.request().path();
        if let Some((cause, is_error)) = res
            .response()
            .error()
            .and_then(|e| e.as_error::<ApiError>())
            .and_then(ApiError::cause)
        {
            if is_error {
                tracing::error!(request_id = %id, method = %self.method, path = %path,
                    status = status.as_u16(), error = %cause, "storage error");
            } else {
                tracing::warn!(request_id = %id, method = %self.method, path = %path,
                    status = status.as_u16(), error = %cause, "storage unavailable");
            }
        }
        // Off by default in text mode (telemetry), where a line per request would drown the
        // rest; its fields are only formatted when it is on.
        tracing::info!(
            target: "orders_http::access",
            request_id = %id,
            method = %self.method,
            path = %path,
            status = status.as_u16(),
            micros = self.started.elapsed().as_micros() as u64,
            "request"
        );
        res.headers_mut().insert(REQUEST_ID, self.id);
    }
}

pin_project_lite::pin_project! {
    /// The inner service's future in the request's span, then the metrics, the id header and
    /// the access log: a named type, so the middleware adds no boxed future per request.
    pub(crate) struct ObserveFuture<F> {
        #[pin]
        inner: Instrumented<F>,
        done: Option<Done>,
    }
}

impl<F, B> Future for ObserveFuture<F>
where
    F: Future<Output = Result<ServiceResponse<B>, actix_web::Error>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let mut res = ready_poll!(this.inner.as_mut().poll(cx))?;
        if let Some(done) = this.done.take() {
            let _in_span = this.inner.span().enter();
            done.finish(&mut res);
        }
        Poll::Ready(Ok(res))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_uuid_v7_and_unique() {
        let mut ids = RequestIds::default();
        let a = ids.next();
        let b = ids.next();
        assert_ne!(a, b);
        // Past one buffer's worth, the next buffer takes over.
        let all: std::collections::HashSet<HeaderValue> =
            (0..IDS_PER_BUFFER * 2 + 3).map(|_| ids.next()).collect();
        assert_eq!(all.len(), IDS_PER_BUFFER * 2 + 3);
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
