"""Sensing: the wire formats alerts arrive in, each parsed into onduty's `Signal`.

Every parser has the same shape,

    parse(body: bytes, *, received_at: datetime, content_type: str | None = None) -> list[Signal]

is pure (no I/O, no clock: the time of receipt is passed in), and rejects bad input only with
`IngestError(status, reason, field)`. `FORMATS` names them for the HTTP layer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from onduty.events import Signal
from onduty.sense.alertmanager import parse as parse_alertmanager
from onduty.sense.cloudevents import parse as parse_cloudevents
from onduty.sense.errors import IngestError
from onduty.sense.native import parse as parse_native
from onduty.sense.pagerduty import parse as parse_pagerduty
from onduty.sense.pagerduty import parse_with_keys as parse_pagerduty_with_keys
from onduty.sense.promalerts import parse as parse_promalerts


class Parser(Protocol):
    def __call__(
        self, body: bytes, *, received_at: datetime, content_type: str | None = None
    ) -> list[Signal]: ...


FORMATS: dict[str, Parser] = {
    "alertmanager": parse_alertmanager,
    # Grafana Alerting's webhook: Alertmanager's shape, version "1" (the parser tells them apart)
    "grafana": parse_alertmanager,
    # Alertmanager's API v2 `POST /api/v2/alerts`, as Prometheus sends it
    "prometheus": parse_promalerts,
    "pagerduty": parse_pagerduty,
    "cloudevents": parse_cloudevents,
    "native": parse_native,
}

__all__ = [
    "FORMATS",
    "IngestError",
    "Parser",
    "parse_alertmanager",
    "parse_cloudevents",
    "parse_native",
    "parse_pagerduty",
    "parse_pagerduty_with_keys",
    "parse_promalerts",
]
