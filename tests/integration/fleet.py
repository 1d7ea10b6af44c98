"""A fleet on this machine for the tests: `onduty serve` processes on one PostgreSQL schema and
one NATS JetStream stream of their own, both dropped afterwards.

The action every incident triggers appends a line to a file and leaves a marker, and its check
reads the marker: the file shows whether any action ever ran twice, whichever manager ran it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import nats
import psycopg
import yaml
from psycopg import sql

from tests.integration.server import Server

DATABASE = "postgresql://postgres@127.0.0.1:5432/test"
NATS = "nats://127.0.0.1:4222"

ACTION = """\
import os, sys
runs, markers, command_id, target = sys.argv[1:5]
with open(runs, "a") as out:
    out.write(f"{command_id} {target} {os.getpid()}\\n")
open(os.path.join(markers, command_id), "w").close()
"""
CHECK = """\
import os, sys
markers, command_id = sys.argv[1:3]
sys.exit(0 if os.path.exists(os.path.join(markers, command_id)) else 1)
"""


@dataclass
class Fleet:
    folder: Path
    schema: str
    stream: str
    partitions: int
    database: str = DATABASE
    bus: str = NATS
    servers: list[Server] = field(default_factory=list)

    @property
    def store(self) -> str:
        return f"{self.database}?schema={self.schema}"

    @property
    def config(self) -> Path:
        return self.folder / "onduty.yaml"

    def region_store(self, region: str) -> str:
        """The store of another region: a schema of its own beside this fleet's."""
        return f"{self.database}?schema={self.schema}_{region}"

    @property
    def key(self) -> Path:
        """The key every node signs checkpoints with (made by the first to start)."""
        return self.folder / "fleet.key"

    def server(self, name: str, *args: str, store: str | None = None) -> Server:
        """A node with the fleet's configuration (its witness file is its own by its name)."""
        running = Server(
            store or self.store,
            "--name", name, *args,
            config=self.config,
            log_path=self.folder / f"{name}.log",
        )  # fmt: skip
        self.servers.append(running)
        return running

    def runs(self) -> Counter[str]:
        """How many times each action ran, by target."""
        path = self.folder / "runs.txt"
        lines = path.read_text().splitlines() if path.exists() else []
        return Counter(line.split()[1] for line in lines)

    def audit(self) -> subprocess.CompletedProcess[str]:
        return self.command("audit", "verify")

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`onduty ARGS --store <this fleet's store>`, as a user runs it."""
        return subprocess.run(
            [sys.executable, "-m", "onduty", *args, "--store", self.store],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )


def held(server: Server) -> int:
    """The partitions a manager runs, from its /metrics."""
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith("onduty_partitions_held "):
            return int(float(line.split()[1]))
    return 0


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> float:
    """Poll `predicate()` until true; the seconds it took. Fails naming `what`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


def signal_body(instance: str) -> dict[str, object]:
    return {
        "source": "test",
        "fingerprint": f"down-{instance}",
        "status": "firing",
        "labels": {"alertname": "InstanceDown", "service": "web", "instance": instance},
    }


def write_config(
    fleet: Fleet,
    instances: int,
    guardrails: list[dict[str, object]],
    *,
    central: bool = False,
    tier: str = "standard",
    autonomy: str = "act",
) -> None:
    folder, stream = fleet.folder, fleet.stream
    (folder / "action.py").write_text(ACTION)
    (folder / "check.py").write_text(CHECK)
    (folder / "markers").mkdir()
    python = sys.executable
    document = {
        "store": fleet.store,
        "bus": fleet.bus,
        "fleet": {
            "partitions": fleet.partitions,
            "lease_ttl": "3s",
            "stream": stream,
            "subjects": f"t.{stream.lower()}",
            **({"central": f"{fleet.database}?schema={fleet.schema}_central"} if central else {}),
        },
        "checkpoints": {
            "key": str(folder / "fleet.key"),
            "witness": str(folder / "witness-{node}.jsonl"),
            "every_events": 50,
            "every": "2s",
        },
        "services": [
            {
                "name": "web",
                "tier": tier,
                "autonomy": autonomy,
                "instances": [f"web-{i}" for i in range(instances)],
            }
        ],
        "correlation": {"group_by": ["service", "alertname", "instance"], "group_wait": "0s"},
        "runbooks": [
            {
                "name": "restart-down-instance",
                "when": 'signal.labels.alertname == "InstanceDown"',
                "do": [{"action": "process.restart", "target": "{{ signal.labels.instance }}"}],
            }
        ],
        "policy": {"guardrails": guardrails},
        "actuators": [
            {
                "kind": "shell",
                "action": "process.restart",
                "argv": [
                    python, str(folder / "action.py"), str(folder / "runs.txt"),
                    str(folder / "markers"), "{{ command_id }}", "{{ target }}",
                ],
                "check_argv": [
                    python, str(folder / "check.py"), str(folder / "markers"), "{{ command_id }}"
                ],
                "allow": [python],
            }
        ],
    }  # fmt: skip
    (folder / "onduty.yaml").write_text(yaml.safe_dump(document))


async def _delete_stream(server: str, name: str) -> None:
    client = await nats.connect(server, connect_timeout=2, max_reconnect_attempts=0)
    try:
        await client.jetstream().delete_stream(name)
    except nats.js.errors.NotFoundError:
        pass
    finally:
        await client.close()


@contextmanager
def fleet(
    folder: Path,
    *,
    partitions: int = 8,
    instances: int = 100,
    database: str = DATABASE,
    bus: str = NATS,
    cleanup: bool = True,
    guardrails: list[dict[str, object]] | None = None,
    central: bool = False,
    tier: str = "standard",
    autonomy: str = "act",
) -> Iterator[Fleet]:
    """A fleet's own schema and stream, dropped (and its servers killed) when done; with
    `cleanup` off, the servers are private ones that go away whole."""
    tag = uuid.uuid4().hex[:10]
    made = Fleet(folder, f"fleet_{tag}", f"FLEET_{tag.upper()}", partitions, database, bus)
    write_config(made, instances, guardrails or [], central=central, tier=tier, autonomy=autonomy)
    try:
        yield made
    finally:
        for server in made.servers:
            if server.process is not None and server.process.poll() is None:
                server.process.kill()
                server.process.wait(10)
        if cleanup:
            with psycopg.connect(database, autocommit=True) as conn:
                drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE")
                found = conn.execute(
                    "SELECT nspname FROM pg_namespace WHERE nspname = %s OR nspname LIKE %s",
                    (made.schema, f"{made.schema}\\_%"),
                ).fetchall()
                for (schema,) in found:  # the fleet's, its other regions' and the central one
                    conn.execute(drop.format(sql.Identifier(schema)))
            asyncio.run(_delete_stream(bus, made.stream))
