#!/usr/bin/env bash
# Wait until something accepts TCP connections at HOST:PORT.
# Usage: scripts/wait-port.sh HOST PORT [TIMEOUT_SECONDS=30]
set -euo pipefail
LOG_TAG=wait-port
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# -ge 2 ]] || die "usage: $0 HOST PORT [TIMEOUT_SECONDS]"
host="$1" port="$2" limit="${3:-30}"
if wait_port "$host" "$port" "$limit"; then
  log "$host:$port accepts connections"
else
  die "$host:$port did not accept connections within ${limit} s"
fi
