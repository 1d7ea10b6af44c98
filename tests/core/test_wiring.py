"""The manager is wired from parts, each with its own tables of handlers: an event is applied
by one part and reacted to by one part, never silently by whichever was wired last."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from onduty.events import Tick
from onduty.lifecycle.base import Prior
from onduty.manager import handlers


class _TickCounter:
    def __init__(self) -> None:
        self.seen = 0

    def _on_tick(self, body: Tick, before: Prior) -> None:
        self.seen += 1

    APPLIERS: ClassVar[dict[type[Any], Any]] = {}
    REACTIONS: ClassVar[dict[type[Any], Any]] = {Tick: _on_tick}


def test_an_event_claimed_by_two_parts_is_a_wiring_error() -> None:
    with pytest.raises(ValueError, match="Tick is handled twice"):
        handlers(_TickCounter(), _TickCounter())


def test_handlers_are_bound_to_their_part() -> None:
    part = _TickCounter()
    _appliers, reactions, _observers = handlers(part)
    reactions[Tick](Tick(timer_id="t"), Prior())
    assert part.seen == 1


class _TickWatcher:
    def __init__(self, name: str, seen: list[str]) -> None:
        self.name, self.seen = name, seen

    def _saw_tick(self, body: Tick, event: Any) -> None:
        self.seen.append(self.name)

    APPLIERS: ClassVar[dict[type[Any], Any]] = {}
    REACTIONS: ClassVar[dict[type[Any], Any]] = {}
    OBSERVERS: ClassVar[dict[type[Any], Any]] = {Tick: _saw_tick}


def test_several_parts_observe_one_type_in_the_order_they_are_wired() -> None:
    seen: list[str] = []
    _appliers, _reactions, observers = handlers(
        _TickWatcher("quality", seen), _TickCounter(), _TickWatcher("learning", seen)
    )
    for observe in observers[Tick]:
        observe(Tick(timer_id="t"), None)
    assert seen == ["quality", "learning"]
