"""Snapshots are bound to the chain. A stored snapshot that was edited, that belongs to another
chain, that claims a seq beyond the head, or that an older version wrote without a binding is
discarded at start-up (a `SnapshotDiscarded` event says so), the state is folded from the log
instead, and `onduty audit verify` names it."""

from __future__ import annotations

import dataclasses
import sqlite3
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from onduty.events import SignalReceived
from onduty.log import EventLog, Snapshot, open_log
from onduty.log.base import snapshot_digest
from onduty.manager import Manager
from onduty.runtime import RecoveryReport, Runtime, VirtualClock
from onduty.snapshots import bind
from onduty.state import FLOAT_FIELDS, SignalState, State
from tests.core.helpers import T0, config
from tests.integration.server import Server
from tests.run_cli import onduty
from tests.test_runtime import RecordingActuator, down, registry

CFG = config()  # "db" needs a human's approval; "web" may act on its own


def db_down() -> SignalReceived:
    return SignalReceived(
        source="test",
        fingerprint="down:db-1",
        status="firing",
        labels={"alertname": "InstanceDown", "instance": "db-1", "service": "db"},
    )


def first_run(store: Path, instance: str = "web-1", snapshot_every: int = 1000) -> int:
    """A short history on the web service, then a snapshot at the head, as a stop makes it.
    Returns the snapshot's seq."""
    log = open_log(str(store))
    try:
        clock = VirtualClock(T0)
        runtime, _ = Runtime.open(
            log, clock, registry(RecordingActuator()), config=CFG, snapshot_every=snapshot_every
        )
        runtime.submit(down(instance))
        clock.advance_to(T0 + timedelta(seconds=30))
        runtime.submit(down(instance, "resolved"))
        runtime.snapshot_now()
        return log.head()[0]
    finally:
        log.close()


@contextmanager
def restarted(store: Path) -> Iterator[tuple[Runtime, RecoveryReport, RecordingActuator]]:
    actuator = RecordingActuator()
    log = open_log(str(store))
    try:
        clock = VirtualClock(T0 + timedelta(minutes=5))
        runtime, report = Runtime.open(log, clock, registry(actuator), config=CFG)
        yield runtime, report, actuator
    finally:
        log.close()


def stored_snapshot(store: Path, seq: int | None = None) -> tuple[int, bytes, str, str]:
    db = sqlite3.connect(store)
    try:
        where = "" if seq is None else f"WHERE seq = {int(seq)}"
        query = f"SELECT seq, state, event_hash, digest FROM snapshots {where} ORDER BY seq DESC"
        row = db.execute(query).fetchone()
        assert row is not None
        return row[0], bytes(row[1]), row[2], row[3]
    finally:
        db.close()


def write_snapshot(store: Path, seq: int, state: bytes, event_hash: str, digest: str) -> None:
    db = sqlite3.connect(store)
    try:
        with db:
            db.execute(
                "INSERT OR REPLACE INTO snapshots(seq, state, event_hash, digest) "
                "VALUES (?, ?, ?, ?)",
                (seq, state, event_hash, digest),
            )
    finally:
        db.close()


def edit_autonomy(store: Path) -> int:
    """What someone with the file does: raise db's autonomy in the snapshot from approve to act."""
    seq, state, event_hash, digest = stored_snapshot(store)
    assert state.count(b'"autonomy":"approve"') == 1
    write_snapshot(store, seq, state.replace(b'"approve"', b'"act"'), event_hash, digest)
    return seq


def folded(log: EventLog) -> dict[str, object]:
    manager = Manager()
    for event in log.read():
        manager.apply(event)
    return manager.snapshot()


def discarded_events(log: EventLog) -> list[dict[str, object]]:
    return [event.data for event in log.read() if event.type == "SnapshotDiscarded"]


def test_an_edited_snapshot_is_discarded_and_the_service_still_needs_approval(
    tmp_path: Path,
) -> None:
    store = tmp_path / "events.db"
    first_run(store)
    seq = edit_autonomy(store)
    with restarted(store) as (runtime, report, actuator):
        runtime.submit(db_down())
        types = [event.type for event in runtime.log.read()]
        assert actuator.runs == [], "the edited snapshot let onduty act without approval"
        assert "ApprovalRequested" in types
        assert discarded_events(runtime.log) == [{"seq": seq, "reason": report.discarded[0].reason}]
        assert "does not match its digest" in report.discarded[0].reason
        assert report.snapshot_seq == 0  # folded from the start
        assert [s.seq for s in runtime.log.snapshots()] == []  # the bad one is gone
        assert runtime.log.verify() is None


