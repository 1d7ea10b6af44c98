"""Value types every configuration section shares, below every other module of ours.

Durations (`30s`, `2m`, `250ms`), the one-line description of a validation error (naming the
field and the reason), and where in a YAML document a field is. Nothing here imports from
onduty, so the section models of every layer (and the configuration that composes them) can use
it without importing each other.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from enum import IntEnum
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    ValidationError,
)

__all__ = [
    "ENV_REFERENCE",
    "FILE_REFERENCE",
    "REFERENCE",
    "AbsolutePath",
    "Autonomy",
    "AutonomyLevel",
    "ConfigModel",
    "Duration",
    "FieldProblems",
    "PositiveDuration",
    "SectionProblems",
    "describe_validation_error",
    "format_duration",
    "format_seconds",
    "line_of",
    "loc_of",
    "parse_duration",
    "parse_items",
    "references",
    "require_exactly_one",
    "unique_names",
    "unknown_kind",
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_MICROSECONDS = {
    "ms": 1_000,
    "s": 1_000_000,
    "m": 60_000_000,
    "h": 3_600_000_000,
    "d": 86_400_000_000,
    None: 1_000_000,
}
_MICROSECOND = timedelta(microseconds=1)


def parse_duration(value: Any) -> timedelta:
    """'30s', '2m', '1h', '1d', '250ms' or a number of seconds."""
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise ValueError("a duration cannot be negative")
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 2m or 1h")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return timedelta(seconds=float(value))
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            # Decimal arithmetic, so that every string format_duration writes reads back exactly.
            micros = Decimal(match.group(1)) * _UNIT_MICROSECONDS[match.group(2)]
            return timedelta(microseconds=int(micros.to_integral_value(ROUND_HALF_EVEN)))
    raise ValueError(f"expected a duration such as 30s, 2m or 1h, got {value!r}")


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling: '1d', '90m', '30s', '250ms', '1.5s'; parses back equal."""
    micros = value // _MICROSECOND
    for unit, size in (("d", 86_400_000_000), ("h", 3_600_000_000), ("m", 60_000_000)):
        if micros >= size and micros % size == 0:
            return f"{micros // size}{unit}"
    if 0 < micros < 1_000_000 and micros % 1_000 == 0:
        return f"{micros // 1_000}ms"
    whole, fraction = divmod(micros, 1_000_000)
    if fraction == 0:
        return f"{whole}s"
    return f"{whole}.{fraction:06d}".rstrip("0") + "s"


def format_seconds(seconds: float) -> str:
    """A number of seconds as the configuration writes durations: `30s`, `500ms`, `2m`."""
    return format_duration(timedelta(seconds=seconds))


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]


