#![allow(clippy::unwrap_used, clippy::print_stdout)]
//! The real `orders` binary fed crafted messages (issue 14, item 1): the order that breaks a
//! rule on each of its 1,000 items and quotes a 600,000-character field keeps the process's
//! peak memory low, its rejection is stored with a bounded detail, and the valid order after
//! it in the same partition is stored.

mod common;

use std::time::{Duration, Instant};

use orders_domain::validation::MAX_DETAIL_BYTES;
use orders_kafka::{KafkaConfig, OrderProducer};

/// Peak resident memory of a process, in KiB (`VmHWM` in /proc/PID/status).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_message_with_a_thousand_long_errors_stays_small_and_does_not_block_its_partition() {
    let topic = format!(
        "test-hostile-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let settings = common::test_settings(Some(&topic)).await;
    let cfg = settings.postgres().unwrap();
    orders_postgres::PgRepository::connect(&cfg).await.unwrap();
    let sql = orders_postgres::testing::sql_client(&cfg).await;
    let kafka = KafkaConfig {
        create_topic_partitions: Some(3),
        ..settings.kafka().unwrap()
    };
    let producer = OrderProducer::connect(&kafka).await.unwrap_or_else(|e| {
        panic!(
            "Kafka broker not reachable at {} ({e}); start it with `just broker-up`",
            settings.kafka_broker
        )
    });
    let valid = orders_domain::sample::generated_order("after-hostile-", 1, 2);
    producer
        .send_to(
            0,
            vec![
                Some(orders_domain::sample::many_errors_message()),
                Some(serde_json::to_vec(&valid).unwrap()),
            ],
        )
        .await
        .unwrap();

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let service = common::start_binary(&settings, port);
    let deadline = Instant::now() + Duration::from_secs(120);
    let stored = loop {
        let n: i64 = sql
            .query_one(
                "SELECT count(*) FROM orders WHERE order_uid = 'after-hostile-1'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n == 1 {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let peak_mib = peak_rss_kib(service.0.id()) / 1024;
    println!("peak RSS while ingesting the message: {peak_mib} MiB");
    assert!(
        stored,
        "the valid order after the hostile one was never stored"
    );
    assert!(peak_mib < 512, "peak RSS {peak_mib} MiB");
    let row = sql
        .query_one(
            "SELECT reason, detail, \"offset\" FROM rejected_messages WHERE partition = 0",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "invalid");
    let detail: &str = row.get(1);
    assert!(detail.len() <= MAX_DETAIL_BYTES, "{} bytes", detail.len());
    assert!(detail.contains("more)"), "{detail}");
    assert_eq!(row.get::<_, i64>(2), 0);
}
