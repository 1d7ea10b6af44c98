"""The service's log lines: JSON a machine reads back exactly, a console line a person reads,
the context's ids and the current trace on every line, credentials and secret values never
written, untrusted text never raw."""

from __future__ import annotations

import io
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider
from structlog.contextvars import bound_contextvars

from onduty import logs
from onduty.act.specs import SupervisorSpec
from onduty.act.supervisor import SupervisorActuator
from onduty.api.access_config import AccessConfig
from onduty.api.auth import Access
from onduty.escalate.deliver import SENDERS
from onduty.escalate.specs import parse_channels
from onduty.secrets import resolve_references

HOSTILE = "a\x1b[2J\x1b]0;owned\x07\u202eevil\r\n2026-01-05 INFO onduty: forged\u2028\U000e0041"


def emit(
    log_format: logs.LogFormat, write: Callable[[logging.Logger], None], colours: bool = False
) -> str:
    """What onduty's formatter writes for the records `write` logs."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.formatter(log_format, colours=colours))
    logger = logging.getLogger("onduty.test-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        write(logger)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines()]


def test_a_json_line_carries_the_message_the_context_and_the_fields() -> None:
    def write(logger: logging.Logger) -> None:
        with bound_contextvars(incident_id="inc-1", command_id="cmd-1", event_id=None):
            logger.warning("source %s: down", "am", extra={"source": "am", "attempt": 2})
        logger.info("outside")

    inside, outside = lines(emit("json", write))
    assert list(inside)[:4] == ["timestamp", "level", "logger", "message"]
    assert inside["level"] == "warning" and inside["logger"] == "onduty.test-logs"
    assert inside["message"] == "source am: down"
    assert inside["incident_id"] == "inc-1" and inside["command_id"] == "cmd-1"
    assert "event_id" not in inside  # bound as None: nothing to say
    assert inside["source"] == "am" and inside["attempt"] == 2
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", inside["timestamp"])
    assert "incident_id" not in outside and outside["message"] == "outside"


def test_ids_bound_on_one_thread_stay_on_it() -> None:
    seen: list[str] = []

    def write(logger: logging.Logger) -> None:
        def other() -> None:
            logger.info("other thread")

        with bound_contextvars(incident_id="inc-1"):
            thread = threading.Thread(target=other)
            thread.start()
            thread.join()
            logger.info("this thread")

    for line in lines(emit("json", write)):
        seen.append(f"{line['message']}:{line.get('incident_id')}")
    assert seen == ["other thread:None", "this thread:inc-1"]


def test_a_line_logged_inside_a_span_names_its_trace() -> None:
    tracer = TracerProvider().get_tracer("onduty.test")

    def write(logger: logging.Logger) -> None:
        with tracer.start_as_current_span("handle") as span:
            context = span.get_span_context()
            logger.info("in a span")
        logger.info("after it")
        ids.extend([format(context.trace_id, "032x"), format(context.span_id, "016x")])

    ids: list[str] = []
    inside, after = lines(emit("json", write))
    assert [inside["trace_id"], inside["span_id"]] == ids
    assert "trace_id" not in after and "span_id" not in after


def test_an_exception_is_one_json_line_with_its_traceback() -> None:
    def write(logger: logging.Logger) -> None:
        try:
            raise RuntimeError(HOSTILE)
        except RuntimeError:
            logger.exception("delivery failed")

    output = emit("json", write)
    (line,) = lines(output)  # the traceback's line breaks are escapes inside one line
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert line["exception"].endswith(f"RuntimeError: {HOSTILE}")


def test_json_escapes_what_would_steer_a_terminal_and_gives_the_text_back() -> None:
    def write(logger: logging.Logger) -> None:
        logger.warning("label %s", HOSTILE, extra={"labels": {"note": HOSTILE}, "ok": "日本 é"})

    output = emit("json", write)
    assert output.count("\n") == 1
    for raw in ("\x1b", "\x07", "\r", "\u202e", "\u2028", "\U000e0041"):
        assert raw not in output
    for escape in ("\\u001b[2J", "\\u0007", "\\r\\n", "\\u202eevil", "\\u2028", "\\udb40\\udc41"):
        assert escape in output
    assert "日本 é" in output  # readable text stays readable
    (line,) = lines(output)
    assert line["message"] == f"label {HOSTILE}" and line["labels"] == {"note": HOSTILE}


# --------------------------------------------------------------------------- redaction


@pytest.mark.parametrize(
    "field", ["password", "token", "client_secret", "Authorization", "api_key", "apiKey"]
)
def test_credential_fields_are_redacted_wherever_they_are(field: str) -> None:
    def write(logger: logging.Logger) -> None:
        nested = {"headers": {field: "Bearer abc123xyz"}, "items": [{field: "abc123xyz"}]}
        logger.warning("request failed", extra={field: "abc123xyz", "request": nested})
        logger.warning("a numeric one", extra={field: 123456})

    output = emit("json", write)
    assert "abc123xyz" not in output and "123456" not in output
    line, numeric = lines(output)
    assert line[field] == "[redacted]" and numeric[field] == "[redacted]"
    assert line["request"] == {"headers": {field: "[redacted]"}, "items": [{field: "[redacted]"}]}


def _env_reference(tmp_path: Path) -> list[str]:
    _, secrets = resolve_references(
        {"Authorization": "Bearer ${ENV:LOGS_TOKEN}"},
        what="header",
        env={"LOGS_TOKEN": "env-token-5f3a9"},
    )
    assert secrets
    return ["env-token-5f3a9", "Bearer env-token-5f3a9"]


def _file_reference(tmp_path: Path) -> list[str]:
    path = tmp_path / "secret"
    path.write_text("file-secret-88c1\n")
    resolve_references({"password": "${FILE:" + str(path) + "}"}, what="supervisor")
    return ["file-secret-88c1"]


def _access_hmac_secrets(tmp_path: Path) -> list[str]:
    path = tmp_path / "hmac"
    path.write_text("hmac-file-2b7d\n")
    config = AccessConfig.model_validate(
        {
            "tokens": [{"name": "root", "roles": ["admin"], "hash": "sha256:" + "0" * 64}],
            "ingest": [
                {"name": "ce", "hmac_secret": "${ENV:LOGS_CE_HMAC}"},
                {"name": "gh", "hmac_secret": "${FILE:" + str(path) + "}"},
            ],
        }
    )
    Access(config, env={"LOGS_CE_HMAC": "hmac-env-7e21"})
    return ["hmac-env-7e21", "hmac-file-2b7d"]


def _supervisor_basic_auth(tmp_path: Path) -> list[str]:
    spec = SupervisorSpec.model_validate(
        {
            "kind": "supervisor",
            "url": "http://127.0.0.1:9",
            "username": "onduty",
            "password": "${ENV:LOGS_SV_PASSWORD}",
        }
    )
    SupervisorActuator(spec, env={"LOGS_SV_PASSWORD": "sv-pass-41d0"})
    return ["sv-pass-41d0", "b25kdXR5OnN2LXBhc3MtNDFkMA=="]  # base64 of onduty:sv-pass-41d0


def _channel_urls(tmp_path: Path) -> list[str]:
    slack, hook = parse_channels(
        [
            {"kind": "slack", "name": "s", "url": "https://hooks.slack.com/services/T0/B0/SLK9"},
            {
                "kind": "webhook",
                "name": "w",
                "url": "https://e.com/hook?token=${ENV:LOGS_HOOK}",
                "headers": {"X-Key": "${ENV:LOGS_HOOK_KEY}"},
            },
        ]
    )
    env = {"LOGS_HOOK": "hook-token-c4", "LOGS_HOOK_KEY": "hook-key-90ab"}
    for spec in (slack, hook):
        SENDERS[type(spec)](spec, env=env)
    return ["https://hooks.slack.com/services/T0/B0/SLK9", "hook-token-c4", "hook-key-90ab"]


SECRET_KINDS = {
    "env reference in a template": _env_reference,
    "file reference": _file_reference,
    "access hmac secrets": _access_hmac_secrets,
    "supervisor basic auth": _supervisor_basic_auth,
    "channel urls and headers": _channel_urls,
}


@pytest.mark.parametrize("kind", list(SECRET_KINDS))
def test_every_resolved_secret_is_redacted_in_values_messages_and_tracebacks(
    kind: str, tmp_path: Path
) -> None:
    values = SECRET_KINDS[kind](tmp_path)

    def write(logger: logging.Logger) -> None:
        for value in values:
            logger.warning("calling with %s failed", value, extra={"url": value, "v": [value]})
            try:
                raise ConnectionError(f"refused {value}\nretry")
            except ConnectionError:
                logger.exception("delivery failed")

    for log_format in logs.LOG_FORMATS:
        output = emit(log_format, write)
        for value in values:
            assert value not in output, (kind, log_format)
        assert "[redacted]" in output
    for line in lines(emit("json", write)):
        assert line.get("url", "[redacted]") == "[redacted]"


def test_a_short_secret_is_redacted_only_as_a_whole_value() -> None:
    resolve_references({"k": "${ENV:LOGS_SHORT}"}, what="header", env={"LOGS_SHORT": "ab"})

    def write(logger: logging.Logger) -> None:
        logger.info("about a cab", extra={"key_id": "ab"})

    (line,) = lines(emit("json", write))
    assert line["message"] == "about a cab" and line["key_id"] == "[redacted]"


# --------------------------------------------------------------------------- the console


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def configured() -> Iterator[None]:
    """`configure_logging` changes the process's logging; put it back afterwards."""
    root, onduty = logging.getLogger(), logging.getLogger("onduty")
    handlers, levels = list(root.handlers), (root.level, onduty.level)
    yield
    root.handlers[:] = handlers
    root.setLevel(levels[0])
    onduty.setLevel(levels[1])
    structlog.reset_defaults()


