"""An in-process onduty with the console, on a free loopback port, for the console's tests.

The configuration has access control on: a viewer, an approver who is also an admin, and an
ingest credential for the test's own signals. `web` runs at autonomy `approve`, so its one
runbook (restart the instance, a `shell` actuator running /bin/true, verified within a few
seconds) waits for a person; `db` runs at `act`."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from onduty.api import build_app
from onduty.api.auth import Access, hash_token
from onduty.api.console import console_router
from onduty.config import parse_config
from onduty.runtime import Clock
from onduty.service import Service

VIEWER_TOKEN = "viewer-token-8c1d0a3e5b7f"
APPROVER_TOKEN = "approver-token-2f9e4b6a0d13"
INGEST_TOKEN = "ingest-token-71c3e9a5b2d4"
VERIFY_WINDOW_S = 6


def config_document() -> dict[str, Any]:
    return {
        "services": [
            {
                "name": "web",
                "tier": "critical",
                "autonomy": "approve",
                "instances": ["web-1", "web-2", "web-3", "web-4"],
            },
            {"name": "db", "autonomy": "act", "instances": ["db-1"]},
        ],
        "correlation": {"group_by": ["service", "alertname", "instance"]},
        "runbooks": [
            {
                "name": "restart-instance",
                "when": 'signal.labels.alertname == "InstanceDown"',
                "do": [{"action": "process.restart", "target": "{{ signal.labels.instance }}"}],
                "verify": {"signal_resolved_within": f"{VERIFY_WINDOW_S}s"},
            }
        ],
        "actuators": [
            {
                "kind": "shell",
                "action": "process.restart",
                "argv": ["/bin/true", "{{ target }}"],
                "allow": ["/bin/true"],
                "timeout": "5s",
            }
        ],
        "policy": {"approvals": {"timeout": "10m", "roles": ["approver"]}},
        "access": {
            "tokens": [
                {"name": "vera", "roles": ["viewer"], "hash": hash_token(VIEWER_TOKEN)},
                {"name": "abe", "roles": ["approver", "admin"], "hash": hash_token(APPROVER_TOKEN)},
            ],
            "ingest": [{"name": "monitoring", "hash": hash_token(INGEST_TOKEN)}],
        },
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Console:
    url: str
    service: Service

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)

    def signal(self, instance: str, status: str = "firing", **labels: str) -> None:
        """Send a signal as the monitoring system does."""
        body = {
            "source": "test",
            "fingerprint": f"down-{instance}",
            "status": status,
            "labels": {"alertname": "InstanceDown", "service": "web", "instance": instance,
                       **labels},
        }  # fmt: skip
        with self.client(INGEST_TOKEN) as client:
            response = client.post("/api/v1/signals", json=body)
        assert response.status_code == 202, response.text

    def events(self) -> list[dict[str, Any]]:
        with self.client(APPROVER_TOKEN) as client:
            response = client.get("/api/v1/events", params={"limit": 10_000})
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()
        return found

    def wait_for(self, kind: str, timeout: float = 10.0, **data: Any) -> dict[str, Any]:
        """The first event of type `kind` whose data holds `data`, waiting for it."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events():
                found = event["data"]
                if event["type"] == kind and all(found.get(k) == v for k, v in data.items()):
                    return event
            assert time.monotonic() < deadline, f"no {kind} {data} within {timeout} s"
            time.sleep(0.05)


@contextmanager
def running_console(
    directory: Path, *, stream_lifetime: float = 15.0, clock: Clock | None = None
) -> Iterator[Console]:
    """The app (`build_app` and the console's router) under uvicorn on a thread of its own;
    on `clock` when given (a simulation's `ScaledClock`), else the wall clock."""
    config = parse_config(config_document(), "console-test")
    service = Service(
        config, str(directory / "onduty.db"), access=Access.from_raw(config.access), clock=clock
    )
    app = build_app(service, console=False)  # the console is mounted below, with test settings
    app.include_router(console_router(service, stream_lifetime=stream_lifetime))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            ws="none",
            timeout_graceful_shutdown=5,
        )
    )
    thread = threading.Thread(target=server.run, name="console-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "the server stopped while starting"
        assert time.monotonic() < deadline, "the server did not start within 20 s"
        time.sleep(0.02)
    try:
        yield Console(f"http://127.0.0.1:{port}", service)
    finally:
        server.should_exit = True
        thread.join(30)
        assert not thread.is_alive(), "the server did not stop within 30 s"
