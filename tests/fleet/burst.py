"""One manager's burst of reservations, run in a process of its own by the race test."""

from __future__ import annotations

from datetime import datetime, timedelta
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from typing import Any

from onduty.fleet import Quota

RETRIED = 10  # reservations each manager asks for again after its burst


def reserve(quota: Quota, item: dict[str, Any]) -> dict[str, Any]:
    return quota.reserve(
        item["scope"],
        item["limit"],
        timedelta(seconds=item["window_s"]),
        item["action_id"],
        item["target"],
        datetime.fromisoformat(item["at"]),
        distinct_targets=item["distinct_targets"],
    ).to_dict()


def burst(
    url: str, owner: str, plan: list[dict[str, Any]], start: Barrier, results: Queue[Any]
) -> None:
    """Connect, wait for the others, fire the plan, then retry the first few reservations:
    put (owner, verdicts, verdicts that changed on retry) on `results`."""
    quota = Quota(url, owner)
    try:
        quota.count("warm-up", timedelta(seconds=1), datetime.fromisoformat(plan[0]["at"]))
        start.wait(timeout=60)
        verdicts = [reserve(quota, item) for item in plan]
        changed = [
            verdict["action_id"]
            for item, verdict in zip(plan[:RETRIED], verdicts, strict=False)
            if reserve(quota, item) != verdict
        ]
        results.put((owner, verdicts, changed))
    finally:
        quota.close()