@pytest.mark.usefixtures("configured")
def test_a_terminal_gets_coloured_console_lines_and_a_pipe_gets_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    terminal = FakeTerminal()
    logger = logs.configure_logging("info", stream=terminal)
    with bound_contextvars(incident_id="inc-1"):
        logger.warning("label %s", HOSTILE, extra={"note": HOSTILE})
    try:
        raise RuntimeError("first\nsecond")
    except RuntimeError:
        logger.exception("failed")
    logging.getLogger("some.library").info("not at info")
    logging.getLogger("some.library").warning("but at warning")
    output = terminal.getvalue()
    first, second, *traceback, library = output.splitlines()
    assert "\x1b[33mWARNING\x1b[0m onduty: label a\\x1b[2J\\x1b]0;owned\\x07\\u202eevil" in first
    assert "incident_id=inc-1" in first and "forged" in first  # the forged line is not a line
    assert "\x1b[31mERROR\x1b[0m onduty: failed" in second
    assert traceback[0] == "    Traceback (most recent call last):"
    assert traceback[-2:] == ["    RuntimeError: first", "    second"]
    assert "WARNING" in library and "but at warning" in library
    ours = re.sub(r"\x1b\[[0-9;]*m", "", output)  # onduty's own colours, and nothing else
    assert "\x1b" not in ours and "\u202e" not in ours and "\r" not in ours

    pipe = io.StringIO()
    logs.configure_logging("info", stream=pipe).info("to a pipe")
    assert json.loads(pipe.getvalue())["message"] == "to a pipe"
    assert not terminal.getvalue()[len(output) :]  # the terminal's handler was replaced


@pytest.mark.usefixtures("configured")
def test_console_lines_without_colours_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    terminal = FakeTerminal()
    logs.configure_logging("debug", stream=terminal).debug("quiet %s", "x", extra={"n": "a b"})
    (line,) = terminal.getvalue().splitlines()
    assert line.endswith(' DEBUG onduty: quiet x n="a b"') and "\x1b" not in line

    forced = FakeTerminal()
    logs.configure_logging("info", "json", stream=forced).info("json on a terminal")
    assert json.loads(forced.getvalue())["message"] == "json on a terminal"


def test_a_field_that_cannot_be_shown_does_not_lose_the_line() -> None:
    class Broken:
        def __str__(self) -> str:
            raise ValueError("no")

    def write(logger: logging.Logger) -> None:
        logger.warning("still here", extra={"thing": Broken()})

    (line,) = lines(emit("json", write))
    assert line["message"] == "still here" and line["thing"] == "<Broken>"
