"""Snapshots of a fleet node's read models, as of a cursor per partition: used only while
every cursor still names the event it was taken at."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg import sql

from onduty.cells import read_snapshots
from onduty.cells.follower import Follower
from onduty.log.fleet_view import FleetView
from onduty.log.postgres import PostgresEventLog, connect
from onduty.readmodel.models import ReadModels
from tests.log.contract import signals
from tests.postgres import SERVER, Schemas, store_url

pytestmark = pytest.mark.usefixtures("postgres_server")


@pytest.fixture
def view(tmp_path: Path) -> Iterator[FleetView]:
    schemas = Schemas()
    url = store_url(schemas.name(tmp_path))
    with PostgresEventLog(url, 0) as zero, zero.sibling(1) as one:
        zero.append(signals(0, 5))
        one.append(signals(10, 3))
    fleet = FleetView(url)
    yield fleet
    fleet.close()
    schemas.drop()


def followed(view: FleetView) -> tuple[ReadModels, Follower]:
    read = ReadModels()
    follower = Follower(view, read.feed)
    follower.catch_up()
    return read, follower


def test_a_snapshot_restores_the_read_models_and_their_cursors(view: FleetView) -> None:
    read, follower = followed(view)
    read_snapshots.save(view, read.state(), follower.cursors)
    again = ReadModels()
    cursors = read_snapshots.restore(view, again)
    assert cursors == follower.cursors and cursors[0][0] == 5 and cursors[1][0] == 3
    assert again.state() == read.state()
    assert Follower(view, again.feed, cursors=cursors).catch_up() == 0  # nothing to read


def test_a_snapshot_of_a_rewritten_partition_is_refused(view: FleetView) -> None:
    read, follower = followed(view)
    read_snapshots.save(view, read.state(), follower.cursors)
    with connect(SERVER, autocommit=True) as conn:
        conn.execute(
            sql.SQL("UPDATE {}.events SET hash = %s WHERE partition = 1 AND seq = 3").format(
                sql.Identifier(view.schema)
            ),
            ("0" * 64,),
        )
    assert read_snapshots.restore(view, ReadModels()) == {}  # fold every partition instead
