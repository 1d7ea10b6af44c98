"""Pollers: signal sources that onduty asks on a schedule instead of waiting to be told.

A poller looks at something every `interval` and turns what it sees into `Signal`s, following
Prometheus's notification rules: a signal when a condition starts firing, a re-send every
`resend` while it fires, and one when it resolves. Nothing is sent while the state is unchanged,
so the runtime sees transitions, not samples.

Two kinds are configured here (`sources:` in the configuration):

- `http_probe` (`HttpProbe`, run by `onduty.sense.probe.ProbeSource`): an HTTP health check.
- `prometheus` (`PrometheusQuery`, run by `onduty.sense.prometheus.PrometheusSource`): an
  instant PromQL query compared with a threshold, with a `for` duration like an alerting rule.

`run_pollers` drives any number of them, each on its own interval.

Header values may name secrets instead of holding them: `${ENV:NAME}` or `${FILE:/path}`. The
configuration (which is recorded in the event log) keeps the reference; the value is read when
a source starts, sent only as a request header, and never logged, shown in a `repr` or put into
a signal.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    field_validator,
    model_validator,
)

from onduty.config import Duration, format_duration
from onduty.events import Signal, to_json
from onduty.secrets import SecretError, SecretValues, check_headers, resolve_references

if TYPE_CHECKING:
    import httpx

    from onduty.sense.probe import ProbeSource
    from onduty.sense.prometheus import PrometheusSource

log = logging.getLogger(__name__)

DEFAULT_RESEND = timedelta(minutes=5)

# --------------------------------------------------------------------------- errors


class PollError(Exception):
    """A poll could not observe its target (the monitoring system failed, not the target).

    It is never turned into a signal: a broken Prometheus must not look like a healthy fleet,
    nor like a failing one. The caller logs it; the source's state is left as it was."""


# --------------------------------------------------------------------------- helpers


def fingerprint(labels: Mapping[str, str]) -> str:
    """Stable identity of an alert: sha256 of its sorted labels, 16 hex digits (the same
    spelling as the simulator's alerts)."""
    return hashlib.sha256(to_json(dict(sorted(labels.items())))).hexdigest()[:16]


_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _check_labels(labels: dict[str, str], reserved: Iterable[str]) -> dict[str, str]:
    taken = set(reserved)
    for name in labels:
        if not _LABEL_NAME.match(name):
            raise ValueError(f"label name {name!r} is not a valid Prometheus label name")
        if name.startswith("__"):
            raise ValueError(f"label name {name!r} is reserved (names starting with __)")
        if name in taken:
            raise ValueError(f"label {name!r} is set by the source itself and cannot be configured")
    return labels


def _check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
    if not parts.hostname:
        raise ValueError(f"the URL {value!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            "credentials in the URL would be recorded and shown; "
            "send them as a header that references ${ENV:NAME} or ${FILE:/path}"
        )
    try:
        _ = parts.port
    except ValueError as error:
        raise ValueError(f"the URL {value!r} has an invalid port: {error}") from None
    return value


def _parse_status_class(value: Any) -> Any:
    """200, "2xx", [200, 204], ["2xx", 404] → a sorted list of status codes."""
    items = value if isinstance(value, list | tuple) else [value]
    codes: set[int] = set()
    for item in items:
        if isinstance(item, bool):
            raise ValueError(f"expected a status code such as 200 or a class such as 2xx: {item!r}")
        if isinstance(item, int):
            codes.add(item)
            continue
        if isinstance(item, str):
            text = item.strip().lower()
            if re.fullmatch(r"[1-5]xx", text):
                first = int(text[0]) * 100
                codes.update(range(first, first + 100))
                continue
            if text.isdigit():
                codes.add(int(text))
                continue
        raise ValueError(f"expected a status code such as 200 or a class such as 2xx: {item!r}")
    return sorted(codes)


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def connect_error_reason(error: BaseException) -> str:
    """Why a connection could not be made: "connection refused", or the error's own text."""
    cause: BaseException | None = error
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    text = str(error)
    if "refused" in text.lower():
        return "connection refused"
    return f"cannot connect: {text}" if text else "cannot connect"


# --------------------------------------------------------------------------- secrets


class ResolvedHeaders(SecretValues):
    """Request headers with their secrets resolved."""

    __slots__ = ()


def resolve_headers(
    headers: Mapping[str, str], *, env: Mapping[str, str] | None = None
) -> ResolvedHeaders:
    """Replace every `${ENV:NAME}` and `${FILE:/path}` in the header values. Errors name the
    header and the reference, never a value."""
    values, _ = resolve_references(headers, what="header", env=env)
    resolved = values.as_dict()
    for name, value in resolved.items():
        if "\r" in value or "\n" in value:  # a secret must not smuggle in another header
            raise SecretError(f"header {name!r}: the resolved value contains a line break")
    return ResolvedHeaders(resolved)


