"""Durable ingest of a fleet on PostgreSQL and NATS JetStream, with 1, 2 and 3 managers, against
the single-node SQLite `onduty serve` fed the same alerts in the same run.

The layout: one ingest node (`serve --role ingest`) takes every request and publishes each alert
to the partition of its incident; 1, 2 or 3 manager nodes (`serve --role manager`) share the 6
partitions (2, 3 or 6 each: even shares for all three counts) and fold and log them. Every
process is unpinned: the nodes share the machine's cores with PostgreSQL, NATS and the load
generator, and so does the single node here.

The load is the ingest workload's unflattering one: webhooks of 50 alerts, every alert new (a
`uniq` label and fingerprint the generator makes unique per request), closed loop, 32 keep-alive
connections, 10 s after a 2 s warm-up (1.5 s, no warm-up and 1 manager only with `quick`). The
generator is an asyncio client in the bench's own process (`_fleet.closed_loop`), not wrk: at a
few hundred webhooks a second it costs little, and it sends nothing once its time is up, where
wrk keeps its connections busy until its duration ends and would take the cores the managers
drain the bus with. The
config is that workload's services without runbooks, incidents grouped by the unique label (so
every alert opens an incident of its own and the alerts spread evenly over the partitions) and a
group wait of an hour (no timer falls due during a run): only ingest, fold and log are measured.

Two figures per fleet:

- accepted: alerts answered 202 per second. A fleet node answers once JetStream stored the
  alert (in the NATS server's file store, which it syncs to disk on its own schedule, every 2
  minutes by default);
- end to end: alerts acknowledged, over the time from the first request until the stream is
  empty. A manager acknowledges a message only once its partition's log committed it
  (PostgreSQL, fsync at every commit), and the stream (a work queue) drops what is acknowledged:
  empty means every alert answered 202 is in a log. The single node answers 202 after its own
  commit (SQLite, synchronous=FULL), so for it both figures are one.

Each fleet's cores are accounted while the load runs and while the managers drain what it left
on the bus, and what an alert costs in CPU over both. Checks: every request answered 202 (within
30 s), as many `SignalReceived` rows as alerts acknowledged (more only by alerts whose request
went unanswered), `onduty audit verify` exit 0, every node exits 0 on SIGTERM.

With `ONDUTY_BENCH_PYSPY=DIR`, py-spy records every node during each measured run into DIR (raw
folded stacks of the thread holding the GIL, 100 samples/s, non-blocking: on two busy cores a
thread waiting for the GIL or a core would otherwise be counted wherever it waits). The sampling
takes CPU from the run: profile in a run of its own, not in the one whose figures are kept.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onduty.bench._alerts import (
    ONDUTY_PATH,
    PER_REQUEST,
    Checks,
    alert_stream,
    burst_problems,
    config_document,
    events_in_log,
)
from onduty.bench._alerts import audit_verify as audit_sqlite
from onduty.bench._fleet import (
    CpuUse,
    Node,
    Private,
    Watch,
    audit_verify,
    balanced,
    closed_loop,
    fleet_document,
    not_measured,
    pids_named,
    private,
    running,
    signals_logged,
    unavailable,
    wait_for,
    write_config,
)
from onduty.bench._http import Burst
from onduty.bench._workload import Row, per_second, progress, ratio, row, seconds

PARTITIONS = 6
MANAGERS = {True: (1,), False: (1, 2, 3)}
CONNECTIONS = 32
SECONDS = {True: 1.5, False: 10.0}
WARMUP = {True: 0.0, False: 2.0}
DRAIN_LIMIT = 600.0  # seconds the managers get to empty the bus before the run counts as failed
TARGET = 20_000.0
NAME = "fleet ingest"


def bench_document() -> dict[str, Any]:
    """The ingest workload's config without runbooks: an incident per alert, no timer due."""
    document = config_document()
    document["correlation"] = {
        **document["correlation"],
        "group_by": ["service", "alertname", "instance", "uniq"],
        "group_wait": "1h",
    }
    return document


