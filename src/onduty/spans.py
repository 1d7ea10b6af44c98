"""The spans of an incident's trace, made from its events: one projection of the log that both
emits them live (`onduty.tracing`, as the events become durable) and rebuilds them afterwards
(`incident_trace`, `onduty trace`), so the two agree span for span.

Ids come from the log, never from the core: a signal records the W3C trace context it was
received under (`Signal.traceparent`), else its trace id is derived from its event id; every
other span's id is derived from the event that starts it. Parents follow the work: the ingest
request → `correlate` (the signal that opened the incident) → `decide` (a proposed action) →
`verdict` (each policy verdict on it) → `action` (started to outcome) → `verify` → `undo`;
`escalate` hangs under the command it is about, else under `correlate`.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from onduty.events import Event
from onduty.log import EventLog

logger = logging.getLogger("onduty.tracing")

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16


# ---------------------------------------------------------------------------- ids


def parse_traceparent(value: str | None) -> tuple[str, str, bool] | None:
    """(trace id, span id, sampled) of a W3C `traceparent` (version 00), or None when it is
    absent or not valid (the W3C rule: an invalid one is ignored, never an error)."""
    if not value:
        return None
    match = _TRACEPARENT.match(value.strip().lower())
    if match is None or match.group(1) == _ZERO_TRACE or match.group(2) == _ZERO_SPAN:
        return None
    return match.group(1), match.group(2), bool(int(match.group(3), 16) & 1)


def traceparent(trace_id: str, span_id: str, sampled: bool = True) -> str:
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"


def derived_trace_id(event_id: str) -> str:
    """The trace of a signal that came without a trace context: the first 32 hex digits of the
    SHA-256 of its event id."""
    return hashlib.sha256(event_id.encode()).hexdigest()[:32]


def derived_span_id(name: str, event_id: str) -> str:
    """The span `name` started by the event `event_id`: 16 hex digits of a SHA-256."""
    return hashlib.sha256(f"{name}:{event_id}".encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- spans from events


@dataclass(frozen=True)
class SpanRecord:
    """One span of an incident's trace, as the log tells it."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    """The parent span (None for a root, or an ingest span whose parent is the sender's)."""
    incident_id: str
    event_ids: tuple[str, ...]
    start: datetime
    end: datetime | None
    """None for work still in progress (an action whose outcome is not in the log yet)."""
    attributes: Mapping[str, str | int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_id": self.parent_id,
            "incident_id": self.incident_id,
            "event_ids": list(self.event_ids),
            "start": self.start.isoformat(),
            "end": None if self.end is None else self.end.isoformat(),
            "attributes": dict(self.attributes),
        }


@dataclass
class _Incident:
    trace_id: str
    root: str
    commands: list[str] = field(default_factory=list)


@dataclass
class _Command:
    incident_id: str
    last: str
    """The newest span of this command (its decision, verdict, action or verification)."""
    decided: str = ""
    """Its decision's span: every verdict on the command answers it."""


@dataclass(frozen=True)
class _Running:
    span_id: str
    parent_id: str
    start: Event
    attributes: dict[str, str | int]


_OPENING = frozenset({"SignalReceived", "IncidentOpened"})
_STARTS = frozenset(
    {"IncidentOpened", "ActionProposed", "PolicyEvaluated", "ActionStarted", "UndoStarted"}
    | {"VerificationPassed", "VerificationFailed", "Escalated"}
)
"""The events that start a span other than the signal that opens an incident (first anyway)."""


def _ignore(record: SpanRecord) -> None:
    pass


_OUTCOMES = {
    "ActionSucceeded": "succeeded",
    "ActionFailed": "failed",
    "ActionOutcomeUnknown": "unknown",
}


