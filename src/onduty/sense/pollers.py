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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from onduty.events import Signal, to_json
from onduty.secrets import SecretError, SecretValues, resolve_references
from onduty.sense.specs import HttpProbe, PrometheusQuery, parse_sources
from onduty.values import format_duration

if TYPE_CHECKING:
    import httpx

    from onduty.sense.probe import ProbeSource
    from onduty.sense.prometheus import PrometheusSource

__all__ = [
    "HttpProbe",
    "HttpSource",
    "PollError",
    "Poller",
    "PrometheusQuery",
    "ResolvedHeaders",
    "Timer",
    "build_source",
    "fingerprint",
    "parse_sources",
    "resolve_headers",
    "run_pollers",
]

log = logging.getLogger(__name__)

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


Spec = TypeVar("Spec", HttpProbe, PrometheusQuery)


class HttpSource(Generic[Spec]):
    """What every polled HTTP source holds: its spec, the client, and its headers with their
    secrets resolved (when it is created, so a missing secret fails at start-up)."""

    def __init__(
        self, spec: Spec, client: httpx.AsyncClient, *, env: Mapping[str, str] | None = None
    ) -> None:
        self.spec: Spec = spec
        self._client = client
        self._headers: ResolvedHeaders = resolve_headers(spec.headers, env=env)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def interval(self) -> timedelta:
        return self.spec.interval


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
