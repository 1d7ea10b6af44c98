"""Several `onduty serve` processes on one PostgreSQL store and one NATS JetStream bus: a
manager SIGKILLed mid-stream loses nothing acknowledged, its partitions move to the others
within 10 s, no action starts twice, the survivors keep serving the console, and the store
passes `audit verify`. Against the real servers; a server that cannot be reached fails."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.fleet import fleet, held, signal_body, wait_for
from tests.integration.server import Server

pytestmark = pytest.mark.slow

PARTITIONS = 6
SIGNALS = 120


def incidents(server_url: str) -> dict[str, dict[str, object]]:
    found = httpx.get(f"{server_url}/api/v1/incidents", params={"limit": 1000}, timeout=10)
    found.raise_for_status()
    return {item["title"]: item for item in found.json()}


def send(url: str, instance: str) -> int:
    return httpx.post(f"{url}/api/v1/signals", json=signal_body(instance), timeout=10).status_code


def balanced(managers: list[Server], each: int) -> bool:
    return all(held(m) == each for m in managers)


@pytest.mark.parametrize("count", [2, 3])
def test_a_killed_manager_loses_nothing_and_its_partitions_move(tmp_path: Path, count: int) -> None:
    """Two or three managers share the partitions; one is SIGKILLed halfway through a stream
    of signals sent to all of them (then to those left)."""
    with fleet(tmp_path, partitions=PARTITIONS, instances=SIGNALS) as f:
        names = ("first", "second", "third")[:count]
        managers = [f.server(name).start() for name in names]
        wait_for(lambda: balanced(managers, PARTITIONS // count), 20, "partitions shared")
        victim, survivors = managers[0], managers[1:]
        accepted: list[str] = []
        for i in range(SIGNALS):
            if i == SIGNALS // 2:
                victim.kill()
                killed_at = time.monotonic()
            living = managers if i < SIGNALS // 2 else survivors
            instance = f"web-{i}"
            if send(living[i % len(living)].url, instance) == 202:
                accepted.append(instance)
        share = PARTITIONS // (count - 1)
        wait_for(lambda: balanced(survivors, share), 15, "the partitions moved")
        moved = time.monotonic() - killed_at
        assert moved < 10, f"took {moved:.1f} s after the kill"
        assert len(accepted) == SIGNALS  # the survivors took every signal sent to them
        watcher = survivors[0]

        def every_incident_acted_on() -> bool:
            seen = incidents(watcher.url)
            return all(
                f"InstanceDown on {name}" in seen and seen[f"InstanceDown on {name}"]["actions"]
                for name in accepted
            )

        wait_for(every_incident_acted_on, 30, "every acknowledged signal acted on")
        # an action the dead manager decided and never ran is run by the new owner
        wait_for(lambda: sorted(f.runs()) == sorted(accepted), 30, "every action run")
        runs = f.runs()
        assert [target for target, count in runs.items() if count > 1] == []
        witness = f.folder / f"witness-{names[1]}.jsonl"  # a survivor's, outside the store
        audited = f.command(
            "audit", "verify", "--public-key", f"{f.key}.pub", "--checkpoints", str(witness)
        )
        assert audited.returncode == 0, audited.stderr
        assert f"in {PARTITIONS} partitions verified" in audited.stdout
        assert "checkpoints hold" in audited.stdout, audited.stdout
        verified = httpx.get(f"{survivors[0].url}/api/v1/audit/verify", timeout=60).json()
        assert verified["intact"] is True and verified["events"] > SIGNALS, verified
        assert verified["checkpoints"]["checked"] > 0 and verified["findings"] == []
        audit_page = httpx.get(f"{survivors[0].url}/audit", timeout=60).text
        assert "signed checkpoints hold" in audit_page
        replayed = f.command("replay")  # each partition folded on its own reproduces its log
        assert replayed.returncode == 0 and "reproduced exactly" in replayed.stdout, replayed
        console = httpx.get(f"{watcher.url}/", timeout=10)
        assert console.status_code == 200 and "web-0" in console.text
        status = httpx.get(f"{watcher.url}/api/v1/fleet", timeout=10).json()
        holders = {m["owner"]: m["holds"] for m in status["members"] if m["alive"]}
        assert sorted(holders) == sorted(names[1:]) and status["unowned"] == []
        assert sorted(p for held in holders.values() for p in held) == list(range(PARTITIONS))
        page = httpx.get(f"{watcher.url}/fleet", timeout=10)
        assert page.status_code == 200 and "silent" in page.text  # the victim's heartbeat
        assert all(survivor.terminate() == 0 for survivor in survivors)


def test_one_process_has_no_fleet_to_show(tmp_path: Path) -> None:
    with Server(tmp_path / "one.db") as single:
        assert httpx.get(f"{single.url}/api/v1/fleet", timeout=10).status_code == 404
        page = httpx.get(f"{single.url}/fleet", timeout=10)
        assert page.status_code == 200 and "runs as one process" in page.text
        assert 'href="/fleet"' not in page.text  # no link to it in the header


def test_a_new_manager_takes_its_share_and_a_stopped_one_hands_over(tmp_path: Path) -> None:
    with fleet(tmp_path, partitions=PARTITIONS, instances=10) as f:
        first = f.server("first").start()
        wait_for(lambda: held(first) == PARTITIONS, 20, "one manager holds every partition")
        second = f.server("second").start()
        wait_for(lambda: balanced([first, second], PARTITIONS // 2), 20, "shared with a newcomer")
        for i in range(10):
            assert send(first.url, f"web-{i}") == 202
        assert first.terminate() == 0  # a clean stop releases its leases at once
        took = wait_for(lambda: held(second) == PARTITIONS, 10, "handed over")
        assert took < 3  # sooner than a lease's expiry
        wait_for(lambda: len(incidents(second.url)) == 10, 20, "every incident seen")
        assert sorted(f.runs()) == sorted(f"web-{i}" for i in range(10))
        assert all(count == 1 for count in f.runs().values())


def test_a_restarted_node_reads_only_the_tails_its_snapshot_lacks(tmp_path: Path) -> None:
    """A node stopped cleanly saves its read models as of a cursor per partition; started
    again, it reads only the events after them, and shows what it showed before."""
    with fleet(tmp_path, partitions=PARTITIONS, instances=40) as f:
        node = f.server("node").start()
        wait_for(lambda: held(node) == PARTITIONS, 20, "every partition held")
        for i in range(30):
            assert send(node.url, f"web-{i}") == 202
        wait_for(lambda: len(incidents(node.url)) == 30, 30, "every incident seen")
        # and settled: the partitions are still deciding (planning, paging) after they open
        seen: list[Any] = [None]

        def settled() -> bool:
            now = incidents(node.url)
            same, seen[0] = now == seen[0], now
            time.sleep(0.5)
            return same

        wait_for(settled, 30, "the incidents settled")
        before = incidents(node.url)
        assert node.terminate() == 0
        again = f.server("node-again").start()
        assert incidents(again.url) == before  # ready means caught up: nothing missing
        for i in range(30, 33):
            assert send(again.url, f"web-{i}") == 202
        wait_for(lambda: len(incidents(again.url)) == 33, 30, "new incidents seen")
        started = [line for line in again.output().splitlines() if "ready:" in line]
        assert started and " 0 events followed" in started[0], started  # and read nothing
