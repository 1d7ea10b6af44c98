"""The fleet node's checkpointer on the real PostgreSQL server: the key shared by every signing
node, when it signs, where each checkpoint goes and in which order, and what it refuses."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from onduty.auditing import audit_fleet_checkpoints
from onduty.config_checkpoints import CheckpointSettings
from onduty.fleet_checkpointer import (
    FleetCheckpointer,
    fleet_signing_key,
    open_fleet_checkpointer,
)
from onduty.log import StoreError
from onduty.log.checkpoints import CheckpointError, load_or_create_key, public_path
from onduty.log.fleet_checkpoint_store import CheckpointStore
from onduty.log.postgres import PostgresEventLog, connect
from tests import waiting
from tests.http_witness import http_witness
from tests.log.contract import signal
from tests.postgres import SERVER, Schemas, store_url

pytestmark = pytest.mark.usefixtures("postgres_server")


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    schemas = Schemas()
    yield store_url(schemas.name(tmp_path))
    schemas.drop()


def settings(folder: Path, **changes: Any) -> CheckpointSettings:
    fields = {"key": str(folder / "fleet.key"), "witness": str(folder / "witness"), "every": "1h"}
    return CheckpointSettings.model_validate({**fields, **changes})


def append(url: str, partition: int, count: int) -> None:
    with PostgresEventLog(url, partition) as log:
        start = log.head()[0]
        log.append([signal(1000 * partition + i) for i in range(start, start + count)])


def lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def rows(url: str) -> int:
    with CheckpointStore(url) as store:
        recorded, _ = store.recorded()
    return len(recorded)


def checkpointer(
    url: str, folder: Path, signer: str = "node-a", **options: Any
) -> FleetCheckpointer:
    made = open_fleet_checkpointer(
        settings(folder, **options.pop("settings", {})), url, signer=signer, **options
    )
    assert made is not None
    return made


def timed(
    url: str, folder: Path, now: Callable[[], datetime] | None = None, **changes: Any
) -> FleetCheckpointer:
    """A checkpointer that looks at the heads every 20 ms, on the clock `now` when given."""
    chosen = settings(folder, **changes)
    with CheckpointStore(url) as store:
        store.prepare()
        key = fleet_signing_key(chosen, store)
    clock = {"now": now} if now is not None else {}
    witness = folder / "witness"
    return FleetCheckpointer(chosen, url, key, signer="node-a", witness=witness, poll=0.02, **clock)


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    waiting.wait_for(condition, timeout, every=0.02)


# --------------------------------------------------------------------------- the key


def test_the_first_node_makes_the_key_and_says_so(
    url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="onduty"):
        first = checkpointer(url, tmp_path)
    first.stop()
    key = tmp_path / "fleet.key"
    assert "generated a new signing key" in caplog.text and str(key) in caplog.text
    assert "copy the key to every other node that signs" in caplog.text
    assert key.stat().st_mode & 0o777 == 0o600 and public_path(key).exists()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="onduty"):
        again = checkpointer(url, tmp_path)
    again.stop()
    assert again.key.key_id == first.key.key_id and "generated" not in caplog.text


def test_a_second_node_without_the_key_refuses(url: str, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    first = checkpointer(url, tmp_path / "a")
    first.stop()
    other = tmp_path / "b"
    other.mkdir()
    with pytest.raises(CheckpointError) as refused:
        open_fleet_checkpointer(settings(other), url, signer="node-b")
    message = str(refused.value)
    assert f"checkpoints.key {other / 'fleet.key'}: no such file" in message
    assert f"already has a signing key (key id {first.key.key_id}), made on another node" in message
    assert not (other / "fleet.key").exists()
    shutil.copy(tmp_path / "a" / "fleet.key", other / "fleet.key")  # what the message asks
    second = checkpointer(url, other, signer="node-b")
    second.stop()
    assert second.key.key_id == first.key.key_id


def test_nodes_starting_at_once_in_one_folder_share_the_key_one_of_them_made(
    url: str, tmp_path: Path
) -> None:
    """Managers of one host start together: each finds no key file, one makes it while the
    others wait their turn, and they then use that file instead of refusing."""
    with CheckpointStore(url) as store:
        store.prepare()
    nodes = 4
    start = threading.Barrier(nodes)

    def start_node() -> str:
        with CheckpointStore(url) as store:
            start.wait()
            return fleet_signing_key(settings(tmp_path), store).key_id

    with ThreadPoolExecutor(nodes) as pool:
        key_ids = list(pool.map(lambda _: start_node(), range(nodes)))
    assert len(set(key_ids)) == 1
    assert load_or_create_key(tmp_path / "fleet.key")[0].key_id == key_ids[0]


def test_a_key_from_a_secret_reference(url: str, tmp_path: Path) -> None:
    first = checkpointer(url, tmp_path)
    first.stop()
    referenced = settings(tmp_path, key=f"${{FILE:{tmp_path / 'fleet.key'}}}")
    with CheckpointStore(url) as store:
        assert fleet_signing_key(referenced, store).key_id == first.key.key_id


def test_another_key_on_a_node_is_warned_about(
    url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    checkpointer(url, tmp_path).stop()
    other = tmp_path / "b"
    other.mkdir()
    load_or_create_key(other / "fleet.key")  # another key, made by hand on that node
    with caplog.at_level(logging.WARNING, logger="onduty"):
        checkpointer(url, other).stop()
    assert "the store's first key was" in caplog.text and "both public keys" in caplog.text


# --------------------------------------------------------------------------- what it refuses


def test_checkpoints_are_off_until_key_and_witness_are_set(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="onduty"):
        assert open_fleet_checkpointer(CheckpointSettings(), url, signer="n") is None
    assert "none are signed for the PostgreSQL store until checkpoints.key" in caplog.text
    off = CheckpointSettings(enabled=False, key="k", witness="w")
    assert open_fleet_checkpointer(off, url, signer="n") is None


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"witness": None}, "checkpoints.witness: a PostgreSQL store has no file"),
        ({"key": None}, "checkpoints.key: a PostgreSQL store has no file"),
        ({"witness_store": "sqlite:///x.db"}, "checkpoints.witness_store: a second event log"),
        ({"witness": "/nowhere/at/all/witness"}, "its folder does not exist"),
    ],
)
def test_settings_a_fleet_cannot_use_are_named(
    url: str, tmp_path: Path, changes: dict[str, Any], says: str
) -> None:
    with pytest.raises(CheckpointError, match=says):
        open_fleet_checkpointer(settings(tmp_path, **changes), url, signer="n")


def test_a_store_that_contradicts_itself_is_not_signed(
    url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    append(url, 0, 3)
    node = checkpointer(url, tmp_path)
    with connect(SERVER, autocommit=True) as conn:
        schema = url.rsplit("schema=", 1)[1]
        conn.execute(f"UPDATE {schema}.heads SET hash = 'x' WHERE partition = 0")
    with caplog.at_level(logging.ERROR, logger="onduty"):
        assert node.checkpoint_now() is None
        assert node.checkpoint_now() is None
    node.stop()
    assert caplog.text.count("not signing a store that contradicts itself") == 1
    assert "partition 0's head row says seq 3 with hash x…" in caplog.text
    assert lines(tmp_path / "witness") == []


# --------------------------------------------------------------------------- when it signs


def test_it_signs_once_the_heads_moved_every_events(url: str, tmp_path: Path) -> None:
    node = timed(url, tmp_path, every_events=5)
    node.start()
    try:
        append(url, 0, 2)
        append(url, 1, 2)
        time.sleep(0.3)
        assert lines(tmp_path / "witness") == []  # 4 events: not yet
        append(url, 2, 1)
        wait_for(lambda: len(lines(tmp_path / "witness")) == 1)
        [line] = lines(tmp_path / "witness")
        assert [head[:2] for head in line["partitions"]] == [[0, 2], [1, 2], [2, 1]]
        wait_for(lambda: rows(url) == 1)  # the witness first, then the table
    finally:
        node.stop()
    assert len(lines(tmp_path / "witness")) == 1  # nothing new at the stop: nothing signed


def test_it_signs_what_moved_once_every_passed(url: str, tmp_path: Path) -> None:
    clock = [datetime(2026, 5, 1, tzinfo=UTC)]
    node = timed(url, tmp_path, now=lambda: clock[0])
    node.start()
    try:
        append(url, 3, 1)
        time.sleep(0.2)
        assert lines(tmp_path / "witness") == []
        clock[0] += timedelta(hours=1)
        wait_for(lambda: len(lines(tmp_path / "witness")) == 1)
        assert lines(tmp_path / "witness")[0]["signed_at"] == "2026-05-01T01:00:00Z"
    finally:
        node.stop()


def test_a_stop_signs_what_is_new_and_a_restart_signs_nothing_again(
    url: str, tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    node = checkpointer(url, tmp_path, registry=registry)
    append(url, 0, 4)
    append(url, 5, 2)
    node.stop()
    assert len(lines(tmp_path / "witness")) == 1 and rows(url) == 1
    assert registry.get_sample_value("onduty_fleet_checkpoint_events") == 6
    checkpointer(url, tmp_path).stop()
    assert len(lines(tmp_path / "witness")) == 1 and rows(url) == 1


def test_close_stops_without_signing(url: str, tmp_path: Path) -> None:
    node = checkpointer(url, tmp_path)
    node.start()
    append(url, 0, 2)
    node.close()
    assert lines(tmp_path / "witness") == [] and rows(url) == 0


def test_two_nodes_sign_each_to_its_own_witness(url: str, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = checkpointer(url, tmp_path / "a", signer="node-a")
    shutil.copy(tmp_path / "a" / "fleet.key", tmp_path / "b" / "fleet.key")
    b = checkpointer(url, tmp_path / "b", signer="node-b")
    append(url, 0, 3)
    assert a.checkpoint_now() is not None and b.checkpoint_now() is not None
    append(url, 1, 3)
    a.stop()
    b.stop()
    assert rows(url) == 4
    public = [public_path(tmp_path / "a" / "fleet.key")]
    for node in ("a", "b"):
        audited = audit_fleet_checkpoints(
            url, None, witness=tmp_path / node / "witness", public_keys=public
        )
        assert audited.findings == [] and audited.report.in_witness == 2
        assert audited.report.in_store == 4 and audited.report.uncovered == 0


# --------------------------------------------------------------------------- where it goes


def test_a_checkpoint_the_table_did_not_take_is_recorded_later(
    url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = checkpointer(url, tmp_path)
    append(url, 0, 2)
    record = node.store.record

    def away(checkpoint: Any) -> None:
        raise StoreError("the database went away")

    monkeypatch.setattr(node.store, "record", away)
    with caplog.at_level(logging.WARNING, logger="onduty"):
        assert node.checkpoint_now() is not None
    assert "is recorded later: the database went away" in caplog.text
    assert len(lines(tmp_path / "witness")) == 1 and rows(url) == 0
    monkeypatch.setattr(node.store, "record", record)
    assert node.checkpoint_now() is None  # nothing new to sign, but the table catches up
    assert rows(url) == 1
    node.stop()


def test_a_witness_removed_while_signing_is_said(
    url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node = checkpointer(url, tmp_path)
    append(url, 0, 1)
    assert node.checkpoint_now() is not None
    (tmp_path / "witness").unlink()
    append(url, 0, 1)
    with caplog.at_level(logging.ERROR, logger="onduty"):
        assert node.checkpoint_now() is not None
    node.stop()
    assert f"the witness file {tmp_path / 'witness'} was removed or emptied" in caplog.text
    assert len(lines(tmp_path / "witness")) == 1


def test_checkpoints_also_go_to_an_http_witness(url: str, tmp_path: Path) -> None:
    with http_witness() as witness:
        node = checkpointer(url, tmp_path, settings={"witness_url": witness.url})
        append(url, 0, 2)
        signed = node.checkpoint_now()
        node.stop()
    assert signed is not None and witness.received == [signed.line()]
