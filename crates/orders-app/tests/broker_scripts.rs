#![allow(clippy::unwrap_used)]
//! `scripts/broker-up.sh` and `broker-down.sh`, the path `just test` and `just run` take to a
//! broker, with a stand-in `tansu` (ORDERS_TOOLS_DIR) and their own directory (ORDERS_TANSU_DIR)
//! and port, so the shared broker is untouched. The stand-in is a real process on a real port:
//! what is under test is how the scripts start, watch and stop it.

mod common;

use common::free_port;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fresh directory holding `tools/bin/tansu` (the given shell script) and `tansu/`.
fn sandbox(name: &str, tansu_script: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("broker-scripts-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let bin = dir.join("tools/bin");
    std::fs::create_dir_all(&bin).unwrap();
    let tansu = bin.join("tansu");
    std::fs::write(&tansu, tansu_script).unwrap();
    std::fs::set_permissions(&tansu, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn script(name: &str, dir: &Path, port: u16) -> Output {
    Command::new("bash")
        .arg(format!("scripts/{name}"))
        .current_dir(repo_root())
        .env("ORDERS_TOOLS_DIR", dir.join("tools"))
        .env("ORDERS_TANSU_DIR", dir.join("tansu"))
        .env("KAFKA_BROKER", format!("127.0.0.1:{port}"))
        .env("KAFKA_TOPIC", "orders-script-test")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A broker that dies at start-up (as under the OOM killer) must be reported with how it died
/// and the log's tail, so a failed CI run says what happened.
#[test]
fn broker_up_says_how_a_broker_that_dies_at_start_up_ended() {
    let dir = sandbox(
        "dies",
        "#!/bin/sh\necho \"stand-in tansu $*: starting\"\nkill -KILL $$\n",
    );
    let out = script("broker-up.sh", &dir, free_port());
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("tansu exited during start-up with signal 9 (SIGKILL)"),
        "{all}"
    );
    assert!(all.contains("stand-in tansu broker"), "no log tail: {all}");
}

/// A healthy start: broker-up waits for the port, records the pid of the process that listens
/// (not of a shell or launcher in between), and broker-down stops exactly that process.
#[test]
fn broker_up_records_the_listening_process_and_broker_down_stops_it() {
    let port = free_port();
    let listener = format!(
        "#!/bin/sh\n\
         case \"$1\" in\n\
           topic) echo created; exit 0 ;;\n\
           broker) exec python3 -c 'import socket, time; s = socket.socket(); \
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((\"127.0.0.1\", {port})); \
         s.listen(); time.sleep(600)' stand-in-tansu-broker ;;\n\
         esac\n\
         exit 2\n"
    );
    let dir = sandbox("listens", &listener);
    let up = script("broker-up.sh", &dir, port);
    assert!(up.status.success(), "{}", text(&up));

    let pid: i32 = std::fs::read_to_string(dir.join("tansu/tansu.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("stand-in-tansu-broker"),
        "pid {pid} is not the listening process: {:?}",
        String::from_utf8_lossy(&cmdline)
    );
    // Its own session: a Ctrl-C sent to the terminal's process group spares it.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command's name: state, ppid, pgrp, session.
    let session: i32 = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(3)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(session, pid, "not a session leader: {stat}");

    // Idempotent: a second run finds it listening and starts nothing.
    let again = script("broker-up.sh", &dir, port);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        text(&again).contains("nothing to start"),
        "{}",
        text(&again)
    );

    let down = script("broker-down.sh", &dir, port);
    assert!(down.status.success(), "{}", text(&down));
    let deadline = Instant::now() + Duration::from_secs(20);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            Instant::now() < deadline,
            "pid {pid} still runs after broker-down"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
