#![allow(clippy::unwrap_used)]
//! The read path under abuse, against the real app (port 0, its own PostgreSQL database):
//! bounded metric labels, bounded and shared cache misses, a read pool of its own, readiness
//! that does not depend on the broker, and a cache bounded in bytes.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use clap::Parser;
use orders_app::{Cli, Settings};
use orders_domain::sample::generated_order;
use serde_json::Value;

/// `base` (a test's database, port 0, loopback) with `flags` on top, parsed as the binary
/// parses them, so that a setting is exercised through its real flag.
fn with_flags(base: &Settings, flags: &[&str]) -> Settings {
    let port = base.db_port.to_string();
    let consume = base.consume.to_string();
    let partitions = base.kafka_partitions.to_string();
    let password = base.postgres().unwrap().password;
    let mut args = vec![
        "orders",
        "--db-host",
        &base.db_host,
        "--db-port",
        &port,
        "--db-user",
        &base.db_user,
        "--db-password",
        password.expose(),
        "--db-name",
        &base.db_name,
        "--db-pool-size",
        "4",
        "--http-host",
        "127.0.0.1",
        "--http-port",
        "0",
        "--http-workers",
        "2",
        "--consume",
        &consume,
        "--kafka-broker",
        &base.kafka_broker,
        "--kafka-topic",
        &base.kafka_topic,
        "--kafka-partitions",
        &partitions,
    ];
    if base.create_topic {
        args.push("--create-topic");
    }
    args.extend_from_slice(flags);
    Cli::try_parse_from(args).unwrap().settings
}

/// The value of one sample line of `/metrics` (`name{labels}` exactly as exposed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn metrics(app: &common::TestApp) -> String {
    app.get("/metrics").await.text().await.unwrap()
}

/// Polls `/metrics` until `series` reaches `at_least`.
async fn wait_metric(app: &common::TestApp, series: &str, at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics(app).await;
        if sample(&text, series).is_some_and(|v| v >= at_least) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} did not reach {at_least}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A transaction on the app's database that holds `LOCK TABLE {table}` until dropped or
/// rolled back: reads of that table wait, so misses stay in flight as long as the test wants.
async fn lock_table(app: &common::TestApp, table: &str) -> tokio_postgres::Client {
    let client = orders_postgres::testing::sql_client(&app.settings.postgres().unwrap()).await;
    client
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
        ))
        .await
        .unwrap();
    client
}

#[tokio::test]
async fn made_up_methods_add_no_metric_series() {
    let app = common::spawn_app().await;
    app.wait_ready().await;
    let http = reqwest::Client::new();
    for i in 0..200 {
        let method = reqwest::Method::from_bytes(format!("MADEUP{i}").as_bytes()).unwrap();
        let path = match i % 3 {
            0 => "/healthz".to_owned(),
            1 => format!("/order/uid-{i}"),
            _ => format!("/no/such/route/{i}"),
        };
        let r = http
            .request(method, format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{path}: {}", r.status());
    }
    let text = metrics(&app).await;
    let series: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("orders_http_requests_total{"))
        .filter_map(|l| l.rsplit_once("} ").map(|(labels, _)| labels))
        .collect();
    let expected: BTreeSet<&str> = [
        // The readiness polls of `wait_ready`.
        "method=\"GET\",route=\"/readyz\",status=\"200\"",
        "method=\"other\",route=\"/healthz\",status=\"405\"",
        "method=\"other\",route=\"/order/{order_uid}\",status=\"405\"",
        "method=\"other\",route=\"unmatched\",status=\"404\"",
    ]
    .into();
    // `/readyz` may also have answered 503 before warm-up was done.
    let series: BTreeSet<&str> = series
        .into_iter()
        .filter(|s| *s != "method=\"GET\",route=\"/readyz\",status=\"503\"")
        .collect();
    assert_eq!(series, expected, "{text}");
    let lines = text
        .lines()
        .filter(|l| l.starts_with("orders_http_"))
        .count();
    // At most the five series above, each a counter and a histogram (its buckets, +Inf, sum
    // and count).
    let per_series = orders_http::latency_buckets().len() + 4;
    assert!(
        lines <= 5 * per_series,
        "{lines} lines of HTTP metrics:\n{text}"
    );
    app.stop().await;
}

