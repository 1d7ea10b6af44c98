"""Two regions of onduty on this machine, one central policy, started with one command.

    .venv/bin/python examples/multi-region/run.py            # until Ctrl-C
    .venv/bin/python examples/multi-region/run.py --for 60   # or for a minute

It makes sure PostgreSQL and NATS answer (starting them with scripts/services.sh when they do
not), publishes onduty.yaml as the central policy bundle (schema onduty_central, which every
node polls), then starts,
per region (`eu`, `us`): one ingest node and two managers, each an `onduty serve` on a port of
its own, with its region's schema (onduty_eu, onduty_us) and `--region`. It prints the consoles
and the PIDs, reports partitions moving between a region's managers, and on Ctrl-C, SIGTERM or
at the end of `--for` stops exactly the processes it started, by PID.

See README.md beside it for a walk-through.
"""
# The banned-API rule of the project guards its pure core; this is a launcher of processes.
# ruff: noqa: TID251

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
REGIONS = ("eu", "us")
DATABASE = "postgresql://postgres@127.0.0.1:5432/postgres"
NATS = "nats://127.0.0.1:4222"
READY_WITHIN_S = 60.0
STOP_WITHIN_S = 20.0


@dataclass
class Node:
    """One `onduty serve` this script started."""

    name: str
    region: str
    role: str
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None
    gone: bool = field(default=False)
    """Its exit was reported."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid


@dataclass(frozen=True)
class Layout:
    """Where this run keeps its state: the central schema, a schema per region, the config."""

    database: str
    namespace: str
    config: Path

    def schema_url(self, schema: str) -> str:
        joiner = "&" if urlsplit(self.database).query else "?"
        return f"{self.database}{joiner}schema={self.namespace}_{schema}"

    @property
    def central(self) -> str:
        return self.schema_url("central")

    def store(self, region: str) -> str:
        return self.schema_url(region)


# ------------------------------------------------------------------------------ the servers


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def address(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url.split(",", maxsplit=1)[0])
    return parts.hostname or "127.0.0.1", parts.port or default_port


def ensure_services(database: str, nats: str) -> list[str]:
    """Start PostgreSQL and NATS with scripts/services.sh when one does not answer; what still
    does not answer afterwards."""
    servers = {"PostgreSQL": address(database, 5432), "NATS": address(nats, 4222)}
    wanted = {f"{name} at {host}:{port}": (host, port) for name, (host, port) in servers.items()}
    if all(answers(*where) for where in wanted.values()):
        return []
    print("starting PostgreSQL and NATS (scripts/services.sh) ...", flush=True)
    subprocess.run(["bash", str(ROOT / "scripts" / "services.sh")], check=False, timeout=120)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        down = [what for what, where in wanted.items() if not answers(*where)]
        if not down:
            return []
        time.sleep(0.5)
    return down


# ------------------------------------------------------------------------------ the fleet


def onduty(*args: str) -> list[str]:
    return [sys.executable, "-m", "onduty", *args]


def serve_command(node: Node, layout: Layout) -> list[str]:
    """How one node is started. Every node reads the same file with `-c` (its shell settings,
    and `fleet.central`, where it polls the central policy bundle) and gets its own store,
    region, role and name on the command line."""
    return onduty(
        "serve",
        "-c", str(layout.config),
        "--store", layout.store(node.region),
        "--region", node.region,
        "--role", node.role,
        "--name", node.name,
        "--port", str(node.port),
    )  # fmt: skip


def start(node: Node, layout: Layout) -> None:
    with node.log.open("ab") as output:
        node.process = subprocess.Popen(
            serve_command(node, layout),
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=node.log.parent,
            # A session of its own: Ctrl-C in the terminal reaches this script only, which
            # then stops each node by its PID.
            start_new_session=True,
        )


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""
    except (urllib.error.URLError, OSError):
        return 0, ""


def partitions_held(node: Node) -> int | None:
    """What the node's /metrics says it holds; None when it does not answer."""
    status, text = get(f"{node.url}/metrics")
    if status != 200:
        return None
    for line in text.splitlines():
        if line.startswith("onduty_partitions_held "):
            return int(float(line.split()[1]))
    return 0


def tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def wait_ready(nodes: list[Node], partitions: int, stop: threading.Event) -> str | None:
    """Wait until every node answers /readyz and each region's managers hold all its
    partitions; why not, when they do not."""
    deadline = time.monotonic() + READY_WITHIN_S
    waiting = list(nodes)
    while waiting:
        for node in list(waiting):
            assert node.process is not None
            if node.process.poll() is not None:
                return f"{node.name} exited with {node.process.returncode}:\n{tail(node.log)}"
            if get(f"{node.url}/readyz")[0] == 200:
                waiting.remove(node)
        if stop.wait(0.2):
            return "interrupted"
        if time.monotonic() > deadline:
            return f"not ready within {READY_WITHIN_S:g} s: {', '.join(n.name for n in waiting)}"
    for region in REGIONS:
        managers = [n for n in nodes if n.region == region and n.role == "manager"]
        # Ready once the region's partitions are spread over its managers, not merely taken
        # by the first one up.
        share = partitions // len(managers)
        while not all((partitions_held(m) or 0) >= share for m in managers):
            if stop.wait(0.2):
                return "interrupted"
            if time.monotonic() > deadline:
                return f"region {region}: its managers did not share its {partitions} partitions"
    return None


def stop_all(nodes: list[Node]) -> None:
    """SIGTERM to every node still running (each drains and exits), SIGKILL to any that has
    not exited within STOP_WITHIN_S; only these PIDs."""
    running = [n for n in nodes if n.process is not None and n.process.poll() is None]
    for node in running:
        node.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    deadline = time.monotonic() + STOP_WITHIN_S
    for node in running:
        assert node.process is not None
        try:
            node.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{node.name} (pid {node.pid}) did not stop in time: killed", flush=True)
            node.process.kill()
            node.process.wait()
    pids = ", ".join(str(n.pid) for n in nodes if n.process is not None)
    print(f"stopped: {len(nodes)} processes (pids {pids})", flush=True)
    for node in running:
        assert node.process is not None
        if node.process.returncode != 0:
            print(f"{node.name} exited with {node.process.returncode}: see {node.log}", flush=True)


# ------------------------------------------------------------------------------ what it prints


def show(nodes: list[Node], layout: Layout, logs: Path) -> None:
    print(f"\n{'region':<7}{'node':<15}{'role':<9}{'pid':>8}  console", flush=True)
    for node in nodes:
        print(f"{node.region:<7}{node.name:<15}{node.role:<9}{node.pid:>8}  {node.url}/")
    print(f"\ncentral policy: {layout.central}")
    for region in REGIONS:
        print(f"region {region}: store {layout.store(region)}")
    print(f"logs: {logs}\n")
    for region in REGIONS:
        ingest = next(n for n in nodes if n.region == region and n.role == "ingest")
        body = json.dumps(alert(region), separators=(",", ":"))
        print(f"an alert to {region}:")
        print(
            f"  curl -s -XPOST {ingest.url}/api/v1/signals "
            f"-H 'Content-Type: application/json' -d '{body}'"
        )
    print("", flush=True)


def alert(region: str, instance: int = 1) -> dict[str, object]:
    """A firing InstanceDown of a checkout instance of `region`."""
    target = f"checkout-{region}-{instance}"
    return {
        "source": "me",
        "fingerprint": f"down-{target}",
        "status": "firing",
        "labels": {"alertname": "InstanceDown", "service": "checkout", "instance": target},
    }


def report_changes(nodes: list[Node], held: dict[str, int | None]) -> None:
    """Say when a node exited and when partitions moved between a region's managers."""
    for node in nodes:
        assert node.process is not None
        code = node.process.poll()
        if code is not None and not node.gone:
            node.gone = True
            how = f"signal {-code} ({signal.Signals(-code).name})" if code < 0 else f"code {code}"
            print(f"{node.name} (pid {node.pid}) exited with {how}", flush=True)
    for region in REGIONS:
        managers = [n for n in nodes if n.region == region and n.role == "manager"]
        now = {m.name: None if m.gone else partitions_held(m) for m in managers}
        if any(held.get(name, -1) != count for name, count in now.items()):
            shares = ", ".join(
                f"{name} {'-' if count is None else count}" for name, count in now.items()
            )
            print(f"region {region}: partitions held: {shares}", flush=True)
            held.update(now)


