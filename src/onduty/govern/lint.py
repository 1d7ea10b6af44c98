"""Static checks of a policy's guardrails, before it ever governs an action.

`check_policy(config, now=...)` returns every problem it finds, each naming its rule:

- errors: a condition that does not compile (with the position the compiler reports), a
  variable or field the manager never provides (`servce`, `service.nme`), a comparison of
  values of different types (`service.tier > 3`, `service.tier == 3`), a call that fails on
  the values it would see, a condition that is not a boolean;
- warnings: a rule that can never fire (a condition false in every representative context
  whose literals no configuration can produce; a rate or blast limit on an action no runbook
  takes), a freeze whose ranges are all in the past, a fraction that rounds down to nothing, an
  outage brake that one alerting service already trips, duplicated or contradicting rules.

Conditions are checked against representative contexts built from the configuration: every
service, a sample signal (alertname, instance, service), each runbook's steps. The variables
have exactly the shape the manager gives them (`condition_variables`). Positions are 1-based
character offsets into the condition (the column, for a one-line condition).

Pure: no clock (the current time is a parameter), no I/O.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import cel

from onduty.config import (
    Autonomy,
    Config,
    ConfigError,
    Guardrail,
    Runbook,
    Service,
    Step,
    parse_config,
)
from onduty.correlate.titles import signal_title
from onduty.expressions import ExpressionError, Template
from onduty.govern.facts import COUNTS

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One finding. `rule` is the guardrail's name ("" for a problem outside any rule);
    `position` a 1-based character offset into `expression`, the condition it points into."""

    rule: str
    severity: Severity
    message: str
    position: int | None = None
    expression: str | None = None


KNOWN_VARIABLES = ("signal", "incident", "action", "target", "service", "now", "counts")
"""What a condition may use."""

_OPEN = "map"  # a field whose keys are free (labels, params)
FIELDS: dict[str, dict[str, str]] = {
    "signal": {
        "labels": _OPEN,
        "annotations": _OPEN,
        "status": "string",
        "source": "string",
        "fingerprint": "string",
    },
    "incident": {
        "id": "string",
        "title": "string",
        "service": "string",
        "signals": "int",
        "flapping": "bool",
    },
    "service": {
        "name": "string",
        "tier": "string",
        "region": "string",
        "autonomy": "string",
        "instances": "int",
    },
    "action": {"name": "string", "runbook": "string", "params": _OPEN},
    "target": {"name": "string", "service": "string"},
}
"""The fields of each variable, as the manager builds them (`now` is a timestamp)."""

SAMPLE_NOW = datetime(2026, 1, 7, 12, 0, tzinfo=UTC)
"""The `now` of representative contexts when the check is given no current time."""

_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_RESERVED = frozenset({"true", "false", "null", "in"})
_TYPE_NAMES = frozenset(
    {"int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type"}
)
_NUMERIC = frozenset({"int", "uint", "double"})
_COMPARISONS = frozenset({"==", "!=", "<", "<=", ">", ">="})
_BEFORE_OPERAND = frozenset({"(", "&&", "||", ",", "?", ":", "[", "{"})
_AFTER_OPERAND = frozenset({")", "&&", "||", ",", "?", ":", "]", "}"})
_MIRRORED = {"<": ">", ">": "<", "<=": ">=", ">=": "<="}


# ---------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class Token:
    kind: Literal["ident", "string", "number", "op"]
    text: str
    start: int  # 0-based offset
    value: str = ""  # a string literal's content

    @property
    def end(self) -> int:
        return self.start + len(self.text)


_TOKEN = re.compile(
    r"""
    (?P<space>\s+|//[^\n]*)
    |(?P<string>
        (?:[rR][bB]?|[bB][rR]?)?
        (?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')
    )
    |(?P<number>0[xX][0-9a-fA-F]+[uU]?|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[uU]?)
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<op>==|!=|<=|>=|&&|\|\||.)
    """,
    re.VERBOSE,
)
_PREFIX = re.compile(r"^[rRbB]*")


def _string_value(text: str) -> str:
    prefix = _PREFIX.match(text)
    raw = "r" in (prefix.group(0).lower() if prefix else "")
    body = text[len(prefix.group(0)) if prefix else 0 :]
    quote = 3 if body[:3] in ('"""', "'''") else 1
    inner = body[quote:-quote]
    return inner if raw else re.sub(r"\\(.)", r"\1", inner)


