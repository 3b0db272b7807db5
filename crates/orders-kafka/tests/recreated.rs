#![allow(clippy::unwrap_used, clippy::print_stdout)]
//! Offsets that are reused must not hide messages (issue 14, item 4): a topic deleted and
//! re-created while the service is down, whose new log grew past the stored offset, is read
//! from its start (the mark of the last record handled no longer matches), and a rejection
//! at a position the old log already used is recorded too.

mod common;

use common::*;

const ORDERS: &str = "SELECT count(*) FROM orders";

fn messages(prefix: &str, n: u64, bad_at: usize) -> Vec<Option<Vec<u8>>> {
    let mut values = orders(prefix, n);
    values[bad_at] = Some(b"{\"not\": json".to_vec());
    values
}

#[tokio::test]
async fn a_recreated_topic_is_read_from_its_start_and_its_rejections_are_kept() {
    let (broker, topic) = (broker(), unique_topic("recreated"));
    let db = Db::new().await;

    // The old log: 5 messages on partition 0, the one at offset 2 not JSON.
    let p = producer(&broker, &topic).await;
    p.send_to(0, messages("old-", 5, 2)).await.unwrap();
    let consumer = start_consumer(&db.config, &broker, &topic).await;
    db.wait_count(ORDERS, 4, 60).await;
    consumer.stop().await;
    assert_eq!(db.offsets(&topic).await.get(&0), Some(&5));

    // While the service is down the topic is deleted and re-created, and its new log grows
    // past the stored offset: 10 other messages, again one not JSON at offset 2. (tansu 0.6
    // breaks when a deleted topic's name is created again: its storage task panics and the
    // broker stops answering. So the re-created topic is a fresh name, and the database's
    // rows of the old log are moved to it: to the service the two are the same situation.)
    let new_topic = unique_topic("recreated");
    for (table, column) in [
        ("consumer_offsets", "topic"),
        ("rejected_messages", "topic"),
        ("orders", "source_topic"),
    ] {
        db.sql
            .execute(
                &format!("UPDATE {table} SET {column} = $1 WHERE {column} = $2"),
                &[&new_topic, &topic],
            )
            .await
            .unwrap();
    }
    let topic = new_topic;
    let p = producer(&broker, &topic).await;
    let offsets = p.send_to(0, messages("new-", 10, 2)).await.unwrap();
    assert_eq!(offsets.first(), Some(&0), "the new log starts at 0 again");

    let consumer = start_consumer(&db.config, &broker, &topic).await;
    db.wait_count(
        "SELECT count(*) FROM orders WHERE order_uid LIKE 'new-%'",
        9,
        60,
    )
    .await;
    db.wait_count(
        "SELECT count(*) FROM rejected_messages WHERE partition = 0 AND \"offset\" = 2",
        2,
        30,
    )
    .await;
    consumer.stop().await;
    assert_eq!(db.offsets(&topic).await.get(&0), Some(&10));
    assert_eq!(db.count(ORDERS).await, 13, "4 old and 9 new orders");
}
