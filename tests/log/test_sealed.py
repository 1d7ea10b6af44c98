"""Sealed archives: old events moved out of the live store, then verified, replayed, read and
started from as one log, as a user does it (`onduty log seal`, `audit verify`, `replay`,
`serve`'s retention); a missing or altered archive is named.

The log is the benchmarks' realistic history (faults, runbooks, approvals, chronic alerts
re-sent, so most signals are stored as repeats of a base event)."""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from onduty.act import ActuatorRegistry
from onduty.api import build_app
from onduty.bench._workload import bench_config_document
from onduty.config import Config
from onduty.log.checkpoints import load_or_create_key
from onduty.log.sealed import SUFFIX
from onduty.log.sqlite import SQLiteEventLog
from onduty.manager import Manager
from onduty.runtime import VirtualClock
from onduty.service import Service
from tests.histories import write_history
from tests.run_cli import onduty

HISTORY_EVENTS = 6_000


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Config]:
    path = tmp_path_factory.mktemp("sealed") / "log.db"
    config = write_history(path, HISTORY_EVENTS, seed=11)
    load_or_create_key(path.with_name(path.name + ".checkpoint.key"))  # as serve makes it
    return path, config


@pytest.fixture(scope="module")
def reference(history: tuple[Path, Config]) -> list[tuple[int, str, dict[str, Any]]]:
    """Every event of the history as it reads before any seal."""
    return recorded(history[0])


def copy_of(history: tuple[Path, Config], folder: Path) -> Path:
    source = history[0]
    for companion in source.parent.glob(source.name + "*"):
        if companion.is_file():
            shutil.copy(companion, folder / companion.name)
    return folder / source.name


def recorded(path: Path) -> list[tuple[int, str, dict[str, Any]]]:
    with SQLiteEventLog(str(path)) as log:
        return [(e.seq, e.hash, e.model_dump(mode="json")) for e in log.read()]


def last_stamp(path: Path) -> datetime:
    """The time of the log's last event: the clock a service on it starts from."""
    with SQLiteEventLog(str(path)) as log:
        return next(log.read(after=log.head()[0] - 1)).ts


def service_on(path: Path, config: Config) -> Service:
    """A service on the log at `path`, its clock at the log's last event."""
    clock = VirtualClock(last_stamp(path))
    return Service(config, str(path), actuators=ActuatorRegistry(), clock=clock)


def stamp_of(path: Path, seq: int) -> datetime:
    with SQLiteEventLog(str(path)) as log:
        return next(log.read(after=seq - 1, limit=1)).ts


def seal(path: Path, before: datetime) -> str:
    done = onduty("log", "seal", "--store", str(path), "--before", before.isoformat())
    assert done.returncode == 0, done.stderr
    return done.stdout


def archives_of(path: Path) -> list[Path]:
    return sorted(path.with_name(path.name + ".archives").glob("*" + SUFFIX))


def folded(path: Path) -> dict[str, Any]:
    """The core's state as the live store starts it (from its snapshot, plus what follows)."""
    with SQLiteEventLog(str(path)) as log:
        snapshot = max(log.snapshots(), key=lambda s: s.seq, default=None)
        manager = Manager.from_snapshot(snapshot.state) if snapshot else Manager()
        for event in log.read(after=snapshot.seq if snapshot else 0):
            manager.apply(event)
    return manager.snapshot()


