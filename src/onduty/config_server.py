"""The `server:` section of the configuration: how `onduty serve` meets the network (host
names, trusted proxies, body and shutdown deadlines), and the `telemetry:` section: where it
sends its own traces. Read when it starts; a reload does not change them.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from onduty.httpbits import check_headers
from onduty.values import ConfigModel as Model
from onduty.values import PositiveDuration

__all__ = ["HostName", "Network", "ServerSettings", "Telemetry", "TraceSettings"]

_HOST_NAME = re.compile(
    r"^(\*|(\*\.)?[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*)$"
)


def _check_host(value: str) -> str:
    """A host name (`onduty.example.com`), a pattern (`*.example.com`, or `*` for any), or an
    IP address (`10.0.0.5`, `::1`, `[::1]`); never a port or a scheme."""
    import ipaddress

    text = value.strip().lower().rstrip(".")
    try:
        address = ipaddress.ip_address(text.removeprefix("[").removesuffix("]"))
    except ValueError:
        if not _HOST_NAME.match(text):
            raise ValueError(
                f"{value!r} is not a host name (give a name such as onduty.example.com, a "
                "pattern such as *.example.com, or an IP address; no scheme and no port)"
            ) from None
        return text
    return f"[{address}]" if address.version == 6 else str(address)


def _check_network(value: str) -> str:
    """An address or a CIDR block (`10.0.0.0/8`, `::1`)."""
    import ipaddress

    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or a CIDR block") from None


HostName = Annotated[str, AfterValidator(_check_host)]
Network = Annotated[str, AfterValidator(_check_network)]


class ReadinessSettings(Model):
    """When `/readyz` says onduty is not keeping up (see the README's probes)."""

    max_input_wait: PositiveDuration = timedelta(seconds=10)
    """The oldest input waiting for the core (a signal, an outcome) may wait this long."""
    max_queued: int = Field(default=10_000, ge=1)
    """Inputs waiting for the core at once, at most."""
    log_check_every: PositiveDuration = timedelta(seconds=1)
    """A PostgreSQL store is asked (`SELECT 1`) at most this often; probes in between read
    the last answer."""
    safe_mode_after: PositiveDuration | None = None
    """When the log, bus or core check has failed this long, record it (`DependencyDegraded`)
    so onduty steps back: every service in safe mode (autonomy lowered to `suggest`) and one
    page, until the check has passed as long again. Unset (the default): not watched."""


class ServerSettings(Model):
    """How `onduty serve` meets the network. Read when it starts; a reload does not change it."""

    allowed_hosts: list[HostName] = Field(default_factory=list)
    """Host names answered besides the loopback names, the bind address and IP addresses."""
    trusted_proxies: list[Network] = Field(default_factory=list)
    """Peers whose X-Forwarded-For / X-Forwarded-Proto are believed; none by default."""
    body_timeout: PositiveDuration = timedelta(seconds=10)
    """A request body must arrive within this long of its headers, else 408."""
    max_unauthenticated: int = Field(default=64, ge=1)
    """Bodies read at once before their sender is known (HMAC signatures, PagerDuty routing
    keys); past it, 503 with Retry-After."""
    shutdown_timeout: PositiveDuration = timedelta(seconds=10)
    """After SIGTERM, how long in-flight requests may take before what is left is closed."""
    log_format: Literal["json", "console"] | None = None
    """How log lines are written to stderr: `json` (one JSON object a line) or `console` (a
    line for a person). Unset: `console` when stderr is a terminal, else `json`.
    `onduty serve --log-format` wins over it."""
    readiness: ReadinessSettings = Field(default_factory=ReadinessSettings)
    """The bounds `/readyz` holds the core to."""


_ENDPOINT = re.compile(r"^https?://[^/?#@\s]+(/[^\s]*)?$")


def _check_endpoint(value: str) -> str:
    """An http(s) URL with a host, without credentials (they go in `headers`)."""
    if "@" in value.partition("://")[2].split("/", 1)[0]:
        raise ValueError("put credentials in headers (as secret references), not in the URL")
    if not _ENDPOINT.match(value):
        raise ValueError(f"expected an http:// or https:// URL with a host, got {value!r}")
    return value


class TraceSettings(Model):
    """Traces of onduty's own work (OpenTelemetry), exported over OTLP/HTTP. Off unless
    `otlp_endpoint` is set."""

    otlp_endpoint: Annotated[str, AfterValidator(_check_endpoint)] | None = None
    """The OTLP/HTTP traces endpoint (`http://127.0.0.1:4318/v1/traces`: an OpenTelemetry
    Collector, Jaeger, Tempo); spans are sent in batches from a thread of their own. Unset (the
    default): no spans are made and nothing is sent."""
    service_name: str = Field(default="onduty", min_length=1)
    """The `service.name` the spans carry (a fleet node adds its name as
    `service.instance.id`)."""
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    """The share of traces kept, chosen by trace id (every node keeps the same traces)."""
    headers: Annotated[dict[str, str], AfterValidator(check_headers)] = Field(default_factory=dict)
    """Headers sent with every export (`Authorization`); values may reference secrets
    (`${ENV:NAME}`, `${FILE:/path}`), never logged."""
    timeout: PositiveDuration = timedelta(seconds=10)
    """How long one export may take before it is given up."""


class Telemetry(Model):
    """What onduty tells about itself besides `/metrics`."""

    traces: TraceSettings = Field(default_factory=TraceSettings)
    """Traces of each incident's work: see `telemetry.traces` below."""
    event_metrics: bool = True
    """Count every appended event into `/metrics` (signals, verdicts, actions, verifications,
    escalations, approvals, signal-to-verdict latency). Off: `/metrics` keeps only what the
    service measures of itself (ingest, queues, readiness, the log's appends, safe mode); `onduty
    bench observability` turns it off to measure its cost."""
