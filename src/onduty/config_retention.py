"""The `retention:` section of the configuration: how long `onduty serve` keeps events in the
live store before sealing them into archives beside it. Read when it starts; a reload does not
change it, and the core never sees it.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from onduty.values import ConfigModel as Model
from onduty.values import PositiveDuration

__all__ = ["RetentionSettings"]


class RetentionSettings(Model):
    """Sealing old events into compressed archives (`<store file>.archives/`), so the live
    store stays the size of `keep`. `onduty audit verify`, `onduty replay` and backtests read
    through the archives; the live store starts without them."""

    keep: PositiveDuration | None = None
    """Keep events this long in the live store, then seal them (`30d`, `12h`). Unset (the
    default): never seal; `onduty log seal --before DATE` seals by hand."""
    every: PositiveDuration = timedelta(hours=1)
    """How often `serve` looks for events older than `keep`."""
    min_events: int = Field(default=10_000, ge=1)
    """Seal only once at least this many events are older than `keep` (no tiny archives)."""
