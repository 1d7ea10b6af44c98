#!/usr/bin/env bash
# Install Debian's Prometheus server when /usr/bin/prometheus is missing.
#
# The tests start their own instance (own config, data dir and loopback port), so the package's
# systemd service is never needed: it is kept from starting during the install, and nothing
# here enables or starts it. Idempotent: an installed binary is left alone.
set -euo pipefail

PROMETHEUS=/usr/bin/prometheus

if [ -x "$PROMETHEUS" ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "ensure_prometheus: $PROMETHEUS is missing and installing it needs root" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# Refuse service starts while the package installs (invoke-rc.d honours policy-rc.d; exit
# code 101 means "action forbidden"). An existing policy file is left as it is.
POLICY=/usr/sbin/policy-rc.d
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$POLICY"
  chmod 755 "$POLICY"
  trap 'rm -f "$POLICY"' EXIT
fi

# The package lists are fetched once, when apt knows nothing about the package yet.
if ! apt-cache show prometheus >/dev/null 2>&1; then
  apt-get update
fi
# Wait for the dpkg lock rather than fail when another install is running.
APT_INSTALL=(apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends prometheus)
if ! "${APT_INSTALL[@]}"; then
  # A stale list names files the mirror no longer has: refresh once and try again.
  apt-get update
  "${APT_INSTALL[@]}"
fi

# Where systemd runs, the package enables its service (Prometheus on :9090 with the package's
# config); nothing here uses it, so it is stopped and disabled.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now prometheus.service >/dev/null 2>&1 || true
fi

if [ ! -x "$PROMETHEUS" ]; then
  echo "ensure_prometheus: installed the package but $PROMETHEUS is still missing" >&2
  exit 1
fi
"$PROMETHEUS" --version 2>&1 | head -n 1
