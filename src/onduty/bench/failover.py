"""Failover of a fleet: how long after a manager dies its partitions run again, and act.

Two `onduty serve` nodes (`--role all`: each takes signals and manages) share 8 partitions on a
private PostgreSQL schema and NATS stream. Every incident runs a shell action (a Python script,
`-I -S` so that it starts fast) whose first step writes the wall-clock time it started, with
its target, to a file. A trial:

1. a signal for a partition of the victim, sent to the other node: signal → action while
   nothing fails (the peer of what follows);
2. the victim is SIGKILLed (as a crash would), and at once a signal for one of its partitions
   is sent to the survivor (which stores it on the bus: its partition has no manager yet);
3. timed from the kill: (a) the survivor runs every partition (`onduty_partitions_held` in its
   /metrics, polled every 20 ms); (b) the action for that signal starts. Also from the moment
   the victim's lease on that partition expired (its `expires_at`, by the database's clock on
   this same machine) to (b), the part of the failover the TTL does not set, split where the
   survivor took the lease (its `acquired_at`): the wait for its keeper's next round, then the
   new cell's start up to the action.

Then a new manager replaces the victim and the next trial kills the older of the two. With
`lease_ttl` 6 s (the default) and 3 s, 5 trials each; with `quick`, one trial at 3 s.

Checks: every signal sent was answered 202 and acted on exactly once; `onduty audit verify`
exit 0.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql

from onduty.bench._alerts import Checks
from onduty.bench._fleet import (
    DATABASE,
    Node,
    Private,
    audit_verify,
    balanced,
    fleet_document,
    not_measured,
    private,
    unavailable,
    wait_for,
    write_config,
)
from onduty.bench._workload import Row, progress, row, seconds
from onduty.bus.partitions import group_key_of, partition_of

PARTITIONS = 8
INSTANCES = 400
TTLS = {True: (3.0,), False: (6.0, 3.0)}
TRIALS = {True: 1, False: 5}
GROUP_BY = ["service", "alertname", "instance"]
LIMIT = 60.0  # seconds a step may take before the trial counts as failed
NAME = "failover"

ACTION = """\
import sys, time
started = time.time()
runs, target, command_id = sys.argv[1:4]
with open(runs, "a") as out:
    out.write(f"{started:.6f} {target} {command_id}\\n")
