"""The event log: the protocol, the hash chain's verification, and the backends."""

from onduty.log.base import (
    ChainBreak,
    EventLog,
    Snapshot,
    SnapshotProblem,
    StoreError,
    check_snapshot,
    open_log,
    trusted_snapshot,
    verify_snapshots,
)

__all__ = [
    "ChainBreak",
    "EventLog",
    "Snapshot",
    "SnapshotProblem",
    "StoreError",
    "check_snapshot",
    "open_log",
    "trusted_snapshot",
    "verify_snapshots",
]
