"""onduty.yaml: what loads, what it means, and what a user sees when it is wrong."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from onduty.config import (
    Autonomy,
    Config,
    ConfigError,
    Correlation,
    Step,
    format_duration,
    parse_config,
    parse_duration,
    policy_version,
)
from onduty.configfile import load_config

GOLDEN_EVENTS = Path(__file__).resolve().parent / "fixtures" / "events_v1.jsonl"

REALISTIC = """\
store: postgresql://onduty@db.internal:5432/onduty?schema=ops
bus: nats://127.0.0.1:4222
snapshot_every: 500

services:
  - name: checkout
    tier: critical
    region: eu-west-1
    autonomy: approve
    instances: [checkout-1, checkout-2, checkout-3]
  - name: search-api
    tier: high
    autonomy: act
    instances: [search-1, search-2]
  - name: reports
    tier: low
    autonomy: observe

correlation:
  group_by: [service, alertname, region]
  group_wait: 30s
  flap_threshold: 3
  flap_window: 10m

runbooks:
  - name: restart-unhealthy-instance
    when: labels.alertname == "HighErrorRate" && labels.severity in ["critical", "page"]
    priority: 10
    do:
      - action: restart
        target: "{{ labels.instance }}"
        params: {graceful: true, drain_seconds: 20}
        timeout: 2m
    verify:
      signal_resolved_within: 5m
  - name: scale-out-on-latency
    when: labels.alertname == "HighLatency"
    autonomy: suggest
    do:
      - action: scale
        target: "{{ labels.service }}"
        params: {replicas: "+2"}
    undo:
      - action: scale
        target: "{{ labels.service }}"
        params: {replicas: "-2"}
        timeout: 250ms

policy:
  guardrails:
    - name: restart-rate
      rate: {action: restart, max: 3, per: 1h, key: target}
    - name: half-the-fleet
      concurrent: {max_fraction: 0.5}
    - name: two-at-a-time
      concurrent: {max: 2, scope: service}
    - name: deploy-freeze
      when: labels.freeze == "true"
      effect: deny
    - name: critical-needs-a-human
      when: service.tier == "critical"
      effect: require_approval
  approvals:
    timeout: 15m
    notify: [on-call, "#checkout-ops"]

escalation:
  default:
    - notify: [on-call]
      wait: 5m
    - notify: [on-call, team-lead]
      wait: 15m
    - notify: [head-of-operations]
