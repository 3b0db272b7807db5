#![allow(clippy::unwrap_used)]
//! Fields the model does not know (issue 13), through the real app, broker and PostgreSQL:
//! kept at every depth and served back equal to what was sent (from the cache, and from
//! PostgreSQL after a restart with a cold cache), counted; refused as before under `reject`;
//! and turned into orders exactly once by `orders rejected replay --unknown-fields keep`.

mod common;

use std::time::{Duration, Instant};

use clap::Parser;
use orders_app::{Cli, Settings};
use orders_domain::UnknownFields;
use orders_domain::sample::{generated_order, order_with_unknown_fields};
use serde_json::Value;

/// A producer's message with unknown fields at every depth, written by hand rather than by
/// this service's serializer: spaces, an exponent, a number beyond `f64`, escapes.
fn evolved_message(prefix: &str, n: u64) -> String {
    let text = serde_json::to_string(&order_with_unknown_fields(prefix, n, 3)).unwrap();
    text.replacen(
        "{",
        "{ \"first\" : [ 1.0 , 2E+3 , {\"k\" : null}, \"\\u00e9\" ] ,\n ",
        1,
    )
}

/// Raw JSON texts of unknown values that must come back exactly as sent.
const RAW: [&str; 4] = [
    "[ 1.0 , 2E+3 , {\"k\" : null}, \"\\u00e9\" ]",
    "123456789012345678901234567890.123456789012345678901",
    "\"fragile \\u00e9 \\\"quoted\\\" \\\\ é\"",
    "1E-7",
];

