#![allow(clippy::unwrap_used)]
//! The real `orders` binary under SIGTERM during steady ingestion, then restarted: it exits 0
//! within the bound, and the two runs together store every produced order exactly once.

mod common;

use common::start_binary as start;

use std::process::Command;
use std::time::{Duration, Instant};

use orders_kafka::{KafkaConfig, OrderProducer};

const N: u64 = 20_000;

async fn count(sql: &tokio_postgres::Client, q: &str) -> i64 {
    sql.query_one(q, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn sigterm_during_ingestion_then_restart_stores_everything_once() {
    let topic = format!(
        "test-sigterm-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let settings = common::test_settings(Some(&topic)).await;
    let cfg = settings.postgres().unwrap();
    orders_postgres::PgRepository::connect(&cfg).await.unwrap(); // schema in place before polling
    let sql = orders_postgres::testing::sql_client(&cfg).await;
    let kafka = KafkaConfig {
        create_topic_partitions: Some(3),
        ..settings.kafka().unwrap()
    };
    let mut producer = OrderProducer::connect(&kafka).await.unwrap_or_else(|e| {
        panic!(
            "Kafka broker not reachable at {} ({e}); start it with `just broker-up`",
            settings.kafka_broker
        )
    });
    let values = (0..N)
        .map(|i| {
            Some(
                serde_json::to_vec(&orders_domain::sample::generated_order("term-", i, 3)).unwrap(),
            )
        })
        .collect();
    producer.send(values).await.unwrap();

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut service = start(&settings, port);
    let child = &mut service.0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(&sql, "SELECT count(*) FROM orders").await == 0 {
        assert!(Instant::now() < deadline, "no order ingested");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let stopped_at = Instant::now();
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            stopped_at.elapsed() < Duration::from_secs(12),
            "did not exit within the shutdown bound"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "exit status {exit:?}");
    let at_stop = count(&sql, "SELECT count(*) FROM orders").await;
    println!(
        "SIGTERM: exited in {:?} with {at_stop} of {N} orders stored",
        stopped_at.elapsed()
    );
    assert!(at_stop < N as i64, "stopped mid-ingestion");

    let mut service = start(&settings, port);
    let child = &mut service.0;
    let deadline = Instant::now() + Duration::from_secs(300);
    while count(&sql, "SELECT count(*) FROM orders").await < N as i64 {
        assert!(
            Instant::now() < deadline,
            "restart did not finish ingestion"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(count(&sql, "SELECT count(*) FROM orders").await, N as i64);
    assert_eq!(
        count(&sql, "SELECT count(*) FROM rejected_messages").await,
        0,
        "nothing processed twice"
    );
    assert_eq!(
        count(
            &sql,
            "SELECT coalesce(sum(next_offset), 0)::int8 FROM consumer_offsets"
        )
        .await,
        N as i64
    );
}
