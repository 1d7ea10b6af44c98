"""A learning model in a fleet, as a policy sent to one node: each partition of the region records
its own `ModelActivated`, and every node's `GET /api/v1/learn` shows it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from onduty.learn import save_model, train
from onduty.log.fleet_view import place_of
from tests import run_cli
from tests.integration.fleet import fleet, held, wait_for
from tests.integration.server import Server

pytestmark = pytest.mark.slow


def test_a_model_sent_to_one_node_reaches_every_partition(tmp_path: Path) -> None:
    artifact = save_model(train([]), tmp_path / "models")
    with fleet(tmp_path, partitions=2, instances=2) as f:
        first, second = f.server("first").start(), f.server("second").start()
        wait_for(lambda: held(first) == 1 and held(second) == 1, 20, "partitions shared")
        shadow = run_cli.onduty("learn", "shadow", str(artifact), "--url", first.url, timeout=60)
        assert shadow.returncode == 0, shadow.stderr

        def recorded(role: str) -> Counter[int]:
            found = httpx.get(
                f"{second.url}/api/v1/events", params={"type": "ModelActivated"}, timeout=10
            ).json()
            return Counter(place_of(e["seq"])[0] for e in found if e["data"]["role"] == role)

        def learn(server: Server) -> dict[str, Any]:
            return dict(httpx.get(f"{server.url}/api/v1/learn", timeout=10).json())

        wait_for(lambda: recorded("shadow") == Counter({0: 1, 1: 1}), 20, "every partition")
        wait_for(lambda: learn(second)["candidate"] is not None, 10, "the other node's view")
        promoted = run_cli.onduty("learn", "promote", "--url", second.url, timeout=60)
        assert promoted.returncode == 0, promoted.stderr
        wait_for(lambda: recorded("active") == Counter({0: 1, 1: 1}), 20, "promoted everywhere")
        for server in (first, second):

            def active(server: Server = server) -> bool:
                return bool(learn(server)["active"]["model_id"] == artifact.stem)

            wait_for(active, 10, "active on every node")
            now = learn(server)
            assert now["candidate"] is None and now["previous"]["model_id"] == "untrained"
