"""The core is pure: manager, think and govern import no clock, randomness or I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import onduty

SOURCE = Path(onduty.__file__).parent
CORE = [
    SOURCE / "manager.py",
    SOURCE / "state.py",
    SOURCE / "expressions.py",
    SOURCE / "commands.py",
    *sorted((SOURCE / "think").glob("*.py")),
    *sorted((SOURCE / "govern").glob("*.py")),
    *sorted((SOURCE / "correlate").glob("*.py")),
    *sorted((SOURCE / "lifecycle").glob("*.py")),
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
BANNED_CALLS = {
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
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
}


def imported_modules(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_core_imports_no_io_clock_or_randomness() -> None:
    problems = []
    for path in CORE:
        tree = ast.parse(path.read_text())
        for name in imported_modules(tree):
            root = name.split(".")[0]
            if root in BANNED_MODULES:
                problems.append(f"{path.name} imports {name}")
            if root == "onduty" and not any(
                name == allowed or name.startswith(allowed + ".") for allowed in ALLOWED_PROJECT
            ):
                problems.append(f"{path.name} imports {name}, outside the core")
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and (node.value.id, node.attr) in BANNED_CALLS
            ):
                problems.append(f"{path.name} reads the clock: {node.value.id}.{node.attr}")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "open"
            ):
                problems.append(f"{path.name} opens a file")
    assert problems == []


def test_the_purity_check_catches_a_clock_read() -> None:
    tree = ast.parse("import time\nfrom datetime import datetime\nx = datetime.now()\n")
    assert "time" in imported_modules(tree)
    calls = [
        (n.value.id, n.attr)
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
    ]
    assert ("datetime", "now") in calls
