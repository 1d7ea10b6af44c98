"""The shell actuator against real subprocesses: exit codes, timeouts that take the whole
process group down, bounded and redacted output, the allow list, the clean environment, and
arguments that stay inert whatever they hold."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from onduty.act.shell import ShellActuator
from onduty.act.specs import OutcomeUnknown, ShellSpec
from onduty.secrets import SecretError
from tests.act.helpers import action, live_members, process_state

PYTHON = sys.executable
SH = "/bin/sh"


def shell(**fields: Any) -> ShellSpec:
    fields.setdefault("allow", [PYTHON, SH])
    return ShellSpec.model_validate({"kind": "shell", "action": "process.restart", **fields})


def python(code: str, *args: str, **fields: Any) -> ShellActuator:
    env = fields.pop("env", None)
    spec = shell(argv=[PYTHON, "-c", code, *args], **fields)
    return ShellActuator(spec, env=env)


def test_success_returns_the_output() -> None:
    actuator = python("import sys; print('restarted', sys.argv[1])", "{{ target }}")
    outcome = actuator.run(action("web-1"))
    assert outcome.ok, outcome.error
    assert outcome.output == "restarted web-1\n"
    assert outcome.error == ""


def test_a_non_zero_exit_is_a_failure_with_the_last_lines() -> None:
    code = (
        "import sys\n"
        "for i in range(20): print('line', i, flush=True)\n"
        "print('boom', file=sys.stderr)\n"
        "sys.exit(3)"
    )
    outcome = python(code).run(action())
    assert not outcome.ok
    assert outcome.error.startswith("exit 3: ")
    assert outcome.error.endswith("line 19\nboom")
    assert "line 14" not in outcome.error  # only the last few lines
    assert "line 0\n" in outcome.output  # stdout and stderr both captured


def test_a_signal_death_is_named() -> None:
    outcome = python("import os, signal; os.kill(os.getpid(), signal.SIGKILL)").run(action())
    assert not outcome.ok
    assert outcome.error == "killed by SIGKILL"


def test_a_missing_program_is_a_failure_not_a_crash(tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere")
    spec = shell(argv=[missing], allow=[missing])
    outcome = ShellActuator(spec).run(action())
    assert not outcome.ok
    assert outcome.error == f"cannot run {missing}: No such file or directory"


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # The child ignores SIGTERM (and so does its grandchild `sleep`, which inherits that), so
    # the group only goes down with the SIGKILL that follows the grace period.
    script = f"trap '' TERM; sleep 1000 & echo $$ $! > {pids}; echo started; wait; wait"
    spec = shell(argv=[SH, "-c", script], timeout="1s")
    actuator = ShellActuator(spec, kill_grace=0.5)
    started = time.monotonic()
    outcome = actuator.run(action())
    elapsed = time.monotonic() - started
    assert not outcome.ok
    assert outcome.error.startswith("timed out after 1s"), outcome.error
    assert "started" in outcome.error
    assert 1.0 <= elapsed < 4.0
    leader, grandchild = (int(pid) for pid in pids.read_text().split())
    assert live_members(leader) == []  # the group is the leader's pid (a session of its own)
    assert process_state(grandchild) in (None, "Z")
    if process_state(grandchild) is None:
        with pytest.raises(ProcessLookupError):
            os.killpg(leader, 0)


def test_timeout_with_a_cooperative_group_ends_at_sigterm(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    spec = shell(argv=[SH, "-c", f"sleep 1000 & echo $! > {pids}; wait"], timeout="0.5s")
    started = time.monotonic()
    outcome = ShellActuator(spec, kill_grace=5).run(action())
    assert outcome.error.startswith("timed out after 500ms")
    assert time.monotonic() - started < 3  # SIGTERM was enough: no waiting out the grace
    assert process_state(int(pids.read_text())) in (None, "Z")


def test_the_command_timeout_wins_when_it_is_stricter() -> None:
    outcome = python("import time; time.sleep(30)", timeout="30s").run(action(timeout_s=0.5))
    assert outcome.error.startswith("timed out after 500ms")


def test_a_background_process_holding_the_output_does_not_stall_the_action(
    tmp_path: Path,
) -> None:
    pidfile = tmp_path / "pid"
    spec = shell(argv=[SH, "-c", f"sleep 30 & echo $! > {pidfile}; echo done"], timeout="10s")
    started = time.monotonic()
    outcome = ShellActuator(spec).run(action())
    try:
        assert outcome.ok, outcome.error
        assert outcome.output == "done\n"
        assert time.monotonic() - started < 3
    finally:
        os.kill(int(pidfile.read_text()), signal.SIGKILL)


def test_output_is_truncated_to_max_output() -> None:
    code = "import sys; sys.stdout.write('A' * 100_000 + 'MIDDLE' + 'B' * 100_000 + 'END')"
    outcome = python(code, max_output=4096).run(action())
    assert outcome.ok
    assert len(outcome.output.encode()) <= 4096
    assert outcome.output.startswith("AAAA")
    assert outcome.output.endswith("BBBEND")
    assert "bytes omitted" in outcome.output
    assert "MIDDLE" not in outcome.output


def test_secrets_are_redacted_in_output_and_errors(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("file-secret-0042\n")
    code = (
        "import os, sys\n"
        "print('token is', os.environ['API_TOKEN'], flush=True)\n"
        "print('auth', os.environ['AUTH'], flush=True)\n"
        "print('from file', os.environ['FROM_FILE'], file=sys.stderr)\n"
        "sys.exit(2)"
    )
    spec = shell(
        argv=[PYTHON, "-c", code],
        env={
            "API_TOKEN": "${ENV:ONDUTY_TEST_TOKEN}",
            "AUTH": "Bearer ${ENV:ONDUTY_TEST_TOKEN}",
            "FROM_FILE": f"${{FILE:{token_file}}}",
        },
    )
    actuator = ShellActuator(spec, env={"ONDUTY_TEST_TOKEN": "hunter2-very-secret"})
    outcome = actuator.run(action())
    assert not outcome.ok
    for text in (outcome.output, outcome.error, repr(actuator)):
        assert "hunter2" not in text
        assert "file-secret" not in text
    assert "token is [redacted]" in outcome.output
    assert "auth [redacted]" in outcome.output  # the whole value that held a secret
    assert outcome.error.endswith("from file [redacted]")


def test_a_secret_cut_by_the_truncation_does_not_leak() -> None:
    secret = "s3cr3t-value-that-is-long-0123456789"
    # Place the secret across the point where the kept beginning of the output ends.
    for offset in range(-30, 31, 3):
        code = (
            "import os, sys\n"
            f"sys.stdout.write('x' * ({(4096 - 64) // 2} + {offset} - 10) + os.environ['S']"
            " + 'y' * 20000)"
        )
        spec = shell(argv=[PYTHON, "-c", code], env={"S": "${ENV:SECRET}"}, max_output=4096)
        outcome = ShellActuator(spec, env={"SECRET": secret}).run(action())
        assert outcome.ok
        for size in range(6, len(secret) + 1):
            for start in range(len(secret) - size + 1):
                assert secret[start : start + size] not in outcome.output, (offset, size)


def test_a_missing_secret_fails_when_the_actuator_is_built() -> None:
    spec = shell(argv=[SH, "-c", "true"], env={"T": "${ENV:ONDUTY_TEST_NOT_SET}"})
    with pytest.raises(SecretError, match="environment variable ONDUTY_TEST_NOT_SET is not set"):
        ShellActuator(spec, env={})


def test_the_child_gets_a_clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONDUTY_TEST_LEAK", "1")
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    outcome = python(code).run(action())
    assert outcome.ok, outcome.error
    seen = json.loads(outcome.output)
    seen.pop("LC_CTYPE", None)  # Python may coerce the C locale for itself
    assert seen == {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    spec = shell(argv=[PYTHON, "-c", code], env={"MODE": "safe"})
    outcome = ShellActuator(spec).run(action())
    seen = json.loads(outcome.output)
    seen.pop("LC_CTYPE", None)
    assert seen == {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "MODE": "safe"}


def test_the_program_runs_in_a_session_of_its_own_without_stdin(tmp_path: Path) -> None:
    code = "import os, sys; print(os.getsid(0) == os.getpid(), sys.stdin.read() == '')"
    spec = shell(argv=[PYTHON, "-c", code], cwd=str(tmp_path))
    outcome = ShellActuator(spec).run(action())
    assert outcome.output == "True True\n"
    spec = shell(argv=[PYTHON, "-c", "import os; print(os.getcwd())"], cwd=str(tmp_path))
    assert ShellActuator(spec).run(action()).output == f"{tmp_path}\n"


def test_a_program_outside_the_allow_list_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    spec = shell(
        argv=["/usr/bin/{{ params.tool }}", str(marker)],
        allow=["/usr/bin/systemctl"],
    )
    actuator = ShellActuator(spec)
    for tool in ("touch", "../bin/touch", "systemctl/../touch"):
        outcome = actuator.run(action(params={"tool": tool}))
        assert not outcome.ok
        assert outcome.error.startswith("refused: ")
        assert "is not an allowed program" in outcome.error
    assert not marker.exists()


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"flag": ""}, "renders an empty argument"),
        ({"flag": "a\x00b"}, "renders a NUL byte"),
        ({}, "has no attribute 'flag'"),
        ({"flag": None}, "rendered None"),
    ],
)
def test_bad_arguments_are_refused(params: dict[str, Any], reason: str) -> None:
    spec = shell(argv=[SH, "-c", "echo ran", "sh", "{{ params.flag }}"])
    outcome = ShellActuator(spec).run(action(params=params))
    assert not outcome.ok
    assert outcome.error.startswith("refused: argv[4]")
    assert reason in outcome.error


def test_injection_attempts_stay_single_inert_arguments(tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    victim = tmp_path / "x"
    victim.write_text("still here")
    dump = tmp_path / "argv.json"
    recorder = tmp_path / "record.py"
    recorder.write_text(
        "import json, os, sys\n"
        "with open(os.environ['DUMP'], 'w') as out:\n"
        "    json.dump(sys.argv[1:], out)\n"
    )
    hostile = [
        f"; rm -rf {victim}",
        f"$(touch {pwned})",
        f"`touch {pwned}`",
        f"| touch {pwned}",
        f"&& touch {pwned}",
        f"web-1\ntouch {pwned}",
        "../../etc/passwd",
        "--help",
        "-rf",
        "{{ 7*7 }}",
        "{% for x in range(3) %}{{ x }}{% endfor %}",
        "{{ ''.__class__.__mro__ }}",
        "${ENV:HOME}",
        "'\"\\",
        " spaced  out ",
        "*",
    ]
    spec = shell(
        argv=[
            PYTHON,
            str(recorder),
            "{{ target }}",
            "--",
            "{{ params.value }}",
            "x={{ params.value }}",
        ],
        env={"DUMP": str(dump)},
    )
    actuator = ShellActuator(spec)
    for value in hostile:
        outcome = actuator.run(action(target=value, params={"value": value}))
        assert outcome.ok, (value, outcome.error)
        assert json.loads(dump.read_text()) == [value, "--", value, f"x={value}"]
    # And through a real shell, used the safe way: the value is a positional parameter.
    spec = shell(argv=[SH, "-c", 'printf "%s" "$1"', "sh", "{{ target }}"])
    for value in hostile:
        outcome = ShellActuator(spec).run(action(target=value))
        assert outcome.ok, (value, outcome.error)
        assert outcome.output == value
    assert not pwned.exists()
    assert victim.read_text() == "still here"


def test_check_argv_reports_whether_an_earlier_run_took_effect(tmp_path: Path) -> None:
    done = tmp_path / "done"
    done.mkdir()
    spec = shell(
        argv=[SH, "-c", 'touch "$0/$1"', str(done), "{{ command_id }}"],
        check_argv=[
            SH,
            "-c",
            'case "$1" in broken) exit 7;; esac; test -e "$0/$1"',
            str(done),
            "{{ command_id }}",
        ],
    )
    actuator = ShellActuator(spec)
    assert actuator.can_check
    assert not actuator.idempotent
    assert actuator.check("cmd-9") is None  # exit 1: it never ran
    assert actuator.run(action(command_id="cmd-9")).ok
    found = actuator.check("cmd-9")
    assert found is not None and found.ok  # exit 0: it took effect
    with pytest.raises(OutcomeUnknown, match="check exit 7"):
        actuator.check("broken")


def test_without_check_argv_there_is_nothing_to_check() -> None:
    actuator = ShellActuator(shell(argv=[SH, "-c", "true"], idempotent=True))
    assert not actuator.can_check
    assert actuator.idempotent
    with pytest.raises(OutcomeUnknown):
        actuator.check("cmd-1")