def test_audit_verify_names_an_edited_snapshot(tmp_path: Path) -> None:
    store = tmp_path / "events.db"
    first_run(store)
    intact = onduty("audit", "verify", "--store", str(store))
    assert intact.returncode == 0, intact.stderr
    seq = edit_autonomy(store)
    result = onduty("audit", "verify", "--store", str(store))
    assert result.returncode == 1
    assert f"snapshot at seq {seq} is bad" in result.stderr
    assert "does not match its digest" in result.stderr
    assert "Traceback" not in result.stderr


def test_audit_verify_deep_finds_a_snapshot_forged_with_a_recomputed_digest(
    tmp_path: Path,
) -> None:
    """Whoever can write the file can recompute a digest; folding the log cannot be fooled."""
    store = tmp_path / "events.db"
    first_run(store)
    seq, state, event_hash, _ = stored_snapshot(store)
    forged = state.replace(b'"autonomy":"approve"', b'"autonomy":"act"')
    write_snapshot(
        store, seq, forged, event_hash, snapshot_digest(seq, event_hash, orjson.loads(forged))
    )
    assert onduty("audit", "verify", "--store", str(store)).returncode == 0  # bound, digest holds
    deep = onduty("audit", "verify", "--deep", "--store", str(store))
    assert deep.returncode == 1
    assert f"snapshot at seq {seq} is bad" in deep.stderr
    assert "not the log folded up to its seq" in deep.stderr
    write_snapshot(
        store, seq, state, event_hash, snapshot_digest(seq, event_hash, orjson.loads(state))
    )
    honest = onduty("audit", "verify", "--deep", "--store", str(store))
    assert honest.returncode == 0, honest.stderr
    assert "equal to the log folded up to their seq" in honest.stdout


def test_a_snapshot_from_another_chain_is_discarded(tmp_path: Path) -> None:
    """A snapshot with a valid digest, bound to an event hash that is not this chain's (as after
    the chain was rewritten, or copied from another store), is not used."""
    mine, other = tmp_path / "mine.db", tmp_path / "other.db"
    seq = first_run(mine, "web-1")
    assert first_run(other, "web-2") == seq
    write_snapshot(mine, *stored_snapshot(other))
    with restarted(mine) as (runtime, report, _):
        assert [p.seq for p in report.discarded] == [seq]
        assert f"the event at seq {seq} has hash" in report.discarded[0].reason
        assert report.snapshot_seq == 0
        assert runtime.manager.snapshot() == folded(runtime.log)
        assert {record.target for record in runtime.manager.state.history} == {"web-1"}


def test_a_snapshot_beyond_the_head_is_discarded(tmp_path: Path) -> None:
    store = tmp_path / "events.db"
    seq = first_run(store)
    _, state, event_hash, _ = stored_snapshot(store)
    ahead = seq + 50
    digest = snapshot_digest(ahead, event_hash, orjson.loads(state))
    write_snapshot(store, ahead, state, event_hash, digest)
    with restarted(store) as (runtime, report, _):
        assert [p.seq for p in report.discarded] == [ahead]
        assert "beyond the head" in report.discarded[0].reason
        assert report.snapshot_seq == seq  # the older, bound one is used
        assert discarded_events(runtime.log)[0]["seq"] == ahead


def test_the_newest_good_snapshot_is_used_when_a_newer_one_is_bad(tmp_path: Path) -> None:
    store = tmp_path / "events.db"
    first_run(store, snapshot_every=3)
    kept = [row[0] for row in sqlite3.connect(store).execute("SELECT seq FROM snapshots")]
    assert len(kept) >= 2
    newest, older = sorted(kept)[-1], sorted(kept)[-2]
    edit = stored_snapshot(store, newest)
    write_snapshot(store, newest, edit[1].replace(b'"web-1"', b'"web-9"'), edit[2], edit[3])
    with restarted(store) as (_, report, _):
        assert report.snapshot_seq == older
        assert [p.seq for p in report.discarded] == [newest]
        assert report.folded > 0


def test_a_snapshot_written_before_binding_is_refolded_not_trusted(tmp_path: Path) -> None:
    store = tmp_path / "events.db"
    seq = first_run(store)
    _, state, _, _ = stored_snapshot(store)
    db = sqlite3.connect(store)
    try:  # the table as older versions made it: no binding
        with db:
            db.execute("DROP TABLE snapshots")
            db.execute("CREATE TABLE snapshots(seq INTEGER PRIMARY KEY, state BLOB)")
            db.execute("INSERT INTO snapshots VALUES (?, ?)", (seq, state))
    finally:
        db.close()
    legacy = onduty("audit", "verify", "--store", str(store))
    assert legacy.returncode == 1
    assert f"snapshot at seq {seq} is bad" in legacy.stderr and "older version" in legacy.stderr
    with restarted(store) as (runtime, report, _):
        assert [p.seq for p in report.discarded] == [seq]
        assert "older version" in report.discarded[0].reason
        assert report.snapshot_seq == 0
        assert runtime.manager.snapshot() == folded(runtime.log)
        runtime.snapshot_now()  # the next snapshot is bound, and trusted at the next start
    with restarted(store) as (_, report, _):
        assert report.discarded == []
        assert report.snapshot_seq > seq
    assert onduty("audit", "verify", "--store", str(store)).returncode == 0