@pytest.fixture
def sealed(history: tuple[Path, Config], tmp_path: Path) -> Path:
    """A copy of the history with its first third, then its second third, sealed away."""
    path = copy_of(history, tmp_path)
    assert "sealed" in seal(path, stamp_of(path, HISTORY_EVENTS // 3))
    assert "sealed" in seal(path, stamp_of(path, 2 * HISTORY_EVENTS // 3))
    return path


def test_archives_and_the_live_store_read_verify_and_replay_as_one_log(
    reference: list[tuple[int, str, dict[str, Any]]], sealed: Path
) -> None:
    assert recorded(sealed) == reference
    assert len(archives_of(sealed)) == 2
    with sqlite3.connect(sealed) as conn:
        live = conn.execute("SELECT min(seq) FROM events").fetchone()[0]
        sealed_bases = conn.execute("SELECT count(*) FROM repeats WHERE base < ?", (live,))
        assert sealed_bases.fetchone()[0] == 0  # repeats of sealed events were stored in full
    assert 2 * HISTORY_EVENTS // 3 - 200 < live <= 2 * HISTORY_EVENTS // 3

    verified = onduty("audit", "verify", "--store", str(sealed))
    assert verified.returncode == 0, verified.stderr
    assert "chain intact" in verified.stdout
    assert "2 sealed archives" in verified.stdout
    assert "signatures checked" in verified.stdout

    replayed = onduty("replay", "--store", str(sealed))
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "same" in replayed.stdout


def test_a_backtest_reads_through_the_archives(
    history: tuple[Path, Config], sealed: Path, tmp_path: Path
) -> None:
    document = bench_config_document()
    document["policy"]["guardrails"] = []  # a candidate that differs from the recorded one
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(yaml.safe_dump(document))
    whole = onduty("replay", "--store", str(history[0]), "-c", str(candidate))
    through = onduty("replay", "--store", str(sealed), "-c", str(candidate))
    assert (through.returncode, through.stdout) == (whole.returncode, whole.stdout)


def test_the_live_store_starts_without_its_archives_and_open_incidents_stay_correct(
    history: tuple[Path, Config], sealed: Path
) -> None:
    expected = folded(history[0])
    assert expected["incidents"]  # incidents open at the seal point and at the head
    shutil.move(sealed.with_name(sealed.name + ".archives"), sealed.parent / "elsewhere")
    assert folded(sealed) == expected
    for path in (history[0], sealed):  # the same events: the same last stamp
        service = service_on(path, history[1])
        service.prepare()
        assert service.runtime is not None
        assert service.runtime.manager.snapshot() == expected
        client = TestClient(build_app(service), base_url="http://127.0.0.1")
        listed = client.get("/api/v1/incidents", params={"status": "open"})
        assert listed.status_code == 200
        if path == history[0]:
            open_before = listed.json()
        else:
            assert listed.json() == open_before
        assert service.log is not None
        service.log.close()


def test_a_missing_archive_is_named(sealed: Path) -> None:
    first = archives_of(sealed)[0]
    first.unlink()
    verified = onduty("audit", "verify", "--store", str(sealed))
    assert verified.returncode == 1
    assert first.name in verified.stderr and "missing" in verified.stderr
    replayed = onduty("replay", "--store", str(sealed))
    assert replayed.returncode != 0
    assert first.name in replayed.stderr
    listed = onduty("log", "archives", "--store", str(sealed))
    assert listed.returncode == 1 and "missing" in listed.stdout


def test_an_altered_archive_is_named(sealed: Path) -> None:
    second = archives_of(sealed)[1]
    data = bytearray(second.read_bytes())
    data[len(data) // 3] ^= 0x01
    second.write_bytes(bytes(data))
    verified = onduty("audit", "verify", "--store", str(sealed))
    assert verified.returncode == 1
    assert second.name in verified.stderr and "altered" in verified.stderr


def test_a_seal_before_the_first_event_seals_nothing(
    history: tuple[Path, Config], tmp_path: Path
) -> None:
    path = copy_of(history, tmp_path)
    earliest = stamp_of(path, 1) - timedelta(days=1)
    assert "nothing to seal" in seal(path, earliest)
    assert archives_of(path) == []
    bad = onduty("log", "seal", "--store", str(path), "--before", "last tuesday")
    assert bad.returncode == 2 and "--before" in bad.stderr


def test_serve_seals_by_its_retention_section_and_keeps_serving(
    history: tuple[Path, Config], tmp_path: Path
) -> None:
    path = copy_of(history, tmp_path)
    config = history[1].model_copy(
        update={
            "retention": history[1].retention.model_copy(
                update={"keep": timedelta(minutes=45), "min_events": 100}
            )
        }
    )
    service = service_on(path, config)
    service.prepare()
    assert service.retention is not None and service.log is not None
    sealed = service.retention.run_once()
    assert sealed is not None and sealed.count > 100
    assert sealed.checkpoint is not None  # signed with the key serve checkpoints with
    assert service.log.origin()[0] == sealed.entry.last
    client = TestClient(build_app(service), base_url="http://127.0.0.1")
    listed = client.get("/api/v1/incidents", params={"status": "all"}).json()
    assert listed
    service.log.close()
    assert recorded(path) == recorded(history[0])


def _wait_for(process: subprocess.Popen[bytes], ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 60
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.0005)


# (what to wait for, then how long more): starting up, writing the archive, the archive in
# place but the store not yet told, and just after
KILL_POINTS = [
    ("spawned", 0.3),
    ("writing", 0.0),
    ("archived", 0.0),
    ("archived", 0.01),
    ("archived", 0.05),
    ("archived", 0.3),
]


@pytest.mark.parametrize(("moment", "more"), KILL_POINTS)
def test_a_seal_killed_at_any_moment_loses_nothing(
    history: tuple[Path, Config],
    reference: list[tuple[int, str, dict[str, Any]]],
    tmp_path: Path,
    moment: str,
    more: float,
) -> None:
    """`onduty log seal` killed (SIGKILL) at many moments: either nothing was sealed or the
    archive is complete and recorded; the log reads and verifies as before, and sealing again
    finishes the job."""
    path = copy_of(history, tmp_path)
    before = stamp_of(path, HISTORY_EVENTS // 2)
    folder = path.with_name(path.name + ".archives")
    seen = {
        "spawned": lambda: True,
        "writing": lambda: any(folder.glob("*.partial")),
        "archived": lambda: any(folder.glob("*" + SUFFIX)),
    }[moment]
    command = [sys.executable, "-m", "onduty", "log", "seal", "--store", str(path)]
    process = subprocess.Popen([*command, "--before", before.isoformat()])
    _wait_for(process, seen)
    time.sleep(more)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert recorded(path) == reference
    verified = onduty("audit", "verify", "--store", str(path))
    assert verified.returncode == 0, verified.stderr
    again = seal(path, before)  # finishes what was cut off, or finds it done
    assert "sealed" in again or "nothing to seal" in again
    assert recorded(path) == reference
    assert onduty("audit", "verify", "--store", str(path)).returncode == 0


def test_a_seal_by_hand_is_refused_while_serve_runs_on_the_store(
    history: tuple[Path, Config], tmp_path: Path
) -> None:
    path = copy_of(history, tmp_path)
    now = last_stamp(path)
    service = service_on(path, history[1])
    service.prepare()
    refused = onduty("log", "seal", "--store", str(path), "--before", now.isoformat())
    assert refused.returncode == 2
    assert "`onduty serve` is running on" in refused.stderr and "retention" in refused.stderr
    assert archives_of(path) == []
    service.stop()
    assert "sealed" in seal(path, now)


def test_the_api_and_the_console_audit_the_checkpoints_and_the_archives(
    history: tuple[Path, Config], sealed: Path
) -> None:
    service = service_on(sealed, history[1])
    service.start()
    try:
        assert service.checkpointer is not None
        signed = service.checkpointer.checkpoint_now()
        assert signed is not None
        client = TestClient(build_app(service), base_url="http://127.0.0.1")
        report = client.get("/api/v1/audit/verify").json()
        assert report["intact"] is True, report
        assert [a["name"] for a in report["archives"]] == [p.name for p in archives_of(sealed)]
        assert report["checkpoints"]["latest"]["seq"] == signed.seq
        assert report["checkpoints"]["signatures_checked"] is True
        assert report["findings"] == []
        page = client.get("/audit")
        assert page.status_code == 200
        assert "2 sealed archives walked with the live store" in page.text
        assert f"the latest at event #{signed.seq}" in page.text
        archives_of(sealed)[0].unlink()
        report = client.get("/api/v1/audit/verify").json()
        assert report["intact"] is False and "missing" in report["reason"]
    finally:
        service.stop()