def tokenize(source: str) -> list[Token]:
    """CEL tokens, comments and white space dropped; good enough to find names and literals."""
    tokens: list[Token] = []
    for match in _TOKEN.finditer(source):
        kind = match.lastgroup
        text = match.group(0)
        if kind == "space":
            continue
        if kind == "string":
            tokens.append(Token("string", text, match.start(), _string_value(text)))
        elif kind in ("number", "ident", "op"):
            tokens.append(Token(kind, text, match.start()))  # type: ignore[arg-type]
    return tokens


@dataclass(frozen=True)
class Chain:
    """A variable and the fields selected from it: `signal.labels["x"]`, `service.tier`."""

    path: tuple[str, ...]
    starts: tuple[int, ...]  # 0-based offset of each part
    first: int  # index of the root token
    last: int  # index of the last token of the chain
    end: int  # 0-based offset just past the chain


@dataclass(frozen=True)
class Comparison:
    chain: Chain
    operator: str
    literal: Token
    span: tuple[int, int]  # 0-based offsets of the whole comparison
    at: int  # 0-based offset of the operator


@dataclass
class Analysis:
    tokens: list[Token]
    free: dict[str, int] = field(default_factory=dict)  # variable -> first offset
    bound: set[str] = field(default_factory=set)
    chains: list[Chain] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    memberships: list[tuple[Chain, list[Token]]] = field(default_factory=list)
    calls: list[tuple[str, int, tuple[int, int]]] = field(default_factory=list)


def _text(tokens: Sequence[Token], index: int) -> str | None:
    return tokens[index].text if 0 <= index < len(tokens) else None


def _closing(tokens: Sequence[Token], opening: int) -> int | None:
    depth = 0
    for index in range(opening, len(tokens)):
        if tokens[index].kind != "op":
            continue
        if tokens[index].text in "([{":
            depth += 1
        elif tokens[index].text in ")]}":
            depth -= 1
            if depth == 0:
                return index
    return None


def analyse(source: str) -> Analysis:
    tokens = tokenize(source)
    result = Analysis(tokens)
    for index, token in enumerate(tokens):
        if (
            token.kind == "ident"
            and token.text in _MACROS
            and _text(tokens, index - 1) == "."
            and _text(tokens, index + 1) == "("
            and index + 2 < len(tokens)
            and tokens[index + 2].kind == "ident"
            and _text(tokens, index + 3) == ","
        ):
            result.bound.add(tokens[index + 2].text)
    chains_by_first: dict[int, Chain] = {}
    for index, token in enumerate(tokens):
        if token.kind != "ident" or _text(tokens, index - 1) == ".":
            continue
        if _text(tokens, index + 1) == "(":
            close = _closing(tokens, index + 1)
            if token.text != "has" and close is not None:
                span = (token.start, tokens[close].end)
                result.calls.append((token.text, token.start, span))
            continue
        if token.text in _RESERVED or token.text in _TYPE_NAMES:
            continue
        if token.text not in result.bound:
            result.free.setdefault(token.text, token.start)
        chain = _chain(tokens, index)
        result.chains.append(chain)
        chains_by_first[index] = chain
    for chain in result.chains:
        _comparisons_of(result, chain, chains_by_first)
        method = chain.last + 2
        if (
            _text(tokens, chain.last + 1) == "."
            and method < len(tokens)
            and tokens[method].kind == "ident"
            and _text(tokens, method + 1) == "("
        ):
            close = _closing(tokens, method + 1)
            if close is not None:
                span = (tokens[chain.first].start, tokens[close].end)
                result.calls.append((tokens[method].text, tokens[method].start, span))
    return result


def _chain(tokens: Sequence[Token], index: int) -> Chain:
    path, starts = [tokens[index].text], [tokens[index].start]
    last = index
    while True:
        if (
            _text(tokens, last + 1) == "."
            and last + 2 < len(tokens)
            and tokens[last + 2].kind == "ident"
            and _text(tokens, last + 3) != "("
        ):
            path.append(tokens[last + 2].text)
            starts.append(tokens[last + 2].start)
            last += 2
        elif (
            _text(tokens, last + 1) == "["
            and last + 2 < len(tokens)
            and tokens[last + 2].kind == "string"
            and _text(tokens, last + 3) == "]"
        ):
            path.append(tokens[last + 2].value)
            starts.append(tokens[last + 2].start)
            last += 3
        else:
            break
    return Chain(tuple(path), tuple(starts), index, last, tokens[last].end)


def _is_literal(token: Token) -> bool:
    return token.kind in ("string", "number") or token.text in ("true", "false", "null")