SERVE_CONFIG = """
services:
  - {name: db, tier: critical, autonomy: approve, instances: [db-1]}
correlation: {group_by: [service, alertname, instance]}
runbooks:
  - name: restart
    when: signal.labels.alertname == "InstanceDown"
    do: [{action: process.restart, target: "{{ signal.labels.instance }}"}]
"""


def test_serve_restarted_on_an_edited_snapshot_still_asks_for_approval(tmp_path: Path) -> None:
    store, config = tmp_path / "serve.db", tmp_path / "onduty.yaml"
    config.write_text(SERVE_CONFIG)
    first = Server(store, config=config).start()
    assert first.terminate() == 0  # a stop saves a snapshot at the head
    seq = edit_autonomy(store)

    with Server(store, config=config) as server, server.client() as client:
        found = client.get("/api/v1/events", params={"type": "SnapshotDiscarded"}).json()
        assert [event["data"]["seq"] for event in found] == [seq]
        assert "does not match its digest" in found[0]["data"]["reason"]
        assert f"snapshot at seq {seq} discarded" in server.output()
        signal = {
            "source": "test",
            "fingerprint": "down-db-1",
            "status": "firing",
            "labels": {"alertname": "InstanceDown", "instance": "db-1", "service": "db"},
        }
        assert client.post("/api/v1/signals", json=signal).status_code == 202
        pending = client.get("/api/v1/approvals").json()
        assert [a["summary"] for a in pending if "db-1" in a["summary"]], pending
        started = client.get("/api/v1/events", params={"type": "ActionStarted"}).json()
        assert started == []
        report = client.get("/api/v1/audit/verify").json()
        assert report["intact"] is True and report["bad_snapshots"] == []

        write_snapshot(store, 1, b'{"policy": null}', "", "")  # an unbound one, while running
        report = client.get("/api/v1/audit/verify").json()
        assert report["intact"] is False
        assert [bad["seq"] for bad in report["bad_snapshots"]] == [1]
        page = client.get("/audit")
        assert page.status_code == 200
        assert "a stored snapshot is BAD: snapshot at seq 1: not bound to the chain" in page.text


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(
    policy=st.dictionaries(st.text(), _values, max_size=4),
    labels=st.dictionaries(st.text(), st.text(), max_size=4),
    seq=st.integers(1, 2**40),
)
def test_a_snapshot_bound_from_encoded_bytes_is_the_one_bound_from_its_content(
    policy: dict[str, object], labels: dict[str, str], seq: int
) -> None:
    """What the writer stores without decoding is what start-up checks: the same digest as
    the content's canonical JSON gives, and bytes that decode to that content."""
    state = State(policy=policy, autonomy_overrides=labels)
    state.signals["fp"] = SignalState("fp", "firing", labels, dict(labels), "test", "", T0)
    made = bind(seq, "ab" * 32, state.encode(), state.encode_canonical())
    content = state.to_snapshot()
    assert made.digest == Snapshot.bound(seq, "ab" * 32, content).digest
    stored = made.encoded or orjson.dumps(made.state)
    assert orjson.loads(stored) == content


def _holds_floats(hint: object) -> bool:
    """Whether a value of type `hint` can hold a float: float, Any, or a dataclass or
    container of those."""
    if hint is float or hint is Any:
        return True
    if dataclasses.is_dataclass(hint):
        return any(_holds_floats(h) for h in typing.get_type_hints(hint).values())
    return any(_holds_floats(arg) for arg in typing.get_args(hint))


def test_only_the_fields_named_as_such_can_hold_floats() -> None:
    """A snapshot is stored without decoding only when no float is written unlike the canonical
    JSON; that is checked in the fields that can hold floats, so they must all be named."""
    hints = typing.get_type_hints(State)
    assert {name for name, hint in hints.items() if _holds_floats(hint)} == set(FLOAT_FIELDS)


def test_a_state_made_from_its_snapshot_visits_signals_and_incidents_in_the_same_order() -> None:
    """The core acts on what a tick finds in the order the state's dicts were filled; a state
    restored from a snapshot must keep that order, not the sorted one the digest is over."""
    state = State()
    for fingerprint in ("zeta", "alpha", "mu"):
        state.signals[fingerprint] = SignalState(fingerprint, "firing", {}, {}, "test", "", T0)
    stored = bind(3, "ab" * 32, state.encode(), state.encode_canonical())
    restored = State.from_snapshot(orjson.loads(stored.encoded))
    assert list(restored.signals) == ["zeta", "alpha", "mu"]
