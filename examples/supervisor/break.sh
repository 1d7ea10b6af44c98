#!/usr/bin/env bash
# The fault: wedge the example service so its /health answers 500 until it is restarted.
# onduty's HTTP probe notices, the runbook restarts it through supervisord, and the incident's
# timeline shows detect -> act -> verify -> resolve.
set -euo pipefail
curl -fsS -X POST "${APP_URL:-http://127.0.0.1:8080}/break"
echo "broken: watch http://127.0.0.1:8765/ (or: onduty incidents --store onduty.db)"
