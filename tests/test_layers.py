"""Imports point one way: no module of onduty imports one of a layer to its right.

The layers, left to right, follow the loop (sense → think → govern → act → escalate) with the
shared foundations below it and the shell's wiring above it. A module's layer is the one of the
longest prefix that names it, so a pure piece of a shell package (a section's configuration
model) can sit with the configuration. Every module must be placed: a new one is put in its
layer on purpose. docs/architecture.md draws the same graph.
"""

from __future__ import annotations

import ast
from pathlib import Path

import onduty

SOURCE = Path(onduty.__file__).parent

LAYERS: list[tuple[str, list[str]]] = [
    (
        "foundation",
        [
            "onduty",
            "onduty.values",
            "onduty.httpbits",
            "onduty.secrets",
            "onduty.textsafe",
            "onduty.workers",
            "onduty.events",
            "onduty.commands",
            "onduty.expressions",
            "onduty.state",
        ],
    ),
    (
        "configuration",
        [
            "onduty.sense.specs",
            "onduty.act.specs",
            "onduty.act.templates",
            "onduty.escalate.specs",
            "onduty.api.access_config",
            "onduty.correlate.matchers",
            "onduty.correlate.inhibition",
            "onduty.config_policy",
            "onduty.config_runbooks",
            "onduty.config_server",
            "onduty.config_checkpoints",
            "onduty.config_retention",
            "onduty.config_fleet",
            "onduty.config_quality",
            "onduty.config_similar",
            "onduty.config",
        ],
    ),
    ("correlate", ["onduty.correlate"]),
    ("think", ["onduty.think"]),
    # configcheck reads a configuration the way the policy linter does: with the variables
    # conditions and templates see (govern.variables), so it stands beside the linter.
    ("govern", ["onduty.govern", "onduty.policytest", "onduty.configcheck"]),
    # A configuration file names a learning model's artifact: reading one checks both.
    ("files", ["onduty.learn", "onduty.configfile"]),
    ("core", ["onduty.lifecycle", "onduty.manager", "onduty.replay"]),
    ("log", ["onduty.log"]),
    ("bus", ["onduty.bus"]),
    ("fleet", ["onduty.fleet"]),
    ("sense", ["onduty.sense"]),
    ("act", ["onduty.act"]),
    ("escalate", ["onduty.escalate"]),
    (
        "runtime",
        [
            "onduty.runtime",
            "onduty.snapshots",
            "onduty.loop",
            "onduty.gateway",
            "onduty.counting",
            "onduty.consulting",
            "onduty.readmodel",
            "onduty.approvals",
            "onduty.obs",
            "onduty.logs",
            "onduty.tracing",
            "onduty.spans",
            "onduty.otlp",
            "onduty.api.credentials",
            "onduty.api.signatures",
            "onduty.checkpointer",
            "onduty.fleet_checkpointer",
            "onduty.retention",
            "onduty.auditing",
            "onduty.cells",
        ],
    ),
    ("service", ["onduty.health", "onduty.stepback", "onduty.service", "onduty.fleet_service"]),
    ("edges", ["onduty.api", "onduty.sim", "onduty.bench", "onduty.report"]),
    ("command line", ["onduty.cli", "onduty.__main__"]),
]


def module_names() -> dict[str, Path]:
    names: dict[str, Path] = {}
    for path in SOURCE.rglob("*.py"):
        parts = ["onduty", *path.relative_to(SOURCE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def layer_of(module: str) -> int | None:
    """The index of the module's layer: the one of the longest prefix that names it."""
    best: tuple[int, int] | None = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (
                best is None or len(prefix) > best[0]
            ):
                best = (len(prefix), index)
    return None if best is None else best[1]


def imports_of(source: str, known: set[str]) -> set[str]:
    """The project's modules a module imports (anywhere in it, function bodies included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        for name in names:
            module = name
            while module and module not in known:
                module = module.rpartition(".")[0]
            if module.startswith("onduty"):
                found.add(module)
    return found


def violations(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for module, imported in sorted(graph.items()):
        layer = layer_of(module)
        if layer is None:
            problems.append(f"{module} is in no layer (add it to LAYERS)")
            continue
        for target in sorted(imported):
            target_layer = layer_of(target)
            if target_layer is not None and target_layer > layer:
                problems.append(
                    f"{module} ({LAYERS[layer][0]}) imports {target} ({LAYERS[target_layer][0]}), "
                    "a layer to its right"
                )
    return problems


def test_no_module_imports_from_a_layer_to_its_right() -> None:
    modules = module_names()
    known = set(modules)
    graph = {name: imports_of(path.read_text(), known) - {name} for name, path in modules.items()}
    assert violations(graph) == []


def test_the_layer_check_catches_an_import_against_the_flow() -> None:
    graph = {
        "onduty.sense.pollers": {"onduty.act.executor"},
        "onduty.config": {"onduty.api.auth"},
        "onduty.act.http": {"onduty.sense.pollers", "onduty.httpbits"},
    }
    assert violations(graph) == [
        "onduty.config (configuration) imports onduty.api.auth (edges), a layer to its right",
        "onduty.sense.pollers (sense) imports onduty.act.executor (act), a layer to its right",
    ]
