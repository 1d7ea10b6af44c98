"""Every partition of a PostgreSQL store read as one log, as a fleet node's read models and
console read it."""

from __future__ import annotations

from pathlib import Path

import pytest

from onduty.events import GENESIS_HASH
from onduty.log.fleet_view import FleetView, place_of, position
from onduty.log.postgres import PostgresEventLog
from tests.log.contract import signal
from tests.postgres import Schemas, store_url

pytestmark = pytest.mark.usefixtures("postgres_server")


@pytest.fixture
def url(schemas: Schemas, tmp_path: Path) -> str:
    return store_url(schemas.name(tmp_path))


def fill(url: str) -> dict[int, list[int]]:
    """Three partitions: 0 with 3 events, 2 with 5 (two in stream inc:x), 7 with 1."""
    counts = {0: 3, 2: 5, 7: 1}
    with PostgresEventLog(url, 0) as first:
        for partition, count in counts.items():
            log = first.sibling(partition)
            try:
                log.append(
                    [
                        signal(100 * partition + i, "inc:x" if partition == 2 and i % 2 else "a")
                        for i in range(count)
                    ]
                )
            finally:
                log.close()
    return {p: list(range(1, c + 1)) for p, c in counts.items()}


def test_positions_name_a_partition_and_a_seq() -> None:
    assert place_of(position(7, 12)) == (7, 12)
    assert position(0, 1) > position(4095, 0)


def test_read_gives_every_partition_in_position_order(url: str) -> None:
    fill(url)
    view = FleetView(url)
    try:
        events = list(view.read())
        assert [place_of(e.seq) for e in events] == [
            (0, 1), (2, 1), (7, 1), (0, 2), (2, 2), (0, 3), (2, 3), (2, 4), (2, 5),
        ]  # fmt: skip
        assert list(view.read(after=events[3].seq, limit=2)) == events[4:6]
        assert view.read_seqs([events[8].seq, events[0].seq, 99]) == [events[0], events[8]]
        assert view.head() == (position(2, 5), events[-1].hash)
        assert view.count() == 9
        assert view.tail(2, 3, 10) == events[7:9]
        assert view.verify() is None
    finally:
        view.close()


def test_read_stream_finds_a_stream_in_its_partition(url: str) -> None:
    fill(url)
    view = FleetView(url)
    try:
        mine = list(view.read_stream("inc:x"))
        assert [place_of(e.seq) for e in mine] == [(2, 2), (2, 4)]
        assert list(view.read_stream("inc:x", newest_first=True)) == mine[::-1]
        assert list(view.read_stream("inc:x", after=mine[0].seq)) == mine[1:]
        assert list(view.read_stream("inc:x", before=mine[1].seq)) == mine[:1]
    finally:
        view.close()


def test_an_empty_store_reads_empty(url: str) -> None:
    view = FleetView(url)
    try:
        assert view.head() == (0, GENESIS_HASH) and list(view.read()) == []
    finally:
        view.close()


def test_verify_names_the_partition_that_breaks(url: str) -> None:
    fill(url)
    view = FleetView(url)
    try:
        with PostgresEventLog(url, 0) as log, log._reading() as conn:
            conn.execute(f"DELETE FROM {view.schema}.events WHERE partition = 7")
            conn.execute(
                f"UPDATE {view.schema}.events SET ts = 'x' WHERE partition = 2 AND seq = 4"
            )
        broken = view.verify()
        assert broken is not None and place_of(broken.seq) == (2, 4)
        assert broken.reason.startswith("partition 2 seq 4: ts column")
    finally:
        view.close()
