#![allow(clippy::unwrap_used, clippy::print_stdout)]
//! Ingestion against a real Kafka-protocol broker (tansu) and a real PostgreSQL. Every test has
//! its own topic and database.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use orders_domain::{OrderCache, OrderRepository, OrderSource, QueryService};
use orders_kafka::KafkaSource;
use rand::Rng;

const ORDERS: &str = "SELECT count(*) FROM orders";
const REJECTED: &str = "SELECT count(*) FROM rejected_messages";

#[tokio::test]
async fn reference_order_reaches_postgres_and_the_query_use_case() {
    let (broker, topic) = (broker(), unique_topic("fixture"));
    let db = Db::new().await;
    let mut p = producer(&broker, &topic).await;
    p.send(vec![Some(
        orders_domain::REFERENCE_ORDER_JSON.as_bytes().to_vec(),
    )])
    .await
    .unwrap();
    let consumer = start_consumer(&db.config, &broker, &topic).await;
    db.wait_count(ORDERS, 1, 60).await;
    // Ingestion caches a committed batch's orders on a task of its own, just after the commit.
    wait_until(
        "the committed order is cached",
        Duration::from_secs(10),
        || consumer.cache.contains("b563feb7b2b84b6test"),
    )
    .await;
    let repo: Arc<dyn OrderRepository> = Arc::new(consumer.repo.clone());
    let query = QueryService::new(repo, consumer.cache.clone());
    let json = query.order_json("b563feb7b2b84b6test").await.unwrap();
    let got: serde_json::Value = serde_json::from_slice(json.json()).unwrap();
    let want: serde_json::Value =
        serde_json::from_str(orders_domain::REFERENCE_ORDER_JSON).unwrap();
    assert_eq!(got, want);
    assert_eq!(
        consumer.cache.stats().hits,
        1,
        "the committed order was cached by ingestion"
    );
    consumer.stop().await;
}

/// Every kind of bad message, with its expected reason.
fn bad_messages() -> Vec<(&'static str, Option<Vec<u8>>)> {
    orders_domain::sample::invalid_messages()
        .into_iter()
        .map(|(r, v)| (r.as_str(), v))
        .collect()
}

