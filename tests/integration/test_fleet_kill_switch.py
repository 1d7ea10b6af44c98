"""Kill switches in a fleet: a switch set through any node stops the partitions every manager
runs, now and after they move; the answer comes once every partition's log holds it; clearing
through another node lifts it everywhere; every node lists it and shows it in its console.
Through `onduty serve` processes on the real PostgreSQL and NATS JetStream."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from onduty.bus.partitions import group_key_of, partition_of
from onduty.log.fleet_view import place_of
from tests.integration.fleet import Fleet, fleet, held, signal_body, wait_for
from tests.integration.server import Server

pytestmark = pytest.mark.slow

PARTITIONS = 4
RUNBOOK = "restart-down-instance"
SWITCH = {"kind": "runbook", "name": RUNBOOK, "reason": "restarts make it worse"}
DENIAL = f"kill-switch: kill switch on runbook {RUNBOOK} (set by alice: restarts make it worse)"
BADGE = f"kill switch: runbook {RUNBOOK}"


def partition_of_instance(instance: str) -> int:
    labels = signal_body(instance)["labels"]
    assert isinstance(labels, dict)
    key = group_key_of(labels, ["service", "alertname", "instance"])
    return partition_of(key, PARTITIONS)


def instance_in(partitions: set[int], used: set[str]) -> str:
    """An instance not used yet whose incident lands in one of `partitions`."""
    for i in range(1000):
        name = f"web-{i}"
        if name not in used and partition_of_instance(name) in partitions:
            used.add(name)
            return name
    raise AssertionError(f"no instance lands in {partitions}")


def name_of(server: Server) -> str:
    return server.args[server.args.index("--name") + 1]


def holdings(server: Server) -> dict[str, set[int]]:
    status = httpx.get(f"{server.url}/api/v1/fleet", timeout=10).json()
    return {m["owner"]: set(m["holds"]) for m in status["members"] if m["alive"]}


def send(server: Server, instance: str) -> None:
    answer = httpx.post(f"{server.url}/api/v1/signals", json=signal_body(instance), timeout=10)
    assert answer.status_code == 202, answer.text


def verdict_on(server: Server, target: str) -> dict[str, Any]:
    """The policy verdict on the action proposed for `target`, with the partition it is in."""
    found: list[dict[str, Any]] = []

    def decided() -> bool:
        proposed = httpx.get(
            f"{server.url}/api/v1/events",
            params={"type": "ActionProposed", "limit": 10000},
            timeout=10,
        ).json()
        commands = {e["data"]["command_id"] for e in proposed if e["data"]["target"] == target}
        verdicts = httpx.get(
            f"{server.url}/api/v1/events",
            params={"type": "PolicyEvaluated", "limit": 10000},
            timeout=10,
        ).json()
        found[:] = [
            {**e["data"], "partition": place_of(e["seq"])[0]}
            for e in verdicts
            if e["data"]["command_id"] in commands
        ]
        return bool(found)

    wait_for(decided, 20, f"a verdict on {target}")
    (verdict,) = found
    return verdict


def switches(server: Server) -> list[dict[str, Any]]:
    answer = httpx.get(f"{server.url}/api/v1/kill-switches", timeout=10)
    assert answer.status_code == 200, answer.text
    return list(answer.json())


def set_switch(server: Server) -> dict[str, Any]:
    started = time.monotonic()
    answer = httpx.post(
        f"{server.url}/api/v1/kill-switches", json={**SWITCH, "set_by": "alice"}, timeout=60
    )
    assert answer.status_code == 202, answer.text
    assert time.monotonic() - started < 15  # well before a 504 (10 s plus the lease TTL)
    return dict(answer.json())


def recorded_in(server: Server, event_type: str) -> Counter[int]:
    """In how many events of `event_type` each partition's log holds the switch."""
    found = httpx.get(
        f"{server.url}/api/v1/events", params={"type": event_type, "limit": 10000}, timeout=10
    ).json()
    return Counter(place_of(e["seq"])[0] for e in found if e["data"]["name"] == RUNBOOK)


