"""Snapshots encoded by a forked child: the core thread only forks, the child sends the state
as it was when it forked, and what is stored is exactly what the core thread would have stored
itself; a child that dies or is replaced leaves no snapshot and no zombie behind."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from onduty.act import ActuatorRegistry
from onduty.events import SignalReceived
from onduty.log import open_log, verify_snapshots
from onduty.runtime import Runtime, VirtualClock
from onduty.snapshots import FORKS, SnapshotWriter, _Forked, bind
from onduty.state import State
from tests.core.helpers import T0, config

pytestmark = pytest.mark.skipif(not FORKS, reason="this platform cannot fork")


def _runtime(tmp_path: Path, signals: int) -> Runtime:
    runtime, _ = Runtime.open(
        open_log(str(tmp_path / "events.db")), VirtualClock(T0), ActuatorRegistry(),
        config=config(correlation={"group_by": ["instance"]}),
    )  # fmt: skip
    for n in range(signals):
        runtime.submit(
            SignalReceived(
                source="test", fingerprint=f"fp-{n}", status="firing",
                labels={"alertname": "Down", "instance": f"web-{n}", "ratio": "0.5"},
            )
        )  # fmt: skip
    return runtime


def test_the_child_sends_what_the_core_thread_would_have_stored(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, 40)
    state = runtime.manager.state
    seq, event_hash = runtime.log.head()
    expected = bind(seq, event_hash, state.encode(), state.encode_canonical())
    forked = _Forked(seq, event_hash, state).collect()
    assert forked is not None
    assert (forked.seq, forked.event_hash, forked.digest) == (seq, event_hash, expected.digest)
    assert forked.encoded == expected.encoded


def test_the_child_encodes_the_state_as_it_was_when_it_forked(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, 5)
    seq, event_hash = runtime.log.head()
    before = runtime.manager.snapshot()
    job = _Forked(seq, event_hash, runtime.manager.state)
    runtime.submit(SignalReceived(source="test", fingerprint="later", status="firing",
                                  labels={"instance": "web-later"}))  # fmt: skip
    snapshot = job.collect()
    assert snapshot is not None and snapshot.encoded is not None
    assert "web-later" not in snapshot.encoded.decode()
    assert runtime.manager.snapshot() != before  # the parent went on meanwhile


def test_a_child_that_dies_leaves_no_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = _runtime(tmp_path, 5)
    seq, event_hash = runtime.log.head()
    monkeypatch.setattr(State, "encode", lambda self: time.sleep(60))  # the child never sends
    job = _Forked(seq, event_hash, runtime.manager.state)
    os.kill(job.pid, signal.SIGKILL)
    assert job.collect() is None
    with pytest.raises(ChildProcessError):
        os.waitpid(job.pid, os.WNOHANG)  # reaped: no zombie


def test_a_child_that_fails_leaves_no_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = _runtime(tmp_path, 5)
    seq, event_hash = runtime.log.head()

    def fail(self: State) -> bytes:
        raise MemoryError

    monkeypatch.setattr(State, "encode", fail)
    assert _Forked(seq, event_hash, runtime.manager.state).collect() is None


def test_a_hung_child_is_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = _runtime(tmp_path, 5)
    seq, event_hash = runtime.log.head()

    def hang(self: State) -> bytes:
        time.sleep(60)  # in the child: stopped below long before this ends
        return b"{}"

    # hung before it sends anything (a small state is otherwise sent before SIGSTOP lands)
    monkeypatch.setattr(State, "encode", hang)
    job = _Forked(seq, event_hash, runtime.manager.state)
    os.kill(job.pid, signal.SIGSTOP)
    assert job.collect(timeout=0.2) is None
    with pytest.raises(ChildProcessError):
        os.waitpid(job.pid, os.WNOHANG)


def test_a_replaced_snapshot_is_stopped_and_the_newest_is_stored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = _runtime(tmp_path, 30)
    forked: list[int] = []
    original = _Forked.__init__

    def remember(job: _Forked, *args: Any) -> None:
        original(job, *args)
        forked.append(job.pid)

    monkeypatch.setattr(_Forked, "__init__", remember)
    writer = SnapshotWriter(runtime.log, fork=True)
    state = runtime.manager.state
    seq, event_hash = runtime.log.head()
    with caplog.at_level(logging.ERROR, logger="onduty.snapshots"):
        for _ in range(5):
            writer.submit(seq, event_hash, state)
        writer.wait()
    newest = runtime.log.latest_snapshot()
    assert newest is not None and newest.seq == seq
    assert verify_snapshots(runtime.log) == []
    assert len(forked) == 5
    for pid in forked:  # every child reaped, the replaced ones too
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
