"""Fleet-wide guardrail counts: at most `limit` actions (or distinct targets) per window, across
every manager, through PostgreSQL transactions.

A manager about to act reserves a slot: one transaction takes an advisory lock on the scope,
counts the granted reservations around the action's event time and records the verdict, granted
or refused. Racing managers queue on the lock, so each counts what the others committed before it
and a limit is never exceeded. The verdict is keyed by the action's id: asking again returns the
recorded verdict and consumes nothing, so a manager that crashed after reserving can retry.

Counts are about event time (`at`, the decision's time), not the database's clock, and the
caller records the `Reservation` as an input event, so a replay reads the verdict back instead of
asking the database again.

"Never more than `limit` in a window" must hold for every window, including windows that end
after `at` (another manager may already have reserved at a later event time). So the verdict
looks at every window that contains `at` and grants only when the fullest of them has room.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import psycopg
from psycopg import sql

from onduty.govern.base import window_text
from onduty.log.pg import LazyConnection, StoreURL, parse_store_url

DEFAULT_STATEMENT_TIMEOUT_S = 10.0


class QuotaReason(StrEnum):
    UNDER_LIMIT = "under_limit"
    """Granted: the fullest window containing the action has room for it."""
    TARGET_COUNTED = "target_counted"
    """Granted: counting distinct targets, and the target is already counted in every window
    containing the action, so it adds nothing (like a blast radius that does not grow)."""
    LIMIT_REACHED = "limit_reached"
    """Refused: a window containing the action already holds `limit`."""


GRANTING = frozenset({QuotaReason.UNDER_LIMIT, QuotaReason.TARGET_COUNTED})


class QuotaConflict(ValueError):
    """An action id reserved again for a different scope, target or time: two actions share an
    id, which is a bug upstream, never something to count twice."""


@dataclass(frozen=True)
class Reservation:
    """A fleet-wide guardrail's verdict on one action, as recorded."""

    action_id: str
    scope: str
    target: str
    at: datetime
    """The action's event time, in UTC."""
    limit: int
    window: timedelta
    distinct_targets: bool
    reason: QuotaReason
    seen: int
    """What the fullest window containing `at` held before this action (actions, or distinct
    targets)."""
    sentence: str

    @property
    def granted(self) -> bool:
        return self.reason in GRANTING

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, for an input event."""
        return {
            "action_id": self.action_id,
            "scope": self.scope,
            "target": self.target,
            "at": self.at.isoformat(),
            "limit": self.limit,
            "window_s": self.window.total_seconds(),
            "distinct_targets": self.distinct_targets,
            "granted": self.granted,
            "reason": self.reason.value,
            "seen": self.seen,
            "sentence": self.sentence,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Reservation:
        reservation = cls(
            action_id=str(data["action_id"]),
            scope=str(data["scope"]),
            target=str(data["target"]),
            at=_utc(datetime.fromisoformat(str(data["at"]))),
            limit=int(data["limit"]),
            window=timedelta(seconds=float(data["window_s"])),
            distinct_targets=bool(data["distinct_targets"]),
            reason=QuotaReason(data["reason"]),
            seen=int(data["seen"]),
            sentence=str(data["sentence"]),
        )
        if "granted" in data and data["granted"] != reservation.granted:
            raise ValueError(
                f"reservation {reservation.action_id}: granted={data['granted']!r} contradicts "
                f"its reason {reservation.reason.value!r}"
            )
        return reservation


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError(f"{at.isoformat()} has no time zone: event times are aware datetimes")
    return at.astimezone(UTC)


def judge(
    granted: Sequence[tuple[datetime, str]],
    at: datetime,
    window: timedelta,
    target: str,
    limit: int,
    distinct_targets: bool,
) -> tuple[QuotaReason, int]:
    """The verdict on one more action at `at` on `target`, and what the fullest window held.

    `granted` is the scope's granted actions (time, target) in `(at - window, at + window)`,
    in time order. The windows containing `at` are `(end - window, end]` for `end` in
    `[at, at + window)`; their contents change only at `at` and at the granted times after it,
    so those are the ends looked at, sweeping the window forward once."""
    ends = sorted({at, *(time for time, _ in granted if at < time < at + window)})
    inside: Counter[str] = Counter()
    low = high = 0
    seen = after = 0
    grows = False
    for end in ends:
        while high < len(granted) and granted[high][0] <= end:
            inside[granted[high][1]] += 1
            high += 1
        while low < high and granted[low][0] <= end - window:
            inside[granted[low][1]] -= 1
            if not inside[granted[low][1]]:
                del inside[granted[low][1]]
            low += 1
        count = len(inside) if distinct_targets else high - low
        adds = 0 if distinct_targets and target in inside else 1
        seen, after, grows = max(seen, count), max(after, count + adds), grows or adds > 0
    if distinct_targets and not grows:
        return QuotaReason.TARGET_COUNTED, seen
    if after > limit:
        return QuotaReason.LIMIT_REACHED, seen
    return QuotaReason.UNDER_LIMIT, seen


def _sentence(verdict: Reservation) -> str:
    within = window_text(verdict.window.total_seconds())
    lead = f"{verdict.action_id} on {verdict.target}"
    if verdict.reason is QuotaReason.TARGET_COUNTED:
        return (
            f"{lead} granted: {verdict.target} is already among the {verdict.seen} targets "
            f"counted in scope {verdict.scope} within {within}, so it adds none "
            f"(limit {verdict.limit})"
        )
    what = "targets" if verdict.distinct_targets else "actions"
    return (
        f"{lead} {'granted' if verdict.granted else 'refused'}: {verdict.seen} {what} already "
        f"counted in scope {verdict.scope} within {within}, limit {verdict.limit}"
    )


class _Statements:
    def __init__(self, url: StoreURL) -> None:
        table = url.table("fleet_reservations")

        def q(text: str) -> sql.Composed:
            return sql.SQL(text).format(
                table=table, index=sql.Identifier("fleet_reservations_granted")
            )

        columns = (
            "action_id, scope, target, at, quota_limit, quota_window, distinct_targets, reason,"
            " seen, sentence"
        )
        self.schema = [
            q(
                "CREATE TABLE IF NOT EXISTS {table} ("
                " action_id text PRIMARY KEY, scope text NOT NULL, target text NOT NULL,"
                " at timestamptz NOT NULL, quota_limit integer NOT NULL,"
                " quota_window interval NOT NULL, distinct_targets boolean NOT NULL,"
                " reason text NOT NULL,"
                " seen integer NOT NULL, sentence text NOT NULL, granted boolean NOT NULL,"
                " partition integer, owner text NOT NULL,"
                " reserved_at timestamptz NOT NULL DEFAULT now())"
            ),
            q("CREATE INDEX IF NOT EXISTS {index} ON {table} (scope, at) WHERE granted"),
        ]
        self.lock = sql.SQL("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))")
        self.find = q(f"SELECT {columns} FROM {{table}} WHERE action_id = %s")
        self.around = q(
            "SELECT at, target FROM {table} WHERE scope = %s AND granted"
            " AND at > %s AND at < %s ORDER BY at"
        )
        self.insert = q(
            f"INSERT INTO {{table}} ({columns}, granted, partition, owner) VALUES ("
            "%(action_id)s, %(scope)s, %(target)s, %(at)s, %(limit)s, %(window)s,"
            " %(distinct_targets)s, %(reason)s, %(seen)s, %(sentence)s, %(granted)s,"
            " %(partition)s, %(owner)s)"
        )
        self.release = q("DELETE FROM {table} WHERE action_id = %s")
        self.count = q(
            "SELECT count(*), count(DISTINCT target) FROM {table}"
            " WHERE scope = %s AND granted AND at > %s AND at <= %s"
        )
        self.forget = q("DELETE FROM {table} WHERE at < %s")


def _stored(row: tuple[Any, ...]) -> Reservation:
    action_id, scope, target, at, limit, window, distinct, reason, seen, sentence = row
    return Reservation(
        str(action_id),
        str(scope),
        str(target),
        _utc(at),
        int(limit),
        window,
        bool(distinct),
        QuotaReason(reason),
        int(seen),
        str(sentence),
    )


class Quota:
    """Fleet-wide counts for one manager, `owner`, on one connection (threads take turns)."""

    def __init__(
        self,
        url: str | StoreURL,
        owner: str,
        *,
        statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT_S,
    ) -> None:
        self.url = parse_store_url(url) if isinstance(url, str) else url
        self.owner = owner
        self._q = _Statements(self.url)
        self._link = LazyConnection(
            self.url, schema=self._q.schema, shared=True, statement_timeout=statement_timeout
        )

    def reserve(
        self,
        scope: str,
        limit: int,
        window: timedelta,
        action_id: str,
        target: str,
        at: datetime,
        *,
        distinct_targets: bool = False,
        partition: int | None = None,
    ) -> Reservation:
        """A slot for `action_id` on `target` at event time `at` in `scope`, or a refusal.

        At most `limit` granted actions (with `distinct_targets`, distinct targets) fall in any
        `window` fleet-wide. The verdict is recorded; reserving the same `action_id` again
        returns it unchanged. Raises `QuotaConflict` when the id was reserved for another scope,
        target or time, and `DatabaseUnavailable` when the outcome is unknown (retry)."""
        if limit < 0 or window <= timedelta(0):
            raise ValueError(f"scope {scope}: limit {limit} and window {window} make no quota")
        at = _utc(at)
        with self._link.using() as conn, conn.transaction():
            # queued per scope (in this schema): whoever holds it counts every earlier grant
            conn.execute(self._q.lock, (f"onduty-quota:{self.url.schema}:{scope}",))
            found = conn.execute(self._q.find, (action_id,)).fetchone()
            if found is not None:
                return self._same_action(_stored(found), scope, target, at)
            granted = [
                (_utc(time), str(name))
                for time, name in conn.execute(self._q.around, (scope, at - window, at + window))
            ]
            reason, seen = judge(granted, at, window, target, limit, distinct_targets)
            judged = Reservation(
                action_id, scope, target, at, limit, window, distinct_targets, reason, seen, ""
            )
            reservation = replace(judged, sentence=_sentence(judged))
            row = {
                **asdict(reservation),
                "reason": reservation.reason.value,  # psycopg would store an enum's name
                "granted": reservation.granted,
                "partition": partition,
                "owner": self.owner,
            }
            try:
                conn.execute(self._q.insert, row)
            except psycopg.errors.UniqueViolation as error:
                # reserved meanwhile under another scope's lock: only a different action can be
                raise QuotaConflict(
                    f"action {action_id} is being reserved in another scope than {scope}"
                ) from error
        return reservation

    @staticmethod
    def _same_action(stored: Reservation, scope: str, target: str, at: datetime) -> Reservation:
        if (stored.scope, stored.target, stored.at) != (scope, target, at):
            raise QuotaConflict(
                f"action {stored.action_id} was reserved for {stored.target} in scope "
                f"{stored.scope} at {stored.at.isoformat()}, not for {target} in scope {scope} "
                f"at {at.isoformat()}"
            )
        return stored

    def release(self, action_id: str) -> bool:
        """Give back the slot of an action that will not run (another guardrail refused it, or
        it never started); whether one was held. Its verdict is forgotten too: reserving the id
        again judges it afresh."""
        with self._link.using() as conn:
            return conn.execute(self._q.release, (action_id,)).rowcount > 0

    def count(
        self, scope: str, window: timedelta, at: datetime, *, distinct_targets: bool = False
    ) -> int:
        """Granted actions (or distinct targets) of `scope` in the window `(at - window, at]`."""
        at = _utc(at)
        with self._link.using() as conn:
            row = conn.execute(self._q.count, (scope, at - window, at)).fetchone()
        assert row is not None  # an aggregate always answers
        return int(row[1] if distinct_targets else row[0])

    def forget(self, before: datetime) -> int:
        """Drop the verdicts on actions before `before` (housekeeping, once no window and no
        retry reaches back that far); how many."""
        with self._link.using() as conn:
            return conn.execute(self._q.forget, (_utc(before),)).rowcount

    def close(self) -> None:
        self._link.close()

    def __enter__(self) -> Quota:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
