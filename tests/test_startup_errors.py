"""Every way `onduty serve` (and the other commands that load a config or a store) can fail to
start is one line on stderr naming the secret, field or file, and exit 2: never a traceback."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests import run_cli
from tests.integration.server import free_port

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SUPERVISOR = EXAMPLES / "supervisor" / "onduty.yaml"
PROBE_WITH_FILE_SECRET = """
services: [{name: web, autonomy: act, instances: [web-1]}]
sources:
  - kind: http_probe
    name: web-health
    url: http://127.0.0.1:9/health
    headers: {Authorization: "Bearer ${FILE:/nonexistent/onduty-token}"}
"""


def onduty(
    *args: str, cwd: Path, unset: tuple[str, ...] = ("SUPERVISOR_PASSWORD",)
) -> subprocess.CompletedProcess[str]:
    # narrow: a long message must still be one line
    return run_cli.onduty(*args, cwd=cwd, columns=80, timeout=60, unset=unset)


def serve(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return onduty("serve", "--port", str(free_port()), *args, cwd=cwd)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single line a failed start-up printed (after checking there is exactly one)."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("onduty: "), lines[0]
    return lines[0]


@pytest.fixture
def not_a_database(tmp_path: Path) -> Path:
    path = tmp_path / "notes.db"
    path.write_text("these are notes, not events\n" * 50)
    return path


def test_an_unset_secret_names_the_field_and_the_variable(tmp_path: Path) -> None:
    store = tmp_path / "sup.db"
    line = one_line(serve("-c", str(SUPERVISOR), "--store", str(store), cwd=tmp_path))
    assert line == ("onduty: actuators[0].password: secret ${ENV:SUPERVISOR_PASSWORD} is not set")
    assert not store.exists()  # refused before anything was opened or recorded


def test_an_unreadable_secret_file_names_the_field_and_the_file(tmp_path: Path) -> None:
    config = tmp_path / "probe.yaml"
    config.write_text(PROBE_WITH_FILE_SECRET)
    line = one_line(serve("-c", str(config), "--store", str(tmp_path / "p.db"), cwd=tmp_path))
    assert "sources[0].headers.Authorization" in line
    assert "${FILE:/nonexistent/onduty-token} cannot be read (No such file or directory)" in line


def test_config_check_warns_about_unset_secrets_and_stays_valid(tmp_path: Path) -> None:
    result = onduty("config", "check", str(SUPERVISOR), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout
    warnings = result.stderr.strip().splitlines()
    secret = "warning: actuators[0].password: secret ${ENV:SUPERVISOR_PASSWORD} is not set"
    # The example pages an `on-call` it configures no channel for: said too (see
    # tests/test_config_check.py), and nothing else.
    assert [w for w in warnings if "secret" in w] == [secret]
    assert all(w == secret or "nobody would be paged" in w for w in warnings)
    with_secret = onduty("config", "check", str(SUPERVISOR), cwd=tmp_path, unset=())
    if "SUPERVISOR_PASSWORD" in os.environ:
        assert "secret" not in with_secret.stderr


ACCESS_FROM_AN_UNSET_VARIABLE = """
access:
  tokens:
    - {name: root, roles: [admin], hash_env: ONDUTY_TEST_UNSET_ROOT_HASH}
