"""The checkpointer of a fleet node: signs every partition's head of a PostgreSQL store at
once, in a thread of its own, and exports each checkpoint before recording it in the store.

Any node may sign: the heads are read from the database, so two nodes signing the same heads
sign the same statement, and each keeps its own witness file. Every signing node uses the same
key (`checkpoints.key`, a file copied to each node or a secret reference); the first node to
start with no key file makes one, a later node that lacks it refuses to start rather than sign
with a key nobody will give `audit verify`.

Order matters, as for one log: the witness file is written (and synced) first, then the
optional HTTP witness, then the row in the store's `checkpoints` table. A row the witness lacks
means the witness was cut. The checkpoints are not events: a partition's log is written by the
manager that holds its lease, and the checkpointer is none of them.

`every_events` is approximated by how far the heads moved (summed over the partitions),
looked at every `poll` seconds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge

from onduty.config_checkpoints import CheckpointSettings
from onduty.log import StoreError
from onduty.log.checkpoints import CheckpointError, SigningKey, load_or_create_key, public_path
from onduty.log.fleet_checkpoint_store import CheckpointStore
from onduty.log.fleet_checkpoints import FleetCheckpoint, append_witness, sign
from onduty.secrets import SecretError, resolve_references

logger = logging.getLogger("onduty")

POLL_S = 1.0
"""How often the heads are looked at (one small statement): how late `every_events` is seen."""


def fleet_signing_key(settings: CheckpointSettings, store: CheckpointStore) -> SigningKey:
    """The configured key: a secret reference holding PEM, or a file. A missing file is made
    (and said so) only when no key was made for this store before, on any node; else this
    node refuses, naming the key every signer must share."""
    configured = settings.key
    if not configured:
        raise CheckpointError(
            "checkpoints.key: a PostgreSQL store has no file to keep the key beside: name a "
            "key file (the same key on every node that signs)"
        )
    if configured.startswith("${"):
        try:
            values, _ = resolve_references({"key": configured}, what="checkpoints")
        except SecretError as error:
            raise CheckpointError(f"checkpoints.key: {error}") from None
        key = SigningKey.from_pem(values.as_dict()["key"].encode(), "checkpoints.key")
    else:
        path = Path(configured)
        if not path.exists():
            return _first_key(path, store)
        key, _ = load_or_create_key(path)
    store.register_key(key.key_id)  # the first key of the store, when none is known
    first = store.key_registered()
    if first is not None and first != key.key_id:
        logger.warning(
            "checkpoints: this node signs with key %s, the store's first key was %s: give "
            "`onduty audit verify --public-key` both public keys (a rotation), or copy the "
            "same key to every signing node",
            key.key_id,
            first,
        )
    return key


def _first_key(path: Path, store: CheckpointStore) -> SigningKey:
    made: list[tuple[SigningKey, bool]] = []

    def make() -> str:
        key, created = load_or_create_key(path)
        made.append((key, created))
        return key.key_id

    existing = store.first_key(make)
    if existing is not None and path.exists():
        # Another node that shares this folder made the key while this one waited its turn.
        key, _ = load_or_create_key(path)
        if key.key_id == existing:
            return key
    if existing is not None:
        raise CheckpointError(
            f"checkpoints.key {path}: no such file, and the store {store.url} already has a "
            f"signing key (key id {existing}), made on another node: copy that key file here "
            "(every node that signs a store's checkpoints uses the same key), or make a new "
            "key yourself for a rotation"
        )
    key, created = made[0]
    if not created:  # another node of this host, for another store, made the file meanwhile
        logger.info("checkpoints: the store %s signs with the key %s", store.url, path)
        return key
    logger.warning(
        "checkpoints: generated a new signing key %s (key id %s) for the store %s; its public "
        "key is %s: copy the key to every other node that signs (checkpoints.key), and keep a "
        "copy of the public key away from the fleet, it is what `onduty audit verify "
        "--public-key` trusts",
        path,
        key.key_id,
        store.url,
        public_path(path),
    )
    return key


class FleetCheckpointer:
    """Signs checkpoints of every partition of the store at `store_url` in a thread of its own,
    as node `signer`, exporting them to `witness` (a file) and `settings.witness_url`."""

    def __init__(
        self,
        settings: CheckpointSettings,
        store_url: str,
        key: SigningKey,
        *,
        signer: str,
        witness: Path | None,
        registry: CollectorRegistry | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        poll: float = POLL_S,
    ) -> None:
        self.settings, self.key, self.signer, self.witness = settings, key, signer, witness
        self._now, self._poll = now, min(poll, settings.every.total_seconds())
        self.store = CheckpointStore(store_url)
        try:
            self.store.prepare()
            self.log_id = self.store.identity(create=True)
            newest = self.store.newest()
        except BaseException:
            self.store.close()
            raise
        self.latest: FleetCheckpoint | None = None
        # what was signed last, by anyone: a restart with nothing new signs nothing
        self._signed: dict[int, int] = {}
        if newest is not None and newest.log_id == self.log_id:
            self._signed = {p: seq for p, seq, _, _ in newest.partitions}
        self._signed_when = now()
        self._unrecorded: list[FleetCheckpoint] = []  # exported, not yet in the table
        self._witness_size = _size(witness)
        self._failing = False  # an error is told once, not at every poll
        self._contradiction = ""
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one checkpoint at a time (the thread, or `stop`)
        self._thread = threading.Thread(
            target=self._run, name="onduty-fleet-checkpoints", daemon=True
        )
        self.gauge = Gauge(
            "onduty_fleet_checkpoint_events",
            "Events (summed over the partitions) the latest checkpoint this node signed covers.",
            registry=registry,
        )
        self.gauge.set(sum(self._signed.values()))
        self.age = Gauge(
            "onduty_checkpoint_age_seconds",
            "Seconds since this node last signed a checkpoint of the store (since the start, "
            "before any): events appended after it are not yet protected against a cut.",
            registry=registry,
        )
        self.age.set_function(self._age)

    def _age(self) -> float:
        return (self._now() - self._signed_when).total_seconds()

    def start(self) -> None:
        """Start signing in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop, after signing a last checkpoint of what was appended since the previous one."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        try:
            self.checkpoint_now()
        except Exception as error:  # stopping goes on: the store itself is intact
            logger.warning("checkpoints: could not sign the last checkpoint: %s", error)
        self.store.close()

    def close(self) -> None:
        """Stop without signing: for a node whose start-up failed after this was made."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.store.close()

    def _run(self) -> None:
        """Sign when the heads moved `every_events`, or moved at all and `every` passed."""
        period = self.settings.every.total_seconds()
        while not self._stop.wait(self._poll):
            try:
                with self._lock:
                    heads = self._heads()
                    moved = self._moved(heads)
                    due = (self._now() - self._signed_when).total_seconds() >= period
                    if moved >= self.settings.every_events or (moved and due):
                        self._sign(heads)
                self._failing = False
            except Exception as error:  # the database away, a witness failing: tried again
                if not self._failing:
                    logger.error("checkpoints: cannot sign a checkpoint now: %s", error)
                self._failing = True

    def checkpoint_now(self) -> FleetCheckpoint | None:
        """Sign every partition's head when any moved since the last checkpoint; export it,
        then record it in the store. None when nothing moved, or when the store contradicts
        itself (a head row that is not its partition's last event: said, not signed)."""
        with self._lock:
            return self._sign(self._heads())

    def _heads(self) -> dict[int, tuple[int, str]]:
        """Every head, or none when the store contradicts itself (said once per change)."""
        self._record_unrecorded()
        heads, problems = self.store.heads()
        told = "; ".join(problems)
        if told and told != self._contradiction:
            logger.error(
                "checkpoints: not signing a store that contradicts itself (run `onduty audit "
                "verify`): %s",
                told,
            )
        self._contradiction = told
        return {} if problems else heads

    def _moved(self, heads: dict[int, tuple[int, str]]) -> int:
        return sum(max(0, seq - self._signed.get(p, 0)) for p, (seq, _) in heads.items())

    def _sign(self, heads: dict[int, tuple[int, str]]) -> FleetCheckpoint | None:
        if not self._moved(heads):
            return None
        when = self._now()
        signed_at = when.isoformat().replace("+00:00", "Z")
        checkpoint = sign(self.key, self.log_id, heads, signed_at, self.signer)
        self._export(checkpoint)
        self._signed = {p: seq for p, (seq, _) in heads.items()}
        self._signed_when, self.latest = when, checkpoint
        self.gauge.set(checkpoint.covered)
        self._unrecorded.append(checkpoint)
        try:
            self._record_unrecorded()
        except StoreError as error:  # it is in the witness: recorded with the next look
            logger.warning("checkpoints: the one signed %s is recorded later: %s", signed_at, error)
        return checkpoint

    def _record_unrecorded(self) -> None:
        """Record in the store what was exported but not yet recorded (the database was away
        between the two), oldest first."""
        while self._unrecorded:
            self.store.record(self._unrecorded[0])
            self._unrecorded.pop(0)

    def _export(self, checkpoint: FleetCheckpoint) -> None:
        if self.witness is not None:
            now = _size(self.witness)
            if now < self._witness_size:  # appended to, never shortened: someone cut it
                logger.error(
                    "checkpoints: the witness file %s was %s (%s bytes written, %s left): the "
                    "checkpoints in it are lost; restore it from a copy",
                    self.witness,
                    "removed or emptied" if now == 0 else "cut",
                    self._witness_size,
                    now,
                )
            self._witness_size = append_witness(self.witness, checkpoint)
        if self.settings.witness_url:
            import httpx

            try:
                httpx.post(self.settings.witness_url, content=checkpoint.line(), timeout=10)
            except httpx.HTTPError as error:
                logger.error(
                    "checkpoints: %s did not take the checkpoint signed %s: %s",
                    self.settings.witness_url,
                    checkpoint.signed_at,
                    error,
                )


def _size(path: Path | None) -> int:
    try:
        return 0 if path is None else path.stat().st_size
    except FileNotFoundError:
        return 0


def node_witness(witness: str, node: str) -> Path:
    """A node's own witness file: `{node}` in the configured path is the node's name, so that
    one configuration serves every node of a fleet."""
    return Path(witness.replace("{node}", node))


def open_fleet_checkpointer(
    settings: CheckpointSettings,
    store_url: str,
    *,
    signer: str,
    registry: CollectorRegistry | None = None,
) -> FleetCheckpointer | None:
    """The checkpointer a fleet node runs (not yet started), or None when checkpoints are off,
    or when neither `checkpoints.key` nor `checkpoints.witness` is set (a PostgreSQL store has
    no file to keep them beside; said once). Raises `CheckpointError` naming the setting, the
    key or the file, and `StoreError` when the store cannot be reached."""
    if not settings.enabled:
        return None
    if not settings.key and not settings.witness:
        logger.warning(
            "checkpoints: none are signed for the PostgreSQL store until checkpoints.key and "
            "checkpoints.witness name files: a cut tail or a rewritten partition would not be "
            "seen by `onduty audit verify`"
        )
        return None
    if settings.witness_store:
        raise CheckpointError(
            "checkpoints.witness_store: a second event log is for one log's checkpoints; a "
            "fleet's go to the store's checkpoints table, checkpoints.witness and "
            "checkpoints.witness_url"
        )
    if not settings.witness:
        raise CheckpointError(
            "checkpoints.witness: a PostgreSQL store has no file to put the witness beside: "
            "name the file this node appends its checkpoints to (outside the database)"
        )
    witness = node_witness(settings.witness, signer)
    if not witness.parent.is_dir():
        raise CheckpointError(f"checkpoints.witness {witness}: its folder does not exist")
    store = CheckpointStore(store_url)
    try:
        store.prepare()
        key = fleet_signing_key(settings, store)
    finally:
        store.close()
    return FleetCheckpointer(
        settings, store_url, key, signer=signer, witness=witness, registry=registry
    )