class TraceProjection:
    """The spans of incidents, made from the events of one log (one partition) in log order.

    `emit` is called with each span once it is complete. With `ingest=True` (a rebuild from the
    log), the span a signal was received under is emitted too, as the trace's `ingest` span.
    Memory is bounded: recent signals, open incidents and the last `keep_resolved` resolved ones
    (an action's outcome may follow its incident's resolution).

    With `recall` (a process that started on an existing log), an event of an incident opened
    before this projection started has the incident's earlier events read back first
    (`recall(incident_id, before_seq)`, see `recall_from`), without emitting them again: its
    spans stay in the incident's trace across a restart."""

    RECENT_SIGNALS = 1024

    def __init__(
        self,
        emit: Callable[[SpanRecord], None],
        *,
        ingest: bool = False,
        keep_resolved: int = 1024,
        recall: Callable[[str, int], Iterable[Event]] | None = None,
    ) -> None:
        self._emit = emit
        self._ingest = ingest
        self._recall = recall
        self._recalled: dict[str, None] = {}
        """Incidents already looked for in the log (bounded: the newest 4,096)."""
        self._signals: dict[str, tuple[datetime, str | None]] = {}
        self._incidents: dict[str, _Incident] = {}
        self._commands: dict[str, _Command] = {}
        self._running: dict[str, _Running] = {}
        self._resolved: deque[str] = deque()
        self._keep_resolved = keep_resolved
        self._handlers: dict[str, Callable[[Event], None]] = {
            "SignalReceived": self._signal,
            "IncidentOpened": self._opened,
            "IncidentResolved": self._resolved_incident,
            "ActionProposed": self._proposed,
            "PolicyEvaluated": self._verdict,
            "ActionStarted": self._started,
            "ActionSucceeded": self._finished,
            "ActionFailed": self._finished,
            "ActionOutcomeUnknown": self._finished,
            "VerificationPassed": self._verified,
            "VerificationFailed": self._verified,
            "UndoStarted": self._undo_started,
            "UndoFinished": self._finished,
            "Escalated": self._escalated,
        }

    def feed(self, event: Event) -> None:
        handler = self._handlers.get(event.type)
        if handler is None:
            return
        if self._recall is not None and event.type not in _OPENING:
            incident_id = event.data.get("incident_id") or event.stream
            if incident_id not in self._incidents and incident_id not in self._recalled:
                self._recall_incident(str(incident_id), event.seq)
        try:
            handler(event)
        except Exception:  # a trace is not worth stopping the core for, nor its commands
            logger.warning("cannot make the span of %s %s", event.type, event.id, exc_info=True)

    def _recall_incident(self, incident_id: str, before: int) -> None:
        assert self._recall is not None
        self._recalled[incident_id] = None
        if len(self._recalled) > 4096:
            del self._recalled[next(iter(self._recalled))]
        emit, self._emit = self._emit, _ignore  # emitted before this projection started
        try:
            for past in self._recall(incident_id, before):
                handler = self._handlers.get(past.type)
                if handler is not None:
                    handler(past)
        except Exception:  # a trace is not worth stopping the core for
            logger.warning("cannot read back the events of %s for its trace", incident_id)
        finally:
            self._emit = emit

    def unfinished(self) -> list[SpanRecord]:
        """The spans still open (actions and undos without an outcome yet), end None."""
        found = []
        for command_id, running in self._running.items():
            command = self._commands.get(command_id)
            incident = self._incidents.get(command.incident_id) if command else None
            if command is None or incident is None:
                continue
            found.append(
                SpanRecord(
                    "undo" if running.start.type == "UndoStarted" else "action",
                    incident.trace_id,
                    running.span_id,
                    running.parent_id,
                    command.incident_id,
                    (running.start.id,),
                    running.start.ts,
                    None,
                    running.attributes,
                )
            )
        return found

    # ------------------------------------------------------------------ handlers

    def _signal(self, event: Event) -> None:
        signals = self._signals
        signals[event.id] = (event.ts, event.data.get("traceparent"))
        if len(signals) > self.RECENT_SIGNALS:  # a signal that opened nothing is forgotten
            del signals[next(iter(signals))]

    def _opened(self, event: Event) -> None:
        incident_id = str(event.data["incident_id"])
        cause = event.causation_id or event.id
        at, carried = self._signals.pop(cause, (event.ts, None))
        context = parse_traceparent(carried)
        if context is not None:
            trace_id, parent = context[0], context[1]
            if self._ingest:
                self._emit(
                    SpanRecord("ingest", trace_id, parent, None, incident_id, (), at, at, {})
                )
        else:
            trace_id, parent = derived_trace_id(cause), None
        root = derived_span_id("correlate", cause)
        self._incidents[incident_id] = _Incident(trace_id, root)
        events = (cause, event.id) if cause != event.id else (event.id,)
        self._span(
            "correlate",
            incident_id,
            root,
            parent,
            events,
            at,
            event.ts,
            "SignalReceived" if cause != event.id else event.type,
        )

    def _resolved_incident(self, event: Event) -> None:
        self._resolved.append(str(event.data["incident_id"]))
        while len(self._resolved) > self._keep_resolved:
            gone = self._incidents.pop(self._resolved.popleft(), None)
            for command_id in gone.commands if gone else ():
                self._commands.pop(command_id, None)
                self._running.pop(command_id, None)

    def _proposed(self, event: Event) -> None:
        data = event.data
        incident = self._incidents.get(str(data["incident_id"]))
        if incident is None:
            return  # opened before this projection started
        command_id = str(data["command_id"])
        span_id = derived_span_id("decide", event.id)
        incident.commands.append(command_id)
        self._commands[command_id] = _Command(str(data["incident_id"]), span_id, span_id)
        extra = {
            "onduty.action": str(data.get("action", "")),
            "onduty.target": _text(data, "target"),
        }
        self._span(
            "decide",
            str(data["incident_id"]),
            span_id,
            incident.root,
            (event.id,),
            event.ts,
            event.ts,
            event,
            command_id,
            extra,
        )

    def _verdict(self, event: Event) -> None:
        data = event.data
        command_id = str(data["command_id"])
        command = self._commands.get(command_id)
        if command is None:
            return
        span_id = derived_span_id("verdict", event.id)
        rules = ",".join(f"{r.get('rule')}={r.get('effect')}" for r in data.get("rules") or ())
        extra: dict[str, str | int] = {
            "onduty.verdict": str(data.get("verdict", "")),
            "onduty.rules": rules,
            "onduty.policy_version": _text(data, "policy_version"),
        }
        # every verdict of a command answers its decision; the newest is what the action follows
        self._span(
            "verdict",
            command.incident_id,
            span_id,
            command.decided or command.last,
            (event.id,),
            event.ts,
            event.ts,
            event,
            command_id,
            extra,
        )
        command.last = span_id

    def _started(self, event: Event) -> None:
        data = event.data
        command_id = str(data["command_id"])
        command = self._commands.get(command_id)
        if command is None:
            return
        attributes: dict[str, str | int] = {
            "onduty.action": str(data.get("action", "")),
            "onduty.target": _text(data, "target"),
            "onduty.attempt": int(data.get("attempt") or 1),
        }
        self._running[command_id] = _Running(
            derived_span_id("action", event.id), command.last, event, attributes
        )

    def _undo_started(self, event: Event) -> None:
        data = event.data
        command_id, of = str(data["command_id"]), str(data.get("of_command_id", ""))
        original = self._commands.get(of)
        if original is None:
            return
        incident = self._incidents.get(original.incident_id)
        if incident is not None and command_id not in self._commands:
            incident.commands.append(command_id)
        span_id = derived_span_id("undo", event.id)
        self._commands[command_id] = _Command(original.incident_id, span_id)
        attributes: dict[str, str | int] = {
            "onduty.action": str(data.get("action", "")),
            "onduty.target": _text(data, "target"),
            "onduty.undoes": of,
        }
        self._running[command_id] = _Running(span_id, original.last, event, attributes)

    def _finished(self, event: Event) -> None:
        command_id = str(event.data["command_id"])
        running = self._running.pop(command_id, None)
        command = self._commands.get(command_id)
        if running is None or command is None:
            return
        if event.type == "UndoFinished":
            data = event.data
            outcome = "unknown" if data.get("unknown") else "succeeded" if data["ok"] else "failed"
            name = "undo"
        else:
            outcome, name = _OUTCOMES[event.type], "action"
        attributes = {**running.attributes, "onduty.outcome": outcome}
        start = running.start
        self._span(
            name,
            command.incident_id,
            running.span_id,
            running.parent_id,
            (start.id, event.id),
            start.ts,
            event.ts,
            start,
            command_id,
            attributes,
        )
        command.last = running.span_id

    def _verified(self, event: Event) -> None:
        command_id = str(event.data["command_id"])
        command = self._commands.get(command_id)
        if command is None:
            return
        span_id = derived_span_id("verify", event.id)
        outcome = "passed" if event.type == "VerificationPassed" else "failed"
        self._span(
            "verify",
            command.incident_id,
            span_id,
            command.last,
            (event.id,),
            event.ts,
            event.ts,
            event,
            command_id,
            {"onduty.outcome": outcome},
        )
        command.last = span_id

    def _escalated(self, event: Event) -> None:
        data = event.data
        incident = self._incidents.get(str(data["incident_id"]))
        if incident is None:
            return
        command_id = data.get("command_id")
        command = self._commands.get(command_id) if isinstance(command_id, str) else None
        parent = command.last if command is not None else incident.root
        span_id = derived_span_id("escalate", event.id)
        self._span(
            "escalate",
            str(data["incident_id"]),
            span_id,
            parent,
            (event.id,),
            event.ts,
            event.ts,
            event,
            command_id if command else None,
            {"onduty.tier": int(data.get("tier") or 0)},
        )

    def _span(
        self,
        name: str,
        incident_id: str,
        span_id: str,
        parent: str | None,
        event_ids: tuple[str, ...],
        start: datetime,
        end: datetime,
        first: Event | str,
        command_id: str | None = None,
        extra: Mapping[str, str | int] | None = None,
    ) -> None:
        incident = self._incidents[incident_id]
        attributes: dict[str, str | int] = {
            "onduty.incident_id": incident_id,
            "onduty.event_id": event_ids[0],
            "onduty.event_type": first if isinstance(first, str) else first.type,
        }
        if command_id is not None:
            attributes["onduty.command_id"] = command_id
        if extra:
            attributes.update(extra)
        self._emit(
            SpanRecord(
                name,
                incident.trace_id,
                span_id,
                parent,
                incident_id,
                event_ids,
                start,
                end,
                attributes,
            )
        )


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    return "" if value is None else str(value)


