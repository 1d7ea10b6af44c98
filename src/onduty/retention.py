"""Retention: sealing the events older than a moment into an archive (`onduty log seal`, and
`onduty serve` with a `retention:` section).

A seal needs what only the layers above the log know: the core's state as of the last sealed
event (folded here from the newest trusted snapshot at or before it), so that the live store
starts after the archive without it, and a signed checkpoint of that event, so that the
archive can be verified on its own. The log backend does the rest (`SQLiteEventLog.seal`).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from onduty.config_retention import RetentionSettings
from onduty.log import EventLog, Snapshot, check_snapshot
from onduty.log.checkpoints import (
    Checkpoint,
    CheckpointError,
    Finding,
    SigningKey,
    load_or_create_key,
    log_identity,
    signature_problem,
)
from onduty.log.sealed import ArchiveEntry, ArchiveError, Archives
from onduty.manager import Manager
from onduty.readmodel.models import ReadModels, stored
from onduty.snapshots import bind

logger = logging.getLogger("onduty.retention")
PROGRESS_EVERY = 10_000
Advance = Callable[[int], None]


class SealableLog(EventLog, Protocol):
    """An event log that can hand its oldest events over to an archive."""

    def seal(
        self,
        through: int,
        snapshot: Snapshot,
        manifest: dict[str, Any],
        advance: Advance | None = None,
    ) -> ArchiveEntry: ...

    def archives(self) -> list[ArchiveEntry]: ...

    @property
    def archive_folder(self) -> Path | None: ...


@dataclass(frozen=True)
class Sealed:
    """What one seal did."""

    entry: ArchiveEntry
    folder: Path | None
    checkpoint: Checkpoint | None

    @property
    def count(self) -> int:
        return self.entry.last - self.entry.first + 1


def sealable(log: EventLog) -> SealableLog:
    if not callable(getattr(log, "seal", None)):
        raise ValueError("this store cannot seal events into archives (only SQLite stores can)")
    return log  # type: ignore[return-value]


def archives_of(log: EventLog) -> tuple[list[ArchiveEntry], Path | None]:
    """The archives `log` sealed events into and where it keeps them; none for a log that
    cannot seal."""
    if not callable(getattr(log, "seal", None)):
        return [], None
    store = sealable(log)
    return store.archives(), store.archive_folder


def last_before(log: EventLog, moment: datetime) -> int:
    """The seq of the last event of the live store stamped before `moment` (0 when none):
    a binary search, as events are appended in time order."""
    low, high = log.origin()[0], log.head()[0]  # low: known before; the answer is in low..high
    while low < high:
        middle = (low + high + 1) // 2
        event = next(iter(log.read(after=middle - 1, limit=1)), None)
        if event is not None and event.ts < moment:
            low = middle
        else:
            high = middle - 1
    return low if low > log.origin()[0] else 0


def fold_to(log: EventLog, through: int, advance: Advance | None = None) -> Snapshot:
    """The core's snapshot as of seq `through`, folded from the newest snapshot at or before it
    that is bound to the chain (else from the start)."""
    manager, seq = Manager(), 0
    for snapshot in log.snapshots():
        if snapshot.seq <= through and check_snapshot(log, snapshot) is None:
            manager, seq = Manager.from_snapshot(snapshot.state), snapshot.seq
            break
    last_hash = log.origin()[1] if seq == log.origin()[0] else ""
    for count, event in enumerate(log.read(after=seq, limit=through - seq), start=1):
        manager.apply(event)
        last_hash = event.hash
        if advance is not None and count % PROGRESS_EVERY == 0:
            advance(count)
    if not last_hash:  # the snapshot is at `through` itself
        for event in log.read_seqs([through]):
            last_hash = event.hash
    state = manager.state
    return bind(through, last_hash, state.encode(), state.encode_canonical())


def seal_before(
    log: EventLog,
    moment: datetime,
    *,
    now: datetime,
    key: SigningKey | None,
    min_events: int = 1,
    save_read_models: Callable[[], object] | None = None,
) -> Sealed | None:
    """Seal the events of the live store stamped before `moment` into one archive (None when
    fewer than `min_events` are). `now` stamps the archive and its checkpoint."""
    through = last_before(log, moment)
    if through - log.origin()[0] < max(1, min_events):
        return None
    return seal_through(
        log, through, now=now, key=key, before=moment, save_read_models=save_read_models
    )


def seal_through(
    log: EventLog,
    through: int,
    *,
    now: datetime,
    key: SigningKey | None,
    before: datetime | None = None,
    advance: Advance | None = None,
    save_read_models: Callable[[], object] | None = None,
) -> Sealed:
    """Seal the live store's events up to seq `through` into one archive, with the core's state
    as of `through` and (with a `key`) a signed checkpoint of it. `advance(done)` is told the
    progress, out of twice the events sealed (folding them, then writing them).

    The read models' snapshot is brought past `through` first (by `save_read_models`, a
    running service's, else rebuilt here), so that they too start without the archive."""
    store = sealable(log)
    origin = store.origin()[0]
    if save_read_models is not None:
        save_read_models()
    else:
        read_models_past(store, through)
    snapshot = fold_to(store, through, advance)
    checkpoint = None
    signed_at = _text(now)
    if key is not None:
        log_id = log_identity(store)
        checkpoint = key.sign(log_id, through, snapshot.event_hash, through, signed_at)
    manifest: dict[str, Any] = {
        "log_id": store.get_meta("log_id") or "",
        "sealed_at": signed_at,
        "before": None if before is None else _text(before),
        "checkpoint": None if checkpoint is None else asdict(checkpoint),
    }
    written = None if advance is None else (lambda done: advance(through - origin + done))
    entry = store.seal(through, snapshot, manifest, written)
    return Sealed(entry, store.archive_folder, checkpoint)