#[tokio::test]
async fn misses_beyond_the_bound_get_503_with_retry_after() {
    let base = common::test_settings(None).await;
    let settings = with_flags(
        &base,
        &["--max-concurrent-misses", "4", "--db-read-pool-size", "4"],
    );
    let app = common::spawn_app_with(settings).await;
    app.wait_ready().await;
    // Every miss now waits on the lock, holding its read slot.
    let lock = lock_table(&app, "orders").await;
    let mut pending: Vec<_> = (0..16)
        .map(|i| {
            let url = format!("{}/order/flood-{i}", app.base);
            tokio::spawn(async move {
                let r = reqwest::get(url).await.unwrap();
                let status = r.status().as_u16();
                let retry = r
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_owned());
                let body: Value = r.json().await.unwrap();
                (status, retry, body)
            })
        })
        .collect();
    // Twelve are refused at once, without waiting for the lock.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut refused = 0;
    while refused < 12 {
        assert!(
            Instant::now() < deadline,
            "only {refused} refused while the lock is held"
        );
        let mut still = Vec::new();
        for h in pending {
            if h.is_finished() {
                let (status, retry, body) = h.await.unwrap();
                assert_eq!(status, 503, "{body}");
                assert_eq!(retry.as_deref(), Some("1"));
                assert_eq!(body["error"], "overloaded", "{body}");
                assert!(body["message"].as_str().unwrap().contains("retry"));
                refused += 1;
            } else {
                still.push(h);
            }
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        pending.len(),
        4,
        "the bound's worth of misses are in flight"
    );
    let text = metrics(&app).await;
    assert_eq!(sample(&text, "orders_read_misses_in_flight"), Some(4.0));
    assert_eq!(sample(&text, "orders_read_overloaded_total"), Some(12.0));
    lock.batch_execute("ROLLBACK").await.unwrap();
    for h in pending {
        let (status, _, body) = h.await.unwrap();
        assert_eq!(status, 404, "{body}");
    }
    app.stop().await;
}

#[tokio::test]
async fn concurrent_misses_for_one_uid_share_one_query() {
    let base = common::test_settings(None).await;
    let settings = with_flags(&base, &["--max-concurrent-misses", "4"]);
    let app = common::spawn_app_with(settings).await;
    app.wait_ready().await;
    let lock = lock_table(&app, "orders").await;
    const N: usize = 50;
    let handles: Vec<_> = (0..N)
        .map(|_| {
            let url = format!("{}/order/the-same-unknown-uid", app.base);
            tokio::spawn(async move { reqwest::get(url).await.unwrap().status().as_u16() })
        })
        .collect();
    // The first one's read waits on the lock; the second queued the next read of the uid,
    // and the other 48 joined that one.
    wait_metric(&app, "orders_read_shared_total", (N - 2) as f64).await;
    assert_eq!(
        sample(&metrics(&app).await, "orders_read_db_queries_total"),
        Some(1.0)
    );
    lock.batch_execute("ROLLBACK").await.unwrap();
    for h in handles {
        assert_eq!(h.await.unwrap(), 404);
    }
    // The others arrived after the first read had started, so its "not found" may predate
    // them: they shared the next read.
    let text = metrics(&app).await;
    let queries = sample(&text, "orders_read_db_queries_total").unwrap();
    assert!(queries <= 2.0, "{queries} queries for {N} misses:\n{text}");
    assert_eq!(sample(&text, "orders_read_overloaded_total"), Some(0.0));
    app.stop().await;
}