@dataclass
class Run:
    """One measured run: the load's result and what the logs made of it."""

    result: Burst
    end_to_end: float  # first request → every acknowledged alert committed, seconds
    backlog: int = 0  # alerts on the bus, not yet committed, when the load stopped
    drain: float = 0.0  # load stopped → bus empty, seconds
    loaded: CpuUse | None = None
    draining: CpuUse | None = None

    @property
    def acknowledged(self) -> int:
        return self.result.ok * PER_REQUEST

    def accepted(self) -> float:
        """Alerts answered 202 per second."""
        return self.acknowledged / self.result.seconds if self.result.seconds > 0 else 0.0

    def durable(self) -> float:
        """Alerts acknowledged per second until the last of them was committed."""
        return self.acknowledged / self.end_to_end if self.end_to_end > 0 else 0.0


def _burst(url: str, bodies: list[bytes], span: float, unique: str) -> Burst:
    return closed_loop(
        url, ONDUTY_PATH, bodies, connections=CONNECTIONS, seconds=span, unique=unique
    )


@dataclass
class Tally:
    """Alerts answered 202, and alerts in requests that had no answer when the generator
    stopped waiting: the server may or may not have stored those."""

    acknowledged: int = 0
    in_doubt: int = 0

    def add(self, result: Burst) -> None:
        self.acknowledged += result.ok * PER_REQUEST
        self.in_doubt += result.unanswered * PER_REQUEST

    def check(self, who: str, logged: int, checks: Checks) -> None:
        """Nothing acknowledged is missing from the logs, and nothing is there twice."""
        most = self.acknowledged + self.in_doubt
        checks.expect(
            self.acknowledged <= logged <= most,
            f"{who}: {logged:,} SignalReceived, {self.acknowledged:,} acknowledged"
            + (f" (and {self.in_doubt:,} unanswered)" if self.in_doubt else ""),
        )
        doubt = (
            f" + {logged - self.acknowledged:,} of {self.in_doubt:,} unanswered"
            if self.in_doubt
            else ""
        )
        checks.notes.append(f"{who} {logged:,} = {self.acknowledged:,} acknowledged{doubt}")


class Profiler:
    """py-spy on `pids` for `span` seconds when ONDUTY_BENCH_PYSPY names a folder; else idle."""

    def __init__(self, label: str, pids: dict[str, int], span: float) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []
        folder = os.environ.get("ONDUTY_BENCH_PYSPY")
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not folder or not Path(spy).exists():
            return
        Path(folder).mkdir(parents=True, exist_ok=True)
        for name, pid in pids.items():
            output = Path(folder) / f"{label}-{name}.txt"
            command = [spy, "record", "--gil", "--nonblocking", "-r", "100",
                       "-d", str(max(1, round(span))), "-f", "raw", "-o", str(output),
                       "-p", str(pid)]  # fmt: skip
            self.processes.append(
                subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )

    def wait(self) -> None:
        for process in self.processes:
            process.wait(120)


@dataclass
class Measured:
    result: Burst
    started: float  # time.monotonic() when the generator started
    stopped: float  # when it stopped sending (its deadline)
    loaded: CpuUse
    draining: CpuUse | None


def _measured(
    url: str,
    bodies: list[bytes],
    span: float,
    groups: dict[str, Callable[[], list[int]]],
    profiler: Callable[[], Profiler],
    drained: Callable[[float], bool] | None = None,
) -> Measured:
    """The measured burst, the cores accounted from its start to the generator's deadline, then
    (with `drained`) from there until `drained(deadline)` holds: the generator itself returns
    later, once it has waited out its last answers."""
    outcome: list[Burst] = []
    started = time.monotonic()
    with CpuUse(dict(groups)) as loaded:
        sender = threading.Thread(
            target=lambda: outcome.append(_burst(url, bodies, span, "u")), daemon=True
        )
        sender.start()
        spying = profiler()
        time.sleep(max(0.0, started + 0.1 + span - time.monotonic()))
    stopped = time.monotonic()
    draining = None
    if drained is not None:
        with CpuUse(dict(groups)) as draining:
            wait_for(lambda: drained(stopped), DRAIN_LIMIT)
    sender.join(span + 120)
    spying.wait()
    if not outcome:
        raise RuntimeError("the load generator returned nothing")
    return Measured(outcome[0], started, stopped, loaded, draining)


