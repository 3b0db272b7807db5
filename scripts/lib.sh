# shellcheck shell=bash
# Shared helpers for the local-stack scripts. Sourced, never executed:
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# The sourcing script sets LOG_TAG (e.g. "db-up") before sourcing.

# Repository root, resolved from this file's location (works from any cwd).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROOT
LOCAL_DIR="$ROOT/.local"

log() { printf '[%s] %s\n' "${LOG_TAG:-orders}" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "${LOG_TAG:-orders}" "$*" >&2; exit 1; }

# Load config.env from the repo root without overriding variables that are
# already set in the environment, with the rules of the orders binary
# (crates/orders-env; keep the two alike): blank and # lines skipped, optional
# `export `, KEY=value with blanks trimmed, a value in "..." or '...' taken
# literally, an unquoted value may not contain ' #', a key set once. Any other
# line stops the script with its line number.
load_config() {
  local file="$ROOT/config.env" line raw key value n=0 q seen=" "
  [[ -f "$file" ]] || return 0
  while IFS= read -r raw || [[ -n "$raw" ]]; do
    n=$((n + 1))
    line="${raw%$'\r'}"
    line="${line#"${line%%[![:space:]]*}"}"             # trim leading blanks
    line="${line%"${line##*[![:space:]]}"}"             # trim trailing blanks
    [[ -z "$line" || "$line" == \#* ]] && continue
    line="${line#export }"
    [[ "$line" == *=* ]] || die "config.env:$n: expected KEY=value, found \"$line\""
    key="${line%%=*}"; key="${key#"${key%%[![:space:]]*}"}"; key="${key%"${key##*[![:space:]]}"}"
    [[ "$key" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "config.env:$n: \"$key\" is not a variable name (letters, digits, _)"
    value="${line#*=}"; value="${value#"${value%%[![:space:]]*}"}"
    q="${value:0:1}"
    if [[ "$q" == '"' || "$q" == "'" ]]; then
      if (( ${#value} < 2 )) || [[ "${value: -1}" != "$q" ]]; then
        die "config.env:$n: $key: the value's $q quote is not closed at the end of the line"
      fi
      value="${value:1:${#value}-2}"
    elif [[ "$value" == *" #"* || "$value" == *$'\t#'* ]]; then
      die "config.env:$n: $key: an unquoted value may not contain ' #' (quote the value, or put the comment on a line of its own)"
    fi
    [[ "$seen" == *" $key "* ]] && die "config.env:$n: $key is set again"
    seen+="$key "
    if [[ -z "${!key+set}" ]]; then
      export "$key=$value"
    fi
  done < "$file"
}

load_config
: "${DB_HOST:=localhost}" "${DB_PORT:=5432}" "${DB_USER:=postgres}" "${DB_NAME:=orders_db}"
: "${KAFKA_BROKER:=localhost:9092}" "${KAFKA_TOPIC:=orders}" "${HTTP_PORT:=8081}"
export DB_HOST DB_PORT DB_USER DB_NAME KAFKA_BROKER KAFKA_TOPIC HTTP_PORT
# With DB_PASSWORD_FILE (and no DB_PASSWORD) the scripts read the password for their own psql
# calls but do not export it: the service reads the file itself and refuses both at once.
if [[ -z "${DB_PASSWORD+set}" && -n "${DB_PASSWORD_FILE:-}" ]]; then
  DB_PASSWORD="$(cat "$DB_PASSWORD_FILE")" || die "cannot read DB_PASSWORD_FILE ($DB_PASSWORD_FILE)"
  DB_PASSWORD="${DB_PASSWORD%$'\n'}"
else
  : "${DB_PASSWORD:=postgres}"
  export DB_PASSWORD
fi

# True when something accepts TCP connections at host:port.
port_open() {
  local host="$1" port="$2"
  [[ "$host" == \[*\] ]] && host="${host:1:${#host}-2}"
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$host" "$port" 2>/dev/null
}

# wait_port host port timeout_seconds
wait_port() {
  local host="$1" port="$2" limit="${3:-30}" start=$SECONDS
  until port_open "$host" "$port"; do
    (( SECONDS - start >= limit )) && return 1
    sleep 0.2
  done
}

# release_bins: sets BIN to the directory of the release binaries `orders` and
# `orders-producer`, building them first unless ORDERS_SKIP_BUILD=1.
# ORDERS_BIN_DIR overrides the directory (the test of run.sh uses the test build's).
release_bins() {
  local target="${CARGO_TARGET_DIR:-target}" b
  [[ "$target" == /* ]] || target="$ROOT/$target"
  BIN="${ORDERS_BIN_DIR:-$target/release}"
  if [[ "${ORDERS_SKIP_BUILD:-0}" != 1 ]]; then
    log "building release binaries (cargo build --release --bin orders --bin orders-producer)"
    (cd "$ROOT" && cargo build --release --bin orders --bin orders-producer)
  fi
  for b in orders orders-producer; do
    [[ -x "$BIN/$b" ]] || die "$BIN/$b not found (build it with: cargo build --release --bin $b)"
  done
}

# Run a command as root: directly when root, else via sudo.
as_root() {
  if [[ $EUID -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root to run: $* (not root and sudo is not available)"
  fi
}

# apt_install pkg... : install Debian packages non-interactively.
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install $* yourself"
  log "installing with apt-get: $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# Split KAFKA_BROKER (first entry of a comma-separated list, optional
# scheme) into BROKER_HOST and BROKER_PORT.
parse_broker() {
  local b="${KAFKA_BROKER%%,*}"
  b="${b#*://}"
  BROKER_HOST="${b%:*}"
  BROKER_PORT="${b##*:}"
  [[ "$BROKER_PORT" =~ ^[0-9]+$ ]] || die "KAFKA_BROKER=$KAFKA_BROKER: expected host:port"
  [[ -n "$BROKER_HOST" ]] || BROKER_HOST=localhost
}

# True when the pid in file $1 is alive and its command line contains $2.
pid_alive() {
  local pidfile="$1" pattern="$2" pid
  [[ -s "$pidfile" ]] || return 1
  pid="$(cat "$pidfile")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$pattern"
}

# spawn_daemon dir pidfile logfile command...: starts command in dir as a daemon (its own session,
# so a Ctrl-C meant for a foreground command spares it; stdin /dev/null; output appended to
# logfile) and writes its pid to pidfile and SPAWNED_PID. The pid is the command's own: the
# background subshell execs into setsid, setsid into nohup, nohup into the command (setsid forks
# only in a process-group leader, which a background job of a script is not). It stays a child of
# this shell, so await_listen can tell how it exited.
spawn_daemon() {
  local dir="$1" pidfile="$2" logfile="$3"
  shift 3
  (cd "$dir" && exec setsid nohup "$@" >> "$logfile" 2>&1 < /dev/null) &
  SPAWNED_PID=$!
  printf '%s\n' "$SPAWNED_PID" > "$pidfile"
}

# exit_status_text rc: "exit code N", or "signal NAME" for a death by signal (rc > 128).
exit_status_text() {
  local rc="$1" sig
  if (( rc > 128 )) && sig="$(kill -l "$((rc - 128))" 2>/dev/null)"; then
    printf 'signal %s (%s)' "$((rc - 128))" "SIG$sig"
  else
    printf 'exit code %s' "$rc"
  fi
}

# await_listen what pid host port logfile [limit_seconds]: waits until host:port accepts
# connections. If the process (a child of this shell, from spawn_daemon) exits first, or the limit
# (30 s) passes, prints the log's tail and dies, saying how the process ended.
# Liveness is kill -0, never pid_alive: until the background child has exec'd, its
# /proc/PID/cmdline is still this script's, so a pattern match can fail on a healthy start.
await_listen() {
  local what="$1" pid="$2" host="$3" port="$4" logfile="$5" limit="${6:-30}" start=$SECONDS rc=0
  until port_open "$host" "$port"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null || rc=$?
      tail -n 30 "$logfile" >&2
      die "$what exited during start-up with $(exit_status_text "$rc") (log: $logfile)"
    fi
    if (( SECONDS - start >= limit )); then
      tail -n 30 "$logfile" >&2
      die "$what (pid $pid) did not accept connections at $host:$port within $limit s (log: $logfile)"
    fi
    sleep 0.2
  done
}

# stop_pidfile file pattern what: TERM the process, wait up to 15 s, then KILL.
stop_pidfile() {
  local pidfile="$1" pattern="$2" what="$3" pid i
  if ! pid_alive "$pidfile" "$pattern"; then
    log "$what is not running (no live process in ${pidfile#"$ROOT"/}), nothing to do"
    rm -f "$pidfile"
    return 0
  fi
  pid="$(cat "$pidfile")"
  log "stopping $what (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$what did not stop within 15 s, sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  log "$what stopped"
}

# The tansu broker binary, installed once with cargo into ORDERS_TOOLS_DIR (used by
# broker-up.sh and secure-up.sh).
TANSU_VERSION=0.6.0
TOOLS="${ORDERS_TOOLS_DIR:-$HOME/.cache/orders/tools}"
TANSU="$TOOLS/bin/tansu"

install_tansu() {
  [[ -x "$TANSU" ]] && return 0
  mkdir -p "$TOOLS"
  exec 9> "$TOOLS/.tansu-install.lock"
  if ! flock -n 9; then
    log "another tansu install into $TOOLS is running; waiting for it"
    flock 9
  fi
  if [[ ! -x "$TANSU" ]]; then
    command -v cargo >/dev/null 2>&1 || die "cargo not found (install Rust with rustup first); needed to install tansu"
    command -v cc >/dev/null 2>&1 || apt_install build-essential pkg-config
    log "installing the tansu $TANSU_VERSION broker into $TOOLS (cargo install, once; takes about 10 minutes on 2 cores)"
    # From the repo root, so rust-toolchain.toml picks the toolchain.
    (cd "$ROOT" && cargo install "tansu@$TANSU_VERSION" --locked --features dynostore,libsql --root "$TOOLS")
    [[ -x "$TANSU" ]] || die "cargo install finished but $TANSU is missing"
    log "tansu installed: $TANSU"
  fi
  exec 9>&-
}
