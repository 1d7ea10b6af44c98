"""Signed checkpoints of a PostgreSQL store against tampering: a real three-partition store on
the real server, edited with SQL the way someone with write access to the database would,
then `onduty audit verify` as a user runs it.

The store built here: partition 0 with events 1-3, partition 1 with 1-4, partition 2 with 1-2,
a checkpoint of all three; then 0 up to 6, 1 up to 8, 2 up to 5, a second checkpoint; then two
more events in partition 0 (7 and 8), not yet covered. Both checkpoints are in the witness file
and in the store's `checkpoints` table, signed with the key made at the first start.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry
from psycopg import sql

from onduty.config_checkpoints import CheckpointSettings
from onduty.events import GENESIS_HASH, chain_hash
from onduty.fleet_checkpointer import FleetCheckpointer, open_fleet_checkpointer
from onduty.log.checkpoints import SigningKey, load_or_create_key, public_path
from onduty.log.fleet_checkpoint_store import CheckpointStore
from onduty.log.fleet_checkpoints import FleetCheckpoint, Sourced, append_witness, hold, sign
from onduty.log.fleet_view import FleetView
from onduty.log.postgres import PostgresEventLog, connect
from tests.log.contract import signal
from tests.postgres import SERVER, Schemas, store_url
from tests.run_cli import onduty

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
FIRST = {0: 3, 1: 4, 2: 2}
SECOND = {0: 6, 1: 8, 2: 5}
AFTER = 2  # events appended to partition 0 after the second checkpoint


pytestmark = pytest.mark.usefixtures("postgres_server")


def grow(url: str, heads: dict[int, int]) -> None:
    """Append signals to each partition until it ends at the seq `heads` names."""
    for partition, until in heads.items():
        with PostgresEventLog(url, partition) as log:
            start = log.head()[0]
            log.append([signal(1000 * partition + i) for i in range(start, until)])


@dataclass
class Fleet:
    url: str
    schema: str
    folder: Path

    @property
    def witness(self) -> Path:
        return self.folder / "node-a.checkpoints"

    @property
    def key(self) -> Path:
        return self.folder / "fleet.key"

    @property
    def public(self) -> Path:
        return public_path(self.key)

    def settings(self, **changes: Any) -> CheckpointSettings:
        fields = {"key": str(self.key), "witness": str(self.witness), "every": "1h"}
        return CheckpointSettings.model_validate({**fields, **changes})

    def checkpointer(self, signer: str = "node-a", **changes: Any) -> FleetCheckpointer:
        made = open_fleet_checkpointer(
            self.settings(**changes), self.url, signer=signer, registry=CollectorRegistry()
        )
        assert made is not None
        return made

    def verify(self, *args: str, witness: bool = True, keys: bool = True) -> tuple[int, str]:
        given = [*(["--checkpoints", str(self.witness)] if witness else [])]
        given += ["--public-key", str(self.public)] if keys else []
        result = onduty("audit", "verify", "--store", self.url, *given, *args)
        return result.returncode, result.stdout + result.stderr

    def sql(self, statement: str, *args: object) -> list[tuple[Any, ...]]:
        with connect(SERVER, autocommit=True) as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
            cursor = conn.execute(statement, args)
            return cursor.fetchall() if cursor.description else []


@pytest.fixture
def fleet(schemas: Schemas, tmp_path: Path) -> Fleet:
    schema = schemas.name(tmp_path)
    made = Fleet(store_url(schema), schema, tmp_path)
    grow(made.url, FIRST)
    checkpointer = made.checkpointer()
    assert checkpointer.checkpoint_now() is not None
    grow(made.url, SECOND)
    assert checkpointer.checkpoint_now() is not None
    checkpointer.stop()
    grow(made.url, {0: SECOND[0] + AFTER})
    return made


# --------------------------------------------------------------------------- attacks


def rehash_from(fleet: Fleet, partition: int, first: int, edit: dict[int, Any]) -> None:
    """Rewrite every event of `partition` from `first` on with the hashes recomputed, and its
    head row to match: a valid chain again. `edit` changes the data of some seqs."""
    rows = fleet.sql(
        "SELECT seq, body FROM events WHERE partition = %s AND seq >= %s ORDER BY seq",
        partition,
        first,
    )
    prev = GENESIS_HASH
    if first > 1:
        prev = fleet.sql(
            "SELECT hash FROM events WHERE partition = %s AND seq = %s", partition, first - 1
        )[0][0]
    for seq, body in rows:
        fields = orjson.loads(bytes(body))
        fields["data"].update(edit.get(seq, {}))
        fields["seq"], fields["prev_hash"] = seq, prev
        new = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
        prev = chain_hash(prev, new)
        fleet.sql(
            "UPDATE events SET body = %s, hash = %s WHERE partition = %s AND seq = %s",
            new,
            prev,
            partition,
            seq,
        )
    set_head(fleet, partition)


def set_head(fleet: Fleet, partition: int) -> None:
    """Set the partition's head row to its last event, as a careful attacker would."""
    last = fleet.sql(
        "SELECT seq, hash FROM events WHERE partition = %s ORDER BY seq DESC LIMIT 1", partition
    )
    seq, hash_ = last[0] if last else (0, GENESIS_HASH)
    fleet.sql("UPDATE heads SET seq = %s, hash = %s WHERE partition = %s", seq, hash_, partition)


