#![allow(clippy::unwrap_used, clippy::expect_used)]
//! No hung connections (issue 14, item 10): a connection that goes silent without closing, and
//! a statement stuck behind a lock, each end in a retryable error instead of a stall.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use orders_domain::sample::generated_order;
use orders_domain::{
    AcceptedOrder, OrderRepository, PartitionOffset, Position, RepositoryError, StoreBatch,
};
use orders_postgres::{PgConfig, PgRepository};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP proxy to PostgreSQL that can "freeze": the connections open at that moment stop
/// forwarding but stay open (what a hung middlebox or a half-open connection looks like to the
/// client), while connections made afterwards work.
struct FreezingProxy {
    addr: std::net::SocketAddr,
    generation: Arc<AtomicU64>,
}

/// Copies `from` to `to` while `alive()`; then holds both open and forwards nothing.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    alive: impl Fn() -> bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    while alive() {
        match tokio::time::timeout(Duration::from_millis(50), from.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(n)) if alive() && to.write_all(&buf[..n]).await.is_err() => return,
            _ => {}
        }
    }
    std::future::pending::<()>().await;
    drop((from, to));
}

impl FreezingProxy {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let generation = Arc::new(AtomicU64::new(0));
        let gen_ = generation.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let born = gen_.load(Ordering::SeqCst);
                let gen_ = gen_.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let server = TcpStream::connect(target).await.unwrap();
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let alive = move || gen_.load(Ordering::SeqCst) == born;
                    tokio::join!(pump(cr, sw, alive.clone()), pump(sr, cw, alive));
                });
            }
        });
        Self { addr, generation }
    }

    /// Every connection open now goes silent for good.
    fn freeze(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

fn batch(n: u64, next_offset: i64) -> StoreBatch {
    let order = generated_order("silent-", n, 2);
    StoreBatch {
        topic: "t".into(),
        orders: vec![AcceptedOrder {
            payload: order.to_json_bytes().unwrap(),
            order,
            position: Position {
                topic: "t".into(),
                partition: 0,
                offset: next_offset - 1,
            },
        }],
        offsets: vec![PartitionOffset {
            partition: 0,
            next_offset,
            expected: (next_offset > 1).then_some(next_offset - 1),
            mark: None,
            lease_epoch: None,
        }],
        ..StoreBatch::default()
    }
}

#[tokio::test]
async fn a_connection_that_goes_silent_ends_in_a_retryable_error_not_a_stall() {
    let db = orders_postgres::testing::create_test_database().await;
    PgRepository::connect(&db).await.unwrap();
    let proxy = FreezingProxy::start(format!("{}:{}", db.host, db.port)).await;
    let config = PgConfig {
        host: "127.0.0.1".into(),
        port: proxy.addr.port(),
        pool_size: 1,
        statement_timeout: Duration::from_secs(1),
        ..db.clone()
    };
    let repo = PgRepository::connect(&config).await.unwrap();
    repo.store_batch(&batch(1, 1)).await.unwrap();

    proxy.freeze();
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(30), repo.store_batch(&batch(2, 2)))
        .await
        .expect("the call must not hang on a silent connection")
        .expect_err("nothing answers");
    assert!(err.is_transient(), "retryable: {err:?}");
    assert!(
        started.elapsed() < config.query_timeout() + Duration::from_secs(3),
        "gave up after {:?}",
        started.elapsed()
    );

    // The silent connection left the pool: the retry gets a fresh one and succeeds.
    tokio::time::timeout(Duration::from_secs(30), repo.store_batch(&batch(2, 2)))
        .await
        .expect("the retry must not hang")
        .unwrap();
    assert!(repo.get("silent-2").await.unwrap().is_some());
}

#[tokio::test]
async fn a_statement_stuck_behind_a_lock_is_cancelled_and_retryable() {
    let db = orders_postgres::testing::create_test_database().await;
    let repo = PgRepository::connect(&PgConfig {
        statement_timeout: Duration::from_secs(1),
        ..db.clone()
    })
    .await
    .unwrap();
    repo.store_batch(&batch(1, 1)).await.unwrap();
    let mut admin = orders_postgres::testing::sql_client(&db).await;
    let tx = admin.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE consumer_offsets IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(20), repo.store_batch(&batch(2, 2)))
        .await
        .expect("the statement timeout ends the wait")
        .expect_err("the lock is held");
    assert!(
        matches!(err, RepositoryError::Unavailable { .. }),
        "retryable: {err:?}"
    );
    tx.rollback().await.unwrap();
    repo.store_batch(&batch(2, 2)).await.unwrap();
    assert!(repo.get("silent-2").await.unwrap().is_some());
}
