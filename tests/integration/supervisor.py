"""A real supervisord for end-to-end tests: the supervisor example's configuration, rewritten to
run on free loopback ports inside a temporary directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.integration.server import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "supervisor"
SUPERVISORD = Path("/usr/bin/supervisord")
USERNAME = "onduty"


def ensure_supervisord() -> None:
    if not SUPERVISORD.exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "ensure_supervisor.sh")], check=True)
    assert SUPERVISORD.exists(), "supervisord could not be installed"


def substitute(text: str, replacements: dict[str, str]) -> str:
    """Replace each key with its value; every key must occur (the example may not drift away
    from what the test believes it runs)."""
    for old, new in replacements.items():
        assert old in text, f"{old!r} is no longer in the example"
        text = text.replace(old, new)
    return text


@dataclass
class Supervised:
    """supervisord running the example's program `web` (app.py)."""

    rpc_url: str
    app_url: str
    password: str
    directory: Path

    def info(self, name: str = "web") -> dict[str, Any]:
        authenticated = self.rpc_url.replace("http://", f"http://{USERNAME}:{self.password}@")
        with xmlrpc.client.ServerProxy(authenticated) as proxy:
            result = proxy.supervisor.getProcessInfo(name)
        assert isinstance(result, dict)
        return result

    def health(self) -> int | None:
        """The app's /health status, or None when nothing answers."""
        try:
            return httpx.get(f"{self.app_url}/health", timeout=1).status_code
        except httpx.TransportError:
            return None

    def log(self) -> str:
        parts = []
        for path in sorted(self.directory.glob("*.log")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')}")
        return "\n".join(parts)


@contextmanager
def example_supervisord(directory: Path, password: str) -> Iterator[Supervised]:
    """Start supervisord with a copy of `examples/supervisor/supervisord.conf` (and app.py)
    in `directory`, on free ports; the password comes from the environment, as in the
    example. Stops supervisord, and with it the app, on the way out."""
    ensure_supervisord()
    rpc_port, app_port = free_port(), free_port()
    shutil.copy(EXAMPLE / "app.py", directory / "app.py")
    config = directory / "supervisord.conf"
    config.write_text(
        substitute(
            (EXAMPLE / "supervisord.conf").read_text(),
            {
                "127.0.0.1:9001": f"127.0.0.1:{rpc_port}",
                "/tmp/onduty-example-supervisord.log": f"{directory}/supervisord.log",
                "/tmp/onduty-example-supervisord.pid": f"{directory}/supervisord.pid",
                "childlogdir=/tmp": f"childlogdir={directory}",
                "python3 %(here)s/app.py --port 8080": (
                    f"{sys.executable} %(here)s/app.py --port {app_port}"
                ),
            },
        )
    )
    supervised = Supervised(
        rpc_url=f"http://127.0.0.1:{rpc_port}/RPC2",
        app_url=f"http://127.0.0.1:{app_port}",
        password=password,
        directory=directory,
    )
    with (directory / "out.log").open("wb") as out:
        process = subprocess.Popen(
            [str(SUPERVISORD), "-n", "-c", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "SUPERVISOR_PASSWORD": password},
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None:
                raise AssertionError(f"supervisord exited at start:\n{supervised.log()}")
            try:
                if supervised.info()["statename"] == "RUNNING" and supervised.health() == 200:
                    break
            except (OSError, xmlrpc.client.Error):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the example app did not come up:\n{supervised.log()}")
            time.sleep(0.05)
        yield supervised
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