def read_models_past(log: EventLog, through: int) -> None:
    """Store a snapshot of the read models at the head unless the stored one is at `through`
    or later."""
    snapshot, _why = stored(log)
    if snapshot is not None and snapshot.seq >= through:
        return
    models = ReadModels()
    models.restore(log)
    models.save(log)


def _text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def key_if_any(
    configured: Callable[[], SigningKey] | None, beside: Path | None
) -> SigningKey | None:
    """The configured signing key, else the one beside the store when it exists (a seal never
    creates one)."""
    if configured is not None:
        return configured()
    if beside is not None and beside.exists():
        return load_or_create_key(beside)[0]
    return None


def archive_findings(
    entries: list[ArchiveEntry], folder: Path | None, keys: Mapping[str, Ed25519PublicKey]
) -> list[Finding]:
    """Each archive's own checkpoint held against what the live store recorded of it: signed
    by a known key (when `keys` are given) and naming the archive's last event and hash."""
    findings: list[Finding] = []
    archives = Archives(folder, entries)
    for entry in entries:
        try:
            recorded = archives.file(entry).manifest.get("checkpoint")
        except ArchiveError:
            continue  # reported by the chain's check, by name
        if recorded is None:
            continue
        try:
            checkpoint = Checkpoint.of(recorded)
        except ValueError as error:
            findings.append(Finding("signature", entry.last, f"{entry.describe()}: {error}"))
            continue
        where = entry.describe()
        bad = signature_problem(checkpoint, keys, where) if keys else None
        if bad is not None:
            findings.append(bad)
        elif (checkpoint.seq, checkpoint.head) != (entry.last, entry.last_hash):
            findings.append(
                Finding(
                    "rewritten",
                    entry.last,
                    f"{where}: its checkpoint signs seq {checkpoint.seq} hash "
                    f"{checkpoint.head[:12]}…, the archive ends at seq {entry.last} hash "
                    f"{entry.last_hash[:12]}…",
                )
            )
    return findings


def open_retention(
    settings: RetentionSettings,
    log: EventLog,
    key: SigningKey | None,
    now: Callable[[], datetime],
    save_read_models: Callable[[], object] | None = None,
) -> Retention | None:
    """`serve`'s retention, or None when `retention.keep` is unset. Raises `ValueError` for a
    store that cannot seal."""
    if settings.keep is None:
        return None
    store = sealable(log)
    if store.archive_folder is None:
        raise ValueError("a store in memory has nowhere to keep archives; unset retention.keep")
    return Retention(
        store,
        keep=settings.keep,
        every=settings.every,
        min_events=settings.min_events,
        key=key,
        now=now,
        save_read_models=save_read_models,
    )


class StoreBusy(Exception):
    """Another process holds the store in a way that excludes this one; the message says who."""


class ServingLock:
    """A lock file beside the store (`<file>.serving`): every `onduty serve` holds it shared
    while it runs, a seal by hand holds it exclusively, so that a seal never runs beside a
    serve writing the same store (whose writer may still lean on events being sealed)."""

    def __init__(self, store: Path, *, exclusive: bool) -> None:
        self.path = store.with_name(store.name + ".serving")
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            who = "`onduty serve` is running on" if exclusive else "`onduty log seal` is sealing"
            raise StoreBusy(f"{who} {store}") from None

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = -1


class Retention:
    """`onduty serve`'s retention: every `every`, seal what is older than `keep` (once at
    least `min_events` are), in a thread of its own."""

    def __init__(
        self,
        log: EventLog,
        *,
        keep: timedelta,
        every: timedelta,
        min_events: int,
        key: SigningKey | None,
        now: Callable[[], datetime],
        save_read_models: Callable[[], object] | None = None,
    ) -> None:
        self.log, self.keep, self.every, self.min_events = log, keep, every, min_events
        self.key, self.now, self.save_read_models = key, now, save_read_models
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="onduty-retention", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def run_once(self) -> Sealed | None:
        moment = self.now()
        sealed = seal_before(
            self.log,
            moment - self.keep,
            now=moment,
            key=self.key,
            min_events=self.min_events,
            save_read_models=self.save_read_models,
        )
        if sealed is not None:
            logger.info(
                "retention: sealed %s events (seq %s..%s) into %s",
                sealed.count,
                sealed.entry.first,
                sealed.entry.last,
                sealed.entry.name,
            )
        return sealed

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except (ArchiveError, CheckpointError, OSError, ValueError) as error:
                logger.error("retention: could not seal: %s; the events stay in the store", error)
            self._stop.wait(self.every.total_seconds())
