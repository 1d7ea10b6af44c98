"""From a durable signal to the actuator being called: what deciding and dispatching add.

In-process: a `Service` on a fresh SQLite store (`synchronous=FULL`, the default) with one
service of 61,000 instances (`i-0` …) at autonomy `act`, one runbook that restarts
`{{ signal.labels.instance }}` on `InstanceDown`, no guardrails of its own (the built-in
known-target, autonomy and breaker rules only) and `correlation.group_by: [instance]`. The only
actuator is a no-op for `process.restart` that notes `time.perf_counter()` when it is called
and succeeds at once, so what is measured is onduty's own path: the incident, the plan, the
policy verdict, the commit, the durable `ActionStarted` and the hand-off to a worker thread.

The load: one firing `InstanceDown` signal per tick, a distinct instance and fingerprint each
(so every signal opens an incident and starts an action), at a steady 1,000 signals/s for 60 s
(100/s for 1 s with `quick`), offered with `CoreLoop.offer` from a sender thread. Open loop:
every send time is fixed before the run starts and each latency is measured from the
*scheduled* time, so a stalled sender or core shows up in the figures instead of being hidden.
Twenty signals warm the path up first (and are resolved again); they are not counted. When the
core falls more than `ABORT_LAG` behind the schedule (an accepted signal still not durable that
long after its send time) the sender stops early, so that the backlog left to drain stays
bounded; the rows then say how many signals were sent and why it stopped.

Per signal:

- (a) durable → actuator called: from the moment the signal's future completed (what the
  ingest API waits for before answering 202) to the actuator call. Target: p99 < 10 ms.
- (b) scheduled send → actuator called. Its peer, same signals, same run: scheduled send →
  durable, the path without the actuator; (b) / peer is what the call adds.
- diagnostic: when the append holding the signal was committed (the service's event hook,
  right after the log's append returns). The core handles a batch of inputs, deciding for each,
  and appends the inputs with their decisions in one commit; then it runs the batch's commands
  (each `StartAction` appends its own durable `ActionStarted` and hands the call to a worker)
  and only then completes the batch's futures. So (a) is close to zero by construction and the
  commit → actuator called row is the overhead after the signal became durable.

Checks, reported as rows: how many signals were sent, how many the queue refused, and how many
reached the actuator (all must; a failure row says otherwise), and the rate of actuator calls
achieved.
"""

from __future__ import annotations

import gc
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from onduty.act import ActuatorRegistry
from onduty.act.base import Outcome
from onduty.bench._workload import Row, progress, row
from onduty.commands import StartAction, StartUndo
from onduty.config import Config, parse_config
from onduty.events import Event, SignalReceived
from onduty.loop import CoreLoop, Draining
from onduty.runtime import Input
from onduty.service import Service

INSTANCES = 61_000
RATE = {True: 100.0, False: 1_000.0}
SECONDS = {True: 1.0, False: 60.0}
WARMUP = 20
LEAD = 0.05
"""The first send is scheduled this long after the schedule is made."""
ABORT_LAG = 1.0
"""The sender stops when an accepted signal is still not durable this long after its send time."""
DRAIN_LIMIT = {True: 3.0, False: 300.0}
"""How long to wait, after the last send, for every accepted signal to reach the actuator."""
TARGET_P99_MS = 10.0


def _config() -> Config:
    return parse_config(
        {
            "services": [
                {
                    "name": "fleet",
                    "tier": "standard",
                    "autonomy": "act",
                    "instances": [f"i-{index}" for index in range(INSTANCES)],
                }
            ],
            "correlation": {"group_by": ["instance"]},
            "runbooks": [
                {
                    "name": "restart-down-instance",
                    "when": 'signal.labels.alertname == "InstanceDown"',
                    "do": [{"action": "process.restart", "target": "{{ signal.labels.instance }}"}],
                }
            ],
        }
    )


class NoOpRestart:
    """Does nothing and succeeds; notes when it was first called for each target."""

    def __init__(self) -> None:
        self.called: dict[str, float] = {}
        self.calls = 0
        self._lock = threading.Lock()

    @property
    def idempotent(self) -> bool:
        return False

    @property
    def can_check(self) -> bool:
        return False

    def run(self, command: StartAction | StartUndo) -> Outcome:
        now = time.perf_counter()
        with self._lock:
            self.calls += 1
            self.called.setdefault(command.target, now)
        return Outcome(True)

    def check(self, command_id: str) -> Outcome | None:
        return None


class _TimedService(Service):
    """The service, noting when each signal's `SignalReceived` was committed to the log."""

    def __init__(self, config: Config, store: str, actuators: ActuatorRegistry) -> None:
        super().__init__(config, store, actuators=actuators)
        self.committed: dict[str, float] = {}

    def _on_event(self, event: Event) -> None:
        if event.type == "SignalReceived":  # its stream is `signal:<fingerprint>`
            self.committed.setdefault(event.stream, time.perf_counter())
        super()._on_event(event)


