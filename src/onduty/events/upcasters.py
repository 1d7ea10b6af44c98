"""Upcasters: old payloads are lifted to the current schema before they are validated."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from onduty.events.vocabulary import EVENT_TYPES, UnknownEventType

# Upcasters lift a payload written at version v to v+1: {(type, v): function}. A schema change
# that cannot be expressed as defaults on new fields adds one here and bumps the spec version.
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def upcast(type_: str, version: int, data: Mapping[str, Any]) -> dict[str, Any]:
    spec = EVENT_TYPES.get(type_)
    if spec is None:
        raise UnknownEventType(f"unknown event type {type_!r}")
    lifted = dict(data)
    while version < spec.version:
        lifted = UPCASTERS[(type_, version)](lifted)
        version += 1
    return lifted
