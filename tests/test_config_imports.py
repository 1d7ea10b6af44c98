"""Reading a configuration loads no web framework and no HTTP client: `onduty config check`,
`replay -c` and the core read every section through pure models."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import onduty
from tests.core.test_purity import BANNED_MODULES, imported_modules

PROGRAM = textwrap.dedent(
    """
    import json, sys
    from onduty.config import parse_config

    config = parse_config(
        {
            "access": {
                "tokens": [{"name": "alice", "roles": ["admin"], "hash": "sha256:" + "ab" * 32}]
            },
            "actuators": [
                {"kind": "shell", "action": "process.restart", "argv": ["/bin/true"],
                 "allow": ["/bin/true"]},
                {"kind": "http", "action": "deploy.rollback", "url": "http://deploy.local/rollback"},
            ],
            "channels": [{"kind": "webhook", "name": "on-call", "url": "http://hooks.local/page"}],
            "sources": [
                {"kind": "http_probe", "name": "web", "url": "http://web.local/healthz"},
                {"kind": "prometheus", "name": "errors", "url": "http://prom.local:9090",
                 "query": "rate(errors[5m])", "op": ">", "threshold": 1},
            ],
        }
    )
    loaded = [m for m in ("fastapi", "starlette", "httpx", "uvicorn") if m in sys.modules]
    print(json.dumps({"loaded": loaded, "actuators": len(config.actuators)}))
    """
)


def test_parsing_every_section_imports_no_web_framework_or_http_client() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result == {"loaded": [], "actuators": 2}


SOURCE = Path(onduty.__file__).parent
# The configuration's section models and what they stand on: no I/O, no web framework, no HTTP
# client. `urllib.parse` is string parsing and allowed here (the core's check bans all of urllib).
SECTION_MODELS = {
    "onduty.values": SOURCE / "values.py",
    "onduty.httpbits": SOURCE / "httpbits.py",
    "onduty.sense.specs": SOURCE / "sense" / "specs.py",
    "onduty.act.specs": SOURCE / "act" / "specs.py",
    "onduty.act.templates": SOURCE / "act" / "templates.py",
    "onduty.escalate.specs": SOURCE / "escalate" / "specs.py",
    "onduty.api.access_config": SOURCE / "api" / "access_config.py",
}
ALLOWED_PROJECT = {*SECTION_MODELS, "onduty.commands"}
SHELL_LIBRARIES = {"fastapi", "starlette", "httpx", "uvicorn", "msgspec", "orjson"}


def section_model_problems(name: str, source: str) -> list[str]:
    problems = []
    for module in imported_modules(ast.parse(source)):
        root = module.split(".")[0]
        if module != "urllib.parse" and (root in BANNED_MODULES or root in SHELL_LIBRARIES):
            problems.append(f"{name} imports {module}")
        if root == "onduty" and module not in ALLOWED_PROJECT:
            problems.append(f"{name} imports {module}, which is no section model")
    return problems


def test_section_models_import_no_io_library() -> None:
    problems = [
        problem
        for name, path in SECTION_MODELS.items()
        for problem in section_model_problems(name, path.read_text())
    ]
    assert problems == []


def test_the_section_model_check_catches_a_shell_import() -> None:
    assert section_model_problems("m", "import httpx\nfrom onduty.sense import pollers\n") == [
        "m imports httpx",
        "m imports onduty.sense, which is no section model",
    ]
    assert section_model_problems("m", "from urllib.parse import urlsplit\n") == []