fn topic(name: &str) -> String {
    format!(
        "test-{name}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// The value of one sample line of `/metrics` (`name{labels}` exactly as exposed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn producer(settings: &Settings) -> orders_kafka::OrderProducer {
    let kafka = orders_kafka::KafkaConfig {
        create_topic_partitions: Some(3),
        ..settings.kafka().unwrap()
    };
    orders_kafka::OrderProducer::connect(&kafka)
        .await
        .unwrap_or_else(|e| panic!("Kafka broker not reachable ({e}); `just broker-up`"))
}

/// Polls `sql` (one count) until it is `want`.
async fn wait_count(client: &tokio_postgres::Client, sql: &str, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n: i64 = client.query_one(sql, &[]).await.unwrap().get(0);
        if n == want {
            return;
        }
        assert!(Instant::now() < deadline, "{sql}: {n}, want {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn cache_stats(app: &common::TestApp) -> Value {
    app.get("/cache/stats").await.json().await.unwrap()
}

async fn order_body(app: &common::TestApp, uid: &str) -> bytes::Bytes {
    let r = app.get(&format!("/order/{uid}")).await;
    assert_eq!(r.status(), 200, "{uid}");
    r.bytes().await.unwrap()
}

fn assert_same_order(served: &[u8], sent: &str) {
    let text = std::str::from_utf8(served).unwrap();
    for raw in RAW {
        assert!(text.contains(raw), "{raw} not served as sent: {text}");
    }
    let (got, want): (Value, Value) = (
        serde_json::from_slice(served).unwrap(),
        serde_json::from_str(sent).unwrap(),
    );
    assert_eq!(got, want);
}

/// Settings with the policy set through its real flag.
fn with_policy(mut settings: Settings, policy: &str) -> Settings {
    let cli = Cli::try_parse_from(["orders", "--unknown-fields", policy]).unwrap();
    settings.unknown_fields = cli.settings.unknown_fields;
    settings
}

#[tokio::test]
async fn keep_stores_unknown_fields_once_and_serves_them_back_from_cache_and_from_postgresql() {
    let base = common::test_settings(Some(&topic("keep"))).await;
    assert_eq!(base.unknown_fields, UnknownFields::Keep, "the default");
    let app = common::spawn_app_with(base.clone()).await;
    app.wait_ready().await;
    let sql = orders_postgres::testing::sql_client(&app.settings.postgres().unwrap()).await;
    let mut p = producer(&app.settings).await;

    let sent = evolved_message("evolved-", 1);
    let uid = "evolved-1";
    p.send(vec![Some(sent.clone().into_bytes())]).await.unwrap();
    wait_count(&sql, "SELECT count(*) FROM orders", 1).await;
    // A newer order without unknown fields (the restart below caches only the newest).
    let plain = serde_json::to_vec(&generated_order("plain-", 2, 1)).unwrap();
    p.send(vec![Some(plain)]).await.unwrap();
    wait_count(&sql, "SELECT count(*) FROM orders", 2).await;

    // From the cache: ingestion cached the committed order (on a task of its own, just after
    // the commit).
    let deadline = Instant::now() + Duration::from_secs(10);
    while cache_stats(&app).await["size"] != 2 {
        assert!(Instant::now() < deadline, "both orders cached");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = cache_stats(&app).await;
    let from_cache = order_body(&app, uid).await;
    let after = cache_stats(&app).await;
    assert_eq!(after["hits"], before["hits"].as_u64().unwrap() + 1);
    assert_eq!(after["misses"], before["misses"]);
    assert_same_order(&from_cache, &sent);

    // Stored once, each object's unknown fields in its own table's column.
    for (table, want) in [
        ("orders", 1),
        ("deliveries", 1),
        ("payments", 1),
        ("items", 3),
    ] {
        let n: i64 = sql
            .query_one(
                &format!("SELECT count(*) FROM {table} WHERE extra IS NOT NULL"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, want, "{table}");
    }
    // Queryable, and castable to jsonb for an index.
    let points: String = sql
        .query_one(
            "SELECT extra::jsonb->>'loyalty_points' FROM orders WHERE order_uid = $1",
            &[&uid],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(points, "12");

    // Counted, by field path; the order without unknown fields is not.
    let metrics = app.get("/metrics").await.text().await.unwrap();
    for (series, want) in [
        ("orders_stored_with_unknown_fields_total", 1.0),
        ("orders_unknown_fields_total{field=\"first\"}", 1.0),
        ("orders_unknown_fields_total{field=\"loyalty_points\"}", 1.0),
        ("orders_unknown_fields_total{field=\"delivery.floor\"}", 1.0),
        (
            "orders_unknown_fields_total{field=\"payment.fx_rate\"}",
            1.0,
        ),
        (
            "orders_unknown_fields_total{field=\"items[].gift_wrap\"}",
            1.0,
        ),
    ] {
        assert_eq!(sample(&metrics, series), Some(want), "{series}\n{metrics}");
    }

    // A re-send is a duplicate: nothing stored twice, nothing counted twice.
    p.send(vec![Some(sent.clone().into_bytes())]).await.unwrap();
    wait_count(
        &sql,
        "SELECT count(*) FROM rejected_messages WHERE reason = 'duplicate'",
        1,
    )
    .await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert_eq!(
        sample(&metrics, "orders_stored_with_unknown_fields_total"),
        Some(1.0)
    );
    app.stop().await;

    // Restarted with a cold cache that warm-up fills with the newest order only: the order is
    // read from PostgreSQL, and served byte for byte as from the cache before.
    let cold = Settings {
        consume: false,
        cache_capacity: 1,
        ..base.clone()
    };
    let app = common::spawn_app_with(cold).await;
    app.wait_ready().await;
    assert_eq!(cache_stats(&app).await["warmup_loaded"], 1);
    let before = cache_stats(&app).await;
    let from_db = order_body(&app, uid).await;
    let after = cache_stats(&app).await;
    assert_eq!(after["misses"], before["misses"].as_u64().unwrap() + 1);
    assert_eq!(from_db, from_cache);
    assert_same_order(&from_db, &sent);
    app.stop().await;

    // Restarted with room for both: warm-up reads it from PostgreSQL by pages, the same bytes.
    let app = common::spawn_app_with(Settings {
        consume: false,
        ..base
    })
    .await;
    app.wait_ready().await;
    assert_eq!(cache_stats(&app).await["warmup_loaded"], 2);
    let warmed = order_body(&app, uid).await;
    assert_eq!(cache_stats(&app).await["misses"], 0);
    assert_eq!(warmed, from_cache);
    app.stop().await;
}

#[tokio::test]
async fn reject_refuses_unknown_fields_as_before_and_replay_with_keep_stores_them_once() {
    let base = with_policy(
        common::test_settings(Some(&topic("reject"))).await,
        "reject",
    );
    assert_eq!(base.unknown_fields, UnknownFields::Reject);
    let app = common::spawn_app_with(base.clone()).await;
    app.wait_ready().await;
    let sql = orders_postgres::testing::sql_client(&app.settings.postgres().unwrap()).await;
    let mut p = producer(&app.settings).await;

    // One unknown field at each depth, one at every depth, and one that also breaks a known
    // rule (which no policy may relax).
    let mut sent: Vec<(String, String)> = Vec::new();
    for (n, (pointer, name)) in [
        ("", "loyalty_points"),
        ("/delivery", "floor"),
        ("/payment", "fx_rate"),
        ("/items/0", "gift_wrap"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut v = serde_json::to_value(generated_order("depth-", n as u64, 2)).unwrap();
        v.pointer_mut(pointer)
            .unwrap()
            .as_object_mut()
            .unwrap()
            .insert(name.into(), serde_json::json!({"since": "v2", "n": 1.50}));
        sent.push((format!("depth-{n}"), serde_json::to_string(&v).unwrap()));
    }
    sent.push(("evolved-9".into(), evolved_message("evolved-", 9)));
    let mut bad = serde_json::to_value(order_with_unknown_fields("bad-", 1, 1)).unwrap();
    bad["payment"]["currency"] = "usd".into();
    let plain = serde_json::to_vec(&generated_order("plain-", 1, 1)).unwrap();
    let mut values: Vec<Option<Vec<u8>>> = sent
        .iter()
        .map(|(_, m)| Some(m.clone().into_bytes()))
        .collect();
    values.push(Some(serde_json::to_vec(&bad).unwrap()));
    values.push(Some(plain));
    p.send(values).await.unwrap();
    wait_count(&sql, "SELECT count(*) FROM rejected_messages", 6).await;
    wait_count(&sql, "SELECT count(*) FROM orders", 1).await;

    // Today's behaviour: not_order naming the unknown field; nothing stored, nothing counted.
    let rows = sql
        .query(
            "SELECT reason, detail FROM rejected_messages ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    for row in &rows {
        let (reason, detail): (&str, &str) = (row.get(0), row.get(1));
        assert_eq!(reason, "not_order", "{detail}");
        assert!(detail.contains("unknown field"), "{detail}");
    }
    for (uid, _) in &sent {
        assert_eq!(app.get(&format!("/order/{uid}")).await.status(), 404);
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert_eq!(
        sample(&metrics, "orders_stored_with_unknown_fields_total"),
        Some(0.0)
    );
    app.stop().await;

    // Replayed under the setting (reject): nothing changes.
    let out = common::orders_cli(
        &base,
        &["rejected", "replay"],
        &[("UNKNOWN_FIELDS", "reject")],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("replayed 6 rejected messages: 0 stored as orders"),
        "{text}"
    );

    // With keep: each becomes an order once; the one with a broken known rule stays, now
    // `invalid`-worthy but left as it was.
    let out = common::orders_cli(
        &base,
        &["rejected", "replay", "--unknown-fields", "keep"],
        &[("UNKNOWN_FIELDS", "reject")],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "replayed 6 rejected messages: 5 stored as orders, 0 duplicates, 1 still rejected"
        ) && text.contains("unknown fields: keep"),
        "{text}"
    );
    // Twice: nothing more, no duplicate.
    let out = common::orders_cli(
        &base,
        &["rejected", "replay", "--unknown-fields", "keep"],
        &[],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "replayed 1 rejected messages: 0 stored as orders, 0 duplicates, 1 still rejected"
        ),
        "{text}"
    );
    wait_count(&sql, "SELECT count(*) FROM orders", 6).await;
    wait_count(&sql, "SELECT count(*) FROM rejected_messages", 1).await;

    // The replayed orders are served as they were sent, unknown fields in place.
    let app = common::spawn_app_with(Settings {
        consume: false,
        ..base
    })
    .await;
    app.wait_ready().await;
    for (uid, message) in &sent {
        let served = order_body(&app, uid).await;
        let (got, want): (Value, Value) = (
            serde_json::from_slice(&served).unwrap(),
            serde_json::from_str(message).unwrap(),
        );
        assert_eq!(got, want, "{uid}");
    }
    assert_same_order(&order_body(&app, "evolved-9").await, &sent[4].1);
    app.stop().await;
}

#[tokio::test]
async fn the_schema_is_served_as_checked_in() {
    let app = common::spawn_app().await;
    let r = app.get("/schema/order.json").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/schema+json"
    );
    let body = r.text().await.unwrap();
    let on_disk = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schema/order.json"),
    )
    .unwrap();
    assert_eq!(body, on_disk);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        orders_domain::schema::order_schema()
    );
    app.stop().await;
}
