"""The benchmark workloads still run (a smoke run at small sizes; figures live in
BENCHMARKS.md, never in assertions)."""

from __future__ import annotations

import os
import subprocess
import sys


def test_bench_quick_runs_every_workload() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "onduty", "bench", "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for workload in ("core_fold", "log_append", "restart"):
        assert workload in result.stdout
    assert "events/s" in result.stdout
