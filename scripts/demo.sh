#!/usr/bin/env bash
# The tour: start the stack, build, run the service in the background, send
# the reference order, 1000 generated orders and invalid messages, then show
# the order, cache stats, metrics and rejected-message counts, and stop the
# service again. ORDERS_SKIP_BUILD=1 skips cargo build.
set -euo pipefail
LOG_TAG=demo
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

REF=b563feb7b2b84b6test
BASE="http://127.0.0.1:$HTTP_PORT"
PID_FILE="$LOCAL_DIR/orders.pid"
SERVICE_LOG="$LOCAL_DIR/orders.log"

step() { printf '\n[demo] === %s\n' "$*" >&2; }

command -v curl >/dev/null 2>&1 || apt_install curl ca-certificates

"$ROOT/scripts/db-up.sh"
"$ROOT/scripts/broker-up.sh"

release_bins

started=0
if port_open 127.0.0.1 "$HTTP_PORT"; then
  log "a service already listens on port $HTTP_PORT; using it (the demo will not stop it)"
else
  step "starting the service in the background (log: .local/orders.log)"
  mkdir -p "$LOCAL_DIR"
  printf '=== %s: demo starts orders\n' "$(date -Is)" >> "$SERVICE_LOG"
  spawn_daemon "$ROOT" "$PID_FILE" "$SERVICE_LOG" "$BIN/orders" --create-topic
  started=1
  trap '"$ROOT/scripts/stop.sh"' EXIT
fi

start=$SECONDS
until curl -fsS -o /dev/null "$BASE/readyz" 2>/dev/null; do
  # kill -0, not pid_alive: until the child has exec'd, its command line is this script's.
  if (( started )) && ! kill -0 "$SPAWNED_PID" 2>/dev/null; then
    rc=0
    wait "$SPAWNED_PID" 2>/dev/null || rc=$?
    tail -n 30 "$SERVICE_LOG" >&2
    die "the service exited during start-up with $(exit_status_text "$rc") (log: $SERVICE_LOG)"
  fi
  if (( SECONDS - start >= 60 )); then
    tail -n 30 "$SERVICE_LOG" >&2
    die "$BASE/readyz did not answer within 60 s"
  fi
  sleep 0.5
done
log "service ready at $BASE"

step "sending the reference order $REF"
"$BIN/orders-producer"
step "sending 1000 generated orders"
"$BIN/orders-producer" --count 1000
step "sending invalid messages"
"$BIN/orders-producer" --invalid

step "waiting until the messages are ingested"
start=$SECONDS
until curl -fsS -o /dev/null "$BASE/order/$REF" 2>/dev/null; do
  (( SECONDS - start >= 60 )) && die "order $REF not readable after 60 s (log: $SERVICE_LOG)"
  sleep 0.5
done
# Then wait until the service's counters stop moving (at most 60 s).
counters() { curl -fsS "$BASE/metrics" 2>/dev/null | grep -E '^orders_[a-z_]*_total' || true; }
prev="$(counters)"; start=$SECONDS
while (( SECONDS - start < 60 )); do
  sleep 1
  cur="$(counters)"
  [[ "$cur" == "$prev" ]] && break
  prev="$cur"
done

step "GET /order/$REF"
curl -fsS "$BASE/order/$REF"; echo
step "GET /cache/stats"
curl -fsS "$BASE/cache/stats"; echo
step "GET /metrics | grep '^orders_' | head -30"
curl -fsS "$BASE/metrics" | grep '^orders_' | head -30 || true
step "orders rejected counts"
"$BIN/orders" rejected counts

if (( started )); then
  step "stopping the service"
  "$ROOT/scripts/stop.sh"
  trap - EXIT
fi
log "done (service log: .local/orders.log)"
