"""Alertmanager's API v2 `POST /api/v2/alerts`: what Prometheus sends to its alertmanagers.

    [{"labels": {...}, "annotations": {...}, "startsAt": "<RFC 3339>", "endsAt": "<RFC 3339>",
      "generatorURL": "..."}, ...]

A postable alert has no status: as in Alertmanager, an alert whose `endsAt` has passed when it
arrives is resolved, any other is firing until its `endsAt`. Prometheus re-sends every firing
alert while its rule holds, each time with `endsAt` a few evaluation intervals ahead, and sends
it once more with `endsAt` in the past when the rule stops holding. An alert that stops being
re-sent without that last word (Prometheus stopped, the rule was deleted) must still end:
`Expiry` remembers each firing alert's `endsAt` and gives back a resolution for it once that
time has passed. An alert without `endsAt` is valid for `DEFAULT_VALIDITY`, Alertmanager's
default `resolve_timeout`. An alert's fingerprint is the one Alertmanager gives it, so the same
alert is one signal whether it comes straight from Prometheus or through Alertmanager's webhook.

`parse` is pure like every parser here; `Expiry` keeps no clock either (the time is passed in).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import msgspec

from onduty.events import Signal, SignalReceived
from onduty.sense._wire import decode, utc
from onduty.sense.errors import EMPTY, IngestError

SOURCE = "prometheus"
DEFAULT_VALIDITY = timedelta(minutes=5)
_FNV_OFFSET, _FNV_PRIME, _MASK = 14695981039346656037, 1099511628211, (1 << 64) - 1
_SEPARATOR = 0xFF


def alertmanager_fingerprint(labels: dict[str, str]) -> str:
    """Alertmanager's fingerprint of a label set (Prometheus's `LabelSet.Fingerprint`): FNV-1a
    64 over the sorted names and their values, each followed by 0xff, as 16 hex digits."""
    state = _FNV_OFFSET
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode("utf-8", "surrogatepass"):
                state = ((state ^ byte) * _FNV_PRIME) & _MASK
            state = ((state ^ _SEPARATOR) * _FNV_PRIME) & _MASK
    return f"{state:016x}"


class PostableAlert(msgspec.Struct, gc=False):
    labels: dict[str, str]
    annotations: dict[str, str] | None = None
    starts_at: datetime | None = msgspec.field(default=None, name="startsAt")
    ends_at: datetime | None = msgspec.field(default=None, name="endsAt")
    generator_url: str | None = msgspec.field(default=None, name="generatorURL")


def _time(value: datetime | None, field: str) -> datetime | None:
    """Go's zero time (`0001-01-01T00:00:00Z`) means "no time", as in Alertmanager."""
    if value is None or value.year == 1:
        return None
    return utc(value, field)


def _signal(alert: PostableAlert, position: int, received: datetime) -> Signal:
    where = f"[{position}]"
    if not alert.labels:
        raise IngestError.invalid(f"{where}.labels", EMPTY)
    if "" in alert.labels:
        raise IngestError.invalid(f"{where}.labels", "a label name must not be empty")
    starts_at = _time(alert.starts_at, f"{where}.startsAt")
    ends_at = _time(alert.ends_at, f"{where}.endsAt")
    if starts_at is not None and ends_at is not None and ends_at < starts_at:
        raise IngestError.invalid(f"{where}.endsAt", "must not be before startsAt")
    resolved = ends_at is not None and ends_at <= received
    return SignalReceived(
        source=SOURCE,
        fingerprint=alertmanager_fingerprint(alert.labels),
        status="resolved" if resolved else "firing",
        labels=alert.labels,
        annotations=alert.annotations or {},
        starts_at=starts_at or (None if resolved else received),
        # a firing alert's end is when it expires unless re-sent
        ends_at=ends_at or received + DEFAULT_VALIDITY,
        generator_url=alert.generator_url or None,
    )


def parse(body: bytes, *, received_at: datetime, content_type: str | None = None) -> list[Signal]:
    """One signal per postable alert (an empty list is a valid, empty delivery)."""
    alerts = decode(body, list[PostableAlert])
    received = utc(received_at, "received_at")
    return [_signal(alert, position, received) for position, alert in enumerate(alerts)]


# --------------------------------------------------------------------------- expiry


@dataclass(frozen=True)
class _Firing:
    signal: Signal
    until: datetime


class Expiry:
    """The firing alerts of the API v2 route and when each expires unless re-sent.

    `note` every parsed delivery (a firing alert moves its expiry to its new `endsAt`, a
    resolved one is forgotten); `due(now)` gives back a resolution for every alert whose
    expiry has passed, once. After a restart, `seed` brings back the alerts the log says are
    firing."""

    def __init__(self) -> None:
        self._firing: dict[str, _Firing] = {}
        self._queue: list[tuple[datetime, str]] = []  # (until, fingerprint); stale ones skipped

    def __len__(self) -> int:
        return len(self._firing)

    def note(self, signals: Iterable[Signal]) -> None:
        for signal in signals:
            if signal.status == "firing" and signal.ends_at is not None:
                self._keep(signal, signal.ends_at)
            else:
                self._firing.pop(signal.fingerprint, None)

    def seed(self, signal: Signal, *, recorded_at: datetime, now: datetime) -> None:
        """A firing alert found in the log at start-up, recorded at `recorded_at`: it expires
        one of its own validity windows (`endsAt` - `recorded_at`) from `now`, as if re-sent
        now. Its sender could not re-send it while onduty was down, and gets that long to."""
        if signal.status != "firing" or signal.fingerprint in self._firing:
            return
        ends_at = signal.ends_at or recorded_at + DEFAULT_VALIDITY
        window = max(ends_at - recorded_at, timedelta(0))
        self._keep(signal, max(ends_at, now + window))

    def restore(self, signals: Iterable[Signal], until: datetime) -> None:
        """Resolutions `due` gave that could not be recorded: firing again until `until`,
        unless a newer delivery has been noted for the alert meanwhile."""
        for signal in signals:
            if signal.fingerprint not in self._firing:
                self._keep(signal.model_copy(update={"status": "firing"}), until)

    def next_due(self) -> datetime | None:
        while self._queue:
            until, fingerprint = self._queue[0]
            firing = self._firing.get(fingerprint)
            if firing is not None and firing.until == until:
                return until
            heapq.heappop(self._queue)  # superseded by a later note, or resolved
        return None

    def due(self, now: datetime) -> list[Signal]:
        """A resolution for every alert whose expiry is at or before `now`, each given once."""
        resolved: list[Signal] = []
        while (until := self.next_due()) is not None and until <= now:
            _, fingerprint = heapq.heappop(self._queue)
            firing = self._firing.pop(fingerprint)
            resolved.append(
                firing.signal.model_copy(update={"status": "resolved", "ends_at": until})
            )
        return resolved

    def _keep(self, signal: Signal, until: datetime) -> None:
        self._firing[signal.fingerprint] = _Firing(signal, until)
        heapq.heappush(self._queue, (until, signal.fingerprint))
        if len(self._queue) > 2 * len(self._firing) + 1024:  # drop the superseded entries
            self._queue = [(f.until, key) for key, f in self._firing.items()]
            heapq.heapify(self._queue)
