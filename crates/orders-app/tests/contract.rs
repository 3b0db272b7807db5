#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The OpenAPI document at `/openapi.json` against the running service, checked by an
//! independent client: schemathesis (installed by `scripts/python-deps.sh` into the test venv,
//! `ORDERS_TEST_PYTHON`), every check on, a bounded number of examples per operation. It must
//! find no server error and no response that contradicts the document.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use orders_domain::sample::{generated_order, reference_order};

/// The `schemathesis` command of the test venv.
fn schemathesis() -> PathBuf {
    let python = std::env::var("ORDERS_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("ORDERS_TEST_PYTHON is not set: run `just python-deps` and point it at .local/venv/bin/python (`just test` does both)")
    });
    let st = PathBuf::from(python).with_file_name("schemathesis");
    assert!(
        st.is_file(),
        "{} missing: run `just python-deps`",
        st.display()
    );
    st
}

#[tokio::test]
async fn the_openapi_document_is_served_and_describes_every_route() {
    let app = common::spawn_app().await;
    let r = app.get("/openapi.json").await;
    assert_eq!(r.status(), 200);
    let doc: serde_json::Value = r.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/order/{order_uid}",
        "/orders",
        "/cache/stats",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/",
        "/static/app.js",
        "/static/style.css",
    ] {
        assert!(paths[path]["get"].is_object(), "{path} has GET");
        assert!(paths[path]["head"].is_object(), "{path} has HEAD");
    }
    let order = &paths["/order/{order_uid}"]["get"]["responses"];
    for status in ["200", "304", "400", "404", "500", "503"] {
        assert!(order[status].is_object(), "/order documents {status}");
    }
    // The example is the reference order itself.
    let example = &order["200"]["content"]["application/json"]["example"];
    let fixture: serde_json::Value =
        serde_json::from_str(orders_domain::REFERENCE_ORDER_JSON).unwrap();
    assert_eq!(example, &fixture);
    assert!(doc["components"]["schemas"]["Order"].is_object());
    // The page links it.
    let page = app.get("/").await.text().await.unwrap();
    assert!(page.contains("href=\"/openapi.json\""));
    app.stop().await;
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_contract_mismatch() {
    let st = schemathesis();
    let app = common::spawn_app().await;
    app.wait_ready().await;
    // Data behind the examples: the reference order (the document's example uid) and more.
    let mut orders = vec![reference_order()];
    orders.extend((0..30).map(|n| generated_order("st-", n, 2)));
    common::store_orders(&app.repo, orders).await;

    let report = std::env::temp_dir().join(format!(
        "orders-schemathesis-{}",
        uuid::Uuid::new_v4().simple()
    ));
    // Its working directory too: schemathesis keeps a cache (.schemathesis/) where it runs.
    std::fs::create_dir_all(&report).unwrap();
    let started = Instant::now();
    let out = tokio::task::spawn_blocking({
        let base = app.base.clone();
        let report = report.clone();
        move || {
            Command::new(st)
                .args([
                    "run",
                    &format!("{base}/openapi.json"),
                    "--checks",
                    "all",
                    "--max-examples",
                    "25",
                    "--seed",
                    "12",
                    "--workers",
                    "2",
                    "--request-timeout",
                    "10",
                    "--max-response-time",
                    "5",
                    "--report-dir",
                ])
                .arg(&report)
                .current_dir(&report)
                .env("NO_COLOR", "1")
                .env("SCHEMATHESIS_TELEMETRY", "false")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_dir_all(&report);
    assert!(
        out.status.success(),
        "schemathesis found problems ({:?}):\n{stdout}\n{stderr}",
        started.elapsed()
    );
    // It really exercised the API: every operation (GET and HEAD of each route), with no
    // errors of its own.
    let selected = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Selected: "))
        .unwrap_or_else(|| panic!("no operation count:\n{stdout}"));
    let (selected, total) = selected.split_once('/').unwrap();
    assert_eq!(selected, total, "{stdout}");
    assert!(total.parse::<usize>().unwrap() >= 19, "{stdout}");
    assert!(stdout.contains(&format!("Tested: {selected}")), "{stdout}");
    assert!(stdout.contains("No issues found"), "{stdout}");
    assert!(started.elapsed() < Duration::from_secs(600));
    app.stop().await;
}
