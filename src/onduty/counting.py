"""Where an action's fleet-wide guardrail counts are taken (`CountAcrossFleet`): the answer
comes back to the core as a `FleetCountAnswered` input, so the log holds the fact it decided by.

One process is the whole fleet: the core already counted every action there is, so its counts
are granted as they stand (`LocalCounts`). A fleet shares its counts in PostgreSQL
(`onduty.fleet.quota`), kept by command id: asking again after a restart counts once.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

from onduty.commands import CountAcrossFleet
from onduty.events import FleetCount, FleetCountAnswer, FleetCountAnswered

if TYPE_CHECKING:  # PostgreSQL's client is loaded only by a fleet
    from onduty.fleet.quota import Quota, Reservation

logger = logging.getLogger("onduty.counting")

RETRY_S = 1.0


class FleetCounts(Protocol):
    def count(self, command: CountAcrossFleet) -> FleetCountAnswered:
        """Count the action in every scope it asks for; granted only when all grant it. May
        block (a database); called off the core's thread."""
        ...


class LocalCounts:
    """One manager is the whole fleet: what it counted itself is the count."""

    def count(self, command: CountAcrossFleet) -> FleetCountAnswered:
        answers = [
            FleetCountAnswer(
                rule=count.rule,
                granted=True,
                seen=0,
                limit=count.limit,
                reason=f"{count.rule}: one manager, so this manager's own count is the fleet's",
            )
            for count in map(FleetCount.model_validate, command.counts)
        ]
        return FleetCountAnswered(command_id=command.command_id, granted=True, answers=answers)


class SharedCounts:
    """Counts kept in PostgreSQL for every manager of the fleet (racing managers queue per
    scope, so none ever exceeds a limit). A database that cannot be reached is waited for: the
    action waits with it, it never goes ahead uncounted."""

    def __init__(self, quota: Quota, *, retry: float = RETRY_S) -> None:
        self._quota, self._retry = quota, retry
        self._stopping = False

    def stop(self) -> None:
        self._stopping = True

    def count(self, command: CountAcrossFleet) -> FleetCountAnswered:
        counts = [FleetCount.model_validate(count) for count in command.counts]
        answers: list[FleetCountAnswer] = []
        held: list[str] = []
        for count in counts:
            action_id = f"{command.command_id}:{count.rule}"
            reservation = self._reserve(count, action_id, command)
            answers.append(
                FleetCountAnswer(
                    rule=count.rule,
                    granted=reservation.granted,
                    seen=reservation.seen,
                    limit=count.limit,
                    reason=f"{count.rule}: {reservation.sentence}",
                )
            )
            if reservation.granted:
                held.append(action_id)
            else:
                break  # refused: the action will not run, so it holds no other slot
        granted = all(answer.granted for answer in answers) and len(answers) == len(counts)
        if not granted:
            for action_id in held:
                self._quota.release(action_id)
        return FleetCountAnswered(command_id=command.command_id, granted=granted, answers=answers)

    def _reserve(self, count: FleetCount, action_id: str, command: CountAcrossFleet) -> Reservation:
        from onduty.log.pg import DatabaseUnavailable

        while True:
            try:
                return self._quota.reserve(
                    count.scope,
                    count.limit,
                    timedelta(seconds=count.window_s),
                    action_id,
                    count.target,
                    command.at,
                    distinct_targets=count.distinct,
                )
            except DatabaseUnavailable as error:
                if self._stopping:
                    raise
                logger.warning("count of %s waits for the database: %s", action_id, error)
                time.sleep(self._retry)
