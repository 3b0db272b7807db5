#!/usr/bin/env bash
# Make sure PostgreSQL accepts connections at DB_HOST:DB_PORT and that DB_NAME
# exists. Unless something already listens there, start a throwaway cluster in
# .local/pg (installing Debian's postgresql package when no server binaries
# are found). Idempotent: a second run only checks and ensures DB_NAME.
#
# Environment (defaults; config.env at the repo root may set them):
#   DB_HOST=localhost DB_PORT=5432 DB_USER=postgres DB_PASSWORD=postgres DB_NAME=orders_db
#   ORDERS_PG_DIR=.local/pg   PG_MAX_CONNECTIONS=300   PG_SHARED_BUFFERS=256MB
set -euo pipefail
LOG_TAG=db-up
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PG_DIR="${ORDERS_PG_DIR:-$LOCAL_DIR/pg}"
PGDATA_DIR="$PG_DIR/data"
PG_LOG="$PG_DIR/log"
PG_SOCK="$PG_DIR/run"
BINDIR=""

# 0: accepting connections, 1: something listens (maybe still starting), else nothing.
pg_probe() {
  if command -v pg_isready >/dev/null 2>&1; then
    local rc=0
    pg_isready -q -h "$DB_HOST" -p "$DB_PORT" -t 3 >/dev/null 2>&1 || rc=$?
    return "$rc"
  fi
  port_open "$DB_HOST" "$DB_PORT" && return 0
  return 2
}

pg_listening() {
  local rc=0
  pg_probe || rc=$?
  [[ $rc -eq 0 || $rc -eq 1 ]]
}

wait_accepting() {
  local limit="$1" start=$SECONDS rc
  while :; do
    rc=0; pg_probe || rc=$?
    [[ $rc -eq 0 ]] && return 0
    (( SECONDS - start >= limit )) && return 1
    sleep 0.5
  done
}

# Newest /usr/lib/postgresql/*/bin with an initdb (or the one of version $1).
find_bindir() {
  local want="${1:-}" d best=""
  if [[ -n "$want" ]]; then
    [[ -x "/usr/lib/postgresql/$want/bin/initdb" ]] && echo "/usr/lib/postgresql/$want/bin"
    return 0
  fi
  while IFS= read -r d; do
    [[ -x "$d/initdb" ]] && best="$d"
  done < <(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V)
  if [[ -z "$best" ]] && command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    best="$(dirname "$(command -v initdb)")"
  fi
  [[ -n "$best" ]] && echo "$best"
  return 0
}

# Stop and disable Debian clusters (pg_lsclusters) that occupy DB_PORT: they
# were created by the package install and do not know our password.
disable_system_clusters() {
  command -v pg_lsclusters >/dev/null 2>&1 || return 0
  local ver name port status _rest
  while read -r ver name port status _rest; do
    [[ "$port" == "$DB_PORT" ]] || continue
    if [[ "$status" == online* ]]; then
      log "stopping Debian's auto-created cluster $ver/$name on port $port (we use our own in ${PG_DIR#"$ROOT"/})"
      as_root pg_ctlcluster "$ver" "$name" stop || true
    fi
    if [[ -f "/etc/postgresql/$ver/$name/start.conf" ]]; then
      echo manual | as_root tee "/etc/postgresql/$ver/$name/start.conf" >/dev/null
      log "set cluster $ver/$name to start manually (start.conf=manual)"
    fi
  done < <(pg_lsclusters --no-header 2>/dev/null || true)
}

install_postgres() {
  local dropin=/etc/postgresql-common/createcluster.d/50-orders-no-main-cluster.conf
  log "no PostgreSQL server binaries found; installing Debian's postgresql package (about a minute)"
  # Ask postgresql-common not to create (and start) its own main cluster.
  as_root mkdir -p "$(dirname "$dropin")"
  echo 'create_main_cluster = false' | as_root tee "$dropin" >/dev/null
  trap 'as_root rm -f "'"$dropin"'"' EXIT
  apt_install postgresql
  as_root rm -f "$dropin"
  as_root rmdir --ignore-fail-on-non-empty "$(dirname "$dropin")" 2>/dev/null || true
  trap - EXIT
  disable_system_clusters
}

run_pg() {
  if [[ $EUID -eq 0 ]]; then
    (cd "$PG_DIR" && runuser -u postgres -- "$@")
  else
    (cd "$PG_DIR" && "$@")
  fi
}

ensure_postgres_user() {
  [[ $EUID -eq 0 ]] || return 0
  if ! id -u postgres >/dev/null 2>&1; then
    log "creating the postgres OS user (the server refuses to run as root)"
    useradd --system --user-group --home-dir /var/lib/postgresql --no-create-home \
      --shell /usr/sbin/nologin postgres
  fi
}

