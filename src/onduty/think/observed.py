"""What conditions can observe of their variables, so that a context converted to CEL holds
only that."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

Projection = dict[str, "Projection | None"]
"""The parts of the variables some conditions can observe: a name maps to None (all of its
value) or to the projection of the fields they select from it."""

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_CHAIN = re.compile(rf"(?:\s*\.\s*{_NAME})*")
_CALL = re.compile(r"\s*\(")


def projection(sources: Iterable[str], names: Iterable[str]) -> Projection:
    """What conditions with these sources can observe of the variables `names` (the names
    their programs refer to). Converting a value to CEL costs ~2 µs a string, so a context
    holds only what is observed. A variable is narrowed to some fields only when each mention
    of it selects a field (`signal.labels.team`): anything else (`"x" in signal.labels`,
    `signal.labels.exists(...)`, `size(signal)`, an index) keeps what it mentions whole.
    Mentions inside string literals only widen the projection, never narrow it."""
    result: Projection = {}
    for source in sources:
        for name in names:
            for found in re.finditer(rf"(?<!\w){re.escape(name)}(?!\w)", source, re.ASCII):
                chain = _CHAIN.match(source, found.end())
                assert chain is not None  # it matches the empty string
                path = [name, *(part.strip() for part in chain.group().split(".")[1:])]
                if len(path) > 1 and _CALL.match(source, chain.end()):
                    path.pop()  # a method or macro of what precedes it observes it whole
                _widen(result, path)
    return result


def _widen(tree: Projection, path: list[str]) -> None:
    for depth, part in enumerate(path):
        if part in tree and tree[part] is None:
            return  # already whole
        if depth == len(path) - 1:
            tree[part] = None
            return
        sub = tree.get(part)
        if sub is None:
            sub = tree[part] = {}
        tree = sub


def project(variables: Mapping[str, Any], tree: Projection) -> dict[str, Any]:
    """The variables as far as `tree` observes them."""
    projected: dict[str, Any] = {}
    for name, sub in tree.items():
        if name in variables:
            value = variables[name]
            narrow = sub is not None and isinstance(value, Mapping)
            projected[name] = project(value, sub) if sub is not None and narrow else value
    return projected
