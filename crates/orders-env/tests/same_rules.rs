#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `scripts/lib.sh` reads config.env with the binary's rules: the same files give the same
//! values, and the same lines are refused.

use std::path::PathBuf;
use std::process::Command;

const CASES: &[&str] = &[
    "# c\n\n  DB_HOST = db.example \nexport DB_PORT=5433\r\nA=\"x # y\"\nB='it''s'\nC=\nD=a=b\nE='$HOME \\n'\n",
    "A=1\nnot a setting\n",
    "A=1\n\n1A=2\n",
    "A=\"open\n",
    "A='x\"\n",
    "A=1 # why\n",
    "A=1\nA=2\n",
    "=1\n",
    "A=\"\"\nB=''\n",
];

/// A copy of scripts/lib.sh in a directory of its own, beside `text` as config.env.
fn script_root(text: &str, n: usize) -> PathBuf {
    let root = std::env::temp_dir().join(format!("orders-env-rules-{}-{n}", std::process::id()));
    std::fs::create_dir_all(root.join("scripts")).unwrap();
    let lib = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/lib.sh");
    std::fs::copy(lib, root.join("scripts/lib.sh")).unwrap();
    std::fs::write(root.join("config.env"), text).unwrap();
    root
}

#[test]
fn lib_sh_and_the_binary_read_config_env_alike() {
    for (n, text) in CASES.iter().enumerate() {
        let root = script_root(text, n);
        let keys = ["DB_HOST", "DB_PORT", "A", "B", "C", "D", "E"];
        let script = format!(
            "source {}/scripts/lib.sh && for k in {}; do printf '%s=%s\\n' \"$k\" \"${{!k-<unset>}}\"; done",
            root.display(),
            keys.join(" ")
        );
        let mut cmd = Command::new("bash");
        cmd.args(["-c", &script])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap());
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        match orders_env::parse(text) {
            Ok(entries) => {
                assert!(
                    out.status.success(),
                    "{text:?}: lib.sh refused it: {stderr}"
                );
                for e in entries {
                    let line = format!("{}={}\n", e.key, e.value);
                    assert!(
                        stdout.contains(&line),
                        "{text:?}: lib.sh lacks {line:?}:\n{stdout}"
                    );
                }
            }
            Err((line, _)) => {
                assert!(
                    !out.status.success(),
                    "{text:?}: lib.sh accepted it:\n{stdout}"
                );
                let at = format!("config.env:{line}:");
                assert!(
                    stderr.contains(&at),
                    "{text:?}: lib.sh says {stderr}, not {at}"
                );
            }
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
}
