"""The checks of each guardrail as a whole: its scope (`when`), what its kind limits (rate,
blast and concurrency fractions, outage brakes, freezes), and rules that repeat or contradict
each other; `check_policy` runs them all."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime

import cel

from onduty.config import Config, Guardrail
from onduty.govern.lint.conditions import ConditionCheck, check_condition, never_fires, suggest
from onduty.govern.lint.problem import Problem
from onduty.govern.lint.samples import representative_contexts
from onduty.govern.lint.tokens import analyse, tokenize


def _runbook_actions(config: Config) -> set[str]:
    return {step.action for runbook in config.runbooks for step in runbook.do}


def _in_scope(check: ConditionCheck | None, service: str) -> bool:
    return check is None or any(sample.service == service for sample in check.held)


def _fraction_problems(
    spec: Guardrail, config: Config, scope: ConditionCheck | None
) -> Iterator[Problem]:
    """A `max_fraction` that allows no instance at all on some service in the rule's scope."""
    limits = (
        (spec.concurrent, False, "every action there is denied"),
        (spec.blast, True, "no instance there may ever be affected"),
    )
    for limit, of_instances, consequence in limits:
        fraction = limit.max_fraction if limit is not None else None
        if fraction is None:
            continue
        starved = [
            s
            for s in config.services
            if (s.instances or not of_instances)
            and _in_scope(scope, s.name)
            and math.floor(fraction * len(s.instances)) == 0
        ]
        if starved:
            listed = ", ".join(f"{s.name} ({len(s.instances)})" for s in starved)
            yield Problem(
                spec.name,
                "warning",
                f"max_fraction {fraction:g} of the instances rounds down to 0 on {listed}: "
                + consequence,
            )


def _kind_problems(
    spec: Guardrail, config: Config, now: datetime | None, scope: ConditionCheck | None
) -> Iterator[Problem]:
    actions = _runbook_actions(config)
    listed = ", ".join(sorted(actions)) or "none"
    for kind, limit in (("rate", spec.rate), ("blast", spec.blast)):
        if limit is not None and limit.action != "*" and limit.action not in actions:
            yield Problem(
                spec.name,
                "warning",
                f"{kind}.action {limit.action!r} is not an action of any runbook "
                f"(actions: {listed}){suggest(limit.action, sorted(actions))}: "
                "the rule never applies",
            )
    yield from _fraction_problems(spec, config, scope)
    if spec.outage is not None:
        brake = spec.outage
        if brake.of == "services":
            total = len(config.services)
        else:
            total = sum(len(s.instances) for s in config.services)
        if total == 0:
            yield Problem(
                spec.name,
                "warning",
                f"no {brake.of} are configured: the outage brake never applies",
            )
        elif 1 / total > brake.max_fraction:
            single = brake.of[:-1]
            yield Problem(
                spec.name,
                "warning",
                f"one alerting {single} is already {1 / total:.0%} of {total} (more than "
                f"{brake.max_fraction:.0%}): the brake stops every action",
            )
    if spec.freeze is not None and now is not None:
        freeze = spec.freeze
        past = [(index, span) for index, span in enumerate(freeze.ranges) if span.end <= now]
        if past and len(past) == len(freeze.ranges) and freeze.cron is None:
            yield Problem(
                spec.name,
                "warning",
                f"every range ended before {now:%Y-%m-%d %H:%M} UTC: the freeze never applies "
                "again",
            )
        else:
            for index, span in past:
                yield Problem(
                    spec.name,
                    "warning",
                    f"freeze.ranges[{index}] ({span.start.isoformat()} to "
                    f"{span.end.isoformat()}) ended before {now:%Y-%m-%d %H:%M} UTC",
                )


def _normalised(source: str) -> str:
    return " ".join(token.text for token in tokenize(source))


def _overlap_problems(config: Config) -> Iterator[Problem]:
    seen: dict[str, str] = {}
    conditions: dict[str, Guardrail] = {}
    for spec in config.policy.guardrails:
        body = spec.model_dump(mode="json", exclude={"name"})
        if spec.when is not None:
            body["when"] = _normalised(spec.when)
        key = repr(sorted(body.items()))
        if key in seen:
            yield Problem(spec.name, "warning", f"duplicates rule {seen[key]!r}")
            continue
        seen[key] = spec.name
        if spec.kind != "condition" or spec.when is None:
            continue
        condition = _normalised(spec.when)
        other = conditions.get(condition)
        if other is not None and other.effect != spec.effect:
            yield Problem(
                spec.name,
                "warning",
                f"contradicts rule {other.name!r}: the same condition, with effect "
                f"{spec.effect} here and {other.effect} there; the more restrictive always wins",
            )
        conditions.setdefault(condition, spec)


def check_policy(config: Config, *, now: datetime | None = None) -> list[Problem]:
    """Every problem of the configuration's guardrails, in rule order.

    `now` is the current time for time-dependent checks (freeze ranges in the past) and the
    `now` of representative contexts; without it those checks are skipped."""
    samples = representative_contexts(config, now)
    contexts = [(sample, cel.Context(sample.variables)) for sample in samples]
    problems: list[Problem] = []
    for spec in config.policy.guardrails:
        scope: ConditionCheck | None = None
        if spec.when is not None:
            scope = check_condition(
                spec.name, spec.when, "when" if spec.kind != "condition" else "", contexts
            )
            never_fires(scope, analyse(spec.when), config)
            problems.extend(scope.problems)
            if not scope.usable:
                scope = None
        problems.extend(_kind_problems(spec, config, now, scope))
    overlaps = list(_overlap_problems(config))
    order = {spec.name: index for index, spec in enumerate(config.policy.guardrails)}
    problems.extend(overlaps)
    problems.sort(key=lambda p: order.get(p.rule, len(order)))
    return problems
