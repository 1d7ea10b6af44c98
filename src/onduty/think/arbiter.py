"""The arbiter: when several runbooks (or, later, agents) propose actions for one incident, one
wins. At most one action is in flight per target; a runbook may declare others it excludes (it
must not run while they act on the same target, and vice versa); higher priority wins, then the
configuration's order. Every loser comes back with the reason it lost."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from onduty.think.proposal import Proposal


def arbitrate(
    proposals: Iterable[Proposal],
    in_flight: Mapping[str, str],
    excludes: Mapping[str, frozenset[str]] | None = None,
) -> tuple[Proposal | None, list[tuple[Proposal, str]]]:
    """Pick the proposal to govern. `in_flight` maps each target acted on to the runbook acting;
    `excludes` maps a runbook to those it may not run alongside (in both directions)."""
    exclusions = excludes or {}

    def excluded(a: str, b: str) -> bool:
        return b in exclusions.get(a, frozenset()) or a in exclusions.get(b, frozenset())

    ordered = sorted(proposals, key=lambda proposal: -proposal.priority)  # stable: config order
    winner: Proposal | None = None
    losers: list[tuple[Proposal, str]] = []
    for proposal in ordered:
        acting = in_flight.get(proposal.target)
        if acting is not None and excluded(proposal.runbook, acting):
            reason = f"runbook {acting} is acting on {proposal.target} and excludes it"
        elif acting is not None:
            reason = f"{proposal.target} already has an action in flight (runbook {acting})"
        elif winner is not None and excluded(proposal.runbook, winner.runbook):
            reason = f"excluded by runbook {winner.runbook}, which won"
        elif winner is not None and winner.agent != proposal.agent:
            reason = f"the {winner.agent} agent chose {winner.action} on {winner.target} first"
        elif winner is not None:
            reason = f"lower priority than runbook {winner.runbook}"
        else:
            winner = proposal
            continue
        losers.append((proposal, reason))
    return winner, losers
