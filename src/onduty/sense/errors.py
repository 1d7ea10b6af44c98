"""The one exception the wire-format parsers raise, and its translation from msgspec's errors.

A parser answers bad input with `IngestError(status, reason, field)`: 400 when the body is not
JSON or not the expected shape at the top level, 422 when it is well-formed JSON with a missing
or invalid field. `field` is a path in the sender's own terms (`alerts[3].labels`,
`[2].status`, `payload.severity`), so the sender can find the mistake.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

BAD_REQUEST = 400
UNPROCESSABLE = 422

MISSING = "required field is missing"
BAD_TIME = "must be RFC 3339 time"
EMPTY = "must not be empty"


class IngestError(Exception):
    """A delivery the parser rejects, with the HTTP status it deserves and the field at fault."""

    __slots__ = ("field", "reason", "status")

    def __init__(self, status: int, reason: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.status = status
        self.reason = reason
        self.field = field

    def as_json(self) -> dict[str, Any]:
        return {"error": self.reason, "field": self.field}

    def __repr__(self) -> str:
        return f"IngestError({self.status}, {self.reason!r}, {self.field!r})"

    @classmethod
    def invalid(cls, field: str | None, reason: str) -> IngestError:
        """A well-formed body with a bad field (422)."""
        return cls(UNPROCESSABLE, reason, field)

    @classmethod
    def missing(cls, field: str) -> IngestError:
        return cls(UNPROCESSABLE, MISSING, field)

    @classmethod
    def malformed(cls, reason: str) -> IngestError:
        """A body that is not JSON, or not the expected shape at the top level (400)."""
        return cls(BAD_REQUEST, reason, None)


# --------------------------------------------------------------------------- field paths

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def join(prefix: str, name: str) -> str:
    """`alerts[3]` + `labels` -> `alerts[3].labels`; a key that is no identifier is quoted."""
    if _IDENTIFIER.match(name):
        return f"{prefix}.{name}" if prefix else name
    return f"{prefix}[{msgspec.json.encode(name).decode()}]"


def index(prefix: str, position: int) -> str:
    return f"{prefix}[{position}]"


# --------------------------------------------------------------------------- msgspec errors

_AT = re.compile(r"\A(?P<message>.*?)(?: - at `(?P<path>\$[^`]*)`)?\Z", re.DOTALL)
_MISSING = re.compile(r"\AObject missing required field `(?P<name>[^`]*)`\Z")
_EXPECTED = re.compile(r"\AExpected `(?P<expected>[^`]*)`, got `(?P<got>[^`]*)`\Z")
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]|\[\.\.\.\]")

_TYPE_NAMES = {
    "object": "an object",
    "array": "an array",
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "null": "null",
    "datetime": "an RFC 3339 time",
}


def _type_name(spec: str) -> str:
    options = [option.strip() for option in spec.split("|")]
    if len(options) > 1 and "null" in options:
        options.remove("null")  # absent and null are the same to us; say what is expected
    return " or ".join(_TYPE_NAMES.get(option, option) for option in options)


def _steps(path: str) -> list[str | int | None]:
    """`$.alerts[3].labels[...]` -> ['alerts', 3, 'labels', None] (None: an unnamed map key)."""
    steps: list[str | int | None] = []
    for match in _STEP.finditer(path, 1):
        name, position = match.group(1), match.group(2)
        steps.append(name if name is not None else int(position) if position else None)
    return steps


def _render(steps: list[str | int | None]) -> str | None:
    rendered = ""
    for step in steps:
        if step is None:
            break  # a key msgspec does not name; the caller resolves it when it can
        rendered = index(rendered, step) if isinstance(step, int) else join(rendered, step)
    return rendered or None


def _name_key(steps: list[str | int | None], body: bytes | None) -> list[str | int | None]:
    """Resolve a trailing unnamed map key (`labels[...]`) to the first key whose value is not a
    string, by walking a generic decode of the body. Only runs on the error path."""
    if body is None or not steps or steps[-1] is not None or None in steps[:-1]:
        return steps
    try:
        node: Any = msgspec.json.decode(body)
        for step in steps[:-1]:
            node = node[step]
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError, LookupError, TypeError):
        return steps
    if not isinstance(node, dict):
        return steps
    for key, value in node.items():
        if not isinstance(value, str):
            return [*steps[:-1], key]
    return steps


def from_msgspec(
    error: msgspec.ValidationError, *, body: bytes | None = None, prefix: str = ""
) -> IngestError:
    """Translate `Expected `object`, got `str` - at `$.alerts[3].labels`` into our terms.

    `prefix` places the error inside a larger document (`[2]` for an element of a batch that
    was converted on its own). A field-less error at the top of the document is a wrong shape
    (400); anything that names a field is a bad field (422)."""
    parts = _AT.match(str(error))
    message = parts.group("message") if parts else str(error)
    steps = _steps(parts.group("path") or "$") if parts else []
    steps = _name_key(steps, body)
    field = _render(steps)
    missing = _MISSING.match(message)
    expected = _EXPECTED.match(message)
    if missing:
        field = join(field or "", missing.group("name"))
        reason = MISSING
    elif expected:
        wanted, got = _type_name(expected.group("expected")), _type_name(expected.group("got"))
        reason = f"expected {wanted}, got {got}"
    elif message.startswith("Invalid RFC3339"):
        reason = BAD_TIME
    else:
        reason = message[:1].lower() + message[1:]
    if prefix:
        field = f"{prefix}{'.' if field and not field.startswith('[') else ''}{field or ''}"
    if field is None:
        return IngestError(BAD_REQUEST, f"not the expected shape: {reason}")
    return IngestError(UNPROCESSABLE, reason, field)