def cut(fleet: Fleet, partition: int, keep: int) -> None:
    fleet.sql("DELETE FROM events WHERE partition = %s AND seq > %s", partition, keep)
    set_head(fleet, partition)


def chains_alone(fleet: Fleet) -> None:
    """The chains alone see nothing wrong: only the checkpoints can."""
    view = FleetView(fleet.url)
    try:
        assert view.verify() is None
    finally:
        view.close()


def witness_lines(fleet: Fleet) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in fleet.witness.read_bytes().splitlines()]


def write_witness(fleet: Fleet, lines: list[dict[str, Any]]) -> None:
    fleet.witness.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))


# --------------------------------------------------------------------------- intact


def test_an_intact_store_verifies_against_its_checkpoints(fleet: Fleet) -> None:
    code, text = fleet.verify()
    assert code == 0, text
    assert "chain intact: 21 events in 3 partitions verified, each its own chain" in text
    assert "checkpoints hold: 2 in " in text and "and 2 in the store's checkpoints table" in text
    assert "covers 3 partitions, 19 events (partition 0 to seq 6, 1 to seq 8, 2 to seq 5)" in text
    assert "by node-a with key" in text and "(signatures checked)" in text
    assert "; 2 later events not yet covered" in text


def test_events_appended_after_the_checkpoint_are_fine(fleet: Fleet) -> None:
    grow(fleet.url, {1: 20, 2: 9, 3: 4})  # a partition the checkpoints never saw, too
    code, text = fleet.verify()
    assert code == 0, text
    assert "; 22 later events not yet covered" in text


def test_without_the_witness_the_table_vouches(fleet: Fleet) -> None:
    code, text = fleet.verify(witness=False)
    assert code == 0, text
    assert "no witness file: 2 in the store's checkpoints table agree with it" in text
    assert "give --checkpoints" in text


def test_without_a_public_key_signatures_are_not_checked(fleet: Fleet) -> None:
    code, text = fleet.verify(keys=False)
    assert code == 0, text
    assert "signatures NOT checked (no public key: give --public-key)" in text


def test_a_store_never_checkpointed_says_so(schemas: Schemas, tmp_path: Path) -> None:
    url = store_url(schemas.name(tmp_path))
    grow(url, {0: 2, 1: 1})
    result = onduty("audit", "verify", "--store", url)
    assert result.returncode == 0, result.stderr
    assert "no signed checkpoints: a cut tail or a rewritten partition" in result.stdout


# --------------------------------------------------------------------------- caught only now


@pytest.mark.parametrize("keep", [5, 1])
def test_a_cut_tail_with_its_head_row_set_back_is_found(fleet: Fleet, keep: int) -> None:
    cut(fleet, 1, keep)
    chains_alone(fleet)
    code, text = fleet.verify()
    assert code == 1, text
    assert "checkpoint: cut partition 1:" in text
    assert f"the partition's events end at seq {keep}: events {keep + 1}..8 at least were " in text
    assert "and its head row was set back to match" in text
    assert "partition 0" not in text and "partition 2" not in text  # only the one named


def test_a_cut_tail_is_found_by_the_table_alone(fleet: Fleet) -> None:
    cut(fleet, 2, 3)
    code, text = fleet.verify(witness=False)
    assert code == 1, text
    assert "checkpoint: cut partition 2:" in text and "events 4..5 at least" in text
    assert "the store's checkpoints table, row" in text


def test_a_rewrite_with_hashes_recomputed_names_the_partition_and_the_bounds(
    fleet: Fleet,
) -> None:
    rehash_from(fleet, 1, 6, {6: {"status": "resolved"}})
    chains_alone(fleet)
    code, text = fleet.verify()
    assert code == 1, text
    assert "checkpoint: rewritten partition 1:" in text
    assert "the partition's chain was rewritten after seq 4 and at or before seq 8" in text


