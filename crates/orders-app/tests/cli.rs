#![allow(clippy::unwrap_used)]
//! The operator commands of the real `orders` binary against PostgreSQL: `rejected list`,
//! `counts` and `replay` (which must end, store what is now valid once, and leave the rest).

mod common;

use std::process::Output;

use bytes::Bytes;
use orders_domain::sample::generated_order;
use orders_domain::{
    AcceptedOrder, OrderRepository, Position, RejectReason, Rejection, StoreBatch,
};

fn orders(settings: &orders_app::Settings, args: &[&str]) -> Output {
    common::orders_cli(settings, args, &[])
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn rejected_list_counts_and_replay() {
    let settings = common::test_settings(None).await;
    let repo = orders_postgres::PgRepository::connect(&settings.postgres().unwrap())
        .await
        .unwrap();
    let stored = generated_order("cli-", 1, 1);
    let json = |o: &orders_domain::Order| Bytes::from(serde_json::to_vec(o).unwrap());
    let at = |offset| Position {
        topic: "orders".into(),
        partition: 0,
        offset,
    };
    let rejection = |offset, payload: Bytes| Rejection {
        position: at(offset),
        reason: RejectReason::Invalid,
        detail: "rule of an older version".into(),
        payload: Some(payload),
        truncated: None,
    };
    repo.store_batch(&StoreBatch {
        topic: "orders".into(),
        orders: vec![AcceptedOrder {
            order: stored.clone(),
            position: at(0),
            payload: json(&stored),
        }],
        rejections: vec![
            rejection(1, json(&generated_order("cli-", 2, 3))),
            rejection(2, Bytes::from_static(b"{\"not\": \"an order\"}")),
            rejection(3, json(&stored)),
        ],
        ..StoreBatch::default()
    })
    .await
    .unwrap();

    let list = stdout(&orders(&settings, &["rejected", "list"]));
    assert!(
        list.contains("orders/0@1") && list.contains("orders/0@3"),
        "{list}"
    );
    assert!(
        list.contains("invalid") && list.contains("rule of an older version"),
        "{list}"
    );
    assert!(stdout(&orders(&settings, &["rejected", "counts"])).contains("invalid          3"));

    let replay = stdout(&orders(&settings, &["rejected", "replay"]));
    assert!(
        replay.contains(
            "replayed 3 rejected messages: 1 stored as orders, 1 duplicates, 1 still rejected"
        ),
        "{replay}"
    );
    assert!(repo.get("cli-2").await.unwrap().is_some(), "now stored");
    let counts = stdout(&orders(&settings, &["rejected", "counts"]));
    assert!(counts.contains("duplicate        1"), "{counts}");
    assert!(counts.contains("invalid          1"), "{counts}");
    let dup = stdout(&orders(
        &settings,
        &["rejected", "list", "--reason", "duplicate"],
    ));
    assert!(
        dup.contains("orders/0@3") && !dup.contains("orders/0@2"),
        "{dup}"
    );

    // Again: nothing new is stored, and the command still ends.
    let again = stdout(&orders(&settings, &["rejected", "replay"]));
    assert!(again.contains("0 stored as orders"), "{again}");
    repo.close();
}

/// A replayed order the database refuses (here a constraint the test adds, as a stricter schema
/// would) is left rejected; the rows before and after it are still replayed.
#[tokio::test]
async fn replay_goes_past_a_row_the_database_refuses() {
    let settings = common::test_settings(None).await;
    let repo = orders_postgres::PgRepository::connect(&settings.postgres().unwrap())
        .await
        .unwrap();
    let sql = orders_postgres::testing::sql_client(&settings.postgres().unwrap()).await;
    sql.batch_execute(
        "ALTER TABLE orders ADD CONSTRAINT test_refuses CHECK (customer_id <> 'refuse me')",
    )
    .await
    .unwrap();
    let rejections: Vec<Rejection> = (0..5)
        .map(|i| {
            let mut o = generated_order("refuse-", i, 1);
            if i == 2 {
                o.customer_id = "refuse me".into();
            }
            Rejection::new(
                Position {
                    topic: "orders".into(),
                    partition: 0,
                    offset: i as i64,
                },
                RejectReason::Invalid,
                "rule of an older version",
                Some(Bytes::from(serde_json::to_vec(&o).unwrap())),
            )
        })
        .collect();
    repo.store_batch(&StoreBatch {
        topic: "orders".into(),
        rejections,
        ..StoreBatch::default()
    })
    .await
    .unwrap();
    let replay = stdout(&orders(&settings, &["rejected", "replay"]));
    assert!(
        replay.contains("4 stored as orders, 0 duplicates, 1 still rejected (1 refused"),
        "{replay}"
    );
    for i in [0, 1, 3, 4] {
        assert!(repo.get(&format!("refuse-{i}")).await.unwrap().is_some());
    }
    let left: Vec<i64> = sql
        .query("SELECT \"offset\" FROM rejected_messages", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, vec![2]);
    repo.close();
}

/// What `rejected list` prints never carries a control character from a message (no terminal
/// escape sequence reaches the operator), and it pages with `--after-id`.
#[tokio::test]
async fn rejected_list_escapes_control_characters_and_pages() {
    let settings = common::test_settings(None).await;
    let repo = orders_postgres::PgRepository::connect(&settings.postgres().unwrap())
        .await
        .unwrap();
    let hostile = b"\x1b]0;pwned\x07\x1b[2J\x1b[31mred\r\n".to_vec();
    let rejections: Vec<Rejection> = (0..5)
        .map(|i| {
            Rejection::new(
                Position {
                    topic: "orders".into(),
                    partition: 0,
                    offset: i,
                },
                RejectReason::NotJson,
                "detail with \u{1b}[31m an escape",
                Some(Bytes::from(hostile.clone())),
            )
        })
        .collect();
    repo.store_batch(&StoreBatch {
        topic: "orders".into(),
        rejections,
        ..StoreBatch::default()
    })
    .await
    .unwrap();
    let first = stdout(&orders(&settings, &["rejected", "list", "--limit", "2"]));
    assert!(
        !first.chars().any(|c| c.is_control() && c != '\n'),
        "{first:?}"
    );
    assert!(first.contains("\\u{1b}]0;pwned"), "{first}");
    assert!(first.contains("orders/0@0") && first.contains("orders/0@1"));
    let next = first
        .lines()
        .find_map(|l| l.strip_prefix("next page: orders rejected list --after-id "))
        .unwrap()
        .trim()
        .to_owned();
    let second = stdout(&orders(
        &settings,
        &["rejected", "list", "--limit", "2", "--after-id", &next],
    ));
    assert!(
        second.contains("orders/0@2") && second.contains("orders/0@3"),
        "{second}"
    );
    assert!(!second.contains("orders/0@1 "), "{second}");
    repo.close();
}

/// `orders partitions` prints where each partition stands and who holds it, against the real
/// broker.
#[tokio::test]
async fn partitions_shows_owner_lease_stored_offset_high_watermark_and_lag() {
    let topic = format!(
        "test-partitions-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let settings = common::test_settings(Some(&topic)).await;
    let repo = orders_postgres::PgRepository::connect(&settings.postgres().unwrap())
        .await
        .unwrap();
    let producer = orders_kafka::OrderProducer::connect(&orders_kafka::KafkaConfig {
        create_topic_partitions: Some(3),
        ..settings.kafka().unwrap()
    })
    .await
    .unwrap();
    let value = || Some(b"{}".to_vec());
    producer.send_to(0, vec![value(); 5]).await.unwrap();
    producer.send_to(1, vec![value(); 2]).await.unwrap();
    repo.store_batch(&StoreBatch {
        topic: topic.clone(),
        offsets: vec![orders_domain::PartitionOffset {
            partition: 0,
            next_offset: 3,
            expected: None,
            mark: None,
            lease_epoch: None,
        }],
        ..StoreBatch::default()
    })
    .await
    .unwrap();
    // A live replica holds partition 0; one that left held partition 1 (released).
    use orders_domain::PartitionLeases;
    let live = orders_postgres::PgLeases::new(repo.clone(), "replica-a");
    let gone = orders_postgres::PgLeases::new(repo.clone(), "replica-b");
    let ttl = std::time::Duration::from_secs(600);
    live.heartbeat(&topic, &[0, 1, 2], ttl).await.unwrap();
    gone.heartbeat(&topic, &[0, 1, 2], ttl).await.unwrap();
    live.claim(&topic, 1).await.unwrap();
    gone.claim(&topic, 1).await.unwrap();
    gone.leave(&topic).await.unwrap();
    let expires: chrono::DateTime<chrono::Utc> =
        orders_postgres::testing::sql_client(&settings.postgres().unwrap())
            .await
            .query_one(
                "SELECT expires_at FROM consumer_members WHERE member_id = 'replica-a'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
    let expires = expires.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let out = stdout(&orders(&settings, &["--kafka-topic", &topic, "partitions"]));
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        vec![
            vec!["0", "replica-a", &expires, "3", "5", "2"],
            vec!["1", "-", "-", "-", "2", "2"],
            vec!["2", "-", "-", "-", "0", "0"]
        ],
        "{out}"
    );
    repo.close();
}