def cli(f: Fleet, server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "onduty", "kill-switch", *args, "--url", server.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_switch_set_on_one_node_stops_every_partition_and_clears_from_another(
    tmp_path: Path,
) -> None:
    with fleet(tmp_path, partitions=PARTITIONS, instances=1000) as f:
        first, second = f.server("first").start(), f.server("second").start()
        wait_for(lambda: held(first) == 2 and held(second) == 2, 20, "partitions shared")
        owners = holdings(first)
        mine, theirs = owners[name_of(first)], owners[name_of(second)]
        used: set[str] = set()

        answer = set_switch(first)  # on the first node ...
        assert answer["set_by"] == "alice" and answer["partitions"] == PARTITIONS
        # ... the answer came once every partition's log held it, each recorded by its manager
        assert recorded_in(first, "KillSwitchSet") == dict.fromkeys(range(PARTITIONS), 1)
        for node in (first, second):
            (listed,) = switches(node)
            assert (listed["kind"], listed["name"], listed["set_by"]) == (
                "runbook",
                RUNBOOK,
                "alice",
            )
            assert listed["reason"] == "restarts make it worse"
            assert BADGE in httpx.get(f"{node.url}/", timeout=10).text
        listed_by_cli = cli(f, second, "list")
        assert listed_by_cli.returncode == 0 and "set by alice" in listed_by_cli.stdout

        # an incident whose partition the second node runs: its proposal is denied by the switch
        target = instance_in(theirs, used)
        send(first, target)
        verdict = verdict_on(second, target)
        assert verdict["partition"] in theirs
        assert (verdict["verdict"], verdict["reason"]) == ("deny", DENIAL)

        cleared = httpx.delete(f"{second.url}/api/v1/kill-switches/runbook/{RUNBOOK}", timeout=60)
        assert cleared.status_code == 202, cleared.text  # ... cleared on the other one
        assert recorded_in(first, "KillSwitchCleared") == dict.fromkeys(range(PARTITIONS), 1)
        assert switches(first) == [] and switches(second) == []
        assert BADGE not in httpx.get(f"{first.url}/", timeout=10).text
        again = httpx.delete(f"{first.url}/api/v1/kill-switches/runbook/{RUNBOOK}", timeout=60)
        assert again.status_code == 404

        lifted = instance_in(mine, used)  # a partition the first node runs acts again
        send(second, lifted)
        assert verdict_on(first, lifted)["verdict"] == "allow"
        wait_for(lambda: lifted in f.runs(), 20, "the action ran")
        assert target not in f.runs()
        assert all(node.terminate() == 0 for node in (first, second))
        replayed = f.command("replay")  # every partition's denials come back from its own log
        assert replayed.returncode == 0 and "reproduced exactly" in replayed.stdout, replayed


def test_a_switch_holds_where_partitions_move_and_on_a_node_started_after_it(
    tmp_path: Path,
) -> None:
    with fleet(tmp_path, partitions=PARTITIONS, instances=1000) as f:
        first, second = f.server("first").start(), f.server("second").start()
        wait_for(lambda: held(first) == 2 and held(second) == 2, 20, "partitions shared")
        done = subprocess.run(
            [sys.executable, "-m", "onduty", "kill-switch", "set", "runbook", RUNBOOK,
             "-m", "restarts make it worse", "--by", "alice", "--url", second.url],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "kill switch set on runbook" in done.stdout

        third = f.server("third").start()  # started after the switch: takes some partitions
        wait_for(lambda: held(third) >= 1, 20, "the newcomer took its share")
        assert switches(third)[0]["set_by"] == "alice"
        assert BADGE in httpx.get(f"{third.url}/", timeout=10).text
        first.kill()  # and the first node's partitions move to the others
        wait_for(lambda: held(second) + held(third) == PARTITIONS, 20, "partitions moved")

        used: set[str] = set()
        for partition in range(PARTITIONS):  # every partition, wherever it runs now, denies
            target = instance_in({partition}, used)
            send(third, target)
            verdict = verdict_on(third, target)
            assert verdict["partition"] == partition
            assert (verdict["verdict"], verdict["reason"]) == ("deny", DENIAL)
        assert f.runs() == {}
        assert third.terminate() == 0 and second.terminate() == 0
        replayed = f.command("replay")
        assert replayed.returncode == 0 and "reproduced exactly" in replayed.stdout, replayed


def test_a_switch_set_while_a_manager_is_dead_holds_when_its_partitions_move(
    tmp_path: Path,
) -> None:
    """A switch set while a dead manager's leases have not expired yet: the answer waits until
    the survivor took those partitions over and recorded it there too."""
    with fleet(tmp_path, partitions=PARTITIONS, instances=1000) as f:
        first, second = f.server("first").start(), f.server("second").start()
        wait_for(lambda: held(first) == 2 and held(second) == 2, 20, "partitions shared")
        theirs = holdings(first)[name_of(second)]
        second.kill()
        answer = set_switch(first)
        assert answer["partitions"] == PARTITIONS
        assert held(first) == PARTITIONS  # it answered once it ran them all
        target = instance_in(theirs, set())
        send(first, target)
        verdict = verdict_on(first, target)
        assert verdict["partition"] in theirs
        assert (verdict["verdict"], verdict["reason"]) == ("deny", DENIAL)
        assert first.terminate() == 0


def test_a_switch_set_while_no_manager_runs_is_recorded_before_the_first_decides(
    tmp_path: Path,
) -> None:
    """With no manager running, no partition can record the switch: the answer says so (504,
    naming them) without losing it, and the first manager to run them records it before it
    decides anything."""
    with fleet(tmp_path, partitions=PARTITIONS, instances=1000) as f:
        door = f.server("door", "--role", "ingest").start()
        done = subprocess.run(
            [sys.executable, "-m", "onduty", "kill-switch", "set", "runbook", RUNBOOK,
             "-m", "restarts make it worse", "--by", "alice", "--url", door.url],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 2, done
        assert "504" in done.stderr and "have not recorded it yet" in done.stderr
        assert [s["set_by"] for s in switches(door)] == ["alice"]  # kept in the record
        target = instance_in({0, 1, 2, 3}, set())
        send(door, target)  # waits on the bus for a manager
        manager = f.server("manager").start()
        wait_for(lambda: held(manager) == PARTITIONS, 20, "a manager runs every partition")
        verdict = verdict_on(door, target)
        assert (verdict["verdict"], verdict["reason"]) == ("deny", DENIAL)
        assert recorded_in(door, "KillSwitchSet") == dict.fromkeys(range(PARTITIONS), 1)
        assert f.runs() == {}