def _signal(instance: str, status: str = "firing") -> SignalReceived:
    return SignalReceived.model_validate(
        {
            "source": "alertmanager",
            "fingerprint": f"InstanceDown:{instance}",
            "status": status,
            "labels": {
                "alertname": "InstanceDown",
                "instance": instance,
                "service": "fleet",
                "severity": "critical",
            },
            "annotations": {"summary": f"InstanceDown on {instance}"},
            "starts_at": datetime.now(UTC),
            "ends_at": datetime.now(UTC) if status == "resolved" else None,
        }
    )


@dataclass
class _Sent:
    """What the sender saw, by signal index."""

    scheduled: Sequence[float]
    durable: list[float | None]
    done: list[bool]
    count: int = 0
    """Signals offered (accepted or refused) before the sender finished or stopped."""
    refused: int = 0
    failed: list[str] = field(default_factory=list)
    lag: float = 0.0
    """The largest delay between a scheduled send and its offer (the sender's own stall)."""
    stopped: str = ""


def _send(loop: CoreLoop, inputs: Sequence[Input], scheduled: Sequence[float]) -> _Sent:
    sent = _Sent(scheduled, [None] * len(inputs), [False] * len(inputs))

    def note(index: int) -> Callable[[Future[list[Event]]], None]:
        def done(future: Future[list[Event]]) -> None:
            finished = time.perf_counter()
            error = future.exception()
            if error is not None:
                sent.failed.append(f"signal {index}: {error!r}")
            else:
                sent.durable[index] = finished
            sent.done[index] = True

        return done

    oldest = 0  # no accepted signal before this index is still waiting to become durable
    for index, item in enumerate(inputs):
        due = scheduled[index]
        while oldest < index and sent.done[oldest]:
            oldest += 1
        if oldest < index and due - scheduled[oldest] > ABORT_LAG:
            sent.stopped = (
                f"stopped sending after {index:,} of {len(inputs):,} signals: signal {oldest:,} "
                f"was still not durable {due - scheduled[oldest]:.1f} s after its send time"
            )
            break
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        sent.lag = max(sent.lag, time.perf_counter() - due)
        sent.count = index + 1
        try:
            future = loop.offer([item])
        except Draining as error:
            sent.failed.append(f"signal {index}: {error}")
            sent.done[index] = True
            continue
        if future is None:
            sent.refused += 1
            sent.done[index] = True
            continue
        future.add_done_callback(note(index))
    return sent


def _warm_up(loop: CoreLoop, actuator: NoOpRestart) -> None:
    """Take the whole path a few times (templates, CEL, the first inserts, the worker threads),
    then resolve those signals so that the measured run starts with nothing firing."""
    warm = [f"i-{index}" for index in range(WARMUP)]
    for status in ("firing", "resolved"):
        for instance in warm:
            future = loop.offer([Input(_signal(instance, status))])
            assert future is not None
            future.result(timeout=30)
        deadline = time.perf_counter() + 10
        while actuator.calls < WARMUP and time.perf_counter() < deadline:
            time.sleep(0.005)
    if actuator.calls < WARMUP:
        raise RuntimeError(
            f"only {actuator.calls} of {WARMUP} warm-up signals reached the actuator"
        )


