#!/usr/bin/env bash
# Install supervisord from Debian's packages when it is missing: the supervisor actuator's tests
# run their own supervisord on loopback. The package's own service is stopped and disabled.
set -euo pipefail
if [ -x /usr/bin/supervisord ]; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y --no-install-recommends supervisor >/dev/null 2>&1; then
  apt-get update >/dev/null
  apt-get install -y --no-install-recommends supervisor >/dev/null
fi
# Debian starts the packaged service (where there is an init system); our tests run their own.
if command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now supervisor >/dev/null 2>&1 || true
fi
if [ -x /etc/init.d/supervisor ]; then
  /etc/init.d/supervisor stop >/dev/null 2>&1 || true
fi
if [ -f /var/run/supervisord.pid ]; then
  kill "$(cat /var/run/supervisord.pid)" 2>/dev/null || true
fi
test -x /usr/bin/supervisord
