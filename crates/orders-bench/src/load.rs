//! A small closed-loop HTTP/1.1 load generator: `connections` keep-alive connections, each
//! sending the next request as soon as the previous response is read. It runs on a runtime of
//! its own (one thread), so the server under test keeps its own threads. Loopback only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::stats::{cpu_seconds, quantile, thread_cpu_seconds};

#[derive(Debug, Clone, Serialize)]
pub(crate) struct LoadResult {
    pub(crate) requests: u64,
    /// Responses whose status was not the expected one.
    pub(crate) unexpected: u64,
    pub(crate) secs: f64,
    pub(crate) p50_us: u32,
    pub(crate) p99_us: u32,
    /// CPU time of everything but the load generator (the server, here) per request, in µs,
    /// over the warm-up and the measured window: less noisy than requests/s on shared cores.
    pub(crate) server_cpu_us_per_request: f64,
}

impl LoadResult {
    pub(crate) fn rps(&self) -> f64 {
        self.requests as f64 / self.secs
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Load {
    pub(crate) connections: usize,
    /// Not measured: lets connections open and caches settle.
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
    /// Upper bound of requests per connection (the loop is bounded in count and in time).
    pub(crate) max_requests_per_connection: u64,
}

/// Sends GETs for `paths` (round robin, each connection starting elsewhere) to `addr`.
pub(crate) fn run(
    addr: SocketAddr,
    paths: Vec<String>,
    expect: u16,
    load: &Load,
) -> anyhow::Result<LoadResult> {
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "load is only sent to the loopback interface"
    );
    anyhow::ensure!(!paths.is_empty(), "no paths to request");
    let requests: Arc<Vec<Vec<u8>>> = Arc::new(
        paths
            .iter()
            .map(|p| {
                format!("GET {p} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: orders-bench\r\n\r\n")
                    .into_bytes()
            })
            .collect(),
    );
    let load = load.clone();
    let cpu0 = cpu_seconds();
    let generator = std::thread::Builder::new()
        .name("bench-load".into())
        .spawn(move || {
            let own0 = thread_cpu_seconds();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let begin = Instant::now() + load.warmup;
                let end = begin + load.duration;
                let mut tasks = Vec::with_capacity(load.connections);
                for c in 0..load.connections {
                    let requests = requests.clone();
                    let max = load.max_requests_per_connection;
                    tasks.push(tokio::spawn(async move {
                        connection(addr, &requests, c * 7919, expect, begin, end, max).await
                    }));
                }
                let mut latencies = Vec::new();
                let (mut unexpected, mut all) = (0, 0);
                for t in tasks {
                    let (lat, bad, total) = t.await??;
                    latencies.extend(lat);
                    unexpected += bad;
                    all += total;
                }
                latencies.sort_unstable();
                let result = LoadResult {
                    requests: latencies.len() as u64,
                    unexpected,
                    secs: load.duration.as_secs_f64(),
                    p50_us: quantile(&latencies, 0.50),
                    p99_us: quantile(&latencies, 0.99),
                    server_cpu_us_per_request: 0.0,
                };
                anyhow::Ok((result, all, thread_cpu_seconds() - own0))
            })
        })?;
    let (mut result, all, own) = generator
        .join()
        .map_err(|_| anyhow::anyhow!("load generator thread panicked"))??;
    let server = cpu_seconds() - cpu0 - own;
    result.server_cpu_us_per_request = server * 1e6 / all.max(1) as f64;
    Ok(result)
}

/// One connection's loop; returns the latencies (µs) of requests completed inside the window.
async fn connection(
    addr: SocketAddr,
    requests: &[Vec<u8>],
    start: usize,
    expect: u16,
    begin: Instant,
    end: Instant,
    max: u64,
) -> anyhow::Result<(Vec<u32>, u64, u64)> {
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut latencies = Vec::new();
    let mut unexpected = 0;
    let mut all = 0;
    for i in 0..max {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let req = &requests[(start + i as usize) % requests.len()];
        stream.write_all(req).await?;
        let status = read_response(&mut stream, &mut buf).await?;
        let done = Instant::now();
        all += 1;
        if now >= begin {
            latencies.push(u32::try_from((done - now).as_micros()).unwrap_or(u32::MAX));
            if status != expect {
                unexpected += 1;
            }
        }
    }
    Ok((latencies, unexpected, all))
}

/// Reads one response with a `Content-Length` body; returns its status.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<u16> {
    buf.clear();
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut res = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head) = res.parse(buf)? {
            let status = res.code.unwrap_or(0);
            let len: usize = res
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                .context("response without Content-Length")?;
            while buf.len() < head + len {
                read_more(stream, buf).await?;
            }
            anyhow::ensure!(
                buf.len() == head + len,
                "unexpected bytes after the response"
            );
            return Ok(status);
        }
        read_more(stream, buf).await?;
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk).await?;
    anyhow::ensure!(n > 0, "server closed the connection");
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}
