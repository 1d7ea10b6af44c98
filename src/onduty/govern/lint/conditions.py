"""Probing one CEL condition: does it compile, does it name only what the manager provides,
does it compare values of the same type, is it a boolean, and can it ever hold."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import cel

from onduty.config import Autonomy, Config
from onduty.govern.lint.problem import Problem, Severity
from onduty.govern.lint.samples import Sample
from onduty.govern.lint.tokens import Analysis, Token, analyse, token_text
from onduty.govern.variables import FIELDS, KNOWN_VARIABLES, OPEN

_NUMERIC = frozenset({"int", "uint", "double"})

_COMPILE_ERROR = re.compile(r"<input>:(\d+):(\d+):\s*([^\n]*)")
_EXPECTING = re.compile(r" expecting \{([^}]*)\}")


def offset_of(source: str, line: int, column: int) -> int:
    """The 1-based character offset of a 1-based line and column."""
    lines = source.split("\n")
    return sum(len(text) + 1 for text in lines[: line - 1]) + column


def compile_problem(rule: str, source: str) -> tuple[Any, Problem | None]:
    """The compiled program, or the compile error with its position."""
    try:
        return cel.compile(source), None
    except (ValueError, RuntimeError) as error:
        text = str(error)
    match = _COMPILE_ERROR.search(text)
    if match is None:
        reason = text.split("\n", 1)[0]
        return None, Problem(rule, "error", f"not a valid CEL expression: {reason}", None, source)
    line, column, reason = int(match.group(1)), int(match.group(2)), match.group(3)
    expecting = _EXPECTING.search(reason)
    if expecting and expecting.group(1).count(",") >= 4:
        reason = _EXPECTING.sub("", reason)
    if "'<EOF>'" in reason:
        reason += " (the condition ends too early)"
    return None, Problem(
        rule,
        "error",
        f"not a valid CEL expression: {reason}",
        offset_of(source, line, column),
        source,
    )


_TYPES: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "bool"),  # before int: a bool is an int to Python
    (int, "int"),
    (float, "double"),
    (str, "string"),
    (bytes, "bytes"),
    (datetime, "timestamp"),
    ((list, tuple), "list"),
    (dict, "map"),
)


def _type_name(value: Any) -> str:
    """The CEL type of a value as the CEL library hands it back."""
    if value is None:
        return "null"
    for kinds, name in _TYPES:
        if isinstance(value, kinds):
            return name
    name = type(value).__name__
    return "duration" if name == "timedelta" else name


def _literal_type(token: Token) -> str:
    if token.kind == "string":
        return "bytes" if token.text[:2].lower() in ("b'", 'b"', "br", "rb") else "string"
    if token.text in ("true", "false"):
        return "bool"
    if token.text == "null":
        return "null"
    if token.text[-1] in "uU":
        return "uint"
    if "." in token.text or ("e" in token.text.lower() and not token.text.lower().startswith("0x")):
        return "double"
    return "int"


def _compatible(left: str, right: str, operator: str) -> bool:
    if "null" in (left, right):
        return operator in ("==", "!=")
    if left in _NUMERIC and right in _NUMERIC:
        return True
    if left != right:
        return False
    return operator in ("==", "!=") or left in ("string", "timestamp", "duration", "bytes")


_A = {"int": "an int", "uint": "a uint", "double": "a double"}


def _article(type_name: str) -> str:
    return _A.get(type_name, f"a {type_name}")


def _short(error: BaseException) -> str:
    text = str(error).split("\n", 1)[0]
    if text.startswith("No such overload"):
        return "no such overload (CEL does not convert between types)"
    return text.split(". ", 1)[0]


_UNDEFINED = re.compile(r"Undefined variable or function: '([^']+)'")
BUILTIN_FUNCTIONS = frozenset(
    {
        "size", "int", "uint", "double", "string", "bytes", "bool", "dyn", "type",
        "timestamp", "duration", "matches", "contains", "startsWith", "endsWith",
        "exists", "exists_one", "all", "map", "filter", "max", "min",
        "getFullYear", "getMonth", "getDate", "getDayOfMonth", "getDayOfWeek",
        "getDayOfYear", "getHours", "getMinutes", "getSeconds", "getMilliseconds",
    }
)  # fmt: skip
"""CEL's standard functions: one reported "undefined" was called with the wrong types."""


@dataclass
class ConditionCheck:
    rule: str
    source: str
    where: str  # "when" for a scoped rule's narrowing condition, "" for a condition rule
    problems: list[Problem] = field(default_factory=list)
    holds_somewhere: bool = False
    held: list[Sample] = field(default_factory=list)
    usable: bool = True

    def add(self, severity: Severity, message: str, offset: int | None) -> None:
        position = None if offset is None else offset + 1
        problem = Problem(self.rule, severity, message, position, self.source)
        if problem not in self.problems:
            self.problems.append(problem)


