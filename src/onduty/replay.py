"""Replay: re-run the core over a log and compare its decisions with the recorded ones.

Without a new configuration this proves determinism: every input, handled again by a fresh
manager, must produce exactly the decisions that follow it in the log. With a new configuration
it is a backtest: the manager runs the candidate policy over real history and every input whose
decisions differ is reported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from onduty.config import Config
from onduty.events import Event, Origin
from onduty.manager import Manager


@dataclass(frozen=True)
class Difference:
    seq: int
    input_type: str
    input_id: str
    recorded: tuple[str, ...]
    replayed: tuple[str, ...]


@dataclass
class ReplayReport:
    inputs: int = 0
    decisions: int = 0
    differences: list[Difference] = field(default_factory=list)
    manager: Manager | None = None
    advice_reused: int = 0
    """Recorded answers of the advisor judged again (never asked of a model)."""
    advice_unanswered: list[str] = field(default_factory=list)
    """Consultations the replay decided that the log holds no answer to (a backtest whose
    policy consults where the recorded one did not): no model is asked, so these incidents go
    on without advice here."""

    @property
    def same(self) -> bool:
        return not self.differences


def _comparable(event: Event, backtest: bool) -> dict[str, Any]:
    data = event.data
    if backtest and "policy_version" in data:
        # A candidate policy has its own version; what matters is whether decisions change.
        data = {key: value for key, value in data.items() if key != "policy_version"}
    return {
        "id": event.id,
        "type": event.type,
        "ts": event.ts,
        "stream": event.stream,
        "causation_id": event.causation_id,
        "correlation_id": event.correlation_id,
        "actor": event.actor,
        "data": data,
    }


def describe(event: Event) -> str:
    """One line a human can compare: the decision's type and its key facts."""
    data = event.data
    if "verdict" in data:
        detail = f"{data['verdict']} ({data.get('reason', '')})"
    elif "action" in data and "target" in data:
        detail = f"{data['action']} {data['target']}"
        if data.get("agent") not in (None, "runbook"):  # who proposed it, when not the runbooks
            detail += f" (by the {data['agent']} agent)"
    else:
        keys = ("reason", "change", "title", "status")
        detail = str(next((data[key] for key in keys if data.get(key)), ""))
    return f"{event.type} {detail}".strip()


def _with_decisions(events: Iterable[Event]) -> Iterator[tuple[Event, list[Event]]]:
    """Group the log into (input, the decisions recorded right after it)."""
    current: Event | None = None
    decisions: list[Event] = []
    for event in events:
        if event.origin is Origin.INPUT:
            if current is not None:
                yield current, decisions
            current, decisions = event, []
        elif current is None:
            raise ValueError(f"seq {event.seq}: decision {event.type} has no input before it")
        else:
            decisions.append(event)
    if current is not None:
        yield current, decisions


def replay(
    events: Iterable[Event],
    *,
    config: Config | None = None,
    progress: Callable[[int], None] | None = None,
) -> ReplayReport:
    manager = Manager(config_override=config)
    report = ReplayReport(manager=manager)
    asked: list[str] = []
    answered: set[str] = set()
    for count, (event, recorded) in enumerate(_with_decisions(events), start=1):
        if event.type in ("AdviceReceived", "AdviceFailed"):
            answered.add(str(event.data.get("request_id")))
            report.advice_reused += event.type == "AdviceReceived"
        decision = manager.handle(event)
        asked.extend(e.data["request_id"] for e in decision.events if e.type == "AdviceRequested")
        report.inputs += 1
        report.decisions += len(recorded)
        backtest = config is not None
        replayed = [_comparable(e, backtest) for e in decision.events]
        if replayed != [_comparable(e, backtest) for e in recorded]:
            report.differences.append(
                Difference(
                    seq=event.seq,
                    input_type=event.type,
                    input_id=event.id,
                    recorded=tuple(describe(e) for e in recorded),
                    replayed=tuple(describe(e) for e in decision.events),
                )
            )
        if progress is not None and count % 5000 == 0:
            progress(count)
    report.advice_unanswered = [request for request in asked if request not in answered]
    return report
