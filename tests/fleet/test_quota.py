"""Fleet-wide quotas on the real server: limits per window, distinct targets, idempotent
reservations, and the race of three manager processes against one limit."""

from __future__ import annotations

import multiprocessing
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from onduty.fleet import Quota, QuotaConflict, QuotaReason, Reservation, StoreURL
from onduty.fleet.quota import judge
from tests.fleet.burst import burst
from tests.fleet.conftest import url_of

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TEN_MINUTES = timedelta(minutes=10)


@pytest.fixture
def quota(store: StoreURL) -> Iterator[Quota]:
    made = Quota(store, "m1")
    yield made
    made.close()


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -- the verdict, pure --------------------------------------------------------------------


def test_a_window_with_room_grants_and_a_full_one_refuses() -> None:
    granted = [(at(0), "a"), (at(60), "b")]
    assert judge(granted, at(120), TEN_MINUTES, "c", 3, False) == (QuotaReason.UNDER_LIMIT, 2)
    assert judge(granted, at(120), TEN_MINUTES, "c", 2, False) == (QuotaReason.LIMIT_REACHED, 2)


def test_actions_a_whole_window_earlier_do_not_count() -> None:
    granted = [(at(0), "a")]
    assert judge(granted, at(600), TEN_MINUTES, "b", 1, False) == (QuotaReason.UNDER_LIMIT, 0)


def test_windows_ending_after_the_action_count_too() -> None:
    """Two later actions share a window with an earlier one: granting it would put three in
    (300 s - 10 m, 300 s], though the window ending at the action itself holds only one."""
    granted = [(at(-500), "a"), (at(200), "b"), (at(300), "c")]
    assert judge(granted, at(0), TEN_MINUTES, "d", 3, False) == (QuotaReason.UNDER_LIMIT, 2)
    assert judge(granted, at(0), TEN_MINUTES, "d", 2, False) == (QuotaReason.LIMIT_REACHED, 2)


def test_a_target_already_counted_adds_nothing_to_a_distinct_count() -> None:
    granted = [(at(0), "a"), (at(10), "b"), (at(20), "a")]
    assert judge(granted, at(30), TEN_MINUTES, "a", 2, True) == (QuotaReason.TARGET_COUNTED, 2)
    assert judge(granted, at(30), TEN_MINUTES, "c", 2, True) == (QuotaReason.LIMIT_REACHED, 2)
    assert judge(granted, at(30), TEN_MINUTES, "c", 3, True) == (QuotaReason.UNDER_LIMIT, 2)
    # counted at 0 s only: the windows ending after 600 s no longer hold it, so it adds one
    assert judge(granted[:2], at(605), TEN_MINUTES, "a", 2, True) == (
        QuotaReason.UNDER_LIMIT,
        1,
    )


# -- reservations ------------------------------------------------------------------------


def test_reservations_are_granted_up_to_the_limit_then_refused(quota: Quota) -> None:
    verdicts = [
        quota.reserve("restarts", 3, TEN_MINUTES, f"act-{n}", f"web-{n}", at(n)) for n in range(5)
    ]
    assert [v.reason for v in verdicts] == [QuotaReason.UNDER_LIMIT] * 3 + [
        QuotaReason.LIMIT_REACHED
    ] * 2
    assert [v.seen for v in verdicts] == [0, 1, 2, 3, 3]
    assert verdicts[3].sentence == (
        "act-3 on web-3 refused: 3 actions already counted in scope restarts within 10m, limit 3"
    )
    assert not verdicts[3].granted and verdicts[2].granted
    assert quota.count("restarts", TEN_MINUTES, at(10)) == 3
    assert quota.count("restarts", TEN_MINUTES, at(601)) == 1  # act-0, act-1 left the window
    assert quota.count("other", TEN_MINUTES, at(10)) == 0


