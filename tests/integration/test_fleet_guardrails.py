"""A fleet-wide rate limit holds across racing managers: three `onduty serve` processes, one
limit of N restarts per window counted across the fleet (`across: fleet`), a burst of incidents
spread over every partition — never more than N actions run, and each refusal is recorded with
the fleet's count as its reason."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.integration.fleet import fleet, held, signal_body, wait_for

pytestmark = pytest.mark.slow

LIMIT = 5
BURST = 40
FLEET_LIMIT = {
    "name": "fleet-restarts",
    "rate": {"action": "process.restart", "max": LIMIT, "per": "1h", "key": "service",
             "across": "fleet"},
}  # fmt: skip


def test_racing_managers_never_exceed_a_fleet_wide_limit(tmp_path: Path) -> None:
    with fleet(tmp_path, partitions=6, instances=BURST, guardrails=[FLEET_LIMIT]) as f:
        managers = [f.server(name).start() for name in ("one", "two", "three")]
        wait_for(lambda: all(held(m) == 2 for m in managers), 30, "partitions shared by three")

        def send(i: int) -> int:
            url = managers[i % 3].url
            body = signal_body(f"web-{i}")
            return httpx.post(f"{url}/api/v1/signals", json=body, timeout=10).status_code

        with ThreadPoolExecutor(12) as pool:
            assert set(pool.map(send, range(BURST))) == {202}

        def decided() -> list[dict[str, object]]:
            answer = httpx.get(
                f"{managers[0].url}/api/v1/events", params={"type": "PolicyEvaluated"}, timeout=10
            )
            answer.raise_for_status()
            return [event for event in answer.json() if event["type"] == "PolicyEvaluated"]

        wait_for(lambda: len(decided()) == BURST, 60, "every proposal decided")
        verdicts = decided()
        allowed = [v for v in verdicts if v["data"]["verdict"] == "allow"]
        denied = [v for v in verdicts if v["data"]["verdict"] == "deny"]
        assert len(allowed) == LIMIT and len(denied) == BURST - LIMIT
        assert all("limit 5" in v["data"]["reason"] for v in denied), denied[0]["data"]
        wait_for(lambda: sum(f.runs().values()) == LIMIT, 30, "the allowed actions ran")
        assert len(f.runs()) == LIMIT and max(f.runs().values()) == 1


ONE_REGION_PER_TARGET = {
    "name": "one-region-per-target",
    "rate": {"max": 1, "per": "10m", "key": "target", "across": "fleet"},
    "when": 'service.tier == "critical"',
}


def test_two_regions_never_act_on_one_critical_target_at_once(tmp_path: Path) -> None:
    """Two regions, each on its own store, count a critical service's targets in the central
    schema they share: the same alert reaching both regions is acted on by one of them."""
    with fleet(
        tmp_path, partitions=2, instances=4, guardrails=[ONE_REGION_PER_TARGET], central=True,
        tier="critical",
    ) as f:  # fmt: skip
        eu = f.server("eu-1", "--region", "eu", store=f.region_store("eu")).start()
        us = f.server("us-1", "--region", "us", store=f.region_store("us")).start()
        wait_for(lambda: held(eu) == 2 and held(us) == 2, 30, "each region runs its partitions")
        with ThreadPoolExecutor(2) as pool:
            answers = list(
                pool.map(
                    lambda url: (
                        httpx.post(
                            f"{url}/api/v1/signals", json=signal_body("web-1"), timeout=10
                        ).status_code
                    ),
                    [eu.url, us.url],
                )
            )
        assert answers == [202, 202]

        def verdicts(url: str) -> list[str]:
            found = httpx.get(
                f"{url}/api/v1/events", params={"type": "PolicyEvaluated"}, timeout=10
            )
            return [event["data"]["verdict"] for event in found.json()]

        wait_for(lambda: len(verdicts(eu.url)) + len(verdicts(us.url)) == 2, 30, "both decided")
        assert sorted(verdicts(eu.url) + verdicts(us.url)) == ["allow", "deny"]
        wait_for(lambda: sum(f.runs().values()) == 1, 20, "one region acted")
        assert f.runs() == {"web-1": 1}
