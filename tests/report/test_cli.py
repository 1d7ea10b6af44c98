"""`onduty report INCIDENT_ID`: Markdown on stdout, or files; a clear error naming an incident
that is not in the store (with a few recent ones); and a store that does not exist, or is not a
log, is refused and left as it was: SQLite and PostgreSQL.

Once as a user runs it (a subprocess: its exit status and one line on stderr), else in-process
through typer's CliRunner (a problem the user can fix is raised as `UsageProblem`, which the
entry point prints as one line and exit 2)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from onduty.cli import app
from onduty.cli.base import UsageProblem
from onduty.report import incident_timelines
from onduty.sim import load_builtin_config, load_scenario
from onduty.sim.driver import run_scenario
from tests.postgres import SERVER, Schemas, store_url
from tests.report.conftest import DemoRun, read_all
from tests.run_cli import onduty


def report(*args: str) -> tuple[int, str, BaseException | None]:
    """`onduty report *args` in-process: exit code, stdout, and the problem raised if any."""
    result = CliRunner().invoke(app, ["report", *args])
    problem = result.exception if not isinstance(result.exception, SystemExit) else None
    return result.exit_code, result.stdout, problem


def _escalated(demo: DemoRun) -> str:
    timelines = incident_timelines(demo.events)
    return next(t.incident_id for t in timelines if t.escalated and t.approvals == [])


def test_markdown_on_stdout_and_files_on_request(demo: DemoRun, tmp_path: Path) -> None:
    incident = _escalated(demo)
    shown = onduty("report", incident, "--store", demo.store)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("# Post-incident report: ")
    assert "Escalated" in shown.stdout and "Guardrails: deny" in shown.stdout
    assert incident in shown.stdout

    page, text = tmp_path / "out" / "report.html", tmp_path / "report.md"
    code, _, problem = report(
        incident, "-s", demo.store, "--html", str(page), "--markdown", str(text)
    )
    assert code == 0 and problem is None
    assert page.read_text().startswith("<!doctype html>") and incident in page.read_text()
    assert text.read_text() == shown.stdout


def test_an_unknown_incident_is_named_with_recent_ones(demo: DemoRun) -> None:
    before = hashlib.sha256(Path(demo.store.removeprefix("sqlite:///")).read_bytes()).digest()
    missing = onduty("report", "inc-nope", "--store", demo.store)
    assert missing.returncode == 2 and missing.stdout == ""
    assert "no incident 'inc-nope'" in missing.stderr
    newest = incident_timelines(demo.events)[-1].incident_id
    assert newest in missing.stderr
    after = hashlib.sha256(Path(demo.store.removeprefix("sqlite:///")).read_bytes()).digest()
    assert before == after


def test_a_store_that_is_not_there_or_not_a_log_is_left_alone(tmp_path: Path) -> None:
    absent = tmp_path / "absent.db"
    _, _, problem = report("inc-1", "--store", str(absent))
    assert isinstance(problem, UsageProblem) and f"no event log at {absent}" in str(problem)
    assert list(tmp_path.iterdir()) == []

    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    _, _, problem = report("inc-1", "--store", f"sqlite:///{empty}")
    assert isinstance(problem, UsageProblem) and "not an onduty event log" in str(problem)
    assert empty.read_bytes() == b"" and sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]


@pytest.mark.usefixtures("postgres_server")
def test_a_postgresql_store_is_read_and_a_missing_schema_not_made(
    schemas: Schemas, tmp_path: Path
) -> None:
    url = store_url(schemas.name(tmp_path))
    run_scenario(load_scenario("demo"), load_builtin_config("demo"), url)
    incident = next(t for t in incident_timelines(read_all(url)) if t.actions).incident_id
    code, shown, problem = report(incident, "--store", url)
    assert code == 0 and problem is None
    assert incident in shown and "Action succeeded" in shown

    absent = schemas.name(tmp_path / "absent")
    _, _, problem = report(incident, "--store", store_url(absent))
    assert isinstance(problem, UsageProblem)
    assert f"no onduty store in schema {absent}" in str(problem)
    with psycopg.connect(SERVER) as conn:
        found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (absent,))
        assert found.fetchone() is None