def _comparisons_of(result: Analysis, chain: Chain, chains_by_first: dict[int, Chain]) -> None:
    tokens = result.tokens
    before = _text(tokens, chain.first - 1)
    after = _text(tokens, chain.last + 1)
    # the literal on the left: `"critical" == service.tier`
    if before in _COMPARISONS and chain.first >= 2:
        literal = tokens[chain.first - 2]
        before_literal = _text(tokens, chain.first - 3)
        if (
            _is_literal(literal)
            and (before_literal is None or before_literal in _BEFORE_OPERAND)
            and (after is None or after in _AFTER_OPERAND)
        ):
            span = (literal.start, chain.end)
            operator = _MIRRORED.get(before, before)
            at = tokens[chain.first - 1].start
            result.comparisons.append(Comparison(chain, operator, literal, span, at))
        return
    if before is not None and before not in _BEFORE_OPERAND:
        return  # part of a larger operand (`x + service.instances > 3`): not a plain comparison
    if after in _COMPARISONS and chain.last + 2 < len(tokens):
        literal = tokens[chain.last + 2]
        after_literal = _text(tokens, chain.last + 3)
        if _is_literal(literal) and (after_literal is None or after_literal in _AFTER_OPERAND):
            span = (tokens[chain.first].start, literal.end)
            at = tokens[chain.last + 1].start
            result.comparisons.append(Comparison(chain, after, literal, span, at))
    elif after == "in" and _text(tokens, chain.last + 2) == "[":
        close = _closing(tokens, chain.last + 2)
        if close is not None:
            items = tokens[chain.last + 3 : close]
            literals = [t for t in items if t.text != ","]
            if literals and all(t.kind == "string" for t in literals):
                result.memberships.append((chain, literals))


# ---------------------------------------------------------------------------- variables


def condition_variables(
    *,
    service: Service | None,
    service_name: str,
    autonomy: Autonomy | None,
    labels: Mapping[str, str],
    incident_id: str,
    action: str,
    runbook: str,
    params: Mapping[str, Any],
    target: str,
    target_service: str,
    now: datetime,
    annotations: Mapping[str, str] | None = None,
    status: str = "firing",
    source: str = "",
    fingerprint: str = "",
    signals: int = 1,
    flapping: bool = False,
    counts: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The CEL variables of a proposal, shaped exactly as the manager shapes them
    (`CoreBase._context` plus `ActionLifecycle._facts`)."""
    notes = dict(annotations or {})
    return {
        "signal": {
            "labels": dict(labels),
            "annotations": notes,
            "status": status,
            "source": source,
            "fingerprint": fingerprint,
        },
        "incident": {
            "id": incident_id,
            "title": signal_title(labels, notes),
            "service": service_name,
            "signals": signals,
            "flapping": flapping,
        },
        "service": {
            "name": service.name if service else service_name,
            "tier": service.tier if service else "",
            "region": service.region if service else "",
            "autonomy": autonomy.name.lower() if service and autonomy is not None else "",
            "instances": len(service.instances) if service else 0,
        },
        "now": now,
        "action": {"name": action, "runbook": runbook, "params": dict(params)},
        "target": {"name": target, "service": target_service},
        "counts": dict(counts) if counts is not None else dict.fromkeys(COUNTS, 0),
    }


@dataclass(frozen=True)
class Sample:
    """One representative context: a service, one runbook step, the variables it would see."""

    service: str
    runbook: str
    action: str
    variables: dict[str, Any]


def label_literals(runbook: Runbook) -> dict[str, str]:
    """Labels a runbook's `when` asks for by equality: a sample signal that triggers it."""
    found: dict[str, str] = {}
    for comparison in analyse(runbook.when).comparisons:
        path = comparison.chain.path
        if (
            comparison.operator == "=="
            and len(path) == 3
            and path[:2] == ("signal", "labels")
            and comparison.literal.kind == "string"
        ):
            found.setdefault(path[2], comparison.literal.value)
    return found


def representative_contexts(config: Config, now: datetime | None = None) -> list[Sample]:
    """Every service with every runbook step (a sample signal that would trigger the runbook
    on its first instance), as the manager would build them."""
    moment = now or SAMPLE_NOW
    owner = {s.name: s.name for s in config.services}
    owner.update({i: s.name for s in config.services for i in s.instances})
    services: list[Service | None] = list(config.services) or [None]
    steps: list[tuple[Runbook | None, Step | None]] = [
        (runbook, step) for runbook in config.runbooks for step in runbook.do
    ]
    samples: list[Sample] = []
    for service in services:
        name = service.name if service else ""
        instance = service.instances[0] if service and service.instances else name
        for runbook, step in steps or [(None, None)]:
            labels = {"alertname": "Alert"}
            if runbook is not None:
                labels.update(label_literals(runbook))
            labels.update({"instance": instance, "service": name})
            target = instance
            if step is not None:
                try:
                    target = Template.compile(step.target).render(
                        {"signal": {"labels": labels, "annotations": {}}}
                    )
                except ExpressionError:
                    target = instance
            variables = condition_variables(
                service=service,
                service_name=name,
                autonomy=service.autonomy if service else None,
                labels=labels,
                incident_id=f"inc-sample-{name}",
                action=step.action if step else "",
                runbook=runbook.name if runbook else "",
                params=step.params if step else {},
                target=target,
                target_service=owner.get(target, ""),
                now=moment,
                source="sample",
                fingerprint=f"{labels['alertname']}:{instance}",
            )
            samples.append(
                Sample(
                    name, runbook.name if runbook else "", step.action if step else "", variables
                )
            )
    return samples


# ---------------------------------------------------------------------------- conditions


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


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes):
        return "bytes"
    if isinstance(value, datetime):
        return "timestamp"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, dict):
        return "map"
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
class _ConditionCheck:
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


