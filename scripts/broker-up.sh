#!/usr/bin/env bash
# Make sure a Kafka-compatible broker listens at KAFKA_BROKER and that the
# topic KAFKA_TOPIC exists. Unless something already listens there, start the
# tansu broker (installed once with cargo into ORDERS_TOOLS_DIR) with its data
# in .local/tansu. Idempotent.
#
# Environment (defaults; config.env at the repo root may set them):
#   KAFKA_BROKER=localhost:9092 KAFKA_TOPIC=orders KAFKA_PARTITIONS=3
#   ORDERS_TOOLS_DIR=$HOME/.cache/orders/tools (where install_tansu in lib.sh puts tansu)
#   ORDERS_TANSU_DIR=.local/tansu (its data, log and pid file)
set -euo pipefail
LOG_TAG=broker-up
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TANSU_DIR="${ORDERS_TANSU_DIR:-$LOCAL_DIR/tansu}"
PID_FILE="$TANSU_DIR/tansu.pid"
LOG_FILE="$TANSU_DIR/tansu.log"
PARTITIONS="${KAFKA_PARTITIONS:-3}"
parse_broker

ensure_topic() {
  local url="tcp://$BROKER_HOST:$BROKER_PORT" out rc=0
  if [[ ! -x "$TANSU" ]]; then
    log "tansu CLI not installed, not creating topic $KAFKA_TOPIC (the service creates it with --create-topic)"
    return 0
  fi
  out="$("$TANSU" topic create "$KAFKA_TOPIC" --broker "$url" --partitions "$PARTITIONS" 2>&1)" || rc=$?
  if [[ $rc -eq 0 ]]; then
    log "created topic $KAFKA_TOPIC with $PARTITIONS partitions"
  elif grep -qiE 'already ?exists' <<< "$out"; then
    log "topic $KAFKA_TOPIC already exists"
  else
    printf '%s\n' "$out" >&2
    die "could not create topic $KAFKA_TOPIC at $url"
  fi
}

if port_open "$BROKER_HOST" "$BROKER_PORT"; then
  log "something already listens at $BROKER_HOST:$BROKER_PORT, nothing to start"
  ensure_topic
  exit 0
fi

case "$BROKER_HOST" in
  localhost|127.*) LISTEN_IP=127.0.0.1 ;;
  *) die "nothing listens at $KAFKA_BROKER and it is not a loopback address: broker-up only starts a local broker" ;;
esac

if pid_alive "$PID_FILE" tansu; then
  log "our tansu (pid $(cat "$PID_FILE")) runs but does not answer at $BROKER_HOST:$BROKER_PORT; restarting it"
  "$ROOT/scripts/broker-down.sh"
fi

install_tansu

mkdir -p "$TANSU_DIR/data"
url="tcp://$LISTEN_IP:$BROKER_PORT"
log "starting tansu $TANSU_VERSION at $url (data: ${TANSU_DIR#"$ROOT"/}/data, log: ${LOG_FILE#"$ROOT"/})"
printf '=== %s: starting tansu at %s\n' "$(date -Is)" "$url" >> "$LOG_FILE"
# From the data folder's parent: tansu takes sqlite:// paths relative to its cwd.
spawn_daemon "$TANSU_DIR" "$PID_FILE" "$LOG_FILE" env NO_COLOR=1 "$TANSU" broker \
  --listener-url "$url" \
  --advertised-listener-url "$url" \
  --storage-engine "sqlite://data/tansu.db"
await_listen tansu "$SPAWNED_PID" "$LISTEN_IP" "$BROKER_PORT" "$LOG_FILE"
log "tansu accepts connections at $BROKER_HOST:$BROKER_PORT (pid $SPAWNED_PID)"
ensure_topic
