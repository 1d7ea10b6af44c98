"""`onduty serve` as a subprocess on a free loopback port, for the HTTP workloads."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """`onduty serve --store STORE ARGS… [-c CONFIG]` on a free port; its output goes to a file
    beside the store."""

    def __init__(self, store: Path, *args: str, config: Path | None = None) -> None:
        self.store = store
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = list(args)
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = store.with_suffix(".serve.log")

    def start(self, timeout: float = 20.0) -> Server:
        command = [
            sys.executable, "-m", "onduty", "serve", "--port", str(self.port),
            "--store", str(self.store), *self.args,
        ]  # fmt: skip
        if self.config is not None:
            command += ["-c", str(self.config)]
        with self.log_path.open("ab") as output:  # the child keeps its own copy of the file
            self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"onduty serve exited early:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=0.5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"onduty serve did not become ready:\n{self.output()}")

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
