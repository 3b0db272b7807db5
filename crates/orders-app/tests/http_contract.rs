#![allow(clippy::unwrap_used, clippy::expect_used)]
//! HTTP conventions against the real app: caching (ETag, 304, Cache-Control), 405 with
//! `Allow`, HEAD, `Retry-After`, paging `/orders`, request ids, metric names.

mod common;

use common::spawn_app;
use orders_domain::sample::{generated_order, reference_order};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Every route the API serves (with a path that exists once the reference order is stored).
const ROUTES: [&str; 10] = [
    "/",
    "/static/app.js",
    "/static/style.css",
    "/order/b563feb7b2b84b6test",
    "/orders",
    "/cache/stats",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
];

async fn request(
    app: &common::TestApp,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut r = reqwest::Client::new().request(method, format!("{}{path}", app.base));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.unwrap()
}

/// `If-None-Match` on `path` with each of `cases` (a header value and the status it must get):
/// every answer carries `etag` and `cache_control`, and a 304 has no body.
async fn assert_revalidates(
    app: &common::TestApp,
    path: &str,
    etag: &str,
    cache_control: &str,
    cases: &[(String, u16)],
) {
    for (if_none_match, status) in cases {
        let r = request(app, Method::GET, path, &[("if-none-match", if_none_match)]).await;
        assert_eq!(r.status(), *status, "If-None-Match: {if_none_match}");
        assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
        assert_eq!(r.headers()["cache-control"], cache_control);
        if *status == 304 {
            assert!(r.bytes().await.unwrap().is_empty());
        }
    }
}

#[tokio::test]
async fn orders_carry_a_strong_etag_and_revalidate_with_304() {
    let app = spawn_app().await;
    app.wait_ready().await;
    common::store_orders(&app.repo, vec![reference_order()]).await;
    let path = "/order/b563feb7b2b84b6test";

    // First read: a miss, read through; second: a hit. Same tag either way.
    let miss = app.get(path).await;
    assert_eq!(miss.status(), 200);
    let etag = miss.headers()["etag"].to_str().unwrap().to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"),
        "a strong tag: {etag}"
    );
    assert_eq!(
        miss.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let body = miss.bytes().await.unwrap();
    assert_eq!(
        etag.as_bytes(),
        orders_domain::entity_tag(&body),
        "the tag is the body's digest"
    );
    let hit = app.get(path).await;
    assert_eq!(hit.headers()["etag"].to_str().unwrap(), etag);

    assert_revalidates(
        &app,
        path,
        &etag,
        "public, max-age=31536000, immutable",
        &[
            (etag.clone(), 304),
            (format!("W/{etag}"), 304),
            (format!("\"other\", {etag}"), 304),
            ("*".to_owned(), 304),
            ("\"other\"".to_owned(), 200),
        ],
    )
    .await;

    // Not found may become found: never stored by a cache.
    let r = app.get("/order/not-yet").await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert!(r.headers().get("etag").is_none());

    // Static assets: a tag each, revalidated (no-cache) with 304.
    for asset in ["/", "/static/app.js", "/static/style.css"] {
        let r = app.get(asset).await;
        assert_eq!(r.headers()["cache-control"], "no-cache");
        let tag = r.headers()["etag"].to_str().unwrap().to_owned();
        let again = request(&app, Method::GET, asset, &[("if-none-match", &tag)]).await;
        assert_eq!(again.status(), 304, "{asset}");
        assert!(again.bytes().await.unwrap().is_empty());
    }
    app.stop().await;
}

/// `/orders` changes as orders arrive: revalidated (`no-cache`) by a strong tag of the page,
/// 304 while the page is the same, 200 with a new tag once a new order changes it.
#[tokio::test]
async fn the_recent_page_revalidates_with_304_until_an_order_arrives() {
    let app = spawn_app().await;
    app.wait_ready().await;
    common::store_orders(
        &app.repo,
        (0..2).map(|n| generated_order("poll-", n, 1)).collect(),
    )
    .await;
    let path = "/orders?limit=5";
    let first = app.get(path).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["cache-control"], "no-cache");
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    assert!(!etag.starts_with("W/"), "a strong tag: {etag}");
    let body = first.bytes().await.unwrap();
    assert_eq!(etag.as_bytes(), orders_domain::entity_tag(&body));

    assert_revalidates(
        &app,
        path,
        &etag,
        "no-cache",
        &[
            (etag.clone(), 304),
            (format!("W/{etag}"), 304),
            ("\"other\"".to_owned(), 200),
        ],
    )
    .await;

    // A new order changes the page: the old tag no longer matches.
    common::store_orders(&app.repo, vec![generated_order("poll-", 2, 1)]).await;
    let r = request(&app, Method::GET, path, &[("if-none-match", &etag)]).await;
    assert_eq!(r.status(), 200);
    assert_ne!(r.headers()["etag"].to_str().unwrap(), etag);
    let page: Value = r.json().await.unwrap();
    assert_eq!(page[0]["order_uid"], "poll-2");
    app.stop().await;
}