# As root, every directory on the way to PG_DIR must be traversable by postgres.
check_traversable() {
  [[ $EUID -eq 0 ]] || return 0
  local p="" part
  local -a parts
  IFS=/ read -r -a parts <<< "${PG_DIR#/}"
  for part in "${parts[@]}"; do
    [[ -z "$part" ]] && continue
    p="$p/$part"
    if ! runuser -u postgres -- test -x "$p"; then
      die "the postgres OS user cannot enter $p ($(stat -c '%A %U' "$p")); run 'chmod o+x $p' or set ORDERS_PG_DIR to a folder it can reach"
    fi
  done
}

psql_bin() {
  if command -v psql >/dev/null 2>&1; then
    command -v psql
  elif [[ -n "$BINDIR" && -x "$BINDIR/psql" ]]; then
    echo "$BINDIR/psql"
  else
    local b; b="$(find_bindir)"
    if [[ -n "$b" && -x "$b/psql" ]]; then
      echo "$b/psql"
    else
      apt_install postgresql-client >&2
      command -v psql
    fi
  fi
}

# Create DB_NAME unless it exists (connects as DB_USER with DB_PASSWORD).
ensure_database() {
  local psql out="" rc=1 maint exists
  psql="$(psql_bin)"
  for maint in postgres template1; do
    rc=0
    out="$(PGPASSWORD="$DB_PASSWORD" PGCONNECT_TIMEOUT=10 "$psql" -X -q -t -A -v ON_ERROR_STOP=1 \
      -h "$DB_HOST" -p "$DB_PORT" -U "$DB_USER" -d "$maint" -v dbname="$DB_NAME" 2>&1 <<'SQL'
SELECT count(*) FROM pg_database WHERE datname = :'dbname';
SQL
    )" || rc=$?
    [[ $rc -eq 0 ]] && break
    [[ "$out" == *"database \"$maint\" does not exist"* ]] || break
  done
  if [[ $rc -ne 0 ]]; then
    log "psql: $out"
    if [[ "$out" == *"authentication failed"* || "$out" == *"no password"* || "$out" == *"pg_hba.conf"* ]]; then
      die "cannot log in to $DB_HOST:$DB_PORT as $DB_USER with DB_PASSWORD. If that is Debian's own cluster (see pg_lsclusters), stop it ('pg_ctlcluster <ver> main stop') or use another DB_PORT; if it is ours from older settings, run scripts/db-down.sh and rm -rf ${PG_DIR#"$ROOT"/}"
    fi
    die "cannot connect to $DB_HOST:$DB_PORT as $DB_USER"
  fi
  exists="$(tail -n1 <<< "$out")"
  if [[ "$exists" == "1" ]]; then
    log "database $DB_NAME exists"
    return 0
  fi
  PGPASSWORD="$DB_PASSWORD" "$psql" -X -q -v ON_ERROR_STOP=1 -h "$DB_HOST" -p "$DB_PORT" \
    -U "$DB_USER" -d "$maint" -v dbname="$DB_NAME" >/dev/null <<'SQL'
SELECT format('CREATE DATABASE %I', :'dbname')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'dbname') \gexec
SQL
  log "created database $DB_NAME"
}

# listen_addresses for DB_HOST; only loopback hosts are started locally.
listen_address() {
  case "$DB_HOST" in
    localhost) echo localhost ;;
    127.*|::1) echo "$DB_HOST" ;;
    \[::1\]) echo "::1" ;;
    *) return 1 ;;
  esac
}

