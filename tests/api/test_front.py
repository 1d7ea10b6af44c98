"""The front door's parts: host names, the server settings, and the JSON 500 for what no route
handled (one log line, never a traceback at length)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
import pytest
from starlette.types import Message, Receive, Scope, Send

from onduty.api.front import FrontDoor, HostNames, split_host
from onduty.config import ConfigError, parse_config


def test_host_headers_are_split_into_name_and_port() -> None:
    assert split_host("Onduty.Example.com:8765") == ("onduty.example.com", 8765)
    assert split_host("localhost") == ("localhost", None)
    assert split_host("[::1]:80") == ("[::1]", 80)
    assert split_host("[::1]") == ("[::1]", None)
    assert split_host("example.com.:443") == ("example.com", 443)
    for odd in ("localhost:80@evil.example", "[::1]evil", "localhost:", "[::1"):
        assert not HostNames().answers(split_host(odd)[0]), odd


def test_the_names_answered_by_default_and_as_configured() -> None:
    default = HostNames()
    for host in ("localhost", "127.0.0.1", "[::1]", "10.1.2.3", "[fe80::1]"):
        assert default.answers(host), host
    for host in ("evil.example", "localhost.evil.example", "onduty"):
        assert not default.answers(host), host
    configured = HostNames(["onduty.example.com", "*.internal"], bind="onduty-1")
    for host in ("onduty.example.com", "a.internal", "b.c.internal", "onduty-1"):
        assert configured.answers(host), host
    assert not configured.answers("internal")
    assert not configured.answers("example.com")
    assert configured.trusts_origin("onduty.example.com")
    assert not configured.trusts_origin("localhost")  # another port of localhost is a stranger
    assert HostNames(["*"]).answers("anything.example")


@pytest.mark.parametrize(
    ("server", "named"),
    [
        ({"allowed_hosts": ["http://x.example"]}, "server.allowed_hosts[0]"),
        ({"allowed_hosts": ["x.example:80"]}, "server.allowed_hosts[0]"),
        ({"trusted_proxies": ["10.0.0.0/33"]}, "server.trusted_proxies[0]"),
        ({"body_timeout": "0s"}, "server.body_timeout"),
        ({"max_unauthenticated": 0}, "server.max_unauthenticated"),
        ({"docs": True}, "server.docs"),
    ],
)
def test_bad_server_settings_name_the_field(server: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError) as problem:
        parse_config({"server": server})
    assert any(p.startswith(named) for p in problem.value.problems), problem.value.problems


def test_server_settings_leave_the_policy_version_alone() -> None:
    plain = parse_config({})
    tuned = parse_config(
        {"server": {"allowed_hosts": ["[::1]", "Onduty.Example.com"], "trusted_proxies": ["::1"]}}
    )
    assert tuned.server.allowed_hosts == ["[::1]", "onduty.example.com"]
    assert tuned.server.trusted_proxies == ["::1/128"]
    assert tuned.version == plain.version


async def _deep(scope: Scope, receive: Receive, send: Send) -> None:
    def down(n: int) -> int:
        return down(n + 1)

    down(0)  # RecursionError, with a traceback a thousand frames long


async def _half(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    raise ValueError("failed\nhalfway")


def _call(app: Any, path: str = "/x") -> list[Message]:
    """What the front door around `app` sends for one GET (ASGI messages, as a server sees)."""
    door = FrontDoor(app, hosts=HostNames(), json_paths=lambda path: False, body_timeout=1.0)
    scope = {
        "type": "http", "method": "GET", "path": path, "scheme": "http",
        "headers": [(b"host", b"localhost")],
    }  # fmt: skip
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(door(scope, receive, send))
    return sent


def test_an_unhandled_exception_is_a_json_500_and_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="onduty"):
        start, body = _call(_deep, "/x\nforged line")
    assert start["status"] == 500
    assert (b"content-type", b"application/json") in start["headers"]
    assert orjson.loads(body["body"]) == {
        "error": "internal error; it is in the server's log",
        "field": None,
    }
    assert len(caplog.records) == 1
    record = caplog.records[0]
    assert record.exc_info is None  # no traceback
    line = record.getMessage()
    assert "\n" not in line and len(line) < 600, line
    assert "RecursionError at test_front.py:" in line


def test_an_exception_after_the_answer_began_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="onduty"):
        sent = _call(_half)
    assert [m["type"] for m in sent] == ["http.response.start"]  # the server drops it
    assert len(caplog.records) == 1
    assert "\n" not in caplog.records[0].getMessage()
    assert "failed\\nhalfway" in caplog.records[0].getMessage()  # escaped, on one line