def _percentiles(samples: list[float]) -> tuple[float, float, float]:
    """p50, p99 and max, in ms."""
    ordered = sorted(samples)
    count = len(ordered)
    return (
        ordered[count // 2] * 1000,
        ordered[min(count - 1, int(count * 0.99))] * 1000,
        ordered[-1] * 1000,
    )


def _spread(samples: list[float]) -> str:
    p50, p99, most = _percentiles(samples)
    return f"{p50:,.2f} / {p99:,.2f} / {most:,.2f} ms"


def _failure(name: str, value: float = 0.0) -> Row:
    return {"name": f"FAILED: {name}", "figure": "failed", "value": value, "unit": "",
            "peer": "expected: no failure", "ratio": "FAILED"}  # fmt: skip


def run(quick: bool = False) -> list[Row]:
    rate, duration = RATE[quick], SECONDS[quick]
    planned = round(rate * duration)
    assert WARMUP + planned <= INSTANCES
    actuator = NoOpRestart()
    registry = ActuatorRegistry()
    registry.register("process.restart", actuator)
    instances = [f"i-{WARMUP + index}" for index in range(planned)]
    inputs = [Input(_signal(instance)) for instance in instances]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="onduty-bench-act-") as folder:
        service = _TimedService(_config(), str(Path(folder) / "act.db"), registry)
        service.start()
        try:
            loop = service.loop
            assert loop is not None
            _warm_up(loop, actuator)
            progress(f"act_overhead: {planned:,} new incidents at {rate:,.0f}/s")
            gc.collect()
            start = time.perf_counter() + LEAD
            scheduled = [start + index / rate for index in range(planned)]
            result: list[_Sent] = []
            sender = threading.Thread(
                target=lambda: result.append(_send(loop, inputs, scheduled)),
                name="act-overhead-sender",
                daemon=True,
            )
            sender.start()
            sender.join(duration + ABORT_LAG + 60)
            if not result:
                raise RuntimeError("the sender did not finish")
            sent = result[0]
            deadline = time.perf_counter() + DRAIN_LIMIT[quick]
            accepted = sent.count - sent.refused - len(sent.failed)
            while time.perf_counter() < deadline and (
                not all(sent.done[: sent.count]) or actuator.calls < WARMUP + accepted
            ):
                time.sleep(0.005)
            called = dict(actuator.called)
            committed = dict(service.committed)
            failure = loop.failure
        finally:
            service.stop()

    if failure is not None:
        rows.append(_failure(f"the core loop stopped: {failure!r}"))
    durable_to_call: list[float] = []
    send_to_call: list[float] = []
    send_to_durable: list[float] = []
    send_to_commit: list[float] = []
    commit_to_call: list[float] = []
    calls: list[float] = []
    for index, instance in enumerate(instances[: sent.count]):
        due = sent.scheduled[index]
        durable = sent.durable[index]
        commit = committed.get(f"signal:InstanceDown:{instance}")
        call = called.get(instance)
        if durable is not None:
            send_to_durable.append(durable - due)
        if commit is not None:
            send_to_commit.append(commit - due)
        if call is None:
            continue
        calls.append(call)
        send_to_call.append(call - due)
        if durable is not None:
            durable_to_call.append(call - durable)
        if commit is not None:
            commit_to_call.append(call - commit)

    what = f"{sent.count:,} signals at {rate:,.0f}/s"
    if durable_to_call:
        a99 = _percentiles(durable_to_call)[1]
        rows.append(
            row(
                f"act: durable (future done) → actuator called, {what}, p50 / p99 / max",
                _spread(durable_to_call),
                a99,
                "ms",
                f"target p99 < {TARGET_P99_MS:.0f} ms",
                a99 / TARGET_P99_MS,
            )
        )
    if send_to_call and send_to_durable:
        b99, p99 = _percentiles(send_to_call)[1], _percentiles(send_to_durable)[1]
        rows.append(
            row(
                f"act: scheduled send → actuator called, {what}, p50 / p99 / max",
                _spread(send_to_call),
                b99,
                "ms",
                f"no actuator: scheduled send → durable (future done), p50 / p99 / max: "
                f"{_spread(send_to_durable)}",
                b99 / p99 if p99 > 0 else 0.0,
            )
        )
    if commit_to_call and send_to_commit:
        c99 = _percentiles(commit_to_call)[1]
        rows.append(
            row(
                "act: signal committed (with its decisions) → actuator called: the durable "
                "ActionStarted and the hand-off to a worker, p50 / p99 / max",
                _spread(commit_to_call),
                c99,
                "ms",
                f"target p99 < {TARGET_P99_MS:.0f} ms",
                c99 / TARGET_P99_MS,
            )
        )
        s99 = _percentiles(send_to_commit)[1]
        rows.append(
            row(
                "act: scheduled send → signal committed: queueing, deciding and the commit, "
                "p50 / p99 / max",
                _spread(send_to_commit),
                s99,
                "ms",
                f"scheduled send → actuator called, p99: {_percentiles(send_to_call)[1]:,.2f} ms",
                s99 / _percentiles(send_to_call)[1] if send_to_call else 0.0,
            )
        )
    reached = len(calls)
    rows.append(
        row(
            f"act: signals planned / sent / refused by the queue / reached the actuator "
            f"(sender lag max {sent.lag * 1000:,.2f} ms)",
            f"{planned:,} / {sent.count:,} / {sent.refused:,} / {reached:,}",
            float(reached),
            "signals",
            f"sent: {sent.count:,}",
            reached / sent.count if sent.count else 0.0,
        )
    )
    if calls:
        span = max(max(calls) - sent.scheduled[0], 1e-9)
        achieved = len(calls) / span
        rows.append(
            row(
                "act: actuator calls achieved (first scheduled send → last call)",
                f"{achieved:,.0f} calls/s",
                achieved,
                "calls/s",
                f"offered: {rate:,.0f} signals/s",
                achieved / rate,
            )
        )
    if sent.stopped:
        rows.append(_failure(f"the core fell behind the schedule; {sent.stopped}"))
    missing = sent.count - reached
    if missing or sent.failed:
        detail = "; ".join(sent.failed[:3])
        rows.append(
            _failure(
                f"{missing:,} of {sent.count:,} signals sent never reached the actuator"
                + (f" ({detail})" if detail else ""),
                float(missing),
            )
        )
    return rows


if __name__ == "__main__":
    for result in run(quick=False):
        print(f"{result['name']}: {result['figure']} ({result['peer']}, {result['ratio']})")
