//! Helpers for ingestion tests against a real broker and a real PostgreSQL.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orders_cache::DashCache;
use orders_domain::{IngestService, OrderCache, OrderSource};
use orders_kafka::{
    Consumer, ConsumerConfig, ConsumerMetrics, KafkaConfig, KafkaSource, OrderProducer,
};
use orders_postgres::{PgConfig, PgRepository};
use tokio::sync::watch;

/// The shared broker of the local stack (`just broker-up`), from `KAFKA_BROKER`.
pub fn broker() -> String {
    std::env::var("KAFKA_BROKER").unwrap_or_else(|_| "localhost:9092".into())
}

pub fn unique_topic(name: &str) -> String {
    format!(
        "test-{name}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

pub fn kafka_config(broker: &str, topic: &str) -> KafkaConfig {
    KafkaConfig {
        brokers: vec![broker.to_owned()],
        topic: topic.to_owned(),
        create_topic_partitions: Some(3),
        fetch_max_wait: Duration::from_millis(200),
        request_deadline: Duration::from_secs(3),
        ..KafkaConfig::default()
    }
}

/// Creates the topic with 3 partitions and returns a producer for it.
pub async fn producer(broker: &str, topic: &str) -> OrderProducer {
    let p = OrderProducer::connect(&kafka_config(broker, topic))
        .await
        .unwrap_or_else(|e| {
            panic!("Kafka broker not reachable at {broker} ({e}); start it with `just broker-up`")
        });
    assert_eq!(p.partition_count(), 3);
    p
}

/// A test database plus a plain SQL client to check what is stored.
pub struct Db {
    pub config: PgConfig,
    pub sql: tokio_postgres::Client,
}

impl Db {
    pub async fn new() -> Self {
        let config = orders_postgres::testing::create_test_database().await;
        PgRepository::connect(&config).await.unwrap();
        let sql = sql_client(&config).await;
        Self { config, sql }
    }

    pub async fn count(&self, query: &str) -> i64 {
        self.sql.query_one(query, &[]).await.unwrap().get(0)
    }

    pub async fn offsets(&self, topic: &str) -> BTreeMap<i32, i64> {
        self.sql
            .query(
                "SELECT partition, next_offset FROM consumer_offsets WHERE topic = $1",
                &[&topic],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    /// Waits until `query` counts `want`, or panics after `secs`.
    pub async fn wait_count(&self, query: &str, want: i64, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let n = self.count(query).await;
            if n == want {
                return;
            }
            assert!(n < want, "{query}: {n} exceeds {want}");
            assert!(
                Instant::now() < deadline,
                "{query}: {n} of {want} after {secs} s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Db {
    /// Exact accounting of `topic`: on every partition, the orders read from it plus its
    /// rejections equal its stored next offset (each offset below it handled exactly once; the
    /// tests' partitions start at 0 and hold no control records); every order has its delivery,
    /// its payment and exactly the items its generator gave it (uid `{prefix}{n}` has
    /// `ITEM_MIX[n % 3]`); and, when given, the rejections are exactly `want` by position.
    pub async fn assert_accounting(
        &self,
        topic: &str,
        prefix: &str,
        want: Option<&BTreeMap<(i32, i64), String>>,
    ) {
        let per_partition = |q: &'static str| async move {
            self.sql
                .query(q, &[&topic])
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get::<_, i32>(0), r.get::<_, i64>(1)))
                .collect::<BTreeMap<i32, i64>>()
        };
        let orders = per_partition(
            "SELECT source_partition, count(*) FROM orders WHERE source_topic = $1 GROUP BY 1",
        )
        .await;
        let rejected = per_partition(
            "SELECT partition, count(*) FROM rejected_messages WHERE topic = $1 GROUP BY 1",
        )
        .await;
        let offsets = self.offsets(topic).await;
        for (p, next) in &offsets {
            let handled = orders.get(p).unwrap_or(&0) + rejected.get(p).unwrap_or(&0);
            assert_eq!(
                handled,
                *next,
                "partition {p}: {} orders + {} rejections != stored next offset {next}",
                orders.get(p).unwrap_or(&0),
                rejected.get(p).unwrap_or(&0)
            );
        }
        for p in orders.keys().chain(rejected.keys()) {
            assert!(
                offsets.contains_key(p),
                "partition {p} has rows but no offset"
            );
        }
        let n_orders: i64 = orders.values().sum();
        for table in ["deliveries", "payments"] {
            assert_eq!(
                self.count(&format!(
                    "SELECT count(*) FROM {table} JOIN orders USING (order_uid)"
                ))
                .await,
                n_orders,
                "one {table} row per order"
            );
        }
        let items = self
            .sql
            .query(
                "SELECT o.order_uid, count(i.order_uid) FROM orders o
                 LEFT JOIN items i USING (order_uid) GROUP BY 1",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(items.len() as i64, n_orders);
        for r in &items {
            let uid: &str = r.get(0);
            let n: u64 = uid
                .strip_prefix(prefix)
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected order {uid}"));
            assert_eq!(
                r.get::<_, i64>(1),
                orders_domain::sample::ITEM_MIX[(n % 3) as usize] as i64,
                "items of {uid}"
            );
        }
        if let Some(want) = want {
            let got: BTreeMap<(i32, i64), String> = self
                .sql
                .query(
                    "SELECT partition, \"offset\", reason FROM rejected_messages WHERE topic = $1",
                    &[&topic],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| ((r.get(0), r.get(1)), r.get(2)))
                .collect();
            assert_eq!(&got, want, "rejections by position");
        }
    }
}

/// Sends `good` over the 3 partitions in chunks with one message of every bad kind between
/// the chunks; returns the bad messages' positions and reasons.
pub async fn send_mixed(
    p: &mut OrderProducer,
    good: Vec<Option<Vec<u8>>>,
) -> BTreeMap<(i32, i64), String> {
    let mut want = BTreeMap::new();
    let per_chunk = good.len().div_ceil(9).max(1);
    for (i, chunk) in good.chunks(per_chunk).enumerate() {
        let partition = (i % 3) as i32;
        p.send_to(partition, chunk.to_vec()).await.unwrap();
        if i < 3 {
            for (reason, value) in orders_domain::sample::invalid_messages() {
                let offset = p.send_to(partition, vec![value]).await.unwrap()[0];
                want.insert((partition, offset), reason.as_str().to_owned());
            }
        }
    }
    want
}

pub use orders_postgres::testing::sql_client;

/// A running consumer (as the service runs it) that can be stopped gracefully or aborted.
pub struct RunningConsumer {
    pub shutdown: watch::Sender<bool>,
    pub task: tokio::task::JoinHandle<()>,
    pub repo: PgRepository,
    pub cache: Arc<DashCache>,
}

pub async fn start_consumer(db: &PgConfig, broker: &str, topic: &str) -> RunningConsumer {
    start_consumer_with(db, kafka_config(broker, topic), None).await
}

/// [`start_consumer`] with a Kafka configuration of the test's own and, optionally, metrics.
pub async fn start_consumer_with(
    db: &PgConfig,
    kafka: KafkaConfig,
    metrics: Option<ConsumerMetrics>,
) -> RunningConsumer {
    start_consumer_caching_through(db, kafka, metrics, |cache| cache).await
}

/// [`start_consumer_with`] whose ingestion reaches the cache through `through` (a wrapper of
/// the real cache that the test controls).
pub async fn start_consumer_caching_through(
    db: &PgConfig,
    kafka: KafkaConfig,
    metrics: Option<ConsumerMetrics>,
    through: impl FnOnce(Arc<DashCache>) -> Arc<dyn OrderCache>,
) -> RunningConsumer {
    let repo = PgRepository::connect(&PgConfig {
        pool_size: 4,
        ..db.clone()
    })
    .await
    .unwrap();
    let cache = Arc::new(DashCache::new(100_000));
    let ingest = IngestService::new(Arc::new(repo.clone()), through(cache.clone()));
    let source: Arc<dyn OrderSource> = Arc::new(KafkaSource::connect(kafka).await.unwrap());
    let config = ConsumerConfig {
        discovery_interval: Duration::from_secs(1),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        ..ConsumerConfig::default()
    };
    let (shutdown, rx) = watch::channel(false);
    let mut consumer = Consumer::new(source, ingest, config);
    if let Some(m) = metrics {
        consumer = consumer.with_metrics(m);
    }
    let task = tokio::spawn(consumer.run(rx));
    RunningConsumer {
        shutdown,
        task,
        repo,
        cache,
    }
}

impl RunningConsumer {
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("consumer stops")
            .unwrap();
        self.repo.close();
    }

    /// A crash: the task is dropped wherever it is (an open transaction is never committed).
    pub async fn abort(self) {
        self.task.abort();
        let _ = self.task.await;
        self.repo.close();
    }
}

/// Generated orders as messages.
pub fn orders(prefix: &str, n: u64) -> Vec<Option<Vec<u8>>> {
    (0..n)
        .map(|i| Some(serde_json::to_vec(&orders_domain::sample::mixed_order(prefix, i)).unwrap()))
        .collect()
}

/// A tansu broker of the test's own (for restarts), on a free port with sqlite storage.
pub struct OwnBroker {
    pub addr: String,
    /// The address the broker gives clients in its metadata (a proxy's, or `addr`).
    advertised: String,
    dir: PathBuf,
    child: Option<Child>,
}

pub fn tansu_binary() -> PathBuf {
    let dir = std::env::var("ORDERS_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/orders/tools")
        });
    let bin = dir.join("bin/tansu");
    assert!(
        bin.exists(),
        "tansu not found at {} (run `just broker-up` to install it)",
        bin.display()
    );
    bin
}

/// A free local port (for a server started right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl OwnBroker {
    pub fn start() -> Self {
        let addr = format!("127.0.0.1:{}", free_port());
        Self::start_at(addr.clone(), addr)
    }

    /// Listens on `addr` and tells clients (in metadata) to connect to `advertised`, so that
    /// every connection after the bootstrap one goes where the test wants (through a proxy).
    pub fn start_at(addr: String, advertised: String) -> Self {
        let dir =
            std::env::temp_dir().join(format!("orders-tansu-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let mut b = Self {
            addr,
            advertised,
            dir,
            child: None,
        };
        b.restart();
        b
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        let url = format!("tcp://{}", self.addr);
        let advertised = format!("tcp://{}", self.advertised);
        let child = Command::new(tansu_binary())
            .current_dir(&self.dir)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
            ])
            .args(["--storage-engine", "sqlite://data/tansu.db"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&self.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "own tansu did not start on {}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The test venv's Python with confluent-kafka and noida-db (`scripts/python-deps.sh`).
pub fn test_python() -> String {
    let python = std::env::var("ORDERS_TEST_PYTHON").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../.local/venv/bin/python").to_owned()
    });
    assert!(
        std::path::Path::new(&python).exists(),
        "no Python with confluent-kafka at {python}; run `just test-deps` (scripts/python-deps.sh)"
    );
    python
}

/// Runs `tests/python_producer.py` with `args`; panics with its stderr if it fails.
pub async fn python_producer(args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python_producer.py");
    let out = tokio::process::Command::new(test_python())
        .arg(script)
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "python producer {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A noida-db server with only its Kafka service: a Kafka-protocol broker with transactions
/// (tansu has none). The binary ships inside the `noida-db` wheel of the test venv; it is run
/// directly (not through the wheel's wrapper script) so that killing it leaves no orphan.
pub struct NoidaBroker {
    pub addr: String,
    dir: PathBuf,
    child: Child,
}

impl NoidaBroker {
    pub fn start() -> Self {
        let found = Command::new(test_python())
            .args([
                "-c",
                "from importlib.resources import files; print(files('noida_db').joinpath('noida-db'))",
            ])
            .output()
            .unwrap();
        assert!(
            found.status.success(),
            "noida-db is not installed in the test venv; run `just test-deps` (scripts/python-deps.sh): {}",
            String::from_utf8_lossy(&found.stderr)
        );
        let bin = String::from_utf8(found.stdout).unwrap().trim().to_owned();
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("orders-noida-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new(&bin)
            .args([
                "start",
                "--only",
                "kafka",
                "--kafka-port",
                &port.to_string(),
            ])
            .arg("--data-dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run noida-db at {bin}: {e}"));
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "noida-db did not start on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { addr, dir, child }
    }
}

impl Drop for NoidaBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP proxy in front of a broker that can make connections half-open: they stay open but
/// nothing more passes through them, in either direction (a dead peer behind a NAT or a
/// firewall that dropped its state looks like this to the client).
pub struct StallProxy {
    pub addr: String,
    state: Arc<std::sync::Mutex<ProxyState>>,
}

#[derive(Default)]
struct ProxyState {
    /// A connection stalls at its first Fetch request (other requests pass).
    stall_fetches: bool,
    /// One flag per connection so far.
    connections: Vec<Arc<std::sync::atomic::AtomicBool>>,
    /// Connections accepted from now on that are stalled from their first byte, counted from 1.
    stall_new: Vec<usize>,
    accepted_since_arm: usize,
}

impl StallProxy {
    pub async fn start(target: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(std::sync::Mutex::new(ProxyState::default()));
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let stalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
                {
                    let mut s = st.lock().unwrap();
                    s.accepted_since_arm += 1;
                    let n = s.accepted_since_arm;
                    if s.stall_new.contains(&n) {
                        stalled.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                    s.connections.push(stalled.clone());
                }
                let target = target.clone();
                let stall_fetches = st.lock().unwrap().stall_fetches;
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    if stall_fetches {
                        tokio::spawn(pipe_requests(cr, sw, stalled.clone()));
                    } else {
                        tokio::spawn(pipe(cr, sw, stalled.clone()));
                    }
                    pipe(sr, cw, stalled).await;
                });
            }
        });
        Self { addr, state }
    }

    /// Every connection open now stops forwarding, without closing. New ones work.
    pub fn stall_open_connections(&self) {
        for c in &self.state.lock().unwrap().connections {
            c.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Connections accepted from now on stall at their first Fetch request; other requests
    /// (metadata, list offsets) are answered.
    pub fn stall_fetches(&self) {
        self.state.lock().unwrap().stall_fetches = true;
    }

    /// The `nth` connection accepted from now on (counting from 1) forwards nothing.
    pub fn stall_new_connection(&self, nth: usize) {
        let mut s = self.state.lock().unwrap();
        s.accepted_since_arm = 0;
        s.stall_new = vec![nth];
    }
}

/// Copies `from` to `to` until EOF; once `stalled`, holds both ends open and forwards nothing.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    stalled: Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if stalled.load(std::sync::atomic::Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stalled.load(std::sync::atomic::Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Client-to-broker copy that forwards whole request frames (size `i32`, then `api_key` `i16`)
/// and stalls the connection at the first Fetch (API key 1).
async fn pipe_requests(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    stalled: Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        while pending.len() >= 6 {
            let size = i32::from_be_bytes(pending[..4].try_into().unwrap()) as usize;
            if pending.len() < 4 + size {
                break;
            }
            let api_key = i16::from_be_bytes(pending[4..6].try_into().unwrap());
            if api_key == 1 {
                stalled.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            if stalled.load(std::sync::atomic::Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            let frame: Vec<u8> = pending.drain(..4 + size).collect();
            if to.write_all(&frame).await.is_err() {
                return;
            }
        }
    }
}

/// Polls `done` every 10 ms until it holds; panics with `what` after `within`.
pub async fn wait_until(what: &str, within: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