def incident_trace(events: Iterable[Event], incident_id: str) -> list[SpanRecord]:
    """The spans of one incident's trace, rebuilt from the log, in the order their work started
    (by time, then by the log's order of the events that started them): the same trace id,
    span ids, parents and events as the spans onduty emitted."""
    found: list[SpanRecord] = []
    position: dict[str, int] = {}

    def keep(record: SpanRecord) -> None:
        if record.incident_id == incident_id:
            found.append(record)

    projection = TraceProjection(keep, ingest=True, keep_resolved=1 << 30)
    for index, event in enumerate(events):
        if event.type in _STARTS:  # not every signal: a log may hold millions
            position[event.id] = index
        projection.feed(event)
    found.extend(r for r in projection.unfinished() if r.incident_id == incident_id)
    found.sort(key=lambda r: (r.start, position.get(r.event_ids[0], -1) if r.event_ids else -1))
    return found


def recall_from(log: EventLog) -> Callable[[str, int], list[Event]]:
    """How a projection reads back an incident opened before it started: the incident's stream
    before `before`, after the signal that opened it (the newest event of that signal's stream
    before the incident opened)."""

    def recall(incident_id: str, before: int) -> list[Event]:
        events = list(log.read_stream(incident_id, before=before))
        opened = next((e for e in events if e.type == "IncidentOpened"), None)
        if opened is None:
            return []
        stream = f"signal:{opened.data.get('fingerprint', '')}"
        cause = next(log.read_stream(stream, before=opened.seq, newest_first=True), None)
        if cause is not None and cause.id == opened.causation_id:
            events.insert(0, cause)
        return events

    return recall
