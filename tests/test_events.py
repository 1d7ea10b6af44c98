"""The event vocabulary: old events stay readable, schemas stay compatible, hashes stay stable.

Two frozen files guard backward compatibility and are edited by hand only:

* `fixtures/events_v1.jsonl` holds one envelope of every event type exactly as the log wrote
  it, hash-chained. A new event type appends a line (build it with `make_event` and `seal`
  after the last line); existing lines are never changed.
* `fixtures/schemas/events.json` is the v1 export of `json_schemas()`. The current schemas
  must still accept everything it describes.
"""

from __future__ import annotations

import copy
import importlib.util
import json
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import Field, ValidationError

from onduty.events import (
    EVENT_TYPES,
    GENESIS_HASH,
    UPCASTERS,
    ActionProposed,
    Event,
    EventSpec,
    IncidentOpened,
    Origin,
    Payload,
    PolicyEvaluated,
    Signal,
    SignalReceived,
    Tick,
    UnknownEventType,
    canonical_body,
    chain_hash,
    event_from_body,
    json_schemas,
    make_event,
    payload,
    payload_as,
    seal,
)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
GOLDEN_EVENTS = FIXTURES / "events_v1.jsonl"
FROZEN_SCHEMAS = FIXTURES / "schemas" / "events.json"
PUBLISHED_SCHEMAS = ROOT / "src" / "onduty" / "schemas" / "events.json"
EXPORT_SCRIPT = ROOT / "scripts" / "export_schemas.py"

T0 = datetime(2025, 3, 14, 2, 17, 5, tzinfo=UTC)


def _golden_lines() -> list[str]:
    return GOLDEN_EVENTS.read_text(encoding="utf-8").splitlines()


def _golden_events() -> list[Event]:
    return [Event.model_validate_json(line) for line in _golden_lines()]


def _frozen_schemas() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(FROZEN_SCHEMAS.read_text(encoding="utf-8"))
    return document


