"""The HTTP health probe as a signal source.

`ProbeSource.poll` sends one request (the whole exchange bounded by the probe's timeout) and
returns the signals due: `firing` once `failures_before_firing` probes in a row have failed
(an unexpected status, a timeout, a connection error), re-sent every `resend` while it keeps
failing, and `resolved` on the first healthy probe after that. While the state is unchanged
nothing is sent. The reason of the latest failure is in the `summary` and `description`
annotations, e.g. "GET http://127.0.0.1:9/health: connection refused".
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import httpx

from onduty.events import Signal, SignalReceived, SignalStatus
from onduty.httpbits import connect_error_reason
from onduty.sense.pollers import (
    HttpSource,
    fingerprint,
)
from onduty.sense.specs import HttpProbe
from onduty.values import format_duration

SOURCE = "probe"
ALERTNAME = "ProbeFailed"


@dataclass(frozen=True)
class ProbeResult:
    """One probe: healthy, or the reason it was not."""

    ok: bool
    reason: str
    status: int | None = None
    elapsed: float = 0.0


class ProbeSource(HttpSource[HttpProbe]):
    """Runs one `HttpProbe`. Secrets in its headers are resolved when it is created."""

    def __init__(
        self,
        spec: HttpProbe,
        client: httpx.AsyncClient,
        *,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(spec, client, env=env)
        self.labels: dict[str, str] = {**spec.labels, "alertname": ALERTNAME, "probe": spec.name}
        self.fingerprint = fingerprint(self.labels)
        self.failures = 0
        self.firing = False
        self.first_failure_at: datetime | None = None
        self.fired_at: datetime | None = None
        self.last_sent_at: datetime | None = None
        self.last_result: ProbeResult | None = None

    def __repr__(self) -> str:
        state = "firing" if self.firing else "ok"
        return (
            f"ProbeSource(name={self.spec.name!r}, {self.spec.method} {self.spec.url}, "
            f"{state}, failures={self.failures})"
        )

    @property
    def target(self) -> str:
        return f"{self.spec.method} {self.spec.url}"

    async def check(self) -> ProbeResult:
        """Send the request once; never raises for a failure of the target."""
        spec = self.spec
        seconds = spec.timeout.total_seconds()
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            # httpx bounds each phase (connect, each read); the outer deadline bounds the whole
            # exchange, so a server that trickles its answer cannot hold the probe longer.
            async with asyncio.timeout(seconds):
                request = self._client.build_request(
                    spec.method,
                    spec.url,
                    headers=self._headers.as_dict(),
                    timeout=httpx.Timeout(seconds),
                )
                # The status is all the probe needs: the body is not read.
                response = await self._client.send(request, stream=True)
                await response.aclose()
        except (TimeoutError, httpx.TimeoutException):
            return ProbeResult(False, f"timed out after {format_duration(spec.timeout)}")
        except httpx.ConnectError as error:
            return ProbeResult(False, connect_error_reason(error))
        except httpx.HTTPError as error:
            detail = str(error)
            return ProbeResult(
                False, f"{type(error).__name__}: {detail}" if detail else type(error).__name__
            )
        elapsed = loop.time() - started
        status = response.status_code
        if status in spec.expect_status:
            return ProbeResult(True, f"status {status}", status, elapsed)
        return ProbeResult(False, f"status {status} (expected {self._expected()})", status, elapsed)

    async def poll(self, now: datetime) -> list[Signal]:
        """Probe once and return the signals due at `now` (at most one)."""
        result = await self.check()
        self.last_result = result
        if not result.ok:
            self.failures += 1
            if self.failures == 1:
                self.first_failure_at = now
            if not self.firing:
                if self.failures < self.spec.failures_before_firing:
                    return []
                self.firing = True
                self.fired_at = now
            elif self.last_sent_at is not None and now - self.last_sent_at < self.spec.resend:
                return []
            self.last_sent_at = now
            return [self._firing(result)]
        failures, self.failures = self.failures, 0
        self.first_failure_at = None
        if not self.firing:
            return []
        self.firing = False
        signal = self._resolved(now, result, failures)
        self.fired_at = None
        self.last_sent_at = None
        return [signal]

    # ------------------------------------------------------------------ signals

    def _expected(self) -> str:
        codes = self.spec.expect_status
        classes = []
        rest = set(codes)
        for first in range(100, 600, 100):
            block = set(range(first, first + 100))
            if block <= rest:
                classes.append(f"{first // 100}xx")
                rest -= block
        return ", ".join([*classes, *(str(code) for code in sorted(rest))])

    def _firing(self, result: ProbeResult) -> Signal:
        since = self.first_failure_at.isoformat() if self.first_failure_at else "now"
        count = self.failures
        return self._signal(
            "firing",
            f"{self.target}: {result.reason}",
            f"Probe {self.spec.name} has failed {count} time{'s' if count != 1 else ''} "
            f"in a row since {since}; last: {self.target}: {result.reason}.",
        )

    def _resolved(self, now: datetime, result: ProbeResult, failures: int) -> Signal:
        return self._signal(
            "resolved",
            f"{self.target}: healthy again ({result.reason})",
            f"Probe {self.spec.name} answered {result.reason} after {failures} failed "
            f"probe{'s' if failures != 1 else ''}.",
            ends_at=now,
        )

    def _signal(
        self,
        status: SignalStatus,
        summary: str,
        description: str,
        *,
        ends_at: datetime | None = None,
    ) -> Signal:
        return SignalReceived(
            source=SOURCE,
            fingerprint=self.fingerprint,
            status=status,
            labels=dict(self.labels),
            annotations={"summary": summary, "description": description},
            starts_at=self.fired_at,
            ends_at=ends_at,
            generator_url=self.spec.url,
        )