def test_a_rewrite_before_the_first_checkpoint_contradicts_both(fleet: Fleet) -> None:
    rehash_from(fleet, 0, 2, {2: {"status": "resolved"}})
    code, text = fleet.verify()
    assert code == 1, text
    assert "checkpoint: rewritten partition 0:" in text
    assert "rewritten or replaced at or before seq 3 (no earlier checkpoint" in text
    assert "(2 checkpoints contradicted)" in text


def test_a_replaced_partition_is_found(fleet: Fleet) -> None:
    fleet.sql("DELETE FROM events WHERE partition = 2")
    set_head(fleet, 2)
    with PostgresEventLog(fleet.url, 2) as log:  # other events, a longer chain, a valid head
        log.append([signal(9000 + i) for i in range(7)])
    chains_alone(fleet)
    code, text = fleet.verify()
    assert code == 1, text
    assert "checkpoint: rewritten partition 2:" in text
    assert "rewritten or replaced at or before seq 2" in text


def test_renumbered_events_are_found(fleet: Fleet) -> None:
    # seq 3 of partition 1 removed, the rest moved down, their bodies and hashes redone
    fleet.sql("DELETE FROM events WHERE partition = 1 AND seq = 3")
    fleet.sql("UPDATE events SET seq = -seq WHERE partition = 1 AND seq > 3")
    fleet.sql("UPDATE events SET seq = -seq - 1 WHERE partition = 1 AND seq < 0")
    rehash_from(fleet, 1, 3, {})
    chains_alone(fleet)
    code, text = fleet.verify()
    assert code == 1, text
    assert "checkpoint: rewritten partition 1:" in text
    assert "rewritten or replaced at or before seq 4" in text
    assert "checkpoint: cut partition 1:" in text and "events 8..8 at least" in text


def test_a_head_row_set_back_alone_is_found(fleet: Fleet) -> None:
    fleet.sql(
        "UPDATE heads SET seq = 4, hash = (SELECT hash FROM events WHERE partition = 1 "
        "AND seq = 4) WHERE partition = 1"
    )
    code, text = fleet.verify()
    assert code == 1, text
    assert "checkpoint: head partition 1:" in text
    assert "the partition's head row says it ends at seq 4: the head row was set back" in text


def test_an_edited_ts_column_names_its_partition_and_seq(fleet: Fleet) -> None:
    fleet.sql("UPDATE events SET ts = '2020-01-01T00:00:00Z' WHERE partition = 1 AND seq = 3")
    code, text = fleet.verify()
    assert code == 1, text
    assert "chain broken at partition 1 seq 3: ts column '2020-01-01T00:00:00Z'" in text


def test_another_store_in_its_place_is_found(fleet: Fleet) -> None:
    fleet.sql("UPDATE meta SET value = 'another' WHERE partition = -1 AND key = 'log_id'")
    code, text = fleet.verify()
    assert code == 1, text
    assert "checkpoint: replaced" in text and "but this store is another" in text


# --------------------------------------------------------------------------- the checkpoints


def test_a_forged_witness_line_fails_its_signature(fleet: Fleet) -> None:
    lines = witness_lines(fleet)
    lines[1]["partitions"][1][1] = 5  # as if partition 1 had ended at 5, to hide a cut
    write_witness(fleet, lines)
    code, text = fleet.verify()
    assert code == 1, text
    assert "checkpoint: signature the checkpoint signed" in text
    assert f"({fleet.witness} line 2): its signature does not verify" in text


def test_a_forged_row_in_the_table_fails_its_signature(fleet: Fleet) -> None:
    [(row_id, body)] = fleet.sql("SELECT id, checkpoint FROM checkpoints ORDER BY id LIMIT 1")
    fields = orjson.loads(bytes(body))
    fields["signed_at"] = "2030-01-01T00:00:00Z"
    fleet.sql("UPDATE checkpoints SET checkpoint = %s WHERE id = %s", orjson.dumps(fields), row_id)
    code, text = fleet.verify(witness=False)
    assert code == 1, text
    assert f"(the store's checkpoints table, row {row_id}): its signature does not verify" in text


