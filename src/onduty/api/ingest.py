"""The ingest hot path: raw Starlette endpoints, a lean parse, and 202 only once durable.

Per request: with access control on, check the sender's credential (401, 403; a bearer token
or an HMAC signature of the body; a credential that verifies is always accepted, an address
that keeps failing gets 429 instead of 401), then the content type (415)
and size (413), parse the body with the wire format's
parser, hand the signals to the core loop (429 when its queue is full, 503 while draining), and
answer 202 after the log has committed them. A body that is JSON but cannot become a signal is
answered 4xx *and* kept as a `SignalRejected` event (truncated, secrets redacted): nothing an
operator sent is silently dropped.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from onduty.api.auth import SIGNATURE_HEADER, Access, IngestSource, bearer_token, client_address
from onduty.events import Signal, SignalReceived, SignalRejected
from onduty.gateway import Gateway
from onduty.obs import Metrics
from onduty.runtime import Input
from onduty.sense import IngestError
from onduty.tracing import Tracing

RAW_KEEP = 4096
KEEP_DEPTH = 32
TOO_DEEP = "…[nested too deeply]"
SECRET_KEYS = ("routing_key", "token", "password", "secret", "authorization", "api_key")
RETRY_AFTER = "1"

Parser = Callable[..., list[Signal]]


@dataclass(frozen=True)
class Format:
    name: str
    parse: Parser
    content_types: tuple[str, ...]
    # For senders that expect their own acknowledgement (PagerDuty clients read `dedup_key`).
    acknowledge: Callable[[bytes, list[Signal]], dict[str, Any]] | None = None
    # For senders that carry their credential in the body (PagerDuty's `routing_key`): the
    # token found there, checked like a bearer token when the request has no other credential.
    credential: Callable[[bytes], str | None] | None = None
    # For formats that carry attributes in headers (CloudEvents' binary mode, `ce-*`): their
    # prefix. A request with such headers may have any content type (it is the data's); the
    # parser gets the headers (`headers=`) and the raw Content-Type, and decides.
    header_prefix: str | None = None


class JSONBody(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error(status: int, reason: str, field: str | None = None, **headers: str) -> Response:
    return JSONBody({"error": reason, "field": field}, status_code=status, headers=headers or None)


def media_type(request: Request) -> str | None:
    value = request.headers.get("content-type")
    if value is None:
        return None
    kind, _, params = value.partition(";")
    charset = params.strip().lower()
    if charset.startswith("charset=") and charset.removeprefix("charset=").strip('"') not in (
        "utf-8",
        "utf8",
    ):
        return "unsupported charset"
    return kind.strip().lower()


async def read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is larger than `limit` (read no further than that)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def redact(value: Any, depth: int = 0) -> Any:
    """`value` with the values of secret-looking keys replaced; nesting past `KEEP_DEPTH` is
    cut (a rejected body is kept for a person to read, not to be rebuilt)."""
    if isinstance(value, dict | list) and depth >= KEEP_DEPTH:
        return TOO_DEEP
    if isinstance(value, dict):
        return {
            key: "[redacted]"
            if any(secret in str(key).lower() for secret in SECRET_KEYS)
            else redact(item, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item, depth + 1) for item in value]
    return value


_SECRET_TEXT = re.compile(
    r'("[^"\\]*(?:' + "|".join(SECRET_KEYS) + r')[^"\\]*"\s*:\s*)"(?:[^"\\]|\\.)*"',
    re.IGNORECASE,
)


def kept_raw(body: bytes) -> str:
    """What a rejected body is remembered as: its JSON with secrets redacted, truncated. A body
    that cannot be read back as JSON here (nested past orjson's limit, a number past 64 bits)
    is kept as text, with the string values of secret-looking keys redacted."""
    try:
        text = orjson.dumps(redact(orjson.loads(body))).decode()
    except (orjson.JSONDecodeError, orjson.JSONEncodeError, RecursionError):
        text = _SECRET_TEXT.sub(r'\1"[redacted]"', body.decode("utf-8", errors="replace"))
    return text if len(text) <= RAW_KEEP else text[:RAW_KEEP] + "…[truncated]"


def _carried(request: Request, prefix: str | None) -> dict[str, str]:
    """The request's headers that start with `prefix` (lower-case names), if it has one."""
    if not prefix:
        return {}
    return {
        name: value
        for name, value in request.headers.items()
        if name.startswith(prefix) and len(name) > len(prefix)
    }


class Ingest:
    """The ingest endpoints of one service."""

    def __init__(
        self,
        gateway: Gateway,
        metrics: Metrics,
        *,
        max_body: int,
        access: Access | None = None,
        max_unauthenticated: int = 64,
        tracing: Tracing | None = None,
    ):
        self._gateway = gateway
        self._tracing = tracing or Tracing()
        self._metrics = metrics
        self._max_body = max_body
        self._access = access
        # bodies being read before their sender is known (an HMAC signature, a routing key):
        # each holds a connection until it arrives or times out, so only so many at once
        self._max_unauthenticated = max_unauthenticated
        self._unauthenticated = 0

    def endpoint(self, fmt: Format) -> Callable[[Request], Any]:
        async def receive(request: Request) -> Response:
            started = time.perf_counter()
            with self._tracing.ingest(fmt.name, request.headers.get("traceparent")) as received:
                response = await self._receive(fmt, request, received.traceparent)
                received.finish(response.status_code)
            delivery = getattr(request.state, "signed_delivery", None)
            if delivery is not None and response.status_code != 202 and self._access is not None:
                self._access.replays.forget(delivery)  # refused after all: it may come again
            if response.status_code == 202:
                self._metrics.ingest_seconds.labels(fmt.name).observe(time.perf_counter() - started)
            else:
                self._metrics.rejected.labels(fmt.name, str(response.status_code)).inc()
            return response

        return receive

    async def _authenticate(
        self, fmt: Format, request: Request, access: Access
    ) -> tuple[Response | None, IngestSource | None, bytes | None]:
        """The sender, by its bearer token or its HMAC signature of the body (then read here,
        and returned so it is not read twice); or the response refusing it.

        A credential that verifies is accepted even from an address that has failed too often
        (that address may be a NAT shared with an attacker); only failures are throttled."""
        token = bearer_token(request)
        source = access.ingest_token(token) if token else None
        body: bytes | None = None
        problem, status = "", 401
        signature = request.headers.get(SIGNATURE_HEADER)
        reads_body = signature is not None or (token is None and fmt.credential is not None)
        if source is None and reads_body:
            if self._unauthenticated >= self._max_unauthenticated:
                reason = "too many requests are being authenticated; retry shortly"
                return error(503, reason, **{"Retry-After": RETRY_AFTER}), None, None
            self._unauthenticated += 1
            try:
                body = await read_limited(request, self._max_body)
            finally:
                self._unauthenticated -= 1
            if body is None:
                return self._too_large(), None, None
            if signature is not None:
                check = access.ingest_signature(body, signature)
                source = check.source
                if check.delivery is not None:
                    request.state.signed_delivery = check.delivery
                problem, status = check.problem, check.status
            elif fmt.credential is not None:
                carried = fmt.credential(body)
                source = access.ingest_token(carried) if carried else None
        if source is None:
            address = client_address(request)
            retry = access.throttle.retry_after(address)
            if retry is not None:
                reason = "too many failed authentications; retry later"
                return error(429, reason, **{"Retry-After": str(retry)}), None, None
            access.throttle.failed(address)
            if problem:
                return error(status, problem), None, None
            reason = "authentication required: a bearer token or an X-Onduty-Signature"
            return error(401, reason, **{"WWW-Authenticate": "Bearer"}), None, None
        if not source.may_use(fmt.name):
            return error(403, f"{source.name} may not send to the {fmt.name} route"), None, None
        return None, source, body

    def _too_large(self) -> Response:
        return error(413, f"the body is larger than the limit of {self._max_body} bytes")

    async def _receive(self, fmt: Format, request: Request, trace: str | None) -> Response:
        source: IngestSource | None = None
        body: bytes | None = None
        access = self._access
        if access is not None and access.enabled:
            refused, source, body = await self._authenticate(fmt, request, access)
            if refused is not None:
                return refused
        actor = source.name if source is not None else "onduty"
        kind = media_type(request)
        options: dict[str, Any] = {"content_type": kind}
        carried = _carried(request, fmt.header_prefix)
        if carried:
            options = {"content_type": request.headers.get("content-type"), "headers": carried}
        elif kind not in fmt.content_types:
            expected = " or ".join(fmt.content_types)
            if fmt.header_prefix:
                expected += f" (or any, with {fmt.header_prefix}* headers)"
            return error(415, f"Content-Type must be {expected}, got {kind or 'none'}")
        if body is None:
            body = await read_limited(request, self._max_body)
        if body is None:
            return self._too_large()
        try:
            signals = fmt.parse(body, received_at=datetime.now(UTC), **options)
        except IngestError as problem:
            if problem.status == 422:
                rejected = SignalRejected(
                    source=fmt.name, reason=problem.reason, field=problem.field, raw=kept_raw(body)
                )
                await self.durable([Input(rejected, stream=f"rejected:{fmt.name}", actor=actor)])
            return error(problem.status, problem.reason, problem.field)
        inputs = [
            Input(_stamped(signal, trace), stream=f"signal:{signal.fingerprint}", actor=actor)
            for signal in signals
        ]
        outcome = await self.durable(inputs)
        if outcome is not None:
            return outcome
        self._metrics.signals.labels(fmt.name).inc(len(inputs))
        body_out = {"accepted": len(inputs)}
        if fmt.acknowledge is not None:
            body_out.update(fmt.acknowledge(body, signals))
        return JSONBody(body_out, status_code=202)

    async def durable(self, inputs: Sequence[Input]) -> Response | None:
        """Hand inputs to the core; None once durable, else the response to give instead."""
        if not inputs:
            return None
        refused = await self._gateway.submit(inputs)
        self._metrics.pending.set(self._gateway.pending)
        if refused is None:
            return None
        return error(refused.status, refused.reason, **{"Retry-After": str(refused.retry_after)})


def _stamped(signal: Any, trace: str | None) -> SignalReceived:
    """The signal as recorded: a `SignalReceived` (the parsers build one: no need to validate it
    twice), with the request's trace context when there is one."""
    body = (
        signal
        if isinstance(signal, SignalReceived)
        else SignalReceived.model_validate(dict(signal))
    )
    return body if trace is None else body.model_copy(update={"traceparent": trace})
