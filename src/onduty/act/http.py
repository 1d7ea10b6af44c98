"""The HTTP actuator: one request per action.

The URL's scheme and host are written out in the spec; values from the command (target,
parameters, ids) are percent-encoded into its path and query, slashes included, so a target
like `../admin` stays one path segment (`..%2Fadmin`). The body is a JSON structure whose
string leaves are templates. Headers may reference secrets (`${ENV:NAME}`, `${FILE:/path}`):
they are resolved when the actuator is created and never appear in outputs, errors or a
`repr`; a response that echoes one has it replaced with `[redacted]`.

An unexpected status is a failure that names the status and the (truncated, redacted)
response body. Redirects are not followed. The whole exchange is bounded by the timeout (the
stricter of the spec's and the command's). `run` blocks: call it from a worker thread.

Crash semantics (`in_flight = "request"`): a request in flight dies with onduty, but the server
may still be applying it. A restart waits until the request's timeout has passed since it was
sent, then asks `check_url` (or re-sends an idempotent request, or escalates a non-idempotent
one it cannot check).
"""

from __future__ import annotations

import contextlib
import functools
import ssl
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from onduty.act.base import Outcome
from onduty.act.runs import InFlight, current_run
from onduty.act.specs import (
    HttpSpec,
    OutcomeUnknown,
    effective_timeout,
    format_seconds,
)
from onduty.act.templates import (
    TemplateError,
    check_context,
    command_context,
    render_json,
    render_url,
)
from onduty.commands import StartAction, StartUndo
from onduty.httpbits import connect_error_reason
from onduty.secrets import Secrets, SecretValues, resolve_references

_ERROR_BODY = 500


class HttpFailure(Exception):
    """A request that got no usable response (timeout, connection error); the message is
    already redacted."""


