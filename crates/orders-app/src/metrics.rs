//! Metrics of what ingestion stores that no adapter sees: orders with unknown fields.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use orders_domain::ingest::IngestObserver;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

/// Most field names that get a label of their own; later ones are counted as `other`. The
/// names come from producers, so the label set must be bounded.
pub const MAX_FIELD_LABELS: usize = 50;
/// Longest field name (in bytes) that gets a label of its own.
pub const MAX_FIELD_LABEL_BYTES: usize = 64;
/// The label of every field name past the bound.
pub const OTHER: &str = "other";

/// `orders_stored_with_unknown_fields_total` and `orders_unknown_fields_total{field}`.
#[derive(Debug, Clone)]
pub struct UnknownFieldMetrics {
    /// Orders stored with at least one unknown field.
    pub orders: IntCounter,
    /// Orders stored with an unknown field, by its path (`loyalty_points`, `delivery.floor`,
    /// `items[].gift_wrap`); bounded to [`MAX_FIELD_LABELS`] names plus `other`.
    pub fields: IntCounterVec,
    labelled: Arc<Mutex<HashSet<String>>>,
}

impl UnknownFieldMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            orders: IntCounter::new(
                "orders_stored_with_unknown_fields_total",
                "Orders stored with fields the model does not know (UNKNOWN_FIELDS=keep)",
            )?,
            fields: IntCounterVec::new(
                Opts::new(
                    "orders_unknown_fields_total",
                    "Orders stored with an unknown field, by the field's path from the top \
                     level (at most 50 names, the rest as other)",
                ),
                &["field"],
            )?,
            labelled: Arc::new(Mutex::new(HashSet::new())),
        };
        registry.register(Box::new(m.orders.clone()))?;
        registry.register(Box::new(m.fields.clone()))?;
        Ok(m)
    }

    /// The label for `path`: itself while there is room and it is short and printable,
    /// else `other`.
    pub fn label<'a>(&self, path: &'a str) -> &'a str {
        if path.len() > MAX_FIELD_LABEL_BYTES || path.chars().any(char::is_control) {
            return OTHER;
        }
        let Ok(mut labelled) = self.labelled.lock() else {
            return OTHER;
        };
        if labelled.contains(path) {
            return path;
        }
        if labelled.len() < MAX_FIELD_LABELS {
            labelled.insert(path.to_owned());
            return path;
        }
        OTHER
    }
}

impl IngestObserver for UnknownFieldMetrics {
    fn stored_with_unknown_fields(&self, paths: &[String]) {
        self.orders.inc();
        // An order is counted once per label, even when several of its fields fall in `other`.
        let mut seen: Vec<&str> = Vec::with_capacity(paths.len());
        for p in paths {
            let label = self.label(p);
            if !seen.contains(&label) {
                seen.push(label);
                self.fields.with_label_values(&[label]).inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn labels_are_bounded() {
        let m = UnknownFieldMetrics::register(&Registry::new()).unwrap();
        for i in 0..MAX_FIELD_LABELS + 10 {
            m.stored_with_unknown_fields(&[format!("f{i}"), format!("g{i}")]);
        }
        m.stored_with_unknown_fields(&["x".repeat(65), "a\u{1b}[31m".into()]);
        let families = prometheus::core::Collector::collect(&m.fields);
        let labels: Vec<String> = families[0]
            .get_metric()
            .iter()
            .map(|mm| mm.get_label()[0].value().to_owned())
            .collect();
        assert_eq!(labels.len(), MAX_FIELD_LABELS + 1);
        assert!(labels.contains(&OTHER.to_owned()));
        assert_eq!(m.orders.get(), (MAX_FIELD_LABELS + 11) as u64);
        assert_eq!(m.fields.with_label_values(&["f0"]).get(), 1);
        // 35 orders had both names past the bound, 1 had two unfit names: once each.
        assert_eq!(m.fields.with_label_values(&[OTHER]).get(), 36);
    }
}
