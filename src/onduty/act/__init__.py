"""Actuators run allowed actions; the executor wraps them with the log's guarantees."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from onduty.act.base import Actuator, ActuatorRegistry, Outcome

if TYPE_CHECKING:
    from onduty.act.executor import Executor

# The executor (and what it runs) is imported on first use, so that importing the actuators'
# configuration models (`onduty.act.specs`) loads no HTTP client.
_LAZY = {"Executor": "onduty.act.executor"}

__all__ = ["Actuator", "ActuatorRegistry", "Executor", "Outcome"]


def __getattr__(name: str) -> Any:
    """The executor, imported when first asked for."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
