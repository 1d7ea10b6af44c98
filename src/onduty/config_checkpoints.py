"""The `checkpoints:` section of the configuration: how `onduty serve` signs checkpoints of the
event log and where it exports them (the witnesses). Read when it starts; a reload does not
change it, and the core never sees it.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from onduty.values import ConfigModel as Model
from onduty.values import PositiveDuration

__all__ = ["CheckpointSettings"]


class CheckpointSettings(Model):
    """Signed checkpoints of the log's head, exported outside the log, so that `onduty audit
    verify` can tell a cut tail or a rewritten chain from an intact log. On a PostgreSQL store
    (a fleet), one checkpoint binds every partition's head; they are signed once `key` and
    `witness` are set, kept in the store's `checkpoints` table and exported to the witnesses."""

    enabled: bool = True
    """Sign checkpoints while serving (an in-memory store never has any)."""
    every_events: int = Field(default=1_000, ge=1)
    """Sign a checkpoint once this many events were appended since the last one (in a fleet:
    once the partitions' heads moved this far together, looked at every second)."""
    every: PositiveDuration = timedelta(seconds=60)
    """Sign a checkpoint at least this often while events are appended (and at a graceful
    stop); events after the latest checkpoint are not yet protected against a cut."""
    key: str | None = None
    """The Ed25519 signing key (PEM, PKCS#8): a file path, or a secret reference
    (`${FILE:/path}`, `${ENV:NAME}`) holding the PEM text. Default: `<store file>.checkpoint.key`,
    generated at the first start when absent (with its public key beside it, `.pub`). A
    PostgreSQL store has no default: every node that signs uses the same key file; the first
    node to start makes it when absent, a later one without it refuses to start."""
    witness: str | None = None
    """The append-only file checkpoints are exported to, one JSON line each. Default:
    `<store file>.checkpoints`; `audit verify` reads it from there. Keep a copy elsewhere. A
    PostgreSQL store has no default: each signing node appends to its own file (`{node}` in
    the path is the node's name: `/var/lib/onduty/witness-{node}.jsonl`), given to `audit
    verify --checkpoints`."""
    witness_url: str | None = None
    """Also POST each checkpoint (JSON) to this URL: a witness on another host."""
    witness_store: str | None = None
    """Also append each checkpoint, as a `CheckpointSigned` event, to this second event log
    (`sqlite:///path`). Not for a PostgreSQL store, whose checkpoints bind several heads."""
