"""Linting a document that does not validate: the configuration's own errors reported rule by
rule, a condition's compile error with its position, and the other rules still checked when
the conditions were the only problem."""

from __future__ import annotations

import copy
import re
from datetime import datetime
from typing import Any

from onduty.config import ConfigError, parse_config
from onduty.govern.lint.conditions import compile_problem
from onduty.govern.lint.problem import Problem
from onduty.govern.lint.rules import check_policy

_GUARDRAIL_PROBLEM = re.compile(r"^policy\.guardrails\[(\d+)\](?:\.([\w.\[\]]+))?: (.*)$", re.S)


def _raw_guardrails(document: Any) -> list[Any]:
    if isinstance(document, dict):
        policy = document.get("policy")
        if isinstance(policy, dict) and isinstance(policy.get("guardrails"), list):
            return list(policy["guardrails"])
    return []


def _raw_name(raw: Any, index: int) -> str:
    if isinstance(raw, dict) and isinstance(raw.get("name"), str) and raw["name"]:
        return str(raw["name"])
    return f"policy.guardrails[{index}]"


def check_document(
    document: Any, *, now: datetime | None = None, source: str = "<config>"
) -> list[Problem]:
    """Like `check_policy`, for a parsed but not yet validated document: a configuration
    `load_config` refuses is reported rule by rule, compile errors with their positions, and
    the other rules are still checked when the conditions were the only problem."""
    try:
        config = parse_config(document, source)
    except ConfigError as error:
        return problems_of_config_error(document, error, now=now)
    return check_policy(config, now=now)


def problems_of_config_error(
    document: Any, error: ConfigError, *, now: datetime | None = None
) -> list[Problem]:
    raw_rules = _raw_guardrails(document)
    problems: list[Problem] = []
    bad: set[int] = set()
    for index, raw in enumerate(raw_rules):
        if isinstance(raw, dict) and isinstance(raw.get("when"), str) and raw["when"]:
            _program, problem = compile_problem(_raw_name(raw, index), raw["when"])
            if problem is not None:
                problems.append(problem)
                bad.add(index)
    others = 0
    for text in error.problems:
        match = _GUARDRAIL_PROBLEM.match(text)
        if match is None:
            problems.append(Problem("", "error", text))
            others += 1
            continue
        index, where, message = int(match.group(1)), match.group(2), match.group(3)
        if index in bad and where == "when":
            continue
        rule = _raw_name(raw_rules[index], index) if index < len(raw_rules) else ""
        problems.append(Problem(rule, "error", f"{where}: {message}" if where else message))
        others += 1
    if bad and others == 0:
        pruned = copy.deepcopy(document)
        pruned["policy"]["guardrails"] = [r for i, r in enumerate(raw_rules) if i not in bad]
        try:
            config = parse_config(pruned)
        except ConfigError:
            return problems
        problems.extend(check_policy(config, now=now))
        order = {_raw_name(raw, i): i for i, raw in enumerate(raw_rules)}
        problems.sort(key=lambda p: order.get(p.rule, len(order)))
    return problems
