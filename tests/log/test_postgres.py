"""The PostgreSQL backend against the real server: the shared contract, then partitions,
fencing, tampering and the store URL.

Every test gets schemas of its own (dropped afterwards); a server that cannot be reached fails
the tests, it never skips them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from onduty.events import GENESIS_HASH, Event
from onduty.log.base import EventLog, StoreError, open_log
from onduty.log.pg import redact
from onduty.log.postgres import Fenced, PostgresEventLog, PostgresURL, connect
from tests.log.contract import EventLogContract, sealed_chain, signal, signals
from tests.postgres import SERVER, Schemas, store_url

pytestmark = pytest.mark.usefixtures("postgres_server")


class TestPostgresEventLog(EventLogContract):
    commit_error = psycopg.Error

    @pytest.fixture(autouse=True)
    def _schemas(self, schemas: Schemas) -> None:
        self.schemas = schemas

    def make_log(self, tmp_path: Path) -> EventLog:
        return PostgresEventLog(store_url(self.schemas.name(tmp_path)))

    @contextmanager
    def failing_commits(self, log: EventLog, tmp_path: Path) -> Iterator[None]:
        schema = sql.Identifier(self.schemas.name(tmp_path))
        with connect(SERVER, autocommit=True) as conn:
            conn.execute(
                sql.SQL(
                    "CREATE FUNCTION {s}.refuse() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'injected failure'; END $$"
                ).format(s=schema)
            )
            conn.execute(
                sql.SQL(
                    "CREATE TRIGGER refuse BEFORE INSERT ON {s}.events "
                    "FOR EACH ROW EXECUTE FUNCTION {s}.refuse()"
                ).format(s=schema)
            )
        try:
            yield
        finally:
            with connect(SERVER, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP TRIGGER refuse ON {s}.events").format(s=schema))


# --------------------------------------------------------------------------- partitions


def test_partitions_are_chains_of_their_own(schemas: Schemas, tmp_path: Path) -> None:
    url = store_url(schemas.name(tmp_path))
    with PostgresEventLog(url, 0) as zero, PostgresEventLog(url, 1) as one:
        first = zero.append(signals(0, 3))
        second = one.append(signals(10, 2))
        assert first == sealed_chain(signals(0, 3))
        assert second == sealed_chain(signals(10, 2))  # seq 1 again, from the genesis
        assert list(zero.read()) == first and list(one.read()) == second
        assert zero.verify() is None and one.verify() is None
        assert zero.partitions() == {0: (3, first[-1].hash), 1: (2, second[-1].hash)}
    with PostgresEventLog(store_url(schemas.name(tmp_path), partition=1)) as reopened:
        assert reopened.partition == 1 and reopened.head() == (2, second[-1].hash)


def test_partitions_append_at_the_same_time(schemas: Schemas, tmp_path: Path) -> None:
    """One partition's open transaction does not hold up another's appends: the head lock is
    per partition."""
    url = store_url(schemas.name(tmp_path))
    with PostgresEventLog(url, 0) as zero, PostgresEventLog(url, 1) as one:
        zero.append(signals(0, 1))
        with connect(PostgresURL.parse(url).conninfo, autocommit=False) as holder:
            holder.execute(
                sql.SQL("SELECT * FROM {}.heads WHERE partition = 0 FOR UPDATE").format(
                    sql.Identifier(zero.schema)
                )
            )
            done = threading.Event()

            def append_then_note() -> None:
                zero.append(signals(1, 1))
                done.set()

            waiting = threading.Thread(target=append_then_note)
            waiting.start()
            started = time.monotonic()
            assert [e.seq for e in one.append(signals(5, 2))] == [1, 2]
            assert time.monotonic() - started < 2
            assert not done.is_set()  # partition 0 waits for the lock holder
            holder.rollback()
        waiting.join(timeout=10)
        assert done.is_set() and zero.head()[0] == 2


def test_two_handles_on_one_partition_keep_one_chain(schemas: Schemas, tmp_path: Path) -> None:
    """The head is read under its lock in every appending transaction, so a second writer
    continues the chain instead of forking it (a fence keeps that from happening in service)."""
    url = store_url(schemas.name(tmp_path))
    with PostgresEventLog(url) as first, PostgresEventLog(url) as second:
        a = first.append(signals(0, 2))
        b = second.append(signals(2, 2))
        c = first.append(signals(4, 1))
        assert [e.seq for e in a + b + c] == [1, 2, 3, 4, 5]
        assert b[0].prev_hash == a[-1].hash and c[0].prev_hash == b[-1].hash
        assert first.verify() is None


def test_a_fence_that_refuses_writes_nothing(schemas: Schemas, tmp_path: Path) -> None:
    owner = {"name": "manager-a"}

    def fence(conn: psycopg.Connection[Any]) -> str | None:
        return None if owner["name"] == "manager-a" else "partition 0 is leased to manager-b"

    with PostgresEventLog(store_url(schemas.name(tmp_path)), fence=fence) as log:
        placed = log.append(signals(0, 2))
        owner["name"] = "manager-b"
        with pytest.raises(Fenced, match="refused: partition 0 is leased to manager-b"):
            log.append(signals(2, 3))
        assert log.head() == (2, placed[-1].hash)
        assert list(log.read()) == placed
        owner["name"] = "manager-a"
        assert [e.seq for e in log.append(signals(5, 1))] == [3]


# --------------------------------------------------------------------------- tampering


def _tamper(log: PostgresEventLog, statement: str, *args: object) -> None:
    with connect(SERVER, autocommit=True) as conn:
        conn.execute(sql.SQL(statement).format(s=sql.Identifier(log.schema)), args)


@pytest.mark.parametrize(
    ("statement", "args", "seq", "reason"),
    [
        ("UPDATE {s}.events SET ts = %s WHERE seq = 3", ("2020-01-01T00:00:00Z",), 3, "ts column"),
        (
            "UPDATE {s}.events SET body = convert_to(replace(convert_from(body, 'UTF8'),"
            " 'HighLatency', 'LowLatency'), 'UTF8') WHERE seq = 4",
            (),
            4,
            "hash does not match",
        ),
        ("DELETE FROM {s}.events WHERE seq = 2", (), 2, "seq 2 is missing"),
        ("DELETE FROM {s}.events WHERE seq >= 5", (), 5, "cut from the end"),
        ("UPDATE {s}.events SET stream = 'elsewhere' WHERE seq = 5", (), 5, "stream column"),
    ],
)
def test_verify_finds_tampering(
    schemas: Schemas, tmp_path: Path, statement: str, args: tuple[object, ...], seq: int,
    reason: str,
) -> None:  # fmt: skip
    with PostgresEventLog(store_url(schemas.name(tmp_path))) as log:
        log.append(signals(0, 6))
        _tamper(log, statement, *args)
        broken = log.verify()
        assert broken is not None and broken.seq == seq and reason in broken.reason


def test_an_edited_partition_does_not_affect_another(schemas: Schemas, tmp_path: Path) -> None:
    url = store_url(schemas.name(tmp_path))
    with PostgresEventLog(url, 0) as zero, PostgresEventLog(url, 1) as one:
        zero.append(signals(0, 3))
        one.append(signals(0, 3))
        _tamper(zero, "DELETE FROM {s}.events WHERE partition = 0 AND seq = 2")
        assert zero.verify() is not None
        assert one.verify() is None


# --------------------------------------------------------------------------- the store URL


def test_open_log_opens_a_partition_by_url(schemas: Schemas, tmp_path: Path) -> None:
    url = store_url(schemas.name(tmp_path), partition=3)
    log = open_log(url)
    try:
        assert isinstance(log, PostgresEventLog) and log.partition == 3
        assert log.head() == (0, GENESIS_HASH)
        log.append([signal(1)])
    finally:
        log.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"{SERVER}?schema=bad-name", "schema 'bad-name' must be a plain identifier"),
        (f"{SERVER}?schema=x&partition=-1", "partition '-1' must be a whole number"),
        ("postgresql://127.0.0.1:9/test", "cannot open the event log postgresql://127.0.0.1:9"),
    ],
)
def test_a_store_url_that_cannot_work_names_why(url: str, message: str) -> None:
    started = time.monotonic()
    with pytest.raises(StoreError, match=message):
        open_log(url)
    assert time.monotonic() - started < 10


def test_a_password_never_reaches_a_message() -> None:
    url = "postgresql://onduty:s3cret@127.0.0.1:9/test"
    assert redact(url) == "postgresql://onduty:***@127.0.0.1:9/test"
    with pytest.raises(StoreError) as raised:
        open_log(url)
    assert "s3cret" not in str(raised.value)


def test_a_schema_holding_something_else_is_refused(schemas: Schemas, tmp_path: Path) -> None:
    schema = schemas.name(tmp_path)
    with PostgresEventLog(store_url(schema)):
        pass
    with connect(SERVER, autocommit=True) as conn:
        conn.execute(
            sql.SQL("UPDATE {}.meta SET value = 'other' WHERE key = 'format'").format(
                sql.Identifier(schema)
            )
        )
    with pytest.raises(StoreError, match="format 'other'"):
        PostgresEventLog(store_url(schema))


def test_a_large_batch_is_placed_whole(schemas: Schemas, tmp_path: Path) -> None:
    events: list[Event] = signals(0, 5_000)
    with PostgresEventLog(store_url(schemas.name(tmp_path))) as log:
        placed = log.append(events)
        assert placed == sealed_chain(events)
        assert log.verify() is None
