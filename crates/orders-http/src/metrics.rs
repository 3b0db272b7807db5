use std::sync::{Arc, Mutex};

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

/// HTTP metrics, updated per request (`orders_http_*`): requests by route, method and
/// status, and their latency.
///
/// Each actix worker records into series of its own ([`Self::shard`]) and a scrape adds the
/// shards up. With one shared series per label set, both workers' requests updated the same
/// atomics (a counter and the histogram's four), and the cache line moving between cores
/// cost about 4% of a worker's time on a cached read. What a scrape shows is the same: every
/// request recorded before it, summed.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    inner: Arc<Shards>,
}

#[derive(Debug)]
struct Shards {
    /// Unused series, kept for their descriptions and options (each shard is made alike).
    requests: IntCounterVec,
    latency: HistogramVec,
    shards: Mutex<Vec<HttpShard>>,
}

/// One worker's series of [`HttpMetrics`].
#[derive(Debug, Clone)]
pub struct HttpShard {
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
}

const HTTP_LABELS: [&str; 3] = ["route", "method", "status"];

fn requests_vec() -> prometheus::Result<IntCounterVec> {
    IntCounterVec::new(
        Opts::new(
            "orders_http_requests_total",
            "HTTP requests by route, method and status",
        ),
        &HTTP_LABELS,
    )
}

fn latency_vec() -> prometheus::Result<HistogramVec> {
    HistogramVec::new(
        HistogramOpts::new(
            "orders_http_request_duration_seconds",
            "HTTP request latency in seconds",
        )
        .buckets(latency_buckets()),
        &HTTP_LABELS,
    )
}

impl HttpMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = Self {
            inner: Arc::new(Shards {
                requests: requests_vec()?,
                latency: latency_vec()?,
                shards: Mutex::new(Vec::new()),
            }),
        };
        registry.register(Box::new(metrics.clone()))?;
        Ok(metrics)
    }

    /// Series for one more worker, added into every scrape from now on.
    pub fn shard(&self) -> prometheus::Result<HttpShard> {
        let shard = HttpShard {
            requests: requests_vec()?,
            latency: latency_vec()?,
        };
        self.inner
            .shards
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(shard.clone());
        Ok(shard)
    }
}

/// A metric's labels as one sort key.
fn label_key(m: &prometheus::proto::Metric) -> Vec<(String, String)> {
    m.get_label()
        .iter()
        .map(|l| (l.name().to_owned(), l.value().to_owned()))
        .collect()
}

/// `families` (one per shard, all of one metric) as one family: counters and histograms of
/// the same labels added up.
fn merge(mut families: Vec<MetricFamily>) -> Option<MetricFamily> {
    use std::collections::BTreeMap;
    let mut merged: BTreeMap<Vec<(String, String)>, prometheus::proto::Metric> = BTreeMap::new();
    let mut out = families.first().cloned()?;
    for family in &mut families {
        for m in family.take_metric() {
            let key = label_key(&m);
            let Some(into) = merged.get_mut(&key) else {
                merged.insert(key, m);
                continue;
            };
            match out.get_field_type() {
                prometheus::proto::MetricType::COUNTER => {
                    let mut c = into.get_counter().clone();
                    c.set_value(c.get_value() + m.get_counter().get_value());
                    into.set_counter(c);
                }
                prometheus::proto::MetricType::HISTOGRAM => {
                    let (a, b) = (into.get_histogram(), m.get_histogram());
                    let mut h = a.clone();
                    h.set_sample_count(a.get_sample_count() + b.get_sample_count());
                    h.set_sample_sum(a.get_sample_sum() + b.get_sample_sum());
                    let buckets = a
                        .get_bucket()
                        .iter()
                        .zip(b.get_bucket())
                        .map(|(x, y)| {
                            let mut bucket = x.clone();
                            bucket
                                .set_cumulative_count(x.cumulative_count() + y.cumulative_count());
                            bucket
                        })
                        .collect();
                    h.set_bucket(buckets);
                    into.set_histogram(h);
                }
                // Only counters and histograms are sharded.
                _ => {}
            }
        }
    }
    out.set_metric(merged.into_values().collect());
    Some(out)
}

impl Collector for HttpMetrics {
    fn desc(&self) -> Vec<&Desc> {
        let mut descs = self.inner.requests.desc();
        descs.extend(self.inner.latency.desc());
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let shards = self
            .inner
            .shards
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let requests = shards.iter().flat_map(|s| s.requests.collect()).collect();
        let latency = shards.iter().flat_map(|s| s.latency.collect()).collect();
        [merge(requests), merge(latency)]
            .into_iter()
            .flatten()
            .filter(|f| !f.get_metric().is_empty())
            .collect()
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
        "Bytes held by the cache (JSON and entity tags, or messages not read yet)",
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The scrape's text for `registry`.
    fn scrape(registry: &Registry) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap()
    }

    #[test]
    fn a_scrape_adds_up_the_workers_series() {
        let registry = Registry::new();
        let metrics = HttpMetrics::register(&registry).unwrap();
        assert!(!scrape(&registry).contains("orders_http_requests_total"));
        let (a, b) = (metrics.shard().unwrap(), metrics.shard().unwrap());
        let hit = ["/order/{order_uid}", "GET", "200"];
        let miss = ["/order/{order_uid}", "GET", "404"];
        a.requests.with_label_values(&hit).inc_by(2);
        b.requests.with_label_values(&hit).inc_by(3);
        b.requests.with_label_values(&miss).inc();
        for (shard, secs) in [(&a, 0.0002), (&a, 0.003), (&b, 0.0002)] {
            shard.latency.with_label_values(&hit).observe(secs);
        }
        let text = scrape(&registry);
        let line = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no {name} in\n{text}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .to_owned()
        };
        let labels = r#"method="GET",route="/order/{order_uid}",status="#;
        assert_eq!(
            line(&format!("orders_http_requests_total{{{labels}\"200\"}}")),
            "5"
        );
        assert_eq!(
            line(&format!("orders_http_requests_total{{{labels}\"404\"}}")),
            "1"
        );
        let h = "orders_http_request_duration_seconds";
        assert_eq!(line(&format!("{h}_count{{{labels}\"200\"}}")), "3");
        let sum: f64 = line(&format!("{h}_sum{{{labels}\"200\"}}"))
            .parse()
            .unwrap();
        assert!((sum - 0.0034).abs() < 1e-12, "{sum}");
        assert_eq!(
            line(&format!("{h}_bucket{{{labels}\"200\",le=\"0.00025\"}}")),
            "2"
        );
        assert_eq!(
            line(&format!("{h}_bucket{{{labels}\"200\",le=\"0.005\"}}")),
            "3"
        );
        // One family per metric, with one series per label set.
        assert_eq!(text.matches("# TYPE orders_http_requests_total").count(), 1);
        assert_eq!(text.matches("orders_http_requests_total{").count(), 2);
    }
}
