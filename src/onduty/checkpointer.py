"""The checkpointer of `onduty serve`: signs the log's head every N events or T seconds, off the
core's thread, and exports each checkpoint to its witnesses before recording it in the log.

Order matters: the witness file is written (and synced) first, then the optional HTTP endpoint
and second store, then the `CheckpointSigned` input is handed to the core like any outcome. A
checkpoint in the log is therefore always in the witness too; one the witness lacks means the
witness was cut. The `CheckpointSigned` event itself comes after the head it signs, so the
next checkpoint covers it; a lone checkpoint event does not call for another one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge

from onduty.config_checkpoints import CheckpointSettings
from onduty.events import Event, Payload, make_event
from onduty.log import EventLog, StoreError, open_log
from onduty.log.checkpoints import (
    STREAM,
    Checkpoint,
    CheckpointError,
    SigningKey,
    append_witness,
    load_or_create_key,
    log_identity,
    public_path,
)
from onduty.secrets import SecretError, resolve_references

logger = logging.getLogger("onduty")
STREAM_TYPE = "CheckpointSigned"

Record = Callable[[Payload, str], None]


def store_file(store: str) -> Path | None:
    """The SQLite file of a store URL, or None for a store with no file (":memory:")."""
    path = store.removeprefix("sqlite:///") if store.startswith("sqlite:///") else store
    if "://" in path or not path or path == ":memory:" or path.startswith("file:"):
        return None
    return Path(path)


def witness_file(store: str, settings: CheckpointSettings | None = None) -> Path | None:
    """Where the checkpoints of `store` are exported: the configured file, else beside it."""
    if settings is not None and settings.witness:
        return Path(settings.witness)
    path = store_file(store)
    return None if path is None else path.with_name(path.name + ".checkpoints")


def key_file(store: str) -> Path | None:
    path = store_file(store)
    return None if path is None else path.with_name(path.name + ".checkpoint.key")


def signing_key(settings: CheckpointSettings, store: str) -> SigningKey:
    """The configured key (a file, or a secret reference holding PEM), or the one beside the
    store, generated (and said so) when absent."""
    configured = settings.key
    if configured and configured.startswith("${"):
        try:
            values, _ = resolve_references({"key": configured}, what="checkpoints")
        except SecretError as error:
            raise CheckpointError(f"checkpoints.key: {error}") from None
        return SigningKey.from_pem(values.as_dict()["key"].encode(), "checkpoints.key")
    path = Path(configured) if configured else key_file(store)
    if path is None:
        raise CheckpointError("checkpoints: a store without a file needs checkpoints.key")
    key, created = load_or_create_key(path)
    if created:
        logger.warning(
            "checkpoints: generated a new signing key %s (key id %s); its public key is %s: "
            "keep a copy of the public key away from this host, it is what `onduty audit "
            "verify --public-key` trusts",
            path,
            key.key_id,
            public_path(path),
        )
    return key


class Checkpointer:
    """Signs checkpoints of `log` in a thread of its own; `observe` (a subscriber on the core's
    thread) only counts and wakes it."""

    def __init__(
        self,
        settings: CheckpointSettings,
        log: EventLog,
        key: SigningKey,
        *,
        witness: Path | None,
        registry: CollectorRegistry | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings, self.log, self.key, self.witness = settings, log, key, witness
        self.log_id = log_identity(log)
        self._now = now
        self._record: Record | None = None
        self._second = open_log(settings.witness_store) if settings.witness_store else None
        self.latest: Checkpoint | None = None
        try:
            last = next(
                (e for e in log.read_stream(STREAM, newest_first=True) if e.type == STREAM_TYPE),
                None,
            )
        except StoreError:  # only in an archive that is not at hand: sign from here on
            last = None
        self._covered = int(last.data["seq"]) if last else 0
        self._checkpoint_at = last.seq if last else 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one checkpoint at a time (the thread, or `stop`)
        self._thread = threading.Thread(target=self._run, name="onduty-checkpoints", daemon=True)
        self.gauge = Gauge(
            "onduty_checkpoint_seq",
            "Sequence number the latest signed checkpoint covers.",
            registry=registry,
        )
        self.gauge.set(self._covered)
        # Since the latest checkpoint was signed (or since this process started, before any).
        signed = _parsed(last.data["signed_at"]) if last else None
        self._signed_when: datetime = signed or now()
        self.age = Gauge(
            "onduty_checkpoint_age_seconds",
            "Seconds since the latest checkpoint was signed (since the start, before any): "
            "events appended after it are not yet protected against a cut.",
            registry=registry,
        )
        self.age.set_function(self._age)

    def _age(self) -> float:
        return (self._now() - self._signed_when).total_seconds()

    def start(self, record: Record) -> None:
        """Start signing; `record(payload, stream)` hands a `CheckpointSigned` to the core."""
        self._record = record
        self._thread.start()

    def observe(self, event: Event) -> None:
        if event.seq - self._covered >= self.settings.every_events:
            self._wake.set()

    def stop(self) -> None:
        """Sign a last checkpoint of what is appended (a graceful stop leaves nothing
        uncovered but that checkpoint's own event), and stop."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()
        try:
            self.checkpoint_now()
        except Exception:  # stopping goes on: the log itself is intact
            logger.exception("checkpoints: could not sign the last checkpoint")
        if self._second is not None:
            self._second.close()

    def _run(self) -> None:
        """Sign when `every_events` were appended (woken by `observe`), or when `every` has
        passed since the last wake with anything new."""
        period = self.settings.every.total_seconds()
        while not self._stop.is_set():
            self._wake.wait(period)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.checkpoint_now()
            except Exception:  # a witness that fails is logged; the next period tries again
                logger.exception("checkpoints: could not sign or export a checkpoint")

    def checkpoint_now(self) -> Checkpoint | None:
        """Sign the head when anything but our own last checkpoint event was appended since
        the last checkpoint; export it, then record it. None when there was nothing new."""
        with self._lock:
            seq, head = self.log.head()
            if seq == 0 or seq <= max(self._covered, self._checkpoint_at):
                return None
            signed_at = self._now().isoformat().replace("+00:00", "Z")
            checkpoint = self.key.sign(self.log_id, seq, head, seq, signed_at)
            self._export(checkpoint)
            self._covered, self.latest = seq, checkpoint
            self._signed_when = _parsed(signed_at) or self._now()
            if self._record is not None:
                self._record(checkpoint.payload(), STREAM)
                self._checkpoint_at = seq + 1  # at least; a later event calls for another
            self.gauge.set(seq)
            return checkpoint

    def _export(self, checkpoint: Checkpoint) -> None:
        if self.witness is not None:
            append_witness(self.witness, checkpoint)
        if self.settings.witness_url:
            import httpx

            try:
                httpx.post(self.settings.witness_url, content=checkpoint.line(), timeout=10)
            except httpx.HTTPError as error:
                logger.error("checkpoints: %s did not take seq %s: %s",
                             self.settings.witness_url, checkpoint.seq, error)  # fmt: skip
        if self._second is not None:
            self._second.append(
                [
                    make_event(
                        checkpoint.payload(),
                        id=f"checkpoint-{self.log_id}-{checkpoint.seq}",
                        ts=self._now(),
                        stream=STREAM,
                        actor="onduty",
                    )
                ]
            )


def _parsed(signed_at: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(signed_at).replace("Z", "+00:00"))
    except ValueError:
        return None


def open_checkpointer(
    settings: CheckpointSettings, store: str, log: EventLog, registry: CollectorRegistry
) -> Checkpointer | None:
    """The checkpointer `onduty serve` runs, or None when checkpoints are off or the store has
    no file (nothing outlives the process). Raises `CheckpointError` naming the key or file."""
    if not settings.enabled or (store_file(store) is None and not settings.key):
        return None
    key = signing_key(settings, store)
    return Checkpointer(
        settings, log, key, witness=witness_file(store, settings), registry=registry
    )
