"""Golden decision logs: real logs recorded with an earlier version, replayed with today's code.

Each file in tests/fixtures/golden/ is a whole log (one envelope per line, with its hash). Its
inputs — signals, ticks, approvals, outcomes, everything the core did not decide — are fed to
a fresh manager; every decision it makes must equal the recorded one (type, id, time, stream,
causation, actor and data). The configuration is the one the log's PolicyActivated events
recorded. A change that is meant to alter decisions regenerates the files with `make golden`
(scripts/golden.py) and says why in its commit.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import pytest

from onduty.events import GENESIS_HASH, Event, Origin, canonical_body, chain_hash
from onduty.manager import Manager

GOLDEN = Path(__file__).resolve().parent / "fixtures" / "golden"
EXPECTED = {
    "demo.jsonl": "the full log of `onduty demo --quiet`",
    "recovery.jsonl": "two-person approval, failed verification with undo, crash mid-action",
    "alertmanager.jsonl": "a real Alertmanager delivering to `onduty serve`",
}


def load(path: Path) -> list[Event]:
    return [Event.model_validate_json(line) for line in path.read_text("utf-8").splitlines()]


def chain_problem(events: list[Event]) -> str | None:
    """Where the hash chain breaks, if it does: a hand-edited line does not hash to its hash."""
    previous = GENESIS_HASH
    for position, event in enumerate(events, start=1):
        if event.seq != position:
            return f"line {position}: seq is {event.seq}, expected {position}"
        if event.prev_hash != previous:
            return f"seq {event.seq}: prev_hash does not match the hash of seq {event.seq - 1}"
        if chain_hash(previous, canonical_body(event)) != event.hash:
            return f"seq {event.seq} ({event.type}): its content does not match its hash"
        previous = event.hash
    return None


def comparable(event: Event) -> dict[str, Any]:
    """What a decision is, without where the log placed it."""
    return {
        "type": event.type,
        "v": event.v,
        "id": event.id,
        "ts": event.ts.isoformat(),
        "stream": event.stream,
        "correlation_id": event.correlation_id,
        "causation_id": event.causation_id,
        "actor": event.actor,
        "data": event.data,
    }


def _pretty(event: Event | None) -> list[str]:
    if event is None:
        return ["(no decision)"]
    return json.dumps(comparable(event), indent=2, sort_keys=True, default=str).splitlines()


def first_difference(events: list[Event]) -> str | None:
    """Replay the inputs with today's core; describe the first decision that differs."""
    manager = Manager()
    index = 0
    while index < len(events):
        given = events[index]
        if given.origin is not Origin.INPUT:
            return f"seq {given.seq}: decision {given.type} has no input before it"
        index += 1
        recorded: list[Event] = []
        while index < len(events) and events[index].origin is Origin.DECISION:
            recorded.append(events[index])
            index += 1
        replayed = list(manager.handle(given).events)
        for position in range(max(len(recorded), len(replayed))):
            expected = recorded[position] if position < len(recorded) else None
            got = replayed[position] if position < len(replayed) else None
            if expected is not None and got is not None and comparable(expected) == comparable(got):
                continue
            seq = expected.seq if expected is not None else given.seq + len(recorded) + 1
            kind = expected.type if expected is not None else f"(none; today: {got and got.type})"
            diff = difflib.unified_diff(
                _pretty(expected), _pretty(got), "recorded", "today", lineterm="", n=2
            )
            return "\n".join(
                [
                    f"first difference at seq {seq}: {kind}, decided on input seq {given.seq} "
                    f"{given.type} (id {given.id})",
                    f"recorded decisions: {[e.type for e in recorded]}",
                    f"today's decisions:  {[e.type for e in replayed]}",
                    *diff,
                ]
            )
    return None


def test_every_golden_log_is_stored() -> None:
    stored = {path.name for path in GOLDEN.glob("*.jsonl")}
    assert stored == set(EXPECTED), f"golden logs expected: {EXPECTED}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_golden_log_decisions_are_unchanged(name: str) -> None:
    events = load(GOLDEN / name)
    assert events, f"{name} is empty"
    problem = chain_problem(events)
    if problem is not None:
        pytest.fail(f"{name}: the hash chain is broken: {problem}", pytrace=False)
    difference = first_difference(events)
    if difference is not None:
        pytest.fail(
            f"{name} ({EXPECTED[name]}): today's code decides differently.\n{difference}\n"
            "If the change is meant to alter decisions, run `make golden`, review the diff and "
            "say why in the commit.",
            pytrace=False,
        )


def test_a_golden_log_covers_approvals_undo_and_a_crash() -> None:
    kinds = [event.type for event in load(GOLDEN / "recovery.jsonl")]
    changes = [e.data.get("change") for e in load(GOLDEN / "recovery.jsonl")]
    assert "approval_partial" in changes and "ApprovalGranted" in kinds
    assert {"VerificationFailed", "UndoStarted", "UndoFinished"} <= set(kinds)
    assert "ActionOutcomeUnknown" in kinds


def test_a_changed_decision_is_reported_with_its_seq_type_and_diff() -> None:
    events = load(GOLDEN / "recovery.jsonl")
    position = next(i for i, e in enumerate(events) if e.type == "PolicyEvaluated")
    target = events[position]
    events[position] = target.model_copy(update={"data": {**target.data, "verdict": "deny"}})
    difference = first_difference(events)
    assert difference is not None
    assert difference.startswith(f"first difference at seq {target.seq}: PolicyEvaluated")
    assert '-    "verdict": "deny"' in difference
    assert '+    "verdict": "require_approval"' in difference


def test_a_hand_edited_golden_line_breaks_the_chain() -> None:
    events = load(GOLDEN / "demo.jsonl")
    target = events[10]
    events[10] = target.model_copy(update={"actor": "someone-else"})
    assert chain_problem(events) == (
        f"seq {target.seq} ({target.type}): its content does not match its hash"
    )
