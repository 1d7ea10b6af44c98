"""Agents that propose actions for an incident, and the arbiter that picks among them."""

from onduty.think.arbiter import arbitrate
from onduty.think.proposal import Proposal
from onduty.think.runbooks import RunbookAgent

__all__ = ["Proposal", "RunbookAgent", "arbitrate"]