def _longer_than_zero(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be longer than zero")
    return value


PositiveDuration = Annotated[Duration, AfterValidator(_longer_than_zero)]
"""A duration that must be longer than zero (a timeout, a window)."""


def require_exactly_one(model: BaseModel, *names: str) -> None:
    """Raise unless exactly one of the fields `names` is given (not None)."""
    if sum(getattr(model, name) is not None for name in names) != 1:
        listed = ", ".join(names[:-1]) + " or " + names[-1]
        raise ValueError(f"give exactly one of {listed}")


class ConfigModel(BaseModel):
    """A part of the configuration: unknown fields are errors, values are frozen, and each
    field's docstring documents it (in the generated configuration reference)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


def _absolute(path: str) -> str:
    if not path.startswith("/"):
        raise ValueError(f"{path!r} must be an absolute path")
    return path


AbsolutePath = Annotated[str, AfterValidator(_absolute)]
"""A file or directory named from the root (`/etc/onduty/ca.pem`)."""


# --------------------------------------------------------------------------- autonomy


class Autonomy(IntEnum):
    """Progressive empowerment, least to most: record, propose, act after approval, act."""

    OBSERVE = 0
    SUGGEST = 1
    APPROVE = 2
    ACT = 3

    @classmethod
    def parse(cls, value: Any) -> Autonomy:
        if isinstance(value, Autonomy):
            return value
        try:
            return cls[str(value).upper()]
        except KeyError:
            raise ValueError(
                f"unknown autonomy level {value!r}; expected one of observe, suggest, approve, act"
            ) from None


AutonomyLevel = Annotated[
    Autonomy,
    BeforeValidator(Autonomy.parse),
    PlainSerializer(lambda level: level.name.lower(), return_type=str),
]


# --------------------------------------------------------------------------- validation errors


class FieldProblems(ValueError):
    """Raised by a model validator that checks several fields: each problem names its path."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class SectionProblems(FieldProblems):
    """Problems of a section another layer validates, each already named by its full path."""


def _path(prefix: str, loc: tuple[int | str, ...]) -> str:
    """`services[0].autonomy`: where in the document a problem is, under `prefix`."""
    text = prefix
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not part.startswith("function-"):  # validator frames, not fields
            text += f".{part}" if text else part
    return text or "(top level)"


def describe_validation_error(
    error: ValidationError,
    *,
    prefix: str = "",
    tags: Collection[str] = (),
    aliases: Mapping[str, str] | None = None,
) -> list[str]:
    """One line per problem, naming the field and the reason. `prefix` places the document
    (`actuators[2]`); `tags` are a discriminated union's tags, which are not fields; `aliases`
    spell fields as the document does (`from_` → `from`)."""
    renames = aliases or {}
    problems: list[str] = []
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        if loc and loc[0] in tags:
            loc = loc[1:]
        loc = tuple(renames.get(part, part) if isinstance(part, str) else part for part in loc)
        cause = item.get("ctx", {}).get("error")
        if isinstance(cause, SectionProblems):
            problems.extend(cause.problems)
            continue
        if isinstance(cause, FieldProblems):
            where = _path(prefix, loc) + "." if loc or prefix else ""
            problems.extend(where + problem for problem in cause.problems)
            continue
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field (check its spelling and indentation)"
        elif item["type"] == "missing":
            message = "required field is missing"
        problems.append(f"{_path(prefix, loc)}: {message}")
    return problems


Item = TypeVar("Item")


def unknown_kind(prefix: str, kind: object, known: Iterable[str]) -> FieldProblems:
    """The problem of an item whose `kind` is missing or names no kind in `known`."""
    what = "required field is missing" if kind is None else f"unknown kind {kind!r}"
    return FieldProblems([f"{prefix}.kind: {what} (expected one of {', '.join(known)})"])


def parse_items(
    section: str,
    raw: Iterable[Any],
    parse: Callable[[str, Mapping[str, Any]], Item],
    *,
    expected: str,
    key: Callable[[Item], str],
    repeated: Callable[[str, str, str], str],
    error: Callable[[list[str]], Exception],
) -> list[Item]:
    """Validate a section's list item by item, collecting every problem rather than stopping at
    the first, and raise `error(problems)` if there is any. `parse(prefix, item)` validates one
    mapping or raises `FieldProblems` naming each bad field under `prefix` (`channels[1]`); an
    item that is no mapping is a problem ("expected `expected`"); so is one whose `key` repeats
    an earlier item's, in the words of `repeated(prefix, key, earlier)`."""
    items: list[Item] = []
    problems: list[str] = []
    first: dict[str, int] = {}
    for index, item in enumerate(raw):
        prefix = f"{section}[{index}]"
        if not isinstance(item, Mapping):
            problems.append(f"{prefix}: expected {expected}")
            continue
        try:
            parsed = parse(prefix, item)
        except FieldProblems as failure:
            problems.extend(failure.problems)
            continue
        name = key(parsed)
        if name in first:
            problems.append(repeated(prefix, name, f"{section}[{first[name]}]"))
        else:
            first[name] = index
        items.append(parsed)
    if problems:
        raise error(problems)
    return items


def unique_names(empty: str, twice: str) -> Callable[[list[str]], list[str]]:
    """A field validator for a list of names: none empty (the error is `empty`), none listed
    twice (the error is `twice`, formatted with the repeated `name`)."""

    def check(names: list[str]) -> list[str]:
        seen: set[str] = set()
        for name in names:
            if not name:
                raise ValueError(empty)
            if name in seen:
                raise ValueError(twice.format(name=name))
            seen.add(name)
        return names

    return check


# --------------------------------------------------------------------------- secret references

# A value may name a secret instead of holding it: `${ENV:NAME}` or `${FILE:/absolute/path}`.
# The syntax is checked with the configuration; `onduty.secrets` resolves references.
REFERENCE = re.compile(r"\$\{([^}]*)\}")
ENV_REFERENCE = re.compile(r"^ENV:([A-Za-z_][A-Za-z0-9_]*)$")
FILE_REFERENCE = re.compile(r"^FILE:(/.*)$")


def references(value: str, where: str) -> list[str]:
    """The `${...}` references in a value, each checked to be `ENV:NAME` or `FILE:/path`."""
    found = REFERENCE.findall(value)
    for reference in found:
        if not (ENV_REFERENCE.match(reference) or FILE_REFERENCE.match(reference)):
            raise ValueError(
                f"{where}: unknown reference ${{{reference}}}; "
                "expected ${ENV:NAME} or ${FILE:/absolute/path}"
            )
    return found


# --------------------------------------------------------------------------- where in the YAML

_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def loc_of(path: str) -> tuple[str | int, ...] | None:
    """`runbooks[0].do[1].action` as a location; None for what is not a path."""
    if path == "(top level)":
        return ()
    loc: list[str | int] = []
    end = 0
    for match in _SEGMENT.finditer(path):
        if match.start() not in (end, end + 1):
            return None
        loc.append(match.group(1) if match.group(1) is not None else int(match.group(2)))
        end = match.end()
    return tuple(loc) if end == len(path) else None


def line_of(node: yaml.Node | None, loc: tuple[str | int, ...]) -> int | None:
    """The line (from 1) of the key (or item) at `loc` in a composed YAML document."""
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            entry = next((kv for kv in node.value if kv[0].value == part), None)
            if entry is None:
                return line
            line, node = entry[0].start_mark.line + 1, entry[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line
