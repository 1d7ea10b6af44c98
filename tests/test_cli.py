"""The command line as a user meets it: exit codes, messages, never a traceback."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import psycopg
import pytest

from tests.postgres import SERVER, Schemas, store_url
from tests.run_cli import onduty

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def demo_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("demo") / "demo.db"
    result = onduty("demo", "--quiet", "--store", str(store))
    assert result.returncode == 0, result.stdout + result.stderr
    for heading in ("faults injected", "auto-remediated", "wrong actions", "time to recover"):
        assert heading in result.stdout
    return store


@pytest.fixture
def log_copy(demo_log: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy.db"
    shutil.copy(demo_log, copy)
    return copy


def test_help_lists_the_commands() -> None:
    result = onduty("--help")
    assert result.returncode == 0
    for command in ("demo", "sim", "replay", "audit", "incidents", "events", "config", "bench"):
        assert command in result.stdout


def test_config_check_valid() -> None:
    result = onduty("config", "check", str(EXAMPLES / "demo" / "onduty.yaml"))
    assert result.returncode == 0
    assert "valid" in result.stdout


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("services:\n  - name: a\n    autonomy: banana\n", "services[0].autonomy"),
        ("runbook: []\n", "runbook: unknown field"),
        ("services: [\n", "line 2"),
        (
            "runbooks:\n  - name: r\n    when: 'signal.labels.x =='\n"
            "    do: [{action: x.y, target: a}]\n",
            "runbooks[0].when: not a valid CEL expression",
        ),
        ("correlation: {group_wait: soon}\n", "correlation.group_wait"),
    ],
)
def test_config_check_names_the_field_and_exits_2(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = onduty("config", "check", str(path))
    assert result.returncode == 2
    assert expected in " ".join(result.stderr.split())


def test_config_check_missing_file(tmp_path: Path) -> None:
    result = onduty("config", "check", str(tmp_path / "absent.yaml"))
    assert result.returncode == 2
    assert "cannot read the file" in result.stderr


def test_audit_verify_intact(demo_log: Path) -> None:
    result = onduty("audit", "verify", "--store", str(demo_log))
    assert result.returncode == 0
    assert "chain intact" in result.stdout


def _tamper(store: Path, statement: str, *params: object) -> None:
    with sqlite3.connect(store) as db:
        db.execute(statement, params)


def _flip_byte(store: Path, seq: int) -> None:
    with sqlite3.connect(store) as db:
        (body,) = db.execute("SELECT body FROM events WHERE seq = ?", (seq,)).fetchone()
        data = bytearray(body)
        index = data.index(b'"data"') + 12
        data[index] ^= 0x01
        db.execute("UPDATE events SET body = ? WHERE seq = ?", (bytes(data), seq))


def _swap(store: Path, first: int, second: int) -> None:
    with sqlite3.connect(store) as db:
        a = db.execute(
            "SELECT id, type, stream, ts, body, hash FROM events WHERE seq = ?", (first,)
        )
        row_a = a.fetchone()
        row_b = db.execute(
            "SELECT id, type, stream, ts, body, hash FROM events WHERE seq = ?", (second,)
        ).fetchone()
        update = "UPDATE events SET id=?, type=?, stream=?, ts=?, body=?, hash=? WHERE seq=?"
        db.execute(update, (*row_b, first))
        db.execute(update, (*row_a, second))


def _insert_at_end(store: Path) -> int:
    with sqlite3.connect(store) as db:
        (head,) = db.execute("SELECT max(seq) FROM events").fetchone()
        row = db.execute(
            "SELECT id, type, stream, ts, body, hash FROM events WHERE seq = ?", (head,)
        ).fetchone()
        db.execute(
            "INSERT INTO events (seq, id, type, stream, ts, body, hash) VALUES (?,?,?,?,?,?,?)",
            (head + 1, *row[:5], "f" * 64),
        )
    return int(head) + 1


def test_audit_verify_one_byte_changed(log_copy: Path) -> None:
    _flip_byte(log_copy, 17)
    result = onduty("audit", "verify", "--store", str(log_copy))
    assert result.returncode == 1
    assert "seq 17" in result.stderr


def test_audit_verify_deleted_row(log_copy: Path) -> None:
    _tamper(log_copy, "DELETE FROM events WHERE seq = ?", 40)
    result = onduty("audit", "verify", "--store", str(log_copy))
    assert result.returncode == 1
    assert "seq 40" in result.stderr


def test_audit_verify_swapped_rows(log_copy: Path) -> None:
    _swap(log_copy, 30, 31)
    result = onduty("audit", "verify", "--store", str(log_copy))
    assert result.returncode == 1
    assert "seq 30" in result.stderr


def test_audit_verify_inserted_row(log_copy: Path) -> None:
    inserted = _insert_at_end(log_copy)
    result = onduty("audit", "verify", "--store", str(log_copy))
    assert result.returncode == 1
    assert f"seq {inserted}" in result.stderr


def test_replay_reproduces_the_demo(demo_log: Path) -> None:
    result = onduty("replay", "--store", str(demo_log))
    assert result.returncode == 0, result.stdout
    assert "same" in result.stdout


def test_backtest_with_a_stricter_policy_lists_the_changed_decisions(
    demo_log: Path, tmp_path: Path
) -> None:
    stricter = tmp_path / "stricter.yaml"
    text = (EXAMPLES / "demo" / "onduty.yaml").read_text()
    assert "max: 3" in text
    stricter.write_text(text.replace("max: 3", "max: 1"))
    result = onduty("replay", "--store", str(demo_log), "-c", str(stricter))
    assert result.returncode == 1
    flat = " ".join(result.stdout.split())
    assert "different" in flat
    assert "restart-budget: 1 process.restart on search-2" in flat


def test_read_models(demo_log: Path) -> None:
    incidents = onduty("incidents", "--store", str(demo_log))
    assert incidents.returncode == 0
    assert "resolved" in incidents.stdout
    tail = onduty("events", "tail", "--store", str(demo_log), "--type", "Escalated", "-n", "5")
    assert tail.returncode == 0
    lines = [line for line in tail.stdout.splitlines() if line.strip()]
    assert lines and all("Escalated" in line for line in lines)
    bad = onduty("events", "tail", "--store", str(demo_log), "--type", "Nonsense")
    assert bad.returncode == 2
    assert "not an event type" in bad.stderr


def test_read_commands_never_create_a_log(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    for args in (("audit", "verify"), ("replay",), ("incidents",), ("events", "tail")):
        result = onduty(*args, "--store", str(missing))
        assert result.returncode == 2
        assert "no event log" in result.stderr
    assert not missing.exists()


def test_read_commands_refuse_what_is_not_an_event_log_and_leave_it_alone(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
    for args in (("replay",), ("incidents",), ("events", "tail")):
        result = onduty(*args, "--store", str(other))
        assert result.returncode == 2
        assert "is not an onduty event log" in result.stderr
    with sqlite3.connect(other) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert tables == {"notes"}


@pytest.mark.usefixtures("postgres_server")
def test_read_commands_refuse_a_schema_that_does_not_exist_without_making_it(
    tmp_path: Path,
) -> None:
    schemas = Schemas()
    schema = schemas.name(tmp_path)
    try:
        for args in (("incidents",), ("events", "tail"), ("audit", "verify")):
            result = onduty(*args, "--store", store_url(schema))
            assert result.returncode == 2
            assert f"no onduty store in schema {schema}" in result.stderr
        with psycopg.connect(SERVER) as conn:
            found = conn.execute(
                "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", (schema,)
            ).fetchone()
        assert found is None
    finally:
        schemas.drop()