write_settings() {
  local listen sock_dir shm_kb dsm=posix
  listen="$(listen_address)"
  sock_dir="$PG_SOCK"
  if (( ${#PG_SOCK} + 20 > 107 )); then
    log "path too long for a unix socket; the cluster listens on TCP only"
    sock_dir=""
  fi
  # Docker-style small /dev/shm breaks parallel queries with posix DSM.
  shm_kb="$(df -Pk /dev/shm 2>/dev/null | awk 'NR==2 {print $2}')"
  if [[ -z "$shm_kb" ]] || (( shm_kb < 524288 )); then dsm=mmap; fi
  cat > "$PGDATA_DIR/orders.conf" <<EOF
# Written by scripts/db-up.sh on every start; edit the script, not this file.
listen_addresses = '$listen'
port = $DB_PORT
unix_socket_directories = '$sock_dir'
max_connections = ${PG_MAX_CONNECTIONS:-300}
shared_buffers = ${PG_SHARED_BUFFERS:-256MB}
dynamic_shared_memory_type = $dsm
EOF
  if ! grep -q "^include_if_exists = 'orders.conf'" "$PGDATA_DIR/postgresql.conf"; then
    printf "\n# Local settings for the orders test cluster\ninclude_if_exists = 'orders.conf'\n" \
      >> "$PGDATA_DIR/postgresql.conf"
  fi
  [[ $EUID -eq 0 ]] && chown postgres:postgres "$PGDATA_DIR/orders.conf" "$PGDATA_DIR/postgresql.conf"
  return 0
}

init_cluster() {
  local locale=C pwfile="$PG_DIR/.pwfile"
  if locale -a 2>/dev/null | grep -qiE '^c\.utf-?8$'; then locale=C.UTF-8; fi
  if [[ -d "$PGDATA_DIR" ]] && [[ -n "$(ls -A "$PGDATA_DIR")" ]]; then
    die "${PGDATA_DIR#"$ROOT"/} is not empty but holds no cluster (no PG_VERSION); remove it and retry"
  fi
  log "initialising a new cluster in ${PGDATA_DIR#"$ROOT"/} (superuser $DB_USER, locale $locale)"
  (umask 077; printf '%s\n' "$DB_PASSWORD" > "$pwfile")
  [[ $EUID -eq 0 ]] && chown postgres:postgres "$pwfile"
  if ! run_pg "$BINDIR/initdb" -D "$PGDATA_DIR" --username="$DB_USER" --pwfile="$pwfile" \
      --auth-host=scram-sha-256 --auth-local=trust -E UTF8 --locale="$locale" \
      > "$PG_DIR/initdb.log" 2>&1; then
    rm -f "$pwfile"
    tail -n 20 "$PG_DIR/initdb.log" >&2
    die "initdb failed (full output in ${PG_DIR#"$ROOT"/}/initdb.log)"
  fi
  rm -f "$pwfile"
}

start_cluster() {
  local status=0
  run_pg "$BINDIR/pg_ctl" status -D "$PGDATA_DIR" >/dev/null 2>&1 || status=$?
  write_settings
  if [[ $status -eq 0 ]]; then
    log "our cluster runs but does not answer at $DB_HOST:$DB_PORT; restarting it with the current settings"
    run_pg "$BINDIR/pg_ctl" -D "$PGDATA_DIR" -m fast stop >/dev/null
  fi
  log "starting PostgreSQL $(basename "$(dirname "$BINDIR")") at $DB_HOST:$DB_PORT (log: ${PG_LOG#"$ROOT"/})"
  if ! run_pg "$BINDIR/pg_ctl" -D "$PGDATA_DIR" -l "$PG_LOG" -w -t 60 start >/dev/null; then
    tail -n 30 "$PG_LOG" >&2 || true
    die "PostgreSQL did not start (log: $PG_LOG)"
  fi
}

main() {
  if pg_listening; then
    log "something already listens at $DB_HOST:$DB_PORT, nothing to start"
    wait_accepting 30 || die "$DB_HOST:$DB_PORT listens but does not accept connections after 30 s"
    ensure_database
    return 0
  fi

  listen_address >/dev/null ||
    die "nothing listens at $DB_HOST:$DB_PORT and DB_HOST is not a loopback address: db-up only starts a local cluster; start that server yourself or use DB_HOST=localhost"

  local version=""
  [[ -f "$PGDATA_DIR/PG_VERSION" ]] && version="$(cat "$PGDATA_DIR/PG_VERSION")"
  BINDIR="$(find_bindir "$version")"
  if [[ -z "$BINDIR" ]]; then
    if [[ -n "$version" && -n "$(find_bindir)" ]]; then
      die "${PGDATA_DIR#"$ROOT"/} was made by PostgreSQL $version, whose binaries are not installed; run 'rm -rf ${PG_DIR#"$ROOT"/}' and retry"
    fi
    install_postgres
    BINDIR="$(find_bindir "$version")"
    [[ -n "$BINDIR" ]] || die "PostgreSQL installed but no initdb${version:+ of version $version} found under /usr/lib/postgresql/*/bin"
  fi

  ensure_postgres_user
  mkdir -p "$PG_DIR" "$PG_SOCK"
  if [[ $EUID -eq 0 ]]; then
    # .local is ours: make sure the postgres user may pass through it.
    [[ "$PG_DIR" == "$LOCAL_DIR"/* ]] && chmod a+x "$LOCAL_DIR"
    chown -R postgres:postgres "$PG_DIR"
    check_traversable
  fi

  [[ -f "$PGDATA_DIR/PG_VERSION" ]] || init_cluster
  start_cluster
  wait_accepting 30 || die "PostgreSQL started but does not accept connections at $DB_HOST:$DB_PORT (log: $PG_LOG)"
  log "PostgreSQL accepts connections at $DB_HOST:$DB_PORT"
  ensure_database
}

main "$@"
