"""Real receivers on loopback: an HTTP server for webhook, Slack and PagerDuty deliveries, and
an SMTP server (aiosmtpd) for email, plus a recorder for the events a Deliverer writes."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from onduty.commands import Notify
from onduty.events import NotificationFailed, NotificationSent, Payload


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_url() -> str:
    """A loopback URL where nothing listens (connections are refused)."""
    return f"http://127.0.0.1:{free_port()}/hook"


def notify(
    kind: str = "escalation",
    *,
    incident_id: str = "inc-7f3a",
    channels: tuple[str, ...] = ("hook",),
    message: str = "checkout 5xx above 5% for 10m: no runbook matched",
    title: str = "Checkout error rate high",
    service: str | None = "checkout",
    tier: int = 0,
    approval_id: str | None = None,
    dedup_key: str = "",
) -> Notify:
    return Notify(
        kind=kind,
        incident_id=incident_id,
        channels=channels,
        message=message,
        approval_id=approval_id,
        tier=tier,
        dedup_key=dedup_key,
        title=title,
        service=service,
    )


class Recorder:
    """The `record` callable: keeps (payload, stream) in order."""

    def __init__(self) -> None:
        self.events: list[tuple[Payload, str]] = []
        self.changed = threading.Condition()

    def __call__(self, body: Payload, stream: str) -> None:
        with self.changed:
            self.events.append((body, stream))
            self.changed.notify_all()

    @property
    def payloads(self) -> list[Payload]:
        return [body for body, _ in self.events]

    def outcomes(self) -> list[NotificationSent | NotificationFailed]:
        found = []
        for body in self.payloads:
            assert isinstance(body, NotificationSent | NotificationFailed), body
            found.append(body)
        return found

    def types(self) -> list[str]:
        return [type(body).__name__ for body in self.payloads]

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Payload]:
        with self.changed:
            if not self.changed.wait_for(lambda: len(self.events) >= count, timeout):
                raise AssertionError(f"expected {count} events, got {self.types()}")
        return self.payloads


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


# --------------------------------------------------------------------------- HTTP


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Answers POSTs: with the statuses in `script` first (0: close the connection without an
    answer), then with `status`. `answer` is the response body; `delay` holds each answer back."""

    url: str = ""
    status: int = 200
    answer: bytes = b"ok"
    script: list[int] = field(default_factory=list)
    delay: float = 0.0
    echo_header: str | None = None
    gate: threading.Event | None = None
    """When set, every answer waits until the event is set."""
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, count: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} requests, got {len(self.requests)}")
            time.sleep(0.005)

    def bodies(self) -> list[Any]:
        return [request.json() for request in self.requests]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            with state.lock:
                state.requests.append(Request(self.path, dict(self.headers), body))
                status = state.script.pop(0) if state.script else state.status
            if state.delay:
                time.sleep(state.delay)
            if state.gate is not None:
                state.gate.wait(timeout=10)
            if status == 0:
                self.close_connection = True  # the request arrived; the answer is lost
                return
            answer = state.answer
            if state.echo_header is not None:
                answer = f"denied: {self.headers.get(state.echo_header)}".encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            except (BrokenPipeError, ConnectionResetError):
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --------------------------------------------------------------------------- SMTP


@dataclass
class Mailbox:
    host: str
    port: int
    envelopes: list[Envelope] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    rejections: list[str] = field(default_factory=list)
    """Answers to the next messages' DATA instead of accepting them (e.g. `451 try later`)."""

    def messages(self) -> list[EmailMessage]:
        return [
            message_from_bytes(envelope.original_content or b"", policy=policy.default)
            for envelope in self.envelopes
        ]


class _Collect:
    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.mailbox.rejections:
            return self.mailbox.rejections.pop(0)
        self.mailbox.envelopes.append(envelope)
        return "250 Message accepted for delivery"


def _start(mailbox: Mailbox, **options: Any) -> Controller:
    controller = Controller(_Collect(mailbox), hostname=mailbox.host, port=mailbox.port, **options)
    controller.start()
    return controller


@pytest.fixture
def smtp_server() -> Iterator[Mailbox]:
    """A plain SMTP server (no TLS, no authentication)."""
    mailbox = Mailbox("127.0.0.1", free_port())
    controller = _start(mailbox)
    try:
        yield mailbox
    finally:
        controller.stop()


SMTP_USER = "onduty"
SMTP_PASSWORD = "smtp-pw-4c1d9e"


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA), made with the openssl tool."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl tool is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def tls_smtp_server(certificate: tuple[Path, Path]) -> Iterator[Mailbox]:
    """An SMTP server that requires STARTTLS and authentication (`SMTP_USER`/`SMTP_PASSWORD`)."""
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    mailbox = Mailbox("127.0.0.1", free_port())

    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login == SMTP_USER.encode()
            and data.password == SMTP_PASSWORD.encode()
        )
        if ok:
            mailbox.logins.append(SMTP_USER)
        return AuthResult(success=ok, handled=False)

    controller = _start(
        mailbox,
        tls_context=context,
        require_starttls=True,
        auth_required=True,
        authenticator=authenticate,
    )
    try:
        yield mailbox
    finally:
        controller.stop()
