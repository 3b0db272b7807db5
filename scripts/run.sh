#!/usr/bin/env bash
# Start the local stack (PostgreSQL, tansu), build the release binaries and
# run the service in the foreground (Ctrl-C stops it gracefully). Once the
# service listens, orders-producer sends the reference order in the background.
# A second run reuses what is running. ORDERS_SKIP_BUILD=1 skips cargo build;
# ORDERS_BIN_DIR runs the binaries from another directory (the test of this
# script uses the test build's binaries).
set -euo pipefail
LOG_TAG=run
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

"$ROOT/scripts/db-up.sh"
"$ROOT/scripts/broker-up.sh"

release_bins

URL="http://localhost:$HTTP_PORT"
if port_open 127.0.0.1 "$HTTP_PORT"; then
  log "something already serves at $URL (another 'just run'?); not starting a second service"
  log "open $URL or try: curl $URL/order/b563feb7b2b84b6test"
  exit 0
fi

REF=b563feb7b2b84b6test

# The HTTP status of HEAD /order/$1 on the service (bash's /dev/tcp: no curl needed).
order_status() {
  local status=""
  exec 3<>"/dev/tcp/127.0.0.1/$HTTP_PORT" || return 1
  printf 'HEAD /order/%s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' "$1" >&3
  read -r _ status _ <&3 || true
  exec 3<&- 3>&-
  echo "$status"
}

# Send the reference order once the service listens, unless it is stored already
# (a re-send would be recorded as a `duplicate` rejection); the producer retries
# until the topic exists.
(
  if wait_port 127.0.0.1 "$HTTP_PORT" 120; then
    if [[ "$(order_status "$REF" 2>/dev/null)" == 200 ]]; then
      log "reference order $REF is stored already; not sending it again"
    elif "$BIN/orders-producer" 2>&1 | sed -u 's/^/[producer] /' >&2; then
      log "reference order $REF sent"
    else
      log "orders-producer failed; retry with: just run-producer"
    fi
  else
    log "service did not listen on port $HTTP_PORT within 120 s; reference order not sent"
  fi
) &

log "starting the service: $URL  (Ctrl-C stops it)"
log "then try: curl $URL/order/b563feb7b2b84b6test"
exec "$BIN/orders" --create-topic
