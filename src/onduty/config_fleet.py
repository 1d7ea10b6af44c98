"""The `fleet:` section of the configuration and what `store` and `bus` may be together.

Several managers share one PostgreSQL store and one NATS JetStream bus: signals are split into
`partitions` by a hash of their incident's group key, and each partition is owned by one
manager at a time through a lease. Read when `serve` starts; a reload does not change it, and
the core never sees it.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import AfterValidator, Field

from onduty.values import ConfigModel as Model
from onduty.values import PositiveDuration

__all__ = ["FleetSettings", "deployment_problems", "is_shared_store"]

SHARED_STORES = ("postgresql://", "postgres://")


def _token(value: str) -> str:
    """A name that becomes one token of NATS subjects and consumer names."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", value):
        raise ValueError(
            f"{value!r} must be a plain name of letters, digits, '-' and '_' (it names "
            "subjects on the bus)"
        )
    return value


def _central(value: str | None) -> str | None:
    """The shared schema must be named: without it a URL means a region's default schema, and
    what is meant to hold for every region would hold for one, silently."""
    if value is None:
        return None
    if not re.match(r"postgres(ql)?://", value) or not re.search(r"[?&]schema=\w", value):
        raise ValueError(
            "must be postgresql://HOST/DB?schema=NAME, naming the schema the regions share "
            "(e.g. ?schema=onduty_central)"
        )
    return value


class FleetSettings(Model):
    """Running several managers on a PostgreSQL store and a NATS JetStream bus (`store:
    postgresql://…`, `bus: nats://…`). With one process and a SQLite store, none of this is
    used."""

    partitions: int = Field(default=16, ge=1, le=4096)
    """Into how many partitions signals are split (by a hash of their incident's group key):
    the most managers that can share the work. Every manager of a store must use the same
    number."""
    region: Annotated[str, AfterValidator(_token)] = "default"
    """The region this process ingests for and manages (`serve --region` overrides it)."""
    lease_ttl: PositiveDuration = timedelta(seconds=6)
    """How long a partition stays with a manager that stopped renewing its lease: a dead
    manager's partitions move to a live one after at most this long (plus a renewal)."""
    max_in_flight: int = Field(default=1_000, ge=1)
    """Signals a manager holds unacknowledged per partition; beyond it the bus holds them back
    (and ingest answers 429 once the bus's window is full too)."""
    publish_window: int = Field(default=2_000, ge=1)
    """Publishes an ingest node keeps awaiting their acknowledgement at once."""
    central: Annotated[str | None, AfterValidator(_central)] = None
    """A PostgreSQL schema every region shares (`postgresql://HOST/DB?schema=onduty_central`):
    where guardrails `across: fleet` are counted, so that they hold across regions, and where
    central policy bundles are published. Unset: counted in this region's store."""
    stream: Annotated[str, AfterValidator(_token)] = "ONDUTY_SIGNALS"
    """The JetStream stream that carries the inputs (one per fleet; created when absent)."""
    subjects: str = Field(default="onduty.signals", pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
    """The subjects' prefix: inputs travel on `<subjects>.<region>.<partition>`. Two fleets on
    one NATS server need their own stream and prefix."""


def is_shared_store(store: str) -> bool:
    """Whether several processes can share `store` (PostgreSQL), unlike a SQLite file."""
    return store.startswith(SHARED_STORES)


def deployment_problems(store: str, bus: str) -> list[str]:
    """Why `store` and `bus` cannot work together, each naming the field: an unknown bus, or a
    shared bus in front of a store only one process can write."""
    if bus == "memory":
        return []
    if not bus.startswith("nats://"):
        return [f"bus: {bus!r} is not a bus: use `memory` (one process) or nats://HOST:PORT"]
    if not is_shared_store(store):
        return [
            "bus: nats:// carries signals to managers on several nodes, but store "
            f"{store!r} is a file only one process can write: use store: postgresql://HOST/DB"
        ]
    return []
