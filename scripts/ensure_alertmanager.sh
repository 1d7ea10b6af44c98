#!/usr/bin/env bash
# Install Prometheus Alertmanager from Debian's packages when it is missing (integration tests
# and benchmarks run a real one on loopback). The package's own service is kept from starting
# while it installs, so there is nothing of it to stop afterwards.
set -euo pipefail
if [ -x /usr/bin/prometheus-alertmanager ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "ensure_alertmanager: /usr/bin/prometheus-alertmanager is missing and installing it needs root" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# invoke-rc.d honours policy-rc.d: exit 101 means "action forbidden". An existing one is kept.
POLICY=/usr/sbin/policy-rc.d
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$POLICY"
  chmod 755 "$POLICY"
  trap 'rm -f "$POLICY"' EXIT
fi
if ! apt-get install -y --no-install-recommends prometheus-alertmanager >/dev/null 2>&1; then
  apt-get update >/dev/null
  apt-get install -y --no-install-recommends prometheus-alertmanager >/dev/null
fi
# Where systemd runs, it may start the unit regardless of policy-rc.d: stop it through systemd,
# which knows its own process, rather than by matching process names.
if command -v systemctl >/dev/null 2>&1 && systemctl is-system-running >/dev/null 2>&1; then
  systemctl stop prometheus-alertmanager 2>/dev/null || true
fi
test -x /usr/bin/prometheus-alertmanager
