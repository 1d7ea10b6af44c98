"""Leases on the real server: taking, renewing, releasing, expiry, fencing, membership."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from onduty.fleet import (
    DatabaseUnavailable,
    Lease,
    Leases,
    StoreURL,
    connect,
    fair_share,
    holds,
    lease_fence,
)


@contextmanager
def leases_of(store: StoreURL, *owners: str, ttl: float = 1.0) -> Iterator[list[Leases]]:
    made = [Leases(store, owner, ttl=ttl) for owner in owners]
    try:
        yield made
    finally:
        for leases in made:
            leases.close()


def wait_past(lease: Lease) -> None:
    """Sleep until the database's clock (this host's) has passed the lease's expiry."""
    time.sleep(max(0.0, lease.expires_at.timestamp() - time.time()) + 0.05)


def test_a_free_partition_is_taken_and_a_live_lease_is_not(store: StoreURL) -> None:
    with leases_of(store, "a", "b") as (a, b):
        lease = a.acquire(3)
        assert lease is not None
        assert (lease.partition, lease.owner, lease.token) == (3, "a", 1)
        assert b.acquire(3) is None
        assert a.owned() == [lease]
        assert b.owned() == []


def test_renewing_extends_a_lease_by_the_database_clock(store: StoreURL) -> None:
    with leases_of(store, "a") as (a,):
        first = a.acquire(0)
        second = a.acquire(1)
        assert first is not None and second is not None
        time.sleep(0.05)
        renewed, lost = a.renew([first, second])
        assert lost == []
        assert [lease.partition for lease in renewed] == [0, 1]
        assert all(lease.expires_at > first.expires_at for lease in renewed)
        assert renewed == [first, second]  # the same tenures, however far they now reach


def test_an_expired_lease_goes_to_another_owner_with_a_larger_token(store: StoreURL) -> None:
    with leases_of(store, "a", "b", ttl=0.4) as (a, b):
        old = a.acquire(0)
        assert old is not None
        wait_past(old)
        new = b.acquire(0)
        assert new is not None
        assert (new.owner, new.token) == ("b", old.token + 1)
        renewed, lost = a.renew([old])
        assert (renewed, lost) == ([], [old])
        assert a.release(0) is False  # not a's to release any more


def test_an_expired_lease_nobody_took_is_not_renewed(store: StoreURL) -> None:
    with leases_of(store, "a", ttl=0.4) as (a,):
        old = a.acquire(0)
        assert old is not None
        wait_past(old)
        assert a.renew([old]) == ([], [old])


def test_taking_a_lease_again_starts_a_new_tenure(store: StoreURL) -> None:
    with leases_of(store, "a") as (a,):
        first = a.acquire(0)
        again = a.acquire(0)
        assert first is not None and again is not None
        assert again.token == first.token + 1
        assert a.renew([first]) == ([], [first])  # the older tenure is over


def test_a_released_lease_is_free_at_once(store: StoreURL) -> None:
    with leases_of(store, "a", "b", ttl=30) as (a, b):
        lease = a.acquire(0)
        assert lease is not None
        assert a.release(0, token=lease.token + 1) is False  # another tenure's token
        assert a.release(0) is True
        assert a.owned() == []
        taken = b.acquire(0)
        assert taken is not None and taken.token == lease.token + 1


def test_takeable_lists_free_expired_and_own_partitions(store: StoreURL) -> None:
    with leases_of(store, "a", "b", ttl=0.4) as (a, b):
        short = a.acquire(0)
        assert short is not None
        assert b.acquire(1) is not None
        assert a.acquire(2) is not None
        assert a.takeable(4) == [0, 2, 3]
        assert b.takeable(4) == [1, 3]
        wait_past(short)
        assert b.takeable(4) == [0, 1, 2, 3]


def test_the_fence_holds_for_the_owner_and_not_after_a_takeover(store: StoreURL) -> None:
    with (
        leases_of(store, "a", "b", ttl=0.4) as (a, b),
        connect(store.conninfo, autocommit=False) as log,
    ):
        lease = a.acquire(5)
        assert lease is not None
        fence = lease_fence(store, lease)
        assert holds(log, store, 5, "a", lease.token)
        assert fence(log) is None
        assert not holds(log, store, 5, "b", lease.token)
        assert not holds(log, store, 5, "a", lease.token + 1)
        log.commit()
        wait_past(lease)
        assert not holds(log, store, 5, "a", lease.token)  # expired, even before a takeover
        taken = b.acquire(5)
        assert taken is not None
        assert holds(log, store, 5, "b", taken.token)
        reason = fence(log)
        assert reason is not None and "no longer held by a with token 1" in reason
        log.commit()


def test_a_write_under_the_fence_commits_before_a_takeover(store: StoreURL) -> None:
    """The fence locks the lease row: the next owner's takeover waits for the fenced
    transaction, so what it wrote is in the log the next owner folds."""
    with leases_of(store, "a", ttl=0.4) as (a,), leases_of(store, "b", ttl=3) as (b,):
        lease = a.acquire(0)
        assert lease is not None
        assert b.acquire(1) is not None  # creates b's tables and connection up front
        taken: list[Lease | None] = []
        with connect(store.conninfo, autocommit=False) as log:
            assert holds(log, store, 0, "a", lease.token)
            wait_past(lease)
            takeover = threading.Thread(target=lambda: taken.append(b.acquire(0)))
            takeover.start()
            takeover.join(0.3)
            assert takeover.is_alive() and taken == []  # held off by the open transaction
            log.commit()
            takeover.join(5)
        assert len(taken) == 1 and taken[0] is not None
        assert taken[0].token == lease.token + 1


def test_members_are_live_while_they_heartbeat_and_gone_when_they_leave(
    store: StoreURL,
) -> None:
    with leases_of(store, "a", "b", ttl=0.4) as (a, b):
        observer = Leases(store, "c", ttl=0.4, role="observer")
        try:
            a.heartbeat()
            b.heartbeat()
            observer.heartbeat()
            assert a.live_owners() == ["a", "b"]  # another role is not counted
            assert b.acquire(0) is not None
            b.leave()
            assert a.live_owners() == ["a"]
            assert a.acquire(0) is not None  # b's lease went with it
            time.sleep(0.45)
            assert a.live_owners() == []
        finally:
            observer.close()


@pytest.mark.parametrize(
    ("partitions", "owners", "shares"),
    [
        (12, ["a", "b", "c"], [4, 4, 4]),
        (12, ["a", "b", "c", "d"], [3, 3, 3, 3]),
        (12, ["a", "b", "c", "d", "e"], [3, 3, 2, 2, 2]),
        (2, ["a", "b", "c"], [1, 1, 0]),
        (7, ["a"], [7]),
    ],
)
def test_the_fair_share_splits_every_partition_exactly(
    partitions: int, owners: list[str], shares: list[int]
) -> None:
    assert [fair_share(partitions, owners, owner) for owner in owners] == shares
    assert fair_share(partitions, [], "a") == partitions  # it counts itself when alone


def test_bad_timings_are_refused() -> None:
    with pytest.raises(ValueError, match="renew_every"):
        Leases("postgresql://db/x", "a", ttl=1, renew_every=1)
    with pytest.raises(ValueError, match="positive"):
        Leases("postgresql://db/x", "a", ttl=0)


def test_an_unreachable_database_is_reported_as_unavailable() -> None:
    leases = Leases("postgresql://postgres@127.0.0.1:1/test", "a", ttl=1)
    try:
        with pytest.raises(DatabaseUnavailable):
            leases.acquire(0)
    finally:
        leases.close()