#[tokio::test]
async fn wrong_methods_get_405_with_allow_and_a_json_body() {
    let app = spawn_app().await;
    app.wait_ready().await;
    common::store_orders(&app.repo, vec![reference_order()]).await;
    for path in ROUTES {
        for method in [
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            Method::OPTIONS,
            Method::TRACE,
        ] {
            let r = request(&app, method.clone(), path, &[]).await;
            assert_eq!(r.status(), 405, "{method} {path}");
            assert_eq!(r.headers()["allow"], "GET, HEAD", "{method} {path}");
            assert_eq!(r.headers()["content-type"], "application/json");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"], "method_not_allowed", "{method} {path}");
        }
    }
    // No such route at all is still 404, whatever the method.
    let r = request(&app, Method::POST, "/no/such/route", &[]).await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "no_route");
    app.stop().await;
}

/// `/order/{order_uid}` is one segment after `/order/`: anything else under `/order` is an
/// unknown route (404 `no_route`, whatever the method), and `/orders` is its own route.
#[tokio::test]
async fn only_one_segment_after_order_is_an_order() {
    let app = spawn_app().await;
    app.wait_ready().await;
    common::store_orders(&app.repo, vec![reference_order()]).await;
    for path in [
        "/order",
        "/order/",
        "/order//b563feb7b2b84b6test",
        "/order/b563feb7b2b84b6test/",
        "/order/b563feb7b2b84b6test/items",
    ] {
        for method in [Method::GET, Method::POST] {
            let r = request(&app, method.clone(), path, &[]).await;
            assert_eq!(r.status(), 404, "{method} {path}");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"], "no_route", "{method} {path}");
        }
    }
    let r = request(&app, Method::GET, "/order/b563feb7b2b84b6test?x=1", &[]).await;
    assert_eq!(r.status(), 200);
    let r = request(&app, Method::GET, "/orders", &[]).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("b563feb7b2b84b6test"));
    app.stop().await;
}

#[tokio::test]
async fn head_answers_like_get_without_a_body() {
    let app = spawn_app().await;
    app.wait_ready().await;
    common::store_orders(&app.repo, vec![reference_order()]).await;
    for path in ROUTES
        .into_iter()
        .chain(["/order/unknown", "/order/bad%20uid"])
    {
        let get = app.get(path).await;
        let head = request(&app, Method::HEAD, path, &[]).await;
        assert_eq!(head.status(), get.status(), "HEAD {path}");
        for h in ["content-type", "etag", "cache-control"] {
            assert_eq!(
                head.headers().get(h),
                get.headers().get(h),
                "HEAD {path}: {h}"
            );
        }
        let get_len = get.bytes().await.unwrap().len();
        if path != "/metrics" && path != "/readyz" {
            // (Those two change between the requests.)
            assert_eq!(
                head.headers()["content-length"].to_str().unwrap(),
                get_len.to_string(),
                "HEAD {path}"
            );
        }
        assert!(head.bytes().await.unwrap().is_empty(), "HEAD {path}");
    }
    app.stop().await;
}

#[tokio::test]
async fn recent_orders_page_through_a_cursor() {
    let app = spawn_app().await;
    app.wait_ready().await;
    common::store_orders(
        &app.repo,
        (0..7).map(|n| generated_order("page-", n, 1)).collect(),
    )
    .await;
    let mut next = Some("/orders?limit=3".to_owned());
    let mut seen = Vec::new();
    let mut pages = 0;
    while let Some(path) = next.take() {
        let r = app.get(&path).await;
        assert_eq!(r.status(), 200, "{path}");
        next = r.headers().get("link").map(|l| {
            let l = l.to_str().unwrap();
            assert!(l.ends_with(">; rel=\"next\""), "{l}");
            l[1..l.find('>').unwrap()].to_owned()
        });
        let page: Vec<Value> = r.json().await.unwrap();
        seen.extend(
            page.iter()
                .map(|o| o["order_uid"].as_str().unwrap().to_owned()),
        );
        pages += 1;
        assert!(pages <= 4, "paging does not end");
    }
    let want: Vec<String> = (0..7).rev().map(|n| format!("page-{n}")).collect();
    assert_eq!(seen, want, "every order once, newest first");
    assert_eq!(pages, 3, "3 + 3 + 1: the short page is the last");

    for (query, code) in [
        ("limit=0", "bad_limit"),
        ("limit=501", "bad_limit"),
        ("before=0", "bad_cursor"),
        ("before=-5", "bad_cursor"),
        ("before=abc", "bad_query"),
        ("before=99999999999999999999", "bad_query"),
    ] {
        let r = app.get(&format!("/orders?{query}")).await;
        assert_eq!(r.status(), 400, "{query}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"], code, "{query}");
    }
    app.stop().await;
}