#[tokio::test]
async fn an_order_committed_while_its_miss_is_in_flight_is_never_404() {
    let base = common::test_settings(None).await;
    // One read connection, so the statements prepared below are the ones the misses use.
    let settings = with_flags(&base, &["--db-read-pool-size", "1"]);
    let app = common::spawn_app_with(settings).await;
    app.wait_ready().await;
    common::store_orders(&app.repo, vec![generated_order("template-", 1, 2)]).await;
    assert_eq!(app.get("/order/template-1").await.status(), 200);

    // A read's order query takes its snapshot, then its items query waits on this lock: the
    // read is in flight with a "not found" that is about to become stale.
    let lock = lock_table(&app, "items").await;
    let first = {
        let url = format!("{}/order/late-1", app.base);
        tokio::spawn(async move { reqwest::get(url).await.unwrap().status().as_u16() })
    };
    let admin = orders_postgres::testing::sql_client(&app.settings.postgres().unwrap()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "the miss never waited on the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Commit the order (without items, which are locked) while that read is in flight.
    admin
        .batch_execute(
            "BEGIN;
             INSERT INTO orders (order_uid, track_number, entry, locale, internal_signature,
                 customer_id, delivery_service, shardkey, sm_id, date_created, oof_shard)
             SELECT 'late-1', track_number, entry, locale, internal_signature, customer_id,
                 delivery_service, shardkey, sm_id, date_created, oof_shard
             FROM orders WHERE order_uid = 'template-1';
             INSERT INTO deliveries (order_uid, name, phone, zip, city, address, region, email)
             SELECT 'late-1', name, phone, zip, city, address, region, email
             FROM deliveries WHERE order_uid = 'template-1';
             INSERT INTO payments (order_uid, transaction, request_id, currency, provider,
                 amount, payment_dt, bank, delivery_cost, goods_total, custom_fee)
             SELECT 'late-1', transaction, request_id, currency, provider, amount, payment_dt,
                 bank, delivery_cost, goods_total, custom_fee
             FROM payments WHERE order_uid = 'template-1';
             COMMIT",
        )
        .await
        .unwrap();
    // A request that arrives now finds that read in progress; a scheme that let it share
    // that read's "not found" would answer 404 here.
    let second = {
        let url = format!("{}/order/late-1", app.base);
        tokio::spawn(async move { reqwest::get(url).await.unwrap().status().as_u16() })
    };
    // It is in the miss path once it queued a read (or, in a scheme that shares running
    // reads, joined one).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics(&app).await;
        if sample(&text, "orders_read_misses_in_flight").is_some_and(|v| v >= 2.0)
            || sample(&text, "orders_read_shared_total").is_some_and(|v| v >= 1.0)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "second request not in flight:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    lock.batch_execute("ROLLBACK").await.unwrap();
    let first = first.await.unwrap();
    assert!(
        first == 404 || first == 200,
        "arrived before the commit: {first}"
    );
    assert_eq!(
        second.await.unwrap(),
        200,
        "committed before the request arrived"
    );
    assert_eq!(app.get("/order/late-1").await.status(), 200);
    app.stop().await;
}

/// Waits for `/readyz` to answer 200 (within `secs`) and returns its body.
async fn ready_body(app: &common::TestApp, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let r = app.get("/readyz").await;
        if r.status() == 200 {
            return r.json().await.unwrap();
        }
        let body: Value = r.json().await.unwrap();
        assert!(
            Instant::now() < deadline,
            "not ready within {secs} s: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn check<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {body}"))
}

#[tokio::test]
async fn readyz_serves_reads_when_the_broker_is_unreachable() {
    let mut settings = common::test_settings(Some("read-no-broker")).await;
    // Nothing listens on port 1.
    settings.kafka_broker = "127.0.0.1:1".into();
    let app = common::spawn_app_with(settings).await;
    let body = ready_body(&app, 20).await;
    assert_eq!(body["status"], "degraded", "{body}");
    let kafka = check(&body, "kafka");
    assert_eq!(kafka["ok"], false, "{body}");
    assert_eq!(kafka["required"], false, "{body}");
    assert_eq!(check(&body, "postgres")["ok"], true);
    assert_eq!(check(&body, "cache_warmup")["ok"], true);
    common::store_orders(&app.repo, vec![generated_order("nobroker-", 1, 1)]).await;
    assert_eq!(app.get("/order/nobroker-1").await.status(), 200);
    assert_eq!(app.get("/order/nobroker-2").await.status(), 404);
    app.stop().await;
}

#[tokio::test]
async fn readyz_results_are_cached_for_a_second() {
    let app = common::spawn_app().await;
    app.wait_ready().await;
    // A fresh result (its age is reported), then an outage right after it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let fresh_at = loop {
        let body = ready_body(&app, 5).await;
        if body["age_ms"].as_u64().is_some_and(|a| a < 100) {
            break Instant::now();
        }
        assert!(Instant::now() < deadline, "never fresh: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let outage = orders_postgres::testing::database_outage(&app.settings.db_name).await;
    let r = app.get("/readyz").await;
    let cached_for = fresh_at.elapsed();
    if cached_for < Duration::from_millis(900) {
        assert_eq!(r.status(), 200, "cached result, {cached_for:?} old");
    }
    // Once the result is a second old, the next request probes again and sees the outage.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = app.get("/readyz").await;
        if r.status() == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "the outage never showed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        fresh_at.elapsed() >= Duration::from_millis(1000),
        "a result younger than a second was replaced"
    );
    outage.end().await;
    app.wait_ready().await;
    app.stop().await;
}

