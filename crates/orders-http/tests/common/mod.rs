//! The real server over a query service, for the tests that talk to it through a socket.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use async_trait::async_trait;
use orders_domain::QueryService;
use orders_http::{Check, HttpConfig, HttpMetrics, HttpState, Readiness};

#[derive(Debug)]
struct Ready;

#[async_trait]
impl Readiness for Ready {
    async fn checks(&self) -> Vec<Check> {
        Vec::new()
    }
}

/// Serves `query` with one worker on a thread of its own; returns the address.
pub(crate) fn serve(query: QueryService) -> SocketAddr {
    let registry = prometheus::Registry::new();
    let metrics = HttpMetrics::register(&registry).expect("metrics");
    let state = HttpState::new(query, Arc::new(Ready), registry, metrics);
    let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = listener.local_addr().expect("its address");
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let config = HttpConfig {
                workers: 1,
                shutdown_timeout_secs: 1,
            };
            orders_http::serve(listener, state, &config)
                .expect("the server starts")
                .await
        })
    });
    addr
}