def single_node(bodies: list[bytes], quick: bool, folder: Path) -> tuple[Run, Checks]:
    """The peer: one `onduty serve` on a SQLite store, the same config (no fleet) and load."""
    checks = Checks()
    store = folder / "single.db"
    config = write_config(folder / "single.yaml", bench_document())
    node = Node(str(store), config, folder / "single.log", "--max-pending", "200000")
    tally = Tally()
    with running([node]):
        if WARMUP[quick]:
            warm = _burst(node.url, bodies, WARMUP[quick], "w")
            checks.failures += burst_problems("single node, warm-up", warm, 202)
            tally.add(warm)
        groups = {"the node": lambda: [node.pid]}
        measured = _measured(
            node.url, bodies, SECONDS[quick], groups,
            lambda: Profiler("single", {"node": node.pid}, SECONDS[quick]),
        )  # fmt: skip
    result = measured.result
    checks.failures += burst_problems("single node", result, 202)
    code = node.process.returncode if node.process is not None else None
    checks.expect(code == 0, f"the single node exited {code} on SIGTERM")
    tally.add(result)
    audit_sqlite(store, checks)
    tally.check("single node", events_in_log(store), checks)
    return Run(result, result.seconds, loaded=measured.loaded), checks


def _nodes(where: Private, managers: int, folder: Path) -> tuple[Node, list[Node]]:
    document = fleet_document(where, bench_document(), partitions=PARTITIONS, lease_ttl=6.0)
    config = write_config(folder / "fleet.yaml", document)
    ingest = Node(where.store, config, folder / "ingest.log",
                  "--role", "ingest", "--name", "ingest", "--max-pending", "200000")  # fmt: skip
    deciders = []
    for i in range(1, managers + 1):
        log = folder / f"manager-{i}.log"
        deciders.append(
            Node(where.store, config, log, "--role", "manager", "--name", f"manager-{i}")
        )
    return ingest, deciders


def _warm_up(
    ingest: Node, watch: Watch, bodies: list[bytes], quick: bool, checks: Checks
) -> Burst | None:
    """The warm-up, drained before the measured run starts."""
    if not WARMUP[quick]:
        return None
    warm = _burst(ingest.url, bodies, WARMUP[quick], "w")
    checks.failures += burst_problems("fleet warm-up", warm, 202)
    waited = wait_for(lambda: watch.done_after(time.monotonic() - 0.2), DRAIN_LIMIT)
    if waited is None or watch.gave_up:
        checks.failures.append(f"the warm-up was not seen drained: {watch.failure or 'timeout'}")
    return warm


def _load(
    ingest: Node, deciders: list[Node], watch: Watch, bodies: list[bytes], quick: bool
) -> tuple[Run, bool]:
    """The measured run, until the bus is empty; whether it emptied in time."""
    groups = {
        "ingest node": lambda: [ingest.pid],
        "managers": lambda: [m.pid for m in deciders],
        "PostgreSQL": lambda: pids_named("postgres"),
        "NATS": lambda: pids_named("nats-server"),
    }
    pids = {"ingest": ingest.pid} | {m.label: m.pid for m in deciders}
    measured = _measured(
        ingest.url, bodies, SECONDS[quick], groups,
        lambda: Profiler(f"{len(deciders)}-managers", pids, SECONDS[quick]),
        watch.done_after,
    )  # fmt: skip
    stopped = measured.stopped
    at_stop, drained = watch.at(stopped), watch.drained_after(stopped)
    drained_at = drained.at if drained is not None else time.monotonic()
    run = Run(
        measured.result,
        drained_at - measured.started,
        backlog=at_stop.backlog if at_stop is not None else 0,
        drain=max(0.0, drained_at - stopped),
        loaded=measured.loaded,
        draining=measured.draining,
    )
    return run, drained is not None


