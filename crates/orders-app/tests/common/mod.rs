//! Test helpers: the real app on port 0 with its own database (and topic when consuming).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::time::{Duration, Instant};

use orders_app::{Application, Settings, ShutdownHandle};
use orders_postgres::PgRepository;

pub struct TestApp {
    pub base: String,
    pub settings: Settings,
    pub shutdown: ShutdownHandle,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub repo: PgRepository,
}

/// Settings for a test: a fresh database, port 0, loopback; consuming only when `topic` is set.
pub async fn test_settings(topic: Option<&str>) -> Settings {
    let db = orders_postgres::testing::create_test_database().await;
    let mut s = Settings::from_env().expect("default settings parse");
    s.db_host = db.host;
    s.db_port = db.port;
    s.db_user = db.user;
    s.db_password = Some(db.password);
    s.db_name = db.dbname;
    s.db_pool_size = 4;
    s.http_host = "127.0.0.1".into();
    s.http_port = 0;
    s.http_workers = 2;
    s.consume = topic.is_some();
    if let Some(t) = topic {
        s.kafka_topic = t.into();
        s.create_topic = true;
        s.kafka_partitions = 3;
    }
    s
}

pub async fn spawn_app_with(settings: Settings) -> TestApp {
    if std::env::var("TEST_LOG").is_ok() {
        orders_app::telemetry::init("info", orders_app::config::LogFormat::Text)
            .expect("a valid filter");
    }
    let repo = PgRepository::connect(&settings.postgres().unwrap())
        .await
        .unwrap();
    let app = Application::build(settings.clone())
        .await
        .expect("app builds");
    let base = format!("http://127.0.0.1:{}", app.port());
    let shutdown = app.shutdown_handle();
    let task = tokio::spawn(app.run_until_stopped());
    TestApp {
        base,
        settings,
        shutdown,
        task,
        repo,
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(test_settings(None).await).await
}

impl TestApp {
    pub async fn get(&self, path: &str) -> reqwest::Response {
        reqwest::get(format!("{}{}", self.base, path))
            .await
            .unwrap()
    }

    /// Waits until `/readyz` says ready.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/readyz", self.base)).await
                && r.status() == 200
            {
                return;
            }
            assert!(Instant::now() < deadline, "app not ready within 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(self) {
        self.shutdown.shutdown();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("stops in time")
            .unwrap()
            .unwrap();
    }
}

/// The real `orders` binary, killed when dropped (a failing test leaves no process behind).
pub struct Service(pub std::process::Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free TCP port on the loopback interface (for a binary that needs a port of its own).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Points `cmd` (the `orders` binary) at `settings`' database.
pub fn database_env<'a>(
    cmd: &'a mut std::process::Command,
    settings: &Settings,
) -> &'a mut std::process::Command {
    cmd.env("DB_HOST", &settings.db_host)
        .env("DB_PORT", settings.db_port.to_string())
        .env("DB_USER", &settings.db_user)
        .env(
            "DB_PASSWORD",
            settings.postgres().unwrap().password.expose(),
        )
        .env("DB_NAME", &settings.db_name)
}

/// Starts the real `orders` binary with `settings`' database and topic on `port`.
pub fn start_binary(settings: &Settings, port: u16) -> Service {
    start_binary_with(settings, port, &[])
}

/// [`start_binary`] with more environment variables.
pub fn start_binary_with(settings: &Settings, port: u16, env: &[(&str, &str)]) -> Service {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_orders"));
    Service(
        database_env(&mut cmd, settings)
            .envs(env.iter().copied())
            .env("KAFKA_BROKER", &settings.kafka_broker)
            .env("KAFKA_TOPIC", &settings.kafka_topic)
            .env("HTTP_HOST", "127.0.0.1")
            .env("HTTP_PORT", port.to_string())
            .env("SHUTDOWN_TIMEOUT_SECS", "10")
            .env("LOG_LEVEL", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap(),
    )
}

/// Stores `orders` as one batch read from partition 0 of a topic `seed` (offsets not moved):
/// data for read tests, written the way ingestion writes it.
pub async fn store_orders(
    repo: &dyn orders_domain::OrderRepository,
    orders: Vec<orders_domain::Order>,
) {
    let orders = orders
        .into_iter()
        .enumerate()
        .map(|(i, order)| orders_domain::AcceptedOrder {
            payload: bytes::Bytes::from(serde_json::to_vec(&order).unwrap()),
            order,
            position: orders_domain::Position {
                topic: "seed".into(),
                partition: 0,
                offset: i as i64,
            },
        })
        .collect::<Vec<_>>();
    repo.store_batch(&orders_domain::StoreBatch {
        topic: "seed".into(),
        orders,
        ..Default::default()
    })
    .await
    .unwrap();
}

/// The real `orders` binary with `settings`' database, `args` and `env` on top of a clean
/// policy environment (`UNKNOWN_FIELDS` unset); it must succeed within 60 s (a command that
/// never ends is a failure, not a hang).
pub fn orders_cli(
    settings: &Settings,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_orders"));
    database_env(&mut cmd, settings)
        .args(args)
        .env("LOG_LEVEL", "warn")
        .env_remove("UNKNOWN_FIELDS")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("orders {args:?} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "orders {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
