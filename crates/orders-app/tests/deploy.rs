#![allow(clippy::unwrap_used, clippy::expect_used)]
//! What can be checked of `deploy/` without a Docker engine: the compose file parses, has the
//! services, health checks and start order the README promises, and references only files and
//! variables that exist; the Dockerfile copies every workspace crate, stubs every target, builds
//! binaries that exist with the pinned toolchain, and `--locked` holds.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;
use serde_norway::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every environment variable `orders` reads a setting from (as `orders --help` lists them).
fn setting_vars() -> BTreeSet<String> {
    fn walk(cmd: &clap::Command, out: &mut BTreeSet<String>) {
        for a in cmd.get_arguments() {
            if let Some(env) = a.get_env() {
                out.insert(env.to_string_lossy().into_owned());
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut out = BTreeSet::new();
    walk(&orders_app::Cli::command(), &mut out);
    assert!(out.contains("DB_HOST") && out.contains("KAFKA_TOPIC"));
    out
}

/// `cargo metadata` of the workspace for this host (offline: what the build downloaded is
/// enough; `--locked` fails when Cargo.lock is stale, as the image's `--locked` build would).
fn metadata() -> serde_json::Value {
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let rustc = Command::new(option_env!("RUSTC").unwrap_or("rustc"))
        .arg("-vV")
        .output()
        .unwrap();
    let rustc = String::from_utf8(rustc.stdout).unwrap();
    let host = rustc
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .unwrap();
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--offline",
            "--filter-platform",
            host,
        ])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo metadata --locked failed (is Cargo.lock in sync?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

struct Member {
    dir: String, // relative to the root, e.g. crates/orders-app
    bins: Vec<String>,
    has_lib: bool,
}

fn workspace_members() -> Vec<Member> {
    let meta = metadata();
    let ids: BTreeSet<&str> = meta["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let root = root();
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| ids.contains(p["id"].as_str().unwrap()))
        .map(|p| {
            let manifest = Path::new(p["manifest_path"].as_str().unwrap());
            let dir = manifest.parent().unwrap().strip_prefix(&root).unwrap();
            let targets = p["targets"].as_array().unwrap();
            let kind_is = |t: &serde_json::Value, k: &str| {
                t["kind"].as_array().unwrap().iter().any(|x| x == k)
            };
            Member {
                dir: dir.display().to_string(),
                bins: targets
                    .iter()
                    .filter(|t| kind_is(t, "bin"))
                    .map(|t| t["name"].as_str().unwrap().to_owned())
                    .collect(),
                has_lib: targets.iter().any(|t| kind_is(t, "lib")),
            }
        })
        .collect()
}

/// The compose file with its `<<:` merge keys applied, as Compose reads it.
fn compose() -> Value {
    let mut v: Value =
        serde_norway::from_str(&read("deploy/docker-compose.yml")).expect("compose file parses");
    v.apply_merge().expect("merge keys apply");
    v
}

#[test]
fn compose_runs_two_replicas_sharing_the_database_and_topic() {
    let c = compose();
    let (one, two) = (service(&c, "orders"), service(&c, "orders-2"));
    assert_eq!(
        one["environment"], two["environment"],
        "same database, topic and settings"
    );
    assert_eq!(one["build"], two["build"]);
    assert_eq!(one["healthcheck"], two["healthcheck"]);
    assert_eq!(one["depends_on"], two["depends_on"]);
    let host_port = |svc: &Value| {
        let p = svc["ports"][0].as_str().unwrap().to_owned();
        p.rsplit_once(':').unwrap().0.to_owned()
    };
    assert_ne!(host_port(one), host_port(two), "one host port each");
    assert!(
        one["stop_grace_period"].as_str().is_some(),
        "time to release leases on stop"
    );
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    compose["services"]
        .get(name)
        .unwrap_or_else(|| panic!("compose has no service {name}"))
}

#[test]
fn compose_has_the_services_health_checks_and_start_order() {
    let c = compose();
    for (name, probe) in [
        ("postgres", "pg_isready"),
        ("kafka", "kafka-broker-api-versions"),
        ("orders", "/readyz"),
    ] {
        let test = &service(&c, name)["healthcheck"]["test"];
        let text = serde_norway::to_string(test).unwrap();
        assert!(
            text.contains(probe),
            "{name} healthcheck uses {probe}: {text}"
        );
    }
    let deps = &service(&c, "orders")["depends_on"];
    assert_eq!(deps["postgres"]["condition"], "service_healthy");
    assert_eq!(
        deps["kafka-init"]["condition"],
        "service_completed_successfully"
    );
    assert_eq!(
        service(&c, "kafka-init")["depends_on"]["kafka"]["condition"],
        "service_healthy"
    );
    let init = serde_norway::to_string(&service(&c, "kafka-init")["command"]).unwrap();
    assert!(init.contains("--create") && init.contains("${KAFKA_TOPIC:-orders}"));
    // Every named volume a service mounts is declared.
    let declared = c["volumes"].as_mapping().unwrap();
    for (name, svc) in c["services"].as_mapping().unwrap() {
        for v in svc["volumes"].as_sequence().into_iter().flatten() {
            let source = v.as_str().unwrap().split(':').next().unwrap();
            if !source.starts_with('.') && !source.starts_with('/') {
                assert!(
                    declared.contains_key(source),
                    "{name:?} mounts undeclared volume {source}"
                );
            }
        }
    }
}

#[test]
fn compose_references_only_existing_files_and_settings() {
    let c = compose();
    let deploy = root().join("deploy");
    let mut builds = 0;
    for (name, svc) in c["services"].as_mapping().unwrap() {
        let Some(build) = svc.get("build") else {
            continue;
        };
        builds += 1;
        let context = deploy.join(build["context"].as_str().unwrap());
        assert!(context.is_dir(), "{name:?}: build context {context:?}");
        let dockerfile = context.join(build["dockerfile"].as_str().unwrap());
        assert!(dockerfile.is_file(), "{name:?}: dockerfile {dockerfile:?}");
        assert_eq!(
            dockerfile.canonicalize().unwrap(),
            root().join("deploy/Dockerfile")
        );
    }
    assert!(builds >= 1, "the service is built from this repository");

    // `${VAR:-default}` interpolations: a variable the service knows, with a default, so
    // `docker compose up` works without a .env file. `$${...}` is escaped (container-side).
    let known = setting_vars();
    let text = read("deploy/docker-compose.yml");
    let mut seen = 0;
    for (i, _) in text.match_indices("${") {
        if i > 0 && text.as_bytes()[i - 1] == b'$' {
            continue;
        }
        let inner = &text[i + 2..i + text[i..].find('}').unwrap()];
        let (var, default) = inner.split_once(":-").unwrap_or((inner, ""));
        assert!(
            known.contains(var),
            "compose uses ${{{var}}}, not a setting"
        );
        assert!(!default.is_empty(), "${{{var}}} has no default");
        seen += 1;
    }
    assert!(seen > 0);
    // The service's environment names only real settings (a typo would be silently ignored).
    for svc in ["orders", "orders-2", "producer"] {
        for (k, _) in service(&c, svc)["environment"].as_mapping().unwrap() {
            let k = k.as_str().unwrap();
            assert!(known.contains(k), "{svc}: {k} is not a setting of orders");
        }
    }
}

/// `docker-compose.managed.yml`: passwords only as Docker secrets read through the `_FILE`
/// settings, certificates from a read-only folder, and an example `config.env` that names only
/// real settings, holds no password and points its certificate paths into that folder.
#[test]
fn managed_compose_keeps_secrets_in_files_and_names_real_settings() {
    let c: Value = serde_norway::from_str(&read("deploy/docker-compose.managed.yml"))
        .expect("managed compose file parses");
    let known = setting_vars();
    let orders = service(&c, "orders");
    let deploy = root().join("deploy");

    let secrets = c["secrets"].as_mapping().unwrap();
    let env = orders["environment"].as_mapping().unwrap();
    for (k, v) in env {
        let k = k.as_str().unwrap();
        assert!(known.contains(k), "{k} is not a setting of orders");
        assert!(
            !k.ends_with("PASSWORD") && k != "DATABASE_URL",
            "{k}: a password as a variable"
        );
        if k.ends_with("_FILE") {
            let name = v.as_str().unwrap().strip_prefix("/run/secrets/").unwrap();
            assert!(
                secrets.contains_key(name),
                "{k} reads an undeclared secret {name}"
            );
            let file = secrets[name]["file"].as_str().unwrap();
            assert!(
                deploy.join(file).parent().unwrap().is_dir(),
                "the folder of {file} exists"
            );
        }
    }
    for k in ["DB_PASSWORD_FILE", "KAFKA_SASL_PASSWORD_FILE"] {
        assert!(env.contains_key(k), "{k}");
    }

    let mount = orders["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .find(|v| v.contains("/etc/orders/tls"))
        .expect("a certificate folder");
    assert!(mount.ends_with(":ro"), "{mount}: read-only");
    let source = mount.split(':').next().unwrap();
    assert!(deploy.join(source).is_dir(), "{source}");

    let env_file = orders["env_file"][0].as_str().unwrap();
    let example = read(&format!("deploy/{env_file}.example"));
    let mut keys = 0;
    for line in example.lines().map(str::trim) {
        let line = line.trim_start_matches("# ");
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if !k.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
            continue;
        }
        assert!(
            known.contains(k),
            "config.env.example: {k} is not a setting"
        );
        assert!(
            !k.ends_with("PASSWORD") && k != "DATABASE_URL",
            "{k} in config.env"
        );
        if v.starts_with('/') {
            assert!(
                v.starts_with("/etc/orders/tls/"),
                "{k}={v}: outside the mounted folder"
            );
        }
        keys += 1;
    }
    assert!(keys >= 10, "{keys}");
}

#[test]
fn dockerfile_copies_stubs_and_builds_what_the_workspace_has() {
    let docker = read("deploy/Dockerfile");
    let members = workspace_members();
    assert!(!members.is_empty());

    // Every COPY source from the build context exists.
    for line in docker.lines().map(str::trim) {
        let Some(args) = line.strip_prefix("COPY ") else {
            continue;
        };
        if args.starts_with("--from") {
            continue;
        }
        let parts: Vec<&str> = args.split_whitespace().collect();
        for src in &parts[..parts.len() - 1] {
            assert!(root().join(src).exists(), "COPY {src}: missing");
        }
    }
    // Every crate's manifest is in the dependency layer, and each target gets a stub.
    let stub_list = |prefix: &str| -> BTreeSet<String> {
        let line = docker
            .lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("Dockerfile has no `{prefix}` stub loop"));
        line.trim_start()[prefix.len()..]
            .split(';')
            .next()
            .unwrap()
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let libs = stub_list("for lib in");
    let main_rs = stub_list("for bin in");
    for m in &members {
        let manifest = format!("{}/Cargo.toml", m.dir);
        assert!(
            docker.contains(&format!("COPY {manifest}")),
            "Dockerfile does not copy {manifest}"
        );
        let name = m.dir.rsplit('/').next().unwrap();
        if m.has_lib {
            assert!(libs.contains(name), "no lib stub for {name}");
        }
        if root().join(&m.dir).join("src/main.rs").exists() {
            assert!(main_rs.contains(name), "no main.rs stub for {name}");
        }
    }

    // The build command names binaries the workspace has and the image copies them.
    let all_bins: BTreeSet<&str> = members
        .iter()
        .flat_map(|m| m.bins.iter().map(String::as_str))
        .collect();
    let builds: Vec<&str> = docker
        .lines()
        .filter(|l| l.contains("cargo build --release --locked"))
        .collect();
    assert!(!builds.is_empty());
    for b in builds {
        let bins: Vec<&str> = b
            .split("--bin ")
            .skip(1)
            .map(|s| s.split_whitespace().next().unwrap())
            .collect();
        assert!(bins.contains(&"orders"), "{b}");
        for bin in bins {
            assert!(
                all_bins.contains(bin),
                "Dockerfile builds unknown bin {bin}"
            );
        }
    }
    assert!(docker.contains("cp target/release/orders target/release/orders-producer /out/"));
    assert!(docker.contains("ENTRYPOINT [\"orders\"]"));
    assert!(docker.contains("/readyz"), "HEALTHCHECK on /readyz");
    assert!(docker.contains("USER orders"), "runs as a non-root user");

    // The builder image is the toolchain rust-toolchain.toml pins.
    let toolchain = read("rust-toolchain.toml");
    let channel = toolchain
        .lines()
        .find_map(|l| l.trim().strip_prefix("channel = "))
        .unwrap()
        .trim_matches('"');
    let minor = channel.rsplit_once('.').map_or(channel, |(a, _)| a);
    assert!(
        docker.contains(&format!("FROM rust:{minor}-")),
        "builder image matches toolchain {channel}"
    );
}

#[test]
fn compose_pins_images_stops_gracefully_and_provisions_grafana() {
    let c = compose();
    for (name, svc) in c["services"].as_mapping().unwrap() {
        let Some(image) = svc.get("image").and_then(Value::as_str) else {
            continue;
        };
        // A version with at least major.minor: never `latest`, never a bare major.
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
        let version = tag.trim_start_matches('v');
        assert!(
            version.split(['.', '-']).take(2).count() == 2
                && version
                    .split('.')
                    .nth(1)
                    .is_some_and(|m| m.chars().next().is_some_and(|c| c.is_ascii_digit())),
            "{name:?}: image {image} is not pinned to a version"
        );
    }
    let docker = read("deploy/Dockerfile");
    for from in docker.lines().filter_map(|l| l.strip_prefix("FROM ")) {
        assert!(
            !from.contains(":latest") && from.contains(':'),
            "FROM {from}"
        );
    }

    // Docker's SIGKILL comes after stop_grace_period: it must outlast the graceful shutdown.
    let orders = service(&c, "orders");
    let shutdown: u64 = orders["environment"]["SHUTDOWN_TIMEOUT_SECS"]
        .as_u64()
        .expect("SHUTDOWN_TIMEOUT_SECS set for the container");
    let grace = orders["stop_grace_period"]
        .as_str()
        .expect("stop_grace_period");
    let grace: u64 = grace.strip_suffix('s').unwrap().parse().unwrap();
    assert!(
        grace > shutdown,
        "stop_grace_period {grace}s <= {shutdown}s"
    );

    // Prometheus scrapes the service; Grafana gets the data source and the dashboard.
    let prom = read("deploy/prometheus/prometheus.yml");
    assert!(prom.contains("orders:8081"), "{prom}");
    for svc in ["prometheus", "grafana"] {
        for v in service(&c, svc)["volumes"].as_sequence().unwrap() {
            let source = v.as_str().unwrap().split(':').next().unwrap();
            if source.starts_with('.') {
                assert!(
                    root().join("deploy").join(source).exists(),
                    "{svc} mounts missing {source}"
                );
            }
        }
    }
    let ds = read("deploy/grafana/provisioning/datasources/prometheus.yml");
    assert!(ds.contains("http://prometheus:9090"));
    let dash: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/dashboards/orders.json")).unwrap();
    let titles: Vec<&str> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for want in [
        "Ingest rate",
        "Consumer lag per partition",
        "Rejections by reason",
        "Read latency",
        "Cache hit ratio",
    ] {
        assert!(
            titles.iter().any(|t| t.starts_with(want)),
            "dashboard lacks {want}: {titles:?}"
        );
    }
}
