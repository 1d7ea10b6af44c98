"""Signed checkpoints of a PostgreSQL store: every partition's head, bound together in one
signed statement.

A store holds one hash chain per partition. Each chain shows that nothing inside it was edited,
but not that its tail was cut off (with its `heads` row set back to match), nor that it was
rewritten from some point with every hash recomputed and the head updated: the result is again
a valid chain. A fleet checkpoint states "store `log_id` had, at `signed_at`, partition p at
seq s with hash h (c events), for every partition", signed with a key the store does not hold.
Held against the store later, a partition that no longer reaches s was cut, one whose event at
s has another hash was rewritten, at or before s.

This module is the format and the verdict, given what the store holds now (`StoreState`);
`fleet_checkpoint_store.py` reads that from PostgreSQL and keeps the store's own record of the
checkpoints, and the runtime's `fleet_checkpointer.py` signs them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from onduty.log.checkpoints import CheckpointError, Finding, SigningKey
from onduty.log.fleet_view import position

FORMAT = "onduty-fleet-checkpoint/1"
LOG_ID_KEY = "log_id"
"""The store's identity, in its meta at the store's own partition (-1)."""
_OPT = orjson.OPT_SORT_KEYS
_SHOWN = 3  # findings of one kind and source told in full; the rest are counted

Head = tuple[int, int, str, int]
"""(partition, seq, hash of the event at seq, events up to seq) of one partition."""


@dataclass(frozen=True)
class FleetCheckpoint:
    """One signed statement about every partition's head (see the module's description).

    `count` is the number of events a partition's chain holds up to `seq`: a PostgreSQL store
    seals nothing away, so it equals `seq`; the format states it all the same, as the single
    log's checkpoint does, so that a renumbered chain is named as such. `signer` is the node
    that signed it: a fleet has several, each with a witness file of its own."""

    log_id: str
    partitions: tuple[Head, ...]
    signed_at: str
    signer: str
    key_id: str
    signature: str = ""

    def _fields(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "log_id": self.log_id,
            "partitions": [list(head) for head in self.partitions],
            "signed_at": self.signed_at,
            "signer": self.signer,
            "key_id": self.key_id,
        }

    def message(self) -> bytes:
        """The bytes signed: canonical JSON of everything but the signature."""
        return orjson.dumps(self._fields(), option=_OPT)

    def line(self) -> bytes:
        """The checkpoint as one line of a witness file (and a row of the store's table)."""
        return orjson.dumps({**self._fields(), "signature": self.signature}, option=_OPT) + b"\n"

    def seq_of(self, partition: int) -> int:
        """The seq this checkpoint covers in `partition` (0 when it does not name it)."""
        return next((seq for p, seq, _, _ in self.partitions if p == partition), 0)

    @property
    def covered(self) -> int:
        """Events covered, summed over the partitions."""
        return sum(seq for _, seq, _, _ in self.partitions)

    @classmethod
    def of(cls, fields: Mapping[str, Any]) -> FleetCheckpoint:
        """A checkpoint from its JSON fields; `ValueError` saying what is wrong with them."""
        if fields.get("format") != FORMAT:
            raise ValueError(f"its format is {fields.get('format')!r}, not {FORMAT!r}")
        texts = {}
        for name in ("log_id", "signed_at", "signer", "key_id", "signature"):
            value = fields.get(name)
            if type(value) is not str:
                raise ValueError(f"its {name} is not a string")
            texts[name] = value
        listed = fields.get("partitions")
        if not isinstance(listed, list):
            raise ValueError("its partitions are not a list")
        heads = tuple(_head(item) for item in listed)
        numbers = [p for p, _, _, _ in heads]
        if numbers != sorted(set(numbers)):
            raise ValueError("its partitions are not in order, each once")
        return cls(partitions=heads, **texts)


def _head(item: object) -> Head:
    if not isinstance(item, list) or len(item) != 4:
        raise ValueError(f"partition entry {item!r} is not [partition, seq, hash, count]")
    p, seq, hash_, count = item
    numbers = (p, seq, count)
    if any(type(n) is not int or n < 0 for n in numbers) or type(hash_) is not str:
        raise ValueError(f"partition entry {item!r} is not [partition, seq, hash, count]")
    return (p, seq, hash_, count)


def sign(
    key: SigningKey,
    log_id: str,
    heads: Mapping[int, tuple[int, str]],
    signed_at: str,
    signer: str,
) -> FleetCheckpoint:
    """A checkpoint of `heads` (partition: (seq, hash)), signed with `key`."""
    partitions = tuple((p, seq, hash_, seq) for p, (seq, hash_) in sorted(heads.items()))
    unsigned = FleetCheckpoint(log_id, partitions, signed_at, signer, key.key_id)
    signature = key.signature_of(unsigned.message())
    return FleetCheckpoint(log_id, partitions, signed_at, signer, key.key_id, signature)


@dataclass(frozen=True)
class Sourced:
    """A checkpoint and where it was read: `where` names the file and line or the table row."""

    checkpoint: FleetCheckpoint
    where: str
    in_witness: bool

    def describe(self) -> str:
        c = self.checkpoint
        return f"the checkpoint signed {c.signed_at} by {c.signer} ({self.where})"


def parse(line: bytes, where: str, *, in_witness: bool) -> Sourced:
    """One line of a witness (or one row of the table) as a checkpoint; `ValueError` naming
    `where` when it is not one."""
    try:
        fields = orjson.loads(line)
        if not isinstance(fields, dict):
            raise ValueError("it is not a JSON object")
        return Sourced(FleetCheckpoint.of(fields), where, in_witness)
    except ValueError as error:  # orjson's decode error is a ValueError
        raise ValueError(f"{where} is not a fleet checkpoint: {error}") from None


# ---------------------------------------------------------------------- witness file


def append_witness(path: Path, checkpoint: FleetCheckpoint) -> int:
    """Append `checkpoint` to the witness file, sync it to disk; the file's size after it."""
    with open(path, "ab") as file:
        file.write(checkpoint.line())
        file.flush()
        os.fsync(file.fileno())
        return file.tell()


def read_witness(path: Path) -> tuple[list[Sourced], list[Finding]]:
    """The checkpoints in a witness file, in file order, and a finding for each bad line."""
    try:
        text = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"cannot read the checkpoints {path}: {error.strerror}") from None
    found: list[Sourced] = []
    problems: list[Finding] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            found.append(parse(line, f"{path} line {number}", in_witness=True))
        except ValueError as error:
            problems.append(Finding("witness", 0, f"{error} (the line is unreadable)"))
    return found, problems