def _suggest(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _check_names(check: _ConditionCheck, analysis: Analysis, program: Any) -> None:
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
            + _suggest(name, KNOWN_VARIABLES),
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
                + _suggest(chain.path[1], list(fields)),
                chain.starts[1],
            )
            check.usable = False
        elif kind != _OPEN and len(chain.path) > 2:
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
    check: _ConditionCheck, analysis: Analysis, contexts: list[tuple[Sample, Any]]
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


def _check_condition(
    rule: str, source: str, where: str, contexts: list[tuple[Sample, Any]]
) -> _ConditionCheck:
    check = _ConditionCheck(rule, source, where)
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
                    if t.text == name and _text(analysis.tokens, i + 1) == "("
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


def _never_fires(check: _ConditionCheck, analysis: Analysis, config: Config) -> None:
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
            + _suggest(comparison.literal.value, sorted(domain[0])),
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


# ---------------------------------------------------------------------------- rules


def _runbook_actions(config: Config) -> set[str]:
    return {step.action for runbook in config.runbooks for step in runbook.do}


def _in_scope(check: _ConditionCheck | None, service: str) -> bool:
    return check is None or any(sample.service == service for sample in check.held)


def _fraction_problems(
    spec: Guardrail, config: Config, scope: _ConditionCheck | None
) -> Iterator[Problem]:
    if spec.concurrent is not None and spec.concurrent.max_fraction is not None:
        fraction = spec.concurrent.max_fraction
        starved = [
            s
            for s in config.services
            if _in_scope(scope, s.name) and math.floor(fraction * len(s.instances)) == 0
        ]
        if starved:
            listed = ", ".join(f"{s.name} ({len(s.instances)})" for s in starved)
            yield Problem(
                spec.name,
                "warning",
                f"max_fraction {fraction:g} of the instances rounds down to 0 on {listed}: "
                "every action there is denied",
            )
    if spec.blast is not None and spec.blast.max_fraction is not None:
        fraction = spec.blast.max_fraction
        starved = [
            s
            for s in config.services
            if s.instances
            and _in_scope(scope, s.name)
            and math.floor(fraction * len(s.instances)) == 0
        ]
        if starved:
            listed = ", ".join(f"{s.name} ({len(s.instances)})" for s in starved)
            yield Problem(
                spec.name,
                "warning",
                f"max_fraction {fraction:g} of the instances rounds down to 0 on {listed}: "
                "no instance there may ever be affected",
            )


def _kind_problems(
    spec: Guardrail, config: Config, now: datetime | None, scope: _ConditionCheck | None
) -> Iterator[Problem]:
    actions = _runbook_actions(config)
    listed = ", ".join(sorted(actions)) or "none"
    for kind, limit in (("rate", spec.rate), ("blast", spec.blast)):
        if limit is not None and limit.action != "*" and limit.action not in actions:
            yield Problem(
                spec.name,
                "warning",
                f"{kind}.action {limit.action!r} is not an action of any runbook "
                f"(actions: {listed}){_suggest(limit.action, sorted(actions))}: "
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
        scope: _ConditionCheck | None = None
        if spec.when is not None:
            scope = _check_condition(
                spec.name, spec.when, "when" if spec.kind != "condition" else "", contexts
            )
            _never_fires(scope, analyse(spec.when), config)
            problems.extend(scope.problems)
            if not scope.usable:
                scope = None
        problems.extend(_kind_problems(spec, config, now, scope))
    overlaps = list(_overlap_problems(config))
    order = {spec.name: index for index, spec in enumerate(config.policy.guardrails)}
    problems.extend(overlaps)
    problems.sort(key=lambda p: order.get(p.rule, len(order)))
    return problems


# ---------------------------------------------------------------------------- documents

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
