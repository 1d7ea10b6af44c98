"""Kill switches of a fleet: the fleet-wide record every manager follows, in PostgreSQL.

Every change (a switch set, or cleared) is a row of an append-only table in the store's schema,
numbered in commit order, with who made it and why. The switches in force are the latest
change of each (kind, name) that sets it; the highest number is the record's version, the cheap
thing a manager polls. Changes are taken one at a time (an advisory lock), so two operators
setting and clearing the same switch at once leave the record in one order every node reads.

The record is not what the core decides by: each manager records the changes in every partition
it runs as `KillSwitchSet` / `KillSwitchCleared` input events (`onduty.cells.kill_switch_watch`),
so each partition's log holds the switches its verdicts followed and replays on its own.

Shell code in the fleet layer: it does I/O on PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from onduty.log.pg import LazyConnection, StoreURL, parse_store_url

STATEMENT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class SwitchChange:
    """The latest change of one switch: `active` when it sets the switch, else it cleared it."""

    version: int
    kind: str
    name: str
    active: bool
    reason: str
    actor: str
    at: datetime

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"

    def listing(self) -> dict[str, str]:
        """As the API and the console list a switch in force."""
        return {
            "kind": self.kind,
            "name": self.name,
            "reason": self.reason,
            "set_by": self.actor,
            "set_at": self.at.isoformat(),
        }


@dataclass(frozen=True)
class SwitchRecord:
    """The record as of `version`: the latest change of every switch ever set."""

    version: int
    latest: tuple[SwitchChange, ...]

    @property
    def active(self) -> list[SwitchChange]:
        return [change for change in self.latest if change.active]

    def listing(self) -> list[dict[str, str]]:
        return [change.listing() for change in sorted(self.active, key=lambda c: c.key)]


EMPTY = SwitchRecord(0, ())


class _Statements:
    def __init__(self, url: StoreURL) -> None:
        table = url.table("fleet_kill_switches")

        def q(text: str) -> sql.Composed:
            return sql.SQL(text).format(table=table)

        self.schema = [
            q(
                "CREATE TABLE IF NOT EXISTS {table} ("
                " version bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
                " kind text NOT NULL, name text NOT NULL, active boolean NOT NULL,"
                " reason text NOT NULL, actor text NOT NULL,"
                " at timestamptz NOT NULL DEFAULT now())"
            )
        ]
        self.version = q("SELECT coalesce(max(version), 0) FROM {table}")
        self.latest = q(
            "SELECT DISTINCT ON (kind, name) version, kind, name, active, reason, actor, at"
            " FROM {table} ORDER BY kind, name, version DESC"
        )
        self.current = q(
            "SELECT active FROM {table} WHERE kind = %s AND name = %s ORDER BY version DESC LIMIT 1"
        )
        self.insert = q(
            "INSERT INTO {table} (kind, name, active, reason, actor) VALUES (%s, %s, %s, %s, %s)"
            " RETURNING version, at"
        )


class FleetKillSwitches:
    """The fleet-wide kill-switch record in the schema of the store at `url`, on one connection
    (threads take turns). A database that cannot be reached raises `DatabaseUnavailable`."""

    def __init__(self, url: str | StoreURL) -> None:
        self.url = parse_store_url(url) if isinstance(url, str) else url
        self._q = _Statements(self.url)
        self._link = LazyConnection(
            self.url, schema=self._q.schema, shared=True, statement_timeout=STATEMENT_TIMEOUT_S
        )

    def set(self, kind: str, name: str, reason: str, actor: str) -> SwitchChange:
        """Set (or set again, with a new reason) the switch on `kind` `name`."""
        change = self._change(kind, name, True, reason, actor)
        assert change is not None  # a switch is always set
        return change

    def clear(self, kind: str, name: str, actor: str) -> SwitchChange | None:
        """Clear the switch on `kind` `name`; None when it is not set."""
        return self._change(kind, name, False, "", actor)

    def _change(
        self, kind: str, name: str, active: bool, reason: str, actor: str
    ) -> SwitchChange | None:
        with self._link.using() as conn, conn.transaction():
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"onduty-kill-switches:{self.url.schema}",),
            )
            if not active:
                row = conn.execute(self._q.current, (kind, name)).fetchone()
                if row is None or not row[0]:
                    return None
            made = conn.execute(self._q.insert, (kind, name, active, reason, actor)).fetchone()
        assert made is not None  # RETURNING answers the row inserted
        version, at = made
        return SwitchChange(int(version), kind, name, active, reason, actor, at)

    def version(self) -> int:
        """The number of the latest change (0 before any): what a follower polls."""
        row = self._read(self._q.version)
        return int(row[0][0]) if row else 0

    def record(self) -> SwitchRecord:
        """The latest change of every switch, and the version they are as of."""
        rows = self._read(self._q.latest)
        latest = tuple(
            SwitchChange(int(v), str(kind), str(name), bool(active), str(why), str(actor), at)
            for v, kind, name, active, why, actor, at in rows
        )
        return SwitchRecord(max((c.version for c in latest), default=0), latest)

    def _read(self, statement: sql.Composed) -> list[tuple[Any, ...]]:
        try:
            with self._link.using() as conn:
                return conn.execute(statement).fetchall()
        except psycopg.errors.UndefinedTable:  # pragma: no cover - the table is made on use
            return []

    def close(self) -> None:
        self._link.close()

    def __enter__(self) -> FleetKillSwitches:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
