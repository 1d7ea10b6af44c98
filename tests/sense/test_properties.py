"""Whatever arrives, a parser returns valid signals or raises `IngestError`, nothing else."""

from __future__ import annotations

import copy
from datetime import UTC
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onduty.events import Signal
from onduty.sense import FORMATS, IngestError, Parser
from onduty.sense.cloudevents import BATCH, STRUCTURED

from .payloads import (
    ALERTMANAGER,
    CLOUDEVENT,
    CLOUDEVENT_BATCH,
    NATIVE,
    NATIVE_LIST,
    PAGERDUTY_ACKNOWLEDGE,
    PAGERDUTY_RESOLVE,
    PAGERDUTY_TRIGGER,
    RECEIVED_AT,
    dump,
)

GOLDEN: list[tuple[str, Any]] = [
    ("alertmanager", ALERTMANAGER),
    ("pagerduty", PAGERDUTY_TRIGGER),
    ("pagerduty", PAGERDUTY_ACKNOWLEDGE),
    ("pagerduty", PAGERDUTY_RESOLVE),
    ("cloudevents", CLOUDEVENT),
    ("cloudevents", CLOUDEVENT_BATCH),
    ("native", NATIVE),
    ("native", NATIVE_LIST),
]
GOLDEN_IDS = [f"{name}-{i}" for i, (name, _) in enumerate(GOLDEN)]
CONTENT_TYPES = st.sampled_from(
    [None, "application/json", STRUCTURED, BATCH, f"{BATCH}; charset=utf-8", "text/plain"]
)
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["firing", "resolved", "trigger", "1.0", "4", "0001-01-01T00:00:00Z"])
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=16,
)


def check(name: str, body: bytes, content_type: str | None = None) -> None:
    parser: Parser = FORMATS[name]
    try:
        signals = parser(body, received_at=RECEIVED_AT, content_type=content_type)
    except IngestError as error:
        assert error.status in (400, 422)
        assert (error.status == 422) == (error.field is not None)
        assert error.reason
        assert set(error.as_json()) == {"error", "field"}
        return
    assert isinstance(signals, list)
    for signal in signals:
        assert isinstance(signal, Signal)
        assert type(signal).model_validate(signal.model_dump()) == signal
        assert signal.fingerprint
        for moment in (signal.starts_at, signal.ends_at):
            assert moment is None or moment.tzinfo is UTC


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for position, value in enumerate(node):
            found += _paths(value, (*prefix, position))
    return found


@pytest.mark.parametrize("name", sorted(FORMATS))
@FUZZ
@given(body=st.binary(max_size=600), content_type=CONTENT_TYPES)
def test_random_bytes(name: str, body: bytes, content_type: str | None) -> None:
    check(name, body, content_type)


@pytest.mark.parametrize("name", sorted(FORMATS))
@FUZZ
@given(value=JSON, content_type=CONTENT_TYPES)
def test_random_json(name: str, value: Any, content_type: str | None) -> None:
    check(name, dump(value), content_type)


@pytest.mark.parametrize(("name", "document"), GOLDEN, ids=GOLDEN_IDS)
@FUZZ
@given(data=st.data(), content_type=CONTENT_TYPES)
def test_truncated_golden_payloads(
    name: str, document: Any, data: st.DataObject, content_type: str | None
) -> None:
    body = dump(document)
    cut = data.draw(st.integers(0, len(body) - 1))
    check(name, body[:cut], content_type)


@pytest.mark.parametrize(("name", "document"), GOLDEN, ids=GOLDEN_IDS)
@FUZZ
@given(data=st.data(), content_type=CONTENT_TYPES)
def test_mutated_golden_payloads(
    name: str, document: Any, data: st.DataObject, content_type: str | None
) -> None:
    """A golden payload with one value replaced or removed, at any depth."""
    changed = copy.deepcopy(document)
    path = data.draw(st.sampled_from(_paths(changed)))
    if not path:
        changed = data.draw(JSON)
    else:
        parent = changed
        for step in path[:-1]:
            parent = parent[step]
        if data.draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(JSON)
    check(name, dump(changed), content_type)


@pytest.mark.parametrize(("name", "document"), GOLDEN, ids=GOLDEN_IDS)
def test_golden_payloads_parse_through_the_registry(name: str, document: Any) -> None:
    signals = FORMATS[name](dump(document), received_at=RECEIVED_AT)
    assert signals
    check(name, dump(document))


@FUZZ
@given(labels=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=6))
def test_alertmanager_fallback_fingerprint_ignores_label_order(labels: dict[str, str]) -> None:
    def fingerprint(ordered: dict[str, str]) -> str:
        body = dump({"alerts": [{"status": "firing", "labels": ordered}]})
        return FORMATS["alertmanager"](body, received_at=RECEIVED_AT)[0].fingerprint

    assert fingerprint(labels) == fingerprint(dict(reversed(list(labels.items()))))
