"""What a report holds, whatever it is rendered to (`html`, `markdown`): a title, facts about
the run, a scorecard (metrics, expectations, faults, judged actions), Monte Carlo
distributions, and the incidents' timelines.

`run_report` builds one from a simulation run: a `RunResult` (`onduty.sim.driver`) or plain
data of the same names, optionally with a Monte Carlo result (`charts.lab_of`).
`incident_report` builds one from timelines alone: a post-incident report."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from onduty.events import Event
from onduty.report.charts import Lab, Learning, lab_of, learning_of, shown
from onduty.report.timeline import IncidentTimeline, incident_timelines, value_of


@dataclass(frozen=True)
class Check:
    """An expectation and whether it held."""

    name: str
    bound: str
    actual: str
    ok: bool


@dataclass
class Report:
    title: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    metrics: list[tuple[str, str]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    faults: list[dict[str, str]] = field(default_factory=list)
    """One row per fault: id, kind, target, injected, detected, handled, recovered, cause,
    right fix."""
    actions: list[dict[str, str]] = field(default_factory=list)
    """One row per action that reached the simulated fleet: at, action, target, verdict,
    reason."""
    lab: Lab | None = None
    learning: Learning | None = None
    """Learning curves, when the run compared configs or its log has the learning agent's
    proposals."""
    incidents: list[IncidentTimeline] = field(default_factory=list)
    kind: str = "run"
    """run (a simulation) or incident (a post-incident report)."""

    @property
    def passed(self) -> bool | None:
        return all(check.ok for check in self.checks) if self.checks else None


def _when(value: Any) -> str:
    if value in (None, ""):
        return "-"
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.astimezone(UTC).strftime("%H:%M:%S")


def _card(scorecard: Any) -> dict[str, Any]:
    """A scorecard as plain data: its `to_dict()`, a mapping as it is, or the little an older
    scorecard object tells."""
    if scorecard is None:
        return {}
    if isinstance(scorecard, Mapping):
        return dict(scorecard)
    if hasattr(scorecard, "to_dict"):
        return dict(scorecard.to_dict())
    faults = [
        {"id": item.record.id, "incidents": list(item.incidents),
         "detected_at": item.detected_at, "escalated": item.escalated}
        for item in getattr(scorecard, "faults", ())
    ]  # fmt: skip
    expectations = [vars(item) for item in getattr(scorecard, "expectations", ())]
    return {"faults": faults, "expectations": expectations}


def _checks(card: Mapping[str, Any]) -> list[Check]:
    checks = []
    for item in card.get("expectations") or ():
        name = str(value_of(item, "name", ""))
        actual = value_of(item, "actual")
        metric = name.split(maxsplit=1)[0] if name else ""
        said = shown(metric, actual) if isinstance(actual, int | float) else str(actual)
        checks.append(
            Check(name, str(value_of(item, "bound", "")), said, bool(value_of(item, "ok")))
        )
    return checks


def _metrics(card: Mapping[str, Any]) -> list[tuple[str, str]]:
    metrics = card.get("metrics")
    if not isinstance(metrics, Mapping):
        return []
    return [
        (str(name), shown(str(name), value) if isinstance(value, int | float) else str(value))
        for name, value in metrics.items()
        if value is None or isinstance(value, int | float | str)
    ]


def _fault_rows(records: Sequence[Any], card: Mapping[str, Any]) -> list[dict[str, str]]:
    scored = {str(value_of(item, "id")): item for item in card.get("faults") or ()}
    rows = []
    for record in records:
        score = scored.get(str(value_of(record, "id")), {})
        handled = [
            word
            for word, flag in (
                ("remediated", value_of(score, "remediated")),
                ("escalated", value_of(score, "escalated")),
                ("fixed by a person", value_of(score, "fixed_by_human")),
            )
            if flag
        ]
        cleared = value_of(record, "cleared_by")
        if not handled and cleared == "self":
            handled = ["ended by itself"]
        rows.append(
            {
                "id": str(value_of(record, "id", "")),
                "kind": str(value_of(record, "kind", "")),
                "target": str(value_of(record, "target", "")),
                "injected": _when(value_of(record, "injected_at")),
                "detected": _when(value_of(score, "detected_at")),
                "handled": ", ".join(handled) or "-",
                "recovered": _when(value_of(record, "cleared_at")),
                "cause": str(value_of(record, "cause", "") or ""),
                "right fix": str(value_of(record, "right_fix") or "-"),
            }
        )
    return rows


def _action_rows(actions: Sequence[Any]) -> list[dict[str, str]]:
    return [
        {
            "at": _when(value_of(item, "at")),
            "action": str(value_of(item, "action", "")),
            "target": str(value_of(item, "target", "")),
            "by": "a person"
            if str(value_of(item, "command_id", "")).startswith("human-")
            else "onduty",
            "verdict": str(value_of(item, "verdict", "") or ""),
            "reason": str(value_of(item, "reason", "") or ""),
        }
        for item in actions
    ]


IN_MEMORY = "memory"
"""The store of a run that kept its log in memory only (`onduty.sim.driver.IN_MEMORY`)."""


def _read_store(store: str) -> list[Event]:
    """Every event of a run's store, which must be an event log already (never created)."""
    from onduty.log import open_log
    from onduty.report.source import check_store

    check_store(store)
    log = open_log(store)
    try:
        return list(log.read())
    finally:
        log.close()