# --------------------------------------------------------------------------- configuration


class _SourceModel(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    """The source's name (letters, digits, `_.:-`): the signals' `source`, and part of their
    fingerprint."""
    url: str
    """What is polled: the probed URL, or Prometheus's base URL."""
    interval: Duration = timedelta(seconds=30)
    """How often it polls."""
    timeout: Duration = timedelta(seconds=5)
    """The limit of one poll; shorter than `interval`."""
    resend: Duration = DEFAULT_RESEND
    """How often a firing signal is sent again while it keeps firing (Prometheus's
    `resend_delay` as Alertmanager sees it)."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Labels added to every signal (e.g. `service`, `instance`, so that it is placed)."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Request headers; values may reference `${ENV:NAME}` or `${FILE:/path}`."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_url(value)

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        return check_headers(value)

    @model_validator(mode="after")
    def _timing(self) -> _SourceModel:
        if self.interval <= timedelta(0):
            raise ValueError("interval must be positive")
        if self.timeout <= timedelta(0):
            raise ValueError("timeout must be positive")
        if self.timeout >= self.interval:
            raise ValueError(
                f"timeout ({format_duration(self.timeout)}) must be shorter than the interval "
                f"({format_duration(self.interval)})"
            )
        if self.resend <= timedelta(0):
            raise ValueError("resend must be positive")
        return self


class HttpProbe(_SourceModel):
    """An HTTP health check: unhealthy on an unexpected status, a timeout or a connection
    error; firing after `failures_before_firing` unhealthy probes in a row."""

    kind: Literal["http_probe"]
    """`http_probe`."""
    method: Annotated[Literal["GET", "HEAD"], BeforeValidator(_upper)] = "GET"
    """`GET` or `HEAD`."""
    expect_status: Annotated[list[int], BeforeValidator(_parse_status_class)] = Field(
        default_factory=lambda: [200]
    )
    """Accepted statuses: a code (200), a class ("2xx"), or a list of either."""
    failures_before_firing: int = Field(default=1, ge=1)
    """Unhealthy probes in a row before the signal fires (`alertname: ProbeFailed`)."""

    @field_validator("expect_status")
    @classmethod
    def _statuses(cls, codes: list[int]) -> list[int]:
        if not codes:
            raise ValueError("expect at least one status code")
        for code in codes:
            if not 100 <= code <= 599:
                raise ValueError(f"{code} is not an HTTP status code (100-599)")
        return codes

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        return _check_labels(labels, reserved=("alertname", "probe"))


Operator = Literal[">", ">=", "<", "<=", "==", "!="]

COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": lambda value, threshold: value > threshold,
    ">=": lambda value, threshold: value >= threshold,
    "<": lambda value, threshold: value < threshold,
    "<=": lambda value, threshold: value <= threshold,
    "==": lambda value, threshold: value == threshold,
    "!=": lambda value, threshold: value != threshold,
}


class PrometheusQuery(_SourceModel):
    """An instant PromQL query whose every series is compared with a threshold; a series for
    which `value <op> threshold` holds for `for` fires, like a Prometheus alerting rule."""

    kind: Literal["prometheus"]
    """`prometheus`."""
    query: str = Field(min_length=1)
    """An instant PromQL query; each series is a signal of its own, labelled with the series'
    labels."""
    op: Operator
    """How each series' value is compared with `threshold`: `>`, `>=`, `<`, `<=`, `==`, `!=`."""
    threshold: float
    """The value compared with."""
    timeout: Duration = timedelta(seconds=10)
    """The limit of one query; shorter than `interval`."""
    for_: Duration = Field(default=timedelta(0), alias="for")
    """How long the comparison must hold before the signal fires (`for`, as in a Prometheus alerting
    rule)."""
    alertname: str = ""
    """The `alertname` label of the signals; empty means the source's name."""

    @field_validator("threshold")
    @classmethod
    def _finite(cls, value: float) -> float:
        if math.isnan(value):
            raise ValueError("the threshold cannot be NaN")
        return value

    @field_validator("url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.query or parts.fragment:
            raise ValueError("the Prometheus URL is a base URL: no query string or fragment")
        return value.rstrip("/")

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        return _check_labels(labels, reserved=("alertname",))

    @model_validator(mode="before")
    @classmethod
    def _default_alertname(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("alertname") and data.get("name"):
            return {**data, "alertname": data["name"]}
        return data


Source = Annotated[HttpProbe | PrometheusQuery, Field(discriminator="kind")]

_SOURCES: TypeAdapter[list[HttpProbe | PrometheusQuery]] = TypeAdapter(list[Source])


def parse_sources(raw: Any) -> list[HttpProbe | PrometheusQuery]:
    """Validate a `sources:` list; source names must be unique."""
    sources = _SOURCES.validate_python(raw)
    seen: set[str] = set()
    for spec in sources:
        if spec.name in seen:
            raise ValueError(f"source name {spec.name!r} is used twice")
        seen.add(spec.name)
    return sources


# --------------------------------------------------------------------------- running


class Poller(Protocol):
    """What `run_pollers` drives: a named source with an interval and a `poll`."""

    @property
    def name(self) -> str: ...

    @property
    def interval(self) -> timedelta: ...

    async def poll(self, now: datetime) -> list[Signal]: ...


def build_source(
    spec: HttpProbe | PrometheusQuery, client: httpx.AsyncClient
) -> ProbeSource | PrometheusSource:
    """The running source for a configured one (secrets are resolved here)."""
    if isinstance(spec, HttpProbe):
        from onduty.sense.probe import ProbeSource

        return ProbeSource(spec, client)
    from onduty.sense.prometheus import PrometheusSource

    return PrometheusSource(spec, client)


def _report(on_error: Callable[[str, Exception], None], name: str, error: Exception) -> None:
    try:
        on_error(name, error)
    except Exception:
        log.exception("error handler failed for source %s", name)


async def _poll_once(source: Poller, now: datetime, stopper: asyncio.Task[Any]) -> list[Signal]:
    """One poll, abandoned when `stop` is set; raises what the poll raised. A poll may not
    outlast its interval (a source that hangs still gets its next turn)."""
    interval = source.interval.total_seconds()
    task = asyncio.ensure_future(asyncio.wait_for(source.poll(now), timeout=interval))
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        return []
    try:
        return task.result()
    except TimeoutError:
        raise PollError(
            f"poll took longer than its interval ({format_duration(source.interval)})"
        ) from None


async def _run_one(
    source: Poller,
    submit: Callable[[Signal], Awaitable[object] | object],
    clock: Callable[[], datetime],
    stopper: asyncio.Task[Any],
    on_error: Callable[[str, Exception], None],
    timer: Timer,
) -> None:
    interval = source.interval.total_seconds()
    due = timer.monotonic()  # polls happen at due, due + interval, ... on the monotonic clock
    while not stopper.done():
        try:
            signals = await _poll_once(source, clock(), stopper)
        except Exception as error:
            _report(on_error, source.name, error)
            signals = []
        for signal in signals:
            if stopper.done():
                break
            try:
                result = submit(signal)
                if inspect.isawaitable(result):
                    await result
            except Exception as error:
                _report(on_error, source.name, error)
        # The next turn is on the fixed grid, so time spent polling does not accumulate as
        # drift; turns missed while a poll overran are skipped, not run back to back.
        due += interval
        behind = timer.monotonic() - due
        if behind > 0:
            due += math.ceil(behind / interval) * interval
        delay = due - timer.monotonic()
        if delay > 0:
            await timer.wait(delay, stopper)


class Timer:
    """How pollers keep their schedule: `monotonic()` seconds, and `wait(delay, stopper)`,
    which returns after `delay` seconds or as soon as `stopper` is done. The default is the
    event loop's own clock; tests pass a virtual one."""

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    async def wait(self, delay: float, stopper: asyncio.Task[Any]) -> None:
        await asyncio.wait({stopper}, timeout=delay)


async def run_pollers(
    sources: Sequence[Poller],
    submit: Callable[[Signal], Awaitable[object] | object],
    *,
    clock: Callable[[], datetime],
    stop: asyncio.Event,
    on_error: Callable[[str, Exception], None],
    timer: Timer | None = None,
) -> None:
    """Poll every source on its own interval until `stop` is set.

    Each source polls at once, then every `interval` on a fixed grid (no jitter; a slow poll
    does not shift later ones). Every signal is passed to `submit` (which may be async), in
    order. A poll or a submit that raises is reported to `on_error(source name, error)` and the
    source carries on; no source can stop another. Setting `stop` abandons polls in flight and
    returns promptly; a submit already running is awaited, not cut off. `timer` keeps the
    schedule (the event loop's clock by default)."""
    names = [source.name for source in sources]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ValueError(f"source names must be unique: {', '.join(duplicated)}")
    stopper = asyncio.ensure_future(stop.wait())
    try:
        async with asyncio.TaskGroup() as group:
            for source in sources:
                group.create_task(
                    _run_one(source, submit, clock, stopper, on_error, timer or Timer()),
                    name=f"poll:{source.name}",
                )
            if not sources:
                await stopper
    finally:
        if not stopper.done():
            stopper.cancel()
            await asyncio.gather(stopper, return_exceptions=True)