"""


def config_document(where: Private, folder: Path, lease_ttl: float) -> dict[str, Any]:
    """A fleet of one service whose every incident runs the timed action."""
    (folder / "action.py").write_text(ACTION)
    python = sys.executable
    argv = [python, "-I", "-S", str(folder / "action.py"), str(folder / "runs.txt"),
            "{{ target }}", "{{ command_id }}"]  # fmt: skip
    document = {
        "services": [
            {
                "name": "web",
                "autonomy": "act",
                "instances": [f"web-{i}" for i in range(INSTANCES)],
            }
        ],
        "correlation": {"group_by": GROUP_BY, "group_wait": "0s"},
        "runbooks": [
            {
                "name": "restart-down-instance",
                "when": 'signal.labels.alertname == "InstanceDown"',
                "do": [{"action": "process.restart", "target": "{{ signal.labels.instance }}"}],
            }
        ],
        "policy": {"guardrails": []},
        "actuators": [
            {"kind": "shell", "action": "process.restart", "argv": argv, "allow": [python]}
        ],
    }
    return fleet_document(where, document, partitions=PARTITIONS, lease_ttl=lease_ttl)


def labels(instance: str) -> dict[str, str]:
    return {"alertname": "InstanceDown", "service": "web", "instance": instance}


def send(node: Node, instance: str) -> int:
    body = {"source": "bench", "fingerprint": f"down-{instance}", "status": "firing",
            "labels": labels(instance)}  # fmt: skip
    try:
        return httpx.post(f"{node.url}/api/v1/signals", json=body, timeout=10).status_code
    except httpx.HTTPError:
        return 0


@dataclass(frozen=True)
class Lease:
    owner: str
    acquired: float  # Unix time, by the database's clock (on this machine)
    expires: float


class Fleet:
    """The two managers of a run, the instances left to alert on, and the actions seen."""

    def __init__(self, where: Private, folder: Path, lease_ttl: float) -> None:
        self.where, self.folder = where, folder
        self.config = write_config(folder / "fleet.yaml", config_document(where, folder, lease_ttl))
        self.nodes: list[Node] = []
        self.unused = [f"web-{i}" for i in range(INSTANCES)]
        self.sent: dict[str, int] = {}  # instance → status of its signal
        self._named = 0

    def start_manager(self) -> Node:
        self._named += 1
        name = f"manager-{self._named}"
        node = Node(self.where.store, self.config, self.folder / f"{name}.log", "--name", name)
        self.nodes.append(node.start())
        return node

    def instance_in(self, partition: int) -> str:
        """An instance not alerted on yet whose incident lives in `partition`."""
        for instance in self.unused:
            key = group_key_of(labels(instance), GROUP_BY)
            if partition_of(key, PARTITIONS) == partition:
                self.unused.remove(instance)
                return instance
        raise RuntimeError(f"no instance left for partition {partition}")

    def leases(self) -> dict[int, Lease]:
        """Every partition's lease, from the lease table."""
        query = sql.SQL(
            "SELECT partition, owner, extract(epoch FROM acquired_at), "
            "extract(epoch FROM expires_at) FROM {}"
        ).format(self.where.table("partition_leases"))
        with psycopg.connect(DATABASE, autocommit=True) as conn:
            found = conn.execute(query).fetchall()
        return {
            int(p): Lease(str(owner), float(taken), float(expiry))
            for p, owner, taken, expiry in found
        }

    def actions(self) -> dict[str, list[float]]:
        """target → when each of its actions started (Unix time)."""
        path = self.folder / "runs.txt"
        started: dict[str, list[float]] = {}
        for line in path.read_text().splitlines() if path.exists() else []:
            stamp, target, _ = line.split()
            started.setdefault(target, []).append(float(stamp))
        return started

    def acted(self, instance: str, limit: float = LIMIT) -> float | None:
        """When the action for `instance` started (Unix time), waiting for it up to `limit`."""
        wait_for(lambda: instance in self.actions(), limit, every=0.01)
        found = self.actions().get(instance)
        return found[0] if found else None

    def signal(self, node: Node, instance: str) -> None:
        self.sent[instance] = send(node, instance)


@dataclass(frozen=True)
class Trial:
    quiet: float  # signal → action with nothing failing, seconds
    held: float  # kill → the survivor runs every partition
    acted: float  # kill → the action for the signal sent right after the kill
    expiry: float  # kill → the victim's lease on that partition expired
    taken: float  # kill → the survivor took that lease
    moved: int  # partitions the victim held


def trial(fleet: Fleet, checks: Checks) -> Trial | None:
    victim, survivor = fleet.nodes[-2], fleet.nodes[-1]
    moved = sorted(p for p, lease in fleet.leases().items() if lease.owner == victim.label)
    if not moved:
        checks.failures.append(f"{victim.label} held no partition")
        return None
    before = fleet.instance_in(moved[0])
    sent = time.time()
    fleet.signal(survivor, before)
    quiet = fleet.acted(before)
    partition = moved[-1]
    after = fleet.instance_in(partition)
    killed = time.time()
    victim.kill()
    fleet.signal(survivor, after)
    # read after the kill, so no renewal can move it; long before it expires (ttl / 3 at least)
    lost = fleet.leases()[partition]
    checks.expect(lost.owner == victim.label, f"partition {partition} moved before it expired")
    everything = wait_for(lambda: survivor.held() == PARTITIONS, LIMIT, every=0.02)
    holding = time.time()
    acted = fleet.acted(after)
    taken = fleet.leases()[partition]
    if quiet is None or everything is None or acted is None or taken.owner != survivor.label:
        checks.failures.append(f"a trial did not complete within {LIMIT:g} s a step")
        return None
    return Trial(
        quiet=quiet - sent,
        held=holding - killed,
        acted=acted - killed,
        expiry=lost.expires - killed,
        taken=taken.acquired - killed,
        moved=len(moved),
    )


def _span(values: list[float]) -> str:
    """The median, and the range when there are several."""
    middle = seconds(statistics.median(values))
    if len(values) == 1:
        return middle
    return f"{middle} (median of {len(values)}; {seconds(min(values))} to {seconds(max(values))})"


