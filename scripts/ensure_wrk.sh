#!/usr/bin/env bash
# Install wrk (an HTTP load generator) from Debian's packages when it is missing: the ingest
# benchmark drives onduty and Alertmanager with it on loopback.
set -euo pipefail
if command -v wrk >/dev/null 2>&1; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y --no-install-recommends wrk >/dev/null 2>&1; then
  apt-get update >/dev/null
  apt-get install -y --no-install-recommends wrk >/dev/null
fi
command -v wrk >/dev/null
