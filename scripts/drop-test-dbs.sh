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

# The TLS-only cluster of the managed-services tests (scripts/secure-up.sh), when it runs.
stack="$LOCAL_DIR/secure/stack.env"
if [[ -f "$stack" ]]; then
  # shellcheck disable=SC1090
  source "$stack"
  if port_open "$SECURE_PG_HOST" "$SECURE_PG_PORT"; then
    export PGPASSWORD PGSSLMODE=verify-full PGSSLROOTCERT="$SECURE_CA"
    PGPASSWORD="$(cat "$SECURE_PG_PASSWORD_FILE")"
    psql_s() { psql -h "$SECURE_PG_HOST" -p "$SECURE_PG_PORT" -U "$SECURE_PG_USER" -d postgres -X -q -At "$@"; }
    mapfile -t dbs < <(psql_s -c "SELECT datname FROM pg_database WHERE datname LIKE 'orders\_test\_%'")
    dropped=0
    for db in "${dbs[@]}"; do
      [[ -n "$db" ]] || continue
      if psql_s -c "DROP DATABASE \"$db\"" 2>/dev/null; then dropped=$((dropped + 1)); fi
    done
    log "dropped $dropped of ${#dbs[@]} leftover test databases on the TLS test cluster"
  fi
fi
