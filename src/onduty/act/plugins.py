"""Actuator kinds: the built-in ones, and those installed packages provide.

A package adds a kind by declaring an entry point in the group `onduty.actuators`, named after
the kind, whose object is a factory `(spec: Mapping[str, Any]) -> Actuator`; the factory gets
the spec as written in the configuration (`kind`, `action`, `timeout` and its own fields) and
validates it. Built-in kinds are registered in code and cannot be replaced by an entry point.

Crash semantics of a plugin: by default its run is taken to be a request to another system
(`in_flight = "request"`, see `onduty.act.base.Actuator`): after a crash mid-run, the restart
waits until the action's timeout has passed since the run began, then checks it (`can_check`),
runs it again (`idempotent`) or escalates its outcome as unknown. A plugin that starts programs
which outlive onduty declares `in_flight = "process"` and hands them the run's lock
(`onduty.act.runs.current_run()`), so the restart waits for them to exit instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import entry_points
from typing import Any

import httpx

from onduty.act import alertmanager, http, shell, supervisor
from onduty.act.base import Actuator, ActuatorRegistry
from onduty.act.specs import (
    ENTRY_POINT_GROUP,
    AlertmanagerSilenceSpec,
    AnyActuatorSpec,
    HttpSpec,
    PluginSpec,
    ShellSpec,
    SupervisorSpec,
    entry_point_kinds,
    parse_actuators,
)

log = logging.getLogger(__name__)


ActuatorFactory = Callable[[Mapping[str, Any]], Actuator]

BUILTIN_KINDS: dict[str, ActuatorFactory] = {
    "shell": shell.from_spec,
    "http": http.from_spec,
    "supervisor": supervisor.from_spec,
    "alertmanager.silence": alertmanager.from_spec,
}


def discover_kinds() -> dict[str, ActuatorFactory]:
    """Every kind: the built-in ones, then those of the `onduty.actuators` entry points. An
    entry point named like a built-in kind is ignored (a package cannot replace the shell
    actuator), unless it is the built-in factory itself."""
    kinds: dict[str, ActuatorFactory] = dict(BUILTIN_KINDS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in BUILTIN_KINDS:
            if ep.value.replace(" ", "") != _qualified(BUILTIN_KINDS[ep.name]):
                log.warning(
                    "ignoring entry point %s = %s: %r is a built-in actuator kind",
                    ep.name,
                    ep.value,
                    ep.name,
                )
            continue
        factory = ep.load()
        if not callable(factory):
            raise TypeError(f"entry point {ep.name} = {ep.value} is not callable")
        kinds[ep.name] = factory
    return kinds


def _qualified(factory: Callable[..., Any]) -> str:
    return f"{factory.__module__}:{factory.__qualname__}"


def load_kind(kind: str) -> ActuatorFactory:
    """The factory of one kind: built-in, or the entry point of that name (loaded now)."""
    if kind in BUILTIN_KINDS:
        return BUILTIN_KINDS[kind]
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=kind):
        factory = ep.load()
        if not callable(factory):
            raise TypeError(f"entry point {ep.name} = {ep.value} is not callable")
        return factory  # type: ignore[no-any-return]
    raise ValueError(f"no actuator kind {kind!r} is installed")


def build_actuator(
    spec: AnyActuatorSpec,
    *,
    kinds: Mapping[str, ActuatorFactory] | None = None,
    env: Mapping[str, str] | None = None,
    client: httpx.Client | None = None,
) -> Actuator:
    """The actuator for one validated spec; secrets are resolved here (`SecretError`)."""
    if isinstance(spec, ShellSpec):
        return shell.ShellActuator(spec, env=env)
    if isinstance(spec, HttpSpec):
        return http.HttpActuator(spec, client, env=env)
    if isinstance(spec, SupervisorSpec):
        return supervisor.SupervisorActuator(spec, env=env)
    if isinstance(spec, AlertmanagerSilenceSpec):
        return alertmanager.AlertmanagerSilenceActuator(spec, client, env=env)
    if kinds is not None:
        if spec.kind not in kinds:
            raise ValueError(f"no actuator kind {spec.kind!r} is installed")
        return kinds[spec.kind](spec.options())
    return load_kind(spec.kind)(spec.options())


def build_registry(
    specs: Iterable[AnyActuatorSpec | Mapping[str, Any]],
    *,
    kinds: Mapping[str, ActuatorFactory] | None = None,
    env: Mapping[str, str] | None = None,
    client: httpx.Client | None = None,
) -> ActuatorRegistry:
    """An `ActuatorRegistry` with one actuator per spec, registered under its `action`.

    `specs` may be validated specs or raw mappings (validated here with `parse_actuators`).
    `kinds` replaces the installed entry points (tests, embedding); `env` replaces
    `os.environ` for `${ENV:NAME}` references; `client` is shared by the HTTP and Alertmanager
    actuators (the caller closes it; without one each request has a client of its own)."""
    validated: list[AnyActuatorSpec] = []
    raw: list[Mapping[str, Any]] = []
    for item in specs:
        if isinstance(item, Mapping):
            raw.append(item)
        else:
            validated.append(item)
    if raw and validated:
        raise TypeError("give either validated specs or raw mappings, not both")
    if raw:
        plugin_kinds = entry_point_kinds() if kinds is None else set(kinds) - set(BUILTIN_KINDS)
        validated = parse_actuators(raw, plugin_kinds=plugin_kinds)
    registry = ActuatorRegistry()
    for spec in validated:
        actuator = build_actuator(spec, kinds=kinds, env=env, client=client)
        registry.register(spec.action, actuator)
    return registry


__all__ = [
    "BUILTIN_KINDS",
    "ENTRY_POINT_GROUP",
    "ActuatorFactory",
    "PluginSpec",
    "build_actuator",
    "build_registry",
    "discover_kinds",
    "entry_point_kinds",
    "load_kind",
]
