"""The part of Alertmanager's API that Prometheus uses, so Prometheus can deliver to onduty.

    POST /api/v2/alerts   the ingest route `prometheus`: a JSON list of postable alerts
    GET  /-/healthy       Alertmanager's liveness probe (public, like /healthz)
    GET  /-/ready         Alertmanager's readiness probe (public, like /readyz)

Point an `alerting.alertmanagers` entry of Prometheus at onduty (`api_version: v2`, no
`path_prefix`); with access control on, give it an ingest token as its `authorization`. The
route takes the same credentials as every ingest route, and a credential's `routes:` names it
`prometheus`.

A postable alert is firing until its `endsAt`; Prometheus re-sends it while its rule holds.
`ExpiryWatch` notes every delivery and, when an alert's `endsAt` passes without a re-send,
records its resolution through the same durable path as a delivery (actor `onduty`, `endsAt`
as its end). After a restart it finds the firing alerts in the log and gives each at least one
of its validity windows to be re-sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from starlette.requests import Request

from onduty.api.ingest import Format, Ingest
from onduty.events import Signal, SignalReceived
from onduty.health import is_ready, report
from onduty.runtime import Input
from onduty.sense.promalerts import SOURCE, Expiry
from onduty.sense.promalerts import parse as parse_postable
from onduty.service import Service, logger

PATH = "/api/v2/alerts"
ROUTE = "prometheus"
TURN = 1.0  # the longest the watch sleeps: an expiry is recorded at most this late
RETRY = timedelta(seconds=1)


class ExpiryWatch:
    """The firing alerts of `POST /api/v2/alerts`, resolved when their `endsAt` passes."""

    def __init__(self, now: Callable[[], datetime] | None = None) -> None:
        self.expiry = Expiry()
        # the wall clock, as the senders' `endsAt` and the ingest's time of receipt are
        self._now = now or (lambda: datetime.now(UTC))

    def parse(
        self, body: bytes, *, received_at: datetime, content_type: str | None = None
    ) -> list[Signal]:
        """The route's parser: parse, and note the deliveries before they are recorded (so a
        re-send that is being recorded is never overtaken by its expiry)."""
        signals = parse_postable(body, received_at=received_at, content_type=content_type)
        self.expiry.note(signals)
        return signals

    def seed(self, service: Service) -> int:
        """Before the core starts: the route's alerts the state holds as firing, each with the
        last delivery the log has of it. Returns how many."""
        runtime, log = service.runtime, service.log
        if runtime is None or log is None:
            return 0
        now = self._now()
        found = 0
        for state in list(runtime.manager.state.signals.values()):
            if state.source != SOURCE or state.status != "firing":
                continue
            stream = log.read_stream(f"signal:{state.fingerprint}", newest_first=True)
            for event in stream:
                if event.type != "SignalReceived":
                    continue
                signal = SignalReceived.model_validate(event.data)
                # a postable alert always has an end; the Prometheus poller's signals (the same
                # source) have none and are resolved by the poller
                if signal.source == SOURCE and signal.ends_at is not None:
                    self.expiry.seed(signal, recorded_at=event.ts, now=now)
                    found += 1
                break
        return found

    async def run(self, ingest: Ingest, stop: asyncio.Event) -> None:
        """Until `stop`: record the resolution of every alert whose `endsAt` has passed."""
        while not stop.is_set():
            now = self._now()
            due = self.expiry.due(now)
            if due:
                inputs = [Input(signal, stream=f"signal:{signal.fingerprint}") for signal in due]
                refused = await ingest.durable(inputs)
                if refused is None:
                    logger.info("%s alerts expired at their endsAt without a re-send", len(due))
                    continue
                logger.warning("expired alerts were refused (%s); retrying", refused.status_code)
                self.expiry.restore(due, now + RETRY)
            following = self.expiry.next_due()
            wait = TURN if following is None else (following - self._now()).total_seconds()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(TURN, max(wait, 0.0)))


def mount(app: FastAPI, service: Service, ingest: Ingest, watch: ExpiryWatch) -> None:
    """Add the routes to `app`."""
    fmt = Format(ROUTE, watch.parse, ("application/json",))
    app.add_route(PATH, ingest.endpoint(fmt), methods=["POST"], name=f"ingest-{ROUTE}")

    @app.api_route("/-/healthy", methods=["GET", "HEAD"], include_in_schema=False)
    def healthy(request: Request) -> PlainTextResponse:
        return PlainTextResponse("OK")

    @app.api_route("/-/ready", methods=["GET", "HEAD"], include_in_schema=False)
    def ready(request: Request) -> PlainTextResponse:
        results = service.health.check_all()  # the checks of /readyz
        if is_ready(results):
            return PlainTextResponse("OK")
        return PlainTextResponse(report(results), status_code=503)