#[tokio::test]
async fn ten_thousand_orders_with_every_bad_kind_over_three_partitions() {
    let (broker, topic) = (broker(), unique_topic("tenk"));
    let db = Db::new().await;
    let mut p = producer(&broker, &topic).await;
    let mut expected_rejections = BTreeMap::new();
    let good = orders("tenk-", 10_000);
    let mut chunks = good.chunks(2_500);
    // Bad messages land between good ones, on every partition.
    for partition in 0..3 {
        p.send_to(partition, chunks.next().unwrap().to_vec())
            .await
            .unwrap();
        for (reason, value) in bad_messages() {
            let offset = p.send_to(partition, vec![value]).await.unwrap()[0];
            expected_rejections.insert((partition, offset), reason);
        }
    }
    p.send(chunks.next().unwrap().to_vec()).await.unwrap();
    // A re-send of an order already sent: stored once, recorded as a duplicate.
    let dup_offset = p.send_to(1, vec![good[7].clone()]).await.unwrap()[0];
    expected_rejections.insert((1, dup_offset), "duplicate");

    // The broker's raw fetch rate over the same data, as the baseline for the ingest rate.
    let source = KafkaSource::connect(kafka_config(&broker, &topic))
        .await
        .unwrap();
    let started = Instant::now();
    let mut raw = 0usize;
    let mut watermarks = BTreeMap::new();
    for partition in source.partitions().await.unwrap() {
        let mut offset = 0;
        loop {
            let b = source.fetch(partition, offset).await.unwrap();
            raw += b.records.len();
            offset = b.next_offset;
            if offset >= b.high_watermark {
                watermarks.insert(partition, b.high_watermark);
                break;
            }
        }
    }
    let raw_rate = raw as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let consumer = start_consumer(&db.config, &broker, &topic).await;
    db.wait_count(ORDERS, 10_000, 300).await;
    db.wait_count(REJECTED, expected_rejections.len() as i64, 60)
        .await;
    let ingest_rate = 10_000.0 / started.elapsed().as_secs_f64();
    println!(
        "ingest: {ingest_rate:.0} orders/s; broker raw fetch: {raw_rate:.0} records/s ({raw} records); ratio {:.2}",
        ingest_rate / raw_rate
    );
    // Offsets reach the high watermarks once everything is committed.
    let deadline = Instant::now() + Duration::from_secs(30);
    while db.offsets(&topic).await != watermarks {
        assert!(
            Instant::now() < deadline,
            "offsets {:?} != watermarks {watermarks:?}",
            db.offsets(&topic).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    consumer.stop().await;
    let want: BTreeMap<(i32, i64), String> = expected_rejections
        .iter()
        .map(|(k, v)| (*k, v.to_string()))
        .collect();
    db.assert_accounting(&topic, "tenk-", Some(&want)).await;
    assert_eq!(db.count(ORDERS).await, 10_000);
}

/// Waits until more than `than` orders are stored; returns the count.
async fn wait_progress(db: &Db, than: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = db.count(ORDERS).await;
        if n > than {
            return n;
        }
        assert!(Instant::now() < deadline, "no progress past {than} orders");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Blocks every batch transaction part-way: a lock on `items` held by an admin session stops
/// the `COPY` into it, after the transaction has moved its offset and written its orders,
/// deliveries and payments.
async fn block_commits(db: &Db) -> tokio_postgres::Client {
    let admin = sql_client(&db.config).await;
    admin
        .batch_execute("BEGIN; LOCK TABLE items IN SHARE MODE")
        .await
        .unwrap();
    admin
}

/// Waits until a consumer transaction is stuck on that lock, i.e. open with its batch half
/// written.
async fn wait_for_a_blocked_transaction(db: &Db) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let waiting = db
            .count(&format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}'
                 AND wait_event_type = 'Lock' AND state = 'active' AND xact_start IS NOT NULL
                 AND query ILIKE 'COPY items%'",
                db.config.dbname
            ))
            .await;
        if waiting > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no consumer transaction blocked on items"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn crashes_at_random_points_lose_and_duplicate_nothing() {
    const N: u64 = 20_000;
    let (broker, topic) = (broker(), unique_topic("crash"));
    let db = Db::new().await;
    let mut p = producer(&broker, &topic).await;
    let want = send_mixed(&mut p, orders("crash-", N)).await;
    let mut rng = rand::rng();
    let (mut mid_ingestion, mut inside_tx) = (0, 0);
    let mut stored = 0;
    for round in 0..6 {
        if stored == N as i64 {
            break;
        }
        if round % 2 == 0 {
            // Somewhere: mid-batch, mid-commit, idle.
            let consumer = start_consumer(&db.config, &broker, &topic).await;
            wait_progress(&db, stored).await;
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..150))).await;
            consumer.abort().await;
        } else {
            // Provably inside a transaction: its orders are written, its commit is blocked.
            let admin = block_commits(&db).await;
            let consumer = start_consumer(&db.config, &broker, &topic).await;
            wait_for_a_blocked_transaction(&db).await;
            consumer.abort().await;
            admin.batch_execute("ROLLBACK").await.unwrap();
            // The crashed transactions never commit: nothing of them appears later.
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(db.count(ORDERS).await, stored, "a crashed batch committed");
            inside_tx += 1;
        }
        stored = db.count(ORDERS).await;
        db.assert_accounting(&topic, "crash-", None).await;
        println!("crash {round}: {stored} of {N} orders stored");
        if stored < N as i64 {
            mid_ingestion += 1;
        }
    }
    assert!(
        mid_ingestion >= 2 && inside_tx >= 1,
        "crashes mid-ingestion: {mid_ingestion}, inside a transaction: {inside_tx}"
    );
    let consumer = start_consumer(&db.config, &broker, &topic).await;
    db.wait_count(ORDERS, N as i64, 300).await;
    db.wait_count(REJECTED, want.len() as i64, 60).await;
    consumer.stop().await;
    db.assert_accounting(&topic, "crash-", Some(&want)).await;
}

