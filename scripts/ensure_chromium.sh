#!/usr/bin/env bash
# Install Debian's chromium when it is missing: the web console's browser tests drive it
# headless through Playwright (which is told to use this binary; it never downloads a browser).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y --no-install-recommends chromium >/dev/null 2>&1; then
  apt-get update >/dev/null
  apt-get install -y --no-install-recommends chromium >/dev/null
fi
test -x /usr/bin/chromium
