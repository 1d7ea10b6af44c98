"""Readiness: the named checks `/readyz` and `/-/ready` answer from, and `onduty_ready` exports.

Each check answers ok, or failing with a reason a person can act on, and the `Health` that runs
them remembers since when each has been failing. The checks are cheap enough for a probe every
few seconds: they read state in memory, except a PostgreSQL store's `SELECT 1`, asked at most
once per `server.readiness.log_check_every` (probes in between read the last answer).

- `log`: the event log takes appends. No append has failed, and the store answers: a SQLite
  file (and its folder) is writable, a PostgreSQL store answers `SELECT 1` within a second. No
  event is appended to find out. In a fleet on NATS it is reported but not required: a node's
  ingest goes to the bus, durably, and the managers resume by themselves once the store is
  back.
- `bus`: the NATS connection is up (in a fleet; the memory bus has nothing to lose).
- `policy`: a policy is active.
- `core`: the core keeps up: its thread runs, and the inputs waiting for it are fewer than
  `max_queued`, the oldest waiting less than `max_input_wait`. In a fleet: the read models
  follow the store.

`Health.check_all()` is what a caller polls without HTTP (a safe mode, a supervisor)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onduty.checkpointer import store_file
from onduty.config_server import ReadinessSettings
from onduty.runtime import RuntimeStopped
from onduty.textsafe import visible

if TYPE_CHECKING:
    from onduty.service import Service

logger = logging.getLogger("onduty")

Check = Callable[[], "str | None"]
"""A check: None when it passes, else why it fails (one line)."""

POSTGRES_TIMEOUT_S = 1.0
"""How long a PostgreSQL store's `SELECT 1` may take before the log counts as failing."""


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    reason: str
    """Why it fails ("" when it passes)."""
    failing_for: float = 0.0
    """Seconds since it started failing (0 when it passes)."""
    required: bool = True
    """Whether its failing makes onduty not ready; one that is not (a fleet node's store: its
    ingest goes to the bus) is reported, and exported, all the same."""

    def line(self) -> str:
        """`name: ok`, or `name: failing for 12s: reason` (the reason's text made visible)."""
        if self.ok:
            return f"{self.name}: ok"
        line = f"{self.name}: failing for {self.failing_for:.0f}s: {visible(self.reason)}"
        return line if self.required else f"{line} (not required to be ready)"

    def as_json(self) -> dict[str, Any]:
        return {
            "check": self.name,
            "ok": self.ok,
            "reason": self.reason,
            "failing_for_seconds": round(self.failing_for, 3),
            "required": self.required,
        }


class Health:
    """Named checks, run together; thread-safe. `now` is a monotonic clock in seconds."""

    def __init__(
        self,
        checks: Sequence[tuple[str, Check]],
        *,
        optional: Sequence[str] = (),
        now: Callable[[], float] = time.monotonic,
        cache: float = 0.2,
    ) -> None:
        self.checks = list(checks)
        self.optional = frozenset(optional)
        self._now = now
        self._cache = cache
        self._since: dict[str, float] = {}
        self._lock = threading.Lock()
        self._last: tuple[float, list[CheckResult]] | None = None

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.checks]

    def check_all(self) -> list[CheckResult]:
        """Run every check (a check that raises fails with the error as its reason)."""
        results = []
        for name, check in self.checks:
            try:
                reason = check()
            except Exception as error:  # a check is never why a probe answers 500
                logger.debug("readiness check %s failed", name, exc_info=True)
                reason = f"the check failed: {type(error).__name__}: {error}"
            result = self._result(name, reason)
            if name in self.optional:
                result = replace(result, required=False)
            results.append(result)
        with self._lock:
            self._last = (self._now(), results)
        return results

    def recent(self) -> list[CheckResult]:
        """The results of a run less than `cache` seconds old, else of a new run: what a
        scrape of `onduty_ready` reads, one gauge per check."""
        with self._lock:
            last = self._last
        if last is not None and self._now() - last[0] < self._cache:
            return last[1]
        return self.check_all()

    def ok(self, name: str) -> float:
        """1 when the check `name` passes (as of `recent`), else 0."""
        return float(next((r.ok for r in self.recent() if r.name == name), False))

    def _result(self, name: str, reason: str | None) -> CheckResult:
        now = self._now()
        with self._lock:
            if reason is None:
                self._since.pop(name, None)
                return CheckResult(name, True, "")
            since = self._since.setdefault(name, now)
        return CheckResult(name, False, reason, now - since)


def is_ready(results: Sequence[CheckResult]) -> bool:
    """Every required check passes."""
    return all(r.ok or not r.required for r in results)


def report(results: Sequence[CheckResult]) -> str:
    """The text body of `/readyz`: `ready` or `not ready: log, core`, then a line per check."""
    failing = [r.name for r in results if not r.ok and r.required]
    head = "ready" if not failing else f"not ready: {', '.join(failing)}"
    return "\n".join([head, *(r.line() for r in results)]) + "\n"


# ---------------------------------------------------------------------- the log


