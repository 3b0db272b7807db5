#!/usr/bin/env bash
# The servers of the managed-services tests (TLS and SASL), each on its own port and with its
# data in .local/secure, so the shared PostgreSQL and broker stay untouched:
#   - a throwaway CA and certificates made with openssl (tls/): the server's for DNS name
#     `localhost` only (so 127.0.0.1 does not match it), a client certificate (CN orders_cert),
#     and an unrelated CA for the "wrong CA" tests;
#   - PostgreSQL (pg/) with ssl = on and a pg_hba.conf of hostssl lines only: scram-sha-256
#     for everyone, certificate authentication for the role orders_cert;
#   - tansu brokers: `kafka-tls` behind stunnel (TLS), `kafka-sasl` with --authentication
#     (SASL/SCRAM, plaintext) and `kafka-sasl-tls` with --authentication behind stunnel
#     (SASL_SSL). Each advertises the port clients must use. Users are made as tansu allows:
#     started without --authentication, `tansu user create`, stopped, started with it;
#   - one stunnel4 process terminating TLS for the two brokers behind it.
# Passwords are random, made once, in secrets/ (mode 600). The ports and paths the tests need
# are written to .local/secure/stack.env. Idempotent: running servers are left as they are.
#
# Ports: SECURE_PORT_BASE .. +5; by default derived from this checkout's path (20000..31990),
# so two checkouts on one machine do not collide, and never 5432 or 9092.
set -euo pipefail
LOG_TAG=secure-up
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SEC="$LOCAL_DIR/secure"
TLS="$SEC/tls"
SECRETS="$SEC/secrets"
if [[ -z "${SECURE_PORT_BASE:-}" ]]; then
  sum="$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)"
  SECURE_PORT_BASE=$((20000 + (sum % 1200) * 10))
fi
PG_PORT=$SECURE_PORT_BASE
TLS_BACKEND=$((SECURE_PORT_BASE + 1))   # tansu behind stunnel, plaintext, loopback only
TLS_PORT=$((SECURE_PORT_BASE + 2))      # stunnel -> TLS_BACKEND
SASL_PORT=$((SECURE_PORT_BASE + 3))     # tansu with --authentication, plaintext
SASL_TLS_BACKEND=$((SECURE_PORT_BASE + 4))
SASL_TLS_PORT=$((SECURE_PORT_BASE + 5)) # stunnel -> SASL_TLS_BACKEND

mkdir -p "$TLS" "$SECRETS"
chmod 700 "$SECRETS"

# ---- packages -------------------------------------------------------------------------
command -v openssl >/dev/null 2>&1 || apt_install openssl
command -v stunnel4 >/dev/null 2>&1 || apt_install stunnel4
command -v stunnel4 >/dev/null 2>&1 || die "stunnel4 still missing after install"
install_tansu

# ---- secrets and certificates ---------------------------------------------------------
secret() { # file: a random password, made once
  local f="$SECRETS/$1"
  [[ -s "$f" ]] || (umask 077; openssl rand -hex 16 > "$f")
}
secret pg-password
secret kafka-scram256-password
secret kafka-scram512-password

