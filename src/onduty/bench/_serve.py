"""The servers of the HTTP workloads, each a subprocess on a free loopback port, on
SERVER_CPUS: `onduty serve`, and its peer, a real Prometheus Alertmanager."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from onduty.bench._procs import SCRIPTS, SERVER_CPUS, pinned, rss, stop

ALERTMANAGER = Path("/usr/bin/prometheus-alertmanager")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Started:
    """A server process this workload started (and alone may stop)."""

    name = "the server"
    process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.process.pid

    def rss(self) -> int:
        """Its resident memory, in bytes."""
        return rss(self.pid)


class Server(Started):
    """`onduty serve --store STORE ARGS… [-c CONFIG]` on a free port; its output goes to a file
    beside the store."""

    name = "onduty serve"

    def __init__(self, store: Path, *args: str, config: Path | None = None) -> None:
        self.store = store
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = list(args)
        self.config = config
        self.process = None
        self.log_path = store.with_suffix(".serve.log")

    def start(self, timeout: float = 20.0) -> Server:
        command = [
            sys.executable, "-m", "onduty", "serve", "--port", str(self.port),
            "--store", str(self.store), *self.args,
        ]  # fmt: skip
        if self.config is not None:
            command += ["-c", str(self.config)]
        with self.log_path.open("ab") as output:  # the child keeps its own copy of the file
            self.process = subprocess.Popen(
                pinned(command, SERVER_CPUS), stdout=output, stderr=subprocess.STDOUT
            )
        if not wait_ready(f"{self.url}/readyz", self.process, timeout):
            self.kill()
            raise RuntimeError(f"onduty serve did not become ready:\n{self.output()}")
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self, timeout: float = 30.0) -> int:
        if self.process is None:
            raise RuntimeError("onduty serve was never started")
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> int | None:
        """SIGTERM (onduty drains and exits 0), or SIGKILL when it does not stop in time."""
        if self.process is None:
            return None
        return stop(self.process, timeout=60)


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Poll `url` until it answers 200 (True), the process exits or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            if httpx.get(url, timeout=0.5).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.02)
    return False


class Alertmanager(Started):
    """A real Prometheus Alertmanager on a free loopback port, routing every alert to a
    receiver that does nothing, its data in `folder`; None from `start` when it cannot run."""

    name = "Alertmanager"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None

    @staticmethod
    def available() -> bool:
        """Installed, or installed now by scripts/ensure_alertmanager.sh."""
        script = SCRIPTS / "ensure_alertmanager.sh"
        if not ALERTMANAGER.exists() and script.exists():
            subprocess.run(["bash", str(script)], check=False, capture_output=True, timeout=300)
        return ALERTMANAGER.exists()

    @staticmethod
    def version() -> str:
        done = subprocess.run(
            [str(ALERTMANAGER), "--version"], capture_output=True, text=True, check=False
        )
        words = (done.stdout + done.stderr).split()
        return words[2].rstrip(",") if len(words) > 2 and words[1] == "version" else "?"

    def start(self, timeout: float = 20.0) -> Alertmanager | None:
        if not self.available():
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "alertmanager.yml"
        config.write_text('route:\n  receiver: "null"\nreceivers:\n  - name: "null"\n')
        command = [
            str(ALERTMANAGER), f"--config.file={config}",
            f"--storage.path={self.folder / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=",
        ]  # fmt: skip
        with (self.folder / "alertmanager.log").open("ab") as output:
            self.process = subprocess.Popen(
                pinned(command, SERVER_CPUS), stdout=subprocess.DEVNULL, stderr=output
            )
        if wait_ready(f"{self.url}/-/ready", self.process, timeout):
            return self
        self.stop()
        return None

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)

    def __enter__(self) -> Alertmanager:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