class Response:
    """A response's status and the beginning of its body (redacted)."""

    __slots__ = ("body", "status", "truncated")

    def __init__(self, status: int, body: str, truncated: bool) -> None:
        self.status = status
        self.body = body
        self.truncated = truncated


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The TLS settings every request shares (httpx's defaults: certificates verified against
    its trust store), made once: loading the trust store is nearly all a new client costs
    (~20 ms, against ~0.1 ms with it shared)."""
    return httpx.create_ssl_context()


class HttpExchange:
    """Sends requests with resolved headers, a total deadline and a bounded, redacted body.
    Shared by the HTTP and Alertmanager actuators."""

    def __init__(
        self,
        headers: SecretValues,
        secrets: Secrets,
        client: httpx.Client | None,
        *,
        max_body: int,
    ) -> None:
        self._headers = headers
        self.secrets = secrets
        self._client = client
        self._max_body = max_body

    def __repr__(self) -> str:
        return f"HttpExchange(headers={self._headers.names()!r}, values redacted)"

    @contextlib.contextmanager
    def _session(self) -> Iterator[httpx.Client]:
        if self._client is not None:
            yield self._client
            return
        with httpx.Client(follow_redirects=False, verify=tls_context()) as client:
            yield client

    def send(
        self,
        method: str,
        url: str,
        *,
        timeout: float,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        max_body: int | None = None,
    ) -> Response:
        """One request; raises `HttpFailure` when no response came in time. Keeps at most
        `max_body` bytes of the body (default: the exchange's limit)."""
        limit = self._max_body if max_body is None else max_body
        headers = self._headers.as_dict()
        content: bytes | None = None
        if json is not None:
            content = orjson.dumps(json)
            if not any(name.lower() == "content-type" for name in headers):
                headers["Content-Type"] = "application/json"
        deadline = time.monotonic() + timeout
        where = f"{method} {url}"
        try:
            with (
                self._session() as client,
                client.stream(
                    method,
                    url,
                    headers=headers,
                    content=content,
                    params=params,
                    timeout=httpx.Timeout(timeout),
                    follow_redirects=False,
                ) as response,
            ):
                body = bytearray()
                truncated = False
                for chunk in response.iter_bytes():
                    room = limit - len(body)
                    body += chunk[:room]
                    if len(chunk) > room:
                        truncated = True
                        break
                    if time.monotonic() > deadline:
                        break  # reported below as a timeout
                status = response.status_code
        except httpx.TimeoutException:
            raise HttpFailure(
                self.secrets.redact(f"{where}: timed out after {format_seconds(timeout)}")
            ) from None
        except httpx.HTTPError as error:
            raise HttpFailure(
                self.secrets.redact(f"{where}: {connect_error_reason(error)}")
            ) from None
        if time.monotonic() > deadline:
            raise HttpFailure(
                self.secrets.redact(f"{where}: timed out after {format_seconds(timeout)}")
            )
        edge = max(self.secrets.longest - 1, 0) if truncated else 0
        raw = bytes(body[: len(body) - edge] if edge else body)
        return Response(status, self.secrets.redact(raw.decode(errors="replace")), truncated)

    def describe(self, method: str, url: str, response: Response) -> str:
        """`POST http://…/x: unexpected status 500: <the beginning of the body>`."""
        text = " ".join(response.body.split())
        if len(text) > _ERROR_BODY or response.truncated:
            text = text[:_ERROR_BODY] + "…"
        message = f"{method} {url}: unexpected status {response.status}"
        return self.secrets.redact(f"{message}: {text}" if text else message)


def _same_authority(template: str, url: str) -> bool:
    expected, actual = urlsplit(template), urlsplit(url)
    return (expected.scheme, expected.netloc) == (actual.scheme, actual.netloc)


class HttpActuator:
    """Runs an `HttpSpec`. `client` may be shared (the caller closes it); without one, each
    request uses a client of its own, closed when the request is done."""

    in_flight = InFlight.REQUEST

    def __init__(
        self,
        spec: HttpSpec,
        client: httpx.Client | None = None,
        *,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.spec = spec
        headers, secrets = resolve_references(spec.headers, what="header", env=env)
        self._http = HttpExchange(headers, secrets, client, max_body=spec.max_output)

    @property
    def idempotent(self) -> bool:
        return self.spec.idempotent

    @property
    def can_check(self) -> bool:
        return self.spec.check_url is not None

    def __repr__(self) -> str:
        return (
            f"HttpActuator(action={self.spec.action!r}, {self.spec.method} {self.spec.url}, "
            f"headers={sorted(self.spec.headers)!r})"
        )

    def run(self, command: StartAction | StartUndo) -> Outcome:
        context = command_context(command)
        try:
            url = render_url(self.spec.url, context)
            body = None if self.spec.body is None else render_json(self.spec.body, context)
        except TemplateError as error:
            return Outcome(False, error=self._http.secrets.redact(f"refused: {error}"))
        if not _same_authority(self.spec.url, url):  # the templates cannot reach the host
            return Outcome(False, error=f"refused: {url!r} is not on the configured host")
        timeout = effective_timeout(self.spec.timeout, command.timeout_s)
        method = self.spec.method
        if (run := current_run()) is not None:
            run.note(started=time.time(), timeout=timeout, doing=f"sending {method} {url}")
        try:
            response = self._http.send(method, url, timeout=timeout, json=body)
        except HttpFailure as error:
            return Outcome(False, error=str(error))
        if response.status not in self.spec.expect_status:
            return Outcome(
                False, output=response.body, error=self._http.describe(method, url, response)
            )
        return Outcome(True, output=f"{method} {url}: {response.status}\n{response.body}".rstrip())

    def check(self, command_id: str) -> Outcome | None:
        """GET `check_url`: 200 → it took effect, 404 → it never ran (None); anything else
        raises `OutcomeUnknown`."""
        if self.spec.check_url is None:
            raise OutcomeUnknown("this HTTP actuator has no check_url to check outcomes with")
        try:
            url = render_url(self.spec.check_url, check_context(command_id), where="check_url")
        except TemplateError as error:
            raise OutcomeUnknown(f"check refused: {error}") from None
        try:
            response = self._http.send("GET", url, timeout=self.spec.timeout.total_seconds())
        except HttpFailure as error:
            raise OutcomeUnknown(f"check failed: {error}") from None
        if response.status == 200:
            return Outcome(True, output=response.body)
        if response.status == 404:
            return None
        raise OutcomeUnknown("check: " + self._http.describe("GET", url, response))


def from_spec(spec: Mapping[str, Any]) -> HttpActuator:
    """The `onduty.actuators` entry point for kind `http`."""
    return HttpActuator(HttpSpec.model_validate(dict(spec)))
