#!/usr/bin/env bash
# Make sure the Python venv .local/venv exists with the third-party Kafka
# clients confluent-kafka and kafka-python (used by a test as an independent
# client), noida-db, a Kafka-protocol broker with transactions (tansu has
# none; the orders-kafka tests run the broker binary inside its wheel), and
# schemathesis, which checks the service against its OpenAPI document
# (orders-app/tests/contract.rs).
# Prints the venv's python path on stdout.
set -euo pipefail
LOG_TAG=python-deps
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VENV="$LOCAL_DIR/venv"
PY="$VENV/bin/python"
SCHEMATHESIS_VERSION=4.32.5
PACKAGES=(confluent-kafka kafka-python noida-db==0.2.3 "schemathesis==$SCHEMATHESIS_VERSION")
# noida-db's own module only wraps its binary: check that the binary is there.
check='import confluent_kafka, kafka, schemathesis; from importlib.metadata import version; from importlib.resources import files; assert version("noida-db") == "0.2.3" and files("noida_db").joinpath("noida-db").is_file() and version("schemathesis") == "'"$SCHEMATHESIS_VERSION"'"'

if [[ -x "$PY" ]] && "$PY" -c "$check" >/dev/null 2>&1; then
  log "venv .local/venv has ${PACKAGES[*]}"
  echo "$PY"
  exit 0
fi

if [[ ! -x "$PY" ]]; then
  command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
  log "creating venv .local/venv"
  mkdir -p "$LOCAL_DIR"
  if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
    rm -rf "$VENV"
    apt_install python3-venv
    python3 -m venv "$VENV"
  fi
fi
log "installing ${PACKAGES[*]} into .local/venv"
"$PY" -m pip install --quiet --disable-pip-version-check "${PACKAGES[@]}" >&2
"$PY" -c "$check" || die "the venv cannot import ${PACKAGES[*]} after install"
log "venv ready"
echo "$PY"
