#![allow(clippy::unwrap_used)]
//! The HTTP API against the real app (port 0, its own PostgreSQL database).

mod common;

use common::spawn_app;
use orders_domain::sample::{generated_order, reference_order};
use serde_json::Value;

#[tokio::test]
async fn order_endpoint_statuses_and_bodies() {
    let app = spawn_app().await;
    app.wait_ready().await;
    common::store_orders(&app.repo, vec![reference_order()]).await;

    let r = app.get("/order/b563feb7b2b84b6test").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert!(r.headers().contains_key("x-request-id"));
    let body: Value = r.json().await.unwrap();
    let fixture: Value = serde_json::from_str(orders_domain::REFERENCE_ORDER_JSON).unwrap();
    assert_eq!(body, fixture, "same shape and values as the message");

    let r = app.get("/order/unknown-uid").await;
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "not_found");

    for bad in [
        "has%20space",
        "semi%3Bcolon",
        &"x".repeat(65),
        "%3Cscript%3E",
        "%E2%9C%93",
    ] {
        let r = app.get(&format!("/order/{bad}")).await;
        assert_eq!(r.status(), 400, "{bad}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid_order_uid", "{bad}");
        assert!(body["message"].as_str().unwrap().contains("64"));
    }
    let r = app.get("/no/such/route").await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "no_route");
    app.stop().await;
}

#[tokio::test]
async fn cache_stats_change_as_expected() {
    let app = spawn_app().await;
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
    let s0 = stats(&app).await;
    assert_eq!(s0["warmed_up"], true);
    assert_eq!(s0["size"], 0);
    assert_eq!(s0["capacity"], 100_000);

    // Stored behind the cache's back (as by another instance): first read misses, then hits.
    common::store_orders(&app.repo, vec![generated_order("stats-", 1, 3)]).await;
    assert_eq!(app.get("/order/stats-1").await.status(), 200);
    assert_eq!(app.get("/order/stats-1").await.status(), 200);
    assert_eq!(app.get("/order/stats-2").await.status(), 404);
    let s = stats(&app).await;
    assert_eq!(s["misses"], 2, "{s}");
    assert_eq!(s["hits"], 1, "{s}");
    assert_eq!(s["size"], 1);
    assert!((s["hit_ratio"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);
    // An invalid uid never reaches the cache.
    assert_eq!(app.get("/order/bad%20uid").await.status(), 400);
    assert_eq!(stats(&app).await["misses"], 2);
    app.stop().await;
}

#[tokio::test]
async fn warm_up_loads_stored_orders_before_ready() {
    let settings = common::test_settings(None).await;
    let repo = orders_postgres::PgRepository::connect(&settings.postgres().unwrap())
        .await
        .unwrap();
    common::store_orders(
        &repo,
        (0..50).map(|n| generated_order("warm-", n, 2)).collect(),
    )
    .await;
    let mut settings = settings;
    settings.cache_capacity = 20;
    let app = common::spawn_app_with(settings).await;
    app.wait_ready().await;
    let s: Value = app.get("/cache/stats").await.json().await.unwrap();
    assert_eq!(
        (
            s["size"].as_u64(),
            s["warmup_loaded"].as_u64(),
            s["capacity"].as_u64()
        ),
        (Some(20), Some(20), Some(20))
    );
    // The newest are cached: a hit, no miss.
    assert_eq!(app.get("/order/warm-49").await.status(), 200);
    let s: Value = app.get("/cache/stats").await.json().await.unwrap();
    assert_eq!(
        (s["hits"].as_u64(), s["misses"].as_u64()),
        (Some(1), Some(0))
    );
    app.stop().await;
}

#[tokio::test]
async fn recent_orders_health_ready_metrics() {
    let app = spawn_app().await;
    app.wait_ready().await;
    common::store_orders(
        &app.repo,
        (0..5).map(|n| generated_order("recent-", n, 1)).collect(),
    )
    .await;
    let list: Value = app.get("/orders?limit=3").await.json().await.unwrap();
    let uids: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["order_uid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(uids, ["recent-4", "recent-3", "recent-2"]);
    assert!(list[0]["date_created"].as_str().unwrap().ends_with('Z'));
    assert_eq!(app.get("/orders?limit=0").await.status(), 400);
    assert_eq!(app.get("/orders?limit=100000").await.status(), 400);
    assert_eq!(app.get("/orders?limit=abc").await.status(), 400);

    let r = app.get("/healthz").await;
    assert_eq!(r.status(), 200);
    let r = app.get("/readyz").await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "ready");

    app.get("/order/recent-1").await;
    let text = app.get("/metrics").await.text().await.unwrap();
    for name in [
        "orders_http_requests_total{method=\"GET\",route=\"/order/{order_uid}\",status=\"200\"} 1",
        "orders_http_request_duration_seconds_bucket",
        "orders_cache_entries 1",
        "orders_cache_misses_total 1",
        "orders_ingested_total 0",
        "orders_messages_rejected_total{reason=\"not_json\"} 0",
    ] {
        assert!(text.contains(name), "metrics lack {name}:\n{text}");
    }

    let page = app.get("/").await;
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
    assert!(page.text().await.unwrap().contains("/static/app.js"));
    assert_eq!(app.get("/static/app.js").await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn database_outage_gives_503_and_readyz_says_why() {
    let app = spawn_app().await;
    app.wait_ready().await;
    // Closed to new connections, the existing ones cut: an outage for this app.
    let outage = orders_postgres::testing::database_outage(&app.settings.db_name).await;
    let r = app.get("/order/not-cached").await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "unavailable");
    // A readiness result is reused for a second, so the outage shows within about that.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let r = loop {
        let r = app.get("/readyz").await;
        if r.status() == 503 {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz never said 503"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let body: Value = r.json().await.unwrap();
    let pg = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "postgres")
        .unwrap()
        .clone();
    assert_eq!(pg["ok"], false);
    assert!(
        pg["reason"].as_str().unwrap().contains("unavailable"),
        "{pg}"
    );
    assert_eq!(
        app.get("/healthz").await.status(),
        200,
        "alive even when not ready"
    );
    // Back: ready again and serving, without a restart.
    outage.end().await;
    app.wait_ready().await;
    assert_eq!(app.get("/order/not-cached").await.status(), 404);
    app.stop().await;
}
