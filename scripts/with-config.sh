#!/usr/bin/env bash
# Run a command with config.env (repository root) loaded by the project's rules
# (scripts/lib.sh, the same as the orders binary's) and the usual defaults:
#   scripts/with-config.sh cargo test --workspace
set -euo pipefail
LOG_TAG=config
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
exec "$@"