#[tokio::test]
async fn request_ids_are_uuid_v7_unless_the_caller_sends_one() {
    let app = spawn_app().await;
    let id = |r: &reqwest::Response| r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let a = id(&app.get("/healthz").await);
    let b = id(&app.get("/no/such/route").await);
    assert_ne!(a, b);
    for made in [&a, &b] {
        let u = uuid::Uuid::parse_str(made).unwrap();
        assert_eq!(u.get_version_num(), 7, "{made}");
    }
    let r = request(
        &app,
        Method::GET,
        "/healthz",
        &[("x-request-id", "from-the-proxy-1")],
    )
    .await;
    assert_eq!(id(&r), "from-the-proxy-1");
    app.stop().await;
}

#[tokio::test]
async fn every_503_says_when_to_retry() {
    let app = spawn_app().await;
    app.wait_ready().await;
    let outage = orders_postgres::testing::database_outage(&app.settings.db_name).await;
    let r = app.get("/order/not-cached").await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(r.headers()["cache-control"], "no-store");
    let r = app.get("/orders").await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let r = app.get("/readyz").await;
        if r.status() == 503 {
            assert_eq!(r.headers()["retry-after"], "1");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "/readyz never 503");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    outage.end().await;
    app.stop().await;
}

#[tokio::test]
async fn metrics_follow_the_prometheus_naming_guide() {
    let app = spawn_app().await;
    app.wait_ready().await;
    common::store_orders(&app.repo, vec![reference_order()]).await;
    app.get("/order/b563feb7b2b84b6test").await;
    app.get("/order/b563feb7b2b84b6test").await;
    let text = app.get("/metrics").await.text().await.unwrap();
    let mut types = std::collections::BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            types.insert(name.to_owned(), kind.to_owned());
        }
    }
    for (name, kind) in &types {
        // Counters and only counters end in _total; no unit but seconds for durations.
        assert_eq!(
            kind == "counter",
            name.ends_with("_total"),
            "{name} is a {kind}"
        );
        assert!(
            !name.contains("millis") && !name.contains("micros"),
            "{name}: durations are in seconds"
        );
    }
    for (name, kind) in [
        ("orders_cache_hits_total", "counter"),
        ("orders_cache_misses_total", "counter"),
        ("orders_cache_evictions_total", "counter"),
        ("orders_read_db_queries_total", "counter"),
        ("orders_cache_warmup_seconds", "gauge"),
        ("orders_http_request_duration_seconds", "histogram"),
        ("orders_batch_commit_seconds", "histogram"),
        ("orders_db_pool_size", "gauge"),
        ("orders_db_pool_available", "gauge"),
        ("orders_db_pool_waiting", "gauge"),
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
    ] {
        assert_eq!(types.get(name).map(String::as_str), Some(kind), "{name}");
    }
    for series in [
        "orders_cache_hits_total 1",
        "orders_cache_misses_total 1",
        "orders_db_pool_size{pool=\"read\"}",
        "orders_db_pool_waiting{pool=\"ingest\"} 0",
        "orders_http_request_duration_seconds_bucket{method=\"GET\",route=\"/order/{order_uid}\",status=\"200\",le=\"10\"} 2",
    ] {
        assert!(text.contains(series), "metrics lack {series}:\n{text}");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_grafana_dashboard_queries_only_metrics_the_service_exports() {
    // Consuming, so that the per-partition series exist.
    let topic = format!("dashboard-{}", uuid::Uuid::new_v4().simple());
    let app = common::spawn_app_with(common::test_settings(Some(&topic)).await).await;
    app.wait_ready().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let text = loop {
        let text = app.get("/metrics").await.text().await.unwrap();
        if text.contains("orders_consumer_lag{") {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no lag series:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/dashboards/orders.json"
    ))
    .unwrap();
    let dash: Value = serde_json::from_str(&dashboard).unwrap();
    let mut checked = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            // Every orders_* name in the query: a family /metrics has (histograms by their
            // _bucket series).
            for (i, _) in expr.match_indices("orders_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let family = name.strip_suffix("_bucket").unwrap_or(&name);
                assert!(
                    text.contains(&format!("# TYPE {family} ")),
                    "panel {:?} queries {name}, which /metrics lacks",
                    panel["title"]
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 8);
    app.stop().await;
}
