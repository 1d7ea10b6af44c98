"""Every guardrail kind at its boundaries, with facts built by hand (independently of the
table-test runner): the Nth action allowed and the N+1th denied, a window's expiry, a freeze's
inclusive start and exclusive end, and its time zone across daylight-saving changes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from onduty.config import Autonomy, Config, parse_config
from onduty.events import PolicyEvaluated
from onduty.expressions import prepare
from onduty.govern import Facts, Policy
from onduty.state import ActionRecord
from onduty.think.proposal import Proposal

NOON = datetime(2026, 1, 7, 12, 0, tzinfo=UTC)  # a Wednesday
FLEET = {
    "web": [f"web-{i}" for i in range(1, 5)],
    "api": [f"api-{i}" for i in range(1, 5)],
    "db": ["db-1", "db-2"],
    "batch": ["batch-1", "batch-2"],
}
OWNER = {instance: service for service, items in FLEET.items() for instance in items}


def policy(guardrail: dict[str, Any]) -> Config:
    return parse_config(
        {
            "services": [
                {"name": name, "autonomy": "act", "instances": items}
                for name, items in FLEET.items()
            ],
            "runbooks": [
                {
                    "name": "restart",
                    "when": "true",
                    "do": [{"action": "process.restart", "target": "{{ signal.labels.instance }}"}],
                }
            ],
            "policy": {"guardrails": [{"name": "limit", **guardrail}]},
        }
    )


def facts(
    *,
    target: str = "web-1",
    action: str = "process.restart",
    now: datetime = NOON,
    history: tuple[tuple[str, str, timedelta], ...] = (),
    in_flight: tuple[str, ...] = (),
    down: tuple[str, ...] = (),
    alerting_services: int = 1,
    alerting_instances: int = 1,
) -> Facts:
    service = OWNER.get(target, target)
    return Facts(
        proposal=Proposal("runbook", "restart", 0, action, target, "test"),
        now=now,
        incident_service=service,
        target_service=service,
        target_known=True,
        autonomy=Autonomy.ACT,
        approved_by=None,
        history=tuple(
            ActionRecord(now - ago, past, where, OWNER.get(where, where), "restart")
            for past, where, ago in sorted(history, key=lambda item: -item[2])
        ),
        in_flight_by_service={
            s: n for s in FLEET if (n := sum(1 for t in in_flight if OWNER[t] == s))
        },
        service_size=len(FLEET[service]),
        service_instances=tuple(FLEET[service]),
        in_flight_targets=frozenset(t for t in in_flight if OWNER[t] == service),
        firing_by_instance={i: frozenset({"InstanceDown"}) for i in down},
        alerting_services=alerting_services,
        total_services=len(FLEET),
        alerting_instances=alerting_instances,
        total_instances=len(OWNER),
    )


def verdict(config: Config, situation: Facts) -> PolicyEvaluated:
    return Policy(config).evaluate(situation, command_id="cmd", incident_id="inc")


def check(config: Config, situation: Facts, expected: str) -> None:
    result = verdict(config, situation)
    assert result.verdict == expected, result.reason
    opinions = {outcome.rule for outcome in result.rules}
    assert ("limit" in opinions) == (expected == "deny"), result.rules


def restarts(*agos: timedelta, target: str = "web-1") -> tuple[tuple[str, str, timedelta], ...]:
    return tuple(("process.restart", target, ago) for ago in agos)


M = timedelta(minutes=1)
S = timedelta(seconds=1)
H = timedelta(hours=1)

# ---------------------------------------------------------------------------- rate


RATE = policy({"rate": {"action": "process.restart", "max": 3, "per": "1h"}})


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        pytest.param((), "allow", id="first"),
        pytest.param(restarts(50 * M, 20 * M), "allow", id="third (N) allowed"),
        pytest.param(restarts(50 * M, 30 * M, 20 * M), "deny", id="fourth (N+1) denied"),
        pytest.param(restarts(H, 30 * M, 20 * M), "allow", id="exactly per ago has expired"),
        pytest.param(restarts(H - S, 30 * M, 20 * M), "deny", id="per minus 1s ago still counts"),
        pytest.param(restarts(5 * M, 4 * M, 3 * M, target="web-2"), "allow", id="other target"),
        pytest.param(
            (*restarts(5 * M, 4 * M), ("deploy.rollback", "web-1", 3 * M)),
            "allow",
            id="other action",
        ),
    ],
)
def test_rate(history: tuple[tuple[str, str, timedelta], ...], expected: str) -> None:
    check(RATE, facts(history=history), expected)


@pytest.mark.parametrize(("count", "expected"), [(1, "allow"), (2, "deny")])
def test_rate_keyed_by_service(count: int, expected: str) -> None:
    config = policy({"rate": {"max": 2, "per": "10m", "key": "service"}})
    history = tuple(("process.restart", f"web-{i + 2}", M) for i in range(count))
    check(config, facts(history=history), expected)


# ---------------------------------------------------------------------------- concurrent


@pytest.mark.parametrize(
    ("limit", "in_flight", "expected"),
    [
        ({"max": 2}, ("web-2",), "allow"),
        ({"max": 2}, ("web-2", "web-3"), "deny"),
        ({"max": 2}, ("api-1", "api-2", "api-3"), "allow"),
        ({"max_fraction": 0.5}, ("web-2",), "allow"),  # floor(0.5 * 4) = 2
        ({"max_fraction": 0.5}, ("web-2", "web-3"), "deny"),
        ({"max_fraction": 0.74}, ("web-2",), "allow"),  # floor(2.96) = 2
        ({"max_fraction": 0.74}, ("web-2", "web-3"), "deny"),
        ({"max_fraction": 0.75}, ("web-2", "web-3"), "allow"),  # floor(3.0) = 3
        ({"max_fraction": 0.75}, ("web-2", "web-3", "web-4"), "deny"),
    ],
)
def test_concurrent(limit: dict[str, Any], in_flight: tuple[str, ...], expected: str) -> None:
    check(policy({"concurrent": limit}), facts(in_flight=in_flight), expected)


# ---------------------------------------------------------------------------- blast


BLAST = policy({"blast": {"max": 2, "window": "10m"}})


@pytest.mark.parametrize(
    ("situation", "expected"),
    [
        pytest.param(facts(history=restarts(5 * M, target="web-2")), "allow", id="2nd of 2"),
        pytest.param(
            facts(history=(*restarts(5 * M, target="web-2"), *restarts(M, target="web-3"))),
            "deny",
            id="3rd denied",
        ),
        pytest.param(
            facts(history=(*restarts(10 * M, target="web-2"), *restarts(M, target="web-3"))),
            "allow",
            id="exactly the window ago has expired",
        ),
        pytest.param(
            facts(history=(*restarts(10 * M - S, target="web-2"), *restarts(M, target="web-3"))),
            "deny",
            id="window minus 1s still counts",
        ),
        pytest.param(facts(in_flight=("web-2", "web-3")), "deny", id="in flight counts"),
        pytest.param(facts(down=("web-2", "web-3")), "deny", id="down counts"),
        pytest.param(
            facts(down=("web-1", "web-2", "web-3")), "allow", id="target already down adds nothing"
        ),
        pytest.param(
            facts(history=restarts(M, target="web-2"), down=("web-2",)),
            "allow",
            id="down and acted on counts once",
        ),
        pytest.param(
            facts(target="web", action="deploy.rollback"), "deny", id="whole service: 4 of 4"
        ),
    ],
)
def test_blast(situation: Facts, expected: str) -> None:
    check(BLAST, situation, expected)


# ---------------------------------------------------------------------------- outage


@pytest.mark.parametrize(
    ("brake", "alerting", "expected"),
    [
        ({"max_fraction": 0.5}, {"alerting_services": 2}, "allow"),  # 2 of 4: not more than half
        ({"max_fraction": 0.5}, {"alerting_services": 3}, "deny"),
        ({"max_fraction": 0.25, "of": "instances"}, {"alerting_instances": 3}, "allow"),
        ({"max_fraction": 0.25, "of": "instances"}, {"alerting_instances": 4}, "deny"),  # 4/12
    ],
)
def test_outage(brake: dict[str, Any], alerting: dict[str, int], expected: str) -> None:
    check(policy({"outage": brake}), facts(**alerting), expected)


# ---------------------------------------------------------------------------- freeze

WEEKEND = policy({"freeze": {"cron": "0 18 * * 5", "duration": "62h", "timezone": "Europe/Berlin"}})
RANGE = policy(
    {
        "freeze": {
            "ranges": [{"from": "2026-12-23T00:00:00+01:00", "to": "2027-01-04T09:00:00+01:00"}]
        }
    }
)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("config", "now", "expected"),
    [
        # winter: Berlin is UTC+1; Friday 18:00 local is 17:00 UTC, Monday 08:00 is 07:00 UTC
        pytest.param(WEEKEND, "2026-01-09T16:59:59", "allow", id="winter: before the start"),
        pytest.param(WEEKEND, "2026-01-09T17:00:00", "deny", id="winter: start inclusive"),
        pytest.param(WEEKEND, "2026-01-12T06:59:59", "deny", id="winter: before the end"),
        pytest.param(WEEKEND, "2026-01-12T07:00:00", "allow", id="winter: end exclusive"),
        # summer: UTC+2; the same local times are an hour earlier in UTC
        pytest.param(WEEKEND, "2026-07-10T15:59:59", "allow", id="summer: before the start"),
        pytest.param(WEEKEND, "2026-07-10T16:00:00", "deny", id="summer: start inclusive"),
        pytest.param(WEEKEND, "2026-07-13T05:59:59", "deny", id="summer: before the end"),
        pytest.param(WEEKEND, "2026-07-13T06:00:00", "allow", id="summer: end exclusive"),
        # the same UTC moment: 17:30 in Berlin in winter, 18:30 in summer
        pytest.param(WEEKEND, "2026-01-09T16:30:00", "allow", id="16:30 UTC in winter"),
        pytest.param(WEEKEND, "2026-07-10T16:30:00", "deny", id="16:30 UTC in summer"),
        # clocks go forward on Sunday 2026-03-29: starts in CET, ends in CEST (61 hours)
        pytest.param(WEEKEND, "2026-03-27T16:59:59", "allow", id="spring: before the start"),
        pytest.param(WEEKEND, "2026-03-27T17:00:00", "deny", id="spring: start (CET)"),
        pytest.param(WEEKEND, "2026-03-30T05:59:59", "deny", id="spring: before the end (CEST)"),
        pytest.param(WEEKEND, "2026-03-30T06:00:00", "allow", id="spring: end (CEST)"),
        # clocks go back on Sunday 2026-10-25: starts in CEST, ends in CET (63 hours)
        pytest.param(WEEKEND, "2026-10-23T15:59:59", "allow", id="autumn: before the start"),
        pytest.param(WEEKEND, "2026-10-23T16:00:00", "deny", id="autumn: start (CEST)"),
        pytest.param(WEEKEND, "2026-10-25T01:30:00", "deny", id="autumn: the repeated hour"),
        pytest.param(WEEKEND, "2026-10-26T06:59:59", "deny", id="autumn: before the end (CET)"),
        pytest.param(WEEKEND, "2026-10-26T07:00:00", "allow", id="autumn: end (CET)"),
        pytest.param(WEEKEND, "2026-01-07T12:00:00", "allow", id="midweek"),
        # a fixed range: 2026-12-23 00:00 to 2027-01-04 09:00 at +01:00
        pytest.param(RANGE, "2026-12-22T22:59:59", "allow", id="range: before the start"),
        pytest.param(RANGE, "2026-12-22T23:00:00", "deny", id="range: start inclusive"),
        pytest.param(RANGE, "2027-01-04T07:59:59", "deny", id="range: before the end"),
        pytest.param(RANGE, "2027-01-04T08:00:00", "allow", id="range: end exclusive"),
    ],
)
def test_freeze(config: Config, now: str, expected: str) -> None:
    check(config, facts(now=utc(now)), expected)


def test_a_freeze_reason_reads_in_its_own_time_zone() -> None:
    result = verdict(WEEKEND, facts(now=utc("2026-03-27T17:00:00")))
    assert result.reason == (
        "limit: changes are frozen from 2026-03-27 18:00 to 2026-03-30 08:00 (Europe/Berlin)"
    )


# ---------------------------------------------------------------------------- scoped kinds


@pytest.mark.parametrize(("target", "expected"), [("web-1", "deny"), ("api-1", "allow")])
def test_a_kind_with_when_applies_only_where_it_holds(target: str, expected: str) -> None:
    config = policy({"concurrent": {"max": 0}, "when": 'service.name == "web"'})
    service = OWNER[target]
    variables = {
        "service": {"name": service},
        "signal": {"labels": {}},
        "action": {"name": "process.restart"},
    }
    situation = replace(facts(target=target), variables=prepare(variables))
    check(config, situation, expected)
