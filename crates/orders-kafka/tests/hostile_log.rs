#![allow(clippy::unwrap_used, clippy::print_stdout)]
//! Logs and brokers that are legal but unkind: every compression codec, a batch no client can
//! decode, transactions with commit and abort markers, half-open connections and a partition
//! whose leader does not answer. Real brokers (tansu; noida-db where transactions are needed)
//! and a real PostgreSQL; every test has its own topic and database.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use orders_kafka::ConsumerMetrics;

const ORDERS: &str = "SELECT count(*) FROM orders";
const REJECTED: &str = "SELECT count(*) FROM rejected_messages";

/// Orders stored per partition.
async fn per_partition(db: &Db) -> BTreeMap<i32, i64> {
    db.sql
        .query(
            "SELECT source_partition, count(*) FROM orders GROUP BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Waits until the stored offsets equal `want`, or panics after `secs`.
async fn wait_offsets(db: &Db, topic: &str, want: &BTreeMap<i32, i64>, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let got = db.offsets(topic).await;
        if &got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "offsets {got:?}, want {want:?} after {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Produces orders with confluent-kafka in each of `codecs` (a topic each) and checks that all
/// are stored.
async fn codecs_are_stored(broker: &str, codecs: &[&str]) {
    for codec in codecs {
        let topic = unique_topic(codec);
        let db = Db::new().await;
        drop(producer(broker, &topic).await); // creates the topic with 3 partitions
        python_producer(&[broker, &topic, "100", codec]).await;
        let consumer = start_consumer(&db.config, broker, &topic).await;
        db.wait_count(ORDERS, 101, 30).await;
        db.wait_count(REJECTED, 1, 10).await;
        consumer.stop().await;
        println!("{broker} {codec}: 101 orders stored, 1 invalid rejected");
    }
}

/// Batches compressed with each of Kafka's four codecs by librdkafka are all decoded.
#[tokio::test]
async fn batches_in_every_kafka_codec_are_stored() {
    // tansu 0.6 cannot serve snappy batches itself (its log says `UnexpectedType("Snappy")` and
    // it closes the connection), so snappy is checked on noida-db, which keeps batches as sent.
    codecs_are_stored(&broker(), &["gzip", "lz4", "zstd"]).await;
    let noida = NoidaBroker::start();
    codecs_are_stored(&noida.addr, &["gzip", "snappy", "lz4", "zstd"]).await;
}

/// A record the client cannot decode (a timestamp no date type holds) is recorded once as
/// `undecodable` with its offset range, and the orders around it are stored. (librdkafka sends
/// each of the three in a batch of its own; tansu serves them as one batch, noida-db as sent.)
#[tokio::test]
async fn an_undecodable_batch_is_recorded_once_and_passed() {
    let (broker, topic) = (broker(), unique_topic("undecodable"));
    let db = Db::new().await;
    drop(producer(&broker, &topic).await);
    python_producer(&["--bad-timestamp", &broker, &topic]).await;
    let registry = prometheus::Registry::new();
    let metrics = ConsumerMetrics::register(&registry).unwrap();
    let consumer = start_consumer_with(
        &db.config,
        kafka_config(&broker, &topic),
        Some(metrics.clone()),
    )
    .await;
    db.wait_count(REJECTED, 1, 30).await;
    db.wait_count(ORDERS, 2, 30).await;
    wait_offsets(&db, &topic, &BTreeMap::from([(0, 3)]), 10).await;
    consumer.stop().await;

    let (partition, offset, reason, detail, no_payload) = only_rejection(&db).await;
    assert_eq!((partition, offset, reason.as_str()), (0, 1, "undecodable"));
    assert!(detail.starts_with("offsets 1..=1 (1 record"), "{detail}");
    assert!(
        detail.contains("timestamp"),
        "the decoder's reason: {detail}"
    );
    assert!(no_payload);
    assert_eq!(
        db.count("SELECT count(*) FROM orders WHERE order_uid IN ('ts-0', 'ts-2')")
            .await,
        2
    );
    assert_eq!(
        metrics.rejected.with_label_values(&["undecodable"]).get(),
        1
    );
}

/// A batch whose compressed payload is corrupt (its CRC is right, so only decompression fails)
/// is recorded once as `undecodable` with its whole offset range, and the orders on either side
/// are stored. On noida-db, which keeps batches as sent (tansu refuses such a produce).
#[tokio::test]
async fn a_corrupt_compressed_batch_is_recorded_once_and_passed() {
    let noida = NoidaBroker::start();
    let topic = unique_topic("corrupt");
    let db = Db::new().await;
    drop(producer(&noida.addr, &topic).await);
    python_producer(&["--corrupt-batch", &noida.addr, &topic]).await;
    let consumer = start_consumer(&db.config, &noida.addr, &topic).await;
    wait_offsets(&db, &topic, &BTreeMap::from([(0, 5)]), 30).await;
    consumer.stop().await;
    let (partition, offset, reason, detail, no_payload) = only_rejection(&db).await;
    assert_eq!((partition, offset, reason.as_str()), (0, 1, "undecodable"));
    assert!(
        detail.starts_with("offsets 1..=3 (3 records): "),
        "{detail}"
    );
    assert!(no_payload);
    assert_eq!(
        db.count("SELECT count(*) FROM orders WHERE order_uid IN ('cb-0', 'cb-4')")
            .await,
        2
    );
    assert_eq!(db.count(ORDERS).await, 2);
}

/// A topic written by a transactional producer (on noida-db, which has transactions): the
/// committed orders are stored, the aborted ones are not, the commit and abort markers are
/// never passed on, and the stored offset moves past the final marker.
#[tokio::test]
async fn transactional_topic_stores_committed_orders_only() {
    let noida = NoidaBroker::start();
    let topic = unique_topic("tx");
    let db = Db::new().await;
    drop(producer(&noida.addr, &topic).await);
    python_producer(&["--transactions", &noida.addr, &topic]).await;
    let consumer = start_consumer(&db.config, &noida.addr, &topic).await;
    // 4 transactions of 5 records, each followed by its marker: the high watermark is 24.
    wait_offsets(&db, &topic, &BTreeMap::from([(0, 24)]), 30).await;
    consumer.stop().await;
    let uids: Vec<String> = db
        .sql
        .query("SELECT order_uid FROM orders ORDER BY order_uid", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let want: Vec<String> = {
        let mut v: Vec<String> = (0..10).map(|i| format!("tx-c-{i}")).collect();
        v.sort();
        v
    };
    assert_eq!(uids, want, "committed orders only");
    assert_eq!(
        db.count(REJECTED).await,
        0,
        "markers are never passed on as messages"
    );
}

/// Connections that stop forwarding without closing (half-open) end in a timeout and a
/// reconnect, and ingestion resumes.
#[tokio::test]
async fn a_half_open_broker_connection_ends_in_a_retry() {
    let broker_addr = format!("127.0.0.1:{}", free_port());
    let proxy = StallProxy::start(broker_addr.clone()).await;
    let _own = OwnBroker::start_at(broker_addr, proxy.addr.clone());
    let topic = unique_topic("halfopen");
    let db = Db::new().await;
    let mut p = producer(&proxy.addr, &topic).await;
    p.send(orders("half-a-", 300)).await.unwrap();
    drop(p);
    let consumer = start_consumer(&db.config, &proxy.addr, &topic).await;
    db.wait_count(ORDERS, 300, 60).await;

    proxy.stall_open_connections();
    let mut p = producer(&proxy.addr, &topic).await; // new connections pass
    p.send(orders("half-b-", 300)).await.unwrap();
    let stalled_at = Instant::now();
    db.wait_count(ORDERS, 600, 60).await;
    println!(
        "resumed after {:.1} s on stalled connections",
        stalled_at.elapsed().as_secs_f64()
    );
    consumer.stop().await;
    assert_eq!(db.count(REJECTED).await, 0);
}

/// One partition whose leader connection never answers does not hold up the others.
#[tokio::test]
async fn a_stalled_partition_connect_does_not_stall_the_others() {
    let broker_addr = format!("127.0.0.1:{}", free_port());
    let proxy = StallProxy::start(broker_addr.clone()).await;
    let _own = OwnBroker::start_at(broker_addr, proxy.addr.clone());
    let topic = unique_topic("stallconnect");
    let db = Db::new().await;
    let p = producer(&proxy.addr, &topic).await;
    for partition in 0..3 {
        p.send_to(partition, orders(&format!("stall-{partition}-"), 100))
            .await
            .unwrap();
    }
    drop(p);
    // The consumer's first connection is its bootstrap one; the second is the first partition
    // leader connection. A long request timeout keeps that partition stalled during the test.
    proxy.stall_new_connection(2);
    let kafka = orders_kafka::KafkaConfig {
        request_deadline: Duration::from_secs(30),
        ..kafka_config(&proxy.addr, &topic)
    };
    let consumer = start_consumer_with(&db.config, kafka, None).await;
    let started = Instant::now();
    loop {
        let done = per_partition(&db)
            .await
            .values()
            .filter(|n| **n == 100)
            .count();
        if done >= 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "other partitions stalled behind the stalled one: {:?}",
            per_partition(&db).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "two partitions done in {:.1} s while one connect was stalled: {:?}",
        started.elapsed().as_secs_f64(),
        per_partition(&db).await
    );
    consumer.abort().await;
}

/// While a partition's fetches fail, the lag gauge keeps following the high watermark (read on
/// its own), so that an alert on lag fires.
#[tokio::test]
async fn lag_keeps_rising_while_fetches_fail() {
    let broker_addr = format!("127.0.0.1:{}", free_port());
    let proxy = StallProxy::start(broker_addr.clone()).await;
    let _own = OwnBroker::start_at(broker_addr.clone(), proxy.addr.clone());
    let topic = unique_topic("lag");
    let db = Db::new().await;
    let p = producer(&proxy.addr, &topic).await;
    // Every connection made from now on stalls at its first fetch; listing offsets works.
    proxy.stall_fetches();
    let registry = prometheus::Registry::new();
    let metrics = ConsumerMetrics::register(&registry).unwrap();
    let kafka = orders_kafka::KafkaConfig {
        request_deadline: Duration::from_secs(1),
        ..kafka_config(&proxy.addr, &topic)
    };
    let consumer = start_consumer_with(&db.config, kafka, Some(metrics.clone())).await;
    let lag = || metrics.lag.with_label_values(&["0"]).get();
    for (round, sent, want) in [(0, 10, 10), (1, 15, 25)] {
        p.send_to(0, orders(&format!("lag-{round}-"), sent))
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while lag() < want as i64 {
            assert!(
                Instant::now() < deadline,
                "lag {} never reached {want} while fetches stall",
                lag()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(db.count(ORDERS).await, 0, "nothing was fetched");
    consumer.abort().await;
}

/// The one rejected row: partition, offset, reason, detail, and whether it has no payload.
async fn only_rejection(db: &Db) -> (i32, i64, String, String, bool) {
    let row = db
        .sql
        .query_one(
            "SELECT partition, \"offset\", reason, detail, payload IS NULL FROM rejected_messages",
            &[],
        )
        .await
        .unwrap();
    let got = (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    println!("recorded: {}@{} {}: {}", got.0, got.1, got.2, got.3);
    got
}