# ---------------------------------------------------------------------- verification


@dataclass(frozen=True)
class StoreState:
    """What the store holds now, as far as its checkpoints ask."""

    log_id: str
    """The store's identity ("" when it has none)."""
    heads: Mapping[int, int]
    """Each partition's head row: the seq it says the partition ends at."""
    ends: Mapping[int, int]
    """The last seq each partition named by a checkpoint really holds (0: no events)."""
    hashes: Mapping[tuple[int, int], str]
    """The hash of the event at (partition, seq), for the seqs the checkpoints cover."""


def covered_seqs(checkpoints: Iterable[Sourced]) -> set[tuple[int, int]]:
    """The (partition, seq) whose events' hashes `hold` compares."""
    return {(p, seq) for s in checkpoints for p, seq, _, _ in s.checkpoint.partitions if seq}


@dataclass
class FleetCheckpointReport:
    """What `hold` found, and what an intact result covers."""

    findings: list[Finding] = field(default_factory=list)
    in_witness: int = 0
    """Witness checkpoints that hold."""
    in_store: int = 0
    """Checkpoints of the store's table that hold."""
    recorded: int = 0
    """Checkpoints in the store's table, holding or not."""
    latest: Sourced | None = None
    """The checkpoint that holds and covers the most."""
    signatures: bool = False
    """Whether signatures were checked (public keys were given)."""
    uncovered: int = 0
    """Events appended after `latest`, summed over the partitions."""

    @property
    def intact(self) -> bool:
        return not self.findings


def signature_problem(sourced: Sourced, keys: Mapping[str, Ed25519PublicKey]) -> Finding | None:
    checkpoint = sourced.checkpoint
    public = keys.get(checkpoint.key_id)
    if public is None:
        return Finding(
            "unknown-key",
            0,
            f"{sourced.describe()} is signed with key {checkpoint.key_id}, which is none of "
            f"the public keys given ({', '.join(sorted(keys))})",
        )
    try:
        public.verify(bytes.fromhex(checkpoint.signature), checkpoint.message())
    except (InvalidSignature, ValueError):
        return Finding(
            "signature",
            0,
            f"{sourced.describe()}: its signature does not verify with key "
            f"{checkpoint.key_id} (the checkpoint was altered or forged)",
        )
    return None


