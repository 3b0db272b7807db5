#![allow(clippy::unwrap_used)]
//! The real `orders-producer` binary against the broker: what it says it sent is on the topic,
//! and every message decodes to what it is meant to be (the reference order, the generated
//! valid orders, one message of each invalid kind).

use std::collections::BTreeMap;
use std::process::Command;

use orders_domain::sample::{invalid_messages, mixed_order};
use orders_domain::validation::DEFAULT_MAX_MESSAGE_BYTES;
use orders_domain::{OrderSource, RejectReason, decode_order};
use orders_kafka::{KafkaConfig, KafkaSource};

#[tokio::test]
async fn sends_the_reference_generated_and_invalid_messages() {
    let broker = std::env::var("KAFKA_BROKER").unwrap_or_else(|_| "localhost:9092".into());
    let topic = format!(
        "test-producer-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let out = Command::new(env!("CARGO_BIN_EXE_orders-producer"))
        .args(["--topic", &topic, "--create-topic", "--count", "25"])
        .args(["--invalid", "--prefix", "prod-", "--wait-secs", "10"])
        .env("KAFKA_BROKER", &broker)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "orders-producer failed ({}); is the broker up (`just broker-up`)?\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = invalid_messages().len();
    assert!(
        stdout.contains(&format!("{} messages in", 1 + 25 + bad)),
        "{stdout}"
    );

    // Read the whole topic back, as the service would.
    let source = KafkaSource::connect(KafkaConfig {
        brokers: vec![broker],
        topic,
        ..KafkaConfig::default()
    })
    .await
    .unwrap();
    let mut values = Vec::new();
    for p in source.partitions().await.unwrap() {
        let mut offset = 0;
        loop {
            let batch = source.fetch(p, offset).await.unwrap();
            values.extend(batch.records.into_iter().map(|r| r.value));
            offset = batch.next_offset;
            if offset >= batch.high_watermark {
                break;
            }
        }
    }
    assert_eq!(values.len(), 1 + 25 + bad);
    let mut uids = Vec::new();
    let mut reasons: BTreeMap<RejectReason, usize> = BTreeMap::new();
    for v in &values {
        match decode_order(v.as_deref(), DEFAULT_MAX_MESSAGE_BYTES) {
            Ok(order) => uids.push(order.order_uid),
            Err(e) => *reasons.entry(e.reason()).or_default() += 1,
        }
    }
    uids.sort();
    let mut want: Vec<String> = (0..25)
        .map(|i| mixed_order("prod-", i).order_uid.into_string())
        .collect();
    want.push("b563feb7b2b84b6test".into());
    want.sort();
    assert_eq!(uids, want);
    let mut want_reasons: BTreeMap<RejectReason, usize> = BTreeMap::new();
    for (r, _) in invalid_messages() {
        *want_reasons.entry(r).or_default() += 1;
    }
    assert_eq!(reasons, want_reasons, "each invalid message for its reason");
}