def test_a_checkpoint_signed_by_another_key_is_named(fleet: Fleet) -> None:
    other, _ = load_or_create_key(fleet.folder / "other.key")
    heads = {p: (seq, h) for p, seq, h, _ in _newest(fleet).partitions}
    forged = sign(other, _newest(fleet).log_id, heads, "2026-05-02T00:00:00Z", "node-b")
    append_witness(fleet.witness, forged)
    code, text = fleet.verify()
    assert code == 1, text
    assert "checkpoint: unknown-key the checkpoint signed 2026-05-02T00:00:00Z by node-b " in text
    assert f"is signed with key {other.key_id}, which is none of the public keys given" in text
    # given both public keys (a rotation), it holds
    both = ("--public-key", str(public_path(fleet.folder / "other.key")))
    code, text = fleet.verify(*both)
    assert code == 0, text


def test_a_missing_witness_file_is_a_finding(fleet: Fleet) -> None:
    fleet.witness.unlink()
    code, text = fleet.verify()
    assert code == 1, text
    assert f"checkpoint: witness the witness file {fleet.witness} does not exist" in text
    assert "the store's checkpoints table records 2 it may have held" in text


def test_a_cut_witness_is_found(fleet: Fleet) -> None:
    write_witness(fleet, witness_lines(fleet)[:1])
    code, text = fleet.verify()
    assert code == 1, text
    assert "checkpoint: witness" in text and "lacks the checkpoint signed" in text


def test_rows_deleted_from_the_table_are_found(fleet: Fleet) -> None:
    fleet.sql("DELETE FROM checkpoints WHERE id = (SELECT min(id) FROM checkpoints)")
    code, text = fleet.verify()
    assert code == 1, text
    assert "checkpoint: unrecorded the store's checkpoints table lacks the checkpoint" in text


def test_a_cut_with_the_tables_rows_deleted_is_found_by_the_witness(fleet: Fleet) -> None:
    cut(fleet, 0, 2)
    fleet.sql("DELETE FROM checkpoints")
    code, text = fleet.verify(witness=False)
    assert code == 0  # the store alone cannot tell: this is what the witness is for
    code, text = fleet.verify()
    assert code == 1, text
    assert "checkpoint: cut partition 0:" in text and "events 3..6 at least" in text


def test_the_witness_and_key_can_be_kept_elsewhere(fleet: Fleet, tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    kept.mkdir()
    shutil.move(fleet.witness, kept / "witness")
    shutil.move(fleet.public, kept / "key.pub")
    cut(fleet, 1, 6)
    result = onduty(
        "audit", "verify", "--store", fleet.url,
        "--checkpoints", str(kept / "witness"), "--public-key", str(kept / "key.pub"),
    )  # fmt: skip
    assert result.returncode == 1
    assert "events 7..8 at least were removed" in result.stderr


# --------------------------------------------------------------------------- the verdict alone


def _newest(fleet: Fleet) -> FleetCheckpoint:
    with CheckpointStore(fleet.url) as store:
        newest = store.newest()
    assert newest is not None
    return newest


def test_many_forged_checkpoints_are_told_a_few_times(fleet: Fleet) -> None:
    key = SigningKey.from_pem(fleet.key.read_bytes(), "key")
    keys = {key.key_id: key.public}
    with CheckpointStore(fleet.url) as store:
        recorded, _ = store.recorded()
        state = store.state({(0, 6)})
    forged = [  # ten witness lines whose signing time was changed
        Sourced(replace(s.checkpoint, signed_at=f"x{i}"), f"w line {i}", in_witness=True)
        for i, s in enumerate(recorded * 5)
    ]
    report = hold(state, forged, recorded, keys, witness_name="w")
    kinds = [f.kind for f in report.findings]
    assert kinds.count("signature") == 4  # three told, one counting the rest
    assert "7 more checkpoints in the witness are signature too" in report.findings[3].message


def test_the_checkpoint_line_round_trips() -> None:
    key = SigningKey.from_pem(_pem(), "k")
    made = sign(key, "store", {1: (4, "a" * 64), 0: (0, GENESIS_HASH)}, "t", "n")
    assert [p for p, *_ in made.partitions] == [0, 1]
    again = FleetCheckpoint.of(orjson.loads(made.line()))
    assert again == made and again.message() == made.message()
    with pytest.raises(ValueError, match="not in order"):
        FleetCheckpoint.of({**orjson.loads(made.line()), "partitions": [[1, 4, "h", 4]] * 2})
    with pytest.raises(ValueError, match="format"):
        FleetCheckpoint.of({**orjson.loads(made.line()), "format": "onduty-checkpoint/1"})


def _pem() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_signing_times_are_utc(fleet: Fleet) -> None:
    newest = _newest(fleet)
    assert newest.signed_at.endswith("Z")
    assert datetime.fromisoformat(newest.signed_at) - datetime.now(UTC) < timedelta(minutes=1)
