"""The arbiter: at most one in-flight action per target; higher priority first."""

from __future__ import annotations

from collections.abc import Iterable

from onduty.think.proposal import Proposal


def arbitrate(
    proposals: Iterable[Proposal], busy_targets: frozenset[str]
) -> tuple[Proposal | None, list[tuple[Proposal, str]]]:
    """Pick the proposal to govern; return it and the losers with the reason each lost."""
    ordered = sorted(proposals, key=lambda proposal: -proposal.priority)
    winner: Proposal | None = None
    losers: list[tuple[Proposal, str]] = []
    for proposal in ordered:
        if proposal.target in busy_targets:
            losers.append((proposal, f"{proposal.target} already has an action in flight"))
        elif winner is not None:
            losers.append((proposal, f"lower priority than runbook {winner.runbook}"))
        else:
            winner = proposal
    return winner, losers
