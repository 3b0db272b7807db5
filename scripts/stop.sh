#!/usr/bin/env bash
# Stop the service that scripts/demo.sh started in the background
# (pid file .local/orders.pid).
set -euo pipefail
LOG_TAG=stop
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

stop_pidfile "$LOCAL_DIR/orders.pid" "/orders --create-topic" "orders service"
