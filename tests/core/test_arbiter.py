"""The arbiter: one winner per incident, and every loser with the reason it lost."""

from __future__ import annotations

from onduty.think.arbiter import arbitrate
from onduty.think.proposal import Proposal


def proposal(runbook: str, target: str, priority: int = 0) -> Proposal:
    return Proposal(
        agent="runbooks",
        runbook=runbook,
        step=0,
        action=f"{runbook}.do",
        target=target,
        rationale=f"runbook {runbook} matched",
        priority=priority,
    )


def reasons(losers: list[tuple[Proposal, str]]) -> list[tuple[str, str, str]]:
    return [(p.runbook, p.target, reason) for p, reason in losers]


def test_a_runbook_in_flight_that_excludes_a_proposal_is_named_as_the_reason() -> None:
    winner, losers = arbitrate(
        [proposal("restart", "web-1"), proposal("scale", "web-1"), proposal("restart", "web-2")],
        in_flight={"web-1": "drain"},
        excludes={"drain": frozenset({"restart"})},
    )
    assert winner == proposal("restart", "web-2")
    assert reasons(losers) == [
        ("restart", "web-1", "runbook drain is acting on web-1 and excludes it"),
        ("scale", "web-1", "web-1 already has an action in flight (runbook drain)"),
    ]


def test_exclusion_holds_in_both_directions_while_in_flight() -> None:
    _, losers = arbitrate(
        [proposal("drain", "web-1")],
        in_flight={"web-1": "restart"},
        excludes={"drain": frozenset({"restart"})},
    )
    assert reasons(losers) == [
        ("drain", "web-1", "runbook restart is acting on web-1 and excludes it")
    ]


def test_losers_to_the_winner_say_whether_excluded_or_outranked() -> None:
    winner, losers = arbitrate(
        [
            proposal("restart", "web-1"),
            proposal("drain", "web-1", priority=10),
            proposal("page", "web-1"),
        ],
        in_flight={},
        excludes={"drain": frozenset({"restart"})},
    )
    assert winner == proposal("drain", "web-1", priority=10)
    assert reasons(losers) == [
        ("restart", "web-1", "excluded by runbook drain, which won"),
        ("page", "web-1", "lower priority than runbook drain"),
    ]
