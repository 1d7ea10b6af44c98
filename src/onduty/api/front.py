"""The front door: what every request passes before any route sees it.

- **Host.** Only host names this server answers to are served (421 otherwise), against DNS
  rebinding: a page of `evil.example` whose name later resolves to 127.0.0.1 sends
  `Host: evil.example`. Answered: the loopback names, the bind address, the configured names
  (`server.allowed_hosts`, `onduty serve --allowed-host`) and IP addresses, which no DNS answer
  can rebind. The probes (`/healthz`, `/readyz`) answer any host: they tell nothing.
- **Cross-site writes.** A state-changing request (POST, PUT, PATCH, DELETE) that a browser
  says comes from another site (`Sec-Fetch-Site: cross-site` or `same-site`, or an `Origin`
  other than this server's own) is refused (403), whatever the access mode.
- **JSON only.** A write to the JSON API must say `Content-Type: application/json` (a POST
  always, even without a body; PUT, PATCH and DELETE whenever they carry one), else 415: the
  bodies a browser may send cross-site without asking first (text/plain, forms, multipart, or
  none at all) never reach a route.
- **Slow bodies.** A request body must arrive within `server.body_timeout` of the request's
  headers, else 408 (and the connection is closed).
- **Failures.** An exception no route handled is one line in the log and a JSON 500, never a
  traceback at length or a plain-text answer.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from types import TracebackType
from urllib.parse import urlsplit

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("onduty")

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
# Probes answer whatever name they are reached by (load balancers and Prometheus use their own).
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/-/healthy", "/-/ready"})
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SAME_ORIGIN_FETCHES = frozenset({"same-origin", "none"})
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


class BodyTimeout(Exception):
    """The request body did not arrive in time."""


def split_host(value: str) -> tuple[str, int | None]:
    """`Name:8765` -> ('name', 8765); `[::1]:80` -> ('[::1]', 80). Anything that is not a host
    and an optional numeric port comes back whole, so it matches no name."""
    text = value.strip().lower()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return text, None
        host, rest = text[: end + 1], text[end + 1 :]
    else:
        host, colon, port_part = text.rpartition(":")
        if not colon or ":" in host:  # no port, or a bare IPv6 address
            return text.rstrip("."), None
        rest = colon + port_part
    if not rest:
        return host.rstrip("."), None
    if not rest.startswith(":") or not rest[1:].isdigit():
        return text, None
    return host.rstrip("."), int(rest[1:])


def is_address(host: str) -> bool:
    if host.startswith("[") != host.endswith("]"):
        return False
    try:
        ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return False
    return True


def _matches(host: str, pattern: str) -> bool:
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern


class HostNames:
    """The names a server answers to: the loopback names, the bind address, the configured
    names and patterns (`*.example.com`; `*` for any), and any IP address."""

    def __init__(self, configured: Iterable[str] = (), bind: str | None = None) -> None:
        names = [*LOOPBACK_NAMES, *(name.strip().lower().rstrip(".") for name in configured)]
        if bind and not is_address(bind):
            names.append(bind.lower())
        self.any = "*" in names
        self.names = frozenset(name for name in names if not name.startswith("*"))
        self.patterns = tuple(name for name in names if name.startswith("*."))
        # Names an operator configured: a page served under one of them may write here.
        self.configured = tuple(
            name.strip().lower().rstrip(".") for name in configured if name.strip() != "*"
        )

    def answers(self, host: str) -> bool:
        return (
            self.any
            or host in self.names
            or is_address(host)
            or any(_matches(host, pattern) for pattern in self.patterns)
        )

    def trusts_origin(self, host: str) -> bool:
        return any(_matches(host, pattern) for pattern in self.configured)


_WANTED = frozenset(
    {
        b"host",
        b"origin",
        b"sec-fetch-site",
        b"content-type",
        b"content-length",
        b"transfer-encoding",
    }
)


def _headers(scope: Scope) -> dict[bytes, str]:
    """The headers the front door reads (the first of each), in one pass."""
    found: dict[bytes, str] = {}
    for key, value in scope.get("headers", ()):
        if key in _WANTED and key not in found:
            found[key] = bytes(value).decode("latin-1")
    return found


def _normal(host: str, port: int | None, scheme: str) -> tuple[str, int | None]:
    return host, port if port is not None else DEFAULT_PORTS.get(scheme)


def _json_start(status: int, body: bytes, headers: dict[str, str]) -> Message:
    return {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *((k.lower().encode(), v.encode("latin-1")) for k, v in headers.items()),
        ],
    }


async def refuse(
    send: Send, status: int, reason: str, field: str | None = None, **headers: str
) -> None:
    """Answer with a JSON error, `{"error": reason, "field": field}`, and the given headers
    (names with dashes are passed as `**{"Retry-After": "3"}`)."""
    body = orjson.dumps({"error": reason, "field": field})
    await send(_json_start(status, body, headers))
    await send({"type": "http.response.body", "body": body})


async def close_websocket(receive: Receive, send: Send, code: int) -> None:
    """Refuse a websocket: take its connect message, then close with `code`."""
    await receive()  # websocket.connect
    await send({"type": "websocket.close", "code": code})


def describe(problem: BaseException) -> str:
    """One line: the exception, its message (shortened, escaped) and where it was raised."""
    traceback: TracebackType | None = problem.__traceback__
    where = ""
    while traceback is not None:
        code = traceback.tb_frame.f_code
        where = f" at {code.co_filename.rsplit('/', 1)[-1]}:{traceback.tb_lineno}"
        traceback = traceback.tb_next
    message = str(problem)
    if len(message) > 200:
        message = message[:200] + "…"
    return f"{type(problem).__name__}{where}: {message!r}"


class ConnectionMiddleware(ABC):
    """An ASGI middleware for HTTP requests and WebSocket connections (`handle`); anything else
    (the server's lifespan messages) passes straight through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    @abstractmethod
    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check or change one request or connection, then pass it on (or answer it)."""


class FrontDoor(ConnectionMiddleware):
    """Pure ASGI middleware, outside every other: host names, cross-site writes, JSON-only
    writes to the API, the body deadline, and a JSON 500 for what nothing else handled."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        hosts: HostNames,
        json_paths: Callable[[str], bool],
        body_timeout: float,
    ) -> None:
        super().__init__(app)
        self.hosts = hosts
        # path -> whether writes to it must be JSON (the API but not the ingest routes, which
        # check their own content types)
        self.json_paths = json_paths
        self.body_timeout = body_timeout

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        problem = self._problem(scope, path)
        if problem is not None:
            if scope["type"] == "websocket":
                await close_websocket(receive, send, 4000 + problem[0])
                return
            await refuse(send, *problem)
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        await self._serve(scope, receive, send)

    def _problem(self, scope: Scope, path: str) -> tuple[int, str, str] | None:
        """Why the request is refused before it reaches the app: (status, reason, field)."""
        headers = _headers(scope)
        host_header = headers.get(b"host")
        host, port = split_host(host_header) if host_header else ("", None)
        if host_header is not None and path not in PUBLIC_PATHS and not self.hosts.answers(host):
            return (
                421,
                f"this server does not answer to the host name {host[:100]!r}; add it with "
                "--allowed-host or server.allowed_hosts",
                "Host",
            )
        method = scope.get("method", "GET")
        if scope["type"] != "http" or method not in WRITE_METHODS:
            return None
        site = headers.get(b"sec-fetch-site")
        if site is not None and site.strip().lower() not in SAME_ORIGIN_FETCHES:
            return 403, f"cross-site request refused (Sec-Fetch-Site: {site[:40]})", "Origin"
        origin = headers.get(b"origin")
        if origin is not None and not self._own_origin(
            origin, host, port, scope.get("scheme", "http")
        ):
            return 403, "cross-site request refused: the Origin is not this server", "Origin"
        if self.json_paths(path):
            kind = headers.get(b"content-type")
            media = (kind or "").partition(";")[0].strip().lower()
            has_body = b"transfer-encoding" in headers or (
                headers.get(b"content-length", "0").strip() not in ("", "0")
            )
            json = media == "application/json" or (
                media.startswith("application/") and media.endswith("+json")
            )
            if not json and (method == "POST" or has_body or kind is not None):
                got = media[:60] or "none"
                return 415, f"Content-Type must be application/json, got {got}", "Content-Type"
        return None

    def _own_origin(self, origin: str, host: str, port: int | None, scheme: str) -> bool:
        if origin.strip().lower() == "null":
            return False
        try:
            parts = urlsplit(origin.strip())
            origin_host, origin_port = split_host(parts.netloc)
            own = _normal(host, port, scheme) == _normal(origin_host, origin_port, parts.scheme)
        except ValueError:
            return False
        return own or self.hosts.trusts_origin(origin_host)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout
        body_done = False
        timed_out = False
        started = False
        replaced = False

        async def receive_in_time() -> Message:
            nonlocal body_done, timed_out
            if body_done:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                timed_out = True
                raise BodyTimeout from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def send_in_order(message: Message) -> None:
            nonlocal started, replaced
            if replaced:
                return  # the app's own answer to a body that never came: 408 went instead
            if message["type"] == "http.response.start":
                if timed_out:
                    replaced = True
                    await self._too_slow(send)
                    started = True
                    return
                started = True
            await send(message)

        try:
            await self.app(scope, receive_in_time, send_in_order)
        except BodyTimeout:
            if not started:
                await self._too_slow(send)
        except Exception as problem:
            logger.error(
                "%s %r failed: %s", scope.get("method", "?"), scope.get("path", "")[:200],
                describe(problem),
            )  # fmt: skip
            if not started:
                await refuse(send, 500, "internal error; it is in the server's log")

    async def _too_slow(self, send: Send) -> None:
        await refuse(
            send,
            408,
            f"the request body did not arrive within {self.body_timeout:g} s",
            Connection="close",
        )
