"""A condition sees the same thing in a context cut down to what it can observe."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from onduty.expressions import Condition, prepare
from onduty.think.observed import project, projection

CONTEXT = {
    "signal": {
        "labels": {"alertname": "InstanceDown", "instance": "web-1", "team": "a"},
        "annotations": {"summary": "web-1 is down"},
        "status": "firing",
        "source": "alertmanager",
        "fingerprint": "f1",
    },
    "incident": {"id": "i1", "title": "t", "service": "web", "signals": 2, "flapping": False},
    "service": {"name": "web", "tier": "", "region": "", "autonomy": "act", "instances": 3},
    "now": datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
}

CONDITIONS = [
    'signal.labels.alertname == "InstanceDown"',
    'signal.labels.missing == "x"',
    "has(signal.labels.team) && !has(signal.labels.nope)",
    '"team" in signal.labels',
    "size(signal.labels) == 3",
    'signal.labels.exists(k, k == "instance")',
    'signal["labels"].instance == "web-1"',
    "size(signal) == 5",
    'signal . labels . team == "a" && incident.signals > 1',
    'service.tier == "" && now > timestamp("2026-01-01T00:00:00Z")',
    '"signal.labels.x" != signal.status',
]


@pytest.mark.parametrize("source", CONDITIONS)
def test_a_condition_holds_alike_on_the_projected_context(source: str) -> None:
    condition = Condition.compile(source)
    observed = projection([source], condition.program.variables())
    assert condition.holds(prepare(project(CONTEXT, observed))) == condition.holds(prepare(CONTEXT))


def test_what_no_condition_selects_is_left_out() -> None:
    sources = CONDITIONS[:3]
    names = {name for s in sources for name in Condition.compile(s).program.variables()}
    assert project(CONTEXT, projection(sources, names)) == {
        "signal": {"labels": {"alertname": "InstanceDown", "team": "a"}}
    }


def test_a_whole_mention_keeps_the_value_whole() -> None:
    observed = projection(['signal.labels.team == "a"', '"x" in signal.labels'], ["signal"])
    assert project(CONTEXT, observed) == {"signal": {"labels": CONTEXT["signal"]["labels"]}}
