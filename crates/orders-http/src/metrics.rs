use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

/// HTTP, cache and read-path metrics (`orders_http_*`, `orders_cache_*`, `orders_read_*`).
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub(crate) cache: CacheGauges,
    pub(crate) reads: ReadGauges,
}

/// The miss path of the query use case, read at scrape time.
#[derive(Debug, Clone)]
pub(crate) struct ReadGauges {
    pub(crate) in_flight: IntGauge,
    pub(crate) limit: IntGauge,
    pub(crate) queries: IntGauge,
    pub(crate) shared: IntGauge,
    pub(crate) overloaded: IntGauge,
}

#[derive(Debug, Clone)]
pub(crate) struct CacheGauges {
    pub(crate) entries: IntGauge,
    pub(crate) capacity: IntGauge,
    pub(crate) bytes: IntGauge,
    pub(crate) max_bytes: IntGauge,
    pub(crate) hits: IntGauge,
    pub(crate) misses: IntGauge,
    pub(crate) evictions: IntGauge,
    pub(crate) warmup_loaded: IntGauge,
    pub(crate) warmup_millis: IntGauge,
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
                "HTTP request latency",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
            &["route", "method", "status"],
        )?;
        let g = |name: &str, help: &str| IntGauge::new(name, help);
        let cache = CacheGauges {
            entries: g("orders_cache_entries", "Orders in the cache")?,
            capacity: g("orders_cache_capacity", "Most orders the cache holds")?,
            bytes: g("orders_cache_bytes", "Bytes of JSON held by the cache")?,
            max_bytes: g(
                "orders_cache_max_bytes",
                "Most bytes of JSON the cache holds",
            )?,
            // Gauges mirroring the cache's own monotonic counters (read at scrape time).
            hits: g("orders_cache_hits", "Cache hits since start")?,
            misses: g("orders_cache_misses", "Cache misses since start")?,
            evictions: g("orders_cache_evictions", "Cache evictions since start")?,
            warmup_loaded: g("orders_cache_warmup_loaded", "Orders loaded at warm-up")?,
            warmup_millis: g("orders_cache_warmup_milliseconds", "Warm-up duration")?,
        };
        let reads = ReadGauges {
            in_flight: g(
                "orders_read_misses_in_flight",
                "Repository reads for cache misses running or queued now",
            )?,
            limit: g(
                "orders_read_max_concurrent_misses",
                "Most repository reads for cache misses at once (MAX_CONCURRENT_MISSES)",
            )?,
            queries: g(
                "orders_read_db_queries",
                "Repository reads for cache misses since start",
            )?,
            shared: g(
                "orders_read_shared",
                "Cache misses that joined a queued read of the same uid since start",
            )?,
            overloaded: g(
                "orders_read_overloaded",
                "Cache misses refused with 503 (too many in flight) since start",
            )?,
        };
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        for gauge in [
            &cache.entries,
            &cache.capacity,
            &cache.bytes,
            &cache.max_bytes,
            &cache.hits,
            &cache.misses,
            &cache.evictions,
            &cache.warmup_loaded,
            &cache.warmup_millis,
            &reads.in_flight,
            &reads.limit,
            &reads.queries,
            &reads.shared,
            &reads.overloaded,
        ] {
            registry.register(Box::new(gauge.clone()))?;
        }
        Ok(Self {
            requests,
            latency,
            cache,
            reads,
        })
    }
}
