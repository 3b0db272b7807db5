use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// The consumer's Prometheus metrics (`orders_*`).
#[derive(Debug, Clone)]
pub struct ConsumerMetrics {
    pub ingested: IntCounter,
    pub rejected: IntCounterVec,
    pub batches: IntCounter,
    pub commit_seconds: Histogram,
    pub lag: IntGaugeVec,
    pub next_offset: IntGaugeVec,
    pub errors: IntCounterVec,
    pub fenced: IntCounter,
    pub offset_resets: IntCounterVec,
    pub partitions_owned: IntGauge,
    pub rebalances: IntCounter,
    pub lease_changes: IntCounterVec,
}

impl ConsumerMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            ingested: IntCounter::new("orders_ingested_total", "Orders newly stored")?,
            rejected: IntCounterVec::new(
                Opts::new(
                    "orders_messages_rejected_total",
                    "Messages rejected, by reason",
                ),
                &["reason"],
            )?,
            batches: IntCounter::new("orders_batches_committed_total", "Batches committed")?,
            commit_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "orders_batch_commit_seconds",
                    "Time to store one batch (one transaction), in seconds",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
            )?,
            lag: IntGaugeVec::new(
                Opts::new(
                    "orders_consumer_lag",
                    "High watermark minus next offset, per partition",
                ),
                &["partition"],
            )?,
            next_offset: IntGaugeVec::new(
                Opts::new(
                    "orders_consumer_next_offset",
                    "Next offset to read, per partition",
                ),
                &["partition"],
            )?,
            errors: IntCounterVec::new(
                Opts::new("orders_consumer_errors_total", "Consumer errors, by kind"),
                &["kind"],
            )?,
            fenced: IntCounter::new(
                "orders_consumer_fenced_commits_total",
                "Batches dropped because another writer had moved their partition's offset or taken its lease",
            )?,
            offset_resets: IntCounterVec::new(
                Opts::new(
                    "orders_consumer_offset_resets_total",
                    "Partitions restarted at the earliest offset, by reason (retention, recreated)",
                ),
                &["reason"],
            )?,
            partitions_owned: IntGauge::new(
                "orders_partitions_owned",
                "Partitions this replica consumes now (under a lease when replicas share the topic)",
            )?,
            rebalances: IntCounter::new(
                "orders_consumer_rebalances_total",
                "Heartbeats that changed the set of partitions this replica owns",
            )?,
            lease_changes: IntCounterVec::new(
                Opts::new(
                    "orders_consumer_lease_changes_total",
                    "Partition leases claimed, released (to rebalance or on shutdown) and lost (taken over after this replica's lease lapsed)",
                ),
                &["change"],
            )?,
        };
        registry.register(Box::new(m.ingested.clone()))?;
        registry.register(Box::new(m.rejected.clone()))?;
        registry.register(Box::new(m.batches.clone()))?;
        registry.register(Box::new(m.commit_seconds.clone()))?;
        registry.register(Box::new(m.lag.clone()))?;
        registry.register(Box::new(m.next_offset.clone()))?;
        registry.register(Box::new(m.errors.clone()))?;
        registry.register(Box::new(m.fenced.clone()))?;
        registry.register(Box::new(m.offset_resets.clone()))?;
        registry.register(Box::new(m.partitions_owned.clone()))?;
        registry.register(Box::new(m.rebalances.clone()))?;
        registry.register(Box::new(m.lease_changes.clone()))?;
        for change in ["claimed", "released", "lost"] {
            m.lease_changes.with_label_values(&[change]);
        }
        for reason in ["retention", "recreated"] {
            m.offset_resets.with_label_values(&[reason]);
        }
        for r in orders_domain::RejectReason::ALL {
            m.rejected.with_label_values(&[r.as_str()]);
        }
        Ok(m)
    }
}
