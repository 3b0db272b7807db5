# Task runner for the orders service (Kafka -> PostgreSQL, actix-web read API).
# Install just with `pip install rust-just`; `just` lists the recipes.
# Settings come from the environment, then config.env at the repo root, then
# defaults. config.env is read by scripts/lib.sh (and by the binaries
# themselves) with one set of rules, never by just's own dotenv reader: a bad
# line stops the recipe with its line number.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Used by the tests: third-party Kafka client and real-browser tests.
export ORDERS_TEST_PYTHON := env("ORDERS_TEST_PYTHON", justfile_directory() / ".local/venv/bin/python")
export CHROMEDRIVER := env("CHROMEDRIVER", "/usr/bin/chromedriver")
export CHROMIUM := env("CHROMIUM", "/usr/bin/chromium")

# List the recipes
_default:
    @just --justfile "{{ justfile() }}" --list

# List the recipes with their descriptions
help:
    @just --justfile "{{ justfile() }}" --list

# Start a throwaway PostgreSQL in .local/pg unless one listens at DB_HOST:DB_PORT
db-up:
    scripts/db-up.sh

# Stop the PostgreSQL that db-up started (data stays in .local/pg)
db-down:
    scripts/db-down.sh

# Start the tansu Kafka broker in .local/tansu unless one listens at KAFKA_BROKER
broker-up:
    scripts/broker-up.sh

# Stop the tansu broker that broker-up started
broker-down:
    scripts/broker-down.sh

# Start PostgreSQL and the Kafka broker
stack-up: db-up broker-up

# Stop the Kafka broker and PostgreSQL (and the TLS/SASL test servers)
stack-down: secure-down broker-down db-down

# Start the TLS/SASL test servers in .local/secure: TLS-only PostgreSQL, tansu behind stunnel, tansu with SCRAM
secure-up:
    scripts/secure-up.sh

# Stop the TLS/SASL test servers (data, certificates and secrets stay in .local/secure)
secure-down:
    scripts/secure-down.sh

# Start the stack and install what the tests need (TLS/SASL servers, Chromium, Python Kafka clients)
test-deps: stack-up secure-up browser-deps python-deps

# Install chromium and chromedriver when missing
browser-deps:
    scripts/browser-deps.sh

# Create .local/venv with the Python test tools (Kafka clients, noida-db, schemathesis) when missing
python-deps:
    scripts/python-deps.sh >/dev/null

# Build the release binaries orders and orders-producer
build:
    cargo build --release --bin orders --bin orders-producer

# Check formatting, unused dependencies, clippy (warnings are errors) and all tests (schemathesis included), with the stack up
test: test-deps
    scripts/drop-test-dbs.sh
    cargo fmt --all --check
    scripts/machete.sh
    cargo clippy --workspace --all-targets -- -D warnings
    scripts/with-config.sh cargo test --workspace

# Start the stack, build, send the reference order and run the service (Ctrl-C stops it)
run:
    scripts/run.sh

# Run the producer with arguments, e.g. `just run-producer --count 100`
[positional-arguments]
run-producer *ARGS:
    cargo run --release --bin orders-producer -- "$@"

# Arguments go to orders-bench, e.g. `just bench --sections reads --read-secs 10`.
# Benchmarks against same-run baselines (release build); writes bench/results.md and .json
[positional-arguments]
bench *ARGS: stack-up
    cargo run --release -p orders-bench -- "$@"

# The tour: ingest the reference, 1000 generated and invalid orders, then show the results
demo:
    scripts/demo.sh

# Stop a service that demo started in the background
stop:
    scripts/stop.sh

# Start everything in Docker (deploy/docker-compose.yml)
docker-up:
    docker compose -f deploy/docker-compose.yml up -d --build

# Stop the Docker stack
docker-down:
    docker compose -f deploy/docker-compose.yml down

# Stop the Docker stack and delete its volumes and locally built images
docker-clean:
    docker compose -f deploy/docker-compose.yml down -v --rmi local

# Stop everything and delete .local (databases, broker data, venv) and target/
clean: stop stack-down
    rm -rf .local
    cargo clean

# Run what CI runs (.ci/run: install just if needed, then `just test`)
ci:
    ./.ci/run