class _Findings:
    """Findings kept a few per kind and source, the others counted: a forged witness of a
    thousand lines is one problem told three times, not a thousand."""

    def __init__(self) -> None:
        self.kept: list[Finding] = []
        self._counts: dict[tuple[str, bool], int] = {}

    def add(self, finding: Finding, sourced: Sourced) -> None:
        key = (finding.kind, sourced.in_witness)
        self._counts[key] = self._counts.get(key, 0) + 1
        if self._counts[key] <= _SHOWN:
            self.kept.append(finding)

    def told(self) -> list[Finding]:
        more = [
            Finding(kind, 0, f"{count - _SHOWN} more checkpoints {where} are {kind} too")
            for (kind, witness), count in self._counts.items()
            if count > _SHOWN
            for where in ["in the witness" if witness else "in the store's table"]
        ]
        return [*self.kept, *more]


def hold(
    state: StoreState,
    witness: Sequence[Sourced],
    recorded: Sequence[Sourced],
    keys: Mapping[str, Ed25519PublicKey],
    *,
    witness_name: str | None = None,
) -> FleetCheckpointReport:
    """Hold the store (`state`) against the checkpoints of a witness file (`witness_name`,
    None when none was read) and of its own table (`recorded`). Signatures are checked when
    `keys` (by key id) are given; a checkpoint whose signature fails, or that is of another
    store, is not held against the partitions."""
    report = FleetCheckpointReport(signatures=bool(keys), recorded=len(recorded))
    told = _Findings()
    candidates: list[Sourced] = []
    for sourced in (*witness, *recorded):
        bad = signature_problem(sourced, keys) if keys else None
        if bad is None and sourced.checkpoint.log_id != state.log_id:
            bad = Finding(
                "replaced",
                0,
                f"{sourced.describe()} is of store {sourced.checkpoint.log_id}, but this store "
                f"is {state.log_id or 'unnamed'}: the store was replaced (or the checkpoints "
                "are another store's)",
            )
        if bad is None:
            candidates.append(sourced)
        else:
            told.add(bad, sourced)
    contradicted: set[int] = set()
    for partition, entries in sorted(_by_partition(candidates).items()):
        for finding, sourced_ids in _hold_partition(state, partition, entries):
            report.findings.append(finding)
            contradicted |= sourced_ids
    holding = [s for s in candidates if id(s) not in contradicted]
    report.in_witness = sum(1 for s in holding if s.in_witness)
    report.in_store = len(holding) - report.in_witness
    if holding:
        latest = max(holding, key=lambda s: (s.checkpoint.covered, s.checkpoint.signed_at))
        report.latest = latest
        report.uncovered = sum(
            max(0, seq - latest.checkpoint.seq_of(p)) for p, seq in state.heads.items()
        )
    if witness_name is not None:  # only checkpoints that are genuine, of this store
        signed = [s for s in candidates if s.in_witness]
        rows = [s for s in candidates if not s.in_witness]
        report.findings += _unmatched(signed, rows, witness_name)
    report.findings = sorted([*told.told(), *report.findings], key=lambda f: f.seq)
    return report


Entry = tuple[int, str, int, Sourced]  # seq, hash, count, where it was said


def _by_partition(checkpoints: Iterable[Sourced]) -> dict[int, list[Entry]]:
    entries: dict[int, list[Entry]] = {}
    for sourced in checkpoints:
        for p, seq, hash_, count in sourced.checkpoint.partitions:
            if seq:  # an empty partition: nothing to hold it to
                entries.setdefault(p, []).append((seq, hash_, count, sourced))
    return entries


