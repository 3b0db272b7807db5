use prometheus::Registry;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts};

use orders_domain::QueryService;

/// Request latency buckets in seconds: 100 µs up to 10 s (a cache hit is well under a
/// millisecond; a miss waiting on a slow PostgreSQL can take seconds).
pub fn latency_buckets() -> Vec<f64> {
    vec![
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0,
    ]
}

/// HTTP metrics, updated per request (`orders_http_*`).
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
}

impl HttpMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "orders_http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "orders_http_request_duration_seconds",
                "HTTP request latency in seconds",
            )
            .buckets(latency_buckets()),
            &["route", "method", "status"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        Ok(Self { requests, latency })
    }
}

/// The cache's and the miss path's figures, read from their own atomics at scrape time (so the
/// read path updates nothing for metrics): monotonic ones as counters (`_total`), the others
/// as gauges.
#[derive(Debug)]
pub struct QueryCollector {
    query: QueryService,
    descs: Vec<Desc>,
}

/// `(name, help, counter?)` of every metric [`QueryCollector`] exports.
const QUERY_METRICS: &[(&str, &str, bool)] = &[
    (
        "orders_cache_hits_total",
        "Cache lookups that found the order",
        true,
    ),
    (
        "orders_cache_misses_total",
        "Cache lookups that did not",
        true,
    ),
    (
        "orders_cache_evictions_total",
        "Orders evicted from the cache (FIFO)",
        true,
    ),
    ("orders_cache_entries", "Orders in the cache", false),
    (
        "orders_cache_capacity",
        "Most orders the cache holds",
        false,
    ),
    (
        "orders_cache_bytes",
        "Bytes held by the cache (JSON and entity tags)",
        false,
    ),
    (
        "orders_cache_max_bytes",
        "Most bytes the cache holds",
        false,
    ),
    (
        "orders_cache_warmup_loaded",
        "Orders loaded by the start-up warm-up",
        false,
    ),
    (
        "orders_cache_warmup_seconds",
        "Duration of the start-up warm-up in seconds",
        false,
    ),
    (
        "orders_read_misses_in_flight",
        "Repository reads for cache misses running or queued now",
        false,
    ),
    (
        "orders_read_max_concurrent_misses",
        "Most repository reads for cache misses at once (MAX_CONCURRENT_MISSES)",
        false,
    ),
    (
        "orders_read_db_queries_total",
        "Repository reads for cache misses",
        true,
    ),
    (
        "orders_read_shared_total",
        "Cache misses that joined a queued read of the same uid",
        true,
    ),
    (
        "orders_read_overloaded_total",
        "Cache misses refused with 503 (too many in flight)",
        true,
    ),
];

impl QueryCollector {
    /// Registers the collector of `query`'s cache and miss path in `registry`.
    pub fn register(registry: &Registry, query: QueryService) -> prometheus::Result<()> {
        let descs = QUERY_METRICS
            .iter()
            .map(|(name, help, _)| {
                Desc::new(
                    (*name).into(),
                    (*help).into(),
                    Vec::new(),
                    Default::default(),
                )
            })
            .collect::<prometheus::Result<_>>()?;
        registry.register(Box::new(Self { query, descs }))
    }
}

impl Collector for QueryCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = self.query.cache().stats();
        let m = self.query.miss_stats();
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let values: [f64; 14] = [
            s.hits as f64,
            s.misses as f64,
            s.evictions as f64,
            s.size as f64,
            s.capacity as f64,
            s.bytes as f64,
            clamp(s.max_bytes as u64) as f64,
            s.warmup_loaded as f64,
            s.warmup_millis as f64 / 1000.0,
            m.in_flight as f64,
            m.limit as f64,
            m.queries as f64,
            m.shared as f64,
            m.rejected as f64,
        ];
        let mut out = Vec::with_capacity(QUERY_METRICS.len());
        for ((name, help, counter), value) in QUERY_METRICS.iter().zip(values) {
            // Fresh metrics per scrape, set from the source of truth: no state to drift.
            let family = if *counter {
                IntCounter::new(*name, *help).map(|c| {
                    c.inc_by(value as u64);
                    c.collect()
                })
            } else if name.ends_with("_seconds") {
                Gauge::new(*name, *help).map(|g| {
                    g.set(value);
                    g.collect()
                })
            } else {
                IntGauge::new(*name, *help).map(|g| {
                    g.set(value as i64);
                    g.collect()
                })
            };
            out.extend(family.unwrap_or_default());
        }
        out
    }
}