def test_reserving_again_returns_the_recorded_verdict_and_takes_no_slot(quota: Quota) -> None:
    first = quota.reserve("restarts", 1, TEN_MINUTES, "act-1", "web-1", at(0))
    refused = quota.reserve("restarts", 1, TEN_MINUTES, "act-2", "web-2", at(1))
    assert first.granted and not refused.granted
    assert quota.reserve("restarts", 1, TEN_MINUTES, "act-1", "web-1", at(0)) == first
    assert quota.reserve("restarts", 1, TEN_MINUTES, "act-2", "web-2", at(1)) == refused
    # even under a policy whose limit changed since: the recorded verdict stands
    assert quota.reserve("restarts", 5, TEN_MINUTES, "act-2", "web-2", at(1)) == refused
    assert quota.count("restarts", TEN_MINUTES, at(1)) == 1


def test_one_id_for_two_different_actions_is_refused(quota: Quota) -> None:
    quota.reserve("restarts", 5, TEN_MINUTES, "act-1", "web-1", at(0))
    with pytest.raises(QuotaConflict, match="reserved for web-1 in scope restarts"):
        quota.reserve("restarts", 5, TEN_MINUTES, "act-1", "web-2", at(0))
    with pytest.raises(QuotaConflict):
        quota.reserve("deploys", 5, TEN_MINUTES, "act-1", "web-1", at(0))


def test_a_released_slot_is_free_again(quota: Quota) -> None:
    assert quota.reserve("restarts", 1, TEN_MINUTES, "act-1", "web-1", at(0)).granted
    assert not quota.reserve("restarts", 1, TEN_MINUTES, "act-2", "web-2", at(1)).granted
    assert quota.release("act-1") is True
    assert quota.release("act-1") is False
    assert quota.release("act-2") is True  # its refusal is forgotten: judged afresh below
    assert quota.reserve("restarts", 1, TEN_MINUTES, "act-2", "web-2", at(1)).granted


def test_an_earlier_action_is_refused_when_later_ones_fill_its_window(quota: Quota) -> None:
    """Managers decide at different event times: a reservation at 300 s may come first."""
    assert quota.reserve("restarts", 1, TEN_MINUTES, "late", "web-1", at(300)).granted
    early = quota.reserve("restarts", 1, TEN_MINUTES, "early", "web-2", at(0))
    assert (early.reason, early.seen) == (QuotaReason.LIMIT_REACHED, 1)
    assert quota.reserve("restarts", 1, TEN_MINUTES, "much-earlier", "web-3", at(-301)).granted


def test_a_blast_radius_counts_distinct_targets(quota: Quota) -> None:
    def reserve(action: str, target: str, seconds: float) -> Reservation:
        return quota.reserve(
            "blast:db", 2, TEN_MINUTES, action, target, at(seconds), distinct_targets=True
        )

    assert reserve("a1", "db-1", 0).reason is QuotaReason.UNDER_LIMIT
    assert reserve("a2", "db-2", 1).reason is QuotaReason.UNDER_LIMIT
    again = reserve("a3", "db-1", 2)
    assert again.reason is QuotaReason.TARGET_COUNTED and again.granted
    assert again.sentence == (
        "a3 on db-1 granted: db-1 is already among the 2 targets counted in scope blast:db "
        "within 10m, so it adds none (limit 2)"
    )
    assert reserve("a4", "db-3", 3).reason is QuotaReason.LIMIT_REACHED
    assert quota.count("blast:db", TEN_MINUTES, at(3), distinct_targets=True) == 2
    assert quota.count("blast:db", TEN_MINUTES, at(3)) == 3


def test_a_reservation_travels_as_a_plain_dict(quota: Quota) -> None:
    east = timezone(timedelta(hours=5, minutes=30))
    verdict = quota.reserve("restarts", 2, TEN_MINUTES, "act-1", "web-1", at(0).astimezone(east))
    assert verdict.at == at(0) and verdict.at.tzinfo is UTC
    data = orjson.loads(orjson.dumps(verdict.to_dict()))
    assert data["granted"] is True and data["reason"] == "under_limit"
    assert Reservation.from_dict(data) == verdict
    with pytest.raises(ValueError, match="contradicts"):
        Reservation.from_dict({**data, "granted": False})


def test_event_times_must_carry_a_time_zone(quota: Quota) -> None:
    with pytest.raises(ValueError, match="no time zone"):
        quota.reserve("restarts", 1, TEN_MINUTES, "act-1", "web-1", datetime(2026, 3, 1))


