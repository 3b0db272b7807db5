#!/usr/bin/env bash
# Drop the orders_test_* databases earlier test runs left behind (each test
# creates its own). A database someone is still connected to is kept, so a
# test run in progress elsewhere against the same server is not disturbed.
set -euo pipefail
LOG_TAG=drop-test-dbs
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v psql >/dev/null 2>&1 || { log "psql not found; leaving test databases alone"; exit 0; }
export PGPASSWORD="$DB_PASSWORD"
psql_() { psql -h "$DB_HOST" -p "$DB_PORT" -U "$DB_USER" -d postgres -X -q -At "$@"; }
mapfile -t dbs < <(psql_ -c "SELECT datname FROM pg_database WHERE datname LIKE 'orders\_test\_%'")
dropped=0
for db in "${dbs[@]}"; do
  [[ -n "$db" ]] || continue
  if psql_ -c "DROP DATABASE \"$db\"" 2>/dev/null; then dropped=$((dropped + 1)); fi
done
log "dropped $dropped of ${#dbs[@]} leftover test databases"
