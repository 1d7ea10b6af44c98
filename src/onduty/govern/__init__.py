"""Guardrails: every proposal gets a verdict (allow, deny, require approval) with its reasons."""

from onduty.govern.context import Facts
from onduty.govern.policy import Policy

__all__ = ["Facts", "Policy"]
