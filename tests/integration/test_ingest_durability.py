"""Nothing acknowledged is lost: SIGKILL onduty while a load generator posts; after a restart
every signal that got a 202 is in the log."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from onduty.log import open_log
from tests.integration.server import Server

WRITERS = 4
MAX_REQUESTS = 4000  # bounded: the generator stops by itself


def test_every_acknowledged_signal_survives_sigkill(tmp_path: Path) -> None:
    store = tmp_path / "kill.db"
    server = Server(store).start()
    accepted: list[str] = []
    refused: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()
    counter = iter(range(MAX_REQUESTS))

    def post() -> None:
        with httpx.Client(base_url=server.url, timeout=5) as client:
            while not stop.is_set():
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                fingerprint = f"load-{n}"
                body = {"source": "load", "fingerprint": fingerprint, "status": "firing",
                        "labels": {"alertname": "Load", "instance": f"i-{n % 50}"}}  # fmt: skip
                try:
                    response = client.post("/api/v1/signals", json=body)
                except httpx.TransportError:
                    return  # the server is gone
                with lock:
                    if response.status_code == 202:
                        accepted.append(fingerprint)
                    else:
                        refused.append(response.status_code)

    writers = [threading.Thread(target=post) for _ in range(WRITERS)]
    for writer in writers:
        writer.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(accepted) < 300:
        time.sleep(0.01)
    server.kill()
    stop.set()
    for writer in writers:
        writer.join(10)
    assert len(accepted) >= 300, (len(accepted), refused)
    assert set(refused) <= {429, 503}, refused

    restarted = Server(store).start()  # recovery must succeed on the killed log
    assert restarted.terminate() == 0
    log = open_log(str(store))
    try:
        assert log.verify() is None
        logged = {
            event.data["fingerprint"] for event in log.read() if event.type == "SignalReceived"
        }
    finally:
        log.close()
    missing = [fingerprint for fingerprint in accepted if fingerprint not in logged]
    assert missing == [], f"{len(missing)} acknowledged signals were lost"
