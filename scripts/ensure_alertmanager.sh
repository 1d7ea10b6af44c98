#!/usr/bin/env bash
# Install Prometheus Alertmanager from Debian's packages when it is missing (integration tests
# and benchmarks run a real one on loopback). The package's own service is not used.
set -euo pipefail
if [ -x /usr/bin/prometheus-alertmanager ]; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y --no-install-recommends prometheus-alertmanager >/dev/null 2>&1; then
  apt-get update >/dev/null
  apt-get install -y --no-install-recommends prometheus-alertmanager >/dev/null
fi
# Debian starts the packaged service; our tests run their own instances.
if command -v systemctl >/dev/null 2>&1; then systemctl stop prometheus-alertmanager 2>/dev/null || true; fi
pkill -f '^/usr/bin/prometheus-alertmanager' 2>/dev/null || true
test -x /usr/bin/prometheus-alertmanager