def _hold_partition(
    state: StoreState, p: int, entries: list[Entry]
) -> list[tuple[Finding, set[int]]]:
    """How one partition contradicts the checkpoints that cover it: at most one finding of each
    kind, with the ids of the checkpoints it contradicts. The entries are walked by seq; the
    last one that still matches bounds where a rewrite begins."""
    head, end = state.heads.get(p, 0), state.ends.get(p, 0)
    matched = 0
    cut: Entry | None = None
    worst: dict[str, Entry] = {}  # kind: the entry the finding tells
    bad: dict[str, set[int]] = {}  # kind: ids of the checkpoints (as read) it contradicts
    signatures: dict[str, set[str]] = {}  # kind: the checkpoints themselves, each once
    for entry in sorted(entries, key=lambda e: e[0]):
        seq, hash_, count, sourced = entry
        actual = state.hashes.get((p, seq))
        if actual is None and seq > end:
            kind = "cut"
            cut = entry if cut is None or seq > cut[0] else cut
        elif actual is None:
            kind = "missing"
        elif actual != hash_:
            kind = "rewritten"
        elif head < seq:
            kind = "head"
        elif count != seq:
            kind = "renumbered"
        else:
            if "rewritten" not in bad:
                matched = seq
            continue
        worst.setdefault(kind, entry)
        bad.setdefault(kind, set()).add(id(sourced))
        signatures.setdefault(kind, set()).add(sourced.checkpoint.signature)
    if cut is not None:
        worst["cut"] = cut  # the one that covers the most tells how much was cut
    found: list[tuple[Finding, set[int]]] = []
    for kind, (seq, hash_, count, sourced) in worst.items():
        many = len(signatures[kind])
        also = f" ({many} checkpoints contradicted)" if many > 1 else ""
        what = f"partition {p}: {sourced.describe()}"
        if kind == "cut":
            first_bad = end + 1
            text = (
                f"{what} covers seq {seq}, but the partition's events end at seq {end}: "
                f"events {end + 1}..{seq} at least were removed (a cut tail)"
            )
            if head == end:
                text += ", and its head row was set back to match"
        elif kind == "missing":
            first_bad = seq
            text = f"{what} covers seq {seq}, whose event is missing"
        elif kind == "rewritten":
            first_bad = matched + 1
            actual = state.hashes[(p, seq)]
            where = (
                f"rewritten after seq {matched} and at or before seq {seq}"
                if matched
                else f"rewritten or replaced at or before seq {seq} (no earlier checkpoint "
                "of it narrows where)"
            )
            text = (
                f"{what} signed hash {hash_[:12]}… for seq {seq}, the event there has "
                f"{actual[:12]}…: the partition's chain was {where}"
            )
        elif kind == "head":
            first_bad = head + 1
            text = (
                f"{what} covers seq {seq}, but the partition's head row says it ends at seq "
                f"{head}: the head row was set back"
            )
        else:
            first_bad = seq
            text = (
                f"{what} counted {count} events up to seq {seq}, the chain holds {seq}: "
                "events were renumbered"
            )
        found.append((Finding(kind, position(p, first_bad), text + also), bad[kind]))
    return found


def _unmatched(
    witness: Sequence[Sourced], recorded: Sequence[Sourced], witness_name: str
) -> list[Finding]:
    """The witness and the table disagree. A node writes its witness file first and then the
    table, so every row a signer recorded after its first line in this file is in the file
    (else the file was cut or edited); every line is in the table when the same signer
    recorded a later one there (else rows were deleted: a stop between the two writes leaves
    only a signer's newest lines unrecorded)."""
    if not witness:
        if not recorded:
            return []
        newest = max(recorded, key=lambda s: s.checkpoint.signed_at)
        return [
            Finding(
                "witness",
                0,
                f"{witness_name} holds no checkpoint of this store, its table {len(recorded)} "
                f"(the newest is {newest.describe()}): the witness was emptied, or is not "
                "this store's",
            )
        ]
    findings: list[Finding] = []
    lines = {s.checkpoint.signature for s in witness}
    rows = {s.checkpoint.signature for s in recorded}
    first: dict[str, str] = {}  # signer: its first line in the witness
    last: dict[str, str] = {}  # signer: its newest row in the table
    for s in witness:
        c = s.checkpoint
        first[c.signer] = min(first.get(c.signer, c.signed_at), c.signed_at)
    for s in recorded:
        c = s.checkpoint
        last[c.signer] = max(last.get(c.signer, c.signed_at), c.signed_at)
    lacking = [
        s
        for s in recorded
        if s.checkpoint.signer in first
        and s.checkpoint.signed_at >= first[s.checkpoint.signer]
        and s.checkpoint.signature not in lines
    ]
    if lacking:
        earliest = min(lacking, key=lambda s: s.checkpoint.signed_at)
        findings.append(
            Finding(
                "witness",
                0,
                f"{witness_name} lacks {earliest.describe()} ({len(lacking)} in all), though it "
                f"holds that node's earlier ones: the witness file was cut or edited, or "
                "writing to it failed",
            )
        )
    unrecorded = [
        s
        for s in witness
        if s.checkpoint.signature not in rows
        and s.checkpoint.signed_at < last.get(s.checkpoint.signer, "")
    ]
    if unrecorded:
        earliest = min(unrecorded, key=lambda s: s.checkpoint.signed_at)
        findings.append(
            Finding(
                "unrecorded",
                0,
                f"the store's checkpoints table lacks {earliest.describe()} ({len(unrecorded)} "
                "in all), though the same node recorded later ones: rows were deleted from it",
            )
        )
    return findings