"""


def test_unset_access_secrets_warn_in_config_check_and_stop_serve(tmp_path: Path) -> None:
    config = tmp_path / "access.yaml"
    config.write_text(ACCESS_FROM_AN_UNSET_VARIABLE)
    unset = ("ONDUTY_TEST_UNSET_ROOT_HASH",)
    checked = onduty("config", "check", str(config), cwd=tmp_path, unset=unset)
    assert checked.returncode == 0 and "valid" in checked.stdout
    assert [w for w in checked.stderr.strip().splitlines() if "nobody would be paged" not in w] == [
        "warning: access.tokens[0].hash_env: environment variable ONDUTY_TEST_UNSET_ROOT_HASH "
        "is not set"
    ]
    served = onduty(
        "serve", "--port", str(free_port()), "-c", str(config), "--store", str(tmp_path / "x.db"),
        cwd=tmp_path, unset=unset,
    )  # fmt: skip
    assert one_line(served) == (
        "onduty: access.tokens[0].hash_env: environment variable ONDUTY_TEST_UNSET_ROOT_HASH "
        "is not set"
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "absent.yaml: cannot read the file: No such file or directory"),
        ("services: [\n", "bad.yaml: line 2, column 1: not valid YAML"),
        ("services:\n  - name: a\n    autonomy: banana\n", "bad.yaml: services[0].autonomy"),
    ],
    ids=["missing", "not-yaml", "invalid-field"],
)
def test_a_config_that_cannot_be_used(tmp_path: Path, content: str | None, expected: str) -> None:
    path = tmp_path / ("absent.yaml" if content is None else "bad.yaml")
    if content is not None:
        path.write_text(content)
    line = one_line(serve("-c", str(path), "--store", str(tmp_path / "x.db"), cwd=tmp_path))
    assert expected in line
    assert not (tmp_path / "x.db").exists()


def test_a_folder_given_as_the_config(tmp_path: Path) -> None:
    line = one_line(serve("-c", str(tmp_path), cwd=tmp_path))
    assert f"onduty: {tmp_path}: cannot read the file" in line


def test_a_store_that_is_not_an_event_log(tmp_path: Path, not_a_database: Path) -> None:
    line = one_line(serve("--store", str(not_a_database), cwd=tmp_path))
    assert line.startswith(f"onduty: {not_a_database} is not an onduty event log")


def test_a_store_that_cannot_be_opened(tmp_path: Path, not_a_database: Path) -> None:
    folder = one_line(serve("--store", str(tmp_path), cwd=tmp_path))
    assert f"cannot open the event log {tmp_path}" in folder
    under_a_file = one_line(serve("--store", str(not_a_database / "x.db"), cwd=tmp_path))
    assert f"cannot create its folder {not_a_database}" in under_a_file
    scheme = one_line(serve("--store", "mysql://db/onduty", cwd=tmp_path))
    assert "unsupported scheme 'mysql'" in scheme
    closed = one_line(serve("--store", "postgresql://127.0.0.1:9/onduty", cwd=tmp_path))
    assert closed.startswith("onduty: cannot open the event log postgresql://127.0.0.1:9/onduty")


def test_a_port_already_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        store = tmp_path / "x.db"
        result = onduty("serve", "--port", str(port), "--store", str(store), cwd=tmp_path)
    line = one_line(result)
    assert f"cannot listen on 127.0.0.1:{port}: the address is already in use" in line
    assert not store.exists()  # nothing was started or recorded


def test_bad_tls_files(tmp_path: Path, not_a_database: Path) -> None:
    garbage = one_line(
        serve("--tls-cert", str(not_a_database), "--tls-key", str(not_a_database), cwd=tmp_path)
    )
    assert f"--tls-cert {not_a_database}" in garbage and "not a PEM certificate" in garbage
    missing = one_line(
        serve("--tls-cert", str(tmp_path / "no.pem"), "--tls-key", str(tmp_path), cwd=tmp_path)
    )
    assert "no.pem: cannot read it (No such file or directory)" in missing


@pytest.mark.parametrize(
    "command",
    [
        ("demo", "--quiet", "--resume"),
        ("sim", "demo"),
        ("replay",),
        ("audit", "verify"),
        ("incidents",),
        ("events", "tail"),
    ],
    ids=lambda command: command[0],
)
def test_other_commands_name_a_bad_store(
    tmp_path: Path, not_a_database: Path, command: tuple[str, ...]
) -> None:
    line = one_line(onduty(*command, "--store", str(not_a_database), cwd=tmp_path))
    assert line.startswith(f"onduty: {not_a_database} is not an onduty event log")


def test_an_unknown_log_level(tmp_path: Path) -> None:
    line = one_line(serve("--log-level", "chatty", "--store", str(tmp_path / "x.db"), cwd=tmp_path))
    assert line == "onduty: --log-level 'chatty': use debug, info, warning or error"


def test_a_fresh_demo_in_a_folder(tmp_path: Path) -> None:
    line = one_line(onduty("demo", "--quiet", "--store", str(tmp_path), cwd=tmp_path))
    assert line == f"onduty: cannot start a fresh run in {tmp_path}: Is a directory"


def test_sim_and_replay_name_a_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("runbook: []\n")
    for command in (("sim", "demo", "-c", str(bad)), ("replay", "-c", str(bad))):
        line = one_line(onduty(*command, "--store", str(tmp_path / "x.db"), cwd=tmp_path))
        assert f"onduty: {bad}: runbook: unknown field" in line


ADVISOR_WITH_AN_UNSET_KEY = """
services: [{name: web, autonomy: act, instances: [web-1]}]
advisor:
  agent: on
  endpoint: {base_url: "http://127.0.0.1:9/v1", api_key: "${ENV:ONDUTY_TEST_ADVISOR_KEY}"}
"""


def test_an_unset_advisor_key_names_the_field_and_the_variable(tmp_path: Path) -> None:
    config = tmp_path / "advisor.yaml"
    config.write_text(ADVISOR_WITH_AN_UNSET_KEY)
    line = one_line(serve("-c", str(config), "--store", str(tmp_path / "a.db"), cwd=tmp_path))
    assert line == (
        "onduty: advisor.endpoint.api_key: secret ${ENV:ONDUTY_TEST_ADVISOR_KEY} is not set"
    )


@pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is not None,
    reason="the embeddings extra is installed here (make test-embeddings runs its tests)",
)
def test_embeddings_without_their_extra_name_it(tmp_path: Path) -> None:
    config = tmp_path / "onduty.yaml"
    config.write_text("similar: {method: embeddings}\n")
    store = tmp_path / "similar.db"
    line = one_line(serve("-c", str(config), "--store", str(store), cwd=tmp_path))
    assert line == (
        "onduty: similar.method: embeddings needs the optional `embeddings` extra, and "
        "sentence-transformers is not installed: pip install torch==2.13.0 "
        "'onduty[embeddings]' (or set similar.method: lexical)"
    )
    assert not store.exists()  # refused before the log was opened