def _export_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("export_schemas", EXPORT_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _signal(**changes: Any) -> SignalReceived:
    fields: dict[str, Any] = {
        "source": "alertmanager",
        "fingerprint": "3f9c2a7d1b6e4c08",
        "status": "firing",
        "labels": {"alertname": "HighErrorRate", "service": "checkout"},
        "starts_at": T0,
    }
    return SignalReceived(**(fields | changes))


def _event(**changes: Any) -> Event:
    fields: dict[str, Any] = {"id": "evt-1", "ts": T0, "stream": "signals", "actor": "alertmanager"}
    return make_event(_signal(), **(fields | changes))


# --------------------------------------------------------------------------- golden events


@pytest.mark.parametrize("line", _golden_lines(), ids=lambda line: json.loads(line)["type"])
def test_every_golden_event_is_still_readable(line: str) -> None:
    event = Event.model_validate_json(line)
    spec = EVENT_TYPES.get(event.type)
    assert spec is not None, (
        f"{event.type} events exist in stored logs but the type is no longer in EVENT_TYPES; "
        "keep the payload class registered (it may be deprecated, never removed)"
    )
    try:
        body = payload(event)
    except ValidationError as error:
        pytest.fail(
            f"a stored v{event.v} {event.type} event no longer validates:\n{error}\n"
            f"Give new fields defaults, or bump EVENT_TYPES[{event.type!r}].version and add "
            f"UPCASTERS[({event.type!r}, {event.v})] that lifts the old data."
        )
    assert type(body) is spec.model
    assert event.origin is spec.origin


def test_every_event_type_has_a_golden_line() -> None:
    covered = {event.type for event in _golden_events()}
    missing = sorted(EVENT_TYPES.keys() - covered)
    assert not missing, (
        f"no line in {GOLDEN_EVENTS.name} for {', '.join(missing)}: append a realistic event "
        "of each new type (make_event, then seal after the last line) so later changes are "
        "checked against it"
    )


def test_golden_log_hash_chain_still_verifies() -> None:
    """The canonical JSON must not change: every stored hash was computed from it."""
    prev_hash = GENESIS_HASH
    for position, event in enumerate(_golden_events(), start=1):
        assert event.seq == position
        assert event.prev_hash == prev_hash, f"seq {event.seq}: broken link"
        recomputed = chain_hash(event.prev_hash, canonical_body(event))
        assert recomputed == event.hash, (
            f"seq {event.seq} ({event.type}): the canonical body changed, so stored hash "
            "chains would no longer verify"
        )
        prev_hash = event.hash


def test_golden_events_survive_a_store_and_reload() -> None:
    for event in _golden_events():
        assert event_from_body(canonical_body(event), event.hash) == event


# --------------------------------------------------------------------------- schema compatibility

_ANNOTATIONS = frozenset({"title", "description", "default", "examples"})


def _inline_refs(schema: Any, defs: Mapping[str, Any], seen: frozenset[str] = frozenset()) -> Any:
    """Replace local `$ref`s with the definitions they name (recursive models stay refs)."""
    if isinstance(schema, list):
        return [_inline_refs(item, defs, seen) for item in schema]
    if not isinstance(schema, dict):
        return schema
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        name = ref.removeprefix("#/$defs/")
        if name in defs and name not in seen:
            return _inline_refs(defs[name], defs, seen | {name})
    return {key: _inline_refs(value, defs, seen) for key, value in schema.items() if key != "$defs"}


def _signature(schema: Any) -> Any:
    """A schema without the keywords that do not change which values it accepts."""
    if isinstance(schema, list):
        return [_signature(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    signature: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _ANNOTATIONS:
            continue
        if key == "properties":
            signature[key] = {name: _signature(sub) for name, sub in value.items()}
        else:
            signature[key] = _signature(value)
    return signature


def _branches(schema: dict[str, Any]) -> list[dict[str, Any]]:
    branches = schema.get("anyOf") or schema.get("oneOf")
    return list(branches) if branches else [schema]


def _describe(schema: dict[str, Any]) -> str:
    return json.dumps(_signature(schema), sort_keys=True)


def _accepts(old: dict[str, Any], new: dict[str, Any], where: str) -> list[str]:
    """Problems if `new` rejects values `old` accepted (widening is allowed)."""
    if "properties" in old and "properties" in new:
        return _compare_objects(old, new, where)
    if old.get("type") == "array" and new.get("type") == "array":
        return _accepts(old.get("items", {}), new.get("items", {}), f"{where}[]")
    old_branches, new_branches = _branches(old), _branches(new)
    if len(old_branches) > 1 or len(new_branches) > 1:
        for branch in old_branches:
            if not any(not _accepts(branch, other, where) for other in new_branches):
                return [_type_changed(where, old, new)]
        return []
    old_values = old.get("enum", [old["const"]] if "const" in old else None)
    new_values = new.get("enum", [new["const"]] if "const" in new else None)
    if old_values is not None and new_values is not None:
        rest = {"enum", "const"}
        same_shape = _signature({k: v for k, v in old.items() if k not in rest}) == _signature(
            {k: v for k, v in new.items() if k not in rest}
        )
        if same_shape and all(value in new_values for value in old_values):
            return []
    if _signature(old) == _signature(new):
        return []
    return [_type_changed(where, old, new)]


def _type_changed(where: str, old: dict[str, Any], new: dict[str, Any]) -> str:
    return (
        f"{where}: type changed from {_describe(old)} to {_describe(new)}; stored events hold "
        "the old type. Keep the old type (widen it with a union if needed), or bump the type's "
        "version and add an upcaster that converts old values."
    )


def _compare_objects(old: dict[str, Any], new: dict[str, Any], where: str) -> list[str]:
    problems = []
    old_props: dict[str, Any] = old.get("properties", {})
    new_props: dict[str, Any] = new.get("properties", {})
    for name, old_prop in old_props.items():
        if name not in new_props:
            problems.append(
                f"{where}.{name}: field removed; stored events carry it. Keep the field (give it "
                "a default if it is no longer set), or bump the type's version and add an "
                "upcaster that drops or renames it."
            )
            continue
        problems.extend(_accepts(old_prop, new_props[name], f"{where}.{name}"))
    for name in sorted(set(new.get("required", [])) - set(old.get("required", []))):
        problems.append(
            f"{where}.{name}: newly required; events written before lack it and would no longer "
            "validate. Add a default, or bump the type's version and add an upcaster that fills "
            "it in."
        )
    if old.get("additionalProperties", True) is not False and new.get("additionalProperties") is (
        False
    ):
        problems.append(
            f"{where}: unknown fields are now rejected; events from newer writers carry fields "
            "this reader does not know. Keep extra fields allowed."
        )
    return problems


def schema_breaks(
    frozen: Mapping[str, Any],
    current: Mapping[str, Any],
    upcasters: Mapping[tuple[str, int], Any] = UPCASTERS,
) -> list[str]:
    """Every way `current` would fail to read events described by `frozen`."""
    problems = _compare_objects(
        _inline_refs(frozen["envelope"], frozen["envelope"].get("$defs", {})),
        _inline_refs(current["envelope"], current["envelope"].get("$defs", {})),
        "envelope",
    )
    for name, old in frozen["types"].items():
        new = current["types"].get(name)
        if new is None:
            problems.append(
                f"{name}: event type removed; stored logs contain it and payload() would raise "
                "UnknownEventType. Keep it registered in EVENT_TYPES."
            )
            continue
        old_version, new_version = old["version"], new["version"]
        if new_version < old_version:
            problems.append(f"{name}: version went back from {old_version} to {new_version}")
            continue
        if new_version > old_version:
            missing = [v for v in range(old_version, new_version) if (name, v) not in upcasters]
            problems.extend(
                f"{name}: version bumped to {new_version} but UPCASTERS has no ({name!r}, {v}); "
                f"add an upcaster that lifts v{v} data to v{v + 1}"
                for v in missing
            )
            # With an upcaster chain in place, old data is converted before it is validated:
            # the golden events check that it really validates.
            continue
        problems.extend(
            _compare_objects(
                _inline_refs(old["schema"], old["schema"].get("$defs", {})),
                _inline_refs(new["schema"], new["schema"].get("$defs", {})),
                name,
            )
        )
    return problems


def test_current_schemas_read_everything_the_v1_schemas_describe() -> None:
    problems = schema_breaks(_frozen_schemas(), json_schemas())
    assert not problems, "event schemas broke backward compatibility:\n" + "\n".join(problems)


def _with_type(name: str, model: type[Payload], version: int = 1) -> dict[str, Any]:
    """The current schemas with one type's payload replaced, as if its class had been edited."""
    schemas = copy.deepcopy(json_schemas())
    schemas["types"][name] = {
        "version": version,
        "origin": schemas["types"][name]["origin"],
        "schema": model.model_json_schema(),
    }
    return schemas


class _OpenedWithSeverity(Payload):
    incident_id: str
    group_key: dict[str, str]
    service: str | None = None
    title: str
    fingerprint: str
    severity: str


class _OpenedWithOptionalSeverity(_OpenedWithSeverity):
    severity: str = "unknown"


class _OpenedWithoutTitle(Payload):
    incident_id: str
    group_key: dict[str, str]
    service: str | None = None
    fingerprint: str


class _OpenedWithNumericService(Payload):
    incident_id: str
    group_key: dict[str, str]
    service: int | None = None
    title: str
    fingerprint: str


class _OpenedWithOptionalTitle(Payload):
    incident_id: str
    group_key: dict[str, str]
    service: str | None = None
    title: str | None = None
    fingerprint: str


class _Rule(Payload):
    rule: str
    effect: str = Field(pattern="^(allow|deny|require_approval)$")


class _EvaluatedWithTerseRules(Payload):
    command_id: str
    incident_id: str
    verdict: str
    policy_version: str
    rules: list[_Rule]
    reason: str


def test_schema_guard_names_a_new_required_field_and_the_fix() -> None:
    problems = schema_breaks(_frozen_schemas(), _with_type("IncidentOpened", _OpenedWithSeverity))
    assert len(problems) == 1
    assert problems[0].startswith("IncidentOpened.severity: newly required")
    assert "Add a default" in problems[0]
    assert "upcaster" in problems[0]


def test_schema_guard_names_a_removed_field() -> None:
    problems = schema_breaks(_frozen_schemas(), _with_type("IncidentOpened", _OpenedWithoutTitle))
    assert [p.split(":")[0] for p in problems] == ["IncidentOpened.title"]
    assert "field removed" in problems[0]


def test_schema_guard_names_a_changed_type() -> None:
    problems = schema_breaks(
        _frozen_schemas(), _with_type("IncidentOpened", _OpenedWithNumericService)
    )
    assert len(problems) == 1
    assert problems[0].startswith("IncidentOpened.service: type changed")
    assert '"string"' in problems[0] and '"integer"' in problems[0]


def test_schema_guard_checks_nested_models() -> None:
    problems = schema_breaks(
        _frozen_schemas(), _with_type("PolicyEvaluated", _EvaluatedWithTerseRules)
    )
    assert sorted(p.split(":")[0] for p in problems) == [
        "PolicyEvaluated.rules[].effect",
        "PolicyEvaluated.rules[].reason",
        "PolicyEvaluated.verdict",
    ]


def test_schema_guard_names_a_removed_type() -> None:
    current = copy.deepcopy(json_schemas())
    del current["types"]["Acknowledged"]
    problems = schema_breaks(_frozen_schemas(), current)
    assert len(problems) == 1
    assert problems[0].startswith("Acknowledged: event type removed")


def test_schema_guard_names_an_envelope_change() -> None:
    current = copy.deepcopy(json_schemas())
    current["envelope"]["required"].append("actor")
    del current["envelope"]["properties"]["causation_id"]
    problems = schema_breaks(_frozen_schemas(), current)
    assert sorted(p.split(":")[0] for p in problems) == [
        "envelope.actor",
        "envelope.causation_id",
    ]


@pytest.mark.parametrize("model", [_OpenedWithOptionalSeverity, _OpenedWithOptionalTitle])
def test_schema_guard_allows_compatible_changes(model: type[Payload]) -> None:
    """A new field with a default, or a widened type, reads every old event."""
    assert schema_breaks(_frozen_schemas(), _with_type("IncidentOpened", model)) == []


def test_schema_guard_allows_a_breaking_change_only_with_version_bump_and_upcaster() -> None:
    bumped = _with_type("IncidentOpened", _OpenedWithSeverity, version=2)
    without = schema_breaks(_frozen_schemas(), bumped, upcasters={})
    assert len(without) == 1
    assert "UPCASTERS has no ('IncidentOpened', 1)" in without[0]

    def add_severity(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "severity": "unknown"}

    assert schema_breaks(_frozen_schemas(), bumped, {("IncidentOpened", 1): add_severity}) == []


# --------------------------------------------------------------------------- published schemas


def test_published_schemas_are_current() -> None:
    published = json.loads(PUBLISHED_SCHEMAS.read_text(encoding="utf-8"))
    assert published == json_schemas(), (
        f"{PUBLISHED_SCHEMAS.relative_to(ROOT)} is stale: run "
        "`python scripts/export_schemas.py` and commit it"
    )
    assert PUBLISHED_SCHEMAS.read_text(encoding="utf-8") == _export_script().render()


def test_export_check_fails_on_a_stale_file_and_passes_after_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = _export_script()
    output = tmp_path / "events.json"

    assert script.main(["--check", "--output", str(output)]) == 1
    assert "missing" in capsys.readouterr().err

    stale = json_schemas()
    del stale["types"]["Tick"]
    stale["types"]["IncidentOpened"]["version"] = 0
    output.write_text(script.render(stale), encoding="utf-8")
    assert script.main(["--check", "--output", str(output)]) == 1
    message = capsys.readouterr().err
    assert "stale" in message
    assert "Tick: new type" in message
    assert "IncidentOpened: schema changed" in message
    assert "python scripts/export_schemas.py" in message

    assert script.main(["--output", str(output)]) == 0
    assert script.main(["--check", "--output", str(output)]) == 0
    text = output.read_text(encoding="utf-8")
    assert text.endswith("}\n")
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_schemas_cover_every_type_with_version_and_origin() -> None:
    schemas = json_schemas()
    assert sorted(schemas["types"]) == sorted(EVENT_TYPES)
    for name, spec in EVENT_TYPES.items():
        entry = schemas["types"][name]
        assert entry["version"] == spec.version
        assert entry["origin"] == spec.origin.value
        assert entry["schema"]["additionalProperties"] is True, f"{name} must keep extra fields"
    assert set(schemas["envelope"]["required"]) == {"id", "type", "ts", "stream"}


# --------------------------------------------------------------------------- canonical JSON


def test_canonical_body_is_sorted_compact_utc_and_excludes_the_hash() -> None:
    event = _event(ts=datetime(2025, 3, 14, 4, 17, 5, 250000, tzinfo=timezone(timedelta(hours=2))))
    sealed, body = seal(event, 7, "ab" * 32)
    text = body.decode()
    decoded = json.loads(text)
    assert list(decoded) == sorted(decoded)
    assert list(decoded["data"]) == sorted(decoded["data"])
    assert text == json.dumps(decoded, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert decoded["ts"] == "2025-03-14T02:17:05.250000Z"
    assert "hash" not in decoded
    assert decoded["prev_hash"] == "ab" * 32
    assert decoded["seq"] == 7
    assert sealed.ts == datetime(2025, 3, 14, 2, 17, 5, 250000, tzinfo=UTC)


def test_event_time_is_normalized_to_utc() -> None:
    local = datetime(2025, 3, 13, 21, 17, 5, tzinfo=timezone(timedelta(hours=-5)))
    event = _event(ts=local)
    assert event.ts.utcoffset() == timedelta(0)
    assert event.ts == T0
    assert canonical_body(event) == canonical_body(_event(ts=T0))


def test_naive_event_time_is_rejected() -> None:
    with pytest.raises(ValidationError, match="time zone"):
        _event(ts=datetime(2025, 3, 14, 2, 17, 5))
    with pytest.raises(ValidationError, match="time zone"):
        Event.model_validate_json(
            '{"id":"e","type":"Tick","ts":"2025-03-14T02:17:05","stream":"t"}'
        )


def test_seal_places_and_hashes_the_event() -> None:
    first, first_body = seal(_event(id="evt-1"), 1, GENESIS_HASH)
    second, second_body = seal(_event(id="evt-2"), 2, first.hash)
    assert (first.seq, first.prev_hash) == (1, GENESIS_HASH)
    assert first_body == canonical_body(first)
    assert first.hash == chain_hash(GENESIS_HASH, first_body)
    assert second.prev_hash == first.hash
    assert second.hash == chain_hash(first.hash, second_body)
    assert len(first.hash) == 64 and int(first.hash, 16) >= 0
    # The hash depends on the position: the same event elsewhere in the log hashes differently.
    assert seal(_event(id="evt-1"), 2, GENESIS_HASH)[0].hash != first.hash
    assert seal(_event(id="evt-1"), 1, first.hash)[0].hash != first.hash


def test_reseal_ignores_a_stale_hash() -> None:
    first, _ = seal(_event(), 1, GENESIS_HASH)
    again, _ = seal(first.model_copy(update={"hash": "f" * 64}), 1, GENESIS_HASH)
    assert again.hash == first.hash


def test_store_and_reload_gives_an_equal_event() -> None:
    event = _event(causation_id="evt-0", correlation_id="inc-1")
    sealed, body = seal(event, 42, "cd" * 32)
    loaded = event_from_body(body, sealed.hash)
    assert loaded == sealed
    assert payload(loaded) == _signal()


# Any JSON value the log can hold in `data`: orjson writes integers up to 64 bits and finite
# floats (NaN and infinity would silently become null).
_INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_leaves = st.none() | st.booleans() | _INT64 | st.floats(allow_nan=False, allow_infinity=False)
_leaves = _leaves | st.text(max_size=12)
_json = st.recursive(
    _leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_data = st.dictionaries(st.text(max_size=8), _json, min_size=1, max_size=5)
_times = st.datetimes(
    min_value=datetime(1990, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.builds(
        timezone, st.timedeltas(min_value=timedelta(hours=-14), max_value=timedelta(hours=14))
    ),
)


def _positions(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path of every value inside a JSON document (containers and leaves)."""
    if path:
        yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _positions(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _positions(item, (*path, index))


def _replace(document: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(document, dict):
        return {**document, head: _replace(document[head], rest, new)}
    return [_replace(item, rest, new) if i == head else item for i, item in enumerate(document)]


def _value_at(document: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        document = document[part]
    return document


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_data, ts=_times, seq=st.integers(min_value=0, max_value=2**40))
def test_canonical_body_roundtrips_any_json_payload(
    data: dict[str, Any], ts: datetime, seq: int
) -> None:
    event = Event(id="evt-x", type="SignalReceived", ts=ts, stream="s", data=data)
    sealed, body = seal(event, seq, GENESIS_HASH)
    loaded = event_from_body(body, sealed.hash)
    assert loaded == sealed
    assert canonical_body(loaded) == body
    assert body == orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_data, choice=st.data())
def test_changing_any_single_value_changes_the_hash(data: dict[str, Any], choice: Any) -> None:
    event = Event(id="evt-x", type="SignalReceived", ts=T0, stream="s", data=data)
    original = seal(event, 1, GENESIS_HASH)[0].hash
    path = choice.draw(st.sampled_from(list(_positions(data))), label="path")
    old = _value_at(data, path)
    new = choice.draw(
        _json.filter(lambda value: orjson.dumps(value) != orjson.dumps(old)), label="new value"
    )
    changed = event.model_copy(update={"data": _replace(data, path, new)})
    assert seal(changed, 1, GENESIS_HASH)[0].hash != original


_ENVELOPE_CHANGES: list[tuple[str, Callable[[Event], Any]]] = [
    ("id", lambda e: "evt-2"),
    ("type", lambda e: "Tick"),
    ("v", lambda e: 2),
    ("ts", lambda e: e.ts + timedelta(microseconds=1)),
    ("stream", lambda e: "signals:other"),
    ("correlation_id", lambda e: "inc-1"),
    ("causation_id", lambda e: "evt-0"),
    ("actor", lambda e: "alice@example.com"),
]


@pytest.mark.parametrize(
    ("field", "change"), _ENVELOPE_CHANGES, ids=[f for f, _ in _ENVELOPE_CHANGES]
)
def test_changing_any_envelope_field_changes_the_hash(
    field: str, change: Callable[[Event], Any]
) -> None:
    event = _event()
    changed = event.model_copy(update={field: change(event)})
    assert seal(changed, 1, GENESIS_HASH)[0].hash != seal(event, 1, GENESIS_HASH)[0].hash


# --------------------------------------------------------------------------- make_event, payload


def test_make_event_takes_type_and_version_from_the_payload_class() -> None:
    body = ActionProposed(
        command_id="cmd-1",
        incident_id="inc-1",
        agent="runbook",
        runbook="restart-unhealthy-instance",
        step=0,
        action="restart",
        target="checkout-2",
        timeout_s=120.0,
        rationale="matched",
    )
    event = make_event(body, id="evt-9", ts=T0, stream="incident:inc-1", causation_id="evt-8")
    assert event.type == "ActionProposed"
    assert event.v == EVENT_TYPES["ActionProposed"].version
    assert event.origin is Origin.DECISION
    assert (event.seq, event.prev_hash, event.hash) == (0, "", "")
    assert event.data["params"] == {}
    assert payload_as(event, ActionProposed) == body


def test_make_event_writes_payload_times_as_json() -> None:
    event = make_event(_signal(), id="evt-1", ts=T0, stream="signals")
    assert event.data["starts_at"] == "2025-03-14T02:17:05Z"
    assert event.origin is Origin.INPUT


def test_make_event_rejects_an_unregistered_payload_class() -> None:
    with pytest.raises(UnknownEventType, match="Signal"):
        make_event(Signal(source="a", fingerprint="f", status="firing"), id="e", ts=T0, stream="s")


def test_payload_of_an_unknown_type_raises() -> None:
    event = Event(id="e", type="SignalTeleported", ts=T0, stream="s", data={})
    with pytest.raises(UnknownEventType, match="SignalTeleported"):
        payload(event)
    assert event.origin is Origin.INPUT


def test_payload_as_rejects_the_wrong_type() -> None:
    event = make_event(Tick(timer_id="t1"), id="evt-3", ts=T0, stream="timers")
    with pytest.raises(TypeError, match="evt-3 is Tick, not IncidentOpened"):
        payload_as(event, IncidentOpened)


def test_payload_keeps_fields_from_newer_writers() -> None:
    event = _event().model_copy(update={"data": {**_event().data, "confidence": 0.9}})
    assert payload(event).model_dump()["confidence"] == 0.9


def test_payload_applies_upcasters_from_the_stored_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = EVENT_TYPES["PolicyEvaluated"]
    monkeypatch.setitem(
        EVENT_TYPES, "PolicyEvaluated", EventSpec(spec.model, spec.version + 1, spec.origin)
    )

    def v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
        lifted = {k: v for k, v in data.items() if k != "outcomes"}
        return {**lifted, "rules": data["outcomes"]}

    monkeypatch.setitem(UPCASTERS, ("PolicyEvaluated", spec.version), v1_to_v2)
    old = Event(
        id="e",
        type="PolicyEvaluated",
        v=spec.version,
        ts=T0,
        stream="incident:inc-1",
        data={
            "command_id": "cmd-1",
            "incident_id": "inc-1",
            "verdict": "deny",
            "policy_version": "sha256:0123456789abcdef",
            "outcomes": [{"rule": "freeze", "effect": "deny", "reason": "deploy freeze"}],
            "reason": "deploy freeze",
        },
    )
    evaluated = payload_as(old, PolicyEvaluated)
    assert evaluated.rules[0].rule == "freeze"
    assert "outcomes" not in evaluated.model_dump()


_maybe_times = st.none() | _times | st.datetimes(timezones=st.just(UTC))
_texts = st.dictionaries(st.text(max_size=8), st.text(max_size=12), max_size=4)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    labels=_texts,
    annotations=_texts,
    starts_at=_maybe_times,
    ends_at=_maybe_times,
    url=st.none() | st.text(max_size=12),
    extra=st.none() | st.text(max_size=6),
)
def test_a_received_signal_is_recorded_as_pydantic_dumps_it(
    labels: dict[str, str],
    annotations: dict[str, str],
    starts_at: datetime | None,
    ends_at: datetime | None,
    url: str | None,
    extra: str | None,
) -> None:
    # the envelope writes a received signal's data itself (the ingest hot path): it must be
    # what pydantic writes, for any times (in UTC or not) and with extra fields
    fields: dict[str, Any] = {} if extra is None else {"extra_field": extra}
    body = SignalReceived(
        source="alertmanager",
        fingerprint="fp",
        status="firing",
        labels=labels,
        annotations=annotations,
        starts_at=starts_at,
        ends_at=ends_at,
        generator_url=url,
        delivery_id=extra,
        **fields,
    )
    event = make_event(body, id="e-1", ts=T0, stream="signal:fp")
    assert event.data == body.model_dump(mode="json")
    assert orjson.dumps(event.data) == orjson.dumps(body.model_dump(mode="json"))