def test_old_verdicts_can_be_forgotten(quota: Quota) -> None:
    quota.reserve("restarts", 5, TEN_MINUTES, "old", "web-1", at(0))
    quota.reserve("restarts", 5, TEN_MINUTES, "new", "web-1", at(3600))
    assert quota.forget(at(1800)) == 1
    assert quota.count("restarts", TEN_MINUTES, at(0)) == 0


# -- the race ----------------------------------------------------------------------------

MANAGERS = 3
BURST = 200
LIMIT = 25
SPREAD_LIMIT, SPREAD_WINDOW = 5, timedelta(minutes=1)
BLAST_LIMIT = 4


def plan_of(owner: str) -> list[dict[str, Any]]:
    """One manager's burst: 200 proposals in one window, 100 spread over five windows in
    random order, 60 on twelve database hosts under a blast radius."""
    rng = random.Random(owner)
    plan = [
        {"scope": "restarts", "limit": LIMIT, "window_s": 600.0, "target": f"web-{n % 40}",
         "at": at(n / 10).isoformat(), "distinct_targets": False}
        for n in range(BURST)
    ] + [
        {"scope": "spread", "limit": SPREAD_LIMIT, "window_s": SPREAD_WINDOW.total_seconds(),
         "target": "web-1", "at": at(rng.uniform(0, 300)).isoformat(), "distinct_targets": False}
        for _ in range(100)
    ] + [
        {"scope": "blast:db", "limit": BLAST_LIMIT, "window_s": 600.0,
         "target": f"db-{rng.randrange(12)}", "at": at(rng.uniform(0, 60)).isoformat(),
         "distinct_targets": True}
        for _ in range(60)
    ]  # fmt: skip
    for n, item in enumerate(plan):
        item["action_id"] = f"{owner}-{n}"
    rng.shuffle(plan)
    return plan


def test_three_racing_managers_never_exceed_a_fleet_wide_limit(store: StoreURL) -> None:
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(MANAGERS)
    results: Any = context.Queue()
    url = url_of(store.schema)
    Quota(url, "setup").close()
    processes = [
        context.Process(target=burst, args=(url, f"m{n}", plan_of(f"m{n}"), start, results))
        for n in range(MANAGERS)
    ]
    for process in processes:
        process.start()
    try:
        outcomes = [results.get(timeout=60) for _ in processes]
    finally:
        for process in processes:
            process.join(30)
        results.close()
        results.join_thread()
    assert [process.exitcode for process in processes] == [0] * MANAGERS

    verdicts = [Reservation.from_dict(v) for _, made, _ in outcomes for v in made]
    assert [changed for _, _, changed in outcomes] == [[]] * MANAGERS
    assert all(len(made) == BURST + 160 for _, made, _ in outcomes)

    burst_verdicts = [v for v in verdicts if v.scope == "restarts"]
    granted = [v for v in burst_verdicts if v.granted]
    assert len(granted) == LIMIT  # never more, and no slot wasted
    assert {v.reason for v in granted} == {QuotaReason.UNDER_LIMIT}
    refused = [v for v in burst_verdicts if not v.granted]
    assert {(v.reason, v.seen) for v in refused} == {(QuotaReason.LIMIT_REACHED, LIMIT)}
    assert all("refused" in v.sentence for v in refused)

    spread = sorted(v.at for v in verdicts if v.scope == "spread" and v.granted)
    fullest = max(sum(1 for t in spread if end - SPREAD_WINDOW < t <= end) for end in spread)
    assert fullest <= SPREAD_LIMIT
    assert len(spread) >= SPREAD_LIMIT

    blast = [v for v in verdicts if v.scope == "blast:db"]
    assert len({v.target for v in blast if v.granted}) == BLAST_LIMIT
    assert all(v.reason is QuotaReason.LIMIT_REACHED for v in blast if not v.granted)

    with Quota(store, "auditor") as auditor:
        assert auditor.count("restarts", TEN_MINUTES, at(BURST / 10)) == LIMIT
        assert auditor.count("blast:db", TEN_MINUTES, at(60), distinct_targets=True) == 4
