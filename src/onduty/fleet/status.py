"""Who runs what, as the console and the API show a fleet: each partition's lease (its owner,
tenure and how long it has left) and each manager's heartbeat, read from the lease tables."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import psycopg
from psycopg import sql

from onduty.log.pg import LazyConnection, StoreURL, parse_store_url


@dataclass(frozen=True)
class PartitionLease:
    partition: int
    owner: str
    token: int
    expires_in_s: float
    """Seconds until it expires (negative: expired, waiting for a taker)."""


@dataclass(frozen=True)
class Member:
    owner: str
    region: str
    role: str
    heartbeat_age_s: float
    alive: bool


@dataclass(frozen=True)
class FleetStatus:
    partitions: int
    leases: list[PartitionLease]
    members: list[Member]

    def held_by(self, owner: str) -> list[int]:
        return [lease.partition for lease in self.leases if lease.owner == owner]

    def unowned(self) -> list[int]:
        live = {lease.partition for lease in self.leases if lease.expires_in_s > 0}
        return [p for p in range(self.partitions) if p not in live]


class StatusReader:
    """Reads a fleet's status on a connection of its own (the console asks from any thread)."""

    def __init__(self, url: str | StoreURL, partitions: int, ttl_s: float) -> None:
        self.url = parse_store_url(url) if isinstance(url, str) else url
        self.partitions, self.ttl_s = partitions, ttl_s
        self._link = LazyConnection(self.url, statement_timeout=2.0)
        self._lock = threading.Lock()
        leases, members = self.url.table("partition_leases"), self.url.table("fleet_members")
        self._table = members
        self._leases = sql.SQL(
            "SELECT partition, owner, token, extract(epoch FROM expires_at - now())"
            " FROM {} ORDER BY partition"
        ).format(leases)
        self._members = sql.SQL(
            "SELECT owner, region, role, extract(epoch FROM now() - heartbeat_at)"
            " FROM {} ORDER BY owner"
        ).format(members)

    def read(self) -> FleetStatus:
        """The status now; raises `DatabaseUnavailable` when the store cannot be reached."""
        with self._lock, self._link.using() as conn:
            try:
                conn.execute(sql.SQL("SELECT 1 FROM {} LIMIT 0").format(self._table))
            except psycopg.errors.UndefinedTable:  # no manager ever started on this store
                return FleetStatus(self.partitions, [], [])
            leases = [
                PartitionLease(int(p), str(owner), int(token), float(left))
                for p, owner, token, left in conn.execute(self._leases)
            ]
            members = [
                Member(str(owner), str(region), str(role), float(age), float(age) < self.ttl_s)
                for owner, region, role, age in conn.execute(self._members)
            ]
        return FleetStatus(self.partitions, leases, members)

    def close(self) -> None:
        self._link.close()
