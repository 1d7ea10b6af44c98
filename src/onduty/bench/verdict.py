"""The verdict: one proposal against a 20-rule policy, compiled once, evaluated many times.

The policy (every kind: 5 rate limits, 2 concurrency limits, 2 blast radii, 2 outage brakes,
2 freezes, 7 conditions; 8 CEL programs with the one scoped `when`) governs a restart on the
benchmark fleet (6 services, 300 instances) with a day of history (the manager keeps a day of
allowed actions), a few actions in flight and a few instances down. Measured, per call:

- verdict: `Policy.evaluate` on facts whose CEL variables are prepared, as the manager hands
  them; p50 and p99 over 20,000 verdicts (2,000 with `quick`). Targets: p50 < 50 µs, p99 < 200 µs.
- verdict + prepare: the manager's whole cost per proposal (the variables converted to CEL
  values once, then the verdict).
- where the time goes: each kind of rule alone (the sum of its rules' `check`).
- the same 8 conditions with three CEL setups, µs per condition evaluation: the Rust-backed
  `cel` with a prepared `cel.Context` (what onduty does), the same with a Python dict per call,
  and the pure-Python `cel-python` (`celpy`) with its activation converted once. The peer of
  each is the prepared Rust `cel`.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import cel

from onduty.bench._workload import FLEET, Row, bench_config, row
from onduty.config import Autonomy, Config, parse_config
from onduty.events import PolicyEvaluated
from onduty.expressions import prepare
from onduty.govern import Facts, Policy
from onduty.govern.lint import condition_variables
from onduty.state import ActionRecord
from onduty.think.proposal import Proposal

FULL = 20_000
QUICK = 2_000
NOW = datetime(2026, 1, 7, 14, 30, tzinfo=UTC)  # a Wednesday afternoon: no freeze applies

CONDITIONS = {
    "critical-needs-a-human": ('service.tier == "critical"', "require_approval"),
    "rollback-needs-a-human": (
        'action.name == "deploy.rollback" && service.tier in ["critical", "high"]',
        "require_approval",
    ),
    "night-changes-need-a-human": (
        '(now.getHours() < 6 || now.getHours() >= 22) && action.name != "process.restart"',
        "require_approval",
    ),
    "no-drain-of-small-services": (
        'action.name == "traffic.drain" && service.instances < 3',
        "deny",
    ),
    "hands-off-flapping": ("incident.flapping", "deny"),
    "paged-storms-need-a-human": (
        'signal.labels.severity == "critical" && incident.signals > 3',
        "require_approval",
    ),
    "routine-restarts": (
        'action.name == "process.restart" && service.tier in ["standard", "low"] '
        "&& !incident.flapping",
        "allow",
    ),
}
SCOPE = 'service.tier != "low"'


def policy_config() -> Config:
    document = bench_config().policy_document()
    restart, rollback, drain = "process.restart", "deploy.rollback", "traffic.drain"
    document["policy"]["guardrails"] = [
        {"name": "restart-budget", "rate": {"action": restart, "max": 3, "per": "1h"}},
        {
            "name": "rollback-budget",
            "rate": {"action": rollback, "max": 2, "per": "6h", "key": "service"},
        },
        {
            "name": "drain-budget",
            "rate": {"action": drain, "max": 5, "per": "1h", "key": "service"},
        },
        {"name": "service-budget", "rate": {"max": 20, "per": "1h", "key": "service"}},
        {"name": "runbook-budget", "rate": {"max": 30, "per": "1h", "key": "runbook"}},
        {"name": "a-few-at-a-time", "concurrent": {"max": 4}, "when": SCOPE},
        {"name": "a-tenth-in-flight", "concurrent": {"max_fraction": 0.1}},
        {"name": "restart-capacity", "blast": {"action": restart, "max_fraction": 0.25}},
        {"name": "drain-capacity", "blast": {"action": drain, "max": 5, "window": "15m"}},
        {"name": "outage-brake", "outage": {"max_fraction": 0.5}},
        {"name": "instance-storm", "outage": {"max_fraction": 0.2, "of": "instances"}},
        {
            "name": "weekend-freeze",
            "freeze": {"cron": "0 18 * * 5", "duration": "62h", "timezone": "Europe/Berlin"},
        },
        {
            "name": "year-end-freeze",
            "freeze": {
                "ranges": [{"from": "2026-12-23T00:00:00+01:00", "to": "2027-01-04T09:00:00+01:00"}]
            },
        },
        *(
            {"name": name, "when": when, "effect": effect}
            for name, (when, effect) in CONDITIONS.items()
        ),
    ]
    return parse_config(document)


def situation(config: Config) -> tuple[Facts, dict[str, Any]]:
    """A restart of web-17 for InstanceDown, with a day of history behind it."""
    services = {s.name: s for s in config.services}
    instances = [(name, f"{name}-{i}") for name, (_t, _a, count) in FLEET.items()
                 for i in range(1, count + 1)]  # fmt: skip
    actions = ("process.restart", "process.restart", "traffic.drain", "deploy.rollback")
    history = []
    for index in range(700):  # ~one allowed action every two minutes, for a day
        service, instance = instances[(index * 37) % len(instances)]
        action = actions[index % len(actions)]
        target = service if action == "deploy.rollback" else instance
        at = NOW - timedelta(seconds=86_400 * (700 - index) / 700)
        history.append(ActionRecord(at, action, target, service, "restart-crashed-instance"))
    web = services["web"]
    labels = {"alertname": "InstanceDown", "instance": "web-17", "service": "web",
              "severity": "critical", "job": "web"}  # fmt: skip
    variables = condition_variables(
        service=web,
        service_name="web",
        autonomy=web.autonomy,
        labels=labels,
        annotations={"summary": "InstanceDown on web-17"},
        incident_id="inc-0123456789abcdef",
        action="process.restart",
        runbook="restart-crashed-instance",
        params={},
        target="web-17",
        target_service="web",
        now=NOW,
        source="alertmanager",
        fingerprint="InstanceDown:web-17",
    )
    facts = Facts(
        proposal=Proposal(
            "runbook", "restart-crashed-instance", 0, "process.restart", "web-17", "InstanceDown"
        ),
        now=NOW,
        incident_service="web",
        target_service="web",
        target_known=True,
        autonomy=Autonomy.ACT,
        approved_by=None,
        history=tuple(history),
        in_flight_by_service={"web": 2, "api": 1},
        service_size=len(web.instances),
        service_instances=tuple(web.instances),
        in_flight_targets=frozenset({"web-3", "web-40"}),
        firing_by_instance={
            "web-17": frozenset({"InstanceDown"}),
            "web-5": frozenset({"HighLatency"}),
            "web-88": frozenset({"InstanceDown", "HighMemoryUsage"}),
        },
        alerting_services=2,
        total_services=len(services),
        alerting_instances=5,
        total_instances=sum(len(s.instances) for s in services.values()),
        variables=prepare(variables),
    )
    return facts, variables


def _percentiles(call: Callable[[], object], count: int) -> tuple[float, float]:
    """p50 and p99 of `count` calls, in µs (after a warm-up)."""
    for _ in range(min(count // 10, 500)):
        call()
    clock = time.perf_counter_ns
    samples = [0] * count
    gc.collect()
    gc.disable()
    try:
        for index in range(count):
            started = clock()
            call()
            samples[index] = clock() - started
    finally:
        gc.enable()
    samples.sort()
    return samples[count // 2] / 1000, samples[min(count - 1, int(count * 0.99))] / 1000


def _per_call(call: Callable[[], object], count: int) -> float:
    """Mean µs per call over `count` calls (one timer around all of them; best of 3)."""
    best = float("inf")
    for _ in range(3):
        gc.collect()
        started = time.perf_counter()
        for _ in range(count):
            call()
        best = min(best, time.perf_counter() - started)
    return best / count * 1e6


def _celpy_value(value: Any) -> Any:
    from celpy import celtypes

    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int):
        return celtypes.IntType(value)
    if isinstance(value, float):
        return celtypes.DoubleType(value)
    if isinstance(value, str):
        return celtypes.StringType(value)
    if isinstance(value, datetime):
        return celtypes.TimestampType(value)
    if isinstance(value, dict):
        return celtypes.MapType({celtypes.StringType(k): _celpy_value(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return celtypes.ListType([_celpy_value(v) for v in value])
    raise TypeError(f"no CEL value for {value!r}")


def _celpy_row(sources: list[str], variables: dict[str, Any], rounds: int, rust: float) -> Row:
    try:
        import celpy
    except ImportError:
        return row(
            "CEL: cel-python (celpy, pure Python): not installed "
            "(`pip install cel-python` to compare)",
            "n/a",
            0.0,
            "µs/eval",
            f"cel + prepared Context: {rust:.2f} µs/eval",
            0.0,
        ) | {"ratio": "n/a"}
    environment = celpy.Environment()
    programs = [environment.program(environment.compile(source)) for source in sources]
    activation = {name: _celpy_value(value) for name, value in variables.items()}
    rust_results = [cel.compile(source).execute(variables) for source in sources]
    celpy_results = [bool(program.evaluate(activation)) for program in programs]
    same = "same results" if celpy_results == rust_results else "RESULTS DIFFER"

    def every() -> None:
        for program in programs:
            program.evaluate(activation)

    per_eval = _per_call(every, rounds) / len(programs)
    return row(
        f"CEL: cel-python {_version('cel-python')} (celpy, pure Python), activation converted "
        f"once, {len(programs)} conditions ({same})",
        f"{per_eval:,.1f} µs/eval",
        per_eval,
        "µs/eval",
        f"cel + prepared Context: {rust:.2f} µs/eval",
        per_eval / rust,
    )


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


def run(quick: bool = False) -> list[Row]:
    count = QUICK if quick else FULL
    config = policy_config()
    policy = Policy(config)
    facts, variables = situation(config)
    sources = [when for when, _effect in CONDITIONS.values()] + [SCOPE]
    assert len(config.policy.guardrails) == 20 and len(sources) == 8
    verdict = policy.evaluate(facts, command_id="cmd", incident_id="inc")
    opinions = ", ".join(f"{o.rule}={o.effect}" for o in verdict.rules)

    def evaluate() -> object:
        return policy.evaluate(facts, command_id="cmd", incident_id="inc")

    def prepare_and_evaluate() -> object:
        prepared = Facts(**{**facts.__dict__, "variables": prepare(variables)})
        return policy.evaluate(prepared, command_id="cmd", incident_id="inc")

    bare = Facts(**{**facts.__dict__, "history": ()})

    def evaluate_without_history() -> object:
        return policy.evaluate(bare, command_id="cmd", incident_id="inc")

    programs = [cel.compile(source) for source in sources]
    prepared = prepare(variables)

    def with_context() -> None:
        for program in programs:
            program.execute(prepared)

    p50, p99 = _percentiles(evaluate, count)
    cel50, cel99 = _percentiles(with_context, count)
    full50, full99 = _percentiles(prepare_and_evaluate, count)
    bare50, bare99 = _percentiles(evaluate_without_history, count)
    peer = f"the policy's {len(programs)} CEL conditions alone, Rust `cel`, prepared cel.Context"
    rows = [
        row(
            f"verdict: Policy.evaluate, 20 rules (8 CEL), {len(facts.history)} past actions, "
            f"p50 of {count:,} (→ {verdict.verdict}: {opinions}); target p50 < 50 µs",
            f"{p50:,.1f} µs ({p50 / 50:.2f}x the target)",
            p50,
            "µs",
            f"{peer}, p50: {cel50:,.2f} µs",
            p50 / cel50,
        ),
        row(
            f"verdict: p99 of {count:,}; target p99 < 200 µs",
            f"{p99:,.1f} µs ({p99 / 200:.2f}x the target)",
            p99,
            "µs",
            f"{peer}, p99: {cel99:,.2f} µs",
            p99 / cel99,
        ),
        row(
            "verdict without history (the fixed cost: rules that scan no past actions), p50 / p99",
            f"{bare50:,.1f} / {bare99:,.1f} µs",
            bare50,
            "µs",
            "target p50 < 50 µs",
            bare50 / 50,
        ),
        row(
            "verdict + prepare(variables): the manager's cost per proposal, p50 / p99",
            f"{full50:,.1f} / {full99:,.1f} µs",
            full50,
            "µs",
            "target p50 < 50 µs",
            full50 / 50,
        ),
    ]
    specs = {spec.name: spec for spec in config.policy.guardrails}
    by_kind: dict[str, list[Any]] = {}
    built_in = [rule for rule in policy.rules if rule.name not in specs]
    for rule in policy.rules:
        spec = specs.get(rule.name)
        if spec is not None:
            scoped = " (scoped)" if spec.when and spec.kind != "condition" else ""
            by_kind.setdefault(spec.kind + scoped, []).append(rule)
    by_kind[f"built-in ({', '.join(rule.name for rule in built_in)})"] = built_in
    rounds = max(200, count // 10)
    event = _per_call(
        lambda: PolicyEvaluated(
            command_id="cmd",
            incident_id="inc",
            verdict=verdict.verdict,
            policy_version=policy.version,
            rules=list(verdict.rules),
            reason=verdict.reason,
        ),
        rounds,
    )
    for kind, rules in by_kind.items():

        def check_all(rules: list[Any] = rules) -> None:
            for rule in rules:
                rule.check(facts)

        spent = _per_call(check_all, rounds)
        rows.append(
            row(
                f"  of which: {len(rules)} {kind} rule(s)",
                f"{spent:,.2f} µs",
                spent,
                "µs",
                f"verdict p50: {p50:,.1f} µs",
                spent / p50,
            )
        )

    rows.append(
        row(
            "  of which: building the PolicyEvaluated event (pydantic)",
            f"{event:,.2f} µs",
            event,
            "µs",
            f"verdict p50: {p50:,.1f} µs",
            event / p50,
        )
    )

    def with_dict() -> None:
        for program in programs:
            program.execute(variables)

    cel_rounds = max(500, count // 4)
    rust = _per_call(with_context, cel_rounds) / len(programs)
    per_dict = _per_call(with_dict, cel_rounds // 4) / len(programs)
    converting = _per_call(lambda: prepare(variables), cel_rounds // 4)
    version = _version("common-expression-language")
    rows += [
        row(
            f"CEL: cel {version} (Rust), prepared cel.Context, {len(programs)} conditions",
            f"{rust:,.2f} µs/eval",
            rust,
            "µs/eval",
            "itself",
            1.0,
        ),
        row(
            f"CEL: cel {version} (Rust), a Python dict per call",
            f"{per_dict:,.1f} µs/eval",
            per_dict,
            "µs/eval",
            f"cel + prepared Context: {rust:.2f} µs/eval",
            per_dict / rust,
        ),
        row(
            "CEL: preparing the cel.Context (once per verdict)",
            f"{converting:,.1f} µs",
            converting,
            "µs",
            f"{len(programs)} evals with a dict: {per_dict * len(programs):,.1f} µs",
            converting / (per_dict * len(programs)),
        ),
        _celpy_row(sources, variables, max(20, count // 100), rust),
    ]
    return rows


if __name__ == "__main__":
    for result in run(quick=False):
        print(f"{result['name']}: {result['figure']} ({result['peer']}, {result['ratio']})")