def run_report(
    result: Any = None,
    lab: Any = None,
    *,
    events: Iterable[Event] | None = None,
    faults: Sequence[Any] | None = None,
    actions: Sequence[Any] | None = None,
    scorecard: Any = None,
    title: str | None = None,
    learning: Any = None,
) -> Report:
    """A simulation run's report. `result`: a `RunResult` or anything with the same names
    (attributes or mapping keys): `scenario` (a name or an object with `name` and `seed`),
    `scorecard` (with `to_dict()`, or its plain data), `world` (its `faults` and `actions`) or
    `faults` and `actions` directly, and `store` (read for the events when `events` is not
    given; a run that kept its log in memory must pass `events`, e.g. collected with
    `run_scenario(..., on_event=events.append)`). The keyword arguments override what `result`
    says. `lab`: a Monte Carlo result (`charts.lab_of`), drawn as distributions. Either may be
    None (not both)."""
    if result is None and lab is None:
        raise ValueError("a report needs a run, a Monte Carlo result, or both")
    world = value_of(result, "world") if result is not None else None
    if faults is None:
        faults = list(value_of(world, "faults", None) or value_of(result, "faults", None) or ())
    if actions is None:
        actions = list(value_of(world, "actions", None) or value_of(result, "actions", None) or ())
    card = _card(scorecard if scorecard is not None else value_of(result, "scorecard"))
    unread = ""
    if events is None:
        given = value_of(result, "events")
        store = value_of(result, "store")
        if given is not None:
            events = given
        elif store and store != IN_MEMORY:
            events = _read_store(str(store))
        else:
            events = []
            if store == IN_MEMORY:
                unread = "not shown: the run kept its log in memory (pass its events)"
    fault_incidents = {
        str(value_of(item, "id")): [str(i) for i in value_of(item, "incidents", None) or ()]
        for item in card.get("faults") or ()
    }
    incidents = incident_timelines(
        events, faults, actions=actions, fault_incidents=fault_incidents or None
    )
    scenario = value_of(result, "scenario")
    name = scenario if isinstance(scenario, str) else value_of(scenario, "name")
    seed = value_of(result, "seed", None)
    if seed is None:
        seed = value_of(scenario, "seed")
    facts = [
        (label, str(value))
        for label, value in (
            ("scenario", name),
            ("seed", seed),
            ("store", value_of(result, "store")),
        )
        if value not in (None, "")
    ]
    report = Report(
        title=title or (f"Simulation report: {name}" if name else "Simulation report"),
        facts=facts,
        metrics=_metrics(card),
        checks=_checks(card),
        faults=_fault_rows(list(faults), card),
        actions=_action_rows(list(actions)),
        lab=lab_of(lab),
        learning=learning_of(learning),
        incidents=incidents,
    )
    if unread:
        report.facts.append(("incidents", unread))
    if report.lab is not None:
        said = {label for label, _ in report.facts}
        report.facts += [(label, value) for label, value in report.lab.facts if label not in said]
    return report


def incident_report(
    incidents: Sequence[IncidentTimeline], *, store: str | None = None, title: str | None = None
) -> Report:
    """A post-incident report of one incident (or a few)."""
    first = incidents[0] if incidents else None
    default = f"Post-incident report: {first.title}" if first else "Post-incident report"
    facts = [("store", store)] if store else []
    if first is not None:
        facts.insert(0, ("incident", first.incident_id))
    return Report(title=title or default, facts=facts, incidents=list(incidents), kind="incident")
