"""The service's logs: structured, one line per message, as JSON (for machines) or as a console
line (for a person at a terminal).

Every module logs through the standard library (`logging.getLogger(__name__)`), and so do uvicorn
and the libraries onduty uses; `configure_logging` puts one handler on the root logger whose
formatter (structlog's `ProcessorFormatter`) turns each record into an event dict, adds what the
context knows, redacts and renders it. So a call site passes structured fields with `extra=`
(`logger.warning("...", extra={"incident_id": ...})`), and what runs on behalf of an incident or
a command binds its ids with `structlog.contextvars` for every line logged meanwhile.

Each line carries `timestamp`, `level`, `logger` and `message`, then the fields: the bound
`incident_id`, `command_id`, `event_id`, the current span's `trace_id` and `span_id` when a trace
is being recorded, and the call's own. Values of fields named like a credential (`password`,
`token`, `secret`, `authorization`, `api_key`, ...) and every secret value onduty resolved
(`onduty.secrets.known_secrets`) are written `[redacted]`, in messages and tracebacks too.
Untrusted text stays data: the JSON escapes every control, bidi and invisible formatting
character (`\\u001b`, `\\u202e`, `\\n`); the console line writes them as `onduty.textsafe.visible`
does, and indents a traceback so that no line of it passes for a log line.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Mapping
from typing import Any, Literal, TextIO

import structlog
from opentelemetry import trace
from structlog.typing import EventDict, Processor, WrappedLogger

from onduty.secrets import known_secrets
from onduty.textsafe import visible

__all__ = [
    "LOG_FORMATS",
    "ConsoleRenderer",
    "LogFormat",
    "configure_logging",
    "indented",
    "json_line",
    "redact",
    "uvicorn_log_config",
]

LogFormat = Literal["json", "console"]
LOG_FORMATS: tuple[LogFormat, ...] = ("json", "console")

REDACTED = "[redacted]"
SENSITIVE = re.compile(
    r"pass(word|wd|phrase)?|token|secret|authori[sz]ation|api[_-]?key|private[_-]?key|"
    r"credential|cookie|signature",
    re.IGNORECASE,
)
"""Field names whose values are never written."""
SHORTEST_REDACTED_PART = 4
"""A secret shorter than this is redacted where it is a whole value, not inside longer text
(where it would cut ordinary words apart)."""

FIRST = ("timestamp", "level", "logger", "message")
"""The fields every line starts with, in this order."""
CONTEXT = frozenset({"incident_id", "command_id", "event_id"})
"""The ids bound in the context of what runs on behalf of an input, an incident, a command."""
DROPPED = frozenset({"color_message"})
"""Record attributes that are not fields (uvicorn's coloured copy of its message)."""


# --------------------------------------------------------------------------- processors


def add_trace(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    """The current span's `trace_id` and `span_id` (hex, as tracing back ends show them), when
    a span is being recorded in this context."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", format(context.trace_id, "032x"))
        event.setdefault("span_id", format(context.span_id, "016x"))
    return event


def drop_attributes(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    """Record attributes that are no fields left out; a record's stack (`stack_info=True`)
    kept as `stack`, beside a traceback's `exception`."""
    for name in DROPPED.intersection(event):
        del event[name]
    for name in CONTEXT.intersection(event):
        if event[name] is None:  # bound by what had none to bind
            del event[name]
    stack = event.get("stack_info")
    if isinstance(stack, str):
        del event["stack_info"]
        event["stack"] = stack
    return event


def redact(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    """Every field named like a credential, and every known secret value wherever it appears,
    written `[redacted]`. Values that are not numbers, booleans or containers become text
    here (their `str` could hold a secret)."""
    secrets = known_secrets()
    return {key: _redacted(key, value, secrets) for key, value in event.items()}


def _redacted(key: str, value: Any, secrets: tuple[str, ...]) -> Any:
    if value is None:
        return value
    if key and SENSITIVE.search(key) and key not in FIRST:
        return REDACTED
    if isinstance(value, bool | int | float):
        return REDACTED if secrets and str(value) in secrets else value
    if isinstance(value, Mapping):
        return {str(k): _redacted(str(k), v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redacted("", item, secrets) for item in value]
    text = value if isinstance(value, str) else _text(value)
    for secret in secrets:
        if text == secret:
            return REDACTED
        if len(secret) >= SHORTEST_REDACTED_PART and secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _text(value: object) -> str:
    try:
        return str(value)
    except Exception:  # a value whose str fails must not lose the line
        return f"<{type(value).__name__}>"


def _ordered(event: EventDict) -> dict[str, Any]:
    """`event` with its message under `message` and the common fields first."""
    fields = dict(event)
    fields["message"] = fields.pop("event", "")
    ordered = {name: fields.pop(name) for name in FIRST if name in fields}
    ordered.update(fields)
    return ordered


# --------------------------------------------------------------------------- renderers


def _hidden_in_json(char: str) -> bool:
    """Characters JSON leaves raw that would steer a terminal or a log reader: DEL, the C1
    controls, bidi and other invisible formatting characters, line and paragraph separators,
    lone surrogates (what `visible` escapes, beyond the C0 controls JSON escapes itself)."""
    return char == "\x7f" or (ord(char) >= 0x80 and visible(char) != char)


def _json_escape(char: str) -> str:
    code = ord(char)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # a UTF-16 surrogate pair, as JSON writes characters beyond the BMP
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def json_line(fields: Mapping[str, Any]) -> str:
    """`fields` as one line of JSON: text stays readable (UTF-8), and every character that
    could steer a terminal (C0 and C1 controls, ANSI escapes, bidi overrides, zero-width and
    tag characters, line separators) or break the line (newlines) is written as a `\\u` escape;
    a JSON reader gets the text back exactly as it was sent."""
    text = json.dumps(fields, ensure_ascii=False, default=str, separators=(", ", ": "))
    if text.isascii() and "\x7f" not in text:
        return text
    return "".join(_json_escape(c) if _hidden_in_json(c) else c for c in text)


def render_json(logger: WrappedLogger, method: str, event: EventDict) -> str:
    return json_line(_ordered(event))


_COLOURS = {
    "debug": "\x1b[2m",
    "info": "\x1b[32m",
    "warning": "\x1b[33m",
    "error": "\x1b[31m",
    "critical": "\x1b[1;31m",
}
_DIM, _RESET = "\x1b[2m", "\x1b[0m"


class ConsoleRenderer:
    """One line per message for a person: `time LEVEL logger: message key=value ...`, with
    untrusted text written as `visible` does (one line, escapes shown) and a traceback below it
    as an indented block. With `colours` (a terminal that wants them) the level is coloured and
    the fields dimmed: the colours are onduty's own, never text from outside."""

    def __init__(self, colours: bool = False) -> None:
        self.colours = colours

    def __call__(self, logger: WrappedLogger, method: str, event: EventDict) -> str:
        fields = _ordered(event)
        when = str(fields.pop("timestamp", ""))
        level = str(fields.pop("level", method)).upper()
        name = fields.pop("logger", "")
        message = fields.pop("message", "")
        blocks = [fields.pop(key) for key in ("stack", "exception") if fields.get(key)]
        if self.colours:
            level = f"{_COLOURS.get(level.lower(), '')}{level}{_RESET}"
        line = f"{when} {level} {visible(name)}: {visible(message)}".lstrip()
        pairs = " ".join(f"{visible(key)}={_value(value)}" for key, value in fields.items())
        if pairs:
            line += f" {_DIM}{pairs}{_RESET}" if self.colours else f" {pairs}"
        return "\n".join([line, *(indented(str(block)) for block in blocks)])


def _value(value: Any) -> str:
    text = visible(value if isinstance(value, str) else json.dumps(value, default=str))
    if text and not any(c in text for c in ' "='):
        return text
    return '"' + text.replace('"', '\\"') + '"'


def indented(block: str) -> str:
    """A multi-line block (a traceback) made visible, each of its lines indented."""
    return "\n".join(f"    {line}" for line in visible(block, single_line=False).split("\n"))


# --------------------------------------------------------------------------- set-up


def _chain() -> list[Processor]:
    """What every record goes through before it is rendered: its level and logger, the bound
    context, the fields given with `extra=`, a timestamp, the current trace."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        drop_attributes,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace,
    ]


def formatter(log_format: LogFormat, *, colours: bool = False) -> logging.Formatter:
    """The formatter of onduty's log lines in `log_format`."""
    renderer: Processor = render_json if log_format == "json" else ConsoleRenderer(colours)
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_chain(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
    )


def wants_colours(stream: TextIO) -> bool:
    return _is_terminal(stream) and not os.environ.get("NO_COLOR")


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def configure_logging(
    level: str = "info", log_format: LogFormat | None = None, stream: TextIO | None = None
) -> logging.Logger:
    """Send every log record of the process (onduty's, uvicorn's, the libraries') to `stream`
    (stderr) in `log_format`: `console` when it is a terminal and `json` otherwise unless told.
    onduty's loggers log at `level`; the libraries' only warnings and errors (unless `level`
    is higher). Calling it again replaces the set-up. Returns onduty's logger."""
    stream = stream or sys.stderr
    chosen: LogFormat = log_format or ("console" if _is_terminal(stream) else "json")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(chosen, colours=chosen == "console" and wants_colours(stream)))
    handler.set_name("onduty")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "onduty"]:
        root.removeHandler(old)
    root.addHandler(handler)
    wanted = logging.getLevelName(level.upper())
    root.setLevel(max(logging.WARNING, wanted))
    logger = logging.getLogger("onduty")
    logger.setLevel(wanted)
    structlog.configure(
        processors=[*_chain(), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return logger


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's logging set-up: its loggers hand their records to the root logger, so its
    lines (start-up, errors in request handlers, access lines) come out in onduty's format, as
    structured, escaped and redacted as onduty's own."""
    passed_on = {"handlers": [], "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "loggers": {
            "uvicorn": {**passed_on, "level": "INFO"},
            "uvicorn.error": {**passed_on, "level": "INFO"},
            "uvicorn.access": {**passed_on, "level": "INFO"},
        },
    }
