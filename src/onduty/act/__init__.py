"""Actuators run allowed actions; the executor wraps them with the log's guarantees."""

from onduty.act.base import Actuator, ActuatorRegistry, Outcome
from onduty.act.executor import Executor

__all__ = ["Actuator", "ActuatorRegistry", "Executor", "Outcome"]
