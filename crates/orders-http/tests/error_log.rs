#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A request that fails on storage is logged once, with its request id, method, path, status
//! and the error's chain (there is no span per request at the default level to carry them), and
//! the access line carries the same id.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orders_domain::QueryService;
use orders_domain::testing::{InMemoryCache, InMemoryRepository};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

mod common;

/// Log lines, shared with the subscriber.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_storage_failure_is_logged_with_the_request_id() {
    let lines = Lines::default();
    let writer = lines.clone();
    // As in production with LOG_FORMAT=json at INFO.
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_writer(move || writer.clone()),
        )
        .with(
            "info"
                .parse::<tracing_subscriber::filter::Targets>()
                .unwrap(),
        )
        .init();

    let repo = Arc::new(InMemoryRepository::new());
    repo.set_down(true);
    let addr = common::serve(QueryService::new(repo, Arc::new(InMemoryCache::new(10))));

    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(
            b"GET /order/unknown-1 HTTP/1.1\r\nHost: x\r\nx-request-id: probe-7\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");

    let logged: Vec<serde_json::Value> = String::from_utf8(lines.0.lock().unwrap().clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let failure: Vec<_> = logged
        .iter()
        .filter(|v| v["message"] == "storage unavailable")
        .collect();
    assert_eq!(failure.len(), 1, "{logged:#?}");
    let f = failure[0];
    assert_eq!(f["level"], "WARN");
    assert_eq!(f["request_id"], "probe-7");
    assert_eq!(f["method"], "GET");
    assert_eq!(f["path"], "/order/unknown-1");
    assert_eq!(f["status"], 503);
    assert!(
        f["error"]
            .as_str()
            .unwrap_or_default()
            .contains("simulated outage"),
        "the error's chain: {f}"
    );
    let access: Vec<_> = logged
        .iter()
        .filter(|v| v["target"] == "orders_http::access")
        .collect();
    assert_eq!(access.len(), 1, "{logged:#?}");
    assert_eq!(access[0]["request_id"], "probe-7");
    assert_eq!(access[0]["status"], 503);
}
