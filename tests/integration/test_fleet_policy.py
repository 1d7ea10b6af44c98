"""A central policy bundle is published once and adopted by every manager of the fleet: each
partition records its `PolicyActivated` for the bundle's version, and decisions follow it."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest
import yaml

from onduty.log.fleet_view import place_of
from tests.integration.fleet import fleet, held, signal_body, wait_for

pytestmark = pytest.mark.slow


def test_every_partition_adopts_the_central_policy(tmp_path: Path) -> None:
    with fleet(tmp_path, partitions=4, instances=4, central=True) as f:
        first, second = f.server("first").start(), f.server("second").start()
        wait_for(lambda: held(first) == 2 and held(second) == 2, 20, "partitions shared")
        document = yaml.safe_load(f.config.read_text())
        document["services"][0]["autonomy"] = "suggest"  # no more acting without a person
        central = document["fleet"]["central"]
        published = tmp_path / "central.yaml"
        published.write_text(yaml.safe_dump(document))
        done = subprocess.run(
            [sys.executable, "-m", "onduty", "policy", "publish", str(published),
             "--central", central, "--by", "platform-team"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr

        def activations() -> Counter[str]:
            found = httpx.get(
                f"{first.url}/api/v1/events", params={"type": "PolicyActivated"}, timeout=10
            ).json()
            central_ones = [e for e in found if e["data"]["source"].startswith("central bundle")]
            return Counter(str(place_of(e["seq"])[0]) for e in central_ones)

        wait_for(lambda: sorted(activations()) == ["0", "1", "2", "3"], 30, "every partition")
        assert set(activations().values()) == {1}  # once each, by its own manager
        assert (
            httpx.post(
                f"{second.url}/api/v1/signals", json=signal_body("web-1"), timeout=10
            ).status_code
            == 202
        )

        def incident() -> list[dict[str, object]]:
            return list(httpx.get(f"{first.url}/api/v1/incidents", timeout=10).json())

        wait_for(lambda: len(incident()) == 1, 20, "the incident")
        wait_for(lambda: bool(incident()[0]["escalations"]), 20, "suggested to a person")
        assert f.runs() == {}  # suggested, not acted on
