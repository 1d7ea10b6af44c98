"""The read models the service keeps together (`ReadModels`), and their snapshots.

A restart does not replay the whole log into the read models: it loads their latest snapshot
and feeds them the events after it, as the core does with its own (`runtime`). The snapshot is
stored in the log's meta table under `SNAPSHOT_KEY`, bound to the chain like the core's
(`Snapshot.bound`: the seq and hash of the last event it folds, and a digest of its content);
one that `check_snapshot` refuses, or written by another version of this module (`FORMAT`), is
ignored and the read models are rebuilt from the log."""

from __future__ import annotations

import dataclasses
import logging
import threading
from array import array
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from onduty.events import Event
from onduty.log.base import Snapshot, check_snapshot
from onduty.readmodel.approvals import PendingApproval, _Answer
from onduty.readmodel.autonomy import AutonomyRaise, AutonomyRaises
from onduty.readmodel.incidents import (
    _NO_SIGNALS,
    RESOLVED_KEPT,
    Fact,
    IncidentProjection,
    IncidentView,
    _shared,
)
from onduty.readmodel.learning import LearningView
from onduty.readmodel.policy import PolicyView
from onduty.readmodel.safemode import SafeModeView
from onduty.readmodel.silences import SilenceProjection, SilenceView
from onduty.readmodel.similar import SimilarIncidents
from onduty.readmodel.timeline import Window

if TYPE_CHECKING:
    from onduty.log import EventLog

logger = logging.getLogger("onduty")

SNAPSHOT_KEY = "readmodels.snapshot"
FORMAT = 4
"""Changes whenever what a snapshot holds changes: an older one is then rebuilt from the log."""


@dataclass
class AutonomyView:
    """Autonomy levels changed at run time (`AutonomyChanged`), by service."""

    overrides: dict[str, str] = field(default_factory=dict)

    def feed(self, event: Event) -> None:
        if event.type == "AutonomyChanged":
            self.overrides[event.data["service"]] = event.data["level"]


@dataclass
class KillSwitchesView:
    """The active kill switches (`KillSwitchSet`, `KillSwitchCleared`), by "kind/name": each
    its kind, name, reason, who set it (`set_by`) and when (`set_at`)."""

    active: dict[str, dict[str, str]] = field(default_factory=dict)

    def feed(self, event: Event) -> None:
        if event.type == "KillSwitchSet":
            data = event.data
            self.active[f"{data['kind']}/{data['name']}"] = {
                "kind": data["kind"],
                "name": data["name"],
                "reason": data.get("reason", ""),
                "set_by": event.actor,
                "set_at": event.ts.isoformat(),
            }
        elif event.type == "KillSwitchCleared":
            self.active.pop(f"{event.data['kind']}/{event.data['name']}", None)

    def listing(self) -> list[dict[str, str]]:
        return [self.active[key] for key in sorted(self.active)]


