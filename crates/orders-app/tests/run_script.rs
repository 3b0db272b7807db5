#![allow(clippy::unwrap_used)]
//! `just run`'s own path: `scripts/run.sh` (what the recipe runs) against the running stack, with
//! this build's binaries, its own database, topic and port. It must start the service, send the
//! reference order, serve it, let a second `just run` reuse the running service, and stop
//! gracefully on Ctrl-C (SIGINT to the process group, as a terminal sends it).

mod common;

use common::free_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use orders_domain::sample::reference_order;

const REF: &str = "b563feb7b2b84b6test";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The directory holding this build's `orders`; `orders-producer` is built there when missing
/// (it is a bin of another package, built by `cargo test --workspace` but not by `-p orders-app`).
fn bin_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_orders"))
        .parent()
        .unwrap()
        .to_path_buf();
    if !dir.join("orders-producer").exists() {
        let status = Command::new(option_env!("CARGO").unwrap_or("cargo"))
            .args(["build", "--bin", "orders-producer"])
            .current_dir(repo_root())
            .status()
            .unwrap();
        assert!(status.success(), "cargo build --bin orders-producer failed");
    }
    dir
}

/// `scripts/run.sh` in its own process group, output appended to `log`.
fn run_script(env: &[(&str, String)], log: &Path) -> Command {
    use std::os::unix::process::CommandExt;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg("scripts/run.sh")
        .current_dir(repo_root())
        .env_remove("DB_PASSWORD")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .process_group(0);
    cmd
}

/// Kills the whole process group if the test fails before stopping it.
struct Group(Child);

impl Group {
    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, "--", &format!("-{}", self.0.id())])
            .status();
    }

    fn wait_for_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.0.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            self.signal("-KILL");
            let _ = self.0.wait();
        }
    }
}

#[tokio::test]
async fn run_script_starts_the_service_and_serves_the_reference_order() {
    let db = orders_postgres::testing::create_test_database().await;
    let topic = format!(
        "test-run-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let port = free_port();
    let password_file =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("run-script-{topic}.password"));
    std::fs::write(&password_file, format!("{}\n", db.password.expose())).unwrap();
    let broker = std::env::var("KAFKA_BROKER").unwrap_or_else(|_| "localhost:9092".into());
    let env = [
        ("DB_HOST", db.host.clone()),
        ("DB_PORT", db.port.to_string()),
        ("DB_USER", db.user.clone()),
        // As a deployment keeps it: in a file (the scripts must not hand the service a default
        // DB_PASSWORD beside it).
        ("DB_PASSWORD_FILE", password_file.display().to_string()),
        ("DB_NAME", db.dbname.clone()),
        ("KAFKA_BROKER", broker),
        ("KAFKA_TOPIC", topic.clone()),
        ("HTTP_HOST", "127.0.0.1".into()),
        ("HTTP_PORT", port.to_string()),
        ("LOG_LEVEL", "warn".into()),
        ("ORDERS_SKIP_BUILD", "1".into()),
        ("ORDERS_BIN_DIR", bin_dir().display().to_string()),
    ];
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("run-script-{topic}.log"));
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    let mut first = Group(run_script(&env, &log).spawn().unwrap());

    // The recipe's promise: the reference order answers at /order/{uid}.
    let url = format!("http://127.0.0.1:{port}/order/{REF}");
    let deadline = Instant::now() + Duration::from_secs(120);
    let body: serde_json::Value = loop {
        if let Ok(r) = reqwest::get(&url).await
            && r.status() == 200
        {
            break r.json().await.unwrap();
        }
        if let Some(status) = first.0.try_wait().unwrap() {
            panic!("run.sh exited early ({status}):\n{}", log_text());
        }
        assert!(
            Instant::now() < deadline,
            "reference order not served within 120 s:\n{}",
            log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(body, serde_json::to_value(reference_order()).unwrap());

    // A second `just run` finds the service and leaves it alone.
    let second = run_script(&env, &log).output().unwrap();
    assert!(second.status.success(), "second run:\n{}", log_text());
    assert!(
        log_text().contains("not starting a second service"),
        "{}",
        log_text()
    );
    assert!(first.0.try_wait().unwrap().is_none(), "first run still up");

    // Exactly one copy stored, and its offset committed with it.
    let sql = orders_postgres::testing::sql_client(&db).await;
    let n: i64 = sql
        .query_one("SELECT count(*) FROM orders WHERE order_uid = $1", &[&REF])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let next: i64 = sql
        .query_one(
            "SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets WHERE topic = $1",
            &[&topic],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(next, 1, "one message consumed and its offset stored");

    // Ctrl-C: SIGINT to the foreground process group; the service drains and exits 0.
    first.signal("-INT");
    let status = first
        .wait_for_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no exit within 20 s of SIGINT:\n{}", log_text()));
    assert!(status.success(), "exit {status}:\n{}", log_text());
    assert!(
        reqwest::get(&url).await.is_err(),
        "nothing listens after Ctrl-C"
    );

    // A later run finds the order stored and does not send it again: no `duplicate` row for
    // an operator to explain.
    let mut again = Group(run_script(&env, &log).spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log_text().contains("stored already; not sending it again") {
        if let Some(status) = again.0.try_wait().unwrap() {
            panic!("run.sh exited early ({status}):\n{}", log_text());
        }
        assert!(Instant::now() < deadline, "no skip:\n{}", log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rejected: i64 = sql
        .query_one("SELECT count(*) FROM rejected_messages", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rejected, 0, "{}", log_text());
    again.signal("-INT");
    let status = again
        .wait_for_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no exit within 20 s of SIGINT:\n{}", log_text()));
    assert!(status.success(), "exit {status}:\n{}", log_text());
}
