#!/usr/bin/env bash
# Stop the tansu broker that scripts/broker-up.sh started (pid file in
# .local/tansu). Leaves any other broker alone.
set -euo pipefail
LOG_TAG=broker-down
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PID_FILE="${ORDERS_TANSU_DIR:-$LOCAL_DIR/tansu}/tansu.pid"
parse_broker

if ! pid_alive "$PID_FILE" tansu && port_open "$BROKER_HOST" "$BROKER_PORT"; then
  log "something listens at $BROKER_HOST:$BROKER_PORT but it is not our tansu; leaving it alone"
fi
stop_pidfile "$PID_FILE" tansu "tansu broker"