@dataclass
class ReadModels:
    """Projections the API reads while the core thread writes them."""

    incidents: IncidentProjection = field(
        default_factory=lambda: IncidentProjection(keep_timeline=True, keep_resolved=RESOLVED_KEPT)
    )
    silences: SilenceProjection = field(default_factory=SilenceProjection)
    policy: PolicyView = field(default_factory=PolicyView)
    autonomy: AutonomyView = field(default_factory=AutonomyView)
    raises: AutonomyRaises = field(default_factory=AutonomyRaises)
    kill_switches: KillSwitchesView = field(default_factory=KillSwitchesView)
    safe_mode: SafeModeView = field(default_factory=SafeModeView)
    learning: LearningView = field(default_factory=LearningView)
    similar: SimilarIncidents = field(default_factory=SimilarIncidents)
    """Closed incidents to compare an incident with (it has a lock of its own: asking it
    needs no `lock`)."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    seq: int = 0
    """The seq of the last event fed (0: none), and its hash: what a snapshot is bound to."""
    event_hash: str = ""
    _saving: threading.Thread | None = field(default=None, repr=False)

    def feed(self, event: Event) -> None:
        with self.lock:
            self.incidents.feed(event)
            self.silences.feed(event)
            self.policy.feed(event)
            self.autonomy.feed(event)
            self.raises.feed(event)
            self.kill_switches.feed(event)
            self.safe_mode.feed(event)
            self.learning.feed(event)
            self.similar.feed(event)
            self.seq, self.event_hash = event.seq, event.hash

    def save(self, log: EventLog) -> int:
        """Store a snapshot of the read models as of the last event fed; its size in bytes.
        Waits for a snapshot being saved in the background first."""
        self.wait_saved()
        with self.lock:  # a copy: encoded and stored without holding the lock
            seq, event_hash, state = self.seq, self.event_hash, state_of(self)
        return _store(log, seq, event_hash, state)

    def save_soon(self, log: EventLog) -> None:
        """Like `save`, with only the copy of the state taken here (on the core's thread,
        which must not wait for the encoding and the write); none when one is still saving."""
        if self._saving is not None and self._saving.is_alive():
            return
        with self.lock:
            seq, event_hash, state = self.seq, self.event_hash, state_of(self)
        self._saving = threading.Thread(
            target=_store, args=(log, seq, event_hash, state), name="onduty-readmodel-snapshot"
        )
        self._saving.start()

    def wait_saved(self) -> None:
        """Wait for the snapshot being saved in the background, if any (before closing)."""
        if self._saving is not None:
            self._saving.join()
            self._saving = None

    def load(self, state: dict[str, Any]) -> str:
        """Become the read models `state` (as `state_of` made it) describes; "" when done,
        else why it could not be read (nothing is changed then)."""
        if state.get("format") != FORMAT:
            return f"it was written in format {state.get('format')!r}, not {FORMAT}"
        return _load(self, state)

    def state(self) -> dict[str, Any]:
        """A copy of everything the read models hold, as JSON (taken under their lock)."""
        with self.lock:
            return state_of(self)

    def restore(self, log: EventLog) -> int:
        """Fill the read models from the log: from their snapshot and the events after it when
        the snapshot is bound to this chain, else from the start. Returns the events fed."""
        snapshot, why = stored(log)
        if snapshot is not None:
            why = self.load(snapshot.state)
            if not why:
                self.seq, self.event_hash = snapshot.seq, snapshot.event_hash
        if why:
            logger.warning("read-model snapshot refused: %s; rebuilding from the log", why)
        fed = 0
        for event in log.read(after=self.seq):
            self.feed(event)
            fed += 1
        return fed


def _load(models: ReadModels, state: dict[str, Any]) -> str:
    try:
        restored = from_state(state)
        # in place, bounded and ranking as configured here; it changes nothing when it fails
        models.similar.load(state["similar"])
    except (KeyError, TypeError, ValueError, IndexError) as error:
        return f"its content does not decode ({type(error).__name__}: {error})"
    incidents = restored[0]  # bounded as configured here, not as it was
    incidents.keep_resolved = models.incidents.keep_resolved
    incidents._keep_timeline = models.incidents._keep_timeline
    mine = (
        models.incidents,
        models.silences,
        models.policy,
        models.autonomy,
        models.raises,
        models.kill_switches,
        models.safe_mode,
        models.learning,
    )
    for model, loaded in zip(mine, restored, strict=True):
        _adopt(model, loaded)
    return ""


def _adopt(model: object, loaded: object) -> None:
    """`model` becomes `loaded`, in place: the API's routes hold the read models they were
    built with (the approvals' desk, its projection), before the service restores them."""
    vars(model).clear()
    vars(model).update(vars(loaded))


def _store(log: EventLog, seq: int, event_hash: str, state: dict[str, Any]) -> int:
    if not seq:
        return 0
    snapshot = Snapshot.bound(seq, event_hash, state)
    binding = {"seq": seq, "event_hash": event_hash, "digest": snapshot.digest}
    body = orjson.dumps({**binding, "state": state})
    try:
        log.set_meta(SNAPSHOT_KEY, body.decode())
    except Exception as error:  # the log closed meanwhile, say: the next start folds more
        logger.warning("read-model snapshot at seq %s not saved: %s", seq, error)
        return 0
    return len(body)


def stored(log: EventLog) -> tuple[Snapshot | None, str]:
    """The stored read-model snapshot if it can be trusted, else None and why not ("" when
    there is none)."""
    raw = log.get_meta(SNAPSHOT_KEY)
    if raw is None:
        return None, ""
    try:
        found = orjson.loads(raw)
        snapshot = Snapshot(found["seq"], found["state"], found["event_hash"], found["digest"])
    except (orjson.JSONDecodeError, KeyError, TypeError) as error:
        return None, f"it does not decode ({error})"
    why = check_snapshot(log, snapshot)
    if why is None and snapshot.state.get("format") != FORMAT:
        why = f"it was written in format {snapshot.state.get('format')!r}, not {FORMAT}"
    return (None, why) if why else (snapshot, "")


# ---------------------------------------------------------------------------- the codec

_VIEW_FIELDS = [item.name for item in dataclasses.fields(IncidentView)]
_VIEW_WINDOWS = ("decisions", "signal_events")
_VIEW_TIMES = ("opened_at", "resolved_at")
_VIEW_LISTS = ("escalations", "actions", "denied", "awaiting_approval", "acting", "verifying")


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _copied(value: Any) -> Any:
    """`value` as JSON needs it, copied when the live read models may change it."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return list(value)
    return dict(value) if isinstance(value, dict) else value


def _plain(item: Any) -> dict[str, Any]:
    """A dataclass as a JSON object, its datetimes as ISO 8601."""
    return {name: _copied(value) for name, value in vars(item).items()}


def _dated(cls: type[Any], data: dict[str, Any]) -> Any:
    """The dataclass `cls` from `_plain`'s object: its datetime fields parsed back."""
    for item in dataclasses.fields(cls):
        if "datetime" in str(item.type):
            data[item.name] = _time(data[item.name])
    return cls(**data)


def _members(labels: list[str] | None) -> tuple[str, ...] | None:
    return None if labels is None else tuple(labels)


def _view_state(view: IncidentView) -> list[Any]:
    return [
        getattr(view, name).state() if name in _VIEW_WINDOWS else _copied(getattr(view, name))
        for name in _VIEW_FIELDS
    ]


def _view(row: list[Any]) -> IncidentView:
    values = dict(zip(_VIEW_FIELDS, row, strict=True))
    for name in _VIEW_WINDOWS:
        values[name] = Window.from_state(values[name])
    if not values["signal_events"].total:  # shared, as when fed
        values["signal_events"] = _NO_SIGNALS[bool(values["signal_events"].kept_first)]
    for name in _VIEW_TIMES:
        values[name] = _time(values[name])
    values["varying"] = tuple(values["varying"])
    values["first_labels"] = _members(values["first_labels"])
    for name in _VIEW_LISTS:  # empty ones shared, as when fed
        values[name] = values[name] or ()
    values["service"] = _shared(values["service"])
    return IncidentView(**values)


def _fact_state(fact: Fact) -> list[Any]:
    opened, resolved = fact.opened_at.isoformat(), fact.resolved_at.isoformat()
    return [fact.service, opened, resolved, fact.escalated, fact.acted]


def _answer_state(answer: _Answer) -> list[Any]:
    return [answer.event_id, answer.actor, answer.approval.approval_id, list(answer.approved_by)]


def state_of(models: ReadModels) -> dict[str, Any]:
    """Everything the read models hold, as JSON."""
    incidents = models.incidents
    signal = incidents._signal
    book = incidents._book
    answer = book._answer
    return {
        "format": FORMAT,
        "incidents": {
            "keep_timeline": incidents._keep_timeline,
            "keep_resolved": incidents.keep_resolved,
            "views": [_view_state(view) for view in incidents.incidents.values()],
            "commands": dict(incidents._command_incident),
            "resolved": incidents.resolved.tolist(),
            "kept_resolved": list(incidents.kept_resolved),
            "facts": [_fact_state(fact) for fact in incidents.facts],
            "signal": None if signal is None else [signal[0], _copied(signal[1])],
            "pending": [_plain(item) for item in book.pending.values()],
            "answered": [_plain(item) for item in book.answered.values()],
            "answer": None if answer is None else _answer_state(answer),
        },
        "silences": [_plain(view) for view in models.silences.silences.values()],
        "policy": _plain(models.policy),
        "autonomy": dict(models.autonomy.overrides),
        "raises": {
            "kept": models.raises._kept,
            "requests": [_plain(item) for item in models.raises.requests.values()],
        },
        "kill_switches": [dict(item) for item in models.kill_switches.active.values()],
        "safe_mode": models.safe_mode.state(),
        "learning": _plain(models.learning),
        "similar": models.similar.state(),
    }


def from_state(
    state: dict[str, Any],
) -> tuple[
    IncidentProjection,
    SilenceProjection,
    PolicyView,
    AutonomyView,
    AutonomyRaises,
    KillSwitchesView,
    SafeModeView,
    LearningView,
]:
    """The read models `state_of` described."""
    kept = state["incidents"]
    incidents = IncidentProjection(kept["keep_timeline"], kept["keep_resolved"])
    incidents.incidents = {view.incident_id: view for view in map(_view, kept["views"])}
    incidents._command_incident = dict(kept["commands"])
    incidents.resolved = array("q", kept["resolved"])
    incidents.kept_resolved = deque(kept["kept_resolved"])
    incidents.facts.extend(
        Fact(service, datetime.fromisoformat(opened), datetime.fromisoformat(resolved), *flags)
        for service, opened, resolved, *flags in kept["facts"]
    )
    signal = kept["signal"]
    incidents._signal = None if signal is None else (signal[0], _members(signal[1]))
    book = incidents._book
    book.pending.update(
        (item.approval_id, item) for item in (_dated(PendingApproval, d) for d in kept["pending"])
    )
    book.answered.update(
        (item.approval_id, item) for item in (_dated(PendingApproval, d) for d in kept["answered"])
    )
    if kept["answer"] is not None:
        event_id, actor, approval_id, approved_by = kept["answer"]
        approval = book.get(approval_id)
        if approval is not None:
            book._answer = _Answer(event_id, actor, approval, approved_by)
    silences = SilenceProjection()
    silences.silences = {
        view.silence_id: view for view in (_dated(SilenceView, d) for d in state["silences"])
    }
    raises = AutonomyRaises(state["raises"]["kept"])
    raises.requests = OrderedDict(
        (item.request_id, item)
        for item in (_dated(AutonomyRaise, d) for d in state["raises"]["requests"])
    )
    policy = PolicyView(**state["policy"])
    switches = KillSwitchesView(
        {f"{item['kind']}/{item['name']}": dict(item) for item in state.get("kill_switches", [])}
    )
    autonomy = AutonomyView(dict(state["autonomy"]))
    safe_mode = SafeModeView.of(state.get("safe_mode"))
    learning = LearningView(**state["learning"])
    return incidents, silences, policy, autonomy, raises, switches, safe_mode, learning