def measure(lease_ttl: float, trials: int, folder: Path) -> tuple[list[Trial], Checks]:
    checks = Checks()
    folder.mkdir(parents=True, exist_ok=True)
    done: list[Trial] = []
    with private() as where:
        fleet = Fleet(where, folder, lease_ttl)
        try:
            fleet.start_manager()
            for _ in range(trials):
                fleet.start_manager()
                if wait_for(lambda: balanced(fleet.nodes[-2:], PARTITIONS), LIMIT) is None:
                    checks.failures.append("two managers did not share the partitions")
                    break
                found = trial(fleet, checks)
                if found is None:
                    break
                done.append(found)
            survivor = fleet.nodes[-1]
            code = survivor.stop()
            checks.expect(code == 0, f"{survivor.label} exited {code} on SIGTERM")
        finally:
            for node in fleet.nodes:
                node.kill()
        refused = {i: status for i, status in fleet.sent.items() if status != 202}
        checks.expect(not refused, f"signals not answered 202: {refused}")
        runs = Counter({target: len(times) for target, times in fleet.actions().items()})
        checks.expect(sorted(runs) == sorted(fleet.sent), "not every signal was acted on")
        twice = sorted(target for target, count in runs.items() if count > 1)
        checks.expect(not twice, f"actions run more than once: {twice}")
        verified, said = audit_verify(where.store, folder)
        checks.expect(verified, f"onduty audit verify: {said}")
        checks.notes.append(f"ttl {lease_ttl:g} s: {len(fleet.sent)} signals, each acted on once")
    return done, checks


def _rows(lease_ttl: float, trials: list[Trial]) -> list[Row]:
    """Kill → every partition run and → first action, against the TTL; and the part after the
    expiry split at the moment the survivor took the lease."""
    ttl = f"lease_ttl: {lease_ttl:g} s"
    label = f"{NAME}, 2 managers, {PARTITIONS} partitions, lease_ttl {lease_ttl:g} s"

    def timed(name: str, values: list[float], peer: str, peer_value: float) -> Row:
        middle = statistics.median(values)
        whole = name if name.startswith(" ") else f"{label}: {name}"  # "  of which" rows: a part
        return row(whole, _span(values), middle, "s", peer, middle / peer_value)

    quiet = [t.quiet for t in trials]
    nothing_failing = f"the same path with nothing failing, signal → action: {_span(quiet)}"
    renew = lease_ttl / 3  # the keeper's round (Leases' renew_every)
    moved = statistics.median(t.moved for t in trials)
    expired = _span([t.expiry for t in trials])
    return [
        timed(f"SIGKILL of a manager → the survivor runs every partition ({moved:g} moved)",
              [t.held for t in trials], ttl, lease_ttl),
        timed("SIGKILL → first action for a signal of a moved partition, sent right after the "
              "kill", [t.acted for t in trials], ttl, lease_ttl),
        timed(f"the victim's lease on that partition expired ({expired} after the kill) "
              "→ that action started", [t.acted - t.expiry for t in trials], nothing_failing,
              statistics.median(quiet)),
        timed("  of which: expired → the survivor took the lease (its keeper's next round)",
              [t.taken - t.expiry for t in trials], f"the keeper's round: every {seconds(renew)}",
              renew),
        timed("  of which: lease taken → the action started (the cell folds the partition's log "
              "and consumes, the core decides, the actuator starts)",
              [t.acted - t.taken for t in trials], nothing_failing, statistics.median(quiet)),
    ]  # fmt: skip


def run(quick: bool = False) -> list[Row]:
    why = unavailable()
    if why is not None:
        return [not_measured(NAME, why)]
    rows: list[Row] = []
    checks = Checks()
    with tempfile.TemporaryDirectory(prefix="onduty-bench-failover-") as name:
        for lease_ttl in TTLS[quick]:
            progress(f"{NAME}: lease_ttl {lease_ttl:g} s, {TRIALS[quick]} trial(s)")
            trials, found = measure(lease_ttl, TRIALS[quick], Path(name) / f"ttl-{lease_ttl:g}")
            checks.failures += found.failures
            checks.notes += found.notes
            if trials:
                rows += _rows(lease_ttl, trials)
    rows.append(checks.row(
        f"{NAME} checks: every signal answered 202 and acted on exactly once, `onduty audit "
        "verify` exit 0, the last manager exits 0 on SIGTERM"
    ))  # fmt: skip
    return rows
