#!/usr/bin/env bash
# Check that no crate declares a dependency it does not use (cargo-machete),
# installing cargo-machete into ORDERS_TOOLS_DIR (outside target/, so
# `cargo clean` keeps it) when missing.
set -euo pipefail
LOG_TAG=machete
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MACHETE_VERSION=0.9.2
TOOLS="${ORDERS_TOOLS_DIR:-$HOME/.cache/orders/tools}"
MACHETE="$TOOLS/bin/cargo-machete"

if [[ ! -x "$MACHETE" ]] || ! "$MACHETE" --version 2>/dev/null | grep -q "$MACHETE_VERSION"; then
  mkdir -p "$TOOLS"
  log "installing cargo-machete $MACHETE_VERSION into $TOOLS (cargo install, once)"
  (cd "$ROOT" && cargo install "cargo-machete@$MACHETE_VERSION" --locked --root "$TOOLS")
fi
cd "$ROOT"
# vendor/ holds patched third-party crates: not ours to trim.
exec "$MACHETE" --skip-target-dir crates
