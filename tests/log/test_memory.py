"""The in-memory backend: the shared contract, then what is its own."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from onduty.log.base import EventLog, Snapshot
from onduty.log.memory import MemoryEventLog, MemoryStore
from tests.log.contract import EventLogContract, sealed_chain, signals


class CommitFailed(RuntimeError):
    """What the test hook raises in place of a commit."""


class TestMemoryEventLog(EventLogContract):
    commit_error = CommitFailed

    @pytest.fixture(autouse=True)
    def _stores(self) -> None:
        self.stores: dict[Path, MemoryStore] = {}

    def make_log(self, tmp_path: Path) -> EventLog:
        return MemoryEventLog(self.stores.setdefault(tmp_path, MemoryStore()))

    @contextmanager
    def failing_commits(self, log: EventLog, tmp_path: Path) -> Iterator[None]:
        def fail(rows: Sequence[object]) -> None:
            raise CommitFailed(f"injected failure of a commit of {len(rows)} events")

        store = self.stores[tmp_path]
        store.before_commit = fail
        try:
            yield
        finally:
            store.before_commit = None


def test_a_changed_body_is_found_by_verify() -> None:
    store = MemoryStore()
    log = MemoryEventLog(store)
    log.append(signals(0, 5))
    row = store.rows[2]
    store.rows[2] = type(row)(
        row.seq, row.id, row.type, row.stream, row.body.replace(b"fp-2", b"fp-9"), row.hash
    )
    broken = log.verify()
    assert broken is not None and broken.seq == 3
    assert "hash does not match the body" in broken.reason


def test_a_missing_event_is_found_by_verify() -> None:
    store = MemoryStore()
    log = MemoryEventLog(store)
    log.append(signals(0, 5))
    del store.rows[1]
    broken = log.verify()
    assert broken is not None and (broken.seq, broken.reason) == (2, "seq 2 is missing (found 3)")


def test_snapshots_are_pruned() -> None:
    log = MemoryEventLog(snapshot_keep=2)
    for seq in (1, 2, 3):
        log.save_snapshot(Snapshot(seq, {"seq": seq}))
    assert [s.seq for s in log.snapshots()] == [3, 2]


def test_a_closed_log_refuses_use_and_its_store_keeps_the_events() -> None:
    store = MemoryStore()
    log = MemoryEventLog(store)
    placed = log.append(signals(0, 2))
    log.close()
    with pytest.raises(RuntimeError, match="closed"):
        log.append(signals(2, 1))
    assert list(MemoryEventLog(store).read()) == placed


def test_append_async() -> None:
    log = MemoryEventLog()
    placed = asyncio.run(log.append_async(signals(0, 3)))
    assert placed == sealed_chain(signals(0, 3))