#[tokio::test]
async fn broker_restart_and_database_outage_during_ingestion() {
    const N: u64 = 30_000;
    let mut own = OwnBroker::start();
    let topic = unique_topic("outage");
    let db = Db::new().await;
    let mut p = producer(&own.addr, &topic).await;
    let want = send_mixed(&mut p, orders("outage-", N)).await;
    drop(p);
    let consumer = start_consumer(&db.config, &own.addr, &topic).await;

    // The broker goes away mid-ingestion and comes back with its data.
    let at_kill = wait_progress(&db, 0).await;
    own.kill();
    assert!(at_kill < N as i64, "killed mid-ingestion");
    tokio::time::sleep(Duration::from_secs(2)).await;
    own.restart();
    println!("broker restarted with {at_kill} of {N} orders stored");

    // Then the database: closed to connections, existing ones cut, while ingestion runs.
    let before = wait_progress(&db, at_kill).await;
    let outage = orders_postgres::testing::database_outage(&db.config.dbname).await;
    assert!(
        before < N as i64,
        "database outage starts mid-ingestion ({before} of {N})"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    outage.end().await;
    let db = Db {
        sql: sql_client(&db.config).await,
        config: db.config.clone(),
    };
    let right_after = db.count(ORDERS).await;
    println!("database outage: {before} orders before, {right_after} right after");

    db.wait_count(ORDERS, N as i64, 300).await;
    db.wait_count(REJECTED, want.len() as i64, 60).await;
    consumer.stop().await;
    db.assert_accounting(&topic, "outage-", Some(&want)).await;
}

#[tokio::test]
async fn orders_from_an_independent_python_client_are_ingested() {
    let python = std::env::var("ORDERS_TEST_PYTHON").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../.local/venv/bin/python").to_owned()
    });
    assert!(
        std::path::Path::new(&python).exists(),
        "no Python with confluent-kafka at {python}; run `just test-deps` (scripts/python-deps.sh)"
    );
    let (broker, topic) = (broker(), unique_topic("python"));
    let db = Db::new().await;
    drop(producer(&broker, &topic).await); // creates the topic with 3 partitions
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python_producer.py");
    let out = tokio::process::Command::new(&python)
        .args([script, &broker, &topic, "300"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "python producer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let consumer = start_consumer(&db.config, &broker, &topic).await;
    db.wait_count(ORDERS, 301, 120).await;
    db.wait_count(REJECTED, 1, 30).await;
    let reason: String = db
        .sql
        .query_one("SELECT reason FROM rejected_messages", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(reason, "invalid");
    consumer.stop().await;
    assert!(
        db.count("SELECT count(DISTINCT source_partition) FROM orders")
            .await
            >= 2,
        "spread over partitions"
    );
}

/// Orders the domain accepts but PostgreSQL refuses (here: constraints this test adds, as an
/// operator's stricter schema would): each is isolated by bisecting its batch and recorded as
/// `storage_refused` at its position; every other order of the batch is stored, and the
/// offsets move past all of them.
#[tokio::test]
async fn orders_the_database_refuses_are_isolated_and_recorded() {
    let (broker, topic) = (broker(), unique_topic("refused"));
    let db = Db::new().await;
    db.sql
        .batch_execute(
            "ALTER TABLE items ADD CONSTRAINT test_refuses CHECK (name <> 'refuse me');
             ALTER TABLE orders ADD CONSTRAINT test_refuses CHECK (customer_id <> 'refuse me')",
        )
        .await
        .unwrap();
    let p = producer(&broker, &topic).await;
    let mut in_item = orders_domain::sample::mixed_order("refused-", 1_000);
    in_item.items[0].name = "refuse me".into();
    let mut in_order = orders_domain::sample::mixed_order("refused-", 1_001);
    in_order.customer_id = "refuse me".into();
    for poison in [&in_item, &in_order] {
        assert!(
            orders_domain::validate_order(poison).is_ok(),
            "the domain accepts it"
        );
    }
    let mut values = orders("refused-", 40);
    values.insert(13, Some(serde_json::to_vec(&in_item).unwrap()));
    values.insert(29, Some(serde_json::to_vec(&in_order).unwrap()));
    p.send_to(0, values).await.unwrap();
    let consumer = start_consumer(&db.config, &broker, &topic).await;
    db.wait_count(REJECTED, 2, 60).await;
    db.wait_count(ORDERS, 40, 60).await;
    let rows = db
        .sql
        .query(
            "SELECT partition, \"offset\", reason, detail FROM rejected_messages ORDER BY \"offset\"",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(i32, i64, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        vec![
            (0, 13, "storage_refused".to_owned()),
            (0, 29, "storage_refused".to_owned())
        ]
    );
    for r in &rows {
        let detail: String = r.get(3);
        assert!(!detail.is_empty(), "the reason says why");
    }
    assert_eq!(db.offsets(&topic).await, BTreeMap::from([(0, 42)]));
    assert_eq!(
        db.count("SELECT count(*) FROM orders WHERE order_uid IN ('refused-1000', 'refused-1001')")
            .await,
        0
    );
    consumer.stop().await;
}

/// The real cache behind a gate: while it is closed, every insert waits.
#[derive(Debug)]
struct GatedCache {
    inner: Arc<orders_cache::DashCache>,
    open: std::sync::Mutex<bool>,
    opened: std::sync::Condvar,
}

impl GatedCache {
    fn set_open(&self, open: bool) {
        *self.open.lock().unwrap() = open;
        self.opened.notify_all();
    }
}

/// Opens the gate when dropped, so that a failing test does not leave a thread waiting on it.
struct OpenOnDrop(Arc<GatedCache>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.set_open(true);
    }
}

impl OrderCache for GatedCache {
    fn get(&self, order_uid: &str) -> Option<orders_domain::CachedOrder> {
        self.inner.get(order_uid)
    }
    fn contains(&self, order_uid: &str) -> bool {
        self.inner.contains(order_uid)
    }
    fn insert(&self, order_uid: &str, entry: orders_domain::CachedOrder) {
        // block_in_place: the worker's other tasks move to another thread meanwhile (a task
        // parked in its slot, such as a connection's, would otherwise wait with it).
        tokio::task::block_in_place(|| {
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.opened.wait(open).unwrap();
            }
        });
        self.inner.insert(order_uid, entry);
    }
    fn resolve(&self, order_uid: &str, json: orders_domain::OrderJson) {
        self.inner.resolve(order_uid, json);
    }
    fn stats(&self) -> orders_domain::CacheStats {
        self.inner.stats()
    }
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
    fn mark_warmed(&self, loaded: usize, took: Duration) {
        self.inner.mark_warmed(loaded, took);
    }
}

/// A committed batch's orders go into the cache beside the partition's next commit, not before
/// it: a slow cache does not hold the database up. Once the consumer has stopped, every
/// committed order is in the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_cache_does_not_hold_up_the_next_commit() {
    let (broker, topic) = (broker(), unique_topic("slow-cache"));
    let db = Db::new().await;
    let p = producer(&broker, &topic).await;
    let gated = Arc::new(GatedCache {
        inner: Arc::new(orders_cache::DashCache::new(1_000)),
        open: std::sync::Mutex::new(false),
        opened: std::sync::Condvar::new(),
    });
    let _open_at_the_end = OpenOnDrop(gated.clone());
    let consumer =
        start_consumer_caching_through(&db.config, kafka_config(&broker, &topic), None, |_| {
            gated.clone()
        })
        .await;
    let order = |n: u64| {
        let o = orders_domain::sample::generated_order("gated-", n, 1);
        Some(serde_json::to_vec(&o).unwrap())
    };
    // Two batches of one partition, the second sent once the first is committed.
    p.send_to(0, vec![order(1)]).await.unwrap();
    db.wait_count(ORDERS, 1, 60).await;
    p.send_to(0, vec![order(2)]).await.unwrap();
    db.wait_count(ORDERS, 2, 30).await;
    assert!(
        !gated.inner.contains("gated-1") && !gated.inner.contains("gated-2"),
        "the gate held both fills"
    );

    gated.set_open(true);
    consumer.stop().await;
    assert!(
        gated.inner.contains("gated-1"),
        "filled before the stop ended"
    );
    assert!(
        gated.inner.contains("gated-2"),
        "filled before the stop ended"
    );
}