def fleet(managers: int, bodies: list[bytes], quick: bool, folder: Path) -> tuple[Run, Checks]:
    """One ingest node and `managers` manager nodes on a private schema and stream."""
    checks = Checks()
    folder.mkdir(parents=True, exist_ok=True)
    with private() as where:
        ingest, deciders = _nodes(where, managers, folder)
        with running([ingest, *deciders]), Watch(where) as watch:
            if wait_for(lambda: balanced(deciders, PARTITIONS), 60) is None:
                checks.failures.append(f"{managers} managers did not share the partitions in 60 s")
            warm = _warm_up(ingest, watch, bodies, quick, checks)
            run, drained = _load(ingest, deciders, watch, bodies, quick)
        tally = Tally()
        for result in (warm, run.result):
            if result is not None:
                tally.add(result)
        checks.failures += burst_problems(f"{managers} managers", run.result, 202)
        why = watch.failure or f"the bus still held alerts {DRAIN_LIMIT:g} s after the load"
        checks.expect(drained, f"not seen drained: {why}")
        for node in (ingest, *deciders):
            code = node.process.returncode if node.process is not None else None
            checks.expect(code == 0, f"{node.label} exited {code} on SIGTERM")
        tally.check(f"{managers} manager(s)", signals_logged(where), checks)
        verified, said = audit_verify(where.store, folder)
        checks.expect(verified, f"onduty audit verify: {said}")
    return run, checks


def _rows(single: Run, fleets: dict[int, Run], setting: str) -> list[Row]:
    """Each fleet's figures: with 1 manager beside the single node, with more beside 1."""
    rows: list[Row] = []
    cores = os.cpu_count() or 1
    if single.loaded is not None:
        rows.append(row(
            f"{NAME}, the peer: single node (SQLite), where the cores went while loaded",
            single.loaded.text(), single.loaded.machine, "cores",
            f"cores on this machine: {cores}", single.loaded.machine / cores,
        ))  # fmt: skip
    first = fleets[min(fleets)]
    for count, run in fleets.items():
        label = f"{NAME}, {count} manager{'s' if count > 1 else ''} + 1 ingest node"
        if run is first:
            text = f"single node, SQLite, 202 after its fsync: {alerts(single.durable())}"
            peers = ((text, single.durable()), (text, single.durable()))
        else:
            peers = (
                (f"1 manager: {alerts(first.accepted())}", first.accepted()),
                (f"1 manager: {alerts(first.durable())}", first.durable()),
            )
        accepted, durable = run.accepted(), run.durable()
        rows.append(row(
            f"{label}: accepted (202 once JetStream stored them); {setting}",
            alerts(accepted), accepted, "alerts/s", peers[0][0],
            accepted / peers[0][1],
        ))  # fmt: skip
        rows.append(row(
            f"{label}: end to end (first request → every acknowledged alert committed in its "
            "partition's log)",
            f"{alerts(durable)} ({run.acknowledged:,} alerts; {run.backlog:,} "
            f"still on the bus when the load stopped, committed {seconds(run.drain)} later)",
            durable, "alerts/s", peers[1][0], durable / peers[1][1],
        ))  # fmt: skip
        if run.loaded is not None:
            # a drain shorter than this is too short a window to account cores over
            drained = run.draining.text() if run.draining and run.drain > 0.5 else "(none)"
            rows.append(row(
                f"{label}: where the cores went, while loaded | while draining the bus",
                f"{run.loaded.text()} | {drained}", run.loaded.machine, "cores",
                f"cores on this machine: {cores}", run.loaded.machine / cores,
            ))  # fmt: skip
    rows += _costs(single, fleets)
    best = max(fleets, key=lambda count: fleets[count].durable())
    rate = fleets[best].durable()
    rows.append(row(
        f"{NAME}: best end to end against the target",
        f"{alerts(rate)} ({best} manager{'s' if best > 1 else ''})", rate,
        "alerts/s", f"target >= {TARGET:,.0f} signals/s", rate / TARGET,
    ))  # fmt: skip
    if len(fleets) > 1:
        most = max(fleets)
        scaled = fleets[most].durable() / first.durable()
        rows.append(row(
            f"{NAME}: scaling, end to end with {most} managers over 1",
            ratio(scaled), scaled, "x", f"linear: {most:.2f}x", scaled / most,
        ))  # fmt: skip
    return rows


