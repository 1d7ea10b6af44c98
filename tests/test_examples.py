"""The examples run as they say: the demo's copies match the built-in demo, every example
configuration is valid, and the multi-region script serves both regions against the real
PostgreSQL and NATS servers (a server that cannot be reached fails) and stops all it started."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO

import httpx
import nats
import psycopg
import pytest
from psycopg import sql

from onduty.configfile import load_config
from onduty.sim.scenario import load_scenario, read_builtin

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_demo_example_matches_the_built_in_demo() -> None:
    assert (EXAMPLES / "demo" / "onduty.yaml").read_text() == read_builtin("demo-config.yaml")
    assert (EXAMPLES / "demo" / "scenario.yaml").read_text() == read_builtin("demo.yaml")


def test_every_example_config_is_valid() -> None:
    configs = sorted(EXAMPLES.rglob("onduty*.yaml"))
    assert configs
    for path in configs:
        load_config(path)
    for path in sorted(EXAMPLES.rglob("scenario*.yaml")):
        load_scenario(path)


# ---------------------------------------------------------------------------- multi-region

MULTI_REGION = EXAMPLES / "multi-region" / "run.py"
DATABASE = "postgresql://postgres@127.0.0.1:5432/test"
NODE = re.compile(r"^(eu|us)\s+(\S+)\s+(ingest|manager)\s+(\d+)\s+(http://\S+)/$")


def _read_lines(stream: IO[str], into: list[str]) -> None:
    for line in stream:
        into.append(line.rstrip("\n"))


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str, output: list[str]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s\n" + "\n".join(output)
        time.sleep(0.2)


def _incident_titles(url: str) -> set[str]:
    found = httpx.get(f"{url}/api/v1/incidents", timeout=5)
    found.raise_for_status()
    return {item["title"] for item in found.json()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _drop(namespace: str) -> None:
    with psycopg.connect(DATABASE, autocommit=True) as conn:
        for schema in ("central", "eu", "us"):
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    sql.Identifier(f"{namespace}_{schema}")
                )
            )

    async def delete_stream() -> None:
        client = await nats.connect("nats://127.0.0.1:4222", connect_timeout=2)
        try:
            await client.jetstream().delete_stream(f"{namespace.upper()}_SIGNALS")
        except nats.js.errors.NotFoundError:
            pass
        finally:
            await client.close()

    asyncio.run(delete_stream())


@pytest.mark.slow
def test_the_multi_region_example_serves_each_region_and_stops_all_it_started(
    tmp_path: Path,
) -> None:
    """run.py starts both regions on a namespace of its own, each region's alert becomes an
    incident in that region only, and at the end of --for every process it started is gone."""
    namespace = f"mr_{uuid.uuid4().hex[:10]}"
    output: list[str] = []
    script = subprocess.Popen(
        [
            sys.executable, str(MULTI_REGION), "--for", "20", "--database", DATABASE,
            "--namespace", namespace, "--port", "0", "--logs", str(tmp_path),
        ],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert script.stdout is not None
    reader = threading.Thread(target=_read_lines, args=(script.stdout, output), daemon=True)
    reader.start()
    pids: list[int] = []
    try:
        _wait_for(lambda: any(line.startswith("ready:") for line in output), 60, "ready", output)
        nodes = [match.groups() for line in output if (match := NODE.match(line))]
        pids = [int(pid) for _, _, _, pid, _ in nodes]
        assert [(region, role) for region, _, role, _, _ in nodes] == [
            (region, role) for region in ("eu", "us") for role in ("ingest", "manager", "manager")
        ]
        ingest = {region: url for region, _, role, _, url in nodes if role == "ingest"}
        for region, url in ingest.items():
            alert = {
                "source": "test",
                "fingerprint": f"down-checkout-{region}-1",
                "status": "firing",
                "labels": {
                    "alertname": "InstanceDown",
                    "service": "checkout",
                    "instance": f"checkout-{region}-1",
                },
            }
            sent = httpx.post(f"{url}/api/v1/signals", json=alert, timeout=10)
            assert sent.status_code == 202, sent.text

        def each_region_has_its_incident() -> bool:
            return all(
                f"InstanceDown on checkout-{region}-1" in _incident_titles(url)
                for region, url in ingest.items()
            )

        _wait_for(each_region_has_its_incident, 15, "an incident in each region", output)
        assert _incident_titles(ingest["eu"]) == {"InstanceDown on checkout-eu-1"}
        assert _incident_titles(ingest["us"]) == {"InstanceDown on checkout-us-1"}
        assert script.wait(40) == 0, "\n".join(output)
        _wait_for(lambda: any(line.startswith("stopped: 6") for line in output), 5, "", output)
        assert [pid for pid in pids if _alive(pid)] == []
    finally:
        if script.poll() is None:
            script.send_signal(signal.SIGTERM)  # it stops what it started
            script.wait(30)
        for pid in pids:  # only what the script said it started, should it have failed to
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        reader.join(5)
        script.stdout.close()
        _drop(namespace)
