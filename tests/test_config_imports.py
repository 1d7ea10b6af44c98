"""Reading a configuration loads no web framework and no HTTP client: `onduty config check`,
`replay -c` and the core read every section through pure models."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

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
