"""Signed checkpoints against tampering: a real SQLite store, edited with sqlite3 the way an
attacker with the file would, then `onduty audit verify` as a user runs it.

The log built here: signals at seq 1-10, a checkpoint of seq 10 (recorded at 11), signals
12-21, a checkpoint of 21 (at 22), signals 23-32, a checkpoint of 32 (at 33). Each checkpoint
is in the witness file beside the store, signed with the key generated beside it.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry

from onduty.checkpointer import Checkpointer, key_file, signing_key, witness_file
from onduty.config_checkpoints import CheckpointSettings
from onduty.events import Payload, SignalReceived, chain_hash, make_event
from onduty.log.checkpoints import load_or_create_key, public_path, read_witness
from onduty.log.sqlite import SQLiteEventLog
from tests.http_witness import http_witness
from tests.run_cli import onduty

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
HOUR = CheckpointSettings(every=timedelta(hours=1))  # the tests sign when they choose


def _signal(i: int) -> Payload:
    labels = {"alertname": "Down", "instance": f"i-{i}"}
    return SignalReceived(source="test", fingerprint=f"fp-{i}", status="firing", labels=labels)


class Writer:
    """Appends signals and signs checkpoints of a store, as `onduty serve` does."""

    def __init__(self, store: Path, log: SQLiteEventLog) -> None:
        self.log, self.store, self.n = log, store, 0
        key = signing_key(HOUR, str(store))
        self.checkpointer = Checkpointer(
            HOUR, log, key, witness=witness_file(str(store)), registry=CollectorRegistry()
        )
        self.checkpointer.start(self.record)

    def record(self, body: Payload, stream: str) -> None:
        self.n += 1
        ts = T0 + timedelta(seconds=self.n)
        self.log.append([make_event(body, id=f"e-{self.n}", ts=ts, stream=stream)])

    def signals(self, count: int, stream: str | None = None) -> None:
        for _ in range(count):
            # on one stream, the same alert re-sent; else each its own
            self.record(_signal(0 if stream else self.n), stream or f"svc:s{self.n}")

    def checkpoint(self) -> None:
        assert self.checkpointer.checkpoint_now() is not None


@contextmanager
def writing(store: Path) -> Iterator[Writer]:
    with SQLiteEventLog(str(store)) as log:
        writer = Writer(store, log)
        try:
            yield writer
        finally:
            writer.checkpointer.stop()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "onduty.db"
    with writing(path) as writer:
        for _ in range(3):
            writer.signals(10)
            writer.checkpoint()
    return path


def verify(store: Path, *args: str) -> tuple[int, str]:
    result = onduty("audit", "verify", "--store", str(store), *args)
    return result.returncode, result.stdout + result.stderr


def rows(db: sqlite3.Connection, first: int) -> list[tuple[int, bytes]]:
    return db.execute(
        "SELECT seq, body FROM events WHERE seq >= ? ORDER BY seq", (first,)
    ).fetchall()


def rehash_from(db: sqlite3.Connection, first: int, edit: dict[int, dict[str, object]]) -> None:
    """Rewrite every row from `first` on with the hashes recomputed: a valid chain again.
    `edit` changes fields of the data of some seqs on the way."""
    prev = db.execute("SELECT hash FROM events WHERE seq = ?", (first - 1,)).fetchone()[0]
    for seq, body in rows(db, first):
        fields = orjson.loads(body)
        fields["data"].update(edit.get(seq, {}))
        fields["prev_hash"] = prev
        new = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
        prev = chain_hash(prev, new)
        db.execute("UPDATE events SET body = ?, hash = ? WHERE seq = ?", (new, prev, seq))


@contextmanager
def attacker(store: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(store, isolation_level=None)
    try:
        yield db
    finally:
        db.close()


# --------------------------------------------------------------------------- intact


def test_an_intact_log_verifies_against_its_checkpoints(store: Path) -> None:
    code, text = verify(store)
    assert code == 0, text
    assert "chain intact: 33 events verified" in text
    assert "checkpoints hold: 3 in" in text
    assert "latest at seq 32" in text
    assert "signatures checked" in text


# --------------------------------------------------------------------------- caught only now


@pytest.mark.parametrize("cut", [1, 10])
def test_a_cut_tail_is_found(store: Path, cut: int) -> None:
    with attacker(store) as db:
        db.execute("DELETE FROM events WHERE seq > ?", (33 - cut,))
    with SQLiteEventLog(str(store)) as log:
        assert log.verify() is None  # the chain alone cannot see it
    code, text = verify(store)
    assert code == 1
    assert "checkpoint: cut" in text
    assert "seq 32" in text
    if cut == 10:
        assert "the log ends at seq 23" in text


def test_a_cut_tail_of_repeated_signals_is_found(tmp_path: Path) -> None:
    path = tmp_path / "onduty.db"
    with writing(path) as writer:
        writer.signals(20, stream="svc:same")  # stored compactly, in `repeats`
        writer.checkpoint()
    with attacker(path) as db:
        assert db.execute("SELECT count(*) FROM repeats").fetchone()[0] > 10
        db.execute("DELETE FROM repeats WHERE seq > 15")
        db.execute("DELETE FROM events WHERE seq > 15")
    code, text = verify(path)
    assert code == 1
    assert "the log ends at seq 15" in text
    assert "checkpoint at seq 20" in text


def test_a_rewrite_with_hashes_recomputed_names_the_checkpoint(store: Path) -> None:
    with attacker(store) as db:
        rehash_from(db, 15, {15: {"status": "resolved"}})
    with SQLiteEventLog(str(store)) as log:
        assert log.verify() is None
    code, text = verify(store)
    assert code == 1
    assert "checkpoint: rewritten checkpoint at seq 21" in text
    assert "rewritten after seq 10 and at or before seq 21" in text


def test_a_replaced_log_is_found(store: Path, tmp_path: Path) -> None:
    other = tmp_path / "other" / "onduty.db"
    with writing(other) as writer:
        writer.signals(40)
    store.unlink()
    shutil.copy(other, store)
    code, text = verify(store)
    assert code == 1
    assert "checkpoint: replaced" in text
    assert "the log was replaced" in text


def test_a_replaced_log_that_copies_the_identity_is_found(store: Path, tmp_path: Path) -> None:
    with attacker(store) as db:
        log_id = db.execute("SELECT value FROM meta WHERE key = 'log_id'").fetchone()[0]
    other = tmp_path / "other.db"
    with SQLiteEventLog(str(other)) as log:
        log.append([make_event(_signal(i), id=f"x-{i}", ts=T0, stream="s") for i in range(40)])
        log.set_meta("log_id", log_id)
    shutil.copy(other, store)
    code, text = verify(store)
    assert code == 1
    assert "checkpoint: rewritten checkpoint at seq 10" in text


def test_renumbered_events_are_found(store: Path) -> None:
    with attacker(store) as db:  # seq 5 removed, the rest moved down, the chain re-hashed
        db.execute("DELETE FROM events WHERE seq = 5")
        db.execute("UPDATE events SET seq = seq - 1 WHERE seq > 5")
        for seq, body in rows(db, 5):
            fields = orjson.loads(body)
            fields["seq"] = seq
            db.execute(
                "UPDATE events SET body = ? WHERE seq = ?",
                (orjson.dumps(fields, option=orjson.OPT_SORT_KEYS), seq),
            )
        rehash_from(db, 5, {})
    with SQLiteEventLog(str(store)) as log:
        assert log.verify() is None
    code, text = verify(store)
    assert code == 1
    assert "checkpoint: rewritten checkpoint at seq 10" in text


def test_an_edited_ts_column_names_its_seq(store: Path) -> None:
    with attacker(store) as db:
        db.execute("UPDATE events SET ts = '2020-01-01T00:00:00Z' WHERE seq = 7")
    code, text = verify(store)
    assert code == 1
    assert "chain broken at seq 7: ts column '2020-01-01T00:00:00Z' does not match" in text


def test_an_edited_witness_line_fails_its_signature(store: Path) -> None:
    witness = witness_file(str(store))
    assert witness is not None
    lines = witness.read_bytes().splitlines()
    fields = orjson.loads(lines[1])
    fields["seq"] = 20  # as if the log had been cut back to 20 and the witness adjusted
    lines[1] = orjson.dumps(fields)
    witness.write_bytes(b"\n".join(lines) + b"\n")
    code, text = verify(store)
    assert code == 1
    assert "checkpoint: signature checkpoint at seq 20" in text


def test_a_cut_witness_is_found(store: Path) -> None:
    witness = witness_file(str(store))
    assert witness is not None
    witness.write_bytes(b"".join(witness.read_bytes().splitlines(keepends=True)[:1]))
    code, text = verify(store)
    assert code == 1
    assert "checkpoint: witness" in text
    assert "seq 21" in text


def test_the_witness_and_key_can_be_given_from_elsewhere(store: Path, tmp_path: Path) -> None:
    witness, key = witness_file(str(store)), key_file(str(store))
    assert witness is not None and key is not None
    kept = tmp_path / "kept"
    kept.mkdir()
    shutil.move(witness, kept / "witness")
    shutil.move(public_path(key), kept / "key.pub")
    code, text = verify(store)  # without them: only the checkpoints the log records
    assert code == 0
    assert "no witness file" in text and "signatures NOT checked" in text
    with attacker(store) as db:
        db.execute("DELETE FROM events WHERE seq > 23")
    args = ("--checkpoints", str(kept / "witness"), "--public-key", str(kept / "key.pub"))
    code, text = verify(store, *args)
    assert code == 1
    assert "the log ends at seq 23" in text


# --------------------------------------------------------------------------- caught before too


def test_an_edited_body_in_the_middle_names_its_seq(store: Path) -> None:
    with attacker(store) as db:
        body = db.execute("SELECT body FROM events WHERE seq = 4").fetchone()[0]
        db.execute(
            "UPDATE events SET body = ? WHERE seq = 4", (body.replace(b"firing", b"resolved"),)
        )
    code, text = verify(store)
    assert code == 1
    assert "chain broken at seq 4: hash does not match the body" in text


def test_a_deleted_middle_event_names_its_seq(store: Path) -> None:
    with attacker(store) as db:
        db.execute("DELETE FROM events WHERE seq = 6")
    code, text = verify(store)
    assert code == 1
    assert "chain broken at seq 6: seq 6 is missing" in text


def test_swapped_events_name_the_first_seq(store: Path) -> None:
    with attacker(store) as db:
        db.execute("UPDATE events SET seq = -1 WHERE seq = 3")
        db.execute("UPDATE events SET seq = 3 WHERE seq = 8")
        db.execute("UPDATE events SET seq = 8 WHERE seq = -1")
    code, text = verify(store)
    assert code == 1
    assert "chain broken at seq 3" in text


# --------------------------------------------------------------------------- keys


def test_the_key_is_generated_at_the_first_start_and_said_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = str(tmp_path / "onduty.db")
    with caplog.at_level(logging.WARNING, logger="onduty"):
        first = signing_key(CheckpointSettings(), store)
    path = key_file(store)
    assert path is not None
    assert "generated a new signing key" in caplog.text and str(path) in caplog.text
    assert path.stat().st_mode & 0o777 == 0o600
    assert public_path(path).exists()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="onduty"):
        again = signing_key(CheckpointSettings(), store)
    assert again.key_id == first.key_id
    assert "generated" not in caplog.text


def test_a_key_from_a_secret_reference(tmp_path: Path) -> None:
    source = tmp_path / "elsewhere.key"
    made = signing_key(CheckpointSettings(key=str(source)), str(tmp_path / "a.db"))
    settings = CheckpointSettings(key=f"${{FILE:{source}}}")
    assert signing_key(settings, str(tmp_path / "b.db")).key_id == made.key_id


def test_old_checkpoints_verify_with_the_rotated_out_public_key(store: Path) -> None:
    key = key_file(str(store))
    assert key is not None
    old_public = store.with_name("old.pub")
    shutil.copy(public_path(key), old_public)
    key.unlink()  # rotation: the old key goes, a new one is generated at the next start
    public_path(key).unlink()
    with writing(store) as writer:
        writer.signals(5)
        writer.checkpoint()
    found, _ = read_witness(store.with_name("onduty.db.checkpoints"))
    assert len({checkpoint.key_id for checkpoint in found}) == 2
    code, text = verify(store)  # only the new public key beside the store
    assert code == 1
    assert "checkpoint: unknown-key checkpoint at seq 10" in text
    code, text = verify(
        store, "--public-key", str(old_public), "--public-key", str(public_path(key))
    )
    assert code == 0, text
    assert "checkpoints hold: 4 in" in text


# --------------------------------------------------------------------------- other witnesses


def test_checkpoints_also_go_to_an_http_witness_and_a_second_store(tmp_path: Path) -> None:
    second = tmp_path / "second.db"
    with http_witness() as witness:
        settings = CheckpointSettings(
            every=timedelta(hours=1),
            witness_url=witness.url,
            witness_store=f"sqlite:///{second}",
        )
        with SQLiteEventLog(str(tmp_path / "onduty.db")) as log:
            log.append([make_event(_signal(i), id=f"e-{i}", ts=T0, stream="s") for i in range(3)])
            key = signing_key(settings, str(tmp_path / "onduty.db"))
            checkpointer = Checkpointer(
                settings, log, key, witness=None, registry=CollectorRegistry()
            )
            signed = checkpointer.checkpoint_now()
            checkpointer.stop()
    assert signed is not None and signed.seq == 3
    assert [orjson.loads(body)["seq"] for body in witness.received] == [3]
    with SQLiteEventLog(str(second)) as copy:
        [event] = list(copy.read())
    assert event.type == "CheckpointSigned" and event.data["signature"] == signed.signature


def test_processes_making_the_same_key_file_at_once_all_end_with_the_one_that_won(
    tmp_path: Path,
) -> None:
    """Nodes of one host, each for a store of its own, may find no key file at the same moment:
    the file appears whole, once, and every one of them signs with what it holds."""
    path = tmp_path / "fleet.key"
    makers = 8
    start = threading.Barrier(makers)

    def make() -> tuple[str, bool]:
        start.wait()
        key, created = load_or_create_key(path)
        return key.key_id, created

    with ThreadPoolExecutor(makers) as pool:
        made = list(pool.map(lambda _: make(), range(makers)))
    assert len({key_id for key_id, _ in made}) == 1
    assert sum(created for _, created in made) == 1
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fleet.key", "fleet.key.pub"]
