"""The README runs as written: its tamper command makes `audit verify` exit 1 for a change of
content; its `serve` example writes its own log and acts through a harmless actuator; every
command's `--help` names what each option takes plainly and explains every option; and
`onduty --version` answers."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from onduty import __version__
from tests import run_cli
from tests.integration.server import free_port

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def onduty(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli.onduty(*args, cwd=cwd, columns=200)


def readme_sql(pattern: str) -> str:
    """The SQL of the README's `sqlite3 onduty-demo.db "…"` command that contains `pattern`."""
    for match in re.finditer(r'sqlite3 onduty-demo\.db "([^"]+)"', README):
        if pattern in match.group(1):
            return match.group(1)
    raise AssertionError(f"the README has no sqlite3 command with {pattern!r}")


def test_the_readmes_tamper_command_changes_content_and_audit_verify_exits_1(
    tmp_path: Path,
) -> None:
    assert onduty("demo", "--quiet", cwd=tmp_path).returncode == 0
    store = tmp_path / "onduty-demo.db"
    assert onduty("audit", "verify", "--store", str(store)).returncode == 0
    with sqlite3.connect(store) as db:
        before = dict(db.execute("SELECT seq, body FROM events"))
        db.execute(readme_sql("update events set body"))
        after = dict(db.execute("SELECT seq, body FROM events"))
        kinds = {kind for (kind,) in db.execute("SELECT DISTINCT typeof(body) FROM events")}
    changed = [seq for seq in before if before[seq] != after[seq]]
    assert len(changed) == 1
    assert kinds == {"blob"}  # the content changed, not the column's type
    assert b"search-9" in after[changed[0]]
    verified = onduty("audit", "verify", "--store", str(store))
    assert verified.returncode == 1
    assert f"seq {changed[0]}: hash does not match the body" in verified.stdout + verified.stderr


def test_the_readmes_serve_example_writes_its_own_log_and_acts(tmp_path: Path) -> None:
    command = re.search(r"\.venv/bin/onduty (serve -c examples/serve/onduty\.yaml)", README)
    assert command, "the README's serve example"
    curl = re.search(r"curl -s -XPOST localhost:8765/api/v1/signals .*?'(\{.*?\})'", README, re.S)
    assert curl, "the README's signal by hand"
    args = shlex.split(command.group(1))
    args[args.index("examples/serve/onduty.yaml")] = str(ROOT / "examples/serve/onduty.yaml")
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "onduty", *args, "--port", str(port)],
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{url}/readyz", timeout=0.5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve did not become ready"
            time.sleep(0.1)
        sent = httpx.post(f"{url}/api/v1/signals", content=curl.group(1), headers={
            "Content-Type": "application/json"
        })  # fmt: skip
        assert sent.status_code == 202, sent.text
        # After group_wait (2 s) the shell actuator echoes.
        deadline = time.monotonic() + 30
        while True:
            events = httpx.get(f"{url}/api/v1/events", params={"after": 0}).json()
            items = events["events"] if isinstance(events, dict) else events
            types = [event["type"] for event in items]
            if "ActionSucceeded" in types or "ActionFailed" in types:
                break
            assert time.monotonic() < deadline, types
            time.sleep(0.2)
        assert "ActionSucceeded" in types, json.dumps(items)[-2000:]
        started = next(event for event in items if event["type"] == "ActionStarted")
        assert (started["data"]["action"], started["data"]["target"]) == ("disk.cleanup", "db-1")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        log.close()
    assert (tmp_path / "onduty.db").exists()  # its own log, as the README says
    assert not (tmp_path / "onduty-demo.db").exists()


def test_version() -> None:
    result = onduty("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"onduty {__version__}"


def _walk() -> list[tuple[list[str], Any]]:
    """Every command of `onduty` (groups too) with its path, as `onduty` runs them."""
    from onduty.cli import command

    found: list[tuple[list[str], Any]] = []
    pending: list[tuple[list[str], Any]] = [([], command())]
    while pending:
        path, current = pending.pop()
        found.append((path, current))
        pending.extend(([*path, n], s) for n, s in getattr(current, "commands", {}).items())
    return sorted(found, key=lambda item: item[0])


def _help(root: Any, path: list[str]) -> str:
    """`onduty PATH --help` as printed, in this process (one process per command would take a
    second each)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.suppress(SystemExit):
        root.main([*path, "--help"], prog_name="onduty", standalone_mode=False)
    return buffer.getvalue()


def test_every_help_names_values_plainly_and_explains_every_option(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    commands = _walk()
    assert len(commands) > 20
    root = commands[0][1]
    problems: list[str] = []
    for path, current in commands:
        shown = _help(root, path)
        assert "Usage: onduty" in shown, (path, shown)
        for bad in ("<bool>", "<list["):
            if bad in shown:
                problems.append(f"onduty {' '.join(path)} --help shows {bad}")
        for param in current.params:
            if param.param_type_name == "option" and not (param.help or "").strip():
                problems.append(f"onduty {' '.join(path)}: {param.opts[0]} has no help text")
    assert problems == []


def test_the_onduty_command_shows_flags_without_a_value() -> None:
    """The installed entry point runs the tidied command, as the in-process walk does."""
    result = onduty("events", "tail", "--help")
    assert "<bool>" not in result.stdout and "<list[" not in result.stdout
    assert re.search(r"--follow\s+-f\s+Keep printing", result.stdout), result.stdout