"""


def _document() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(REALISTIC)
    return document


def _problems(document: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(document, source="onduty.yaml")
    assert str(caught.value).startswith("onduty.yaml: ")
    return caught.value.problems


def _write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "onduty.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- valid configs


def test_realistic_config_loads_with_its_meaning(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, REALISTIC))

    assert config.store == "postgresql://onduty@db.internal:5432/onduty?schema=ops"
    assert config.snapshot_every == 500
    checkout, search, reports = config.services
    assert (checkout.name, checkout.tier, checkout.autonomy) == ("checkout", "critical", 2)
    assert checkout.autonomy is Autonomy.APPROVE
    assert search.autonomy is Autonomy.ACT
    assert reports.autonomy is Autonomy.OBSERVE and reports.instances == []
    assert config.correlation.group_wait == timedelta(seconds=30)
    assert config.correlation.flap_window == timedelta(minutes=10)

    restart, scale = config.runbooks
    assert restart.do[0].timeout == timedelta(minutes=2)
    assert restart.do[0].params == {"graceful": True, "drain_seconds": 20}
    assert restart.verify.signal_resolved_within == timedelta(minutes=5)
    assert restart.autonomy is None
    assert scale.autonomy is Autonomy.SUGGEST
    assert scale.do[0].timeout == timedelta(seconds=30)
    assert scale.undo[0].timeout == timedelta(milliseconds=250)

    rate, fraction, count, freeze, human = config.policy.guardrails
    assert rate.rate is not None and rate.rate.per == timedelta(hours=1) and rate.rate.max == 3
    assert fraction.concurrent is not None and fraction.concurrent.max_fraction == 0.5
    assert count.concurrent is not None and count.concurrent.max == 2
    assert (freeze.when, freeze.effect) == ('labels.freeze == "true"', "deny")
    assert human.effect == "require_approval"
    assert config.policy.approvals.timeout == timedelta(minutes=15)
    assert config.policy.approvals.on_timeout == "deny"
    assert [tier.notify for tier in config.escalation.default] == [
        ["on-call"],
        ["on-call", "team-lead"],
        ["head-of-operations"],
    ]
    assert config.escalation.default[2].wait == timedelta(minutes=5)


@pytest.mark.parametrize("text", ["", "# nothing configured yet\n", "{}\n"])
def test_empty_config_gives_safe_defaults(tmp_path: Path, text: str) -> None:
    config = load_config(_write(tmp_path, text))
    assert config == Config()
    assert config.services == [] and config.runbooks == []
    assert config.policy.approvals.on_timeout == "deny"
    assert config.escalation.default[0].notify == ["on-call"]


def test_autonomy_levels_are_case_insensitive() -> None:
    document = {"services": [{"name": "a", "autonomy": "ACT"}, {"name": "b", "autonomy": "Act"}]}
    assert [s.autonomy for s in parse_config(document).services] == [Autonomy.ACT] * 2
    assert Autonomy.OBSERVE < Autonomy.SUGGEST < Autonomy.APPROVE < Autonomy.ACT


def test_config_recorded_in_the_v1_log_still_validates() -> None:
    """Replays run against the PolicyActivated config in the log; old ones must stay valid."""
    for line in GOLDEN_EVENTS.read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        if event["type"] == "PolicyActivated":
            document = event["data"]["config"]
            assert policy_version(document) == event["data"]["version"]
            config = Config.model_validate(document)
            assert config.services[0].autonomy is Autonomy.APPROVE
            assert config.runbooks[0].do[0].timeout == timedelta(minutes=2)
            return
    pytest.fail("the golden log has no PolicyActivated event")


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("written", "meaning", "serialized"),
    [
        ("30s", timedelta(seconds=30), "30s"),
        ("2m", timedelta(minutes=2), "2m"),
        ("1h", timedelta(hours=1), "1h"),
        ("1d", timedelta(days=1), "1d"),
        ("250ms", timedelta(milliseconds=250), "250ms"),
        (90, timedelta(seconds=90), "90s"),
        (0.5, timedelta(milliseconds=500), "500ms"),
        ("90", timedelta(seconds=90), "90s"),
        ("1.5h", timedelta(minutes=90), "90m"),
        ("120s", timedelta(minutes=2), "2m"),
        ("1.5s", timedelta(seconds=1.5), "1.5s"),
        (" 45 s ", timedelta(seconds=45), "45s"),
        ("0s", timedelta(0), "0s"),
    ],
)
def test_durations_parse_and_serialize_back(
    written: str | int | float, meaning: timedelta, serialized: str
) -> None:
    step = Step.model_validate({"action": "restart", "target": "x", "timeout": written})
    assert step.timeout == meaning
    assert step.model_dump(mode="json")["timeout"] == serialized
    assert parse_duration(serialized) == meaning


@settings(max_examples=200, deadline=None)
@given(
    st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=20_000))
    | st.integers(min_value=0, max_value=10**9).map(lambda ms: timedelta(milliseconds=ms))
)
def test_every_duration_serializes_to_a_string_that_reads_back_equal(value: timedelta) -> None:
    text = format_duration(value)
    assert "e" not in text, "no exponent notation in a config file"
    assert parse_duration(text) == value


EXPECTED_DURATION = "expected a duration such as 30s, 2m or 1h"


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        *(
            (text, f"{EXPECTED_DURATION}, got {text!r}")
            for text in ("5 minutes", "1m30s", "-5s", "soon", "", "1w")
        ),
        (True, EXPECTED_DURATION),
        (None, f"{EXPECTED_DURATION}, got None"),
        ([30], f"{EXPECTED_DURATION}, got [30]"),
        (-1, "a duration cannot be negative"),
    ],
)
def test_bad_durations_are_rejected(bad: Any, reason: str) -> None:
    assert _problems({"correlation": {"flap_window": bad}}) == [
        f"correlation.flap_window: {reason}"
    ]


def test_duration_cannot_be_negative_even_when_given_as_timedelta() -> None:
    with pytest.raises(ValueError, match="negative"):
        Correlation(flap_window=timedelta(seconds=-1))


# --------------------------------------------------------------------------- bad input


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set a dotted path such as 'runbooks.0.do.0.target' in a document."""

    def change(document: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = document
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return change


def _rename(path: str, old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        node: Any = document
        for part in filter(None, path.split(".")):
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[new] = node.pop(old)

    return change


def _append(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        node: Any = document
        for part in path.split("."):
            node = node[int(part)] if isinstance(node, list) else node[part]
        node.append(copy.deepcopy(value))

    return change


BAD_INPUTS: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    # (case, change to the realistic document, field path, words of the reason)
    ("typo at the top", _rename("", "runbooks", "runbook"), "runbook", "unknown field"),
    (
        "typo in a step",
        _rename("runbooks.0.do.0", "timeout", "timout"),
        "runbooks[0].do[0].timout",
        "unknown field",
    ),
    ("list expected", _set("services", "checkout"), "services", "valid list"),
    ("number expected", _set("snapshot_every", "often"), "snapshot_every", "valid integer"),
    ("string expected", _set("runbooks.1.when", True), "runbooks[1].when", "valid string"),
    (
        "out of range",
        _set("correlation.flap_threshold", 1),
        "correlation.flap_threshold",
        "greater than or equal to 2",
    ),
    (
        "bad autonomy",
        _set("services.1.autonomy", "yolo"),
        "services[1].autonomy",
        "unknown autonomy level 'yolo'; expected one of observe, suggest, approve, act",
    ),
    (
        "bad runbook autonomy",
        _set("runbooks.1.autonomy", "full"),
        "runbooks[1].autonomy",
        "unknown autonomy level 'full'",
    ),
    ("bad tier", _set("services.0.tier", "gold"), "services[0].tier", "'critical'"),
    (
        "bad duration",
        _set("policy.guardrails.0.rate.per", "an hour"),
        "policy.guardrails[0].rate.per",
        "expected a duration such as 30s, 2m or 1h, got 'an hour'",
    ),
    (
        "CEL syntax error in a runbook",
        _set("runbooks.0.when", 'labels.alertname == "HighErrorRate" &&'),
        "runbooks[0].when",
        "not a valid CEL expression",
    ),
    (
        "CEL syntax error in a guardrail",
        _set("policy.guardrails.3.when", "labels.freeze = 'true'"),
        "policy.guardrails[3].when",
        "not a valid CEL expression",
    ),
    (
        "bad template",
        _set("runbooks.0.do.0.target", "{{ labels.instance "),
        "runbooks[0].do[0].target",
        "not a valid template (line 1)",
    ),
    (
        "unclosed template block",
        _set("runbooks.1.undo.0.target", "{% if labels.service %}{{ labels.service }}"),
        "runbooks[1].undo[0].target",
        "not a valid template",
    ),
    (
        "bad action name",
        _set("runbooks.0.do.0.action", "Restart Now"),
        "runbooks[0].do[0].action",
        "pattern",
    ),
    ("runbook without steps", _set("runbooks.0.do", []), "runbooks[0].do", "at least 1 item"),
    (
        "missing field",
        _set("runbooks.0", {"name": "r", "do": [{"action": "page", "target": "x"}]}),
        "runbooks[0].when",
        "missing",
    ),
    (
        "duplicate service",
        _append("services", {"name": "checkout"}),
        "services[3].name",
        "the name 'checkout' is already used by services[0]",
    ),
    (
        "duplicate runbook",
        _set("runbooks.1.name", "restart-unhealthy-instance"),
        "runbooks[1].name",
        "already used by runbooks[0]",
    ),
    (
        "duplicate guardrail",
        _append("policy.guardrails", {"name": "deploy-freeze", "when": "true", "effect": "deny"}),
        "policy.guardrails[5].name",
        "the name 'deploy-freeze' is already used by policy.guardrails[3]",
    ),
    (
        "instance under two services",
        _set("services.1.instances", ["search-1", "checkout-2"]),
        "services[1].instances[1]",
        "'checkout-2' already belongs to service 'checkout'",
    ),
    (
        "instance twice in one service",
        _set("services.1.instances", ["search-1", "search-1"]),
        "services[1].instances",
        "'search-1' is listed twice",
    ),
    (
        "guardrail with two kinds",
        _set("policy.guardrails.0.concurrent", {"max": 1}),
        "policy.guardrails[0]",
        "exactly one of: rate, concurrent",
    ),
    (
        "guardrail with no kind",
        _set("policy.guardrails.1", {"name": "nothing"}),
        "policy.guardrails[1]",
        "exactly one of: rate, concurrent",
    ),
    (
        "condition guardrail without an effect",
        _set("policy.guardrails.3", {"name": "freeze", "when": "true"}),
        "policy.guardrails[3]",
        "exactly one of",
    ),
    (
        "effect without a condition",
        _set("policy.guardrails.3", {"name": "freeze", "effect": "deny"}),
        "policy.guardrails[3]",
        "needs `when`",
    ),
    (
        "concurrency with max and max_fraction",
        _set("policy.guardrails.1.concurrent", {"max": 2, "max_fraction": 0.5}),
        "policy.guardrails[1].concurrent",
        "exactly one of max or max_fraction",
    ),
    (
        "concurrency fraction above one",
        _set("policy.guardrails.1.concurrent", {"max_fraction": 1.5}),
        "policy.guardrails[1].concurrent.max_fraction",
        "less than or equal to 1",
    ),
    (
        "approval timeout that approves",
        _set("policy.approvals.on_timeout", "approve"),
        "policy.approvals.on_timeout",
        "'deny'",
    ),
    (
        "escalation tier without anyone",
        _set("escalation.default.1.notify", []),
        "escalation.default[1].notify",
        "at least 1",
    ),
]


@pytest.mark.parametrize(
    ("change", "where", "reason"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input_names_the_field_and_the_reason(
    change: Callable[[dict[str, Any]], None], where: str, reason: str
) -> None:
    document = _document()
    change(document)
    problems = _problems(document)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{where}: "), problems
    assert reason in problems[0], problems


def test_cel_error_reports_the_position() -> None:
    document = _document()
    document["runbooks"][0]["when"] = 'labels.alertname == "HighErrorRate" &&'
    (problem,) = _problems(document)
    assert ":1:39:" in problem, problem


def test_every_bad_field_is_reported_at_once() -> None:
    document = _document()
    document["services"][0]["autonomy"] = "yolo"
    document["correlation"]["group_wait"] = "later"
    document["runbooks"][1]["when"] = "labels.alertname =="
    problems = _problems(document)
    assert sorted(p.split(": ")[0] for p in problems) == [
        "correlation.group_wait",
        "runbooks[1].when",
        "services[0].autonomy",
    ]


def test_all_duplicate_names_are_reported_at_once() -> None:
    document = _document()
    document["services"].append({"name": "reports"})
    document["runbooks"].append(copy.deepcopy(document["runbooks"][0]))
    problems = _problems(document)
    assert [p.split(": ")[0] for p in problems] == ["services[3].name", "runbooks[2].name"]


@pytest.mark.parametrize("document", [["services"], "checkout", 42])
def test_top_level_must_be_a_mapping(document: Any) -> None:
    assert _problems(document) == ["(top level): expected a mapping of settings"]


@pytest.mark.parametrize(
    ("text", "where", "reason"),
    [
        ("services:\n  - name: checkout\n  tier: critical\n", "line 3, column 3", "expected"),
        ("services:\n  - name: checkout\n    tier: [critical\n", "line 4, column 1", "']'"),
        ("services:\n\t- name: checkout\n", "line 2, column 1", "'\\t'"),
        ("store: sqlite:///x\nbus: a: b\n", "line 2, column 7", "mapping values"),
    ],
)
def test_yaml_syntax_error_names_line_and_column(
    tmp_path: Path, text: str, where: str, reason: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (problem,) = caught.value.problems
    assert problem.startswith(f"{where}: not valid YAML: "), problem
    assert reason in problem
    assert caught.value.source == str(path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "onduty.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == ["cannot read the file: No such file or directory"]
    assert str(caught.value).startswith(str(path))


def test_file_that_is_not_text(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, b"services: [\xff\xfe]\n"))
    assert caught.value.problems == ["cannot read the file: not UTF-8 text (byte 11)"]


def test_config_error_from_a_file_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "runbook: []\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f"{path}: runbook: unknown field (line 1; did you mean 'runbooks'?)"
    )


# --------------------------------------------------------------------------- versions


def test_version_is_stable_for_equal_content(tmp_path: Path) -> None:
    first = load_config(_write(tmp_path, REALISTIC))
    second = parse_config(_document())
    assert first.version == second.version
    assert first.version.startswith("sha256:") and len(first.version) == len("sha256:") + 16
    # Same meaning, different spelling: durations and autonomy are normalized.
    respelled = _document()
    respelled["correlation"]["group_wait"] = 30
    respelled["correlation"]["flap_window"] = "600s"
    respelled["services"][0]["autonomy"] = "APPROVE"
    assert parse_config(respelled).version == first.version


POLICY_CHANGES: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
    ("snapshot_every", _set("snapshot_every", 1000)),
    ("service autonomy", _set("services.0.autonomy", "act")),
    ("service tier", _set("services.2.tier", "standard")),
    ("service instances", _set("services.1.instances", ["search-1", "search-2", "search-3"])),
    ("new service", _append("services", {"name": "billing"})),
    ("correlation group_by", _set("correlation.group_by", ["service"])),
    ("correlation group_wait", _set("correlation.group_wait", "31s")),
    ("runbook condition", _set("runbooks.0.when", 'labels.alertname == "HighErrors"')),
    ("step target", _set("runbooks.0.do.0.target", "{{ labels.pod }}")),
    ("step params", _set("runbooks.0.do.0.params", {"graceful": False, "drain_seconds": 20})),
    ("step timeout", _set("runbooks.0.do.0.timeout", "3m")),
    ("verify window", _set("runbooks.0.verify.signal_resolved_within", "10m")),
    ("runbook priority", _set("runbooks.0.priority", 11)),
    ("runbook autonomy", _set("runbooks.0.autonomy", "observe")),
    ("rate limit", _set("policy.guardrails.0.rate.max", 4)),
    ("concurrency", _set("policy.guardrails.1.concurrent.max_fraction", 0.25)),
    ("guardrail effect", _set("policy.guardrails.3.effect", "require_approval")),
    ("guardrail order", lambda d: d["policy"]["guardrails"].reverse()),
    ("approval timeout", _set("policy.approvals.timeout", "20m")),
    ("approval notify", _set("policy.approvals.notify", ["on-call"])),
    ("escalation wait", _set("escalation.default.0.wait", "2m")),
    ("escalation notify", _set("escalation.default.2.notify", ["cto"])),
]


@pytest.mark.parametrize(
    "change", [c for _, c in POLICY_CHANGES], ids=[name for name, _ in POLICY_CHANGES]
)
def test_version_changes_when_any_policy_field_changes(
    change: Callable[[dict[str, Any]], None],
) -> None:
    document = _document()
    change(document)
    assert parse_config(document).version != parse_config(_document()).version


def test_version_ignores_where_the_shell_keeps_its_data() -> None:
    document = _document()
    document["store"] = "postgresql://onduty@db.internal/onduty"
    document["bus"] = "memory"
    moved = parse_config(document)
    original = parse_config(_document())
    assert moved != original
    assert moved.version == original.version
    assert "store" not in original.policy_document()
    assert "bus" not in original.policy_document()


def test_policy_document_roundtrips_to_an_equal_config() -> None:
    config = parse_config(_document())
    document = config.policy_document()
    assert json.loads(json.dumps(document)) == document, "the document must be plain JSON"
    rebuilt = Config.model_validate(document)
    assert rebuilt.policy_document() == document
    assert rebuilt.version == config.version
    assert rebuilt == config.model_copy(update={"store": Config().store, "bus": Config().bus})
    assert Config.model_validate({**document, "store": config.store, "bus": config.bus}) == config


def test_version_is_the_hash_of_the_policy_document() -> None:
    config = parse_config(_document())
    assert config.version == policy_version(config.policy_document())


def test_quality_problems_name_their_field() -> None:
    from onduty.config import ConfigError, parse_config

    cases = {
        "quality.heartbeats[0].services[1]: 'nope' is not a service": {
            "services": [{"name": "web"}],
            "quality": {
                "heartbeats": [{"source": "am", "every": "5m", "services": ["web", "nope"]}]
            },
        },
        "quality.heartbeats[1].source: the source 'am' is already used by quality.heartbeats[0]": {
            "quality": {
                "heartbeats": [{"source": "am", "every": "5m"}, {"source": "am", "every": "1m"}]
            },
        },
        "quality.max_rejected_fraction": {"quality": {"max_rejected_fraction": 2}},
        "quality.drift.threshold": {"quality": {"drift": {"threshold": 0}}},
        "quality.heartbeats: not judged on a fleet yet": {
            "store": "postgresql://127.0.0.1/test",
            "bus": "nats://127.0.0.1:4222",
            "quality": {"heartbeats": [{"source": "am", "every": "5m"}]},
        },
    }
    for expected, document in cases.items():
        try:
            parse_config(document)
        except ConfigError as problems:
            assert expected in str(problems), (expected, str(problems))
        else:
            raise AssertionError(f"accepted: {document}")
