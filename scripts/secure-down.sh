#!/usr/bin/env bash
# Stop what scripts/secure-up.sh started (stunnel, the three tansu brokers, the TLS
# PostgreSQL). Data, certificates and secrets stay in .local/secure.
set -euo pipefail
LOG_TAG=secure-down
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SEC="$LOCAL_DIR/secure"
stop_pidfile "$SEC/stunnel/stunnel.pid" stunnel stunnel
for name in kafka-tls kafka-sasl kafka-sasl-tls; do
  stop_pidfile "$SEC/$name/tansu.pid" tansu "tansu $name"
done
ORDERS_PG_DIR="$SEC/pg" "$ROOT/scripts/db-down.sh"
