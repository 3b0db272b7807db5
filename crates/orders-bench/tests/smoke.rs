#![allow(clippy::unwrap_used)]
//! `orders-bench` end to end at a tiny size against the real stack, so the benchmark cannot rot
//! between `just bench` runs. It checks that every section ran and reported consistent counts
//! and that the report keeps what is written outside its markers; it asserts nothing about time.

use std::process::Command;

#[test]
fn every_section_runs_and_the_report_keeps_hand_written_notes() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bench-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let md = dir.join("results.md");
    let json = dir.join("results.json");
    std::fs::write(&md, "# Notes\n\nkept before\n").unwrap();
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_orders-bench"))
            .args([
                "--orders",
                "600",
                "--naive-orders",
                "60",
                "--repeat",
                "1",
                "--e2e-orders",
                "600",
                "--read-secs",
                "0.3",
                "--read-warmup-secs",
                "0",
                "--connections",
                "4",
                "--read-uids",
                "50",
                "--warm-orders",
                "600",
                "--warm-repeat",
                "2",
                "--lease-ttl-secs",
                "1",
            ])
            .arg("--out")
            .arg(&md)
            .arg("--json")
            .arg(&json)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "orders-bench failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run();
    std::fs::write(
        &md,
        std::fs::read_to_string(&md).unwrap() + "\nkept after\n",
    )
    .unwrap();
    run();

    let md = std::fs::read_to_string(&md).unwrap();
    assert!(md.starts_with("# Notes\n\nkept before\n"), "{md}");
    assert!(md.ends_with("kept after\n"), "{md}");
    assert_eq!(
        md.matches("<!-- bench:begin").count(),
        1,
        "one generated block"
    );
    for heading in [
        "1. Sink path",
        "2. End to end",
        "3. Reads",
        "4. Warm-up",
        "5. Where",
        "6. Replicas",
    ] {
        assert!(md.contains(heading), "missing {heading}");
    }

    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let sink = &r["sink"];
    for v in ["ours", "replica", "copy_1", "copy_n"] {
        assert_eq!(sink[v]["orders"], 600, "{v}");
        assert!(sink[v]["runs_secs"][0].as_f64().unwrap() > 0.0);
    }
    assert_eq!(sink["naive"]["orders"], 60);
    // 600 orders of the 1/3/10-item mix: 3 rows each plus 200 * 14 items.
    assert_eq!(sink["ours"]["rows"], 600 * 3 + 200 * 14);
    assert_eq!(r["e2e"]["orders"], 600);
    assert!(r["e2e"]["service_secs"].as_f64().unwrap() > 0.0);
    for endpoint in [
        "bare_static",
        "bare_dashmap",
        "healthz",
        "cached",
        "miss",
        "page",
    ] {
        let e = &r["reads"][endpoint];
        assert!(e["requests"].as_u64().unwrap() > 0, "{endpoint}: {e}");
        assert_eq!(e["unexpected"], 0, "{endpoint}: every answer 200");
    }
    // One warm-up line per `--warm-orders` count, each with its runs (fresh processes).
    let warm = &r["warmup"][0];
    assert_eq!(warm["orders"], 600, "{warm}");
    assert_eq!(warm["runs"].as_array().map(Vec::len), Some(2), "{warm}");
    let f = &r["failover"];
    for event in ["join_secs", "sigterm_secs", "kill_secs"] {
        assert!(f[event][0].as_f64().unwrap() > 0.0, "{event}: {f}");
    }
    for run in warm["runs"].as_array().unwrap() {
        assert_eq!(run["orders"], 600, "{run}");
        assert!(run["warm_secs"].as_f64().unwrap() > 0.0, "{run}");
        assert!(run["rss_after"].as_u64().unwrap() > 0, "{run}");
    }
}
