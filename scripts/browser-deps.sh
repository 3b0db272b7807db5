#!/usr/bin/env bash
# Make sure Chromium and a matching ChromeDriver are installed (Debian
# packages chromium and chromium-driver) for the real-browser tests.
set -euo pipefail
LOG_TAG=browser-deps
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  log "chromium and chromedriver present ($(chromium --version 2>/dev/null | head -n1 || echo '?'))"
  exit 0
fi
log "chromium or chromedriver missing; installing them (about a minute)"
apt_install chromium chromium-driver
command -v chromium >/dev/null 2>&1 || die "chromium still missing after install"
command -v chromedriver >/dev/null 2>&1 || die "chromedriver still missing after install"
log "installed $(chromium --version 2>/dev/null | head -n1 || echo chromium)"