class SQLiteProbe:
    """A SQLite store's file and its folder (where its journal lives) are writable."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self) -> str | None:
        if not self.path.exists():
            return f"the store file {self.path} is gone"
        for place in (self.path, self.path.parent):
            if not os.access(place, os.W_OK):
                return f"{place} is not writable"
        return None


class PostgresProbe:
    """A PostgreSQL store answers `SELECT 1` within a second, on a connection of its own
    (the log's are busy appending). Asked at most once per `every` seconds, on a thread of its
    own: a caller waits at most `timeout` for the answer, and while a question goes unanswered
    (a network that drops packets silently) every caller hears that it does, at once."""

    def __init__(
        self,
        url: str,
        *,
        every: float = 1.0,
        timeout: float = POSTGRES_TIMEOUT_S,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        from onduty.log.pg import parse_store_url

        self._conninfo = parse_store_url(url, own=("partition",)).conninfo
        self._every, self._timeout, self._now = every, timeout, now
        self._conn: Any = None
        self._lock = threading.Lock()
        self._asking: tuple[float, threading.Thread] | None = None
        self._last: tuple[float, str | None] | None = None

    def __call__(self) -> str | None:
        with self._lock:
            last = self._last
            if last is not None and self._now() - last[0] < self._every:
                return last[1]
            if self._asking is None:
                thread = threading.Thread(target=self._answer, name="onduty-readiness", daemon=True)
                self._asking = (self._now(), thread)
                thread.start()
            since, thread = self._asking
        thread.join(max(0.0, since + self._timeout - self._now()))
        with self._lock:
            if self._asking is not None and self._asking[1] is thread:
                waited = self._now() - since
                return f"{self._where()} has not answered for {waited:.1f}s"
            return self._last[1] if self._last is not None else None

    def _answer(self) -> None:
        answer = self._ask()
        with self._lock:
            self._last, self._asking = (self._now(), answer), None

    def _where(self) -> str:
        from onduty.log.pg import redact

        return f"the store {redact(self._conninfo)}"

    def _ask(self) -> str | None:
        from onduty.log.pg import DatabaseUnavailable, connect

        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = connect(
                    self._conninfo,
                    autocommit=True,
                    connect_timeout=POSTGRES_TIMEOUT_S,
                    statement_timeout=POSTGRES_TIMEOUT_S,
                    dead_peer_after=POSTGRES_TIMEOUT_S,
                )
            self._conn.execute("SELECT 1").fetchone()
            return None
        except DatabaseUnavailable:
            self.close()
            return f"{self._where()} cannot be reached"
        except Exception as error:  # psycopg.Error: the connection broke, a timeout
            self.close()
            return f"{self._where()} does not answer ({_first_line(error)})"

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                logger.debug("closing the readiness connection failed", exc_info=True)


def store_probe(store: str, every: float = 1.0) -> Check | None:
    """The cheap check of whether `store` takes writes; None when there is nothing to ask."""
    if store.startswith(("postgresql://", "postgres://")):
        return PostgresProbe(store, every=every)
    path = store_file(store)
    return SQLiteProbe(path) if path is not None else None


# ---------------------------------------------------------------------- the service


def _seconds(value: timedelta) -> float:
    return value.total_seconds()


def log_check(service: Service, probe: Check | None) -> Check:
    def check() -> str | None:
        loop = service.loop
        failure = loop.failure if loop is not None else None
        if isinstance(failure, RuntimeStopped):
            cause = failure.__cause__ or failure
            return f"an append failed, the core stopped: {_first_line(cause)}"
        return probe() if probe is not None else None

    return check


def policy_check(service: Service) -> Check:
    def check() -> str | None:
        runtime = service.runtime
        if runtime is not None:
            state = runtime.manager.state
            return None if state.policy is not None else "no policy is active"
        if service.is_fleet:  # each cell records the policy the node holds
            return None if service.config.version else "no policy is active"
        return "onduty is starting"

    return check


def core_check(service: Service, settings: ReadinessSettings) -> Check:
    max_wait = _seconds(settings.max_input_wait)

    def check() -> str | None:
        loop = service.loop
        if loop is None:
            return "the core has not started"
        if loop.failure is not None:
            return f"the core stopped: {_first_line(loop.failure)}"
        if not loop.running:
            return "the core is stopping"
        if loop.pending > settings.max_queued:
            return f"{loop.pending} inputs wait for the core (at most {settings.max_queued})"
        waited = loop.oldest_wait()
        if waited > max_wait:
            return f"the oldest input has waited {waited:.1f}s for the core (at most {max_wait:g}s)"
        return None

    return check


def follower_check(service: Service) -> Check:
    """In a fleet: what users see follows the store (the core runs in the cells)."""

    def check() -> str | None:
        return None if service.ready else "the read models have not caught up with the store"

    return check


def bus_check(service: Service) -> Check:
    """The bus's connection (a bus without one, the memory bus, always passes)."""

    def check() -> str | None:
        bus = getattr(service, "bus", None)
        if bus is None:
            return "the bus is not open"
        problem: Callable[[], str | None] | None = getattr(bus, "connection_problem", None)
        return problem() if problem is not None else None

    return check


def for_service(service: Service) -> Health:
    """The checks of `service`: log, bus (on NATS only), policy, core."""
    settings = service.config.server.readiness
    probe = store_probe(service.store, _seconds(settings.log_check_every))
    checks: list[tuple[str, Check]] = [("log", log_check(service, probe))]
    if getattr(service, "bus_url", "memory") != "memory":
        checks.append(("bus", bus_check(service)))
    checks.append(("policy", policy_check(service)))
    if service.is_fleet:
        checks.append(("core", follower_check(service)))
    else:
        checks.append(("core", core_check(service, settings)))
    # On NATS a fleet node's ingest depends on the bus alone: its store going away leaves the
    # console and the managers behind (reported, exported), not ingest (ready all the same).
    # The memory bus holds nothing durably: there the store is required.
    on_nats = service.is_fleet and getattr(service, "bus_url", "memory") != "memory"
    return Health(checks, optional=("log",) if on_nats else ())


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__
