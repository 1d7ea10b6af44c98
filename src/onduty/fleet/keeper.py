"""Keeping one manager's fair share of the partitions, and knowing when it may no longer act.

Every `renew_every` the keeper heartbeats, renews the leases it holds, then gives up the ones
above its fair share (a manager joined) or takes free and expired ones up to it (a manager left
or died). The manager hears of each change through `on_gained(partition, token)` — fold the
partition's log, then act — and `on_lost(partition)` — stop acting on it now.

Safety over availability: each lease has a local deadline, `ttl - margin` after the renewal
that last confirmed it was *sent* (the database set the expiry from a later instant, so the
deadline falls before it). Past its deadline a lease is reported lost, whether or not the
database answered; a watchdog thread sees to that even while a renewal hangs on a dead
connection. The margin leaves room for clock-rate differences and the last action in flight.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from onduty.fleet.leases import Lease, Leases
from onduty.log.pg import DatabaseUnavailable

logger = logging.getLogger("onduty.fleet")

Gained = Callable[[int, int], None]
Lost = Callable[[int], None]


def _ignore_gain(partition: int, token: int) -> None:
    pass


def _ignore_loss(partition: int) -> None:
    pass


@dataclass(frozen=True)
class _Held:
    lease: Lease
    deadline: float  # time.monotonic() after which the lease must be taken as lost


class LeaseKeeper:
    """Holds `leases.owner`'s fair share of `partitions` partitions.

    Drive it with `tick()` every `leases.renew_every` seconds, or let `start()` run it on a
    thread of its own (plus the watchdog); `stop()` ends it. `holding(partition)` is the check
    to make before acting. Callbacks run on the keeper's threads, one at a time, and should
    return quickly; they must not wait for the keeper."""

    def __init__(
        self,
        leases: Leases,
        partitions: int,
        *,
        on_gained: Gained = _ignore_gain,
        on_lost: Lost = _ignore_loss,
        margin: float | None = None,
    ) -> None:
        if partitions < 1:
            raise ValueError(f"there must be at least one partition, not {partitions}")
        margin = leases.ttl / 4 if margin is None else margin
        if margin < 0 or leases.ttl - margin <= leases.renew_every:
            raise ValueError(
                f"margin {margin}s leaves no time to renew: ttl ({leases.ttl}s) minus the margin "
                f"must be longer than renew_every ({leases.renew_every}s)"
            )
        self.leases, self.partitions = leases, partitions
        self.valid_for = leases.ttl - margin
        self.last_error: str | None = None
        """Why the last round failed (None once one succeeds)."""
        self._on_gained, self._on_lost = on_gained, on_lost
        self._held: dict[int, _Held] = {}
        self._state = threading.RLock()  # guards _held and serialises the callbacks
        self._round = threading.Lock()  # one tick at a time
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- what the manager asks ------------------------------------------------------------

    def holding(self, partition: int) -> Lease | None:
        """The lease on `partition` if this manager may still act on it, else None."""
        self.expire_overdue()
        with self._state:
            held = self._held.get(partition)
            return None if held is None else held.lease

    def held(self) -> dict[int, Lease]:
        """Every lease this manager may still act on, by partition."""
        self.expire_overdue()
        with self._state:
            return {partition: held.lease for partition, held in sorted(self._held.items())}

    # -- one round --------------------------------------------------------------------------

    def tick(self) -> None:
        """Heartbeat, renew, then shed or take partitions towards the fair share. A database
        that cannot be reached fails the round (`last_error`); the leases then run out at
        their deadlines."""
        with self._round:
            self.expire_overdue()
            try:
                self.leases.heartbeat()
                self._renew()
                share = self.leases.balance(self.partitions, self.leases.live_owners())
                self._shed(share)
                self._take(share)
            except DatabaseUnavailable as error:
                if self.last_error is None:
                    logger.warning("lease round failed for %s: %s", self.leases.owner, error)
                self.last_error = str(error)
            else:
                self.last_error = None
            self.expire_overdue()

    def expire_overdue(self) -> list[int]:
        """Report lost every lease past its local deadline; the partitions reported."""
        now = time.monotonic()
        with self._state:
            overdue = [p for p, held in sorted(self._held.items()) if held.deadline <= now]
            if overdue:
                logger.warning(
                    "%s stops acting on partitions %s: their leases were not renewed in time",
                    self.leases.owner,
                    overdue,
                )
            for partition in overdue:
                self._drop(partition)
            return overdue

    def _renew(self) -> None:
        with self._state:
            leases = [held.lease for held in self._held.values()]
        sent = time.monotonic()
        renewed, lost = self.leases.renew(leases)
        with self._state:
            for lease in renewed:
                current = self._held.get(lease.partition)
                # a lease dropped meanwhile (its deadline passed) stays dropped: its tenure is over
                if current is not None and current.lease.token == lease.token:
                    self._held[lease.partition] = _Held(lease, sent + self.valid_for)
            for lease in lost:
                current = self._held.get(lease.partition)
                if current is not None and current.lease.token == lease.token:
                    logger.warning(
                        "%s lost partition %d: its lease expired or was taken over",
                        self.leases.owner,
                        lease.partition,
                    )
                    self._drop(lease.partition)

    def _shed(self, share: int) -> None:
        """Give up the highest partitions above the share: the manager stops acting on them
        first (`on_lost`), then the database lets them go."""
        with self._state:
            extra = [(p, self._held[p].lease.token) for p in sorted(self._held)[share:]]
            for partition, _ in extra:
                self._drop(partition)
        for partition, token in extra:
            self.leases.release(partition, token)

    def _take(self, share: int) -> None:
        with self._state:
            wanted = share - len(self._held)
            mine = set(self._held)
        if wanted <= 0:
            return
        for partition in self.leases.takeable(self.partitions):
            if partition in mine:
                continue
            sent = time.monotonic()
            lease = self.leases.acquire(partition)
            if lease is None:
                continue  # another manager was quicker
            with self._state:
                self._held[partition] = _Held(lease, sent + self.valid_for)
                self._on_gained(partition, lease.token)
            wanted -= 1
            if wanted == 0:
                return

    def _drop(self, partition: int) -> None:
        """Forget a lease and tell the manager; called with `_state` held."""
        del self._held[partition]
        self._on_lost(partition)

    # -- on threads of its own --------------------------------------------------------------

    def start(self) -> None:
        """Run the rounds and the deadline watchdog on two daemon threads."""
        if self._threads:
            raise RuntimeError("the lease keeper is already running")
        self._stopping.clear()
        owner = self.leases.owner
        self._threads = [
            threading.Thread(target=self._run_rounds, name=f"onduty-leases-{owner}", daemon=True),
            threading.Thread(
                target=self._run_watchdog, name=f"onduty-lease-deadlines-{owner}", daemon=True
            ),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, *, release: bool = True, timeout: float | None = None) -> None:
        """Stop the threads and report every lease lost; with `release`, also let them go in
        the database and leave the membership, so others take over at once rather than after
        a TTL. A round stuck on a dead connection is left behind (its thread is a daemon) and
        nothing is released: the leases then simply expire."""
        self._stopping.set()
        stuck = False
        for thread in self._threads:
            thread.join(self.leases.ttl if timeout is None else timeout)
            stuck = stuck or thread.is_alive()
        self._threads = []
        with self._state:
            for partition in sorted(self._held):
                self._drop(partition)
        if release and not stuck:
            try:
                self.leases.leave()
            except DatabaseUnavailable as error:
                logger.warning("%s could not release its leases: %s", self.leases.owner, error)

    def _run_rounds(self) -> None:
        due = time.monotonic()
        while not self._stopping.is_set():
            try:
                self.tick()
            except Exception:  # a callback's bug must not end the renewals
                logger.exception("lease round failed for %s", self.leases.owner)
            due = max(due + self.leases.renew_every, time.monotonic())
            if self._stopping.wait(due - time.monotonic()):
                return

    def _run_watchdog(self) -> None:
        while not self._stopping.wait(self._until_next_deadline()):
            try:
                self.expire_overdue()
            except Exception:
                logger.exception("lease deadline check failed for %s", self.leases.owner)

    def _until_next_deadline(self) -> float:
        """Seconds to the earliest deadline; a lease gained meanwhile has a deadline further
        away than `renew_every`, so waking at least that often misses none."""
        with self._state:
            earliest = min((held.deadline for held in self._held.values()), default=None)
        if earliest is None:
            return self.leases.renew_every
        return min(max(earliest - time.monotonic(), 0.0), self.leases.renew_every)
