"""The benchmark workloads still run, from an installed onduty (a smoke run at small sizes;
figures live in BENCHMARKS.md, never in assertions)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def install_wheel(tmp_path: Path) -> Path:
    """Build onduty's wheel and install it alone into a fresh virtual environment that finds
    the dependencies in this one's site-packages (but not the checkout); its python."""
    # Built from a copy, so the build leaves nothing (build/, *.egg-info) in the checkout.
    source = tmp_path / "source"
    shutil.copytree(
        ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "-w",
            str(wheels),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("onduty-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
         "--target", site, str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )  # fmt: skip
    # The dependencies, as a plain path: the .pth files there (this checkout's editable
    # install among them) are not processed, so onduty itself comes from the wheel.
    (Path(site) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def test_bench_quick_runs_every_workload_from_the_installed_package(tmp_path: Path) -> None:
    """Every workload runs (but the two that start fleets), and every row it prints sets its
    figure beside a peer measured in the same run (or a target, or what a check expects) with
    their ratio."""
    python = install_wheel(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"COLUMNS": "200"}
    where = subprocess.run(
        [python, "-c", "import onduty.bench; print(onduty.bench.__file__)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(tmp_path / "venv"), where
    figures = tmp_path / "bench.json"
    # fleet_ingest and failover start fleets of servers on PostgreSQL and NATS (~35 s together
    # with --quick): run them by hand, `onduty bench --quick --only fleet_ingest --only failover`
    workloads = ("act_overhead", "core_fold", "flat", "ingest", "log_append", "memory",
                 "observability", "pg_log", "restart", "soak", "verdict")  # fmt: skip
    only = [option for workload in workloads for option in ("--only", workload)]
    result = subprocess.run(
        [python, "-m", "onduty", "bench", "--quick", "--json", str(figures), *only],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for workload in workloads:
        assert f"{workload} …" in result.stdout
    assert "events/s" in result.stdout
    rows = json.loads(figures.read_text())["workloads"]
    assert sorted(rows) == list(workloads)
    for workload, measured in rows.items():
        assert measured, f"{workload} measured nothing"
        for row in measured:
            assert row["peer"] not in ("", "-"), f"{workload}: no peer for {row['name']}"
            assert row["ratio"] not in ("", "-"), f"{workload}: no ratio for {row['name']}"
            assert not str(row["name"]).startswith("FAILED"), row
            assert row["ratio"] != "FAILED", row


def test_an_unknown_workload_is_named_with_those_that_exist() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "onduty", "bench", "--only", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode != 0
    assert "no benchmark workload named 'nope'; the workloads are act_overhead, core_fold" in (
        result.stdout + result.stderr
    )