#[tokio::test]
async fn the_cache_never_exceeds_its_byte_bound() {
    const MAX: usize = 120_000;
    let base = common::test_settings(None).await;
    let repo = orders_postgres::PgRepository::connect(&base.postgres().unwrap())
        .await
        .unwrap();
    // About 5 kB of JSON each: 200 of them are eight times the bound.
    common::store_orders(
        &repo,
        (0..200).map(|n| generated_order("big-", n, 20)).collect(),
    )
    .await;
    let max = MAX.to_string();
    let settings = with_flags(&base, &["--cache-max-bytes", &max]);
    let app = common::spawn_app_with(settings).await;
    app.wait_ready().await;
    let stats = |app: &common::TestApp| {
        let url = format!("{}/cache/stats", app.base);
        async move {
            reqwest::get(url)
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let s = stats(&app).await;
    assert_eq!(s["max_bytes"].as_u64(), Some(MAX as u64), "{s}");
    let bytes = s["bytes"].as_u64().unwrap() as usize;
    assert!(bytes <= MAX, "after warm-up: {s}");
    assert!(bytes > MAX / 2, "warm-up filled the bound: {s}");
    assert_eq!(
        s["warmup_loaded"], s["size"],
        "nothing loaded only to be evicted: {s}"
    );
    assert_eq!(s["evictions"], 0, "{s}");
    // The newest are the ones warmed (a batch is stored in uid order, so ask which is newest).
    let newest: Value = app.get("/orders?limit=1").await.json().await.unwrap();
    let newest = newest[0]["order_uid"].as_str().unwrap().to_owned();
    assert_eq!(app.get(&format!("/order/{newest}")).await.status(), 200);
    assert_eq!(stats(&app).await["misses"], 0);
    // Read every order (misses fill the cache), checking the bound as it churns.
    for chunk in (0..200).collect::<Vec<_>>().chunks(20) {
        let reads: Vec<_> = chunk
            .iter()
            .map(|n| {
                let url = format!("{}/order/big-{n}", app.base);
                tokio::spawn(async move { reqwest::get(url).await.unwrap().status().as_u16() })
            })
            .collect();
        for r in reads {
            assert_eq!(r.await.unwrap(), 200);
        }
        let s = stats(&app).await;
        assert!(s["bytes"].as_u64().unwrap() as usize <= MAX, "{s}");
    }
    let s = stats(&app).await;
    assert!(s["evictions"].as_u64().unwrap() > 0, "{s}");
    let text = metrics(&app).await;
    assert_eq!(sample(&text, "orders_cache_max_bytes"), Some(MAX as f64));
    app.stop().await;
}

#[tokio::test]
async fn ingestion_keeps_committing_during_an_unknown_uid_flood() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    const ORDERS: u64 = 2_000;
    let topic = format!(
        "test-flood-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let base = common::test_settings(Some(&topic)).await;
    // Ingestion has 4 connections (DB_POOL_SIZE), reads one of their own.
    let settings = with_flags(
        &base,
        &["--db-read-pool-size", "1", "--max-concurrent-misses", "8"],
    );
    let app = common::spawn_app_with(settings).await;
    app.wait_ready().await;

    // The flood: 32 clients asking for uids that do not exist, as fast as they can.
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let flood: Vec<_> = (0..32)
        .map(|c| {
            let (stop, answered, refused) = (stop.clone(), answered.clone(), refused.clone());
            let base = app.base.clone();
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let r = http
                        .get(format!("{base}/order/flood-{c}-{i}"))
                        .send()
                        .await
                        .unwrap();
                    match r.status().as_u16() {
                        404 => answered.fetch_add(1, Ordering::Relaxed),
                        503 => refused.fetch_add(1, Ordering::Relaxed),
                        s => panic!("flood read answered {s}"),
                    };
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let kafka = orders_kafka::KafkaConfig {
        create_topic_partitions: Some(3),
        ..app.settings.kafka().unwrap()
    };
    let mut producer = orders_kafka::OrderProducer::connect(&kafka)
        .await
        .unwrap_or_else(|e| panic!("Kafka broker not reachable ({e}); `just broker-up`"));
    let values = (0..ORDERS)
        .map(|n| Some(serde_json::to_vec(&generated_order("flooded-", n, 2)).unwrap()))
        .collect();
    producer.send(values).await.unwrap();

    let sql = orders_postgres::testing::sql_client(&app.settings.postgres().unwrap()).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = metrics(&app).await;
        // The reads never have more than their own pool's one connection.
        let read_size = sample(&text, "orders_db_pool_size{pool=\"read\"}");
        assert!(read_size.is_some_and(|v| v <= 1.0), "{text}");
        let stored: i64 = sql
            .query_one("SELECT count(*) FROM orders", &[])
            .await
            .unwrap()
            .get(0);
        if stored as u64 == ORDERS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {stored} of {ORDERS} orders stored during the flood"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let during = answered.load(Ordering::Relaxed) + refused.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for f in flood {
        f.await.unwrap();
    }
    assert!(during > 500, "the flood was a flood: {during} reads");
    let text = metrics(&app).await;
    assert!(
        sample(&text, "orders_db_pool_size{pool=\"ingest\"}").is_some_and(|v| v >= 1.0),
        "{text}"
    );
    assert_eq!(app.get("/order/flooded-0").await.status(), 200);
    app.stop().await;
}
