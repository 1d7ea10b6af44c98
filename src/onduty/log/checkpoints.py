"""Signed checkpoints: the log's head, signed with an Ed25519 key and kept outside the log.

The hash chain shows that no event in the middle of the log was edited, removed or swapped. It
cannot show that the last events were cut off, or that the chain was rewritten from some point
with every hash recomputed: the result is again a valid chain. A checkpoint closes that gap. It
states "the log `log_id` had `count` events, the one at `seq` with hash `head`, at `signed_at`",
signed with a key the log does not hold. It is recorded in the log (`CheckpointSigned`) and
appended to a witness file outside it (one JSON line each); `verify_checkpoints` holds the log
against both: a checkpoint beyond the head means a cut tail, one whose head no longer matches
means a rewrite (or another log in its place).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from onduty.events import CheckpointSigned
from onduty.log.base import ChainBreak, EventLog

FORMAT = "onduty-checkpoint/1"
STREAM = "checkpoints"
"""The stream `CheckpointSigned` events are recorded on (read back through its index)."""
LOG_ID_KEY = "log_id"
_OPT = orjson.OPT_SORT_KEYS


class CheckpointError(ValueError):
    """A key or a witness that cannot be used; the message names the file and why."""


@dataclass(frozen=True)
class Checkpoint:
    """One signed statement about the log's head (see the module's description)."""

    log_id: str
    seq: int
    head: str
    count: int
    signed_at: str
    key_id: str
    signature: str = ""

    def message(self) -> bytes:
        """The bytes signed: canonical JSON of everything but the signature, with the format."""
        fields = asdict(self)
        del fields["signature"]
        return orjson.dumps({**fields, "format": FORMAT}, option=_OPT)

    def line(self) -> bytes:
        """The checkpoint as one line of a witness file."""
        return orjson.dumps(asdict(self), option=_OPT) + b"\n"

    def payload(self) -> CheckpointSigned:
        return CheckpointSigned(**asdict(self))

    @classmethod
    def of(cls, fields: Mapping[str, Any]) -> Checkpoint:
        """A checkpoint from its JSON fields (a witness line, an event's data)."""
        try:
            values = {name: fields[name] for name in cls.__dataclass_fields__}
        except KeyError as missing:
            raise ValueError(f"it has no field {missing}") from None
        for name, value in values.items():
            wanted = int if name in ("seq", "count") else str
            if type(value) is not wanted:
                raise ValueError(f"its {name} is not a {wanted.__name__}")
        return cls(**values)


def key_id(public: Ed25519PublicKey) -> str:
    """A short name for a public key: the first 16 hex digits of sha256 of its raw bytes."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class SigningKey:
    """An Ed25519 private key that signs checkpoints; never printed, never pickled."""

    __slots__ = ("_private", "key_id", "public")

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key()
        self.key_id = key_id(self.public)

    @classmethod
    def from_pem(cls, pem: bytes, source: str) -> SigningKey:
        try:
            private = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as error:
            raise CheckpointError(f"{source}: not a PEM private key ({error})") from None
        if not isinstance(private, Ed25519PrivateKey):
            raise CheckpointError(f"{source}: not an Ed25519 key")
        return cls(private)

    def sign(self, log_id: str, seq: int, head: str, count: int, signed_at: str) -> Checkpoint:
        unsigned = Checkpoint(log_id, seq, head, count, signed_at, self.key_id)
        signature = self.signature_of(unsigned.message())
        return Checkpoint(log_id, seq, head, count, signed_at, self.key_id, signature)

    def signature_of(self, message: bytes) -> str:
        """The Ed25519 signature of `message` in hex: what any checkpoint format carries (a
        fleet's checkpoint signs the canonical bytes of its own fields)."""
        return self._private.sign(message).hex()

    def __repr__(self) -> str:
        return f"SigningKey({self.key_id})"

    def __reduce__(self) -> Any:
        raise TypeError("a signing key cannot be pickled")


def load_or_create_key(path: Path) -> tuple[SigningKey, bool]:
    """The key in the PEM file `path`; when there is none, a new key written there (readable
    by its owner only) with its public key beside it (`<path>.pub`). True when created."""
    try:
        return SigningKey.from_pem(path.read_bytes(), str(path)), False
    except FileNotFoundError:
        pass
    except OSError as error:
        raise CheckpointError(f"cannot read the signing key {path}: {error.strerror}") from None
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        made = _publish_whole(path, pem, mode=0o600)
        if not made:  # another process made it at the same moment: that key is the one
            return SigningKey.from_pem(path.read_bytes(), str(path)), False
        public = public_path(path)
        _publish_whole(public, public_pem(private.public_key()), mode=0o644, replace=True)
    except OSError as error:
        raise CheckpointError(f"cannot write the signing key {path}: {error.strerror}") from None
    return SigningKey(private), True


def _publish_whole(path: Path, content: bytes, *, mode: int, replace: bool = False) -> bool:
    """Make `path` hold `content`, appearing whole or not at all (written beside it, then
    linked into place). Without `replace`, False when `path` already exists (kept as it is)."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(descriptor, mode)
        with os.fdopen(descriptor, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        if replace:
            os.replace(temporary, path)
            return True
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        return True
    finally:
        Path(temporary).unlink(missing_ok=True)


def public_path(key: Path) -> Path:
    return key.with_name(key.name + ".pub")


def load_public_keys(paths: Iterable[Path]) -> dict[str, Ed25519PublicKey]:
    """The public keys in `paths` by key id; a file may hold a public key or a private one."""
    keys: dict[str, Ed25519PublicKey] = {}
    for path in paths:
        try:
            pem = path.read_bytes()
        except OSError as error:
            raise CheckpointError(f"cannot read the key {path}: {error.strerror}") from None
        public: Any
        try:
            public = serialization.load_pem_public_key(pem)
        except ValueError:
            public = SigningKey.from_pem(pem, str(path)).public
        if not isinstance(public, Ed25519PublicKey):
            raise CheckpointError(f"{path}: not an Ed25519 public key")
        keys[key_id(public)] = public
    return keys


# ---------------------------------------------------------------------- witness file


def append_witness(path: Path, checkpoint: Checkpoint) -> None:
    """Append `checkpoint` to the witness file and sync it to disk."""
    with open(path, "ab") as file:
        file.write(checkpoint.line())
        file.flush()
        os.fsync(file.fileno())


@dataclass(frozen=True)
class Finding:
    """Something in the log that a checkpoint contradicts. `seq` is the first bad sequence
    number, or the seq of the checkpoint that no longer matches."""

    kind: str
    """chain, cut, rewritten, replaced, renumbered, signature, unknown-key, witness"""
    seq: int
    message: str


def read_witness(path: Path) -> tuple[list[Checkpoint], list[Finding]]:
    """The checkpoints in a witness file, in file order, and a finding for each bad line."""
    try:
        text = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"cannot read the checkpoints {path}: {error.strerror}") from None
    found: list[Checkpoint] = []
    problems: list[Finding] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            fields = orjson.loads(line)
            if not isinstance(fields, dict):
                raise ValueError("it is not a JSON object")
            found.append(Checkpoint.of(fields))
        except ValueError as error:  # orjson's decode error is a ValueError
            problems.append(Finding("witness", 0, f"{path} line {number} is unreadable: {error}"))
    return found, problems


# ---------------------------------------------------------------------- verification


@dataclass
class CheckpointReport:
    """What `verify_checkpoints` found, and what an intact result covers."""

    findings: list[Finding] = field(default_factory=list)
    checked: int = 0
    """Witness checkpoints held against the log."""
    in_log: int = 0
    """`CheckpointSigned` events in the log."""
    latest: Checkpoint | None = None
    signatures: bool = False
    """Whether signatures were checked (a public key was given or found)."""
    head: int = 0

    @property
    def intact(self) -> bool:
        return not self.findings


def log_identity(log: EventLog) -> str:
    """The log's identity (meta `log_id`), given to it when first asked for."""
    found = log.get_meta(LOG_ID_KEY)
    if found:
        return found
    created = os.urandom(16).hex()
    log.set_meta(LOG_ID_KEY, created)
    return created


def signature_problem(
    checkpoint: Checkpoint, keys: Mapping[str, Ed25519PublicKey], where: str
) -> Finding | None:
    public = keys.get(checkpoint.key_id)
    if public is None:
        return Finding(
            "unknown-key",
            checkpoint.seq,
            f"checkpoint at seq {checkpoint.seq} ({where}) is signed with key "
            f"{checkpoint.key_id}, which is none of the public keys given "
            f"({', '.join(sorted(keys))})",
        )
    try:
        public.verify(bytes.fromhex(checkpoint.signature), checkpoint.message())
    except (InvalidSignature, ValueError):
        return Finding(
            "signature",
            checkpoint.seq,
            f"checkpoint at seq {checkpoint.seq} ({where}): its signature does not verify "
            f"with key {checkpoint.key_id} (the checkpoint was altered or forged)",
        )
    return None


def _against_log(
    checkpoint: Checkpoint,
    where: str,
    head: int,
    hashes: Mapping[int, str],
    log_id: str | None,
    matched: int,
) -> Finding | None:
    """How the log contradicts one checkpoint, or None. `matched` is the seq of the newest
    earlier checkpoint that holds (the rewrite lies after it)."""
    what = f"checkpoint at seq {checkpoint.seq} ({where}, signed {checkpoint.signed_at})"
    if log_id is not None and checkpoint.log_id != log_id:
        return Finding(
            "replaced",
            checkpoint.seq,
            f"{what} is of log {checkpoint.log_id}, but this log is {log_id or 'unnamed'}: "
            "the log was replaced (or the checkpoints are another log's)",
        )
    if checkpoint.seq > head:
        return Finding(
            "cut",
            checkpoint.seq,
            f"{what} covers seq {checkpoint.seq}, but the log ends at seq {head}: events "
            f"{head + 1}..{checkpoint.seq} at least were removed (a cut tail)",
        )
    actual = hashes.get(checkpoint.seq)
    if actual != checkpoint.head:
        return Finding(
            "rewritten",
            checkpoint.seq,
            f"{what} no longer matches: it signed hash {checkpoint.head[:12]}…, the event at "
            f"seq {checkpoint.seq} has {(actual or 'none')[:12]}…; the chain was rewritten "
            f"after seq {matched} and at or before seq {checkpoint.seq}",
        )
    if checkpoint.count != checkpoint.seq:
        return Finding(
            "renumbered",
            checkpoint.seq,
            f"{what} counted {checkpoint.count} events up to it, the log holds "
            f"{checkpoint.seq}: events were renumbered",
        )
    return None


def verify_checkpoints(
    log: EventLog,
    witness: list[Checkpoint],
    keys: Mapping[str, Ed25519PublicKey],
    *,
    chain: ChainBreak | None = None,
    witness_name: str = "witness",
) -> CheckpointReport:
    """Hold `log` against the `witness` checkpoints and against the `CheckpointSigned` events
    it holds itself; `chain` is what `log.verify()` found (reported first, as a finding).
    Signatures are checked when `keys` (by key id) are given."""
    report = CheckpointReport(signatures=bool(keys))
    head = report.head = log.head()[0]
    if chain is not None:
        report.findings.append(Finding("chain", chain.seq, f"seq {chain.seq}: {chain.reason}"))
    recorded: list[Checkpoint] = []
    for event in log.read_stream(STREAM):
        try:
            recorded.append(Checkpoint.of(event.data))
        except ValueError as error:
            report.findings.append(
                Finding("signature", event.seq, f"the checkpoint event at seq {event.seq}: {error}")
            )
    report.in_log = len(recorded)
    wanted = {c.seq for c in (*witness, *recorded) if 0 < c.seq <= head}
    hashes = {event.seq: event.hash for event in log.read_seqs(wanted)}
    log_id = log.get_meta(LOG_ID_KEY) or ""
    seen: set[tuple[int, str]] = set()
    for source, checkpoints in ((witness_name, witness), ("in the log", recorded)):
        matched = 0
        for checkpoint in sorted(checkpoints, key=lambda c: c.seq):
            where = source
            bad = signature_problem(checkpoint, keys, where) if keys else None
            if bad is None:
                ids = log_id if source == witness_name else None
                bad = _against_log(checkpoint, where, head, hashes, ids, matched)
            if bad is not None:
                if (bad.seq, bad.kind) not in seen:  # one finding per checkpoint and kind
                    report.findings.append(bad)
                    seen.add((bad.seq, bad.kind))
                continue
            matched = checkpoint.seq
            if source == witness_name:
                report.checked += 1
                if report.latest is None or checkpoint.seq >= report.latest.seq:
                    report.latest = checkpoint
    report.findings += _witness_behind(witness, recorded, witness_name)
    latest = report.latest
    if latest is not None and recorded and latest.signature not in {c.signature for c in recorded}:
        report.findings.append(
            Finding(
                "cut",
                latest.seq,
                f"the latest checkpoint (at seq {latest.seq}, signed {latest.signed_at}) is not "
                f"recorded in the log, which records each one after the head it signs: the "
                f"tail after seq {latest.seq} was cut (or onduty stopped between exporting it "
                "and recording it; the next checkpoint settles that)",
            )
        )
    report.findings.sort(key=lambda finding: finding.seq)
    return report


def _witness_behind(
    witness: list[Checkpoint], recorded: list[Checkpoint], witness_name: str
) -> list[Finding]:
    """A checkpoint the log records but the witness lacks: the witness is written first, so
    it was cut (or exporting to it failed)."""
    if not witness:
        return []
    have = {(c.seq, c.signature) for c in witness}
    missing = [c for c in recorded if (c.seq, c.signature) not in have]
    if not missing:
        return []
    first = min(missing, key=lambda c: c.seq)
    return [
        Finding(
            "witness",
            first.seq,
            f"the log records a checkpoint at seq {first.seq} that {witness_name} lacks "
            f"({len(missing)} in all): the witness was cut, or exporting to it failed",
        )
    ]