FLEET_GROUPS = ("ingest node", "managers", "PostgreSQL", "NATS")


def cpu_per_alert(run: Run, groups: tuple[str, ...]) -> dict[str, float]:
    """CPU microseconds per alert acknowledged, by group, over the load and the drain: all the
    work those alerts took, since the warm-up was drained before and nothing else runs."""
    windows = [w for w in (run.loaded, run.draining) if w is not None]
    count = max(1, run.acknowledged)
    return {g: sum(w.seconds(g) for w in windows) / count * 1e6 for g in groups}


def _costs(single: Run, fleets: dict[int, Run]) -> list[Row]:
    """What an alert costs in CPU in each layout, and the cores the target would take at that
    cost: where the fleet saturates on a machine with more cores."""
    peer = sum(cpu_per_alert(single, ("the node",)).values())
    rows = []
    for count, run in fleets.items():
        costs = cpu_per_alert(run, FLEET_GROUPS)
        total = sum(costs.values())
        parts = ", ".join(f"{group} {micros:,.0f} µs" for group, micros in costs.items())
        rows.append(row(
            f"{NAME}, {count} manager{'s' if count > 1 else ''}: CPU per alert end to end "
            "(load and drain)",
            f"{total:,.0f} µs ({parts}): {TARGET:,.0f} alerts/s would take "
            f"{TARGET * total / 1e6:,.1f} cores", total, "µs/alert",
            f"single node (SQLite): {peer:,.0f} µs per alert", total / peer if peer else 0.0,
        ))  # fmt: skip
    return rows


def alerts(rate: float) -> str:
    return per_second(rate, "alerts")


def run(quick: bool = False) -> list[Row]:
    why = unavailable()
    if why is not None:
        return [not_measured(NAME, why)]
    stream = alert_stream()
    bodies = stream.unique_onduty
    setting = (
        f"webhooks of {PER_REQUEST} UNIQUE alerts, {CONNECTIONS} connections, {SECONDS[quick]:g} s"
        f"{f' after a {WARMUP[quick]:g} s warm-up' if WARMUP[quick] else ''}, {PARTITIONS} "
        "partitions, every process unpinned"
    )
    with tempfile.TemporaryDirectory(prefix="onduty-bench-fleet-") as name:
        folder = Path(name)
        progress(f"{NAME}: the single node (SQLite)")
        single, checks = single_node(bodies, quick, folder / "single")
        fleets: dict[int, Run] = {}
        for count in MANAGERS[quick]:
            progress(f"{NAME}: {count} manager(s) and an ingest node")
            fleets[count], more = fleet(count, bodies, quick, folder / f"fleet-{count}")
            checks.failures += more.failures
            checks.notes += more.notes
    rows = _rows(single, fleets, setting)
    rows.append(checks.row(
        f"{NAME} checks: every request 202, SignalReceived rows == alerts acknowledged, "
        "`onduty audit verify` exit 0, every node exits 0 on SIGTERM"
    ))  # fmt: skip
    return rows