make_ca() { # name subject
  [[ -s "$TLS/$1.crt" ]] && return 0
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -keyout "$TLS/$1.key" -out "$TLS/$1.crt" -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

make_leaf() { # name subject extensions
  [[ -s "$TLS/$1.crt" && "$TLS/$1.crt" -nt "$TLS/ca.crt" ]] && return 0
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$TLS/$1.key" -out "$TLS/$1.csr" -subj "/CN=$2" 2>/dev/null
  printf '%s\n' "$3" > "$TLS/$1.ext"
  openssl x509 -req -in "$TLS/$1.csr" -CA "$TLS/ca.crt" -CAkey "$TLS/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$TLS/$1.ext" -out "$TLS/$1.crt" 2>/dev/null
  rm -f "$TLS/$1.csr" "$TLS/$1.ext"
}

if [[ ! -s "$TLS/ca.crt" ]]; then
  log "making a throwaway CA and certificates in ${TLS#"$ROOT"/}"
fi
make_ca ca "orders test CA"
make_ca other-ca "an unrelated CA"
make_leaf server localhost "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost"
make_leaf client orders_cert "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
chmod 600 "$TLS"/*.key

# ---- PostgreSQL with TLS ---------------------------------------------------------------
PG_DIR="$SEC/pg"
PGDATA_DIR="$PG_DIR/data"
# As root the server runs as postgres, which must be able to enter .local/secure.
[[ $EUID -eq 0 ]] && chmod a+x "$LOCAL_DIR" "$SEC"
pg_env=(ORDERS_PG_DIR="$PG_DIR" DB_HOST=localhost DB_PORT="$PG_PORT" DB_USER=postgres
  DB_PASSWORD="$(cat "$SECRETS/pg-password")" DB_NAME=orders_db
  PG_MAX_CONNECTIONS=60 PG_SHARED_BUFFERS=32MB)
env "${pg_env[@]}" "$ROOT/scripts/db-up.sh"

as_pg_owner() {
  if [[ $EUID -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

tls_conf="# Written by scripts/secure-up.sh: TLS for the managed-services tests.
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
ssl_ca_file = 'ca.crt'"
hba="# Written by scripts/secure-up.sh: TLS only (no 'host' lines, so plaintext is refused).
local   all  all                    trust
hostssl all  orders_cert 127.0.0.1/32 cert
hostssl all  orders_cert ::1/128      cert
hostssl all  all         127.0.0.1/32 scram-sha-256
hostssl all  all         ::1/128      scram-sha-256"
changed=0
for f in server.crt server.key ca.crt; do
  if ! cmp -s "$TLS/$f" "$PGDATA_DIR/$f"; then
    cp "$TLS/$f" "$PGDATA_DIR/$f"
    changed=1
  fi
done
if [[ "$(cat "$PGDATA_DIR/tls.conf" 2>/dev/null)" != "$tls_conf" ]]; then
  printf '%s\n' "$tls_conf" > "$PGDATA_DIR/tls.conf"
  changed=1
fi
if [[ "$(cat "$PGDATA_DIR/pg_hba.conf")" != "$hba" ]]; then
  printf '%s\n' "$hba" > "$PGDATA_DIR/pg_hba.conf"
  changed=1
fi
if ! grep -q "^include_if_exists = 'tls.conf'" "$PGDATA_DIR/postgresql.conf"; then
  printf "include_if_exists = 'tls.conf'\n" >> "$PGDATA_DIR/postgresql.conf"
  changed=1
fi
chmod 600 "$PGDATA_DIR/server.key"
[[ $EUID -eq 0 ]] && chown postgres:postgres "$PGDATA_DIR"/{server.crt,server.key,ca.crt,tls.conf,pg_hba.conf,postgresql.conf}
if (( changed )); then
  version="$(cat "$PGDATA_DIR/PG_VERSION")"
  as_pg_owner "/usr/lib/postgresql/$version/bin/pg_ctl" reload -D "$PGDATA_DIR" >/dev/null
  log "PostgreSQL at localhost:$PG_PORT: ssl = on, pg_hba.conf hostssl only (reloaded)"
  sleep 1
fi
PGPASSWORD="$(cat "$SECRETS/pg-password")" PGSSLMODE=verify-full PGSSLROOTCERT="$TLS/ca.crt" \
  psql -X -q -h localhost -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
SELECT 'CREATE ROLE orders_cert LOGIN SUPERUSER'
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'orders_cert') \gexec
SQL

# ---- tansu brokers ---------------------------------------------------------------------
# start_tansu name listen_port advertised_port [--authentication]
start_tansu() {
  local name="$1" port="$2" advertised="$3" dir="$SEC/$1"
  shift 3
  local pid_file="$dir/tansu.pid" log_file="$dir/tansu.log"
  mkdir -p "$dir/data"
  printf '=== %s: starting tansu at 127.0.0.1:%s advertising localhost:%s %s\n' \
    "$(date -Is)" "$port" "$advertised" "$*" >> "$log_file"
  # Its settings are flags only: tansu also reads LISTENER_URL and friends from the environment.
  spawn_daemon "$dir" "$pid_file" "$log_file" env -u LISTENER_URL \
    -u ADVERTISED_LISTENER_URL -u STORAGE_ENGINE -u CLUSTER_ID NO_COLOR=1 "$TANSU" broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://localhost:$advertised" \
    --storage-engine "sqlite://data/tansu.db" "$@"
  await_listen "tansu $name" "$SPAWNED_PID" 127.0.0.1 "$port" "$log_file"
}

# ensure_tansu name listen_port advertised_port auth(0|1)
ensure_tansu() {
  local name="$1" port="$2" advertised="$3" auth="$4" dir="$SEC/$1"
  # users.done holds a checksum of the passwords the users were made with: new passwords (a
  # deleted secrets/) mean a new broker store.
  local stamp fresh=1
  stamp="$(cat "$SECRETS"/kafka-scram*-password | cksum)"
  (( auth )) && [[ "$(cat "$dir/users.done" 2>/dev/null)" != "$stamp" ]] && fresh=0
  if (( fresh )) && pid_alive "$dir/tansu.pid" tansu && port_open 127.0.0.1 "$port"; then
    log "tansu $name runs (127.0.0.1:$port, advertised localhost:$advertised)"
    return 0
  fi
  stop_pidfile "$dir/tansu.pid" tansu "tansu $name" 2>/dev/null
  port_open 127.0.0.1 "$port" && die "something else listens on 127.0.0.1:$port (set SECURE_PORT_BASE to another base)"
  if (( ! fresh )); then
    rm -rf "$dir/data"
    # tansu creates users only while it runs without --authentication, advertising the port
    # its CLI can reach.
    log "tansu $name: creating the SCRAM users (started without --authentication once)"
    start_tansu "$name" "$port" "$port"
    "$TANSU" user create orders256 "$(cat "$SECRETS/kafka-scram256-password")" \
      --mechanism scram256 --broker "tcp://127.0.0.1:$port" >> "$dir/tansu.log" 2>&1 ||
      die "tansu user create failed (log: $dir/tansu.log)"
    "$TANSU" user create orders512 "$(cat "$SECRETS/kafka-scram512-password")" \
      --mechanism scram512 --broker "tcp://127.0.0.1:$port" >> "$dir/tansu.log" 2>&1 ||
      die "tansu user create failed (log: $dir/tansu.log)"
    stop_pidfile "$dir/tansu.pid" tansu "tansu $name" 2>/dev/null
    printf '%s\n' "$stamp" > "$dir/users.done"
  fi
  if (( auth )); then
    start_tansu "$name" "$port" "$advertised" --authentication
  else
    start_tansu "$name" "$port" "$advertised"
  fi
  log "tansu $name started (127.0.0.1:$port, advertised localhost:$advertised$( ((auth)) && echo ', SASL/SCRAM required'))"
}

ensure_tansu kafka-tls "$TLS_BACKEND" "$TLS_PORT" 0
ensure_tansu kafka-sasl "$SASL_PORT" "$SASL_PORT" 1
ensure_tansu kafka-sasl-tls "$SASL_TLS_BACKEND" "$SASL_TLS_PORT" 1

# ---- stunnel: TLS in front of two brokers ------------------------------------------------
ST="$SEC/stunnel"
mkdir -p "$ST"
conf="; Written by scripts/secure-up.sh
foreground = no
pid = $ST/stunnel.pid
output = $ST/stunnel.log
debug = notice

[kafka-tls]
accept = 127.0.0.1:$TLS_PORT
connect = 127.0.0.1:$TLS_BACKEND
cert = $TLS/server.crt
key = $TLS/server.key

[kafka-sasl-tls]
accept = 127.0.0.1:$SASL_TLS_PORT
connect = 127.0.0.1:$SASL_TLS_BACKEND
cert = $TLS/server.crt
key = $TLS/server.key"
if pid_alive "$ST/stunnel.pid" stunnel && [[ "$(cat "$ST/stunnel.conf" 2>/dev/null)" == "$conf" ]] &&
  port_open 127.0.0.1 "$TLS_PORT" && port_open 127.0.0.1 "$SASL_TLS_PORT"; then
  log "stunnel runs (TLS on 127.0.0.1:$TLS_PORT and :$SASL_TLS_PORT)"
else
  stop_pidfile "$ST/stunnel.pid" stunnel stunnel 2>/dev/null
  printf '%s\n' "$conf" > "$ST/stunnel.conf"
  stunnel4 "$ST/stunnel.conf" || die "stunnel did not start (log: $ST/stunnel.log)"
  wait_port 127.0.0.1 "$TLS_PORT" 15 && wait_port 127.0.0.1 "$SASL_TLS_PORT" 15 ||
    die "stunnel does not listen on $TLS_PORT/$SASL_TLS_PORT (log: $ST/stunnel.log)"
  log "stunnel started (TLS on 127.0.0.1:$TLS_PORT -> $TLS_BACKEND, :$SASL_TLS_PORT -> $SASL_TLS_BACKEND)"
fi

# ---- what the tests read ----------------------------------------------------------------
cat > "$SEC/stack.env" <<EOF
# Written by scripts/secure-up.sh; read by the managed-services tests.
SECURE_PG_HOST=localhost
SECURE_PG_PORT=$PG_PORT
SECURE_PG_USER=postgres
SECURE_PG_PASSWORD_FILE=$SECRETS/pg-password
SECURE_PG_CERT_USER=orders_cert
SECURE_CA=$TLS/ca.crt
SECURE_OTHER_CA=$TLS/other-ca.crt
SECURE_CLIENT_CERT=$TLS/client.crt
SECURE_CLIENT_KEY=$TLS/client.key
SECURE_KAFKA_TLS=localhost:$TLS_PORT
SECURE_KAFKA_SASL=localhost:$SASL_PORT
SECURE_KAFKA_SASL_TLS=localhost:$SASL_TLS_PORT
SECURE_KAFKA_SCRAM256_USER=orders256
SECURE_KAFKA_SCRAM256_PASSWORD_FILE=$SECRETS/kafka-scram256-password
SECURE_KAFKA_SCRAM512_USER=orders512
SECURE_KAFKA_SCRAM512_PASSWORD_FILE=$SECRETS/kafka-scram512-password
EOF
log "ready: ports $PG_PORT..$SASL_TLS_PORT, settings in ${SEC#"$ROOT"/}/stack.env"
