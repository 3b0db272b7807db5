//! Logging set-up: human-readable text by default, JSON lines with `LOG_FORMAT=json`.
//!
//! The filter is `LOG_LEVEL` (or `RUST_LOG`, which wins), checked strictly: a typo is an error
//! at start-up, not a silently different filter. Under it sit quiet defaults for what would
//! drown the console, each dropped when the filter names its target itself:
//! - `rskafka=warn`: the driver logs an INFO line per broker connection;
//! - in text mode only, `orders_http::access=warn`: the access log (a line per request, at
//!   INFO) is for JSON logs, which go to a collector.
//!
//! Per-request cost: a filter of targets and levels only (almost every one) is a
//! [`Targets`] filter, which decides per call site once and keeps no per-span state;
//! `EnvFilter` takes shared locks on every span's creation, entry, exit and close, and is used
//! only when a directive filters on spans or fields. Text is coloured only on a terminal.

use std::io::IsTerminal;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

/// Target of the access log lines (see `orders-http`'s middleware).
pub const ACCESS_TARGET: &str = "orders_http::access";

const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Why a log filter was refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "{var}={value:?} is not a log filter: {reason} (e.g. info, debug, or info,orders_kafka=debug; levels: trace, debug, info, warn, error, off)"
)]
pub struct FilterError {
    var: &'static str,
    value: String,
    reason: String,
}

/// A checked log filter.
#[derive(Debug)]
pub enum LogFilter {
    /// Targets and levels only.
    Targets(Box<Targets>),
    /// With span or field directives (`target[span{field=value}]=level`).
    Env(Box<EnvFilter>),
}

impl std::fmt::Display for LogFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Targets(t) => t.fmt(f),
            Self::Env(e) => e.fmt(f),
        }
    }
}

/// Checks `value` and builds the filter with the quiet defaults beneath it.
pub fn filter(var: &'static str, value: &str, format: LogFormat) -> Result<LogFilter, FilterError> {
    let err = |reason: String| FilterError {
        var,
        value: value.to_owned(),
        reason,
    };
    if value.trim().is_empty() {
        return Err(err("it is empty".into()));
    }
    for directive in value.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        // `target=level`, `target[span{field=value}]=level`, or a bare level. A bare word is
        // a target to tracing ("inf" would mean "everything from target inf"): almost always a
        // typo, so it must be a level here.
        let level = match directive.rsplit_once('=') {
            Some((target, level)) if !level.contains(['}', ']']) => {
                if target.trim().is_empty() {
                    return Err(err(format!("{directive:?} has no target before '='")));
                }
                level
            }
            Some(_) => continue,
            None => directive,
        };
        if !LEVELS.contains(&level.trim().to_ascii_lowercase().as_str()) {
            return Err(err(format!("{level:?} is not a level")));
        }
    }
    let mut directives = Vec::new();
    if !value.contains("rskafka") {
        directives.push("rskafka=warn".to_owned());
    }
    if format == LogFormat::Text && !value.contains(ACCESS_TARGET) {
        directives.push(format!("{ACCESS_TARGET}=warn"));
    }
    directives.push(value.to_owned());
    let directives = directives.join(",");
    if directives.contains('[') {
        EnvFilter::builder()
            .parse(directives)
            .map(|e| LogFilter::Env(Box::new(e)))
            .map_err(|e| err(e.to_string()))
    } else {
        directives
            .parse()
            .map(|t| LogFilter::Targets(Box::new(t)))
            .map_err(|e: tracing_subscriber::filter::ParseError| err(e.to_string()))
    }
}

/// Installs the global subscriber; a second call (tests) is a no-op. `RUST_LOG`, when set,
/// is used instead of `level`.
pub fn init(level: &str, format: LogFormat) -> Result<(), FilterError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(rust_log) => filter("RUST_LOG", &rust_log, format)?,
        Err(_) => filter("LOG_LEVEL", level, format)?,
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
    };
    let registry = tracing_subscriber::registry().with(fmt);
    let _ = match filter {
        LogFilter::Targets(t) => registry.with(*t).try_init(),
        LogFilter::Env(e) => registry.with(*e).try_init(),
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_filters_are_checked_strictly() {
        for ok in [
            "info",
            "WARN",
            "info,orders_kafka=debug",
            "orders_app=trace",
            "off",
            "info,orders_http[http{method=GET}]=debug",
        ] {
            assert!(filter("LOG_LEVEL", ok, LogFormat::Text).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "inf",
            "verbose",
            "info,orders_kafka=loud",
            "=debug",
            "info,rskafka",
        ] {
            let e = filter("LOG_LEVEL", bad, LogFormat::Text)
                .expect_err(bad)
                .to_string();
            assert!(e.starts_with("LOG_LEVEL="), "{e}");
        }
    }

    #[test]
    fn quiet_defaults_give_way_to_the_filter() {
        let shown = |value, format| filter("LOG_LEVEL", value, format).unwrap().to_string();
        let text = shown("info", LogFormat::Text);
        assert!(text.contains("rskafka=warn") && text.contains("orders_http::access=warn"));
        let json = shown("info", LogFormat::Json);
        assert!(
            json.contains("rskafka=warn") && !json.contains("access"),
            "{json}"
        );
        assert!(!shown("info,rskafka=info", LogFormat::Text).contains("rskafka=warn"));
    }

    #[test]
    fn span_directives_get_the_env_filter_and_the_rest_the_lock_free_one() {
        let kind = |value| match filter("LOG_LEVEL", value, LogFormat::Json).unwrap() {
            LogFilter::Targets(_) => "targets",
            LogFilter::Env(_) => "env",
        };
        assert_eq!(kind("info"), "targets");
        assert_eq!(
            kind("warn,orders_kafka=debug,orders_http::access=info"),
            "targets"
        );
        assert_eq!(kind("info,orders_http[http{method=GET}]=debug"), "env");
    }
}
