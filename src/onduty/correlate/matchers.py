"""Label matchers with Alertmanager's semantics and syntax.

A matcher compares one label of an alert with a value::

    service="checkout"          equal
    severity!="info"            not equal
    alertname=~"Instance.*"     matches the regular expression (fully anchored)
    instance!~"canary-.*"       does not match the regular expression

Semantics, as in Alertmanager:

- A missing label is the empty string: `team=""` matches an alert without `team`, and
  `team!="ops"` matches it too.
- Regular expressions are anchored at both ends, like Alertmanager's `^(?:value)$`:
  `alertname=~"Instance"` does not match `InstanceDown`. The whole label value must match (a
  trailing newline is not forgiven, unlike Python's `$`). Leading global flags such as `(?i)`
  are allowed, as in Go. The pattern is Python's `re`, which accepts a superset of Go's RE2
  syntax; stick to RE2 syntax if the same matcher is meant for Alertmanager as well.
- A list of matchers matches when every matcher does; an empty list matches every alert.

Syntax, as Alertmanager (and amtool) reads it:

- `parse_matcher` reads one matcher: `name op value`, with optional spaces around the operator.
- `parse_matchers` reads several, separated by commas, with or without surrounding braces:
  `{service="checkout", severity!="info"}` or `service=checkout,severity!=info`. A trailing
  comma is allowed; `{}` and the empty string are the empty list.
- Names and values are either double-quoted strings or bare words. A bare word is a run of
  characters other than white space, `{`, `}`, `!`, `=`, `~`, `,`, a backslash, quotes and
  backticks; a name or value with any of those must be quoted.
- Inside quotes, `\\"` is a quote, `\\\\` a backslash and `\\n` a newline; any other backslash is
  kept as it is, so regular expressions such as `"foo\\.bar"` read naturally.
- There is no implicit empty value: write `team=""`, not `team=`.

Errors are `MatcherError` (a `ValueError`) naming the position (0-based, counted in characters
of the text given) and what was expected there.

`str(matcher)` is the canonical form (`name="value"`, the value always quoted, the name quoted
only when it is not a plain identifier) and parses back to an equal matcher.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, NoReturn

from pydantic import PlainSerializer, PlainValidator, WithJsonSchema

MatchOp = Literal["=", "!=", "=~", "!~"]
OPERATORS: tuple[MatchOp, ...] = ("=", "!=", "=~", "!~")
_LONGEST_FIRST: tuple[MatchOp, ...] = ("=~", "!=", "!~", "=")
_REGEX_OPS = frozenset({"=~", "!~"})
_EXPECTED_OP = "an operator (=, !=, =~ or !~)"
# Characters that end a bare word (besides white space).
_RESERVED = frozenset("{}!=~,\\\"'`")
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LEADING_FLAGS = re.compile(r"(?:\(\?[aiLmsux]+\))+")


class MatcherError(ValueError):
    """A matcher that cannot be read or built.

    `reason` is the bare problem; `text` and `position` (0-based) say where, when it came from
    parsing text."""

    def __init__(self, reason: str, *, text: str | None = None, position: int | None = None):
        self.reason = reason
        self.text = text
        self.position = position
        if text is not None and position is not None:
            message = f"invalid matcher {text!r} at position {position}: {reason}"
        elif text is not None:
            message = f"invalid matcher {text!r}: {reason}"
        else:
            message = reason
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label matcher. Equality and hashing use `(name, op, value)`."""

    name: str
    op: MatchOp
    value: str
    _pattern: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise MatcherError("a label name must be a non-empty string")
        if self.op not in OPERATORS:
            raise MatcherError(f"unknown operator {self.op!r}; expected one of =, !=, =~, !~")
        if not isinstance(self.value, str):
            raise MatcherError(f"the value of {self.name!r} must be a string")
        if self.op in _REGEX_OPS:
            object.__setattr__(self, "_pattern", _compile(self.value))

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether the alert with these labels satisfies this matcher (missing label = "")."""
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        assert self._pattern is not None
        found = self._pattern.fullmatch(actual) is not None
        return found if self.op == "=~" else not found

    @property
    def is_regex(self) -> bool:
        return self.op in _REGEX_OPS

    @property
    def is_equal(self) -> bool:
        """True for `=` and `=~`, false for the negated operators (Alertmanager's isEqual)."""
        return self.op in ("=", "=~")

    def __str__(self) -> str:
        return f"{_quote_name(self.name)}{self.op}{quote(self.value)}"

    def to_api(self) -> dict[str, Any]:
        """Alertmanager's API v2 shape: `{name, value, isRegex, isEqual}`."""
        return {
            "name": self.name,
            "value": self.value,
            "isRegex": self.is_regex,
            "isEqual": self.is_equal,
        }

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Matcher:
        """Read Alertmanager's API v2 shape; `isEqual` defaults to true, as in its API."""
        unknown = sorted(str(key) for key in data if key not in _API_FIELDS)
        if unknown:
            raise MatcherError(
                f"unknown field {unknown[0]!r} in a matcher object; "
                "expected name, value, isRegex and isEqual"
            )
        for key in ("name", "value", "isRegex"):
            if key not in data:
                raise MatcherError(f"a matcher object needs {key!r}")
        name, value = data["name"], data["value"]
        is_regex, is_equal = data["isRegex"], data.get("isEqual", True)
        if not isinstance(name, str) or not isinstance(value, str):
            raise MatcherError("a matcher object's name and value must be strings")
        if not isinstance(is_regex, bool) or not isinstance(is_equal, bool):
            raise MatcherError("a matcher object's isRegex and isEqual must be true or false")
        return cls(name, _API_OPS[(is_regex, is_equal)], value)


_API_FIELDS = frozenset({"name", "value", "isRegex", "isEqual"})
_API_OPS: dict[tuple[bool, bool], MatchOp] = {
    (False, True): "=",
    (False, False): "!=",
    (True, True): "=~",
    (True, False): "!~",
}


def _compile(value: str) -> re.Pattern[str]:
    """Compile `value` so that `fullmatch` behaves like Alertmanager's `^(?:value)$`.

    The value is compiled on its own first, so that a value such as `a)|(b` cannot escape the
    group. Leading global flags (`(?i)`) stay in front, where Python requires them."""
    try:
        re.compile(value)
        flags = _LEADING_FLAGS.match(value)
        prefix = flags.group(0) if flags else ""
        return re.compile(f"{prefix}(?:{value[len(prefix) :]})")
    except re.error as error:
        raise MatcherError(f"invalid regular expression {value!r}: {error}") from None
    except FutureWarning as warning:  # raised only where warnings are errors, as in tests
        raise MatcherError(f"ambiguous regular expression {value!r}: {warning}") from None


def quote(text: str) -> str:
    """A double-quoted string that `parse_matcher` reads back as `text`."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _quote_name(name: str) -> str:
    return name if _PLAIN_NAME.fullmatch(name) else quote(name)


def format_labels(labels: Mapping[str, str]) -> str:
    """The canonical text of a label set: `{a="1",b="2"}`, sorted by name, empty values left out
    (an empty value is the same as a missing label). Equal label sets give equal text."""
    pairs = sorted((name, value) for name, value in labels.items() if value)
    return "{" + ",".join(f"{_quote_name(name)}={quote(value)}" for name, value in pairs) + "}"


class Matchers(tuple[Matcher, ...]):
    """An ordered, immutable list of matchers; it matches when every matcher does."""

    __slots__ = ()

    def __new__(cls, matchers: Iterable[Matcher] = ()) -> Matchers:
        items = tuple(matchers)
        for item in items:
            if not isinstance(item, Matcher):
                raise MatcherError(f"expected a Matcher, found {type(item).__name__}")
        return super().__new__(cls, items)

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(matcher.matches(labels) for matcher in self)

    def __str__(self) -> str:
        return "{" + ",".join(str(matcher) for matcher in self) + "}"

    def __repr__(self) -> str:
        return f"Matchers({str(self)!r})"

    def to_strings(self) -> list[str]:
        return [str(matcher) for matcher in self]

    def to_api(self) -> list[dict[str, Any]]:
        return [matcher.to_api() for matcher in self]


# --------------------------------------------------------------------------- parsing


def parse_matcher(text: str) -> Matcher:
    """Read exactly one matcher, e.g. `alertname=~"Instance.*"`."""
    pos = _skip_space(text, 0)
    matcher, pos = _read_matcher(text, pos)
    pos = _skip_space(text, pos)
    if pos < len(text):
        _fail(text, pos, "the end of the matcher (use parse_matchers to read several)")
    return matcher


def parse_matchers(text: str) -> Matchers:
    """Read comma-separated matchers, optionally in braces: `{a="1", b=~"x.*"}`."""
    pos = _skip_space(text, 0)
    braced = pos < len(text) and text[pos] == "{"
    if braced:
        pos += 1
    matchers: list[Matcher] = []
    while True:
        pos = _skip_space(text, pos)
        if pos >= len(text):
            if braced:
                _fail(text, pos, "a matcher or '}'")
            break
        if braced and text[pos] == "}":
            pos += 1
            break
        matcher, pos = _read_matcher(text, pos)
        matchers.append(matcher)
        pos = _skip_space(text, pos)
        if pos >= len(text):
            if braced:
                _fail(text, pos, "',' or '}'")
            break
        if text[pos] == ",":
            pos += 1
        elif braced and text[pos] == "}":
            pos += 1
            break
        else:
            _fail(text, pos, "',' or '}'" if braced else "',' or the end of the text")
    pos = _skip_space(text, pos)
    if pos < len(text):
        _fail(text, pos, "the end of the text after '}'")
    return Matchers(matchers)


def _read_matcher(text: str, pos: int) -> tuple[Matcher, int]:
    name_at = pos
    name, pos = _read_word(text, pos, "a label name")
    if not name:
        raise MatcherError("a label name cannot be empty", text=text, position=name_at)
    pos = _skip_space(text, pos)
    op: MatchOp | None = None
    for candidate in _LONGEST_FIRST:
        if text.startswith(candidate, pos):
            op = candidate
            break
    if op is None:
        _fail(text, pos, _EXPECTED_OP)
    pos = _skip_space(text, pos + len(op))
    value_at = pos
    value, pos = _read_word(text, pos, "a label value")
    try:
        return Matcher(name, op, value), pos
    except MatcherError as error:
        raise MatcherError(error.reason, text=text, position=value_at) from None


def _read_word(text: str, pos: int, what: str) -> tuple[str, int]:
    """A double-quoted string or a bare word."""
    if pos < len(text) and text[pos] == '"':
        return _read_quoted(text, pos, what)
    end = pos
    while end < len(text) and not _ends_word(text[end]):
        end += 1
    if end == pos:
        hint = ""
        if pos < len(text) and text[pos] in "'`":
            hint = ' (quote with double quotes: "...")'
        elif what == "a label value" and pos < len(text) and text[pos] in _RESERVED:
            hint = " (quote the value if it contains this character)"
        _fail(text, pos, what + hint)
    return text[pos:end], end


def _read_quoted(text: str, start: int, what: str) -> tuple[str, int]:
    out: list[str] = []
    pos = start + 1
    while pos < len(text):
        char = text[pos]
        if char == '"':
            return "".join(out), pos + 1
        if char == "\\" and pos + 1 < len(text):
            escaped = text[pos + 1]
            if escaped == "n":
                out.append("\n")
            elif escaped in '"\\':
                out.append(escaped)
            else:
                out.append("\\" + escaped)  # not an escape: the backslash is kept
            pos += 2
            continue
        out.append(char)
        pos += 1
    raise MatcherError(
        f"{what} opened with '\"' is never closed: expected a closing '\"'",
        text=text,
        position=start,
    )


def _ends_word(char: str) -> bool:
    return char in _RESERVED or char.isspace()


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _fail(text: str, pos: int, expected: str) -> NoReturn:
    found = "the end of the text" if pos >= len(text) else repr(text[pos])
    raise MatcherError(f"expected {expected}, found {found}", text=text, position=pos)


# --------------------------------------------------------------------------- pydantic


def to_matchers(value: Any) -> Matchers:
    """Build `Matchers` from any accepted form (see `MatcherList`)."""
    if isinstance(value, Matchers):
        return value
    if isinstance(value, str):
        return parse_matchers(value)
    if isinstance(value, Matcher):
        return Matchers((value,))
    if isinstance(value, Mapping) or not isinstance(value, list | tuple):
        raise MatcherError(
            "expected a list of matchers (strings such as 'service=\"checkout\"', or objects "
            f"with name, value, isRegex and isEqual), found {type(value).__name__}"
        )
    items: list[Matcher] = []
    for index, item in enumerate(value):
        try:
            if isinstance(item, Matcher):
                items.append(item)
            elif isinstance(item, str):
                items.append(parse_matcher(item))
            elif isinstance(item, Mapping):
                items.append(Matcher.from_api(item))
            else:
                raise MatcherError(
                    f"expected a matcher string or object, found {type(item).__name__}"
                )
        except MatcherError as error:
            raise MatcherError(
                f"matcher [{index}]: {error}", text=None, position=error.position
            ) from None
    return Matchers(items)


_JSON_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": {
        "anyOf": [
            {"type": "string", "description": 'a matcher such as service="checkout"'},
            {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "value": {"type": "string"},
                    "isRegex": {"type": "boolean"},
                    "isEqual": {"type": "boolean", "default": True},
                },
                "required": ["name", "value", "isRegex"],
                "additionalProperties": False,
            },
        ]
    },
}

MatcherList = Annotated[
    Matchers,
    PlainValidator(to_matchers),
    PlainSerializer(Matchers.to_strings, return_type=list[str]),
    WithJsonSchema(_JSON_SCHEMA, mode="validation"),
    WithJsonSchema({"type": "array", "items": {"type": "string"}}, mode="serialization"),
]
"""A pydantic field type for matchers.

Validates from a list whose items are matcher strings (`'alertname=~"Instance.*"'`), matcher
objects in Alertmanager's API v2 shape (`{name, value, isRegex, isEqual}`) or `Matcher`s, from
a single string of comma-separated matchers (`'{a="1", b="2"}'`), or from `Matchers`. Always
serializes (Python and JSON modes alike) to the list of canonical strings."""
