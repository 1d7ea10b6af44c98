"""Which partitions an input belongs to.

A signal goes to the partition of its incident's group key, so every signal of one incident
is folded in order by one manager. What names an incident (an acknowledgement, an answer to an
approval) goes to the partition that incident lives in, found through `locate`. What concerns
every incident (a policy, an autonomy level, a silence) goes to every partition: each cell's
core records it in its own log, so each partition replays exactly on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from onduty.bus.partitions import group_key_of, partition_of
from onduty.events import (
    Acknowledged,
    ApprovalDenied,
    ApprovalGranted,
    Payload,
    SignalReceived,
    SignalRejected,
)
from onduty.runtime import Input

Locate = Callable[[Payload], int | None]
"""The partition of the incident an input names (by its incident or approval id), or None
when no incident known here has it."""


class Unroutable(ValueError):
    """An input that names an incident no partition holds; the message says which."""


@dataclass(frozen=True)
class Router:
    partitions: int
    group_by: Callable[[], Sequence[str]]
    """The labels incidents are grouped by, under the policy in force."""
    locate: Locate

    def partitions_of(self, item: Input) -> list[int]:
        body = item.body
        if isinstance(body, SignalReceived):
            key = group_key_of(body.labels, self.group_by())
            return [partition_of(key, self.partitions)]
        if isinstance(body, SignalRejected):  # kept where the sender's other refusals are
            return [partition_of({"stream": item.stream}, self.partitions)]
        if isinstance(body, Acknowledged | ApprovalGranted | ApprovalDenied):
            found = self.locate(body)
            if found is None:
                raise Unroutable(f"{type(body).__name__}: no partition holds what it names")
            return [found]
        return list(range(self.partitions))
