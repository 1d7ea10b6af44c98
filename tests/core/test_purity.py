"""The core is pure: manager, think and govern import no clock, randomness or I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import onduty

SOURCE = Path(onduty.__file__).parent
CORE = [
    SOURCE / "manager.py",
    SOURCE / "state.py",
    SOURCE / "expressions.py",
    SOURCE / "commands.py",
    *sorted((SOURCE / "think").glob("*.py")),
    *sorted((SOURCE / "govern").rglob("*.py")),
    *sorted((SOURCE / "correlate").glob("*.py")),
    *sorted((SOURCE / "lifecycle").glob("*.py")),
    # The configuration the core reads, its sections, and the value types below them.
    SOURCE / "config.py",
    SOURCE / "config_policy.py",
    SOURCE / "config_runbooks.py",
    SOURCE / "config_server.py",
    SOURCE / "config_checkpoints.py",
    SOURCE / "config_retention.py",
    SOURCE / "config_fleet.py",
    SOURCE / "config_quality.py",
    SOURCE / "config_learning.py",
    SOURCE / "config_advisor.py",
    SOURCE / "config_similar.py",
    SOURCE / "values.py",
]
BANNED_MODULES = {
    "time",
    "random",
    "uuid",
    "socket",
    "subprocess",
    "os",
    "asyncio",
    "sqlite3",
    "threading",
    "httpx",
    "requests",
    "urllib",
    "pathlib",
    "shutil",
    "secrets",
    "io",
    "signal",
    "logging",
}
# Clock reads, by the full name of what is called, however it was imported or aliased.
BANNED_CALLS = {
    "datetime.datetime.now",
    "datetime.datetime.utcnow",
    "datetime.datetime.today",
    "datetime.date.today",
    "time.time",
    "time.time_ns",
    "time.monotonic",
    "time.monotonic_ns",
    "time.perf_counter",
    "time.localtime",
    "time.gmtime",
}
# The core may only reach into the project's own pure modules.
ALLOWED_PROJECT = {
    "onduty.events",
    "onduty.config",
    "onduty.commands",
    "onduty.state",
    "onduty.expressions",
    "onduty.manager",
    "onduty.think",
    "onduty.govern",
    "onduty.correlate",
    "onduty.lifecycle",
    "onduty.values",
    "onduty.config_policy",
    "onduty.config_runbooks",
    "onduty.config_server",
    "onduty.config_checkpoints",
    "onduty.config_retention",
    "onduty.config_fleet",
    "onduty.config_quality",
    "onduty.config_learning",
    "onduty.config_advisor",
    "onduty.config_similar",
    # The sections the configuration composes: pure models their packages own, checked by
    # tests/test_config_imports.py (they may parse URLs with urllib.parse).
    "onduty.sense.specs",
    "onduty.act.specs",
    "onduty.escalate.specs",
    "onduty.api.access_config",
    "onduty.httpbits",
}


def imported_modules(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def aliases(tree: ast.AST) -> dict[str, str]:
    """Each name the module binds by an import, and the full dotted name it stands for."""
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    bound[alias.asname] = alias.name
                else:
                    root = alias.name.split(".")[0]
                    bound[root] = root
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return bound


def dotted(node: ast.expr, bound: dict[str, str]) -> str | None:
    """The full name `node` (a name or a chain of attributes) refers to, aliases resolved."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([bound.get(node.id, node.id), *reversed(parts)])


def impurities(source: str, name: str) -> list[str]:
    """What in `source` (the module `name`) reads a clock, does I/O, draws randomness or
    reaches outside the core."""
    problems = []
    tree = ast.parse(source)
    for module in imported_modules(tree):
        root = module.split(".")[0]
        if root in BANNED_MODULES:
            problems.append(f"{name} imports {module}")
        if root == "onduty" and not any(
            module == allowed or module.startswith(allowed + ".") for allowed in ALLOWED_PROJECT
        ):
            problems.append(f"{name} imports {module}, outside the core")
    bound = aliases(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            called = dotted(node.func, bound)
            if called in BANNED_CALLS:
                problems.append(f"{name} reads the clock: {called}")
            if called == "open":
                problems.append(f"{name} opens a file")
    return problems


def test_core_imports_no_io_clock_or_randomness() -> None:
    problems = [p for path in CORE for p in impurities(path.read_text(), path.name)]
    assert problems == []


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        (
            "import datetime as dt\nx = dt.datetime.now()\n",
            "reads the clock: datetime.datetime.now",
        ),
        (
            "import datetime\nx = datetime.datetime.now()\n",
            "reads the clock: datetime.datetime.now",
        ),
        (
            "from datetime import datetime\nx = datetime.now()\n",
            "reads the clock: datetime.datetime.now",
        ),
        (
            "from datetime import datetime as D\nx = D.utcnow()\n",
            "reads the clock: datetime.datetime.utcnow",
        ),
        ("from datetime import date\nx = date.today()\n", "reads the clock: datetime.date.today"),
        ("import datetime as dt\nx = dt.date.today()\n", "reads the clock: datetime.date.today"),
        ("import time as t\nx = t.time()\n", "reads the clock: time.time"),
        ("from time import monotonic as m\nx = m()\n", "reads the clock: time.monotonic"),
        ("import time as t\n", "imports time"),
        ("import random\n", "imports random"),
        ("x = open('f')\n", "opens a file"),
        ("from onduty.act import executor\n", "imports onduty.act, outside the core"),
    ],
)
def test_the_purity_check_catches_a_bad_sample(source: str, problem: str) -> None:
    assert f"sample.py {problem}" in impurities(source, "sample.py")


def test_the_purity_check_passes_pure_code() -> None:
    source = (
        "from datetime import datetime, timedelta\n"
        "def later(ts: datetime) -> datetime:\n"
        "    return ts + timedelta(seconds=1)\n"
    )
    assert impurities(source, "sample.py") == []