# ------------------------------------------------------------------------------ the command


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--for", dest="seconds", type=float, help="Stop after this many seconds.")
    parser.add_argument("--database", metavar="URL", default=DATABASE, help="PostgreSQL.")
    parser.add_argument("--nats", metavar="URL", default=NATS, help="NATS JetStream.")
    parser.add_argument(
        "--port", type=int, default=8810,
        help="First port: eu's nodes listen on PORT.., us's on PORT+10.. (0: free ports).",
    )  # fmt: skip
    parser.add_argument("--managers", metavar="N", type=int, default=2, help="Managers per region.")
    parser.add_argument(
        "--namespace", metavar="NAME", default="onduty",
        help="Prefix of the schemas (NAME_central, NAME_eu, NAME_us); another than onduty also "
        "gets a stream of its own, NAME_SIGNALS, so that runs side by side never meet.",
    )  # fmt: skip
    parser.add_argument(
        "--logs", metavar="DIR", type=Path,
        help="Where each node's log goes (default: a new temporary folder).",
    )  # fmt: skip
    args = parser.parse_args()
    if args.managers < 1:
        parser.error("--managers: at least 1")
    return args


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare_config(namespace: str, database: str, nats: str, logs: Path) -> tuple[Path, int]:
    """The configuration every node reads, and its number of partitions: onduty.yaml as it is,
    or a copy under `logs` with this run's own stream and subjects (another namespace) or
    servers."""
    source = HERE / "onduty.yaml"
    document = yaml.safe_load(source.read_text())
    partitions = int(document["fleet"]["partitions"])
    if namespace == "onduty" and database == DATABASE and nats == NATS:
        return source, partitions
    if namespace != "onduty":
        document["fleet"]["stream"] = f"{namespace.upper()}_SIGNALS"
        document["fleet"]["subjects"] = f"{namespace}.signals"
    layout = Layout(database, namespace, source)
    document["bus"] = nats
    document["store"] = layout.store(REGIONS[0])
    document["fleet"]["central"] = layout.central
    copy = logs / "onduty.yaml"
    copy.write_text(yaml.safe_dump(document, sort_keys=False))
    return copy, partitions


def main() -> int:
    args = arguments()
    down = ensure_services(args.database, args.nats)
    if down:
        print(f"error: {' and '.join(down)} do not answer", file=sys.stderr)
        return 2
    logs = args.logs or Path(tempfile.mkdtemp(prefix="onduty-multi-region-"))
    logs.mkdir(parents=True, exist_ok=True)
    config, partitions = prepare_config(args.namespace, args.database, args.nats, logs)
    layout = Layout(args.database, args.namespace, config)

    # The central schema is the file's fleet.central (layout.central).
    published = subprocess.run(
        onduty("policy", "publish", str(config), "--by", "multi-region example"),
        check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    print(published.stdout.strip() or published.stderr.strip(), flush=True)
    if published.returncode != 0:
        return published.returncode

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    nodes: list[Node] = []
    for index, region in enumerate(REGIONS):
        roles = [("ingest", "ingest")] + [
            ("manager", f"manager-{i}") for i in range(1, args.managers + 1)
        ]
        for offset, (role, suffix) in enumerate(roles):
            port = free_port() if args.port == 0 else args.port + 10 * index + offset
            name = f"{region}-{suffix}"
            nodes.append(Node(name, region, role, port, logs / f"{name}.log"))
    try:
        for node in nodes:
            start(node, layout)
        print(f"starting {len(nodes)} nodes ...", flush=True)
        problem = wait_ready(nodes, partitions, stop)
        if problem is not None:
            print(f"error: {problem}", file=sys.stderr, flush=True)
            return 130 if problem == "interrupted" else 1
        show(nodes, layout, logs)
        ends = f"for {args.seconds:g} s" if args.seconds else "until Ctrl-C"
        print(f"ready: {len(nodes)} nodes in {len(REGIONS)} regions, {ends}", flush=True)
        held: dict[str, int | None] = {}
        deadline = time.monotonic() + args.seconds if args.seconds else None
        while not stop.wait(1.0):
            report_changes(nodes, held)
            if deadline is not None and time.monotonic() >= deadline:
                break
        return 0
    finally:
        stop_all(nodes)


if __name__ == "__main__":
    sys.exit(main())
