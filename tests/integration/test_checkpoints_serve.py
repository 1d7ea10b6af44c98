"""`onduty serve` signs checkpoints as events arrive: the witness file beside the store grows,
the metric follows the latest one, and after a graceful stop `audit verify` holds the log
against every checkpoint."""

from __future__ import annotations

import time
from pathlib import Path

import orjson

from tests.integration.server import Server
from tests.run_cli import onduty

CONFIG = """
checkpoints: {every_events: 5, every: 1s}
"""


def _witness_lines(store: Path) -> list[dict[str, object]]:
    witness = store.with_name(store.name + ".checkpoints")
    if not witness.exists():
        return []
    return [orjson.loads(line) for line in witness.read_bytes().splitlines()]


def _wait_for(condition: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_serve_signs_checkpoints_to_the_witness_file(tmp_path: Path) -> None:
    store = tmp_path / "onduty.db"
    config = tmp_path / "onduty.yaml"
    config.write_text(CONFIG)
    signals = [
        {"source": "test", "fingerprint": f"fp-{i}", "status": "firing",
         "labels": {"alertname": "Down", "instance": f"i-{i}"}}
        for i in range(12)
    ]  # fmt: skip
    with Server(store, config=config) as server:
        assert "generated a new signing key" in server.output()
        with server.client() as client:
            for signal in signals[:6]:
                assert client.post("/api/v1/signals", json=signal).status_code == 202
            _wait_for(lambda: len(_witness_lines(store)) >= 1)
            first = len(_witness_lines(store))
            for signal in signals[6:]:
                assert client.post("/api/v1/signals", json=signal).status_code == 202
            _wait_for(lambda: len(_witness_lines(store)) > first)
            latest = _witness_lines(store)[-1]
            gauge = f"onduty_checkpoint_seq {float(str(latest['seq']))}"
            # the witness is written first, the gauge set once the checkpoint is recorded too
            _wait_for(lambda: gauge in client.get("/metrics").text)
            events = client.get("/api/v1/events", params={"type": "CheckpointSigned"}).json()
            assert events, "checkpoints are recorded in the log too"
        assert server.terminate() == 0
    lines = _witness_lines(store)
    seqs = [int(str(line["seq"])) for line in lines]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    result = onduty("audit", "verify", "--store", str(store))
    assert result.returncode == 0, result.stderr
    assert "checkpoints hold" in result.stdout and "signatures checked" in result.stdout
    # a graceful stop signs the head; only that checkpoint's own event comes after it
    assert "; 1 later event not yet covered" in result.stdout
