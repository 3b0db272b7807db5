#!/usr/bin/env bash
# Stop the throwaway PostgreSQL cluster that scripts/db-up.sh started in
# .local/pg (pg_ctl stop -m fast). Leaves any other server alone.
set -euo pipefail
LOG_TAG=db-down
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PG_DIR="${ORDERS_PG_DIR:-$LOCAL_DIR/pg}"
PGDATA_DIR="$PG_DIR/data"

if [[ ! -f "$PGDATA_DIR/PG_VERSION" ]]; then
  log "no cluster of ours in ${PG_DIR#"$ROOT"/}, nothing to stop"
  exit 0
fi

version="$(cat "$PGDATA_DIR/PG_VERSION")"
bindir="/usr/lib/postgresql/$version/bin"
if [[ ! -x "$bindir/pg_ctl" ]]; then
  command -v pg_ctl >/dev/null 2>&1 || die "pg_ctl of PostgreSQL $version not found"
  bindir="$(dirname "$(command -v pg_ctl)")"
fi

run_pg() {
  if [[ $EUID -eq 0 ]]; then
    (cd "$PG_DIR" && runuser -u postgres -- "$@")
  else
    (cd "$PG_DIR" && "$@")
  fi
}

status=0
run_pg "$bindir/pg_ctl" status -D "$PGDATA_DIR" >/dev/null 2>&1 || status=$?
if [[ $status -ne 0 ]]; then
  log "our cluster in ${PG_DIR#"$ROOT"/} is not running, nothing to stop"
  if port_open "$DB_HOST" "$DB_PORT"; then
    log "something else listens at $DB_HOST:$DB_PORT; it is not ours, leaving it alone"
  fi
  exit 0
fi

log "stopping our PostgreSQL cluster in ${PG_DIR#"$ROOT"/}"
run_pg "$bindir/pg_ctl" stop -D "$PGDATA_DIR" -m fast -w -t 60 >/dev/null
log "PostgreSQL stopped (data kept in ${PGDATA_DIR#"$ROOT"/}; rm -rf ${PG_DIR#"$ROOT"/} to reset)"
