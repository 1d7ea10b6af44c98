"""Start `onduty serve` as a real subprocess and talk to it over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """`onduty serve` on a free port. `env` adds environment variables; `tls` is a (certificate,
    key) pair to serve HTTPS with (the certificate is also what the clients trust); `token` is
    the bearer token `client()` sends unless told otherwise."""

    def __init__(
        self,
        store: Path | str,
        *args: str,
        config: Path | None = None,
        env: dict[str, str] | None = None,
        tls: tuple[Path, Path] | None = None,
        token: str | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.store = store
        self.port = free_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.args = list(args)
        self.config = config
        self.env = env
        self.tls = tls
        self.token = token
        self.process: subprocess.Popen[bytes] | None = None
        if log_path is None:
            assert isinstance(store, Path), "a store given by URL needs a log_path"
            log_path = store.with_suffix(".serve.log")
        self.log_path = log_path

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What clients verify the server with: its own certificate under TLS."""
        if self.tls is None:
            return True
        return ssl.create_default_context(cafile=str(self.tls[0]))

    def start(self, timeout: float = 20.0) -> Server:
        command = [
            sys.executable, "-m", "onduty", "serve", "--port", str(self.port),
            "--store", str(self.store), *self.args,
        ]  # fmt: skip
        if self.config is not None:
            command += ["-c", str(self.config)]
        if self.tls is not None:
            command += ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]
        environment = {**os.environ, **self.env} if self.env else None
        with self.log_path.open("ab") as output:  # the child keeps its own copy of the file
            self.process = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, env=environment
            )
        deadline = time.monotonic() + timeout
        verify = self.verify
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"onduty serve exited early:\n{self.output()}")
            try:
                ready = httpx.get(f"{self.url}/readyz", timeout=0.5, verify=verify)
                if ready.status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"onduty serve did not become ready:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def client(self, token: str | None = None) -> httpx.Client:
        """A client of this server, sending `token` (or the server's default) as a bearer."""
        token = token or self.token
        headers = {"Authorization": f"Bearer {token}"} if token else None
        return httpx.Client(base_url=self.url, timeout=10, headers=headers, verify=self.verify)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
