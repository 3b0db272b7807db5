#![allow(clippy::unwrap_used)]
//! The web page in a real headless Chromium, driven over WebDriver (chromedriver + fantoccini).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fantoccini::{Client, ClientBuilder, Locator};
use orders_domain::sample::reference_order;
use orders_domain::{AcceptedOrder, OrderRepository, PartitionOffset, Position, StoreBatch};

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn browser() -> (Driver, Client) {
    let chromedriver =
        std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromedriver).exists() && std::path::Path::new(&chromium).exists(),
        "chromium/chromedriver missing ({chromium}, {chromedriver}); run `just test-deps` (scripts/browser-deps.sh)"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let driver = Driver(
        Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let profile =
        std::env::temp_dir().join(format!("orders-chromium-{}", uuid::Uuid::new_v4().simple()));
    let caps = serde_json::json!({
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-quic", "--no-first-run", "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.display()),
            ]
        }
    });
    // The workspace builds rustls with ring (the adapters' provider) and fantoccini brings
    // aws-lc-rs: with both, rustls cannot pick the process default on its own.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = ClientBuilder::rustls()
        .unwrap()
        .capabilities(caps.as_object().unwrap().clone())
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    (driver, client)
}

async fn search(c: &Client, uid: &str) {
    let input = c.find(Locator::Id("uid")).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys(uid).await.unwrap();
    c.find(Locator::Id("search"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn text(c: &Client, id: &str) -> String {
    c.find(Locator::Id(id)).await.unwrap().text().await.unwrap()
}

/// Waits until the element's text satisfies `ok`.
async fn wait_text(c: &Client, id: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(e) = c.find(Locator::Id(id)).await
            && let Ok(t) = e.text().await
            && ok(&t)
        {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "#{id} never got the expected text"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn page_shows_orders_messages_and_never_runs_injected_html() {
    let app = common::spawn_app().await;
    app.wait_ready().await;
    let fixture = reference_order();
    let mut hostile = orders_domain::sample::generated_order("xss-order-", 1, 2);
    hostile.delivery.name = "<img src=x onerror=\"window.__xss=1\">".into();
    let orders = [fixture.clone(), hostile.clone()];
    let batch = StoreBatch {
        topic: "page".into(),
        orders: orders
            .iter()
            .enumerate()
            .map(|(i, o)| AcceptedOrder {
                order: o.clone(),
                position: Position {
                    topic: "page".into(),
                    partition: 0,
                    offset: i as i64,
                },
                payload: Bytes::from(serde_json::to_vec(o).unwrap()),
            })
            .collect(),
        offsets: vec![PartitionOffset {
            partition: 0,
            next_offset: 2,
            expected: None,
            mark: None,
            lease_epoch: None,
        }],
        ..Default::default()
    };
    app.repo.store_batch(&batch).await.unwrap();

    let (_driver, c) = browser().await;
    c.goto(&format!("{}/", app.base)).await.unwrap();

    // The reference order: header, items and totals.
    search(&c, &fixture.order_uid).await;
    wait_text(&c, "order-uid", |t| t.contains("b563feb7b2b84b6test")).await;
    let rows = c.find_all(Locator::Css("#items tbody tr")).await.unwrap();
    assert_eq!(rows.len(), 1);
    let row = rows[0].text().await.unwrap();
    for want in ["Mascaras", "Vivienne Sabo", "453", "317", "30"] {
        assert!(row.contains(want), "item row {row:?} lacks {want}");
    }
    assert!(text(&c, "amount").await.contains("1817"));
    assert!(text(&c, "goods-total").await.contains("317"));
    assert!(text(&c, "delivery-cost").await.contains("1500"));
    assert!(
        c.current_url()
            .await
            .unwrap()
            .as_str()
            .contains("uid=b563feb7b2b84b6test"),
        "deep link in the URL"
    );

    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    std::fs::write(shots.join("order-page.png"), c.screenshot().await.unwrap()).unwrap();

    // Unknown uid.
    search(&c, "does-not-exist").await;
    wait_text(&c, "message", |t| {
        t.contains("No order with id does-not-exist was found")
    })
    .await;

    // A uid that is HTML: shown as text, never run.
    let payload = "<img src=x onerror=\"window.__xss=1\">";
    search(&c, payload).await;
    let msg = wait_text(&c, "message", |t| t.contains("not a valid order id")).await;
    assert!(msg.contains(payload), "the uid is shown literally: {msg:?}");
    let imgs = c
        .execute(
            "return document.querySelectorAll('#message img, #order img').length",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(imgs, 0);

    // An order whose fields hold HTML, opened by deep link: text, not markup.
    c.goto(&format!("{}/?uid={}", app.base, hostile.order_uid))
        .await
        .unwrap();
    wait_text(&c, "order-uid", |t| t.contains(hostile.order_uid.as_str())).await;
    let page_text = c
        .find(Locator::Id("order"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page_text.contains(hostile.delivery.name.as_str()),
        "the name shows as text"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let xss = c
        .execute(
            "return window.__xss === undefined && document.querySelectorAll('img').length === 0",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(xss, true, "no injected script ran");

    // The recent list links to orders.
    let recent = c.find_all(Locator::Css("#recent a")).await.unwrap();
    assert!(recent.len() >= 2, "recent orders listed");

    c.close().await.unwrap();
    app.stop().await;
}
