"""Gathering the facts of a verdict from the core's state: where the proposal lands, what is
already in flight or unhealthy, and how much of the fleet is alerting."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from onduty.config import Autonomy, Service
from onduty.govern.breaker import breaker_key
from onduty.govern.context import Facts
from onduty.govern.variables import COUNTS
from onduty.state import IN_FLIGHT, State
from onduty.think.proposal import Proposal


def history_counts(
    state: State, *, target: str, service: str | None, now: datetime
) -> dict[str, int]:
    hour, day = now - timedelta(hours=1), now - timedelta(days=1)
    counts = dict.fromkeys(COUNTS, 0)
    for record in state.history:
        if record.at <= day:
            continue
        if record.target == target:
            counts["target_actions_24h"] += 1
            if record.at > hour:
                counts["target_actions_1h"] += 1
        if record.service == service and service is not None and record.at > hour:
            counts["service_actions_1h"] += 1
    counts["open_incidents"] = len(state.incidents)
    return counts


def gather(
    state: State,
    *,
    proposal: Proposal,
    incident_service: str | None,
    services: Mapping[str, Service],
    owner: Mapping[str, str],
    autonomy: Autonomy,
    approved_by: str | None,
    variables: Any,
    now: datetime,
    fleet: bool = True,
    in_flight_needed: bool = True,
    members: Mapping[str, frozenset[str]] | None = None,
    total_instances: int | None = None,
) -> Facts:
    """`fleet=False` skips what only fleet-wide rules (blast radius, outage brake) need."""
    target_service = owner.get(proposal.target)
    service = services.get(incident_service or "") or services.get(target_service or "")
    in_flight: dict[str, int] = {}
    in_flight_targets: set[str] = set()
    breaker = state.breakers.get(breaker_key(proposal.action, proposal.target))
    # Only concurrency and blast rules, or a breaker that may be half-open, need what is in
    # flight; everything else skips the scan over all actions.
    for action in state.actions.values() if in_flight_needed or breaker else ():
        if action.status in IN_FLIGHT and action.service is not None:
            in_flight[action.service] = in_flight.get(action.service, 0) + 1
            if action.service == incident_service:
                in_flight_targets.add(action.target)
    instances = tuple(service.instances) if service else ()
    name = service.name if service else ""
    instance_set = members[name] if members and name in members else frozenset(instances)
    alerting_services: set[str] = set()
    alerting_instances: set[str] = set()
    firing: dict[str, set[str]] = {}
    for signal in state.signals.values() if fleet else ():
        if signal.status != "firing":
            continue
        instance = signal.labels.get("instance", "")
        where = signal.labels.get("service") or owner.get(instance)
        if where:
            alerting_services.add(where)
        if instance in owner and instance not in services:
            alerting_instances.add(instance)
            if instance in instance_set:
                firing.setdefault(instance, set()).add(signal.labels.get("alertname", ""))
    return Facts(
        proposal=proposal,
        now=now,
        incident_service=incident_service,
        target_service=target_service,
        target_known=target_service is not None,
        autonomy=autonomy,
        approved_by=approved_by,
        history=state.history,  # read only; no copy per verdict
        in_flight_by_service=in_flight,
        service_size=len(instances),
        service_instances=instances,
        in_flight_targets=frozenset(in_flight_targets),
        firing_by_instance={i: frozenset(names) for i, names in firing.items()},
        alerting_services=len(alerting_services & set(services)),
        total_services=len(services),
        alerting_instances=len(alerting_instances),
        total_instances=total_instances
        if total_instances is not None
        else sum(len(s.instances) for s in services.values()),
        breaker=breaker,
        kill_switches=tuple(state.kill_switches.values()),
        safe_modes=tuple(state.safe_modes.values()),
        variables=variables,
    )
