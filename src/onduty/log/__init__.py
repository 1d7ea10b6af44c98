"""The event log: the protocol, the hash chain's verification, and the backends."""

from onduty.log.base import ChainBreak, EventLog, Snapshot, open_log

__all__ = ["ChainBreak", "EventLog", "Snapshot", "open_log"]
