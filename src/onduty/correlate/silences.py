"""Silences and maintenance windows: mute alerts that match, for a time.

A `Silence` mutes every alert whose labels match all its matchers while it is active. Its
window is half-open: it is active from `starts_at` **inclusive** to `ends_at` **exclusive**, so
a silence ending at 10:00 no longer mutes an alert that arrives at 10:00, and one starting at
10:00 already does. A maintenance window is a silence with `kind="maintenance"`: the same
semantics, a separate label so that humans see why an alert was muted.

`Silences` is the collection the core keeps: plain data, changed only by the calls the manager
makes while applying events, with no clock of its own (every call takes the time it is about).
Its snapshot (`to_list`) is a list of JSON-compatible dicts, sorted.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from onduty.correlate.matchers import MatcherList, Matchers

SilenceKind = Literal["silence", "maintenance"]
SilenceState = Literal["pending", "active", "expired"]
DEFAULT_RETENTION = timedelta(hours=24)
"""How long `Silences.prune` keeps a silence after it ended, so humans can still see it."""


class Silence(BaseModel):
    """Mute alerts matching every one of `matchers` from `starts_at` (inclusive) to `ends_at`
    (exclusive). Times must carry a time zone; they are kept in UTC."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    silence_id: str = Field(min_length=1)
    matchers: MatcherList
    starts_at: datetime
    ends_at: datetime
    created_by: str = Field(min_length=1)
    comment: str = Field(min_length=1)
    kind: SilenceKind = "silence"

    @field_validator("matchers")
    @classmethod
    def _some_matcher(cls, matchers: Matchers) -> Matchers:
        if not matchers:
            raise ValueError("a silence needs at least one matcher (it would mute everything)")
        return matchers

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("a silence's times must carry a time zone (UTC)")
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _ends_after_start(self) -> Silence:
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self

    def is_active(self, at: datetime) -> bool:
        """Active from starts_at inclusive to ends_at exclusive."""
        return self.starts_at <= at < self.ends_at

    def state(self, at: datetime) -> SilenceState:
        if at < self.starts_at:
            return "pending"
        return "active" if at < self.ends_at else "expired"

    def mutes(self, labels: Mapping[str, str], at: datetime) -> bool:
        return self.is_active(at) and self.matchers.matches(labels)


def _order(silence: Silence) -> tuple[datetime, str]:
    return silence.starts_at, silence.silence_id


class Silences:
    """The silences the core knows, keyed by id; iteration is ordered by (starts_at, id).

    All times passed in must carry a time zone."""

    __slots__ = ("_by_id", "_ordered")

    def __init__(self, silences: Iterable[Silence] = ()) -> None:
        self._by_id: dict[str, Silence] = {}
        self._ordered: list[Silence] | None = None
        for silence in silences:
            self.add(silence)

    # ------------------------------------------------------------------ changes

    def add(self, silence: Silence) -> None:
        """Add a silence; one with the same id is replaced (an update)."""
        self._by_id[silence.silence_id] = silence
        self._ordered = None

    def expire(self, silence_id: str, at: datetime) -> Silence | None:
        """End a silence at `at` and return it as it now stands.

        An active silence ends at `at`; one that has already ended is unchanged. A silence that
        has not started before `at` never muted anything: it is dropped, and None is returned,
        as for an unknown id."""
        silence = self._by_id.get(silence_id)
        if silence is None:
            return None
        if silence.ends_at <= at:
            return silence
        if at <= silence.starts_at:
            del self._by_id[silence_id]
            self._ordered = None
            return None
        ended = silence.model_copy(update={"ends_at": at.astimezone(UTC)})
        self._by_id[silence_id] = ended
        self._ordered = None
        return ended

    def prune(self, at: datetime, retention: timedelta = DEFAULT_RETENTION) -> list[str]:
        """Drop silences that ended more than `retention` before `at`; return their ids, sorted.
        A silence that ended exactly `retention` ago is kept."""
        horizon = at - retention
        dropped = sorted(i for i, s in self._by_id.items() if s.ends_at < horizon)
        for silence_id in dropped:
            del self._by_id[silence_id]
        if dropped:
            self._ordered = None
        return dropped

    # ------------------------------------------------------------------ questions

    def get(self, silence_id: str) -> Silence | None:
        return self._by_id.get(silence_id)

    def muting(self, labels: Mapping[str, str], at: datetime) -> Silence | None:
        """The first silence, in (starts_at, id) order, that is active at `at` and matches."""
        for silence in self._sorted():
            if silence.starts_at > at:
                break  # sorted by start: no later silence has started either
            if at < silence.ends_at and silence.matchers.matches(labels):
                return silence
        return None

    def active(self, at: datetime) -> list[Silence]:
        return [silence for silence in self._sorted() if silence.is_active(at)]

    def next_change(self, at: datetime) -> datetime | None:
        """The earliest start or end strictly after `at`: when the set of active silences next
        changes, so the core can ask for a timer and re-examine the alerts it muted."""
        times = [
            moment
            for silence in self._by_id.values()
            for moment in (silence.starts_at, silence.ends_at)
            if moment > at
        ]
        return min(times) if times else None

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Silence]:
        return iter(self._sorted())

    def __contains__(self, silence_id: object) -> bool:
        return silence_id in self._by_id

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Silences):
            return NotImplemented
        return self._by_id == other._by_id

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Silences({[s.silence_id for s in self._sorted()]!r})"

    # ------------------------------------------------------------------ snapshots

    def to_list(self) -> list[dict[str, Any]]:
        """Plain JSON-compatible data, in (starts_at, id) order."""
        return [silence.model_dump(mode="json") for silence in self._sorted()]

    @classmethod
    def from_list(cls, data: Iterable[Mapping[str, Any]]) -> Silences:
        return cls(Silence.model_validate(item) for item in data)

    def _sorted(self) -> list[Silence]:
        if self._ordered is None:
            self._ordered = sorted(self._by_id.values(), key=_order)
        return self._ordered
