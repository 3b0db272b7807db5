#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Settings and logs of the real `orders` binary: config.env errors name their line, a bad
//! LOG_LEVEL or boolean stops start-up, booleans take the usual spellings, the access log is
//! at INFO in JSON mode, and the Kafka driver's per-connection lines stay out of the console.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A command for the binary in `dir` (its config.env is the one found), with no inherited
/// settings but the database's.
fn orders_in(dir: &Path, settings: &orders_app::Settings) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_orders"));
    c.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    common::database_env(&mut c, settings)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn run(mut c: Command) -> Output {
    let child = c.spawn().unwrap();
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "orders-config-{tag}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn a_bad_config_env_line_stops_start_up_naming_its_line() {
    let settings = common::test_settings(None).await;
    let dir = temp_dir("bad-line");
    std::fs::write(
        dir.join("config.env"),
        "# settings\nLOG_LEVEL=warn\nHTTP_PORT 8082\n",
    )
    .unwrap();
    // Found from a subdirectory too: the nearest parent's file is the one used.
    let sub = dir.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    let mut c = orders_in(&sub, &settings);
    c.arg("migrate");
    let out = run(c);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("config.env:3: expected KEY=value"), "{err}");

    // A good file is used (here: its bad LOG_LEVEL is reported as such).
    std::fs::write(dir.join("config.env"), "LOG_LEVEL='inf'\n").unwrap();
    let mut c = orders_in(&sub, &settings);
    c.arg("migrate");
    let out = run(c);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("LOG_LEVEL=\"inf\" is not a log filter"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn booleans_take_the_usual_spellings_and_refuse_the_rest() {
    let settings = common::test_settings(None).await;
    let dir = temp_dir("bool");
    for ok in ["no", "off", "0", "false", "FALSE", "yes", "on", "1", "true"] {
        let mut c = orders_in(&dir, &settings);
        c.arg("migrate").env("CONSUME", ok).env("CREATE_TOPIC", ok);
        let out = run(c);
        assert!(out.status.success(), "CONSUME={ok}: {}", stderr(&out));
    }
    let mut c = orders_in(&dir, &settings);
    c.arg("migrate").env("CONSUME", "maybe");
    let out = run(c);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("maybe"), "{}", stderr(&out));
    // The flag alone still means true.
    let mut c = orders_in(&dir, &settings);
    c.args(["--create-topic", "migrate"]);
    assert!(run(c).status.success());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs the service in JSON mode against a topic, makes a request, and returns its log lines.
async fn serve_and_log(settings: &orders_app::Settings, format: &str) -> Vec<String> {
    let dir = temp_dir("serve");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = orders_in(&dir, settings);
    c.env("KAFKA_BROKER", &settings.kafka_broker)
        .env("KAFKA_TOPIC", &settings.kafka_topic)
        .env("CREATE_TOPIC", "yes")
        .env("HTTP_HOST", "127.0.0.1")
        .env("HTTP_PORT", port.to_string())
        .env("LOG_FORMAT", format)
        .env("LOG_LEVEL", "info");
    let mut child = common::Service(c.spawn().unwrap());
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let reader = {
        let lines = lines.clone();
        let err = child.0.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines() {
                lines.lock().unwrap().push(l.unwrap_or_default());
            }
        })
    };
    // Ready, consuming (connected to the broker), then one request with a known id.
    let deadline = Instant::now() + Duration::from_secs(60);
    let url = format!("http://127.0.0.1:{port}");
    loop {
        if let Ok(r) = reqwest::get(format!("{url}/readyz")).await
            && r.text().await.is_ok_and(|t| t.contains("\"ready\""))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready: {:?}",
            lines.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = reqwest::Client::new()
        .get(format!("{url}/healthz"))
        .header("x-request-id", "access-log-probe")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(child);
    reader.join().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    lines.lock().unwrap().clone()
}

#[tokio::test]
async fn json_logs_have_an_access_line_per_request_and_no_driver_chatter() {
    let topic = format!("config-log-{}", uuid::Uuid::new_v4().simple());
    let settings = common::test_settings(Some(&topic)).await;
    let lines = serve_and_log(&settings, "json").await;
    let access: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "orders_http::access")
        .collect();
    let probe = access
        .iter()
        .find(|v| v["request_id"] == "access-log-probe")
        .unwrap_or_else(|| panic!("no access line for the probe:\n{}", lines.join("\n")));
    assert_eq!(probe["level"], "INFO");
    assert_eq!(probe["status"], 200);
    assert_eq!(probe["path"], "/healthz");
    assert_eq!(probe["method"], "GET");
    // rskafka logs a line per broker connection at INFO: kept out unless LOG_LEVEL asks.
    let chatter: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("\"target\":\"rskafka") && l.contains("\"level\":\"INFO\""))
        .collect();
    assert!(chatter.is_empty(), "{chatter:#?}");
}

#[tokio::test]
async fn text_logs_leave_the_access_log_out() {
    let topic = format!("config-text-{}", uuid::Uuid::new_v4().simple());
    let settings = common::test_settings(Some(&topic)).await;
    let lines = serve_and_log(&settings, "text").await;
    assert!(
        lines.iter().any(|l| l.contains("listening")),
        "the service logged: {lines:?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("orders_http::access") || l.contains("rskafka")),
        "{lines:#?}"
    );
}