def suggest(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _check_names(check: ConditionCheck, analysis: Analysis, program: Any) -> None:
    free = dict(analysis.free)
    references = getattr(program, "references", None)
    if callable(references):
        try:
            named = set(references().get("variables", [])) - analysis.bound
        except (TypeError, ValueError, AttributeError):
            named = set(free)
        free = {name: analysis.free.get(name, -1) for name in named}
    for name, offset in sorted(free.items(), key=lambda item: item[1]):
        if name in KNOWN_VARIABLES:
            continue
        check.add(
            "error",
            f"unknown variable '{name}' (known: {', '.join(KNOWN_VARIABLES)})"
            + suggest(name, KNOWN_VARIABLES),
            offset if offset >= 0 else None,
        )
        check.usable = False
    for chain in analysis.chains:
        root = chain.path[0]
        if root in analysis.bound or len(chain.path) < 2:
            continue
        if root == "now":
            check.add(
                "error",
                f"now is a timestamp: it has no field '{chain.path[1]}' "
                "(use functions such as now.getHours() or now.getDayOfWeek())",
                chain.starts[1],
            )
            check.usable = False
            continue
        fields = FIELDS.get(root)
        if fields is None:
            continue
        kind = fields.get(chain.path[1])
        if kind is None:
            check.add(
                "error",
                f"{root} has no field '{chain.path[1]}' (fields: {', '.join(fields)})"
                + suggest(chain.path[1], list(fields)),
                chain.starts[1],
            )
            check.usable = False
        elif kind != OPEN and len(chain.path) > 2:
            check.add(
                "error",
                f"{root}.{chain.path[1]} is {_article(kind)}: it has no field '{chain.path[2]}'",
                chain.starts[2],
            )
            check.usable = False


def _evaluate(program: Any, context: Any) -> tuple[Any, BaseException | None]:
    try:
        return program.execute(context), None
    except (ValueError, RuntimeError, TypeError, KeyError) as error:
        return None, error


def _check_types(
    check: ConditionCheck, analysis: Analysis, contexts: list[tuple[Sample, Any]]
) -> None:
    """Compare each `field OP literal` by the types the field takes in the contexts, and try
    every function call on them: the position of a type error is the operator or the call."""
    located = False
    for comparison in analysis.comparisons:
        chain = comparison.chain
        if chain.path[0] not in FIELDS and chain.path[0] != "now":
            continue
        program = cel.compile(check.source[chain.starts[0] : chain.end])
        seen = set()
        for _sample, context in contexts:
            value, error = _evaluate(program, context)
            if error is None:
                seen.add(_type_name(value))
        literal_type = _literal_type(comparison.literal)
        if seen and not any(_compatible(t, literal_type, comparison.operator) for t in seen):
            field_type = sorted(seen)[0]
            what = ".".join(chain.path)
            hint = ""
            if field_type == "timestamp" and literal_type == "string":
                hint = f" (write timestamp({comparison.literal.text}))"
            elif field_type == "int" and literal_type == "string":
                hint = " (compare with a number)"
            never = ": never equal" if comparison.operator in ("==", "!=") else ""
            check.add(
                "error",
                f"`{check.source[comparison.span[0] : comparison.span[1]]}` compares {what} "
                f"({_article(field_type)}) with {_article(literal_type)}{never}{hint}",
                comparison.at,
            )
            located = True
    for name, offset, (start, end) in analysis.calls:
        try:
            program = cel.compile(check.source[start:end])
        except (ValueError, RuntimeError):
            continue
        for _sample, context in contexts:
            _value, error = _evaluate(program, context)
            undefined = _UNDEFINED.search(str(error)) if isinstance(error, RuntimeError) else None
            wrong_types = undefined is not None and undefined.group(1) == name
            if isinstance(error, TypeError) or (wrong_types and name in BUILTIN_FUNCTIONS):
                check.add(
                    "error",
                    f"`{check.source[start:end]}` is not defined for the values it would see"
                    + _argument_types(check.source, analysis, (start, end), context),
                    offset,
                )
                located = True
                break
    if located:
        check.usable = False


def _argument_types(source: str, analysis: Analysis, span: tuple[int, int], context: Any) -> str:
    """' (service.instances is an int)': the types of the fields inside a failing call."""
    described: list[str] = []
    for chain in analysis.chains:
        if not span[0] <= chain.starts[0] < span[1] or chain.path[0] not in (*FIELDS, "now"):
            continue
        try:
            value = cel.compile(source[chain.starts[0] : chain.end]).execute(context)
        except (ValueError, RuntimeError, TypeError, KeyError):
            continue
        text = f"{'.'.join(chain.path)} is {_article(_type_name(value))}"
        if text not in described:
            described.append(text)
    return f" ({', '.join(described)})" if described else ""


def check_condition(
    rule: str, source: str, where: str, contexts: list[tuple[Sample, Any]]
) -> ConditionCheck:
    check = ConditionCheck(rule, source, where)
    program, problem = compile_problem(rule, source)
    if problem is not None:
        check.problems.append(problem)
        check.usable = False
        return check
    analysis = analyse(source)
    _check_names(check, analysis, program)
    if not check.usable:
        return check
    _check_types(check, analysis, contexts)
    if not check.usable:
        return check
    general: BaseException | None = None
    for sample, context in contexts:
        value, error = _evaluate(program, context)
        if error is None:
            if value is True:
                check.holds_somewhere = True
                check.held.append(sample)
            elif not isinstance(value, bool):
                check.add(
                    "error",
                    f"evaluates to {_article(_type_name(value))} ({value!r}), not a boolean: "
                    "a condition must be true or false",
                    None,
                )
                check.usable = False
                break
            continue
        if isinstance(error, TypeError) and general is None:
            general = error
        elif isinstance(error, RuntimeError):
            undefined = _UNDEFINED.search(str(error))
            name = undefined.group(1) if undefined else ""
            if name in KNOWN_VARIABLES or name in analysis.bound:
                continue
            offset = next(
                (
                    t.start
                    for i, t in enumerate(analysis.tokens)
                    if t.text == name and token_text(analysis.tokens, i + 1) == "("
                ),
                None,
            )
            check.add(
                "error",
                f"unknown function '{name}', or one not defined for these argument types"
                if name
                else f"cannot be evaluated: {_short(error)}",
                offset,
            )
            check.usable = False
    if general is not None and check.usable:
        check.add("error", f"type error: {_short(general)}", None)
        check.usable = False
    return check


def _domains(config: Config) -> dict[tuple[str, str], tuple[set[str], str]]:
    """What each fixed field can ever be, given the configuration."""
    services = {s.name for s in config.services}
    actions = {step.action for r in config.runbooks for step in r.do}
    names = ", ".join(sorted(services)) or "none"
    return {
        ("service", "name"): (services, f"no service is named {{!r}} (services: {names})"),
        ("incident", "service"): (
            services,
            f"no service is named {{!r}}; an action on an unknown service is always denied "
            f"(services: {names})",
        ),
        ("target", "service"): (services, f"no service is named {{!r}} (services: {names})"),
        ("service", "tier"): (
            {s.tier for s in config.services},
            "no service has tier {!r} (tiers in use: "
            + (", ".join(sorted({s.tier for s in config.services})) or "none")
            + ")",
        ),
        ("service", "region"): (
            {s.region for s in config.services},
            "no service is in region {!r} (regions: "
            + (", ".join(sorted({s.region for s in config.services if s.region})) or "none")
            + ")",
        ),
        ("service", "autonomy"): (
            {level.name.lower() for level in Autonomy},
            "{!r} is not an autonomy level (observe, suggest, approve, act)",
        ),
        ("action", "name"): (
            actions,
            "no runbook takes the action {!r} (actions: "
            + (", ".join(sorted(actions)) or "none")
            + ")",
        ),
        ("action", "runbook"): (
            {r.name for r in config.runbooks},
            "no runbook is named {!r}",
        ),
        ("target", "name"): (
            services | {i for s in config.services for i in s.instances},
            "no instance or service is named {!r}",
        ),
        ("signal", "status"): (
            {"firing", "resolved", "acknowledged"},
            "a signal's status is firing, resolved or acknowledged, never {!r}",
        ),
    }


def never_fires(check: ConditionCheck, analysis: Analysis, config: Config) -> None:
    """Warn about literals no configuration produces, in a condition that held nowhere."""
    if check.holds_somewhere or not check.usable:
        return
    domains = _domains(config)
    what = "the rule never applies" if check.where == "when" else "the rule never fires"
    for comparison in analysis.comparisons:
        key = comparison.chain.path
        if len(key) != 2 or comparison.operator != "==" or comparison.literal.kind != "string":
            continue
        domain = domains.get((key[0], key[1]))
        if domain is None or comparison.literal.value in domain[0]:
            continue
        check.add(
            "warning",
            "false in every representative context, and "
            + domain[1].format(comparison.literal.value)
            + f": {what}"
            + suggest(comparison.literal.value, sorted(domain[0])),
            comparison.literal.start,
        )
    for chain, literals in analysis.memberships:
        if len(chain.path) != 2:
            continue
        domain = domains.get((chain.path[0], chain.path[1]))
        if domain is None or any(t.value in domain[0] for t in literals):
            continue
        check.add(
            "warning",
            f"false in every representative context, and none of "
            f"{', '.join(repr(t.value) for t in literals)} can be {'.'.join(chain.path)}: {what}",
            literals[0].start,
        )
