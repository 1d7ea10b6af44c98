"""The simulated fleet onduty watches in `onduty demo` and `onduty sim`: seeded, in virtual
time, with faults that really change it and Prometheus-style alerts about them."""

from onduty.sim.alerts import DEFAULT_RULES, Alert, AlertEvaluator, Rule, fingerprint
from onduty.sim.faults import (
    FAULT_KINDS,
    BadDeploy,
    DependencyLatency,
    Fault,
    FaultRecord,
    Flapping,
    InstanceCrash,
    MemoryLeak,
)
from onduty.sim.fleet import BOOT_DELAY, Fleet, FleetError, Instance, ServiceState
from onduty.sim.scenario import (
    DEFAULT_START,
    ControlPeriod,
    Expect,
    FaultSpec,
    OnCall,
    Scenario,
    builtin_scenarios,
    load_builtin_config,
    load_scenario,
    parse_scenario,
    read_builtin,
    scenario_problems,
)
from onduty.sim.world import ACTIONS, ActionResult, AppliedAction, AppliedRecord, World

__all__ = [
    "ACTIONS",
    "BOOT_DELAY",
    "DEFAULT_RULES",
    "DEFAULT_START",
    "FAULT_KINDS",
    "ActionResult",
    "Alert",
    "AlertEvaluator",
    "AppliedAction",
    "AppliedRecord",
    "BadDeploy",
    "ControlPeriod",
    "DependencyLatency",
    "Expect",
    "Fault",
    "FaultRecord",
    "FaultSpec",
    "Flapping",
    "Fleet",
    "FleetError",
    "Instance",
    "InstanceCrash",
    "MemoryLeak",
    "OnCall",
    "Rule",
    "Scenario",
    "ServiceState",
    "World",
    "builtin_scenarios",
    "fingerprint",
    "load_builtin_config",
    "load_scenario",
    "parse_scenario",
    "read_builtin",
    "scenario_problems",
]
