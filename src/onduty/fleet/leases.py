"""Partition leases in PostgreSQL: one owner per partition at a time, with a fencing token.

A lease is a row of `<schema>.partition_leases`. Taking one is a single statement that succeeds
only when the row is absent, expired or already the caller's, and every taking bumps the row's
`token`: a number that only grows, so a writer still acting on an old tenure is recognised and
refused (`holds`, `lease_fence`). Expiry is judged by the database's clock alone, so managers on
hosts whose clocks disagree still agree on who holds what.

Managers announce themselves in `<schema>.fleet_members` with a heartbeat of the same TTL; the
live ones divide the partitions between them (`fair_share`). `LeaseKeeper` (keeper.py) runs the
renewals and the balancing; `Leases` is the statements, for one manager and one thread.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from psycopg import sql

from onduty.log.pg import Connection, LazyConnection, StoreURL, parse_store_url

DEFAULT_TTL_S = 6.0
DEFAULT_ROLE = "manager"
DEFAULT_REGION = "default"
MEMBERS_KEPT = timedelta(hours=1)
"""How long a member that stopped heartbeating stays in `fleet_members` (for whoever looks)."""

Fence = Callable[[Connection], str | None]
"""Run inside another transaction (an event log's append): why the writer may no longer act on
its partition, or None while its lease holds."""


@dataclass(frozen=True)
class Lease:
    """A partition held by `owner` for the tenure numbered `token`, until `expires_at` (by the
    database's clock) unless renewed.

    Leases compare by tenure (partition, owner, token): a renewal moves the expiry, but it is
    still the same lease."""

    partition: int
    owner: str
    token: int
    expires_at: datetime = field(compare=False)


def fair_share(partitions: int, live_owners: Collection[str], owner: str) -> int:
    """How many of `partitions` `owner` should hold among `live_owners` (itself always counted).

    Every live owner gets the floor of an even split; the remainder goes one each to the first
    owners in name order, so the shares add up to exactly `partitions` and no partition is left
    to whoever grabs first."""
    ranked = sorted({*live_owners, owner})
    base, remainder = divmod(partitions, len(ranked))
    return base + (1 if ranked.index(owner) < remainder else 0)


def fence_sql(url: StoreURL) -> sql.Composed:
    """The check that a lease still holds, parameters (partition, owner, token): a row when it
    does. For another transaction, such as an event log's append.

    clock_timestamp(), not now(): that transaction may have begun a while ago. FOR SHARE holds
    off a takeover (an UPDATE of the row) until that transaction ends, so whatever it commits is
    there for the next owner to fold."""
    return sql.SQL(
        "SELECT 1 FROM {leases} WHERE partition = %s AND owner = %s AND token = %s"
        " AND expires_at > clock_timestamp() FOR SHARE"
    ).format(leases=url.table("partition_leases"))


class _Statements:
    """The statements of one schema, composed once."""

    def __init__(self, url: StoreURL) -> None:
        leases, members = url.table("partition_leases"), url.table("fleet_members")

        def q(text: str) -> sql.Composed:
            return sql.SQL(text).format(leases=leases, members=members)

        self.schema = [
            q(
                "CREATE TABLE IF NOT EXISTS {leases} ("
                " partition integer PRIMARY KEY CHECK (partition >= 0),"
                " owner text NOT NULL, token bigint NOT NULL,"
                " expires_at timestamptz NOT NULL, acquired_at timestamptz NOT NULL)"
            ),
            q(
                "CREATE TABLE IF NOT EXISTS {members} ("
                " owner text PRIMARY KEY, region text NOT NULL, role text NOT NULL,"
                " heartbeat_at timestamptz NOT NULL)"
            ),
        ]
        # `now()` is the statement's start in these single-statement transactions: one instant
        # for the expiry test and the new expiry alike.
        self.acquire = q(
            "INSERT INTO {leases} AS l (partition, owner, token, expires_at, acquired_at)"
            " VALUES (%(partition)s, %(owner)s, 1, now() + %(ttl)s, now())"
            " ON CONFLICT (partition) DO UPDATE SET owner = excluded.owner,"
            " token = l.token + 1, expires_at = excluded.expires_at,"
            " acquired_at = excluded.acquired_at"
            " WHERE l.expires_at <= now() OR l.owner = excluded.owner"
            " RETURNING partition, owner, token, expires_at"
        )
        self.renew = q(
            "UPDATE {leases} AS l SET expires_at = now() + %(ttl)s"
            " FROM unnest(%(partitions)s::integer[], %(tokens)s::bigint[]) AS held(p, t)"
            " WHERE l.partition = held.p AND l.token = held.t AND l.owner = %(owner)s"
            " AND l.expires_at > now()"
            " RETURNING l.partition, l.owner, l.token, l.expires_at"
        )
        self.release = q(
            "UPDATE {leases} SET expires_at = now() WHERE partition = %(partition)s"
            " AND owner = %(owner)s AND (token = %(token)s OR %(token)s IS NULL)"
            " AND expires_at > now()"
        )
        self.release_all = q(
            "UPDATE {leases} SET expires_at = now() WHERE owner = %(owner)s AND expires_at > now()"
        )
        self.owned = q(
            "SELECT partition, owner, token, expires_at FROM {leases}"
            " WHERE owner = %(owner)s AND expires_at > now() ORDER BY partition"
        )
        self.takeable = q(
            "SELECT p FROM generate_series(0, %(partitions)s - 1) AS p WHERE NOT EXISTS ("
            " SELECT 1 FROM {leases} l WHERE l.partition = p AND l.expires_at > now()"
            " AND l.owner <> %(owner)s) ORDER BY p"
        )
        self.heartbeat = q(
            "INSERT INTO {members} (owner, region, role, heartbeat_at)"
            " VALUES (%(owner)s, %(region)s, %(role)s, now()) ON CONFLICT (owner) DO UPDATE"
            " SET region = excluded.region, role = excluded.role,"
            " heartbeat_at = excluded.heartbeat_at"
        )
        self.forget_members = q("DELETE FROM {members} WHERE heartbeat_at < now() - %(kept)s")
        self.leave = q("DELETE FROM {members} WHERE owner = %(owner)s")
        self.live = q(
            "SELECT owner FROM {members} WHERE role = %(role)s"
            " AND heartbeat_at > now() - %(ttl)s ORDER BY owner"
        )


def _lease(row: tuple[Any, ...]) -> Lease:
    partition, owner, token, expires_at = row
    return Lease(int(partition), str(owner), int(token), expires_at)


class Leases:
    """The lease and membership statements for one manager, `owner`, on one connection.

    `ttl` is how long a lease and a heartbeat last without renewal; `renew_every` how often the
    keeper renews them (default a third of the TTL, so two renewals can fail before expiry).
    `role` groups the members that share the partitions (the members of other roles are not
    counted); `region` is recorded for whoever looks. One thread uses a `Leases` at a time."""

    def __init__(
        self,
        url: str | StoreURL,
        owner: str,
        *,
        ttl: float = DEFAULT_TTL_S,
        renew_every: float | None = None,
        region: str = DEFAULT_REGION,
        role: str = DEFAULT_ROLE,
    ) -> None:
        if not owner:
            raise ValueError("a lease owner needs a name")
        if ttl <= 0:
            raise ValueError(f"lease ttl must be positive, not {ttl}")
        renew_every = ttl / 3 if renew_every is None else renew_every
        if not 0 < renew_every < ttl:
            raise ValueError(f"renew_every ({renew_every}s) must be shorter than the ttl ({ttl}s)")
        self.url = parse_store_url(url) if isinstance(url, str) else url
        self.owner, self.region, self.role = owner, region, role
        self.ttl, self.renew_every = ttl, renew_every
        self._ttl = timedelta(seconds=ttl)
        self._q = _Statements(self.url)
        # A statement that outlasts a renewal interval is no use to a lease holder: better to
        # fail it and try again than to sit past the lease's expiry.
        self._link = LazyConnection(
            self.url,
            connect_timeout=min(5.0, ttl / 2),
            statement_timeout=renew_every,
            dead_peer_after=ttl / 2,
            schema=self._q.schema,
        )

    def acquire(self, partition: int) -> Lease | None:
        """Take `partition` when it is free, expired or already ours, with a new token (a new
        tenure: anything still fenced with an older token is refused); None when another
        owner's lease is live."""
        with self._link.using() as conn:
            row = conn.execute(
                self._q.acquire, {"partition": partition, "owner": self.owner, "ttl": self._ttl}
            ).fetchone()
        return None if row is None else _lease(row)

    def renew(self, leases: Iterable[Lease]) -> tuple[list[Lease], list[Lease]]:
        """Extend the leases still ours (same token, not expired) by a TTL in one statement:
        (renewed, lost). A lost lease expired or was taken over; stop acting on it."""
        held = {lease.partition: lease for lease in leases}
        if not held:
            return [], []
        with self._link.using() as conn:
            rows = conn.execute(
                self._q.renew,
                {
                    "ttl": self._ttl,
                    "owner": self.owner,
                    "partitions": list(held),
                    "tokens": [lease.token for lease in held.values()],
                },
            ).fetchall()
        renewed = sorted((_lease(row) for row in rows), key=lambda lease: lease.partition)
        kept = {lease.partition for lease in renewed}
        return renewed, [lease for p, lease in sorted(held.items()) if p not in kept]

    def release(self, partition: int, token: int | None = None) -> bool:
        """Let `partition` go now, if it is ours (and of `token`, when given); whether it was."""
        with self._link.using() as conn:
            cursor = conn.execute(
                self._q.release, {"partition": partition, "owner": self.owner, "token": token}
            )
            return cursor.rowcount > 0

    def owned(self) -> list[Lease]:
        """The live leases the database says are ours."""
        with self._link.using() as conn:
            return [_lease(row) for row in conn.execute(self._q.owned, {"owner": self.owner})]

    def takeable(self, partitions: int) -> list[int]:
        """The partitions below `partitions` that `acquire` would take now: free, expired, or
        ours."""
        with self._link.using() as conn:
            rows = conn.execute(
                self._q.takeable, {"partitions": partitions, "owner": self.owner}
            ).fetchall()
        return [int(row[0]) for row in rows]

    def heartbeat(self) -> None:
        """Say this manager is alive for another TTL."""
        with self._link.using() as conn:
            conn.execute(
                self._q.heartbeat, {"owner": self.owner, "region": self.region, "role": self.role}
            )
            conn.execute(self._q.forget_members, {"kept": MEMBERS_KEPT})

    def live_owners(self) -> list[str]:
        """The members of this role whose heartbeat is younger than a TTL, by name."""
        with self._link.using() as conn:
            rows = conn.execute(self._q.live, {"role": self.role, "ttl": self._ttl}).fetchall()
        return [str(row[0]) for row in rows]

    def balance(self, partitions: int, live_owners: Collection[str]) -> int:
        """How many partitions this manager should hold: its fair share among `live_owners`."""
        return fair_share(partitions, live_owners, self.owner)

    def leave(self) -> None:
        """Release every lease and leave the membership (a clean shutdown): the others take
        over at their next renewal instead of after a TTL."""
        with self._link.using() as conn, conn.transaction():
            conn.execute(self._q.release_all, {"owner": self.owner})
            conn.execute(self._q.leave, {"owner": self.owner})

    def close(self) -> None:
        self._link.close()

    def __enter__(self) -> Leases:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def holds(conn: Connection, url: StoreURL, partition: int, owner: str, token: int) -> bool:
    """Whether `owner` still holds `partition` with `token`, checked inside the caller's own
    transaction on `conn`: the row is then locked against a takeover until that transaction
    ends, so a write committed under this check is never lost to the next owner's fold."""
    return conn.execute(fence_sql(url), (partition, owner, token)).fetchone() is not None


def lease_fence(url: StoreURL, lease: Lease) -> Fence:
    """A check for another transaction (an event log's append): None while `lease` holds,
    else why not."""
    query = fence_sql(url)

    def fence(conn: Connection) -> str | None:
        if conn.execute(query, (lease.partition, lease.owner, lease.token)).fetchone():
            return None
        return (
            f"partition {lease.partition} is no longer held by {lease.owner} with token "
            f"{lease.token}: its lease expired or another manager took it over"
        )

    return fence
