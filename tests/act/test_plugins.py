"""Actuator kinds: the built-in ones, and one an installed package declares through the
`onduty.actuators` entry-point group."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from onduty.act.alertmanager import AlertmanagerSilenceActuator
from onduty.act.http import HttpActuator
from onduty.act.plugins import (
    BUILTIN_KINDS,
    ENTRY_POINT_GROUP,
    build_registry,
    discover_kinds,
    entry_point_kinds,
)
from onduty.act.shell import ShellActuator
from onduty.act.specs import ActuatorConfigError, parse_actuators
from onduty.act.supervisor import SupervisorActuator
from onduty.secrets import SecretError
from tests.act.helpers import action

PLUGIN = """
from onduty.act.base import Outcome


class EchoActuator:
    idempotent = True
    can_check = False

    def __init__(self, spec):
        self.spec = dict(spec)

    def run(self, command):
        return Outcome(True, output=f"{self.spec['greeting']} {command.target}")

    def check(self, command_id):
        return None


def factory(spec):
    if "greeting" not in spec:
        raise ValueError("greeting: required field is missing")
    return EchoActuator(spec)
"""


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A package on sys.path with its dist-info, as pip would install it."""
    (tmp_path / "onduty_echo_plugin.py").write_text(PLUGIN)
    info = tmp_path / "onduty_echo_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: onduty-echo-plugin\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\necho = onduty_echo_plugin:factory\n"
        "shell = onduty_echo_plugin:factory\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "echo"
    sys.modules.pop("onduty_echo_plugin", None)


SPECS: list[dict[str, Any]] = [
    {
        "kind": "shell",
        "action": "deploy.rollback",
        "argv": ["/bin/echo", "{{ target }}"],
        "allow": ["/bin/echo"],
    },
    {"kind": "http", "action": "service.scale_out", "url": "http://127.0.0.1:9/x/{{ target }}"},
    {"kind": "supervisor", "url": "http://127.0.0.1:9001/RPC2"},
    {"kind": "alertmanager.silence", "url": "http://127.0.0.1:9093"},
]


def test_the_built_in_kinds() -> None:
    assert set(BUILTIN_KINDS) == {"shell", "http", "supervisor", "alertmanager.silence"}
    assert isinstance(BUILTIN_KINDS["shell"](SPECS[0]), ShellActuator)


def test_build_registry_from_raw_specs_finds_actuators_by_action() -> None:
    registry = build_registry(SPECS, kinds=BUILTIN_KINDS)
    assert isinstance(registry.find("deploy.rollback"), ShellActuator)
    assert isinstance(registry.find("service.scale_out"), HttpActuator)
    assert isinstance(registry.find("process.restart"), SupervisorActuator)
    assert isinstance(registry.find("process.stop"), SupervisorActuator)
    assert isinstance(registry.find("alertmanager.silence"), AlertmanagerSilenceActuator)
    assert isinstance(registry.find("alertmanager.expire"), AlertmanagerSilenceActuator)
    assert registry.find("dns.flush") is None
    outcome = registry.find("deploy.rollback").run(action("checkout"))  # type: ignore[union-attr]
    assert outcome.ok and outcome.output == "checkout\n"


def test_build_registry_from_validated_specs_resolves_secrets() -> None:
    specs = parse_actuators(
        [{**SPECS[0], "env": {"TOKEN": "${ENV:ONDUTY_TEST_DEPLOY_TOKEN}"}}], plugin_kinds=()
    )
    assert build_registry(specs, env={"ONDUTY_TEST_DEPLOY_TOKEN": "x"}).find("deploy.rollback")
    with pytest.raises(SecretError, match="ONDUTY_TEST_DEPLOY_TOKEN is not set"):
        build_registry(specs, env={})
    with pytest.raises(ActuatorConfigError, match=r"actuators\[0\].allow"):
        build_registry([{**SPECS[0], "allow": []}], kinds=BUILTIN_KINDS)


def test_an_installed_entry_point_adds_a_kind(installed_plugin: str) -> None:
    assert installed_plugin in entry_point_kinds()
    assert "shell" not in entry_point_kinds()
    kinds = discover_kinds()
    assert kinds["shell"] is BUILTIN_KINDS["shell"]  # a package cannot replace a built-in kind
    registry = build_registry([*SPECS, {"kind": "echo", "action": "greet.*", "greeting": "hello"}])
    greeter = registry.find("greet.someone")
    assert greeter is not None
    assert greeter.run(action("world", name="greet.someone")).output == "hello world"
    (spec,) = parse_actuators([{"kind": "echo", "action": "greet.*", "greeting": "hi"}])
    assert spec.kind == "echo"


def test_an_unknown_kind_is_named_with_the_installed_ones(installed_plugin: str) -> None:
    with pytest.raises(ActuatorConfigError) as caught:
        parse_actuators([{"kind": "k8s", "action": "a.b"}])
    assert caught.value.problems == [
        "actuators[0].kind: unknown kind 'k8s' (expected one of alertmanager.silence, echo, "
        "http, shell, supervisor)"
    ]
