"""The lease keeper against the real server: fair shares as managers come and go, the takeover
time of a dead manager's partitions, and leases reported lost before they expire when the
database falls silent.

Keepers run on their own threads with a 1 s TTL (renewals every 1/3 s). Every gain and loss
of every keeper goes into one timeline, checked for the property that matters most: no
partition is ever held by two managers at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from psycopg import sql

from onduty.fleet import LeaseKeeper, Leases, StoreURL, connect, parse_store_url
from tests.fleet.proxy import Proxy

TTL = 1.0
PARTITIONS = 12


@dataclass
class Timeline:
    """Gains and losses of every keeper, in the order they happened."""

    entries: list[tuple[float, str, str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, owner: str, what: str, partition: int) -> None:
        with self.lock:
            self.entries.append((time.time(), owner, what, partition))

    def overlaps(self) -> list[str]:
        """Every moment a partition was gained while another manager still held it."""
        holder: dict[int, str] = {}
        problems = []
        with self.lock:
            entries = list(self.entries)
        for _, owner, what, partition in entries:
            if what == "gained":
                if partition in holder:
                    problems.append(f"{owner} gained {partition} held by {holder[partition]}")
                holder[partition] = owner
            elif holder.get(partition) == owner:
                del holder[partition]
            else:
                problems.append(f"{owner} lost {partition} it did not hold")
        return problems


class Fleet:
    def __init__(self, store: StoreURL, timeline: Timeline) -> None:
        self.store, self.timeline = store, timeline
        self.keepers: dict[str, LeaseKeeper] = {}
        self._leases: list[Leases] = []

    def start(self, owner: str, url: StoreURL | None = None) -> LeaseKeeper:
        leases = Leases(url or self.store, owner, ttl=TTL)
        self._leases.append(leases)
        keeper = LeaseKeeper(
            leases,
            PARTITIONS,
            on_gained=lambda p, token: self.timeline.note(owner, "gained", p),
            on_lost=lambda p: self.timeline.note(owner, "lost", p),
        )
        self.keepers[owner] = keeper
        keeper.start()
        return keeper

    def shares(self) -> dict[str, int]:
        return {owner: len(keeper.held()) for owner, keeper in self.keepers.items()}

    def close(self) -> None:
        for keeper in self.keepers.values():
            keeper.stop()
        for leases in self._leases:
            leases.close()


@pytest.fixture
def fleet(store: StoreURL) -> Iterator[Fleet]:
    made = Fleet(store, Timeline())
    yield made
    made.close()


def wait_until(condition: Callable[[], bool], timeout: float) -> float:
    """Seconds until `condition` held; fails the test after `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"not within {timeout}s")
        time.sleep(0.02)
    return time.monotonic() - started


def owners_in_database(store: StoreURL) -> dict[int, str]:
    query = sql.SQL(
        "SELECT partition, owner FROM {} WHERE expires_at > now() ORDER BY partition"
    ).format(store.table("partition_leases"))
    with connect(store.conninfo, autocommit=True) as conn:
        return {int(p): str(owner) for p, owner in conn.execute(query)}


def owners_expiring(store: StoreURL) -> dict[int, float]:
    query = sql.SQL("SELECT partition, expires_at FROM {}").format(store.table("partition_leases"))
    with connect(store.conninfo, autocommit=True) as conn:
        return {int(p): at.timestamp() for p, at in conn.execute(query)}


@contextmanager
def leases_of(store: StoreURL, owner: str) -> Iterator[Leases]:
    leases = Leases(store, owner, ttl=TTL)
    try:
        yield leases
    finally:
        leases.close()


def test_managers_share_the_partitions_and_a_dead_ones_move_within_ttl_and_a_renewal(
    fleet: Fleet, store: StoreURL
) -> None:
    for owner in ("m1", "m2", "m3"):
        fleet.start(owner)
    wait_until(lambda: fleet.shares() == {"m1": 4, "m2": 4, "m3": 4}, timeout=6)
    held = {p: owner for owner, k in fleet.keepers.items() for p in k.held()}
    assert held == owners_in_database(store)
    assert sorted(held) == list(range(PARTITIONS))

    fleet.start("m4")  # the others hand over one partition each
    wait_until(lambda: set(fleet.shares().values()) == {3}, timeout=6)

    dead = fleet.keepers.pop("m2")
    orphans = set(dead.held())
    dead.stop(release=False)  # a crash: its leases stay in the table until they expire
    renew_every = TTL / 3
    took = wait_until(
        lambda: fleet.shares() == {"m1": 4, "m3": 4, "m4": 4}, timeout=TTL + renew_every + 3
    )
    assert took <= TTL + renew_every + 0.3, f"takeover took {took:.2f}s"
    survivors = owners_in_database(store)
    assert sorted(survivors) == list(range(PARTITIONS))
    assert {survivors[p] for p in orphans} <= {"m1", "m3", "m4"}
    assert fleet.timeline.overlaps() == []


def test_a_clean_stop_hands_over_at_the_next_renewal(fleet: Fleet) -> None:
    fleet.start("m1")
    fleet.start("m2")
    wait_until(lambda: fleet.shares() == {"m1": 6, "m2": 6}, timeout=6)
    fleet.keepers.pop("m1").stop()  # releases and leaves the membership
    took = wait_until(lambda: fleet.shares() == {"m2": 12}, timeout=3)
    assert took < TTL  # no waiting for an expiry
    assert fleet.timeline.overlaps() == []


@pytest.mark.parametrize("failure", ["silence", "refusal"])
def test_a_keeper_cut_off_from_the_database_reports_its_leases_lost_before_they_expire(
    store: StoreURL, failure: str
) -> None:
    proxy = Proxy()
    timeline = Timeline()
    fleet = Fleet(store, timeline)
    try:
        keeper = fleet.start("m1", parse_store_url(proxy.url(store.schema)))
        wait_until(lambda: len(keeper.held()) == PARTITIONS, timeout=4)
        if failure == "silence":
            proxy.silence()  # a partition: statements hang, nothing fails
        else:
            proxy.close()  # the connection resets, reconnecting is refused
        cut = time.time()
        wait_until(lambda: keeper.held() == {}, timeout=TTL + 1)
        expiries = owners_expiring(store)
        lost = {p: at for at, _, what, p in timeline.entries if what == "lost"}
        assert sorted(lost) == list(range(PARTITIONS))
        for partition, at in lost.items():
            assert at < expiries[partition], f"partition {partition} reported lost too late"
            assert at - cut <= TTL
        assert keeper.last_error is not None or failure == "silence"
    finally:
        proxy.close()
        fleet.close()


def test_a_tick_driven_keeper_needs_no_thread(store: StoreURL) -> None:
    """`tick()` is the whole round: a caller with its own loop runs it every renew_every."""
    gained: list[tuple[int, int]] = []
    lost: list[int] = []
    with leases_of(store, "solo") as leases:
        keeper = LeaseKeeper(
            leases, 3, on_gained=lambda p, token: gained.append((p, token)), on_lost=lost.append
        )
        keeper.tick()
        assert gained == [(0, 1), (1, 1), (2, 1)]
        keeper.tick()
        assert sorted(keeper.held()) == [0, 1, 2] and lost == []
        keeper.stop()
        assert lost == [0, 1, 2]
        assert leases.owned() == []


def test_a_margin_leaving_no_time_to_renew_is_refused(store: StoreURL) -> None:
    with leases_of(store, "a") as leases, pytest.raises(ValueError, match="margin"):
        LeaseKeeper(leases, 4, margin=TTL * 0.8)
