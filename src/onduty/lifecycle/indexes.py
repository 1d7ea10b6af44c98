"""Indexes over the state, so that handling an event costs what the event concerns rather than
the size of the state.

They are derived from the state (built from it when a manager is made, e.g. from a snapshot)
and never part of a snapshot. Each answers what a scan of the state would: the
queues keep superseded entries, dropped when taken out, and every entry is checked against the
state when it comes out, so an index may hold too much but never misses what a scan would
find. Ranks (a slot of each signal and incident, `Ranked`) put what an index finds back in the
order of the state's dicts (their insertion order), the order a scan visits them in.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

from onduty.correlate.timequeue import TimeQueue
from onduty.state import Incident, SignalState, State

DELIVERY_MEMORY = timedelta(hours=24)
"""How long a notification's delivery id is remembered to recognise a redelivery."""
DELIVERY_SWEEP_AT = 10_000
"""Ids older than `DELIVERY_MEMORY` are forgotten once this many are remembered."""


class Deliveries:
    """The delivery ids seen (`State.deliveries`), forgotten oldest first by a queue on their
    time: a sweep costs what it forgets, not every id remembered."""

    def __init__(self, state: State) -> None:
        self._state = state
        self._by_time = TimeQueue((at, delivery_id) for delivery_id, at in state.deliveries.items())

    def remember(self, delivery_id: str, at: datetime) -> bool:
        """Note a delivery id; False when it was seen before (a redelivery)."""
        deliveries = self._state.deliveries
        if delivery_id in deliveries:
            return False
        deliveries[delivery_id] = at
        self._by_time.push(at, delivery_id)
        if len(deliveries) >= DELIVERY_SWEEP_AT:
            for _, forgotten in self._by_time.pop_until(at - DELIVERY_MEMORY):
                del deliveries[forgotten]
        return True


class Due:
    """What a `Tick` has to look at: firing signals by when they were last heard of, incidents
    by when they become ready or are due to escalate, and the flapping and muted ones."""

    def __init__(self, state: State) -> None:
        self._state = state
        self._order = itertools.count()
        self._heard = TimeQueue()
        self._ready = TimeQueue()
        self._escalating = TimeQueue()  # apart: a tier's wait is not the group wait
        self.flapping: set[str] = set()
        self.muted: set[str] = set()
        for signal in state.signals.values():
            self.added(signal)
        for incident in state.incidents.values():
            self.opened(incident)
            if incident.flapping:
                self.flapping.add(incident.incident_id)
            if incident.muted:
                self.muted.add(incident.incident_id)

    # ------------------------------------------------------------------ changes

    def added(self, signal: SignalState) -> None:
        signal.rank = next(self._order)  # type: ignore[misc]  # Ranked's slot: mypy misses it
        self.heard(signal)

    def heard(self, signal: SignalState) -> None:
        """A firing signal was heard of (at `last_seen`)."""
        if signal.status == "firing" and signal.last_seen is not None:
            self._heard.push(signal.last_seen, signal.fingerprint)
            if len(self._heard) > 2 * len(self._state.signals) + 64:
                self._heard = TimeQueue(
                    (s.last_seen, fp)
                    for fp, s in self._state.signals.items()
                    if s.status == "firing" and s.last_seen is not None
                )

    def opened(self, incident: Incident) -> None:
        incident.rank = next(self._order)  # type: ignore[misc]  # as in `added`
        self.deadlines(incident)

    def deadlines(self, incident: Incident, by: datetime | None = None) -> None:
        """Note when the incident is to be looked at again: ready, or due to escalate (only
        those due `by` then, when given)."""
        if not incident.planned and (by is None or incident.ready_at <= by):
            self._ready.push(incident.ready_at, incident.incident_id)
        escalation = incident.escalation_due
        if (
            escalation is not None
            and not incident.acknowledged
            and (by is None or escalation <= by)
        ):
            self._escalating.push(escalation, incident.incident_id)

    def closed(self, incident_id: str) -> None:
        self.flapping.discard(incident_id)
        self.muted.discard(incident_id)

    # ------------------------------------------------------------------ questions

    def stale(self, now: datetime, timeout: timedelta) -> list[SignalState]:
        """The firing signals not heard of for `timeout` by `now`, in the state's order (what
        `[s for s in signals.values() if firing and s.last_seen + timeout <= now]` finds).
        Those still firing afterwards are to be handed back with `heard`."""
        found: dict[str, SignalState] = {}
        signals = self._state.signals
        for at, fingerprint in self._heard.pop_until(now - timeout):
            signal = signals.get(fingerprint)
            if signal is not None and signal.status == "firing" and signal.last_seen == at:
                found[fingerprint] = signal
        return sorted(found.values(), key=_rank)

    def due(self, now: datetime) -> list[Incident]:
        """The incidents a tick at `now` may have to act on, in the state's order: every one
        ready or due to escalate by `now` (and maybe more), and every flapping one. Those
        still due afterwards are to be handed back with `deadlines`."""
        found = set(self.flapping)
        for queue in (self._ready, self._escalating):
            found.update(incident_id for _, incident_id in queue.pop_until(now))
        return self.in_order(found)

    def in_order(self, incident_ids: set[str]) -> list[Incident]:
        """The open incidents among `incident_ids`, in the state's order."""
        incidents = self._state.incidents
        found = [incident for i in incident_ids if (incident := incidents.get(i)) is not None]
        return sorted(found, key=_rank)


def _rank(item: SignalState | Incident) -> int:
    return item.rank
